//! The scheduling simulation: which new NodeClaims the pending pods need.
//!
//! First fit, decreasing: pods are taken largest first and placed on the first existing or
//! in-flight node that can take them, then on the first planned claim that can take them, else on a new claim of the first NodePool (by weight) that admits them. A claim
//! keeps the *set* of instance types that still hold all its pods and the zones it may still use;
//! both narrow as pods join. Topology (zone and hostname spread, pod affinity and anti-affinity) is
//! counted per selector as pods are placed, and a pod that needs a zone pins its claim to one.
//!
//! Packing is not cost-blind: a claim stops taking pods once only *premium* instance types (whose
//! capacity costs more than [`PREMIUM_TOLERANCE`] above the 10th-percentile value of the claim's types)
//! could hold it —
//! otherwise first fit fills the first claims up to the largest, dearest types. The first pod of a
//! claim is exempt, so a pod that needs special hardware still gets a node.
//!
//! NB: every pod is visited once and claims that are full leave the scan, so the work grows with
//! pods × open claims, not pods × all claims; no pod is dropped for lack of time.

mod claims;
mod cursor;
mod diversity;
mod preferences;
mod sizing;
mod topology;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use super::cost::{self, Bound, DIMS, Demand};
use super::instance_types::InstanceTypes;
use super::model::{
    ExistingNode, LabelSelector, NodePoolSpec, PendingPod, TopologyKey, add, capacity_type_label,
    fits, untolerated, zero,
};
use super::requirements::Requirements;
use crate::capacity::pack;
use crate::capacity::{CapacityType, LaunchOption, Resources};
use cursor::{Cursor, lasting};
pub use diversity::SPOT_POOL_SHARE;
use diversity::SpotPools;
use preferences::{prefers, relaxations, strict, with_volume_topology};

/// How much dearer than the 10th-percentile value a type's capacity may be before a claim
/// avoids growing into it.
pub const PREMIUM_TOLERANCE: f64 = 0.3;

/// How much less value per dollar than the best type a smaller node may give and still be
/// chosen: the node-size rule. A claim grows to the *smallest* type whose value per dollar (what
/// it would hold, at the LP's unit prices, over its price) is within this of the best, so a node
/// is larger only when that is cheaper per unit by more than this — big nodes are a blast radius.
pub const SIZE_TOLERANCE: f64 = 0.03;

/// How many of the pods still to place the size estimate of a new node places one by one before
/// it tops up with the rest (see `Solver::target`).
const LOOKAHEAD: usize = 32;

/// A NodeClaim the simulation decided to create.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedClaim {
    /// Index into the NodePools given to [`solve`].
    pub node_pool: usize,
    /// Indices of the pods it holds.
    pub pods: Vec<usize>,
    /// What the node must hold: the pods plus daemonset overhead.
    pub requests: Resources,
    /// The NodePool's requirements narrowed by its pods'.
    pub requirements: Requirements,
    /// Instance types (indices into [`InstanceTypes`]) that hold every pod.
    pub instance_types: Vec<u32>,
    /// Zones it may launch in (bit i = zone i).
    pub zones: u64,
}

/// Why a pod does not go on a claim. Cheap to make: most attempts fail and only the last
/// reason of an unschedulable pod is ever written out.
#[derive(Debug, Clone, Copy)]
enum Reject {
    TooBig(Resources),
    NoType(Resources),
    Requirements,
    Topology(&'static str),
    Premium,
    MinValues(&'static str),
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reject::TooBig(r) => write!(
                f,
                "no instance type of the NodePool fits requests {}",
                describe(r)
            ),
            Reject::NoType(r) => write!(
                f,
                "no instance type fits requests {} in the allowed zones",
                describe(r)
            ),
            Reject::Requirements => f.write_str("requirements conflict with the claim"),
            Reject::Topology(t) => write!(f, "{t}: no zone or node satisfies it"),
            Reject::Premium => f.write_str("only premium-priced instance types would remain"),
            Reject::MinValues(key) => write!(
                f,
                "too few instance types would remain to meet the NodePool's minValues for {key}"
            ),
        }
    }
}

