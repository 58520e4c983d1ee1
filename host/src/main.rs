//! The `dovetail` command: the controller's tools for policy authors and operators.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use dovetail::bench;
use dovetail::catalog;
use dovetail::policy::types::{Arch, CapacityType, Pod, Resources, Workload};
use dovetail::policy::{EngineConfig, Limits, PolicyEngine, builtin, ranking};
use dovetail::quantity;

#[derive(Parser)]
#[command(
    name = "dovetail",
    version,
    about = "Kubernetes node autoscaler with WebAssembly policies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with policy components.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Print benchmark figures.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Simulate manifests (NodePools, Policies, Deployments, Pods, PodDisruptionBudgets, and an
    /// optional Scenario timeline): the real provisioning, disruption and termination code on an
    /// in-memory cloud and a virtual clock.
    Simulate {
        /// Manifest files; repeatable.
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
        /// More manifest files.
        #[arg(value_name = "FILE")]
        more: Vec<PathBuf>,
        /// Replay a journal `dovetail record` wrote: its objects, and its arrivals and
        /// departures on the virtual clock (with `-f`, more manifests beside it).
        #[arg(long, value_name = "JOURNAL")]
        replay: Option<PathBuf>,
        /// Policies for every NodePool, e.g. `scoring=arm-first,consolidation=empty-only`.
        #[arg(long, value_name = "SET")]
        policies: Option<String>,
        /// Run the scenario once per policy set (give two) and print both summaries and the
        /// difference.
        #[arg(long, value_name = "SET", num_args = 2, conflicts_with = "policies")]
        compare: Vec<String>,
        /// Where capacity comes from: the in-memory cloud, or EC2 through the AWS provider.
        #[arg(long, value_enum, default_value = "sim")]
        cloud: CloudKind,
        /// With `--cloud aws`: an endpoint override (a VPC endpoint, or moto on loopback).
        #[arg(long, value_name = "URL")]
        aws_endpoint: Option<String>,
        /// With `--cloud aws`: the region.
        #[arg(long, default_value = "us-east-1")]
        aws_region: String,
        /// With `--cloud aws`: the cluster name that tags every resource.
        #[arg(long, default_value = "dovetail")]
        cluster_name: String,
        /// With `--cloud aws`: the SQS queue of interruption events.
        #[arg(long, value_name = "URL")]
        interruption_queue: Option<String>,
        /// With `--cloud aws`: the cluster the nodes join.
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Also write the run (or both runs of `--compare`) as a self-contained HTML page:
        /// charts over time and the table of decisions.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// Also print every decision of the run (of each run with `--compare`): launches with the
        /// policy's best options, moves executed, kept with the policy's reason, or overruled.
        #[arg(long)]
        decisions: bool,
    },
    /// Record the cluster KUBECONFIG points at (read-only: it lists and watches) as a journal
    /// `simulate --replay` runs: Deployments' replicas over time, other pods as they come and
    /// go, NodePools, EC2NodeClasses, PodDisruptionBudgets and DaemonSets — only what decisions
    /// read (no environment, images, commands, volumes or user data).
    Record {
        /// The journal to write; rotated parts go beside it as FILE.1, FILE.2, ….
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        out: PathBuf,
        /// How often changes are written.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        interval: Duration,
        /// Rotate the journal when it reaches this many MiB.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
        max_size_mib: u64,
        /// Rotated parts kept.
        #[arg(long, default_value_t = 5)]
        keep: u32,
        /// Stop after this long (default: at Ctrl-C or SIGTERM).
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// How long to wait for the first full list of every kind.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        sync_timeout: Duration,
    },
    /// Watch the fleet in the terminal: per node its type, capacity type, zone, age, requests
    /// against allocatable, pods and price; totals per NodePool and for the cluster with the LP
    /// bound; NodeClaims in flight and nodes being disrupted. Against the cluster KUBECONFIG
    /// points at (read-only: it lists and watches), or with `-f` a simulation, replayed.
    Top {
        /// Replay a simulation of these manifests (as `simulate -f` takes them) instead of
        /// watching a cluster.
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
        /// With `-f`: virtual seconds per real second at the start (`+`/`-` double and halve it).
        #[arg(long, default_value_t = 60.0)]
        speed: f64,
        /// With `-f`: policies for every NodePool, as `simulate --policies` takes them.
        #[arg(long, value_name = "SET")]
        policies: Option<String>,
        /// Against a cluster: how long to wait for the first full list of every kind.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        sync_timeout: Duration,
    },
    /// Print the CustomResourceDefinitions (NodePool, NodeClaim, EC2NodeClass, Policy) as YAML.
    Crds,
    /// Check an installation: AWS credentials, the CRDs, each EC2NodeClass (subnets, security
    /// groups, AMIs, node role), the interruption queue and its EventBridge rules, and pending
    /// pods no NodePool can serve. Exits 1 when something needs fixing.
    Doctor {
        #[arg(long, env = "CLUSTER_NAME")]
        cluster_name: String,
        #[arg(long, env = "AWS_REGION")]
        aws_region: String,
        /// An AWS endpoint override (moto in tests).
        #[arg(long, env = "AWS_ENDPOINT_URL")]
        aws_endpoint: Option<String>,
        /// The interruption queue's name or URL.
        #[arg(long, env = "INTERRUPTION_QUEUE")]
        interruption_queue: Option<String>,
        /// The controller's IAM role: assumed for the controller's own calls and a dry run of
        /// its first launch, so its policy is what is checked (your identity must be allowed
        /// to assume it). Without: your own credentials (in the controller's pod, its own).
        #[arg(long, env = "DOCTOR_ROLE_ARN")]
        role_arn: Option<String>,
        /// The namespace the controller is installed in.
        #[arg(long, env = "SYSTEM_NAMESPACE", default_value = "dovetail")]
        namespace: String,
    },
    /// Rewrite Karpenter v1 manifests (NodePools, EC2NodeClasses, workload keys and
    /// annotations) to Dovetail's; the result on stdout, what could not be carried over on
    /// stderr.
    Convert {
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
    },
    /// Run the controller against a cluster (in-cluster config, or KUBECONFIG from a laptop):
    /// provisioning, NodeClaim lifecycle, disruption, termination, interruption handling and
    /// garbage collection, launching on EC2.
    Controller(ControllerArgs),
}

/// What the nodes must know of their cluster; each learnt from eks:DescribeCluster when not set.
#[derive(Args)]
struct ClusterArgs {
    /// The cluster's API server endpoint, for the nodes' bootstrap.
    #[arg(long, env = "CLUSTER_ENDPOINT", default_value = "")]
    cluster_endpoint: String,
    /// The cluster's CA bundle (base64), for the nodes' bootstrap.
    #[arg(long, env = "CLUSTER_CA_BUNDLE", default_value = "")]
    cluster_ca_bundle: String,
    /// The cluster's service CIDR, for the nodes' bootstrap.
    #[arg(long, env = "CLUSTER_CIDR", default_value = "")]
    cluster_cidr: String,
    /// The cluster's Kubernetes version (`1.34`): AMI aliases resolve for it.
    #[arg(long, env = "KUBERNETES_VERSION", default_value = "")]
    kubernetes_version: String,
}

