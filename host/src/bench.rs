//! Benchmarks printed by `dovetail bench`: speed targets are measured here, never in tests.

use std::time::{Duration, Instant};

#[cfg(feature = "bench-cluster")]
pub mod controller;
pub mod journal;
pub mod shadow;

use crate::capacity::claim::{Claim, Pod, Workload};
use crate::capacity::{CapacityType, Resources};
use crate::catalog;
use crate::policy::ScoringRound;
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
    /// The native scorer on the same round, timed right after each of this variant's rounds:
    /// the ratio's denominator, paired so that a busy machine slows both sides alike.
    pub native: Summary,
}

/// Median, 99th percentile and mean of a sample.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub p50: Duration,
    pub p99: Duration,
    pub mean: Duration,
}

impl Summary {
    pub(crate) fn of(mut samples: Vec<Duration>) -> Summary {
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
/// one claim of `pods` pods of 5 workloads with CPU and memory drawn from a fixed mix; its catalog
/// holds the types that fit the claim, as provisioning's rounds do.
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
    let claim = catalog::claim_for(&cat, "default", workloads, pods);
    // As provisioning hands a round over: the types the claim may launch.
    ScoringRound::pruned(1_790_000_000, &cat, vec![claim])
}

/// Runs the scoring benchmark: `cheapest` as a component with the pooling and the on-demand
/// allocator, and natively; checks that all give the same verdicts.
pub fn scoring(opts: &ScoringBench) -> Result<(Vec<Timing>, usize, usize), PolicyError> {
    let round = bench_round(opts.types, opts.pods);
    let options = round.claims[0].options.len();
    let handed = round.catalog.instance_types.len();
    let wasm = builtin::find("cheapest")
        .expect("cheapest is built in")
        .wasm;
    let native = crate::policy::native::cheapest(&round);
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
        let mut paired = Vec::new();
        for _ in 0..opts.iterations {
            // The whole round, wall clock: includes dropping the instance and its store.
            let started = Instant::now();
            let (_, stats) = policy.score_timed(&round)?;
            total.push(started.elapsed());
            inst.push(stats.instantiate);
            begin.push(stats.begin_round);
            call.push(stats.call);
            paired.push(time_native(&round));
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
            native: Summary::of(paired),
        });
    }
    let native = Summary::of((0..opts.iterations).map(|_| time_native(&round)).collect());
    let zero = Summary::of(vec![Duration::ZERO]);
    out.push(Timing {
        label: "native".into(),
        instantiate: zero,
        begin_round: zero,
        call: native,
        total: native,
        native,
    });
    Ok((out, options, handed))
}

/// One native scoring of the round, timed once its data is warm again (the wasm round before it
/// evicted much of it): native at its best, under the same load as the round beside it.
fn time_native(round: &ScoringRound) -> Duration {
    std::hint::black_box(crate::policy::native::cheapest(std::hint::black_box(round)));
    let started = Instant::now();
    std::hint::black_box(crate::policy::native::cheapest(std::hint::black_box(round)));
    started.elapsed()
}

/// The workloads and offerings the provisioning benchmark is run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchWorkload {
    /// The mix's sizes without topology constraints, on-demand offerings only.
    PlainOnDemand,
    /// Karpenter's full mix, on-demand offerings only.
    MixOnDemand,
    /// Karpenter's full mix, spot and on-demand offerings.
    MixSpot,
}

impl BenchWorkload {
    pub const ALL: [BenchWorkload; 3] = [
        BenchWorkload::PlainOnDemand,
        BenchWorkload::MixOnDemand,
        BenchWorkload::MixSpot,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            BenchWorkload::PlainOnDemand => "plain pods, on-demand",
            BenchWorkload::MixOnDemand => "Karpenter's mix, on-demand",
            BenchWorkload::MixSpot => "Karpenter's mix, spot",
        }
    }
}