/// A pod no NodePool can take, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Unschedulable {
    pub pod: usize,
    pub reason: String,
}

/// What the simulation decided.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// Pods that go on existing or in-flight nodes: (pod, index into the existing nodes).
    pub bound: Vec<(usize, usize)>,
    pub claims: Vec<PlannedClaim>,
    pub unschedulable: Vec<Unschedulable>,
}

impl PlannedClaim {
    /// Every available offering of every instance type of the claim, in its zones and with a
    /// capacity type its requirements allow, as packed launch options.
    pub fn options(&self, its: &InstanceTypes) -> Vec<LaunchOption> {
        let capacity = self.requirements.get(super::model::labels::CAPACITY_TYPE);
        // Asked once per capacity type, not per offering: a claim has thousands.
        let allowed =
            |c: CapacityType| capacity.is_none_or(|a| a.allows(Some(capacity_type_label(c))));
        let allowed = [
            allowed(CapacityType::Spot),
            allowed(CapacityType::OnDemand),
            allowed(CapacityType::Reserved),
        ];
        let mut out = Vec::new();
        for &t in &self.instance_types {
            for (oi, o) in its.types[t as usize].offerings.iter().enumerate() {
                let in_zone = self.zones & (1 << o.zone) != 0;
                let cap_ok = allowed[match o.capacity_type {
                    CapacityType::Spot => 0,
                    CapacityType::OnDemand => 1,
                    CapacityType::Reserved => 2,
                }];
                if o.available && in_zone && cap_ok {
                    out.push(pack(t as usize, oi));
                }
            }
        }
        out
    }
}

/// Schedules `pods` onto new claims of `pools`.
pub fn solve(pods: &[PendingPod], pools: &[NodePoolSpec], its: &InstanceTypes) -> Plan {
    solve_on(pods, &[], pools, its)
}

/// Schedules `pods` onto `existing` nodes first, then onto new claims of `pools`.
pub fn solve_on(
    pods: &[PendingPod],
    existing: &[ExistingNode],
    pools: &[NodePoolSpec],
    its: &InstanceTypes,
) -> Plan {
    Solver::new(pods, existing, &[], pools, its, None).run()
}

/// [`solve_on`] as if the existing nodes with `excluded[i]` set were gone: consolidation asks
/// "where would these nodes' pods go" many times over one snapshot without copying it. Claims
/// are sized from the pods alone, not for the favoured offerings: a what-if asked per candidate
/// would solve that LP each time, and its plan is kept only when it needs at most one claim.
/// `admitted`: what `pools` admit, computed once for the many what-ifs of a pass.
pub fn solve_excluding(
    pods: &[PendingPod],
    existing: &[ExistingNode],
    excluded: &[bool],
    pools: &[NodePoolSpec],
    its: &InstanceTypes,
    admitted: Option<&Admitted>,
) -> Plan {
    let admitted = admitted.filter(|a| a.types.len() == pools.len());
    let mut solver = Solver::new(pods, existing, excluded, pools, its, admitted);
    solver.favour = false;
    solver.run()
}

/// Per NodePool: the instance types and zones its requirements admit. Reading every type's
/// requirements per what-if was 7% of a disruption pass.
#[derive(Debug, Clone, Default)]
pub struct Admitted {
    types: Vec<Vec<u32>>,
    zones: Vec<u64>,
}

impl Admitted {
    pub fn new(pools: &[NodePoolSpec], its: &InstanceTypes) -> Self {
        Admitted {
            types: pools
                .iter()
                .map(|p| its.admitted_by(&p.requirements))
                .collect(),
            zones: pools
                .iter()
                .map(|p| its.zones_admitted_by(&p.requirements))
                .collect(),
        }
    }
}