impl ClusterArgs {
    fn apply(self, aws: &mut dovetail::cloud::aws::AwsSettings) {
        aws.cluster_endpoint = self.cluster_endpoint;
        aws.cluster_ca = self.cluster_ca_bundle;
        aws.service_cidr = self.cluster_cidr;
        aws.kubernetes_version = self.kubernetes_version;
    }
}

/// Settings of `dovetail controller`; every flag has an environment variable, as Karpenter's.
#[derive(Args)]
struct ControllerArgs {
    /// The EKS cluster's name: it tags every AWS resource and finds the discovery tags.
    #[arg(long, env = "CLUSTER_NAME")]
    cluster_name: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The SQS queue (URL) of EC2 interruption events.
    #[arg(long, env = "INTERRUPTION_QUEUE")]
    interruption_queue: Option<String>,
    /// A provisioning batch closes after this long without a new pending pod.
    #[arg(long, env = "BATCH_IDLE_DURATION", default_value = "1s", value_parser = parse_duration)]
    batch_idle_duration: Duration,
    /// …or this long after its first pod.
    #[arg(long, env = "BATCH_MAX_DURATION", default_value = "10s", value_parser = parse_duration)]
    batch_max_duration: Duration,
    /// A launched node that has not registered by then is deleted with its instance.
    #[arg(long, env = "REGISTRATION_TTL", default_value = "15m", value_parser = parse_duration)]
    registration_ttl: Duration,
    /// The AWS region.
    #[arg(long, env = "AWS_REGION")]
    aws_region: String,
    /// An AWS endpoint override (VPC endpoints, or moto on loopback).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    aws_endpoint: Option<String>,
    /// Zones to decide for before any EC2NodeClass resolved its subnets.
    #[arg(
        long,
        env = "ZONES",
        value_delimiter = ',',
        default_value = "us-east-1a,us-east-1b,us-east-1c"
    )]
    zones: Vec<String>,
    /// How long to wait for the caches at start.
    #[arg(long, env = "CACHE_SYNC_TIMEOUT", default_value = "2m", value_parser = parse_duration)]
    cache_sync_timeout: Duration,
    /// An instance of the cluster that no NodeClaim claims is terminated once this old.
    #[arg(long, env = "ORPHAN_GRACE_PERIOD", default_value = "2m", value_parser = parse_duration)]
    orphan_grace_period: Duration,
    /// Log lines as JSON (default) or text.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormat,
    /// Where to launch: EC2, or the in-memory cloud (benchmarks and dry runs).
    #[arg(long, env = "CLOUD", value_enum, default_value = "aws")]
    cloud: CloudKind,
    /// Elect a leader among replicas on a Lease; `--leader-elect=false` for a single replica.
    #[arg(long, env = "LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// The namespace of the leader Lease (the controller's own, from the downward API).
    #[arg(long, env = "SYSTEM_NAMESPACE", default_value = "kube-system")]
    system_namespace: String,
    /// A leader that stops renewing loses the Lease after this long.
    #[arg(long, env = "LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    leader_election_lease_duration: Duration,
    /// The port of `/metrics` (0: not served).
    #[arg(long, env = "METRICS_PORT", default_value_t = 8080)]
    metrics_port: u16,
    /// The port of `/healthz` and `/readyz` (0: not served).
    #[arg(long, env = "HEALTH_PROBE_PORT", default_value_t = 8081)]
    health_probe_port: u16,
    /// `error`, `warn`, `info`, `debug`, or a filter (`info,dovetail::disruption=debug`).
    #[arg(long, env = "LOG_LEVEL", default_value = "info", value_parser = parse_log_level)]
    log_level: String,
    /// Kubernetes API requests per second, sustained (client-side limit).
    #[arg(long, env = "KUBE_CLIENT_QPS", default_value_t = 200.0, value_parser = parse_qps)]
    kube_client_qps: f32,
    /// Kubernetes API requests above the sustained rate, in a burst.
    #[arg(long, env = "KUBE_CLIENT_BURST", default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..))]
    kube_client_burst: u32,
    /// PEM file of certificates trusted, beside the system's, to fetch Policy components (`url`
    /// and `oci` sources behind a private CA).
    #[arg(long, env = "POLICY_CA_BUNDLE")]
    policy_ca_bundle: Option<PathBuf>,
    /// Registries (`host:port`, comma-separated) that serve Policy components over plain HTTP.
    #[arg(long, env = "POLICY_PLAIN_HTTP_REGISTRIES", value_delimiter = ',')]
    policy_plain_http_registries: Vec<String>,
    /// The namespaces whose ConfigMaps (labelled dovetail.sh/policy-component=true) may hold
    /// Policy components, comma-separated; empty: every namespace (the chart sets its release
    /// namespace, and grants ConfigMap reads there only).
    #[arg(long, env = "POLICY_CONFIGMAP_NAMESPACES", value_delimiter = ',')]
    policy_configmap_namespaces: Vec<String>,
    /// Largest Policy component fetched, in MiB.
    #[arg(long, env = "POLICY_MAX_MIB", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=512))]
    policy_max_mib: u64,
    /// Feature gates, `Name=true,Name=false` (SpotToSpotConsolidation).
    #[arg(long, env = "FEATURE_GATES", default_value = "", value_parser = parse_feature_gates)]
    feature_gates: dovetail::controller::FeatureGates,
}

fn parse_log_level(s: &str) -> std::result::Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("not a log level or filter: {e}"))
}

fn parse_qps(s: &str) -> std::result::Result<f32, String> {
    match s.parse::<f32>() {
        Ok(q) if q > 0.0 && q.is_finite() => Ok(q),
        _ => Err("a positive number of requests per second is needed".into()),
    }
}

fn parse_feature_gates(s: &str) -> std::result::Result<dovetail::controller::FeatureGates, String> {
    s.parse()
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    match dovetail::api::duration::parse(s)? {
        Some(d) => Ok(d),
        None => Err("a duration is needed here, not Never".into()),
    }
}