/// Figures of one provisioning benchmark size.
#[derive(Debug, Clone)]
pub struct ProvisioningFigures {
    pub workload: BenchWorkload,
    pub pods: usize,
    pub scheduled: usize,
    pub claims: usize,
    /// Simulation only.
    pub solve: Duration,
    /// Simulation, options, the policy round (WASM) and picking each claim's top option.
    pub decision: Duration,
    /// Peak resident set of the process so far, bytes (Linux `VmHWM`).
    pub peak_rss: Option<u64>,
    /// Sum of the chosen options' prices, USD/hour.
    pub fleet_cost: f64,
    /// The old bound: requested CPU at the catalog's cheapest per-vCPU rate or memory at its
    /// cheapest per-GiB rate, whichever is higher, on raw capacity.
    pub naive_bound: f64,
    /// The LP relaxation on allocatable (CPU, memory, pods), USD/hour.
    pub lp_bound: f64,
    /// The LP with the node count hostname topology forces.
    pub topology_bound: f64,
    /// With spot: the LP when no pool (type and zone) may supply more than
    /// [`SPOT_POOL_SHARE`] of the CPU; the fleet follows the same rule.
    pub diverse_bound: Option<f64>,
    /// The topology bound (and with spot, the diverse one) with every pod on a node of a type
    /// it fits ([`crate::scheduling::cost::fitting_lower_bound`]), rather than each resource
    /// pooled over the fleet.
    pub fit_bound: f64,
    /// The most pods any one node holds, as a share of all scheduled pods.
    pub largest_share: f64,
    /// Nodes by instance type, most used first (the first few).
    pub top_types: Vec<(String, usize)>,
}

/// The capacity-diversity rule the solver plans by and the benchmark's fleet follows: no spot
/// pool (instance type in a zone) supplies more than this share of a round's CPU.
pub use crate::scheduling::solver::SPOT_POOL_SHARE;

