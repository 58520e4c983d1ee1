//! The `dovetail` command: the controller's tools for policy authors and operators.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

mod cli;

use cli::bench::BenchCommand;
use cli::policy::PolicyCommand;
use cli::simulate::{Input, SimOutput};

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
            cli::simulate::simulate(
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
        } => cli::controller::record(dovetail::kubernetes::record::RecordOptions {
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
        } => cli::simulate::top(files, speed, policies, sync_timeout)?,
        Command::Crds => print!("{}", dovetail::api::crds_yaml()),
        Command::Doctor {
            cluster_name,
            aws_region,
            aws_endpoint,
            interruption_queue,
            role_arn,
            namespace,
        } => {
            let kube = dovetail::bridge::Bridge::own()?
                .wait(kube::Config::infer())
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
        Command::Controller(args) => cli::controller::controller(args)?,
        Command::Policy(command) => cli::policy::run(command)?,
        Command::Bench(command) => cli::bench::run(command)?,
    }
    Ok(())
}