/// Where `simulate` launches.
#[derive(Clone, Copy, clap::ValueEnum)]
enum CloudKind {
    Sim,
    Aws,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// List the built-in policies.
    List,
    /// Show a component's exports, WIT version, size and digest.
    Inspect {
        /// A `.wasm` file, or the name of a built-in policy.
        policy: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rank launch options for some pods with a scoring policy.
    Score(ScoreArgs),
    /// Publish a component as an OCI artifact (checked first: it compiles and targets a WIT
    /// version this controller runs). Prints the reference pinned by digest.
    Push {
        /// The `.wasm` component.
        file: PathBuf,
        /// `oci://REGISTRY/REPOSITORY:TAG`.
        target: String,
        /// Speak plain HTTP to the registry (a registry on loopback, in tests).
        #[arg(long)]
        plain_http: bool,
    },
    /// Run the checks the controller runs before it serves a component (compile, WIT version,
    /// exports, `init` with the config, canary rounds: the same code), then the scenarios given.
    Test {
        /// The `.wasm` component.
        file: PathBuf,
        /// Policy configuration, KEY=VALUE; repeatable.
        #[arg(long = "config", value_parser = parse_key_value)]
        config: Vec<(String, String)>,
        /// Manifests or a Scenario to simulate with the component in every role it exports.
        #[arg(short = 'f', long = "file")]
        files: Vec<PathBuf>,
    },
    /// Scaffold a policy crate (outside this workspace) that builds as generated.
    New {
        /// The policy's name: lowercase letters, digits and '-'.
        name: String,
        /// A scoring policy (the default).
        #[arg(long, conflicts_with_all = ["consolidator", "both"])]
        scorer: bool,
        /// A consolidation policy.
        #[arg(long, conflicts_with = "both")]
        consolidator: bool,
        /// A policy that does both.
        #[arg(long)]
        both: bool,
        /// Where to create the crate's directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// A local SDK checkout (`…/dovetail/sdk`) to depend on; by default the checkout this
        /// binary was built from, else the repository at this release.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Print a ConfigMap holding a component (in binaryData, labelled for the controller) and a
    /// Policy that uses it, for `kubectl apply -f -`.
    Configmap {
        /// The `.wasm` component.
        file: PathBuf,
        /// Name of the ConfigMap and the Policy.
        #[arg(long)]
        name: String,
        /// Namespace of the ConfigMap.
        #[arg(long, default_value = "dovetail")]
        namespace: String,
    },
}

#[derive(Args)]
struct ScoreArgs {
    /// A `.wasm` file, or the name of a built-in policy.
    policy: String,
    /// Instance-type catalog (JSON in the reference data's format); the embedded one by default.
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Pods as COUNTxCPU/MEMORY, e.g. `10x500m/512Mi`; repeatable.
    #[arg(long = "pods", default_value = "10x500m/512Mi")]
    pods: Vec<String>,
    /// Zones to offer.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "us-east-1a,us-east-1b,us-east-1c"
    )]
    zones: Vec<String>,
    /// Only spot or only on-demand offerings.
    #[arg(long, value_parser = ["spot", "on-demand"])]
    capacity_type: Option<String>,
    /// Policy configuration, KEY=VALUE; repeatable.
    #[arg(long = "config", value_parser = parse_key_value)]
    config: Vec<(String, String)>,
    /// How many ranked options to print.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Deadline of the call in milliseconds.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Memory cap in MiB.
    #[arg(long)]
    memory_mib: Option<u64>,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Score a catalog through the `cheapest` component and natively; print instantiate and
    /// call times and the WASM/native ratio.
    Policy {
        #[arg(long, default_value_t = 800)]
        types: usize,
        #[arg(long, default_value_t = 50)]
        pods: usize,
        #[arg(long, default_value_t = 2000)]
        iterations: usize,
    },
    /// Schedule 1,000 to 20,000 pending pods of Karpenter's benchmark mix and rank every claim
    /// with the `cheapest` component; print pods/second, decision time, peak memory and cost.
    Provisioning {
        #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000,20000")]
        pods: Vec<usize>,
        #[arg(long, default_value_t = 400)]
        types: usize,
    },
    /// Consolidate a cluster of ~500 nodes after 40% of its pods go: time per disruption pass
    /// (candidates and moves, policy, enforcement) and cost against the lower bound.
    Disruption {
        #[arg(long, default_value_t = 5000)]
        pods: usize,
    },
    /// Run `dovetail controller` (in-memory cloud) against the API server double: scale up to
    /// `pods` pods (ten per node), sit idle, remove 40%; print the controller's peak memory,
    /// the time to every NodeClaim, and API requests per launched and per disrupted node.
    Controller {
        #[arg(long, default_value_t = 20000)]
        pods: usize,
        /// Runs, each with a fresh controller and API server: every run is printed, then the
        /// worst, so a result that is sometimes slow cannot hide behind a good run.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
        runs: u32,
    },
    /// Load every built-in component as a new Policy version: first compile, a cache hit, and
    /// the checks before a swap (init and canary rounds).
    Load,
    /// A recorded journal's size and replay speed: `pods` pods churning for `hours` virtual
    /// hours fed to the recorder, then the journal replayed in the simulator.
    Journal {
        #[arg(long, default_value_t = 2000)]
        pods: usize,
        #[arg(long, default_value_t = 1)]
        hours: u32,
    },
    /// What a shadow candidate costs the serving decision: `cheapest` scores and ranks rounds
    /// of `claims` claims, alternately without and with `arm-first` shadowing it on the worker
    /// thread; print the serving latency of both, the hand-off, and the worker's pace.
    Shadow {
        #[arg(long, default_value_t = 400)]
        types: usize,
        #[arg(long, default_value_t = 100)]
        claims: usize,
        #[arg(long, default_value_t = 200)]
        rounds: usize,
    },
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    // The simulator prints the controller's log lines, as a controller would.
    let default_level = if matches!(&cli.command, Command::Simulate { compare, .. } if compare.is_empty())
    {
        "info"
    } else {
        "warn"
    };
    // `top` owns the terminal: a log line would tear its screen.
    let default_level = if matches!(cli.command, Command::Top { .. }) {
        "off"
    } else {
        default_level
    };
    let simulating = matches!(cli.command, Command::Simulate { .. });
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_level.into()),
        )
        .with_target(false)
        .with_writer(std::io::stdout);
    // Simulated logs carry their virtual time (`t`); the wall clock would only mislead.
    if let Command::Controller(args) = &cli.command {
        // RUST_LOG, when set, wins over LOG_LEVEL (a developer's override).
        let logs = logs.with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| args.log_level.as_str().into()),
        );
        if args.log_format == LogFormat::Json {
            logs.json().init();
        } else {
            logs.init();
        }
    } else if simulating {
        logs.without_time().init();
    } else {
        logs.init();
    }
    match cli.command {
        Command::Simulate {
            files,
            more,
            replay,
            policies,
            compare,
            cloud,
            aws_endpoint,
            aws_region,
            cluster_name,
            interruption_queue,
            cluster,
            report,
            decisions,
        } => {
            let aws = matches!(cloud, CloudKind::Aws).then(|| {
                let mut s = dovetail::cloud::aws::AwsSettings::new(&aws_region, &cluster_name);
                s.endpoint = aws_endpoint;
                cluster.apply(&mut s);
                s
            });
            simulate(
                Input {
                    files: files.into_iter().chain(more).collect(),
                    replay,
                },
                policies,
                compare,
                aws,
                interruption_queue,
                SimOutput { report, decisions },
            )?
        }
        Command::Record {
            out,
            interval,
            max_size_mib,
            keep,
            duration,
            sync_timeout,
        } => record(dovetail::kubernetes::record::RecordOptions {
            out,
            interval,
            max_bytes: max_size_mib << 20,
            keep,
            duration,
            sync_timeout,
        })?,
        Command::Top {
            files,
            speed,
            policies,
            sync_timeout,
        } => top(files, speed, policies, sync_timeout)?,
        Command::Crds => print!("{}", dovetail::api::crds_yaml()),
        Command::Doctor {
            cluster_name,
            aws_region,
            aws_endpoint,
            interruption_queue,
            role_arn,
            namespace,
        } => {
            let kube = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(kube::Config::infer())
                .context("no Kubernetes configuration: run in a cluster, or set KUBECONFIG")?;
            let mut aws = dovetail::cloud::aws::AwsSettings::new(&aws_region, &cluster_name);
            aws.endpoint = aws_endpoint;
            let checks = dovetail::doctor::run(dovetail::doctor::DoctorSettings {
                aws,
                interruption_queue,
                kube,
                role_arn,
                namespace,
            });
            for c in &checks {
                println!("{c}");
            }
            let problems = checks
                .iter()
                .filter(|c| matches!(c.verdict, dovetail::doctor::Verdict::Problem(_)))
                .count();
            if problems > 0 {
                println!("\n{problems} problem(s) to fix");
                std::process::exit(1);
            }
            println!("\nno problem found");
        }
        Command::Convert { files } => {
            let mut out = Vec::new();
            for f in &files {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("reading {}", f.display()))?;
                let c = dovetail::api::convert::convert(&f.display().to_string(), &text)?;
                eprintln!("{}: {} document(s) changed", f.display(), c.changed);
                for n in &c.notes {
                    eprintln!("  {n}");
                }
                out.push(c.yaml);
            }
            print!("{}", out.join("---\n"));
        }
        Command::Controller(args) => controller(args)?,
        Command::Policy(PolicyCommand::List) => {
            for b in builtin::all() {
                println!("{:<16} {}", b.name, b.summary);
            }
        }
        Command::Policy(PolicyCommand::Inspect { policy, json }) => inspect(&policy, json)?,
        Command::Policy(PolicyCommand::Score(args)) => score(args)?,
        Command::Policy(PolicyCommand::Push {
            file,
            target,
            plain_http,
        }) => push(&file, &target, plain_http)?,
        Command::Policy(PolicyCommand::Test {
            file,
            config,
            files,
        }) => policy_test(&file, config, files)?,
        Command::Policy(PolicyCommand::New {
            name,
            consolidator,
            both,
            dir,
            sdk,
            ..
        }) => {
            use dovetail::policy::scaffold::{Kind, Sdk, new_crate};
            let kind = match (consolidator, both) {
                (true, _) => Kind::Consolidator,
                (_, true) => Kind::Both,
                _ => Kind::Scorer,
            };
            let sdk = match sdk {
                Some(p) => Sdk::Path(
                    p.canonicalize()
                        .with_context(|| format!("--sdk {}", p.display()))?,
                ),
                None => Sdk::detect(),
            };
            for f in new_crate(&dir, &name, kind, &sdk)? {
                println!("created {}", f.display());
            }
            println!(
                "\nnext: cd {} && cargo test && cargo build --release --target wasm32-wasip2",
                dir.join(&name).display()
            );
        }
        Command::Policy(PolicyCommand::Configmap {
            file,
            name,
            namespace,
        }) => {
            let (_, bytes) = checked_component(&file)?;
            print!(
                "{}",
                dovetail::policy::source::config_map_manifests(&name, &namespace, &bytes)?
            );
        }
        Command::Bench(BenchCommand::Provisioning { pods, types }) => {
            bench_provisioning(&pods, types)?
        }
        Command::Bench(BenchCommand::Disruption { pods }) => bench_disruption(pods)?,
        Command::Bench(BenchCommand::Load) => {
            if cfg!(debug_assertions) {
                eprintln!(
                    "note: a debug build; run `cargo run --release -p dovetail -- bench load` for real figures"
                );
            }
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            println!(
                "{:<16} {:>9} {:>14} {:>13} {:>16}",
                "policy", "bytes", "first load ms", "cache hit ms", "validate ms"
            );
            for f in bench::load()? {
                println!(
                    "{:<16} {:>9} {:>14.1} {:>13.3} {:>16.2}",
                    f.policy,
                    f.size,
                    ms(f.first_load),
                    ms(f.cache_hit),
                    ms(f.validate)
                );
            }
        }
        Command::Bench(BenchCommand::Journal { pods, hours }) => {
            let f = bench::journal::run(pods, hours)?;
            println!(
                "{} pods churning for {} h: journal {} bytes ({:.1} KiB per hour), {} changes",
                f.pods,
                f.hours,
                f.bytes,
                f.bytes as f64 / 1024.0 / f64::from(f.hours.max(1)),
                f.steps
            );
            println!(
                "replay: {:.2} s of wall clock for {} h ({:.2} virtual hours per second); {} nodes launched",
                f.replay.as_secs_f64(),
                f.hours,
                f64::from(f.hours) / f.replay.as_secs_f64().max(1e-9),
                f.launched
            );
        }
        Command::Bench(BenchCommand::Shadow {
            types,
            claims,
            rounds,
        }) => {
            let f = bench::shadow::run(types, claims, rounds)?;
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            println!(
                "{} rounds of {} claims over {types} types, each way; serving = cheapest, shadow = arm-first",
                f.rounds, f.claims
            );
            println!(
                "{:<28} {:>9} {:>9} {:>9}",
                "serving decision", "p50 ms", "p99 ms", "mean ms"
            );
            for (label, s) in [
                ("without a shadow", f.without),
                ("with a shadow", f.with),
                ("  of which the hand-off", f.handoff),
            ] {
                println!(
                    "{label:<28} {:>9.3} {:>9.3} {:>9.3}",
                    ms(s.p50),
                    ms(s.p99),
                    ms(s.mean)
                );
            }
            println!(
                "overhead: {:+.1}% at the median, {:+.1}% on the mean",
                (ms(f.with.p50) / ms(f.without.p50) - 1.0) * 100.0,
                (ms(f.with.mean) / ms(f.without.mean) - 1.0) * 100.0
            );
            println!(
                "shadow worker: {} rounds judged, {} skipped (busy); done {:.2} s after the last hand-off",
                f.judged,
                f.skipped,
                f.drain.as_secs_f64()
            );
        }
        Command::Bench(BenchCommand::Controller { pods, runs }) => {
            let mut worst: Option<(f64, f64)> = None;
            for run in 1..=runs {
                println!("run {run} of {runs}");
                let f = bench::controller::run(pods).map_err(anyhow::Error::msg)?;
                print_controller_figures(&f);
                let (c, b) = (f.to_claims.as_secs_f64(), f.to_bound.as_secs_f64());
                worst = Some(worst.map_or((c, b), |(wc, wb)| (wc.max(c), wb.max(b))));
            }
            if let Some((c, b)) = worst {
                println!(
                    "worst of {runs}: last pending pod → last NodeClaim {c:.2} s; → every pod bound {b:.2} s"
                );
            }
        }
        Command::Bench(BenchCommand::Policy {
            types,
            pods,
            iterations,
        }) => bench_policy(bench::ScoringBench {
            types,
            pods,
            iterations,
        })?,
    }
    Ok(())
}