/// Karpenter's scheduling-benchmark pod mix: one fifth each of plain pods, zone topology spread,
/// hostname topology spread, zone pod affinity and hostname pod anti-affinity; CPU from
/// {100m, 250m, 500m, 1000m, 1500m}, memory from {100, 256, 512, 1024, 2048, 4096} Mi; labels from
/// ten values per fifth; a fixed seed.
pub fn karpenter_mix(n: usize, seed: u64) -> Vec<crate::scheduling::PendingPod> {
    use crate::scheduling::model::{AffinityTerm, LabelSelector, SpreadConstraint, TopologyKey};
    let mut rng = seed.max(1);
    let mut next = move || {
        // xorshift64*: small, stable across platforms.
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    const CPU: [u64; 5] = [100, 250, 500, 1000, 1500];
    const MEM: [u64; 6] = [100, 256, 512, 1024, 2048, 4096];
    (0..n)
        .map(|i| {
            let kind = i % 5;
            let app = format!("k{kind}-{}", next() % 10);
            let cpu = CPU[(next() % 5) as usize];
            let mem = MEM[(next() % 6) as usize] << 20;
            let mut pod = crate::scheduling::PendingPod::new(
                &format!("bench/pod-{i}"),
                &[("app", &app)],
                cpu,
                mem,
            );
            pod.workload = kind as u32;
            let selector = LabelSelector::labels(&[("app", &app)]);
            match kind {
                1 => {
                    pod.spread = vec![SpreadConstraint {
                        key: TopologyKey::Zone,
                        max_skew: 1,
                        selector,
                    }]
                }
                2 => {
                    pod.spread = vec![SpreadConstraint {
                        key: TopologyKey::Hostname,
                        max_skew: 1,
                        selector,
                    }]
                }
                3 => {
                    pod.affinity = vec![AffinityTerm {
                        key: TopologyKey::Zone,
                        selector,
                    }]
                }
                4 => {
                    pod.anti_affinity = vec![AffinityTerm {
                        key: TopologyKey::Hostname,
                        selector,
                    }]
                }
                _ => {}
            }
            pod
        })
        .collect()
}

fn peak_rss() -> Option<u64> {
    peak_rss_of("self")
}

/// Peak resident set of a process (`self` or a pid), bytes (Linux `VmHWM`).
fn peak_rss_of(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Schedules each size of each benchmark workload against `types` instance types of the
/// catalog, ranks every claim with the `cheapest` component (one WASM round per decision) and
/// launches the top option of each — with spot, the top option whose pool still has room under
/// [`SPOT_POOL_SHARE`].
pub fn provisioning(
    sizes: &[usize],
    types: usize,
) -> Result<Vec<ProvisioningFigures>, PolicyError> {
    use crate::scheduling::model::labels;
    use crate::scheduling::{
        InstanceTypes, NodePoolSpec, Operator, Requirement, Requirements, solve,
    };

    let entries = catalog::embedded();
    let mut cat = catalog::policy_catalog(&entries, &["us-east-1a", "us-east-1b", "us-east-1c"]);
    cat.instance_types.truncate(types);
    let its = InstanceTypes::new(&entries, &cat);
    let engine = PolicyEngine::new(EngineConfig::default())?;
    let policy = engine.load(
        "cheapest",
        builtin::find("cheapest").expect("built in").wasm,
        Vec::new(),
        Limits::default(),
    )?;
    let workloads: Vec<Workload> = (0..5)
        .map(|k| Workload {
            namespace: "bench".into(),
            owner: format!("Deployment/kind-{k}"),
            labels: Vec::new(),
        })
        .collect();

    let mut out = Vec::new();
    for workload in BenchWorkload::ALL {
        let requirements = match workload {
            BenchWorkload::MixSpot => Requirements::default(),
            _ => Requirements::from_list(&[Requirement::new(
                labels::CAPACITY_TYPE,
                Operator::In,
                &["on-demand"],
            )]),
        };
        let pools = vec![NodePoolSpec::new("default", requirements.clone())];
        // The old bound's cheapest per-unit rates, over the offerings the pool allows.
        let (mut per_vcpu, mut per_gib) = (f64::INFINITY, f64::INFINITY);
        for t in &cat.instance_types {
            for o in &t.offerings {
                if workload != BenchWorkload::MixSpot && o.capacity_type != CapacityType::OnDemand {
                    continue;
                }
                per_vcpu = per_vcpu.min(o.price / f64::from(t.vcpus.max(1)));
                per_gib = per_gib.min(o.price / (t.memory_mib.max(1) as f64 / 1024.0));
            }
        }
        for &n in sizes {
            let mut pods = karpenter_mix(n, 42);
            if workload == BenchWorkload::PlainOnDemand {
                for p in &mut pods {
                    p.spread.clear();
                    p.affinity.clear();
                    p.anti_affinity.clear();
                }
            }
            let started = Instant::now();
            let plan = solve(&pods, &pools, &its);
            let solved = started.elapsed();
            let claims = plan
                .claims
                .iter()
                .map(|c| Claim {
                    node_pool: pools[c.node_pool].name.clone(),
                    workloads: workloads.clone(),
                    pods: c
                        .pods
                        .iter()
                        .map(|&p| Pod {
                            workload: pods[p].workload,
                            requests: pods[p].requests,
                            priority: pods[p].priority,
                        })
                        .collect(),
                    requests: c.requests,
                    options: c.options(&its),
                })
                .collect();
            // As provisioning hands it over: the types the claims may launch.
            let round = ScoringRound::pruned(1_790_000_000, &cat, claims);
            let scores = policy.score(&round)?;
            let spot = workload == BenchWorkload::MixSpot;
            let (fleet_cost, by_type) = launch_fleet(&round, &scores, spot, &pods);
            let decision = started.elapsed();
            let bounds = Bounds::of(&pods, &its, &requirements, spot, (per_vcpu, per_gib));
            let scheduled = n - plan.unschedulable.len();
            let largest = plan.claims.iter().map(|c| c.pods.len()).max().unwrap_or(0);
            let mut top_types: Vec<(String, usize)> = by_type.into_iter().collect();
            top_types.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            top_types.truncate(3);
            out.push(ProvisioningFigures {
                workload,
                pods: n,
                scheduled,
                claims: plan.claims.len(),
                solve: solved,
                decision,
                peak_rss: peak_rss(),
                fleet_cost,
                naive_bound: bounds.naive,
                lp_bound: bounds.lp,
                topology_bound: bounds.topology,
                diverse_bound: bounds.diverse,
                fit_bound: bounds.fit,
                largest_share: largest as f64 / scheduled.max(1) as f64,
                top_types,
            });
        }
    }
    Ok(out)
}

/// Launches each claim's top option — with spot, the top option whose pool (type and zone)
/// still has room under [`SPOT_POOL_SHARE`] of the round's CPU. Returns the fleet's USD/hour
/// and its nodes by instance type.
fn launch_fleet(
    round: &ScoringRound,
    scores: &[crate::capacity::claim::ClaimScores],
    spot: bool,
    pods: &[crate::scheduling::PendingPod],
) -> (f64, std::collections::BTreeMap<String, usize>) {
    use crate::policy::ranking::rank;
    let cpu: u64 = pods.iter().map(|p| p.requests.cpu_millis).sum();
    let cpu_cap = cpu as f64 / 1000.0 * SPOT_POOL_SHARE;
    // Spot pools used so far, vCPUs, for the diversity rule.
    let mut pool_cpu: std::collections::HashMap<(usize, usize), f64> = Default::default();
    let mut by_type: std::collections::BTreeMap<String, usize> = Default::default();
    let mut fleet_cost = 0.0;
    for (i, claim_scores) in scores.iter().enumerate() {
        let ranked = rank(round, i, claim_scores).ranked;
        let pick = ranked
            .iter()
            .find(|r| {
                let l = round.launch(r.option);
                l.capacity_type != CapacityType::Spot
                    || !spot
                    || pool_cpu
                        .get(&crate::capacity::unpack(r.option))
                        .copied()
                        .unwrap_or(0.0)
                        + f64::from(l.vcpus)
                        <= cpu_cap
            })
            .unwrap_or(&ranked[0]);
        let l = round.launch(pick.option);
        if l.capacity_type == CapacityType::Spot {
            *pool_cpu
                .entry(crate::capacity::unpack(pick.option))
                .or_default() += f64::from(l.vcpus);
        }
        *by_type.entry(l.instance_type.to_string()).or_default() += 1;
        fleet_cost += l.price;
    }
    (fleet_cost, by_type)
}

/// The bounds a provisioning run's fleet is compared with, USD/hour (see
/// [`ProvisioningFigures`]).
struct Bounds {
    naive: f64,
    lp: f64,
    topology: f64,
    diverse: Option<f64>,
    fit: f64,
}

impl Bounds {
    /// For `pods` on the offerings `requirements` admit; `rates` are the catalog's cheapest
    /// USD per vCPU and per GiB (the old bound's).
    fn of(
        pods: &[crate::scheduling::PendingPod],
        its: &crate::scheduling::InstanceTypes,
        requirements: &crate::scheduling::Requirements,
        spot: bool,
        rates: (f64, f64),
    ) -> Bounds {
        use crate::scheduling::cost::{self, Demand};
        let zero = crate::scheduling::model::zero();
        let admitted = its.admitted_by(requirements);
        let supplies = cost::supplies(its, &admitted, requirements, &zero, None);
        let mut demand = Demand::default();
        let mut shapes = cost::Shapes::default();
        for p in pods {
            demand.add(&cost::amount(&p.requests));
            shapes.add(&cost::amount(&p.requests));
        }
        let (cpu, mem) = pods.iter().fold((0u64, 0u64), |(c, m), p| {
            (c + p.requests.cpu_millis, m + p.requests.memory_bytes)
        });
        let naive =
            (cpu as f64 / 1000.0 * rates.0).max(mem as f64 / f64::from(1u32 << 30) * rates.1);
        let lp = cost::lower_bound(&supplies, &demand).map_or(f64::NAN, |b| b.cost);
        let topology_demand = Demand {
            nodes: own_host_nodes(pods),
            ..demand
        };
        let topology = cost::lower_bound(&supplies, &topology_demand).map_or(f64::NAN, |b| b.cost);
        let pools = cost::offering_supplies(its, &admitted, requirements, &zero, None);
        let diverse = spot
            .then(|| cost::diverse_lower_bound(&pools, &topology_demand, SPOT_POOL_SHARE))
            .flatten();
        let fit = if spot {
            let cap = demand.amount[0] * SPOT_POOL_SHARE;
            cost::fitting_lower_bound(&pools, &shapes, topology_demand.nodes, |_, s| {
                cap / s.amount[0].max(1e-9)
            })
        } else {
            cost::fitting_lower_bound(&supplies, &shapes, topology_demand.nodes, |_, _| {
                f64::INFINITY
            })
        }
        .unwrap_or(f64::NAN);
        Bounds {
            naive,
            lp,
            topology,
            diverse,
            fit,
        }
    }
}

/// The nodes hostname topology forces: hostname anti-affinity and maxSkew-1 hostname spread
/// put each selector's pods on nodes of their own, so the largest such group is a node count.
fn own_host_nodes(pods: &[crate::scheduling::PendingPod]) -> f64 {
    use crate::scheduling::model::TopologyKey;
    let mut groups: std::collections::HashMap<String, f64> = Default::default();
    for p in pods {
        let own_host = p
            .anti_affinity
            .iter()
            .any(|a| a.key == TopologyKey::Hostname)
            || p.spread.iter().any(|s| s.key == TopologyKey::Hostname);
        if own_host {
            let app = p
                .labels
                .iter()
                .find(|(k, _)| k == "app")
                .map(|l| l.1.clone());
            *groups.entry(app.unwrap_or_default()).or_default() += 1.0;
        }
    }
    groups.values().copied().fold(0.0, f64::max)
}

/// Figures of the disruption benchmark.
#[derive(Debug, Clone)]
pub struct DisruptionFigures {
    /// The first pass after the scale-down: the one with every node a candidate.
    pub first: crate::sim::DisruptionRound,
    /// The slowest pass of the run.
    pub slowest: crate::sim::DisruptionRound,
    /// Every pass with candidates after the scale-down.
    pub all: Vec<crate::sim::DisruptionRound>,
    pub rounds: usize,
    pub nodes_before: usize,
    pub nodes_after: usize,
    /// USD per hour just before consolidation and at the end.
    pub cost_before: f64,
    pub cost_after: f64,
    /// The LP bound of the pool's own offerings for the pods that remain.
    pub lower_bound: f64,
    /// What provisioning launches for the remaining pods on an empty cluster, USD per hour.
    pub fresh: f64,
    pub evictions: u32,
    pub wall: Duration,
}

/// Consolidation at scale: `pods` pods of ten deployments on nodes of 2 or 4 vCPUs, then 40% of
/// every deployment removed; the simulator runs the real disruption code (with `balanced` in
/// WASM, budgets at 100%) until the cluster settles.
pub fn disruption(pods: usize) -> Result<DisruptionFigures, crate::sim::SimError> {
    let requirements: String = DISRUPTION_POOL
        .iter()
        .map(|(key, values)| {
            format!("        - {{key: {key}, operator: In, values: {values:?}}}\n")
        })
        .collect();
    let mut yaml = String::from(
        r#"apiVersion: dovetail.sh/v1
kind: NodePool
metadata: {name: bench}
spec:
  template:
    spec:
      requirements:
{requirements}      nodeClassRef: {group: aws.dovetail.sh, kind: EC2NodeClass, name: default}
  disruption:
    consolidationPolicy: WhenEmptyOrUnderutilized
    consolidateAfter: 0s
    budgets: [{nodes: "100%"}]
"#,
    )
    .replace("{requirements}", &requirements);
    let per = pods / 10;
    let mut steps = String::new();
    for k in 0..10 {
        yaml.push_str(&format!(
            "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d{k}}}\nspec:\n  replicas: {per}\n  selector: {{matchLabels: {{app: d{k}}}}}\n  template:\n    metadata: {{labels: {{app: d{k}}}}}\n    spec:\n      containers:\n        - name: c\n          image: pause\n          resources: {{requests: {{cpu: {}m, memory: {}Mi}}}}\n",
            100 + 70 * k,
            128 + 96 * k
        ));
        steps.push_str(&format!(
            "    - at: 10m\n      scale: {{deployment: d{k}, replicas: {}}}\n",
            per * 6 / 10
        ));
    }
    // The same pods provisioned from scratch: what consolidation should approach.
    let fresh_yaml = yaml.clone().replace(
        &format!("replicas: {per}\n"),
        &format!("replicas: {}\n", per * 6 / 10),
    ) + "---\napiVersion: sim.dovetail.sh/v1\nkind: Scenario\nmetadata: {name: fresh}\nspec: {duration: 5m}\n";
    let fresh = crate::sim::simulate(
        &[("fresh.yaml".into(), fresh_yaml)],
        &crate::sim::SimOptions::default(),
    )?
    .cost_per_hour();
    yaml.push_str(&format!(
        "---\napiVersion: sim.dovetail.sh/v1\nkind: Scenario\nmetadata: {{name: bench}}\nspec:\n  duration: 1h\n  steps:\n{steps}"
    ));
    let started = Instant::now();
    let report = crate::sim::simulate(
        &[("bench.yaml".into(), yaml)],
        &crate::sim::SimOptions::default(),
    )?;
    let wall = started.elapsed();
    let total =
        |r: &crate::sim::DisruptionRound| r.timings.moves + r.timings.policy + r.timings.enforce;
    let after_scale: Vec<_> = report
        .disruption_rounds
        .iter()
        .filter(|r| r.at >= 600)
        .collect();
    let first = (*after_scale
        .first()
        .expect("a disruption pass after the scale-down"))
    .clone();
    let slowest = (*after_scale
        .iter()
        .max_by_key(|r| total(r))
        .expect("non-empty"))
    .clone();
    let mut cost_before = 0.0;
    let mut nodes_before = 0;
    for e in &report.events {
        if e.at < 600
            && let crate::sim::EventKind::Launched { price, .. } = e.kind
        {
            cost_before += price;
            nodes_before += 1;
        }
    }
    let lower_bound = pool_lower_bound(&report.pods);
    Ok(DisruptionFigures {
        first,
        slowest,
        all: after_scale.iter().map(|r| (*r).clone()).collect(),
        rounds: after_scale.len(),
        nodes_before,
        nodes_after: report.nodes.len(),
        cost_before,
        cost_after: report.cost_per_hour(),
        lower_bound,
        fresh,
        evictions: report.evictions,
        wall,
    })
}

/// The disruption benchmark's NodePool requirements (each `In`): its YAML and its bound read them.
const DISRUPTION_POOL: [(&str, &[&str]); 4] = [
    ("aws.dovetail.sh/instance-cpu", &["2", "4"]),
    ("aws.dovetail.sh/instance-category", &["c", "m", "r"]),
    ("kubernetes.io/arch", &["amd64"]),
    ("dovetail.sh/capacity-type", &["spot", "on-demand"]),
];

/// The LP bound of the benchmark pool's own offerings ([`DISRUPTION_POOL`]) for the pods that
/// remain, each on a type it fits: what its fleet cannot beat. A bound over the whole catalog
/// would count types the pool may not launch.
fn pool_lower_bound(pods: &[crate::cluster::Pod]) -> f64 {
    use crate::scheduling::cost;
    use crate::scheduling::{InstanceTypes, Operator, Requirement, Requirements};

    let entries = catalog::embedded();
    let cat = catalog::policy_catalog(&entries, &["us-east-1a", "us-east-1b", "us-east-1c"]);
    let its = InstanceTypes::new(&entries, &cat);
    let requirements = Requirements::from_list(
        &DISRUPTION_POOL
            .iter()
            .map(|(key, values)| Requirement::new(key, Operator::In, values))
            .collect::<Vec<_>>(),
    );
    let admitted = its.admitted_by(&requirements);
    let supplies = cost::supplies(
        &its,
        &admitted,
        &requirements,
        &crate::scheduling::model::zero(),
        None,
    );
    let mut shapes = cost::Shapes::default();
    for p in pods {
        shapes.add(&cost::amount(&p.spec.requests));
    }
    cost::fitting_lower_bound(&supplies, &shapes, 0.0, |_, _| f64::INFINITY).unwrap_or(f64::NAN)
}

/// What loading a new version of a policy costs, per built-in component.
#[derive(Debug, Clone)]
pub struct LoadFigures {
    pub policy: &'static str,
    pub size: usize,
    /// Compile (Cranelift), link and the header checks: a digest never seen.
    pub first_load: Duration,
    /// The same digest again: the compiled component is reused.
    pub cache_hit: Duration,
    /// Everything the controller does before a swap on a cache hit: `init` and the canary
    /// rounds.
    pub validate: Duration,
}

/// Loads every built-in on a fresh engine, then again, then validates it as the Policy
/// controller does (`PolicyRegistry::prepare`).
pub fn load() -> Result<Vec<LoadFigures>, PolicyError> {
    let registry = crate::policy::PolicyRegistry::new(PolicyEngine::new(EngineConfig::default())?);
    let mut out = Vec::new();
    for b in builtin::all() {
        let engine = registry.engine();
        let t = Instant::now();
        let first = engine.load(b.name, b.wasm, Vec::new(), Limits::default())?;
        let first_load = t.elapsed();
        let t = Instant::now();
        let again = engine.load(b.name, b.wasm, Vec::new(), Limits::default())?;
        let cache_hit = t.elapsed();
        // The configuration a Policy would give it (quiet-hours needs its windows).
        let config = match b.name {
            "quiet-hours" => vec![("windows".to_string(), "Mon-Fri 08:00-18:00".to_string())],
            _ => Vec::new(),
        };
        let t = Instant::now();
        registry.prepare(
            b.name,
            b.wasm,
            config,
            Limits::default(),
            crate::policy::canary::Roles::default(),
        )?;
        let validate = t.elapsed();
        drop((first, again));
        out.push(LoadFigures {
            policy: b.name,
            size: b.wasm.len(),
            first_load,
            cache_hit,
            validate,
        });
    }
    Ok(out)
}
