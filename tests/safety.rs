//! Safety over any policy, as properties: whatever a scoring or consolidation component answers,
//! the host never breaks a safety invariant. Each case is a generated scenario — NodePools with
//! limits, budgets (counts, percentages, cron schedules, reasons), consolidateAfter, expireAfter
//! and terminationGracePeriod; Deployments and bare pods with spread, anti-affinity and
//! do-not-disrupt; PodDisruptionBudgets; a timeline of scale-ups, scale-downs, manual node
//! deletions, interruptions and capacity errors; controller crashes after a generated effect —
//! run by the real controller core in the simulator with the `adversary` fixture component as
//! both scoring and consolidation policy (valid, arbitrary answers drawn from a generated seed).
//!
//! Invariants are checked on the world after every step ([`dovetail::sim::simulate_watched`]):
//! limits; voluntary disruptions in flight within the budget active when they start; no eviction
//! that leaves a PDB short of its desired healthy (Ready) pods — judged from the pods and the
//! workloads' scale as Kubernetes defines a budget, not from any status the world computed —
//! and no do-not-disrupt pod evicted voluntarily before
//! terminationGracePeriod forces it; every instance owned by exactly one live claim or collected
//! within the grace period, none orphaned at the end; no pod left pending that the cluster could
//! hold. A case is written as the manifests plus Scenario it is, so a failure (shrunk by
//! proptest) prints a file `dovetail simulate -f` runs.
//!
//! CI runs `CASES` cases from a fixed seed; `DOVETAIL_SAFETY_CASES=500` runs more by hand.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use dovetail::sim::{Moment, SimError, SimOptions, simulate_watched};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngAlgorithm, TestRng, TestRunner};

/// Cases per CI run.
const CASES: u32 = 24;