struct Claim {
    planned: PlannedClaim,
    /// Component-wise maximum allocatable over the types it may still grow into (every type while
    /// empty, the efficient ones once it holds a pod): a quick "cannot fit" test.
    max_alloc: Resources,
    /// Capacity reserved against the pool's limits: the largest type's.
    reserved: (u64, u64),
    /// Per instance type: priced within [`PREMIUM_TOLERANCE`] of the 10th-percentile value of the types
    /// the claim started with.
    efficient: Vec<bool>,
    open: bool,
    /// Zones that count as topology domains for its pods (its NodePool's).
    domain: u64,
    /// The allocatable of the type packing aims at: it grows no larger (see [`SIZE_TOLERANCE`]).
    target: Option<Resources>,
    /// That type: a pod that pins the claim to a zone of its choice weighs the room it has
    /// there (see `zone_for`).
    sized: Option<u32>,
    /// The spot pool (type, zone) the claim is counted against (see `diversity`); for a claim
    /// free to launch in any zone, the zone its node was first counted in (such nodes of a
    /// type are interchangeable and move between zones, see `SpotPools::count`).
    counted: Option<(u32, u32)>,
    /// The zone its first pod chose, and the claim was sized in (see `zone_for`).
    chosen_zone: Option<u32>,
}

/// An offering the cheapest fractional fleet uses (see `Solver::favoured`).
#[derive(Debug, Clone, Copy)]
struct Favoured {
    ty: u32,
    zone: u32,
    spot: bool,
    price: f64,
    /// The nodes of it the fractional optimum buys.
    nodes: f64,
}

