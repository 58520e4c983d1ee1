//! `dovetail policy …`: a policy author's tools — list, inspect, score by hand, test, scaffold,
//! publish.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use dovetail::capacity::claim::{Pod, Workload};
use dovetail::capacity::{Arch, CapacityType, Resources};
use dovetail::catalog;
use dovetail::policy::{EngineConfig, Limits, PolicyEngine, builtin, ranking};
use dovetail::quantity;

use super::simulate::read_all;
use crate::parse_key_value;

/// Runs one `policy` subcommand.
pub(crate) fn run(command: PolicyCommand) -> Result<()> {
    match command {
        PolicyCommand::List => {
            for b in builtin::all() {
                println!("{:<16} {}", b.name, b.summary);
            }
        }
        PolicyCommand::Inspect { policy, json } => inspect(&policy, json)?,
        PolicyCommand::Score(args) => score(args)?,
        PolicyCommand::Push {
            file,
            target,
            plain_http,
        } => push(&file, &target, plain_http)?,
        PolicyCommand::Test {
            file,
            config,
            files,
        } => policy_test(&file, config, files)?,
        PolicyCommand::New {
            name,
            consolidator,
            both,
            dir,
            sdk,
            ..
        } => {
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
        PolicyCommand::Configmap {
            file,
            name,
            namespace,
        } => {
            let (_, bytes) = checked_component(&file)?;
            print!(
                "{}",
                dovetail::policy::source::config_map_manifests(&name, &namespace, &bytes)?
            );
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub(crate) enum PolicyCommand {
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
pub(crate) struct ScoreArgs {
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

/// The bytes of a `.wasm` file or a built-in, and a display name.
pub(crate) fn component(policy: &str) -> Result<(String, Vec<u8>)> {
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
pub(crate) fn checked_component(
    file: &std::path::Path,
) -> Result<(dovetail::policy::ComponentInfo, Vec<u8>)> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let name = file.display().to_string();
    let info = PolicyEngine::new(EngineConfig::default())?.inspect(&name, &bytes)?;
    Ok((info, bytes))
}

/// `dovetail policy test`: what the controller checks, then the scenarios.
pub(crate) fn policy_test(
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

pub(crate) fn push(file: &std::path::Path, target: &str, plain_http: bool) -> Result<()> {
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
    let pinned = dovetail::bridge::Bridge::own()?.wait(dovetail::policy::source::push_oci(
        &settings, bytes, &info, &title, reference,
    ))?;
    eprintln!(
        "pushed {} ({} bytes, dovetail:policy@{}) to {reference}",
        info.digest, info.size, info.wit_version
    );
    println!("{pinned}");
    Ok(())
}

pub(crate) fn inspect(policy: &str, json: bool) -> Result<()> {
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
pub(crate) fn parse_pods(spec: &str, workload: u32) -> Result<Vec<Pod>> {
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

pub(crate) fn score(args: ScoreArgs) -> Result<()> {
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
    let round = dovetail::policy::ScoringRound::one_claim(now, &cat, "default", workloads, pods);
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
        let launch = round.launch(r.option);
        println!(
            "{:>4}  {:<18} {:<6} {:<12} {:<10} {:>10.4} {:>14}",
            i + 1,
            launch.instance_type,
            match launch.arch {
                Arch::Amd64 => "amd64",
                Arch::Arm64 => "arm64",
            },
            launch.zone,
            match launch.capacity_type {
                CapacityType::Spot => "spot",
                CapacityType::OnDemand => "on-demand",
                CapacityType::Reserved => "reserved",
            },
            launch.price,
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
