//! `dovetail bench …`: the benchmarks, printed.

use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;

use dovetail::bench;

/// Runs one benchmark and prints its figures.
pub(crate) fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Provisioning { pods, types } => bench_provisioning(&pods, types)?,
        BenchCommand::Disruption { pods } => bench_disruption(pods)?,
        BenchCommand::Load => {
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
        BenchCommand::Journal { pods, hours } => {
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
        BenchCommand::Shadow {
            types,
            claims,
            rounds,
        } => {
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
        #[cfg(not(feature = "bench-cluster"))]
        BenchCommand::Controller { .. } => anyhow::bail!(
            "this dovetail is built without the API server double bench controller runs against: \
             cargo run --release -p dovetail --features bench-cluster -- bench controller"
        ),
        #[cfg(feature = "bench-cluster")]
        BenchCommand::Controller {
            pods,
            runs,
            kube_client_qps,
            kube_client_burst,
        } => {
            let limits = bench::controller::ClientLimits {
                qps: kube_client_qps,
                burst: kube_client_burst,
            };
            let mut worst: Option<(f64, f64)> = None;
            for run in 1..=runs {
                println!("run {run} of {runs}");
                let f = bench::controller::run(pods, limits).map_err(anyhow::Error::msg)?;
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
        BenchCommand::Policy {
            types,
            pods,
            iterations,
        } => bench_policy(bench::ScoringBench {
            types,
            pods,
            iterations,
        })?,
    }
    Ok(())
}

#[derive(Subcommand)]
pub(crate) enum BenchCommand {
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
    /// Consolidate a cluster of ~1,000 nodes after 40% of its pods go: time per disruption pass
    /// (candidates and moves, policy, enforcement) and cost against the pool's LP bound.
    Disruption {
        #[arg(long, default_value_t = 5000)]
        pods: usize,
    },
    /// Run `dovetail controller` (in-memory cloud) against the API server double: scale up to
    /// `pods` pods (ten per node), sit idle, remove 40%; print the controller's peak memory,
    /// the time to every NodeClaim, and API requests per launched and per disrupted node.
    /// Needs the `bench-cluster` feature (the double is not in the production binary).
    Controller {
        #[arg(long, default_value_t = 20000)]
        pods: usize,
        /// Runs, each with a fresh controller and API server: every run is printed, then the
        /// worst, so a result that is sometimes slow cannot hide behind a good run.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
        runs: u32,
        /// The controller's client-side rate limit. The default is high, so the benchmark
        /// measures the controller rather than its limiter; give the controller's own defaults
        /// (200, burst 300) to see a drain as an install would run it.
        #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..))]
        kube_client_qps: u32,
        #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..))]
        kube_client_burst: u32,
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

/// One `bench controller` run's figures.
#[cfg(feature = "bench-cluster")]
pub(crate) fn print_controller_figures(f: &bench::controller::ControllerFigures) {
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
        "launch through Initialized: {:.1} API requests per launched node ({:.1} writes: {})",
        f.requests_through_initialized,
        f.writes_through_initialized,
        f.launch_writes_by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "scale-up CPU: controller {:.1} s, API server double and actors {:.1} s",
        f.scale_up_cpu.0, f.scale_up_cpu.1
    );
    println!(
        "(client limit KUBE_CLIENT_QPS={}, KUBE_CLIENT_BURST={})",
        f.limits.qps, f.limits.burst
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
        "40% scale-down: {} nodes disrupted, {:.1} requests per disrupted node ({:.1} writes: {})",
        f.disrupted,
        f.requests_per_disrupted,
        f.writes_per_disrupted,
        f.down_writes_by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "40% scale-down: {:.1} s from the pods' deletion to the last node's removal (consolidateAfter included), the drain {:.1} s of it; {} evictions ({} of a pod that had moved already), {:.0} per second",
        f.scale_down.as_secs_f64(),
        f.drain.as_secs_f64(),
        f.evictions,
        f.evicted_again,
        f.evictions_per_second
    );
}

pub(crate) fn bench_policy(opts: bench::ScoringBench) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!(
            "note: a debug build; run `cargo run --release -p dovetail -- bench policy` for real figures"
        );
    }
    let (timings, options, handed) = bench::scoring(&opts)?;
    println!(
        "scoring {} instance types ({handed} fit the claim and are handed over; {} feasible options) for a {}-pod decision, {} iterations, p50 per round",
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
    for t in &timings[..timings.len() - 1] {
        // The native scorer timed beside this variant's rounds (not in a later loop).
        let native = t.native.p50.as_secs_f64();
        println!(
            "{}: WASM/native = {:.1}x for the score call, {:.1}x for the whole round \
             (whole round {:.3} ms; native {:.3} ms, timed beside it)",
            t.label,
            t.call.p50.as_secs_f64() / native,
            t.total.p50.as_secs_f64() / native,
            t.total.p50.as_secs_f64() * 1e3,
            native * 1e3
        );
    }
    Ok(())
}

pub(crate) fn bench_provisioning(sizes: &[usize], types: usize) -> Result<()> {
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
                "{:>7} {:>9} {:>6} {:>9} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>9} {:>7} {:>7}  top types",
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
                "fit bnd",
                "vs fit",
                "node%"
            );
        }
        let secs = f.decision.as_secs_f64();
        let vs_topo = match f.diverse_bound {
            Some(d) => format!("{:.2}x div", f.fleet_cost / d),
            None => format!("{:.2}x", f.fleet_cost / f.topology_bound),
        };
        println!(
            "{:>7} {:>9} {:>6} {:>7.1}ms {:>8.1}ms {:>4} MiB {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>7.2}x {:>8} {:>9.2} {:>6.2}x {:>6.1}%  {}",
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
            f.fit_bound,
            f.fleet_cost / f.fit_bound,
            f.largest_share * 100.0,
            f.top_types
                .iter()
                .map(|(t, n)| format!("{n}×{t}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    println!(
        "\nold bnd: CPU or memory at the cheapest per-unit rate on raw capacity; LP bnd: the LP relaxation on allocatable; topo bnd: the LP with the node count hostname topology forces (with spot: also no pool above {:.0}% of the CPU, which the fleet follows too); fit bnd: the topo bnd with every pod on a node of a type it fits rather than each resource pooled over the fleet (a tighter bound, still one no packing beats); node%: the largest node's share of the pods",
        bench::SPOT_POOL_SHARE * 100.0
    );
    Ok(())
}

pub(crate) fn bench_disruption(pods: usize) -> Result<()> {
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
        "cost: {:.3} $/h before, {:.3} $/h after consolidation; the pool's LP bound {:.3} $/h; after/bound {:.2}x",
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