struct Solver<'a> {
    /// Pods with their preferences held as requirements (borrowed when none has any).
    pods: Cow<'a, [PendingPod]>,
    /// Per pod with preferences: the pod with fewer of them and its topology terms, the next
    /// to try last (see [`relaxations`]).
    relaxed: Vec<Vec<(PendingPod, Vec<Term>)>>,
    /// Existing nodes (see `existing_of` for the claims that stand for them).
    existing: &'a [ExistingNode],
    pools: &'a [NodePoolSpec],
    its: &'a InstanceTypes,
    /// Pool indices, highest weight first.
    pool_order: Vec<usize>,
    /// Per pool: instance types its requirements admit.
    pool_types: Vec<Vec<u32>>,
    /// Per pool: zones its requirements admit.
    pool_zones: Vec<u64>,
    /// Per pool: limit headroom (cpu millis, memory bytes) after in-use and reserved capacity.
    headroom: Vec<(u64, u64)>,
    claims: Vec<Claim>,
    /// The first claims stand for the running nodes with room for the smallest pod when the
    /// solver started, in order: claim `c < existing_of.len()` is `existing[existing_of[c]]`.
    /// A claim closes as it fills and never reopens, so the full nodes need none (a disruption
    /// pass solves once per candidate over a cluster that is mostly full).
    existing_of: Vec<usize>,
    /// Per pool: its claims in creation order (first fit scans in this order).
    order: Vec<Vec<usize>>,
    /// Per pool: position in `order` before which every claim is closed.
    first_open: Vec<usize>,
    /// Per (selector, pool): position in `order` before which every claim is closed or already
    /// holds a pod of the selector — claims a pod that wants a host of its own can skip.
    skip: HashMap<(u32, usize), usize, FastHash>,
    /// Per pod: the selectors its labels match.
    matches: Vec<Vec<u32>>,
    /// Per pod: its topology terms with interned selectors.
    terms: Vec<Vec<Term>>,
    zone_counts: Vec<Vec<u32>>,
    host_counts: HashMap<(u32, usize), u32, FastHash>,
    /// Pods per selector placed so far.
    placed: Vec<u32>,
    /// (selector, claim): a pod there has required hostname anti-affinity with that selector,
    /// so no pod it selects may join it.
    repel_host: HashSet<(u32, usize), FastHash>,
    /// Per selector: zones where a pod has required zone anti-affinity with it.
    repel_zone: Vec<u64>,
    smallest: Resources,
    /// Per pod: its position in the visiting order.
    position: Vec<usize>,
    /// Requests of the pods in visiting order, summed: `ahead[i]` is the sum before position i.
    ahead: Vec<[f64; DIMS]>,
    /// Requests of the pods in visiting order.
    sequence: Vec<[f64; DIMS]>,
    /// Per pool: the LP bound of every pending pod on its types, computed when first needed.
    bounds: Vec<Option<Option<Bound>>>,
    /// Per pool: the requests of the pending pods it is the first to admit, summed.
    demand: Vec<[f64; DIMS]>,
    /// Per pool: the same pods by shape.
    shapes: Vec<cost::Shapes>,
    /// Per pool: the offerings its cheapest fractional fleet with whole pods uses, by type;
    /// computed when first needed.
    favoured: Vec<Option<std::rc::Rc<[Favoured]>>>,
    /// Per (pool, zones): each type's cheapest price on the pool's requirements (NaN: none).
    prices: HashMap<(usize, u64), Vec<f64>>,
    /// CPU planned per spot pool, for the diversity rule.
    spot: SpotPools,
    /// Per pool: the last new claim's requirements, types and premium cut-off.
    efficient: HashMap<usize, (Requirements, Vec<u32>, Vec<bool>)>,
    /// Per (pool, pod class): where first fit may start for pods of the class (see [`Cursor`]).
    cursors: HashMap<(usize, u64), Cursor, FastHash>,
    /// Off only in the test that checks cursors change no plan.
    use_cursors: bool,
    /// Whether big rounds are cut for the favoured offerings (off for what-if solves).
    favour: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum TermKind {
    Spread(u32),
    Affinity,
    AntiAffinity,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Term {
    kind: TermKind,
    key: TopologyKey,
    selector: u32,
}

/// Label selectors of the pods' topology terms, interned: a term names its selector by index.
#[derive(Default)]
struct Selectors(Vec<(String, LabelSelector)>);

impl Selectors {
    fn intern(&mut self, ns: &str, sel: &LabelSelector) -> u32 {
        match self.0.iter().position(|(n, s)| n == ns && s == sel) {
            Some(i) => i as u32,
            None => {
                self.0.push((ns.to_string(), sel.clone()));
                (self.0.len() - 1) as u32
            }
        }
    }

    /// A pod's spread, affinity and anti-affinity terms with interned selectors.
    fn terms(&mut self, p: &PendingPod) -> Vec<Term> {
        let ns = namespace(&p.name);
        let spread = p
            .spread
            .iter()
            .map(|s| (TermKind::Spread(s.max_skew.max(1)), s.key, &s.selector));
        let aff = p
            .affinity
            .iter()
            .map(|a| (TermKind::Affinity, a.key, &a.selector));
        let anti = p
            .anti_affinity
            .iter()
            .map(|a| (TermKind::AntiAffinity, a.key, &a.selector));
        spread
            .chain(aff)
            .chain(anti)
            .map(|(kind, key, sel)| Term {
                kind,
                key,
                selector: self.intern(ns, sel),
            })
            .collect()
    }

    /// The selectors whose namespace and labels a pod in `name`'s namespace with `labels` meets.
    fn matching<'s>(
        &'s self,
        name: &'s str,
        labels: &'s [(String, String)],
    ) -> impl Iterator<Item = u32> + 's {
        self.0
            .iter()
            .enumerate()
            .filter(move |(_, (n, s))| in_namespace(name, n) && s.matches(labels))
            .map(|(i, _)| i as u32)
    }
}

/// Per pool: limit headroom (cpu millis, memory bytes) after what it already uses.
fn headroom(pools: &[NodePoolSpec]) -> Vec<(u64, u64)> {
    pools
        .iter()
        .map(|p| {
            let cpu = p
                .limits
                .cpu_millis
                .map_or(u64::MAX, |l| l.saturating_sub(p.in_use.cpu_millis));
            let mem = p
                .limits
                .memory_bytes
                .map_or(u64::MAX, |l| l.saturating_sub(p.in_use.memory_bytes));
            (cpu, mem)
        })
        .collect()
}

