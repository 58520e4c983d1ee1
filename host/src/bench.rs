//! Benchmarks printed by `dovetail bench`: speed targets are measured here, never in tests.

use std::time::{Duration, Instant};

use crate::catalog;
use crate::policy::round::ScoringRound;
use crate::policy::types::{CapacityType, ClaimScores, Pod, Resources, Workload};
use crate::policy::{EngineConfig, Limits, PolicyEngine, PolicyError, builtin};

/// Settings of the scoring benchmark.
#[derive(Debug, Clone)]
pub struct ScoringBench {
    /// Instance types in the catalog passed to the policy.
    pub types: usize,
    /// Pods in the decision.
    pub pods: usize,
    /// Measured iterations per variant (after warm-up).
    pub iterations: usize,
}

/// Timings of one variant, per call.
#[derive(Debug, Clone)]
pub struct Timing {
    pub label: String,
    /// Fresh store, instantiation, `init`.
    pub instantiate: Summary,
    /// Handing the catalog over (`begin-round`).
    pub begin_round: Summary,
    /// Scoring the claim.
    pub call: Summary,
    /// The whole round, wall clock, the instance's teardown included.
    pub total: Summary,
}

/// Median, 99th percentile and mean of a sample.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub p50: Duration,
    pub p99: Duration,
    pub mean: Duration,
}

impl Summary {
    fn of(mut samples: Vec<Duration>) -> Summary {
        samples.sort();
        let n = samples.len().max(1);
        let at = |q: f64| {
            samples
                .get(((n as f64 * q) as usize).min(n - 1))
                .copied()
                .unwrap_or_default()
        };
        let mean = samples.iter().sum::<Duration>() / n as u32;
        Summary {
            p50: at(0.5),
            p99: at(0.99),
            mean,
        }
    }
}

/// The round the benchmark scores: `types` priced catalog types in 3 zones (spot and on-demand),
/// one claim of `pods` pods of 5 workloads with CPU and memory drawn from a fixed mix.
pub fn bench_round(types: usize, pods: usize) -> ScoringRound {
    let mut cat = catalog::policy_catalog(
        &catalog::embedded(),
        &["us-east-1a", "us-east-1b", "us-east-1c"],
    );
    cat.instance_types.truncate(types);
    let cpus = [100, 250, 500, 1000, 1500];
    let mems = [100u64, 256, 512, 1024, 2048];
    let workloads = (0..5)
        .map(|w| Workload {
            namespace: "bench".into(),
            owner: format!("Deployment/app-{w}"),
            labels: vec![("app".into(), format!("app-{w}"))],
        })
        .collect();
    let pods: Vec<Pod> = (0..pods)
        .map(|i| Pod {
            workload: (i % 5) as u32,
            requests: Resources {
                cpu_millis: cpus[i % cpus.len()] / 10,
                memory_bytes: (mems[(i * 7) % mems.len()] << 20) / 10,
                ephemeral_storage_bytes: 0,
                pods: 1,
                gpus: 0,
            },
            priority: 0,
        })
        .collect();
    catalog::scoring_round(1_790_000_000, cat, "default", workloads, pods)
}

/// `cheapest` written natively over the host's own types: the same function as the component,
/// without the sandbox boundary.
pub fn cheapest_native(round: &ScoringRound) -> Vec<ClaimScores> {
    round
        .claims
        .iter()
        .map(|claim| ClaimScores {
            scores: claim
                .options
                .iter()
                .map(|&o| {
                    let (_, offering, _) = round.resolve(o);
                    let tier = match offering.capacity_type {
                        CapacityType::Reserved => 2.0,
                        CapacityType::Spot => 1.0,
                        CapacityType::OnDemand => 0.0,
                    };
                    tier * 1.0e6 - offering.price
                })
                .collect(),
            vetoes: Vec::new(),
        })
        .collect()
}

/// Runs the scoring benchmark: `cheapest` as a component with the pooling and the on-demand
/// allocator, and natively; checks that all give the same verdicts.
pub fn scoring(opts: &ScoringBench) -> Result<(Vec<Timing>, usize), PolicyError> {
    let round = bench_round(opts.types, opts.pods);
    let options = round.claims[0].options.len();
    let wasm = builtin::find("cheapest")
        .expect("cheapest is built in")
        .wasm;
    let native = cheapest_native(&round);
    let mut out = Vec::new();
    for pooling in [true, false] {
        let engine = PolicyEngine::new(EngineConfig {
            pooling,
            ..EngineConfig::default()
        })?;
        let policy = engine.load("cheapest", wasm, Vec::new(), Limits::default())?;
        let (verdicts, _) = policy.score_timed(&round)?;
        assert_eq!(
            verdicts, native,
            "component and native implementation disagree"
        );
        for _ in 0..opts.iterations / 10 {
            policy.score_timed(&round)?;
        }
        let (mut inst, mut begin, mut call, mut total) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..opts.iterations {
            // The whole round, wall clock: includes dropping the instance and its store.
            let started = Instant::now();
            let (_, stats) = policy.score_timed(&round)?;
            total.push(started.elapsed());
            inst.push(stats.instantiate);
            begin.push(stats.begin_round);
            call.push(stats.call);
        }
        out.push(Timing {
            label: format!(
                "wasm ({} allocator)",
                if pooling { "pooling" } else { "on-demand" }
            ),
            instantiate: Summary::of(inst),
            call: Summary::of(call),
            total: Summary::of(total),
            begin_round: Summary::of(begin),
        });
    }
    let mut samples = Vec::new();
    for _ in 0..opts.iterations {
        let started = Instant::now();
        std::hint::black_box(cheapest_native(std::hint::black_box(&round)));
        samples.push(started.elapsed());
    }
    let native = Summary::of(samples);
    let zero = Summary::of(vec![Duration::ZERO]);
    out.push(Timing {
        label: "native".into(),
        instantiate: zero,
        begin_round: zero,
        call: native,
        total: native,
    });
    Ok((out, options))
}
