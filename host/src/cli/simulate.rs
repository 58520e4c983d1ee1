//! `dovetail simulate` and `dovetail top`: manifests (or a journal) through the real decisions
//! on the virtual clock; the fleet watched, replayed or live.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use dovetail::policy::{EngineConfig, PolicyEngine};

/// Each file's name and text.
pub(crate) fn read_all(files: &[PathBuf]) -> Result<Vec<(String, String)>> {
    files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .map(|t| (f.display().to_string(), t))
                .with_context(|| format!("reading {}", f.display()))
        })
        .collect()
}

/// What `simulate` runs: manifest files, and a journal to replay.
pub(crate) struct Input {
    pub(crate) files: Vec<PathBuf>,
    pub(crate) replay: Option<PathBuf>,
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
pub(crate) struct SimOutput {
    /// The HTML report's path.
    pub(crate) report: Option<PathBuf>,
    /// Print every decision of each run.
    pub(crate) decisions: bool,
}

pub(crate) fn simulate(
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
pub(crate) fn check_roles(
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
pub(crate) fn with_policies(
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

/// `dovetail top`: a simulation replayed, or the cluster KUBECONFIG names, watched read-only.
pub(crate) fn top(
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
        let config = dovetail::bridge::Bridge::own()?
            .wait(kube::Config::infer())
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