/// One `bench controller` run's figures.
fn print_controller_figures(f: &bench::controller::ControllerFigures) {
    println!("pods {}, nodes {}", f.pods, f.nodes);
    println!(
        "last pending pod created → last NodeClaim created: {:.2} s; → every pod bound: {:.2} s",
        f.to_claims.as_secs_f64(),
        f.to_bound.as_secs_f64()
    );
    match f.peak_rss {
        Some(b) => println!(
            "controller peak RSS: {:.0} MiB",
            b as f64 / (1u64 << 20) as f64
        ),
        None => println!("controller peak RSS: not readable"),
    }
    println!(
        "scale-up: {:.1} API requests per launched node ({:.1} writes)",
        f.requests_per_launched, f.writes_per_launched
    );
    println!(
        "(client limit KUBE_CLIENT_QPS={})",
        dovetail::bench::controller::BENCH_QPS
    );
    println!(
        "idle: {:.0} requests per minute ({:.0} writes{})",
        f.steady_requests_per_minute,
        f.steady_writes_per_minute,
        if f.steady_writes_by_kind.is_empty() {
            String::new()
        } else {
            format!(
                ": {}",
                f.steady_writes_by_kind
                    .iter()
                    .map(|(k, n)| format!("{k} ×{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    println!(
        "40% scale-down: {} nodes disrupted, {:.1} requests per disrupted node ({:.1} writes)",
        f.disrupted, f.requests_per_disrupted, f.writes_per_disrupted
    );
    println!(
        "40% scale-down: {:.1} s from the pods' deletion to the last node's (consolidateAfter included); {} evictions, {:.0} per second",
        f.scale_down.as_secs_f64(),
        f.evictions,
        f.evictions_per_second
    );
}

/// The bytes of a `.wasm` file or a built-in, and a display name.
fn component(policy: &str) -> Result<(String, Vec<u8>)> {
    if let Some(b) = builtin::find(policy) {
        return Ok((b.name.to_string(), b.wasm.to_vec()));
    }
    let bytes = std::fs::read(policy).with_context(|| {
        format!(
            "{policy} is neither a readable file nor a built-in ({})",
            builtin::names().join(", ")
        )
    })?;
    let name = std::path::Path::new(policy)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| policy.to_string());
    Ok((name, bytes))
}

/// A component file that compiles and targets a supported WIT version.
fn checked_component(file: &std::path::Path) -> Result<(dovetail::policy::ComponentInfo, Vec<u8>)> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let name = file.display().to_string();
    let info = PolicyEngine::new(EngineConfig::default())?.inspect(&name, &bytes)?;
    Ok((info, bytes))
}

/// Each file's name and text.
fn read_all(files: &[PathBuf]) -> Result<Vec<(String, String)>> {
    files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .map(|t| (f.display().to_string(), t))
                .with_context(|| format!("reading {}", f.display()))
        })
        .collect()
}