/// The smallest CPU and memory any pod requests (one pod slot).
fn smallest(pods: &[PendingPod]) -> Resources {
    pods.iter().fold(
        Resources {
            cpu_millis: u64::MAX,
            memory_bytes: u64::MAX,
            ephemeral_storage_bytes: 0,
            pods: 1,
            gpus: 0,
        },
        |m, p| Resources {
            cpu_millis: m.cpu_millis.min(p.requests.cpu_millis),
            memory_bytes: m.memory_bytes.min(p.requests.memory_bytes),
            ..m
        },
    )
}

impl<'a> Solver<'a> {
    fn new(
        original: &'a [PendingPod],
        existing: &'a [ExistingNode],
        excluded: &[bool],
        pools: &'a [NodePoolSpec],
        its: &'a InstanceTypes,
        admitted: Option<&Admitted>,
    ) -> Self {
        let admitted = match admitted {
            Some(a) => a.clone(),
            None => Admitted::new(pools, its),
        };
        // Where a pod's volumes let it run joins every one of its node terms.
        let original: Cow<'a, [PendingPod]> =
            if original.iter().any(|p| p.volume_requirements.is_some()) {
                Cow::Owned(original.iter().map(with_volume_topology).collect())
            } else {
                Cow::Borrowed(original)
            };
        let mut pool_order: Vec<usize> = (0..pools.len()).collect();
        pool_order.sort_by_key(|&i| (std::cmp::Reverse(pools[i].weight), pools[i].name.clone()));
        let pods: Cow<'a, [PendingPod]> = if original.iter().any(prefers) {
            Cow::Owned(original.iter().map(strict).collect())
        } else {
            original.clone()
        };
        let mut selectors = Selectors::default();
        let terms: Vec<Vec<Term>> = pods.iter().map(|p| selectors.terms(p)).collect();
        let relaxed = original
            .iter()
            .map(|p| relaxations(p, &mut selectors))
            .collect();
        // Running pods' required anti-affinity, interned like the pending pods' own terms.
        let repels: Vec<Vec<(u32, TopologyKey)>> = existing
            .iter()
            .map(|node| {
                node.repels
                    .iter()
                    .map(|(ns, a)| (selectors.intern(ns, &a.selector), a.key))
                    .collect()
            })
            .collect();
        let matches = pods
            .iter()
            .map(|p| selectors.matching(&p.name, &p.labels).collect())
            .collect();
        let n_sel = selectors.0.len();
        let mut solver = Solver {
            smallest: smallest(&pods),
            pods,
            relaxed,
            existing,
            pools,
            its,
            pool_order,
            pool_types: admitted.types,
            pool_zones: admitted.zones,
            headroom: headroom(pools),
            claims: Vec::with_capacity(existing.len()),
            existing_of: Vec::new(),
            order: vec![Vec::new(); pools.len()],
            first_open: vec![0; pools.len()],
            skip: HashMap::default(),
            matches,
            terms,
            zone_counts: vec![vec![0; its.zones.len()]; n_sel],
            host_counts: HashMap::default(),
            placed: vec![0; n_sel],
            repel_host: HashSet::default(),
            repel_zone: vec![0u64; n_sel],
            position: Vec::new(),
            ahead: Vec::new(),
            sequence: Vec::new(),
            bounds: vec![None; pools.len()],
            demand: vec![[0.0; DIMS]; pools.len()],
            shapes: vec![cost::Shapes::default(); pools.len()],
            favoured: vec![None; pools.len()],
            prices: HashMap::new(),
            spot: SpotPools::default(),
            efficient: HashMap::new(),
            cursors: HashMap::default(),
            use_cursors: true,
            favour: true,
        };
        solver.add_existing(excluded, &repels, &selectors);
        solver
    }

    /// The existing nodes as the first claims (an excluded one closed and empty), with their
    /// running pods counted in the topology and their required anti-affinity held.
    fn add_existing(
        &mut self,
        excluded: &[bool],
        repels: &[Vec<(u32, TopologyKey)>],
        selectors: &Selectors,
    ) {
        let all_zones = (1u64 << self.its.zones.len()) - 1;
        for (i, node) in self.existing.iter().enumerate() {
            let gone = excluded.get(i).copied().unwrap_or(false);
            if gone {
                continue;
            }
            // A node with no room for the smallest pod never takes one: it has no claim, and
            // only its pods' and terms' counts by zone matter.
            let (r, small, max) = (&node.requested, &self.smallest, &node.allocatable);
            let open = r.cpu_millis.saturating_add(small.cpu_millis) <= max.cpu_millis
                && r.memory_bytes.saturating_add(small.memory_bytes) <= max.memory_bytes
                && r.pods < max.pods;
            let c = open.then_some(self.claims.len());
            for &(s, key) in &repels[i] {
                match key {
                    TopologyKey::Hostname => {
                        if let Some(c) = c {
                            self.repel_host.insert((s, c));
                        }
                    }
                    TopologyKey::Zone => self.repel_zone[s as usize] |= 1 << node.zone,
                }
            }
            // With no topology term to count for, the running pods are not read at all.
            let counted = if selectors.0.is_empty() {
                &[][..]
            } else {
                &node.pods[..]
            };
            for (name, labels) in counted {
                for s in selectors.matching(name, labels) {
                    self.placed[s as usize] += 1;
                    if let Some(c) = c {
                        *self.host_counts.entry((s, c)).or_default() += 1;
                    }
                    self.zone_counts[s as usize][node.zone as usize] += 1;
                }
            }
            if !open {
                continue;
            }
            let domain = node
                .node_pool
                .and_then(|p| self.pool_zones.get(p).copied())
                .unwrap_or(all_zones);
            self.existing_of.push(i);
            self.claims.push(Claim {
                planned: PlannedClaim {
                    node_pool: node.node_pool.unwrap_or(usize::MAX),
                    pods: Vec::new(),
                    requests: node.requested,
                    requirements: Requirements::default(),
                    instance_types: Vec::new(),
                    zones: 1 << node.zone,
                },
                max_alloc: node.allocatable,
                reserved: (0, 0),
                efficient: Vec::new(),
                open: true,
                domain,
                target: None,
                sized: None,
                counted: None,
                chosen_zone: None,
            });
        }
    }

    /// The running node claim `c` stands for, if it stands for one.
    fn existing_node(&self, c: usize) -> Option<&'a ExistingNode> {
        self.existing_of.get(c).map(|&i| &self.existing[i])
    }

    fn run(mut self) -> Plan {
        let order = self.visiting_order();
        let mut unschedulable = Vec::new();
        for p in order {
            if let Err(reason) = self.place(p) {
                unschedulable.push(Unschedulable { pod: p, reason });
            }
        }
        unschedulable.sort_by_key(|u| u.pod);
        let n = self.existing_of.len();
        let existing_of = &self.existing_of;
        let mut bound: Vec<(usize, usize)> = self.claims[..n]
            .iter()
            .enumerate()
            .flat_map(|(c, claim)| claim.planned.pods.iter().map(move |&p| (p, existing_of[c])))
            .collect();
        bound.sort_unstable();
        // Claims pinned to a zone launch first: the spot pools they were counted against are
        // theirs, and the claims free to go anywhere take what the pools have left (see
        // `diversity`).
        let mut claims: Vec<PlannedClaim> = self.claims.drain(n..).map(|c| c.planned).collect();
        claims.sort_by_key(|c| c.zones.count_ones());
        Plan {
            bound,
            claims,
            unschedulable,
        }
    }

    /// Places pod `p`, with its preferences if it can, else without them.
    /// The order pods are placed in: first fit decreasing, with shapes interleaved. Pods are
    /// grouped by the first pool that admits them and sized by their value at that pool's LP unit
    /// prices — the one size that weighs CPU and memory as the cheapest fleet does. Within a
    /// size class (a half-octave of value) the shapes take turns, so consecutive pods complement
    /// each other on a node: sorting by CPU alone sends runs of one shape to the same nodes,
    /// which fill on one resource and strand the other (on the benchmark's plain pods that is
    /// 1.16× the LP bound; interleaved, 1.07×).
    fn visiting_order(&mut self) -> Vec<usize> {
        let n = self.pods.len();
        let mut home: Vec<Option<usize>> = vec![None; n];
        let mut demand = vec![[0.0; DIMS]; self.pools.len()];
        let mut shapes = vec![cost::Shapes::default(); self.pools.len()];
        for (p, h) in home.iter_mut().enumerate() {
            let pod = &self.pods[p];
            *h = self
                .pool_order
                .iter()
                .copied()
                .find(|&pool| self.admits(pool, pod).is_ok());
            if let Some(pool) = *h {
                let a = cost::amount(&pod.requests);
                for d in 0..DIMS {
                    demand[pool][d] += a[d];
                }
                shapes[pool].add(&a);
            }
        }
        self.demand = demand;
        self.shapes = shapes;
        let total_cpu: f64 = self.demand.iter().map(|a| a[0]).sum();
        self.spot = SpotPools::new(self.demand.iter().map(|a| {
            // A pool no pod calls home takes overflow: its share is of everything.
            if a.iter().all(|&x| x == 0.0) {
                total_cpu
            } else {
                a[0]
            }
        }));
        let mut rank = vec![usize::MAX; self.pools.len()];
        for (i, &pool) in self.pool_order.iter().enumerate() {
            rank[pool] = i;
        }
        let bounds: Vec<Option<Bound>> = (0..self.pools.len()).map(|i| self.bound(i)).collect();
        // (home pool's rank, value) per pod.
        let key: Vec<(usize, f64)> = (0..n)
            .map(|p| match home[p] {
                Some(pool) => (
                    rank[pool],
                    bounds[pool].map_or(0.0, |b| b.value(&cost::amount(&self.pods[p].requests))),
                ),
                None => (usize::MAX, 0.0),
            })
            .collect();
        let class = |v: f64| -> i64 {
            if v > 0.0 {
                -((v.log2() * 2.0).floor() as i64)
            } else {
                i64::MAX
            }
        };
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_unstable_by(|&a, &b| {
            let (ra, rb) = (&self.pods[a].requests, &self.pods[b].requests);
            key[a]
                .0
                .cmp(&key[b].0)
                .then(key[b].1.total_cmp(&key[a].1))
                .then((rb.cpu_millis, rb.memory_bytes).cmp(&(ra.cpu_millis, ra.memory_bytes)))
                .then(a.cmp(&b))
        });
        // Each pod's turn among the pods of its shape in its class, and its place largest first.
        let class: Vec<i64> = key.iter().map(|k| class(k.1)).collect();
        let mut seen: HashMap<(usize, i64, u64, u64), u32> = HashMap::new();
        let mut sort_key = vec![(0usize, 0i64, 0u32, 0u32); n];
        for (rank, &p) in order.iter().enumerate() {
            let r = &self.pods[p].requests;
            let k = seen
                .entry((key[p].0, class[p], r.cpu_millis, r.memory_bytes))
                .or_default();
            sort_key[p] = (key[p].0, class[p], *k, rank as u32);
            *k += 1;
        }
        order.sort_unstable_by_key(|&p| sort_key[p]);
        self.position = vec![0; n];
        self.ahead = Vec::with_capacity(n + 1);
        self.sequence = Vec::with_capacity(n);
        let mut sum = [0.0; DIMS];
        self.ahead.push(sum);
        for (i, &p) in order.iter().enumerate() {
            self.position[p] = i;
            let a = cost::amount(&self.pods[p].requests);
            for d in 0..DIMS {
                sum[d] += a[d];
            }
            self.ahead.push(sum);
            self.sequence.push(a);
        }
        order
    }

    fn place(&mut self, p: usize) -> Result<(), String> {
        loop {
            match self.place_once(p) {
                Err(_) if !self.relaxed[p].is_empty() => {
                    let (pod, terms) = self.relaxed[p].pop().expect("checked");
                    self.pods.to_mut()[p] = pod;
                    self.terms[p] = terms;
                }
                done => return done,
            }
        }
    }

    fn place_once(&mut self, p: usize) -> Result<(), String> {
        for c in 0..self.existing_of.len() {
            if self.claims[c].open && self.try_add(p, c).is_ok() {
                return Ok(());
            }
        }
        let pod = &self.pods[p];
        let mut reasons = Vec::new();
        let mut admitting = Vec::new();
        for &pool in &self.pool_order {
            match self.admits(pool, pod) {
                Ok(()) => admitting.push(pool),
                Err(r) => reasons.push(format!("NodePool {}: {r}", self.pools[pool].name)),
            }
        }
        let class = if self.use_cursors {
            self.class_of(p)
        } else {
            None
        };
        // Every refusal lasts when every term does; otherwise only a full claim's.
        let all_last = self.terms[p].iter().all(lasting);
        let has_node_terms = !self.pods[p].node_terms.is_empty();
        for &pool in &admitting {
            let mut start = self.scan_start(p, pool);
            if let Some(at) = class.and_then(|k| self.cursor(pool, k, p)) {
                start = start.max(at);
            }
            // Where the run of claims whose refusal lasts ends.
            let mut lasting_until = None;
            for i in start..self.order[pool].len() {
                let c = self.order[pool][i];
                if !self.claims[c].open {
                    continue;
                }
                match self.try_add(p, c) {
                    Ok(()) => {
                        self.advance(pool, class, p, lasting_until.unwrap_or(i));
                        return Ok(());
                    }
                    Err(Reject::TooBig(_)) => {}
                    // A claim whose requirements do not define a label a term selects can come
                    // to define it (another pod's term joins them): that refusal may pass.
                    Err(Reject::Requirements) if has_node_terms => {
                        lasting_until.get_or_insert(i);
                    }
                    Err(_) if all_last => {}
                    Err(_) => {
                        lasting_until.get_or_insert(i);
                    }
                }
            }
            let end = self.order[pool].len();
            self.advance(pool, class, p, lasting_until.unwrap_or(end));
        }
        for &pool in &admitting {
            match self.new_claim(pool, p) {
                Ok(()) => return Ok(()),
                Err(r) => reasons.push(format!("NodePool {}: {r}", self.pools[pool].name)),
            }
        }
        if self.pools.is_empty() {
            reasons.push("no NodePool".into());
        }
        Err(reasons.join("; "))
    }
}

/// A cheap hasher for the simulation's small integer keys (the standard one is built to resist
/// hash flooding, which these keys cannot do).
#[derive(Default, Clone, Copy)]
struct FastHash;

impl std::hash::BuildHasher for FastHash {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(0)
    }
}

struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

fn namespace(name: &str) -> &str {
    name.split_once('/').map_or("default", |(ns, _)| ns)
}

/// Whether the pod `name` (`namespace/name`, or a bare name in `default`) is in `ns`, without
/// scanning the whole name for its namespace first.
fn in_namespace(name: &str, ns: &str) -> bool {
    match name.strip_prefix(ns) {
        Some(rest) if rest.starts_with('/') => true,
        _ => ns == "default" && !name.contains('/'),
    }
}

fn bits(mask: u64) -> impl Iterator<Item = usize> {
    (0..64).filter(move |z| mask & (1 << z) != 0)
}

fn describe(r: &Resources) -> String {
    format!(
        "cpu={}m memory={}Mi pods={}",
        r.cpu_millis,
        r.memory_bytes >> 20,
        r.pods
    )
}

#[cfg(test)]
mod tests;