/// What the cases exercised, printed at the end: runs, restarts, evictions, disruptions,
/// cases rejected (a step naming a node the run never had).
static RUNS: AtomicU64 = AtomicU64::new(0);
static RESTARTS: AtomicU64 = AtomicU64::new(0);
static EVICTIONS: AtomicU64 = AtomicU64::new(0);
static DISRUPTIONS: AtomicU64 = AtomicU64::new(0);
static REJECTED: AtomicU64 = AtomicU64::new(0);
static NEVER_JOINED: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone)]
enum Budget {
    Count(u8),
    Percent(u8),
    /// `nodes` while a `*/20 * * * *` schedule is active for 10 minutes.
    Scheduled(u8),
    /// `nodes` for one reason only.
    Reason(u8, &'static str),
}

#[derive(Debug, Clone)]
struct PoolGen {
    cpu_limit: Option<u32>,
    budgets: Vec<Budget>,
    consolidate_after_s: u32,
    expire_after_m: Option<u32>,
    grace_m: Option<u32>,
    spot: bool,
    /// Its nodes say do-not-disrupt (the template's annotation).
    do_not_disrupt: bool,
}

#[derive(Debug, Clone)]
enum Topology {
    None,
    ZoneSpread,
    HostnameSpread,
    HostnameAntiAffinity,
}

#[derive(Debug, Clone)]
struct DeploymentGen {
    replicas: u8,
    cpu_m: u32,
    mem_mi: u32,
    topology: Topology,
    do_not_disrupt: bool,
    /// Index into the case's pools its pods must go to (a nodeSelector), if any.
    pool: Option<usize>,
}

#[derive(Debug, Clone)]
enum PdbGen {
    MaxUnavailable(u8),
    MaxUnavailablePercent(u8),
    MinAvailable(u8),
    MinAvailablePercent(u8),
}

#[derive(Debug, Clone)]
enum StepGen {
    Scale { deployment: usize, replicas: u8 },
    DeleteNode(u8),
    Interrupt(u8),
    Exhaust { zone: u8, spot: bool },
}

#[derive(Debug, Clone)]
struct Case {
    pools: Vec<PoolGen>,
    deployments: Vec<DeploymentGen>,
    /// One PDB per deployment at most, by index.
    pdbs: Vec<(usize, PdbGen)>,
    bare_pods: u8,
    /// (minute, step)
    steps: Vec<(u32, StepGen)>,
    crash_after: Vec<u32>,
    /// Launches whose instance never registers a Node.
    never_join: Vec<u32>,
    seed: u64,
}

fn budget() -> impl Strategy<Value = Budget> {
    prop_oneof![
        (0u8..4).prop_map(Budget::Count),
        (0u8..60).prop_map(Budget::Percent),
        (0u8..2).prop_map(Budget::Scheduled),
        (
            0u8..3,
            prop::sample::select(vec!["Empty", "Underutilized", "Drifted"])
        )
            .prop_map(|(n, r)| Budget::Reason(n, r)),
    ]
}

fn pool() -> impl Strategy<Value = PoolGen> {
    (
        prop::option::of(8u32..80),
        prop::collection::vec(budget(), 0..3),
        prop::sample::select(vec![0u32, 30, 60, 300]),
        prop::option::of(20u32..90),
        prop::option::of(1u32..20),
        any::<bool>(),
        prop::bool::weighted(0.15),
    )
        .prop_map(
            |(cpu_limit, budgets, consolidate_after_s, expire_after_m, grace_m, spot, dnd)| {
                PoolGen {
                    cpu_limit,
                    budgets,
                    consolidate_after_s,
                    expire_after_m,
                    grace_m,
                    spot,
                    do_not_disrupt: dnd,
                }
            },
        )
}

fn deployment(pools: usize) -> impl Strategy<Value = DeploymentGen> {
    (
        1u8..12,
        prop::sample::select(vec![100u32, 250, 500, 1000, 1500, 3000]),
        prop::sample::select(vec![128u32, 512, 1024, 2048, 6144]),
        prop_oneof![
            3 => Just(Topology::None),
            1 => Just(Topology::ZoneSpread),
            1 => Just(Topology::HostnameSpread),
            1 => Just(Topology::HostnameAntiAffinity),
        ],
        prop::bool::weighted(0.2),
        prop::option::weighted(0.3, 0..pools),
    )
        .prop_map(
            |(replicas, cpu_m, mem_mi, topology, do_not_disrupt, pool)| DeploymentGen {
                replicas,
                cpu_m,
                mem_mi,
                topology,
                do_not_disrupt,
                pool,
            },
        )
}

fn step(deployments: usize) -> impl Strategy<Value = StepGen> {
    prop_oneof![
        3 => (0..deployments, 0u8..16)
            .prop_map(|(deployment, replicas)| StepGen::Scale { deployment, replicas }),
        1 => (1u8..4).prop_map(StepGen::DeleteNode),
        1 => (1u8..4).prop_map(StepGen::Interrupt),
        1 => (0u8..3, any::<bool>()).prop_map(|(zone, spot)| StepGen::Exhaust { zone, spot }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    prop::collection::vec(pool(), 1..3)
        .prop_flat_map(|pools| {
            let n = pools.len();
            (Just(pools), prop::collection::vec(deployment(n), 1..4))
        })
        .prop_flat_map(|(pools, deployments)| {
            let d = deployments.len();
            (
                Just(pools),
                Just(deployments),
                prop::collection::vec(
                    (
                        0..d,
                        prop_oneof![
                            (0u8..2).prop_map(PdbGen::MaxUnavailable),
                            (0u8..60).prop_map(PdbGen::MaxUnavailablePercent),
                            (0u8..6).prop_map(PdbGen::MinAvailable),
                            (10u8..90).prop_map(PdbGen::MinAvailablePercent),
                        ],
                    ),
                    0..3,
                ),
                0u8..3,
                prop::collection::vec((2u32..60, step(d)), 0..6),
                prop::collection::vec(1u32..120, 0..3),
                prop::collection::vec(1u32..12, 0..3),
                any::<u64>(),
            )
        })
        .prop_map(
            |(
                pools,
                deployments,
                mut pdbs,
                bare_pods,
                mut steps,
                crash_after,
                never_join,
                seed,
            )| {
                pdbs.sort_by_key(|p| p.0);
                pdbs.dedup_by_key(|p| p.0);
                steps.sort_by_key(|s| s.0);
                Case {
                    pools,
                    deployments,
                    pdbs,
                    bare_pods,
                    steps,
                    crash_after,
                    never_join,
                    seed,
                }
            },
        )
}

fn pool_name(i: usize) -> String {
    format!("pool{i}")
}

/// The case as the manifests and Scenario `dovetail simulate -f` runs.
fn manifests(case: &Case) -> String {
    let mut y = String::new();
    let wasm = dovetail::policy::builtin::fixture_path("adversary");
    let _ = write!(
        y,
        "apiVersion: dovetail.sh/v1\nkind: Policy\nmetadata: {{name: adversary}}\nspec:\n  source: {{file: {:?}}}\n  config: {{seed: \"{}\"}}\n---\n",
        wasm.display().to_string(),
        case.seed
    );
    y.push_str(
        "apiVersion: aws.dovetail.sh/v1\nkind: EC2NodeClass\nmetadata: {name: default}\nspec:\n  role: KarpenterNodeRole-lab\n  amiSelectorTerms: [{alias: al2023@latest}]\n  subnetSelectorTerms: [{tags: {dovetail.sh/discovery: lab}}]\n  securityGroupSelectorTerms: [{tags: {dovetail.sh/discovery: lab}}]\n---\n",
    );
    for (i, p) in case.pools.iter().enumerate() {
        let _ = write!(
            y,
            "apiVersion: dovetail.sh/v1\nkind: NodePool\nmetadata: {{name: {}}}\nspec:\n  template:\n    metadata: {{labels: {{pool: {}}}{}}}\n    spec:\n      requirements:\n        - {{key: dovetail.sh/capacity-type, operator: In, values: [{}]}}\n        - {{key: aws.dovetail.sh/instance-category, operator: In, values: [c, m, r]}}\n        - {{key: aws.dovetail.sh/instance-cpu, operator: Lt, values: [\"17\"]}}\n      nodeClassRef: {{group: aws.dovetail.sh, kind: EC2NodeClass, name: default}}\n",
            pool_name(i),
            pool_name(i),
            if p.do_not_disrupt {
                ", annotations: {dovetail.sh/do-not-disrupt: \"true\"}"
            } else {
                ""
            },
            if p.spot { "spot" } else { "on-demand" }
        );
        if let Some(m) = p.expire_after_m {
            let _ = writeln!(y, "      expireAfter: {m}m");
        }
        if let Some(m) = p.grace_m {
            let _ = writeln!(y, "      terminationGracePeriod: {m}m");
        }
        if let Some(c) = p.cpu_limit {
            let _ = writeln!(y, "  limits: {{cpu: {c}}}");
        }
        let _ = write!(
            y,
            "  disruption:\n    consolidationPolicy: WhenEmptyOrUnderutilized\n    consolidateAfter: {}s\n",
            p.consolidate_after_s
        );
        if !p.budgets.is_empty() {
            y.push_str("    budgets:\n");
            for b in &p.budgets {
                let _ = match b {
                    Budget::Count(n) => writeln!(y, "      - {{nodes: \"{n}\"}}"),
                    Budget::Percent(n) => writeln!(y, "      - {{nodes: \"{n}%\"}}"),
                    Budget::Scheduled(n) => writeln!(
                        y,
                        "      - {{nodes: \"{n}\", schedule: \"*/20 * * * *\", duration: 10m}}"
                    ),
                    Budget::Reason(n, r) => {
                        writeln!(y, "      - {{nodes: \"{n}\", reasons: [{r}]}}")
                    }
                };
            }
        }
        y.push_str("  policies: {scoring: adversary, consolidation: adversary}\n---\n");
    }
    for (i, d) in case.deployments.iter().enumerate() {
        let app = format!("app{i}");
        let _ = write!(
            y,
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {app}}}\nspec:\n  replicas: {}\n  selector: {{matchLabels: {{app: {app}}}}}\n  template:\n    metadata:\n      labels: {{app: {app}}}\n",
            d.replicas
        );
        if d.do_not_disrupt {
            y.push_str("      annotations: {dovetail.sh/do-not-disrupt: \"true\"}\n");
        }
        y.push_str("    spec:\n");
        if let Some(p) = d.pool {
            let _ = writeln!(y, "      nodeSelector: {{pool: {}}}", pool_name(p));
        }
        let selector = format!("{{matchLabels: {{app: {app}}}}}");
        match d.topology {
            Topology::None => {}
            Topology::ZoneSpread => {
                let _ = writeln!(
                    y,
                    "      topologySpreadConstraints: [{{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {selector}}}]"
                );
            }
            Topology::HostnameSpread => {
                let _ = writeln!(
                    y,
                    "      topologySpreadConstraints: [{{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {selector}}}]"
                );
            }
            Topology::HostnameAntiAffinity => {
                let _ = writeln!(
                    y,
                    "      affinity: {{podAntiAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: [{{topologyKey: kubernetes.io/hostname, labelSelector: {selector}}}]}}}}"
                );
            }
        }
        // Pods take a while to stop once asked (a preStop sleep, some past the default 30 s
        // grace), so drains overlap pods that are still terminating.
        let stop = (i * 17) % 45;
        let _ = write!(
            y,
            "      containers:\n        - name: c\n          image: pause\n          resources: {{requests: {{cpu: {}m, memory: {}Mi}}}}\n",
            d.cpu_m, d.mem_mi
        );
        if stop > 0 {
            let _ = writeln!(
                y,
                "          lifecycle: {{preStop: {{sleep: {{seconds: {stop}}}}}}}"
            );
        }
        y.push_str("---\n");
    }
    for (d, pdb) in &case.pdbs {
        let rule = match pdb {
            PdbGen::MaxUnavailable(n) => format!("maxUnavailable: {n}"),
            PdbGen::MaxUnavailablePercent(p) => format!("maxUnavailable: \"{p}%\""),
            PdbGen::MinAvailable(n) => format!("minAvailable: {n}"),
            PdbGen::MinAvailablePercent(p) => format!("minAvailable: \"{p}%\""),
        };
        let _ = write!(
            y,
            "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {{name: app{d}}}\nspec:\n  {rule}\n  selector: {{matchLabels: {{app: app{d}}}}}\n---\n"
        );
    }
    for i in 0..case.bare_pods {
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: bare{i}, labels: {{app: bare}}}}\nspec:\n  containers: [{{name: c, image: pause, resources: {{requests: {{cpu: 300m, memory: 256Mi}}}}}}]\n---\n"
        );
    }
    y.push_str(
        "apiVersion: sim.dovetail.sh/v1\nkind: Scenario\nmetadata: {name: safety}\nspec:\n  duration: 2h\n",
    );
    if !case.steps.is_empty() {
        y.push_str("  steps:\n");
    }
    for (at, s) in &case.steps {
        let _ = match s {
            StepGen::Scale {
                deployment,
                replicas,
            } => writeln!(
                y,
                "    - {{at: {at}m, scale: {{deployment: app{deployment}, replicas: {replicas}}}}}"
            ),
            StepGen::DeleteNode(n) => writeln!(
                y,
                "    - {{at: {at}m, delete: {{kind: Node, name: {}-{n:05}}}}}",
                pool_name(0)
            ),
            StepGen::Interrupt(n) => writeln!(
                y,
                "    - {{at: {at}m, interrupt: {{node: {}-{n:05}}}}}",
                pool_name(0)
            ),
            StepGen::Exhaust { zone, spot } => writeln!(
                y,
                "    - {{at: {at}m, exhaust: {{instanceType: c5.large, zone: us-east-1{}, capacityType: {}}}}}",
                ["a", "b", "c"][*zone as usize],
                if *spot { "spot" } else { "on-demand" }
            ),
        };
    }
    y
}