/// `dovetail policy test`: what the controller checks, then the scenarios.
fn policy_test(
    file: &std::path::Path,
    config: Vec<(String, String)>,
    files: Vec<PathBuf>,
) -> Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().replace('_', "-"))
        .unwrap_or_else(|| "policy".into());
    let registry =
        dovetail::policy::PolicyRegistry::new(PolicyEngine::new(EngineConfig::default())?);
    let started = std::time::Instant::now();
    let policy = match registry.prepare(
        &name,
        &bytes,
        config.clone(),
        Limits::default(),
        dovetail::policy::canary::Roles::default(),
    ) {
        Ok(p) => p,
        Err(e) => bail!(
            "refused ({}): {}",
            e.reason(),
            dovetail::bounded::bounded(&e.to_string(), 4096)
        ),
    };
    let info = policy.info();
    println!(
        "{}: {} ({} bytes), dovetail:policy@{}",
        file.display(),
        info.digest,
        info.size,
        info.wit_version
    );
    let canary = dovetail::policy::canary::coverage();
    let mut rounds = Vec::new();
    if info.scoring {
        rounds.push(format!(
            "{} scoring (claims of 1 to {} pods, GPU, one option, burstable only, spot only, zero prices, a batch)",
            canary.scoring_rounds, canary.largest_claim
        ));
    }
    if info.consolidation {
        rounds.push(format!(
            "{} consolidation (empty to {} candidates)",
            canary.consolidation_rounds, canary.most_candidates
        ));
    }
    println!(
        "checked in {:.0} ms: compiles, links, init takes the config; canary rounds pass: {}",
        started.elapsed().as_secs_f64() * 1000.0,
        rounds.join("; ")
    );
    if files.is_empty() {
        println!("accepted");
        return Ok(());
    }
    let texts = read_all(&files)?;
    let opts = dovetail::sim::SimOptions {
        scoring: info.scoring.then(|| name.clone()),
        consolidation: info.consolidation.then(|| name.clone()),
        policies: vec![(name.clone(), bytes, config)],
        ..Default::default()
    };
    let report = dovetail::sim::simulate(&texts, &opts)?;
    println!();
    print!("{}", report.summary());
    // A policy that failed in the scenario is not accepted, whatever decided in its place.
    if let Some(tally) = report.policy_failures.get(&name) {
        bail!("{name} {tally}");
    }
    println!("accepted: no failure in the scenario");
    Ok(())
}

fn push(file: &std::path::Path, target: &str, plain_http: bool) -> Result<()> {
    let Some(reference) = target.strip_prefix("oci://") else {
        bail!("{target}: give the target as oci://REGISTRY/REPOSITORY:TAG");
    };
    let (info, bytes) = checked_component(file)?;
    let mut settings = dovetail::policy::source::FetchSettings::default();
    if plain_http {
        let registry = reference.split('/').next().unwrap_or_default();
        settings.plain_http.push(registry.to_string());
    }
    let title = file
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let pinned = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(dovetail::policy::source::push_oci(
            &settings, bytes, &info, &title, reference,
        ))?;
    eprintln!(
        "pushed {} ({} bytes, dovetail:policy@{}) to {reference}",
        info.digest, info.size, info.wit_version
    );
    println!("{pinned}");
    Ok(())
}

fn inspect(policy: &str, json: bool) -> Result<()> {
    let (name, bytes) = component(policy)?;
    let info = PolicyEngine::new(EngineConfig::default())?.inspect(&name, &bytes)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    let kinds: Vec<&str> = [
        (info.scoring, "scoring"),
        (info.consolidation, "consolidation"),
    ]
    .iter()
    .filter_map(|(has, k)| has.then_some(*k))
    .collect();
    println!("policy:      {name}");
    println!("digest:      {}", info.digest);
    println!(
        "size:        {} bytes ({:.1} KiB)",
        info.size,
        info.size as f64 / 1024.0
    );
    println!("wit:         dovetail:policy@{}", info.wit_version);
    println!("decides:     {}", kinds.join(", "));
    println!("exports:");
    info.exports.iter().for_each(|e| println!("  {e}"));
    println!("imports:");
    info.imports.iter().for_each(|i| println!("  {i}"));
    Ok(())
}

/// `COUNTxCPU/MEMORY` → that many pods of workload `workload`.
fn parse_pods(spec: &str, workload: u32) -> Result<Vec<Pod>> {
    let (count, rest) = spec.split_once('x').unwrap_or(("1", spec));
    let (cpu, mem) = rest.split_once('/').with_context(|| {
        format!("--pods {spec:?}: expected COUNTxCPU/MEMORY, e.g. 10x500m/512Mi")
    })?;
    let count: usize = count
        .trim()
        .parse()
        .with_context(|| format!("--pods {spec:?}: bad count"))?;
    let requests = Resources {
        cpu_millis: quantity::cpu_millis(cpu).with_context(|| format!("--pods {spec:?}"))?,
        memory_bytes: quantity::bytes(mem).with_context(|| format!("--pods {spec:?}"))?,
        ephemeral_storage_bytes: 0,
        pods: 1,
        gpus: 0,
    };
    Ok(vec![
        Pod {
            workload,
            requests,
            priority: 0
        };
        count
    ])
}

fn score(args: ScoreArgs) -> Result<()> {
    let (name, bytes) = component(&args.policy)?;
    let entries = match &args.catalog {
        None => catalog::embedded(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            catalog::parse(&path.display().to_string(), &text)?
        }
    };
    let zones: Vec<&str> = args.zones.iter().map(String::as_str).collect();
    let mut cat = catalog::policy_catalog(&entries, &zones);
    if let Some(ct) = &args.capacity_type {
        let want = if ct == "spot" {
            CapacityType::Spot
        } else {
            CapacityType::OnDemand
        };
        cat.instance_types
            .iter_mut()
            .for_each(|t| t.offerings.retain(|o| o.capacity_type == want));
    }
    let mut pods = Vec::new();
    let mut workloads = Vec::new();
    for (i, spec) in args.pods.iter().enumerate() {
        pods.extend(parse_pods(spec, i as u32)?);
        workloads.push(Workload {
            namespace: "default".into(),
            owner: format!("Deployment/pods-{i}"),
            labels: Vec::new(),
        });
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let round = catalog::scoring_round(now, cat, "default", workloads, pods);
    let claim = &round.claims[0];
    if claim.options.is_empty() {
        bail!(
            "no instance type of the catalog holds {} pods needing {}m CPU and {} MiB",
            claim.pods.len(),
            claim.requests.cpu_millis,
            claim.requests.memory_bytes >> 20
        );
    }
    let engine = PolicyEngine::new(EngineConfig::default())?;
    let limits = Limits {
        timeout: args.timeout_ms.map(Duration::from_millis),
        memory_mib: args.memory_mib,
    };
    let policy = engine.load(&name, &bytes, args.config.clone(), limits)?;
    let (scores, stats) = policy.score_timed(&round)?;
    let ranking = ranking::rank(&round, 0, &scores[0]);

    println!(
        "{} pods ({}m CPU, {} MiB) → {} feasible options of {} instance types; policy {name}",
        claim.pods.len(),
        claim.requests.cpu_millis,
        claim.requests.memory_bytes >> 20,
        claim.options.len(),
        round.catalog.instance_types.len()
    );
    println!(
        "{:>4}  {:<18} {:<6} {:<12} {:<10} {:>10} {:>14}",
        "rank", "instance type", "arch", "zone", "capacity", "$/hour", "score"
    );
    for (i, r) in ranking.ranked.iter().take(args.top).enumerate() {
        let (t, o, zone) = round.resolve(r.option);
        println!(
            "{:>4}  {:<18} {:<6} {:<12} {:<10} {:>10.4} {:>14}",
            i + 1,
            t.name,
            match t.arch {
                Arch::Amd64 => "amd64",
                Arch::Arm64 => "arm64",
            },
            zone,
            match o.capacity_type {
                CapacityType::Spot => "spot",
                CapacityType::OnDemand => "on-demand",
                CapacityType::Reserved => "reserved",
            },
            o.price,
            dovetail::sim::report::plain(r.score, 4)
        );
    }
    if !ranking.vetoed.is_empty() {
        println!(
            "vetoed: {} options (e.g. {:?})",
            ranking.vetoed.len(),
            ranking.vetoed[0].1
        );
    }
    println!(
        "instantiate {:.3} ms, begin-round (catalog) {:.3} ms, score {:.3} ms",
        stats.instantiate.as_secs_f64() * 1e3,
        stats.begin_round.as_secs_f64() * 1e3,
        stats.call.as_secs_f64() * 1e3
    );
    Ok(())
}

fn bench_policy(opts: bench::ScoringBench) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!(
            "note: a debug build; run `cargo run --release -p dovetail -- bench policy` for real figures"
        );
    }
    let (timings, options) = bench::scoring(&opts)?;
    println!(
        "scoring {} instance types ({} feasible options) for a {}-pod decision, {} iterations, p50 per round",
        opts.types, options, opts.pods, opts.iterations
    );
    println!(
        "{:<28} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "variant", "instantiate", "begin-round", "score call", "total", "total p99"
    );
    let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1e3);
    for t in &timings {
        println!(
            "{:<28} {:>12} {:>12} {:>12} {:>12} {:>12}",
            t.label,
            ms(t.instantiate.p50),
            ms(t.begin_round.p50),
            ms(t.call.p50),
            ms(t.total.p50),
            ms(t.total.p99)
        );
    }
    let native = timings.last().unwrap().call.p50.as_secs_f64();
    for t in &timings[..timings.len() - 1] {
        println!(
            "{}: WASM/native = {:.1}x for the score call, {:.1}x for the whole round",
            t.label,
            t.call.p50.as_secs_f64() / native,
            t.total.p50.as_secs_f64() / native
        );
    }
    Ok(())
}