/// What the invariants remember between moments.
#[derive(Default)]
struct Watcher {
    /// Instance id → when it was first seen without a live claim.
    orphaned_since: HashMap<String, i64>,
    /// Evictions already checked.
    evictions_seen: usize,
    /// Nodes already checked against the budget when their disruption started.
    disruptions_seen: BTreeMap<String, i64>,
    /// Registered claims and the instance each registered with.
    registered: HashMap<String, String>,
}

/// A claim whose Node has not registered must be gone this long after its launch: the TTL, one
/// wait before a step asked for is asked again, and a tick.
const NEVER_JOINED_DEADLINE: i64 = dovetail::lifecycle::REGISTRATION_TTL.as_secs() as i64
    + dovetail::controller::LIFECYCLE_RETRY
    + 2;

/// An instance may go unowned this long before it must be gone: the grace period plus one GC
/// interval to notice it and one more to act.
const ORPHAN_DEADLINE: i64 = dovetail::sim::ORPHAN_GRACE.as_secs() as i64 + 2 * 60;

impl Watcher {
    fn check(&mut self, m: &Moment<'_>) -> Result<(), String> {
        let c = m.cluster;
        for pool in &c.pools {
            let nodes: Vec<_> = c
                .nodes
                .values()
                .filter(|n| n.instance.node_pool == pool.spec.name)
                .collect();
            // Limits: never exceeded, counting every node of the pool.
            if let Some(limit) = pool.spec.limits.cpu_millis {
                let used: u64 = nodes
                    .iter()
                    .map(|n| m.its.types[n.type_index as usize].capacity.0)
                    .sum();
                if used > limit {
                    return Err(format!(
                        "NodePool {} holds {used}m of CPU capacity over its limit {limit}m",
                        pool.spec.name
                    ));
                }
            }
            // Budgets: when a voluntary disruption starts, what is disrupting fits the budget
            // active at that moment for its reason.
            let deleting = nodes.iter().filter(|n| n.deletion.is_some()).count() as u32;
            for n in &nodes {
                let Some(d) = &n.deletion else { continue };
                let Some(reason) = d.reason else { continue };
                if self.disruptions_seen.contains_key(&n.name) {
                    continue;
                }
                self.disruptions_seen.insert(n.name.clone(), d.since);
                let allowed = dovetail::disruption::budget::allowed(
                    &pool.resource.spec.disruption.budgets,
                    nodes.len() as u32,
                    reason,
                    d.since,
                )
                .map_err(|e| format!("budget unreadable: {e}"))?;
                if deleting > allowed {
                    return Err(format!(
                        "NodePool {}: {deleting} of {} nodes disrupting once {} began ({reason:?}), the budget allows {allowed}",
                        pool.spec.name,
                        nodes.len(),
                        n.name
                    ));
                }
            }
        }
        // PDBs and do-not-disrupt, at each eviction.
        for e in &m.evictions[self.evictions_seen..] {
            let voluntary = e.deletion.as_ref().is_some_and(|d| d.reason.is_some());
            let grace = e.deletion.as_ref().and_then(|d| {
                let pool = c
                    .pools
                    .iter()
                    .find(|p| Some(&p.spec.name) == e.node_pool.as_ref())?;
                let g = pool
                    .resource
                    .spec
                    .template
                    .spec
                    .termination_grace_period
                    .as_ref()?;
                let secs = dovetail::api::duration::parse(g).ok()??.as_secs() as i64;
                Some(d.since + secs)
            });
            let at = m.now - m.t + e.t;
            // Evicted past the NodePool's terminationGracePeriod, or deleted directly once the
            // pod's own grace would no longer end by it (Karpenter's rule), a pod may go whatever
            // protects it.
            let forced = grace.is_some_and(|deadline| {
                at >= deadline || (e.direct && at >= deadline - e.grace_seconds)
            });
            if forced {
                continue;
            }
            // A PDB as kubernetes.io "Specifying a Disruption Budget" defines it, judged here
            // from what the world held (not from any status the world or the controller
            // computed): expected pods are the workloads' scale (maxUnavailable, a percentage
            // minAvailable) or the selected pods (an integer minAvailable), percentages round
            // up, healthy pods are Ready. Evicting a healthy pod must leave the desired number
            // healthy, and nothing may go while nothing is expected.
            for b in e.pdbs.iter().filter(|_| e.ready) {
                let budget = c
                    .pdbs
                    .iter()
                    .find(|p| format!("{}/{}", p.namespace, p.name) == b.pdb)
                    .expect("the PDB of a fact exists");
                let up = |v: dovetail::cluster::IntOrPercent, of: u32| match v {
                    dovetail::cluster::IntOrPercent::Count(n) => n,
                    dovetail::cluster::IntOrPercent::Percent(p) => (of * p).div_ceil(100),
                };
                let (expected, desired) = match (budget.max_unavailable, budget.min_available) {
                    (Some(max), _) => (b.scale, b.scale.saturating_sub(up(max, b.scale))),
                    (None, Some(dovetail::cluster::IntOrPercent::Count(n))) => (b.selected, n),
                    (None, Some(min)) => (b.scale, up(min, b.scale)),
                    (None, None) => (0, 0),
                };
                if expected == 0 || b.healthy < desired + 1 {
                    return Err(format!(
                        "evicted {} from {} against PDB {}: {} healthy, {desired} desired of {expected} expected",
                        e.pod, e.node, b.pdb, b.healthy
                    ));
                }
            }
            if voluntary && (e.do_not_disrupt || e.node_do_not_disrupt) {
                return Err(format!(
                    "evicted do-not-disrupt {} from {} in a voluntary disruption before its grace period",
                    e.pod, e.node
                ));
            }
        }
        self.evictions_seen = m.evictions.len();
        // The controller judges each eviction from the status the Eviction API decides with:
        // it never asks for one the API refuses.
        if let Some((t, pod, answer)) = m.refused_evictions.first() {
            return Err(format!("asked to evict {pod} at {t}s, refused: {answer}"));
        }
        // Liveness: a claim whose Node never registers is gone within the registration TTL (its
        // instance with it, by the orphan check below), unless termination already has it.
        for n in c.nodes.values() {
            let waiting = n.lifecycle.joined.is_none() && !n.lifecycle.registered;
            if waiting && n.deletion.is_none() && m.now - n.launched_at > NEVER_JOINED_DEADLINE {
                return Err(format!(
                    "claim {} launched {}s ago has no Node and is still there",
                    n.name,
                    m.now - n.launched_at
                ));
            }
        }
        // No claim is launched twice: at most one instance names it, and a registered claim
        // keeps the instance it registered with.
        self.registered
            .retain(|claim, _| c.nodes.contains_key(claim));
        for n in c.nodes.values().filter(|n| n.lifecycle.registered) {
            let first = self
                .registered
                .entry(n.name.clone())
                .or_insert_with(|| n.instance.id.clone());
            if *first != n.instance.id {
                return Err(format!(
                    "claim {} registered with {first} and now holds {}",
                    n.name, n.instance.id
                ));
            }
        }
        let mut launches: HashMap<&str, &str> = HashMap::new();
        for i in &m.instances {
            if let Some(other) = launches.insert(i.claim.as_str(), i.id.as_str()) {
                return Err(format!(
                    "claim {} launched twice: {other} and {}",
                    i.claim, i.id
                ));
            }
        }
        // Instances: each owned by exactly one live claim, or collected within the deadline.
        let mut owners: HashMap<&str, &str> = HashMap::new();
        for n in c.nodes.values() {
            if let Some(other) = owners.insert(n.instance.id.as_str(), n.name.as_str()) {
                return Err(format!(
                    "instance {} belongs to {other} and {}",
                    n.instance.id, n.name
                ));
            }
        }
        for i in &m.instances {
            let owned =
                c.nodes.contains_key(&i.claim) || c.unlaunched.iter().any(|u| u.name == i.claim);
            if owned {
                self.orphaned_since.remove(&i.id);
                continue;
            }
            let since = *self.orphaned_since.entry(i.id.clone()).or_insert(m.now);
            if m.now - since > ORPHAN_DEADLINE {
                return Err(format!(
                    "instance {} of claim {} has had no claim for {}s",
                    i.id,
                    i.claim,
                    m.now - since
                ));
            }
        }
        Ok(())
    }
}