fn bench_provisioning(sizes: &[usize], types: usize) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!(
            "note: a debug build; run `cargo run --release -p dovetail -- bench provisioning` for real figures"
        );
    }
    let figures = bench::provisioning(sizes, types)?;
    println!("{types} instance types, `cheapest` policy in WASM; fleet = each claim's top option");
    let mut last = None;
    for f in &figures {
        if last != Some(f.workload) {
            last = Some(f.workload);
            println!("\n{}", f.workload.describe());
            println!(
                "{:>7} {:>9} {:>6} {:>9} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>7}  top types",
                "pods",
                "scheduled",
                "claims",
                "solve",
                "decision",
                "RSS",
                "$/hour",
                "old bnd",
                "LP bnd",
                "topo bnd",
                "vs LP",
                "vs topo",
                "node%"
            );
        }
        let secs = f.decision.as_secs_f64();
        let vs_topo = match f.diverse_bound {
            Some(d) => format!("{:.2}x div", f.fleet_cost / d),
            None => format!("{:.2}x", f.fleet_cost / f.topology_bound),
        };
        println!(
            "{:>7} {:>9} {:>6} {:>7.1}ms {:>8.1}ms {:>4} MiB {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>7.2}x {:>8} {:>6.1}%  {}",
            f.pods,
            f.scheduled,
            f.claims,
            f.solve.as_secs_f64() * 1e3,
            secs * 1e3,
            f.peak_rss.map_or("?".into(), |b| (b >> 20).to_string()),
            f.fleet_cost,
            f.naive_bound,
            f.lp_bound,
            f.diverse_bound.unwrap_or(f.topology_bound),
            f.fleet_cost / f.lp_bound,
            vs_topo,
            f.largest_share * 100.0,
            f.top_types
                .iter()
                .map(|(t, n)| format!("{n}×{t}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    println!(
        "\nold bnd: CPU or memory at the cheapest per-unit rate on raw capacity; LP bnd: the LP relaxation on allocatable; topo bnd: the LP with the node count hostname topology forces (with spot: also no pool above {:.0}% of the CPU, which the fleet follows too); node%: the largest node's share of the pods",
        bench::SPOT_POOL_SHARE * 100.0
    );
    Ok(())
}

fn bench_disruption(pods: usize) -> Result<()> {
    let f = bench::disruption(pods)?;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let show = |label: &str, r: &dovetail::sim::DisruptionRound| {
        let t = r.timings;
        println!(
            "{label:<14} {:>6} {:>6} {:>10} {:>6} {:>8} {:>12.1} {:>10.1} {:>10.1} {:>10.1}",
            r.nodes,
            r.pods,
            r.candidates,
            r.moves,
            r.commands,
            ms(t.moves),
            ms(t.policy),
            ms(t.enforce),
            ms(t.moves + t.policy + t.enforce)
        );
    };
    println!(
        "{:<14} {:>6} {:>6} {:>10} {:>6} {:>8} {:>12} {:>10} {:>10} {:>10}",
        "pass",
        "nodes",
        "pods",
        "candidates",
        "moves",
        "executed",
        "moves ms",
        "policy ms",
        "enforce ms",
        "round ms"
    );
    show("first", &f.first);
    if std::env::var_os("DOVETAIL_BENCH_ALL").is_some() {
        for r in &f.all {
            show(&format!("t={}s", r.at), r);
        }
    }
    show("slowest", &f.slowest);
    println!(
        "passes after the scale-down: {}; nodes {} -> {}; pods evicted {}",
        f.rounds, f.nodes_before, f.nodes_after, f.evictions
    );
    println!(
        "cost: {:.3} $/h before, {:.3} $/h after consolidation; lower bound {:.3} $/h; after/bound {:.2}x",
        f.cost_before,
        f.cost_after,
        f.lower_bound,
        f.cost_after / f.lower_bound
    );
    println!(
        "the same pods provisioned on an empty cluster: {:.3} $/h; after consolidation / fresh {:.2}x",
        f.fresh,
        f.cost_after / f.fresh
    );
    println!(
        "simulated 1 h in {:.2} s of wall clock",
        f.wall.as_secs_f64()
    );
    Ok(())
}

/// What `simulate` runs: manifest files, and a journal to replay.
struct Input {
    files: Vec<PathBuf>,
    replay: Option<PathBuf>,
}

impl Input {
    /// Every manifest as (file, text), the journal's turned into manifests and a Scenario.
    fn texts(&self) -> Result<Vec<(String, String)>> {
        let mut texts = read_all(&self.files)?;
        if let Some(path) = &self.replay {
            let file = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--replay: cannot read {file}"))?;
            let journal = dovetail::journal::read(&file, &text)?;
            eprintln!(
                "replaying {file}: {} recorded from {}, {} objects at the start, {} changes",
                dovetail::sim::report::clock(journal.duration),
                journal.header.source,
                journal.initial.len(),
                journal.steps.len()
            );
            let missing = journal.missing_policies();
            if !missing.is_empty() {
                eprintln!(
                    "note: the journal's NodePools name policies it does not hold (their components live in the cluster): {}; give each as a Policy manifest with -f (spec.source.file), or choose others with --policies or --compare",
                    missing.join(", ")
                );
            }
            texts.extend(journal.manifests(&file));
        }
        Ok(texts)
    }

    fn title(&self) -> String {
        self.files
            .iter()
            .chain(&self.replay)
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// What `simulate` prints and writes besides each run's summary.
struct SimOutput {
    /// The HTML report's path.
    report: Option<PathBuf>,
    /// Print every decision of each run.
    decisions: bool,
}

fn simulate(
    input: Input,
    policies: Option<String>,
    compare: Vec<String>,
    aws: Option<dovetail::cloud::aws::AwsSettings>,
    interruption_queue: Option<String>,
    SimOutput { report, decisions }: SimOutput,
) -> Result<()> {
    if input.files.is_empty() && input.replay.is_none() {
        bail!("no manifests: give files with -f FILE, or a journal with --replay JOURNAL");
    }
    let texts = input.texts()?;
    let title = input.title();
    let write_report = |runs: &[dovetail::sim::html::Run<'_>]| -> Result<()> {
        let Some(path) = &report else {
            return Ok(());
        };
        let page = dovetail::sim::html::render(&format!("dovetail simulate {title}"), runs);
        std::fs::write(path, page)
            .with_context(|| format!("--report: cannot write {}", path.display()))?;
        eprintln!("report written to {}", path.display());
        Ok(())
    };
    let base = dovetail::sim::SimOptions {
        aws: aws.clone(),
        interruption_queue: interruption_queue.clone(),
        timeline: report.is_some(),
        ..Default::default()
    };
    let options = |set: Option<&str>| with_policies(base.clone(), set);
    if compare.is_empty() {
        let report = dovetail::sim::simulate(&texts, &options(policies.as_deref())?)?;
        println!();
        if decisions {
            println!("decisions:");
            print!("{}", report.decisions_text());
            println!();
        }
        print!("{}", report.summary());
        let label = policies.as_deref().unwrap_or("the NodePools' own policies");
        return write_report(&[dovetail::sim::html::Run {
            label,
            report: &report,
        }]);
    }
    // Every set is read and every component checked for its role before the first run: a
    // mistake is found in a second, not after a whole run's summary. A Policy of the scenario
    // (which may be named like a built-in) is checked when the scenario loads it.
    let scenario_policies: std::collections::BTreeSet<String> = texts
        .iter()
        .filter_map(|(file, text)| dovetail::api::manifest::parse(file, text).ok())
        .flatten()
        .filter_map(|m| match m {
            dovetail::api::manifest::Manifest::Policy(p) => p.metadata.name.clone(),
            _ => None,
        })
        .collect();
    let sets = compare
        .iter()
        .map(|set| {
            let opts = options(Some(set))?;
            check_roles(set, &opts, &scenario_policies)?;
            Ok(opts)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut reports = Vec::new();
    for (set, opts) in compare.iter().zip(&sets) {
        let report = dovetail::sim::simulate(&texts, opts)?;
        println!("== {set}");
        if decisions {
            println!("decisions:");
            print!("{}", report.decisions_text());
            println!("fleet:");
        }
        print!("{}", report.summary());
        println!();
        reports.push(report);
    }
    println!("== difference ({} minus {})", compare[1], compare[0]);
    print!("{}", reports[0].difference(&reports[1]));
    let runs: Vec<dovetail::sim::html::Run<'_>> = compare
        .iter()
        .zip(&reports)
        .map(|(label, report)| dovetail::sim::html::Run { label, report })
        .collect();
    write_report(&runs)?;
    // A comparison in which a policy failed compares its fallback, not the policy: say so, and
    // fail.
    let failed: Vec<String> = compare
        .iter()
        .zip(&reports)
        .flat_map(|(set, r)| {
            r.policy_failures
                .iter()
                .map(move |(policy, tally)| format!("{set}: {policy} {tally}"))
        })
        .collect();
    if !failed.is_empty() {
        bail!(
            "policies failed during the runs, so the difference above is not theirs:\n  {}",
            failed.join("\n  ")
        );
    }
    Ok(())
}

/// Refuses a set whose component lacks the role it is given (or is not a component at all),
/// before anything runs. Names that are neither built-ins nor files are Policies of the
/// scenario, checked when it loads them.
fn check_roles(
    set: &str,
    opts: &dovetail::sim::SimOptions,
    scenario_policies: &std::collections::BTreeSet<String>,
) -> Result<()> {
    let engine = PolicyEngine::new(EngineConfig::default())?;
    for (role, name) in [
        ("scoring", opts.scoring.as_deref()),
        ("consolidation", opts.consolidation.as_deref()),
    ] {
        let Some(name) = name else { continue };
        if scenario_policies.contains(name) && !opts.policies.iter().any(|(n, _, _)| n == name) {
            continue;
        }
        let bytes: &[u8] = match opts.policies.iter().find(|(n, _, _)| n == name) {
            Some((_, bytes, _)) => bytes,
            None => match dovetail::policy::builtin::find(name) {
                Some(b) => b.wasm,
                None => continue,
            },
        };
        let info = engine
            .inspect(name, bytes)
            .map_err(|e| anyhow::anyhow!("policy set {set:?}: {role}={name}: {e}"))?;
        let has = if role == "scoring" {
            info.scoring
        } else {
            info.consolidation
        };
        if !has {
            bail!(
                "policy set {set:?}: {name} cannot do {role}: it exports {} (a {} is given as {})",
                info.exports.join(", "),
                if info.scoring {
                    "scorer"
                } else {
                    "consolidator"
                },
                if info.scoring {
                    "scoring="
                } else {
                    "consolidation="
                }
            );
        }
    }
    Ok(())
}

/// `opts` with the policies of a set such as `scoring=arm-first,consolidation=my.wasm`.
fn with_policies(
    mut opts: dovetail::sim::SimOptions,
    set: Option<&str>,
) -> Result<dovetail::sim::SimOptions> {
    for pair in set.unwrap_or_default().split(',').filter(|p| !p.is_empty()) {
        let (role, v) = match pair.split_once('=') {
            Some((role @ ("scoring" | "consolidation"), v)) => (role, v),
            _ => bail!(
                "policy set {pair:?}: use scoring=NAME and/or consolidation=NAME (NAME: a built-in or a .wasm file)"
            ),
        };
        // A path names a component of the user's: loaded under its file's stem.
        let name = if v.ends_with(".wasm") || v.contains('/') {
            let bytes =
                std::fs::read(v).with_context(|| format!("policy set {pair:?}: reading {v}"))?;
            let name = std::path::Path::new(v)
                .file_stem()
                .map(|s| s.to_string_lossy().replace('_', "-"))
                .unwrap_or_else(|| v.to_string());
            opts.policies.push((name.clone(), bytes, Vec::new()));
            name
        } else {
            v.to_string()
        };
        if role == "scoring" {
            opts.scoring = Some(name);
        } else {
            opts.consolidation = Some(name);
        }
    }
    Ok(opts)
}

/// `dovetail record`: the cluster KUBECONFIG names, as a journal, until Ctrl-C, SIGTERM or
/// `--duration`.
fn record(opts: dovetail::kubernetes::record::RecordOptions) -> Result<()> {
    let config = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(kube::Config::infer())
        .context("no Kubernetes configuration: set KUBECONFIG to the cluster to record")?;
    let stop = dovetail::kubernetes::Shutdown::default();
    let on_signal = stop.clone();
    ctrlc_or_term(move || on_signal.stop())?;
    eprintln!(
        "recording {} into {} (every {:?}; Ctrl-C stops)",
        config.cluster_url,
        opts.out.display(),
        opts.interval
    );
    let r = dovetail::kubernetes::record::record(config, &opts, stop)?;
    eprintln!(
        "recorded {}: {} changes, {} bytes in {} part{}",
        dovetail::sim::report::clock(r.seconds),
        r.steps,
        r.bytes,
        r.parts,
        if r.parts == 1 { "" } else { "s" }
    );
    Ok(())
}

/// `dovetail top`: a simulation replayed, or the cluster KUBECONFIG names, watched read-only.
fn top(
    files: Vec<PathBuf>,
    speed: f64,
    policies: Option<String>,
    sync_timeout: Duration,
) -> Result<()> {
    use dovetail::top::{Feed, Live, Replay};
    if !(speed.is_finite() && speed > 0.0) {
        bail!("--speed {speed}: give virtual seconds per real second, above 0");
    }
    let feed = if files.is_empty() {
        let config = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(kube::Config::infer())
            .context(
                "no Kubernetes configuration: set KUBECONFIG, or replay a simulation with -f FILE",
            )?;
        let mut watch =
            dovetail::kubernetes::fleet_watch::FleetWatch::connect(config, sync_timeout)?;
        let server = watch.server.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        // The views are taken on their own thread so a slow API server never freezes the keys.
        std::thread::spawn(move || {
            loop {
                if tx.send(watch.view()).is_err() {
                    return;
                }
                watch.wait(Duration::from_secs(2));
            }
        });
        Feed::Live(Live {
            server,
            latest: None,
            poll: Box::new(move || rx.try_iter().last()),
        })
    } else {
        let texts = read_all(&files)?;
        let opts = with_policies(
            dovetail::sim::SimOptions {
                timeline: true,
                ..Default::default()
            },
            policies.as_deref(),
        )?;
        let report = dovetail::sim::simulate(&texts, &opts)?;
        let name = files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(" ");
        Feed::Replay(Replay::new(
            &name,
            report.timeline,
            report.duration_secs,
            speed,
        ))
    };
    dovetail::top::run(feed).context("the terminal")?;
    Ok(())
}

/// `dovetail controller`: until SIGTERM or Ctrl-C.
fn controller(args: ControllerArgs) -> Result<()> {
    let config = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(kube::Config::infer())
        .context("no Kubernetes configuration: run in a cluster, or set KUBECONFIG")?;
    let mut aws = dovetail::cloud::aws::AwsSettings::new(&args.aws_region, &args.cluster_name);
    aws.endpoint = args.aws_endpoint;
    args.cluster.apply(&mut aws);
    let settings = dovetail::kubernetes::Settings {
        cloud: match args.cloud {
            CloudKind::Aws => dovetail::kubernetes::Cloud::Aws,
            CloudKind::Sim => dovetail::kubernetes::Cloud::Sim,
        },
        aws,
        interruption_queue: args.interruption_queue,
        zones: args.zones,
        core: dovetail::controller::Settings {
            batch_idle: args.batch_idle_duration,
            batch_max: args.batch_max_duration,
            feature_gates: args.feature_gates,
            ..Default::default()
        },
        registration_ttl: args.registration_ttl,
        sync_timeout: args.cache_sync_timeout,
        orphan_grace: args.orphan_grace_period,
        instance: std::env::var("POD_NAME").unwrap_or_else(|_| {
            // Out of a cluster: unique per process, so two replicas never share an identity.
            format!("dovetail-{}", std::process::id())
        }),
        operation: dovetail::kubernetes::Operation {
            leader_election: args.leader_elect.then(|| {
                dovetail::kubernetes::leader::LeaderElection {
                    namespace: args.system_namespace,
                    duration: args.leader_election_lease_duration,
                    ..Default::default()
                }
            }),
            metrics_addr: (args.metrics_port != 0)
                .then(|| std::net::SocketAddr::from(([0, 0, 0, 0], args.metrics_port))),
            health_addr: (args.health_probe_port != 0)
                .then(|| std::net::SocketAddr::from(([0, 0, 0, 0], args.health_probe_port))),
            kube_qps: args.kube_client_qps,
            kube_burst: args.kube_client_burst,
            ..Default::default()
        },
        policy_fetch: dovetail::policy::source::FetchSettings {
            max_bytes: args.policy_max_mib << 20,
            extra_roots: match &args.policy_ca_bundle {
                Some(path) => vec![std::fs::read(path).with_context(|| {
                    format!("POLICY_CA_BUNDLE: cannot read {}", path.display())
                })?],
                None => Vec::new(),
            },
            plain_http: args.policy_plain_http_registries,
            ..Default::default()
        },
        policy_config_map_namespaces: args.policy_configmap_namespaces,
    };
    let shutdown = dovetail::kubernetes::Shutdown::default();
    let stop = shutdown.clone();
    ctrlc_or_term(move || {
        tracing::info!("stopping");
        stop.stop();
    })?;
    dovetail::kubernetes::run(config, settings, shutdown)?;
    Ok(())
}

/// Calls `then` on its own thread at the first SIGTERM or Ctrl-C.
fn ctrlc_or_term(then: impl FnOnce() + Send + 'static) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Registered before returning, so a signal that comes at once is not lost.
    let mut term = {
        let _enter = rt.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("a SIGTERM handler")?
    };
    std::thread::spawn(move || {
        rt.block_on(async {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        });
        then();
    });
    Ok(())
}