/// The end of a run: no orphan, and no pod pending for long that the cluster could hold.
fn check_end(report: &dovetail::sim::Report, last: &Watcher) -> Result<(), String> {
    if let Some((id, since)) = last.orphaned_since.iter().next() {
        return Err(format!(
            "the run ends with orphan {id} (unowned since {since})"
        ));
    }
    let _ = report;
    Ok(())
}

fn run_case(case: &Case) -> Result<(), TestCaseError> {
    let text = manifests(case);
    let opts = SimOptions {
        crash_after: case.crash_after.clone(),
        never_join: case.never_join.clone(),
        ..SimOptions::default()
    };
    let mut watcher = Watcher::default();
    let mut end_problem = None;
    let mut last_pending: Vec<String> = Vec::new();
    let result = simulate_watched(
        &[("case.yaml".to_string(), text.clone())],
        &opts,
        &mut |m| {
            watcher.check(m)?;
            // In the last quarter hour (the timeline is over by then): pods pending for half an
            // hour that the scheduling simulation can place — on what runs or on new nodes
            // within the limits — are capacity lost.
            if m.t >= 6300 {
                let waiting: Vec<dovetail::scheduling::PendingPod> = m
                    .cluster
                    .pods
                    .values()
                    // Unbound, and not waiting on a node still booting (a pod nominated to a
                    // Ready node that kube-scheduler did not bind there waits all the same).
                    .filter(|p| {
                        p.running_since.is_none()
                            && m.now - p.created_at > 1800
                            && p.node.as_ref().is_none_or(|n| {
                                m.cluster.nodes.get(n).is_none_or(|n| n.ready_at.is_some())
                            })
                    })
                    .map(|p| dovetail::scheduling::PendingPod::clone(&p.spec))
                    .collect();
                let (existing, _) = m.cluster.schedulable_nodes(m.its, |_| false);
                let plan = dovetail::scheduling::solve_on(
                    &waiting,
                    &existing,
                    &m.cluster.pool_specs(m.its),
                    m.its,
                );
                last_pending = waiting
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !plan.unschedulable.iter().any(|u| u.pod == *i))
                    .map(|(_, p)| p.name.clone())
                    .collect();
            }
            Ok(())
        },
    );
    match result {
        Ok(report) => {
            RUNS.fetch_add(1, Ordering::Relaxed);
            RESTARTS.fetch_add(u64::from(report.restarts), Ordering::Relaxed);
            EVICTIONS.fetch_add(u64::from(report.evictions), Ordering::Relaxed);
            DISRUPTIONS.fetch_add(
                report.disruptions.values().map(|&n| u64::from(n)).sum(),
                Ordering::Relaxed,
            );
            NEVER_JOINED.fetch_add(
                report
                    .events
                    .iter()
                    .filter(|e| {
                        matches!(e.kind, dovetail::controller::EventKind::NeverJoined { .. })
                    })
                    .count() as u64,
                Ordering::Relaxed,
            );
            if let Err(e) = check_end(&report, &watcher) {
                end_problem = Some(e);
            }
            if end_problem.is_none() && !last_pending.is_empty() {
                end_problem = Some(format!(
                    "pods pending for over 30 minutes that the cluster could hold: {last_pending:?} ({:?})",
                    report.still_pending
                ));
            }
        }
        // A step naming a node the run never made (or already removed) does not apply.
        Err(SimError::Input(e)) if e.contains("no Node") || e.contains("no node") => {
            REJECTED.fetch_add(1, Ordering::Relaxed);
            return Err(TestCaseError::reject(e));
        }
        Err(e) => end_problem = Some(e.to_string()),
    }
    match end_problem {
        None => Ok(()),
        Some(e) => Err(TestCaseError::fail(format!(
            "{e}\n--- the case, for `dovetail simulate -f case.yaml` (crash after effects {:?}, launches that never join {:?}):\n{text}",
            case.crash_after, case.never_join
        ))),
    }
}

#[test]
fn no_policy_and_no_timeline_breaks_a_safety_invariant() {
    let cases = std::env::var("DOVETAIL_SAFETY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES);
    let config = Config {
        cases,
        max_global_rejects: cases * 4,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    };
    let seed = [7u8; 32];
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    let result = runner.run(&case(), |c| run_case(&c));
    eprintln!(
        "safety: {} runs ({} cases rejected), {} controller restarts, {} voluntary disruptions, {} evictions, {} claims that never joined deleted",
        RUNS.load(Ordering::Relaxed),
        REJECTED.load(Ordering::Relaxed),
        RESTARTS.load(Ordering::Relaxed),
        DISRUPTIONS.load(Ordering::Relaxed),
        EVICTIONS.load(Ordering::Relaxed),
        NEVER_JOINED.load(Ordering::Relaxed)
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    // The cases reach liveness: some instances never join, and their claims are deleted.
    assert!(
        NEVER_JOINED.load(Ordering::Relaxed) > 0,
        "no case had a claim that never joined: the liveness invariant was not exercised"
    );
}
