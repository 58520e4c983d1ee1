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

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use super::cost::{self, Bound, DIMS, Demand};
use super::instance_types::InstanceTypes;
use super::model::{
    ExistingNode, LabelSelector, NodePoolSpec, PendingPod, TopologyKey, add, capacity_type_label,
    fits, untolerated, zero,
};
use super::requirements::Requirements;
use crate::wit::round::pack;
use crate::wit::types::{LaunchOption, Resources};

/// How much dearer than the 10th-percentile value a type's capacity may be before a claim
/// avoids growing into it.
pub const PREMIUM_TOLERANCE: f64 = 0.3;

/// How much less value per dollar than the best type a smaller node may give and still be
/// chosen: the node-size rule. A claim grows to the *smallest* type whose value per dollar (what
/// it would hold, at the LP's unit prices, over its price) is within this of the best, so a node
/// is larger only when that is cheaper per unit by more than this — big nodes are a blast radius.
pub const SIZE_TOLERANCE: f64 = 0.03;

/// Below this many pods still to place, the size estimate of a new node places them one by one
/// rather than as a fluid (see `Solver::target`).
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
        let mut out = Vec::new();
        for &t in &self.instance_types {
            for (oi, o) in its.types[t as usize].offerings.iter().enumerate() {
                let in_zone = self.zones & (1 << o.zone) != 0;
                let cap_ok =
                    capacity.is_none_or(|a| a.allows(Some(capacity_type_label(o.capacity_type))));
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
    Solver::new(pods, existing, &[], pools, its).run()
}

/// [`solve_on`] as if the existing nodes with `excluded[i]` set were gone: consolidation asks
/// "where would these nodes' pods go" many times over one snapshot without copying it.
pub fn solve_excluding(
    pods: &[PendingPod],
    existing: &[ExistingNode],
    excluded: &[bool],
    pools: &[NodePoolSpec],
    its: &InstanceTypes,
) -> Plan {
    Solver::new(pods, existing, excluded, pools, its).run()
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
}

struct Solver<'a> {
    /// Pods with their preferences held as requirements (borrowed when none has any).
    pods: Cow<'a, [PendingPod]>,
    /// Per pod with preferences: the pod with fewer of them and its topology terms, the next
    /// to try last (see `Solver::new`).
    relaxed: Vec<Vec<(PendingPod, Vec<Term>)>>,
    /// Existing nodes; claim `i < existing.len()` is existing node `i`.
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
    /// Per (pool, zones): each type's cheapest price on the pool's requirements (NaN: none).
    prices: HashMap<(usize, u64), Vec<f64>>,
    /// Per pool: the last new claim's requirements, types and premium cut-off.
    efficient: HashMap<usize, (Requirements, Vec<u32>, Vec<bool>)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TermKind {
    Spread(u32),
    Affinity,
    AntiAffinity,
}

#[derive(Clone, Copy)]
struct Term {
    kind: TermKind,
    key: TopologyKey,
    selector: u32,
}

impl<'a> Solver<'a> {
    fn new(
        original: &'a [PendingPod],
        existing: &'a [ExistingNode],
        excluded: &[bool],
        pools: &'a [NodePoolSpec],
        its: &'a InstanceTypes,
    ) -> Self {
        // Where a pod's volumes let it run joins every one of its node terms.
        let original: Cow<'a, [PendingPod]> =
            if original.iter().any(|p| p.volume_requirements.is_some()) {
                Cow::Owned(original.iter().map(with_volume_topology).collect())
            } else {
                Cow::Borrowed(original)
            };
        let mut pool_order: Vec<usize> = (0..pools.len()).collect();
        pool_order.sort_by_key(|&i| (std::cmp::Reverse(pools[i].weight), pools[i].name.clone()));
        let pool_types: Vec<Vec<u32>> = pools
            .iter()
            .map(|p| its.admitted_by(&p.requirements))
            .collect();
        let pool_zones: Vec<u64> = pools
            .iter()
            .map(|p| its.zones_admitted_by(&p.requirements))
            .collect();
        let headroom = pools
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
            .collect();

        let mut selectors: Vec<(String, LabelSelector)> = Vec::new();
        let mut intern = |ns: &str, sel: &LabelSelector| -> u32 {
            match selectors.iter().position(|(n, s)| n == ns && s == sel) {
                Some(i) => i as u32,
                None => {
                    selectors.push((ns.to_string(), sel.clone()));
                    (selectors.len() - 1) as u32
                }
            }
        };
        // Preferences (preferred node affinity, ScheduleAnyway spread) are first held like
        // requirements; a pod that cannot be placed so is placed again without them.
        let prefers = |p: &PendingPod| !p.preferred.is_empty() || !p.soft_spread.is_empty();
        let pods: Cow<'a, [PendingPod]> = if original.iter().any(prefers) {
            Cow::Owned(original.iter().map(strict).collect())
        } else {
            original.clone()
        };
        let mut make_terms = |p: &PendingPod| -> Vec<Term> {
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
                    selector: intern(ns, sel),
                })
                .collect()
        };
        let terms: Vec<Vec<Term>> = pods.iter().map(&mut make_terms).collect();
        // What to try when a pod with preferences does not fit, in order, last first (they are
        // popped): its preferred node affinity terms dropped one at a time, lowest weight first,
        // then its ScheduleAnyway spreads one at a time, last written first, down to the pod
        // with none — the most important preferences are kept longest.
        let relaxed: Vec<Vec<(PendingPod, Vec<Term>)>> = original
            .iter()
            .map(|p| {
                if !prefers(p) {
                    return Vec::new();
                }
                let mut stages = Vec::new();
                let mut q = p.clone();
                while q.preferred.pop().is_some() || q.soft_spread.pop().is_some() {
                    let s = strict(&q);
                    let t = make_terms(&s);
                    stages.push((s, t));
                }
                stages.reverse();
                stages
            })
            .collect();
        // Running pods' required anti-affinity, interned like the pending pods' own terms.
        let repels: Vec<Vec<(u32, TopologyKey)>> = existing
            .iter()
            .map(|node| {
                node.repels
                    .iter()
                    .map(|(ns, a)| (intern(ns, &a.selector), a.key))
                    .collect()
            })
            .collect();
        let matches = pods
            .iter()
            .map(|p| {
                let ns = namespace(&p.name);
                selectors
                    .iter()
                    .enumerate()
                    .filter(|(_, (n, s))| n == ns && s.matches(&p.labels))
                    .map(|(i, _)| i as u32)
                    .collect()
            })
            .collect();
        let smallest = pods.iter().fold(
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
        );
        let n_sel = selectors.len();
        let all_zones = (1u64 << its.zones.len()) - 1;
        let mut zone_counts = vec![vec![0; its.zones.len()]; n_sel];
        let mut host_counts: HashMap<(u32, usize), u32, FastHash> = HashMap::default();
        let mut placed = vec![0; n_sel];
        let mut repel_host: HashSet<(u32, usize), FastHash> = HashSet::default();
        let mut repel_zone = vec![0u64; n_sel];
        let mut claims = Vec::with_capacity(existing.len());
        for (i, node) in existing.iter().enumerate() {
            let gone = excluded.get(i).copied().unwrap_or(false);
            for &(s, key) in repels[i].iter().filter(|_| !gone) {
                match key {
                    TopologyKey::Hostname => {
                        repel_host.insert((s, i));
                    }
                    TopologyKey::Zone => repel_zone[s as usize] |= 1 << node.zone,
                }
            }
            for (name, labels) in node.pods.iter().filter(|_| !gone) {
                let ns = namespace(name);
                for (s, (n, sel)) in selectors.iter().enumerate() {
                    if n == ns && sel.matches(labels) {
                        placed[s] += 1;
                        *host_counts.entry((s as u32, i)).or_default() += 1;
                        zone_counts[s][node.zone as usize] += 1;
                    }
                }
            }
            let domain = node
                .node_pool
                .and_then(|p| pool_zones.get(p).copied())
                .unwrap_or(all_zones);
            claims.push(Claim {
                planned: PlannedClaim {
                    node_pool: node.node_pool.unwrap_or(usize::MAX),
                    pods: Vec::new(),
                    requests: node.requested,
                    requirements: Requirements::default(),
                    instance_types: Vec::new(),
                    zones: 1 << node.zone,
                },
                max_alloc: if gone { zero() } else { node.allocatable },
                reserved: (0, 0),
                efficient: Vec::new(),
                open: !gone,
                domain,
                target: None,
            });
        }
        let mut solver = Solver {
            pods,
            relaxed,
            existing,
            pools,
            its,
            pool_order,
            pool_types,
            pool_zones,
            headroom,
            claims,
            order: vec![Vec::new(); pools.len()],
            first_open: vec![0; pools.len()],
            skip: HashMap::default(),
            matches,
            terms,
            zone_counts,
            host_counts,
            placed,
            repel_host,
            repel_zone,
            smallest,
            position: Vec::new(),
            ahead: Vec::new(),
            sequence: Vec::new(),
            bounds: vec![None; pools.len()],
            demand: vec![[0.0; DIMS]; pools.len()],
            prices: HashMap::new(),
            efficient: HashMap::new(),
        };
        for c in 0..existing.len() {
            solver.refresh(c);
        }
        solver
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
        let n = self.existing.len();
        let mut bound: Vec<(usize, usize)> = self.claims[..n]
            .iter()
            .enumerate()
            .flat_map(|(i, c)| c.planned.pods.iter().map(move |&p| (p, i)))
            .collect();
        bound.sort_unstable();
        Plan {
            bound,
            claims: self.claims.drain(n..).map(|c| c.planned).collect(),
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
            }
        }
        self.demand = demand;
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
        for c in 0..self.existing.len() {
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
        for &pool in &admitting {
            let start = self.scan_start(p, pool);
            for i in start..self.order[pool].len() {
                let c = self.order[pool][i];
                if self.claims[c].open && self.try_add(p, c).is_ok() {
                    return Ok(());
                }
            }
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

    /// Taints and requirements: can this pool ever take the pod?
    fn admits(&self, pool: usize, pod: &PendingPod) -> Result<(), String> {
        let np = &self.pools[pool];
        if let Some(t) = untolerated(&pod.tolerations, &np.taints) {
            return Err(format!(
                "does not tolerate taint {}={}:{:?}",
                t.key, t.value, t.effect
            ));
        }
        let known = super::model::labels::well_known;
        if !pod.node_terms.is_empty()
            && !pod
                .node_terms
                .iter()
                .any(|t| np.requirements.compatible_on_pool(t, known))
        {
            if let Some(k) = np.requirements.undefined_key(&pod.node_terms[0], known) {
                return Err(format!(
                    "it selects the label {k}, which the NodePool does not define (add it to the NodePool's requirements or template labels)"
                ));
            }
            let wanted = pod.node_terms[0].describe();
            return Err(format!(
                "its requirements ({wanted}) conflict with the NodePool's ({})",
                np.requirements.describe()
            ));
        }
        Ok(())
    }

    fn new_claim(&mut self, pool: usize, p: usize) -> Result<(), String> {
        let np = &self.pools[pool];
        let pod = &self.pods[p];
        let term = pod.node_terms.iter().find(|t| {
            np.requirements
                .compatible_on_pool(t, super::model::labels::well_known)
        });
        let requirements = match term {
            Some(t) => np.requirements.intersection(t),
            None => np.requirements.clone(),
        };
        let types: Vec<u32> = match term {
            Some(_) => self.its.admitted_by(&requirements),
            None => self.pool_types[pool].clone(),
        };
        if types.is_empty() {
            return Err(format!(
                "no instance type satisfies {}",
                requirements.describe()
            ));
        }
        let (cpu_room, mem_room) = self.headroom[pool];
        let types: Vec<u32> = types
            .into_iter()
            .filter(|&t| {
                let ty = &self.its.types[t as usize];
                ty.capacity.0 <= cpu_room && ty.capacity.1 <= mem_room
            })
            .collect();
        if types.is_empty() {
            let mut left = Vec::new();
            if np.limits.cpu_millis.is_some() {
                left.push(format!("cpu {cpu_room}m"));
            }
            if np.limits.memory_bytes.is_some() {
                left.push(format!("memory {}Mi", mem_room >> 20));
            }
            return Err(format!(
                "limits reached ({} left, too little for any instance type)",
                left.join(", ")
            ));
        }
        let zones = self.pool_zones[pool] & self.its.zones_admitted_by(&requirements);
        let requests = np.daemonset_overhead;
        // The premium cut-off of a pool's plain claims is the same claim after claim.
        let efficient = match self.efficient.get(&pool) {
            Some((r, t, e)) if *r == requirements && *t == types => e.clone(),
            _ => {
                let e = self.its.efficient(&types, &requirements, PREMIUM_TOLERANCE);
                self.efficient
                    .insert(pool, (requirements.clone(), types.clone(), e.clone()));
                e
            }
        };
        let target = self.target(pool, p, &types, zones, &requirements);
        // Under a limit, a claim's options are no larger than its target on the limited
        // resources: what it reserves is the size packing chose, not the catalog's largest.
        let types = match target {
            Some(t) if np.limits.cpu_millis.is_some() || np.limits.memory_bytes.is_some() => {
                let cap = self.its.types[t as usize].capacity;
                types
                    .into_iter()
                    .filter(|&u| {
                        let c = self.its.types[u as usize].capacity;
                        (np.limits.cpu_millis.is_none() || c.0 <= cap.0)
                            && (np.limits.memory_bytes.is_none() || c.1 <= cap.1)
                    })
                    .collect()
            }
            _ => types,
        };
        let target = target.map(|t| np.allocatable(&self.its.types[t as usize]));
        let c = self.claims.len();
        self.claims.push(Claim {
            planned: PlannedClaim {
                node_pool: pool,
                pods: Vec::new(),
                requests: Resources {
                    pods: requests.pods,
                    ..requests
                },
                requirements,
                instance_types: types,
                zones,
            },
            max_alloc: zero(),
            reserved: (0, 0),
            efficient,
            open: true,
            domain: self.pool_zones[pool],
            target,
        });
        self.refresh(c);
        match self.try_add(p, c) {
            Ok(()) => {
                self.order[pool].push(c);
                Ok(())
            }
            Err(r) => {
                let r = r.to_string();
                let claim = self.claims.pop().expect("just pushed");
                self.headroom[pool].0 = self.headroom[pool].0.saturating_add(claim.reserved.0);
                self.headroom[pool].1 = self.headroom[pool].1.saturating_add(claim.reserved.1);
                Err(r)
            }
        }
    }

    /// Adds pod `p` to claim `c` if everything still holds; otherwise leaves `c` untouched.
    fn try_add(&mut self, p: usize, c: usize) -> Result<(), Reject> {
        let pod = &self.pods[p];
        let claim = &self.claims[c];
        let requests = add(&claim.planned.requests, &pod.requests);
        if !fits(&requests, &claim.max_alloc) {
            return Err(Reject::TooBig(requests));
        }
        if let Some(node) = self.existing.get(c) {
            if untolerated(&pod.tolerations, &node.taints).is_some() {
                return Err(Reject::Requirements);
            }
            if !pod.node_terms.is_empty()
                && !pod.node_terms.iter().any(|t| t.matches(|k| node.label(k)))
            {
                return Err(Reject::Requirements);
            }
            let zones = self.allowed_zones(p, c)?;
            if zones & claim.planned.zones == 0 {
                return Err(Reject::Topology("zone"));
            }
            self.commit(p, c, requests);
            return Ok(());
        }
        // Node requirements: the first term compatible with the claim.
        let mut requirements = None;
        if !pod.node_terms.is_empty() {
            let term = pod
                .node_terms
                .iter()
                .find(|t| {
                    claim
                        .planned
                        .requirements
                        .compatible_on_pool(t, super::model::labels::well_known)
                })
                .ok_or(Reject::Requirements)?;
            requirements = Some(claim.planned.requirements.intersection(term));
        }
        let mut zones = self.allowed_zones(p, c)?;
        if let Some(r) = &requirements {
            // A zone the pod's terms (nodeSelector, affinity, its volumes) name narrows the claim.
            zones &= self.its.zones_admitted_by(r);
            if zones == 0 {
                return Err(Reject::Requirements);
            }
        }
        let pin = self.pin_zone(p, zones);
        let its = self.its;
        let pool = &self.pools[claim.planned.node_pool];
        let capacity = requirements
            .as_ref()
            .unwrap_or(&claim.planned.requirements)
            .get(super::model::labels::CAPACITY_TYPE);
        let types: Vec<u32> = claim
            .planned
            .instance_types
            .iter()
            .copied()
            .filter(|&t| {
                let ty = &its.types[t as usize];
                fits(&requests, &pool.allocatable(ty))
                    && requirements.as_ref().is_none_or(|r| its.type_matches(t, r))
                    && ty.offerings.iter().any(|o| {
                        o.available
                            && pin & (1 << o.zone) != 0
                            && capacity.is_none_or(|a| {
                                a.allows(Some(capacity_type_label(o.capacity_type)))
                            })
                    })
            })
            .collect();
        if types.is_empty() {
            return Err(Reject::NoType(requests));
        }
        if let Some(key) = self.short_of_min_values(claim.planned.node_pool, &types) {
            return Err(Reject::MinValues(key));
        }
        if !claim.planned.pods.is_empty() && !types.iter().any(|&t| claim.efficient[t as usize]) {
            return Err(Reject::Premium);
        }
        let claim = &mut self.claims[c];
        claim.planned.instance_types = types;
        claim.planned.zones = pin;
        if let Some(r) = requirements {
            claim.planned.requirements = r;
        }
        self.commit(p, c, requests);
        Ok(())
    }

    /// Puts pod `p` on claim `c` (whose types and zones already allow it) and counts it.
    fn commit(&mut self, p: usize, c: usize, requests: Resources) {
        let claim = &mut self.claims[c];
        claim.planned.requests = requests;
        claim.planned.pods.push(p);
        let pin = claim.planned.zones;
        self.refresh(c);
        let single_zone = (pin.count_ones() == 1).then(|| pin.trailing_zeros() as usize);
        for &s in &self.matches[p] {
            self.placed[s as usize] += 1;
            *self.host_counts.entry((s, c)).or_default() += 1;
            if let Some(z) = single_zone {
                self.zone_counts[s as usize][z] += 1;
            }
        }
        for t in self.terms[p]
            .iter()
            .filter(|t| t.kind == TermKind::AntiAffinity)
        {
            match t.key {
                TopologyKey::Hostname => {
                    self.repel_host.insert((t.selector, c));
                }
                TopologyKey::Zone => {
                    if let Some(z) = single_zone {
                        self.repel_zone[t.selector as usize] |= 1 << z;
                    }
                }
            }
        }
    }

    /// The first `minValues` key of the pool that `types` no longer meet (keys a type does not
    /// answer, like zone, are met by the offerings and not checked here).
    fn short_of_min_values(&self, pool: usize, types: &[u32]) -> Option<&'static str> {
        for (key, n) in &self.pools[pool].min_values {
            let Some(&k) = super::model::labels::TYPE_KEYS.iter().find(|&&k| k == key) else {
                continue;
            };
            let distinct: HashSet<&str> =
                types.iter().filter_map(|&t| self.its.label(t, k)).collect();
            if distinct.len() < *n {
                return Some(k);
            }
        }
        None
    }

    /// Zones the pod may use on claim `c`, given its topology terms.
    fn allowed_zones(&self, p: usize, c: usize) -> Result<u64, Reject> {
        let claim = &self.claims[c];
        let mut zones = claim.planned.zones;
        let pool_zones = claim.domain;
        let self_match = |s: u32| self.matches[p].contains(&s);
        // The other way round: pods already placed whose anti-affinity selects this one.
        for &s in &self.matches[p] {
            if self.repel_host.contains(&(s, c)) {
                return Err(Reject::Topology(
                    "the anti-affinity of a pod on the node excludes it",
                ));
            }
            zones &= !self.repel_zone[s as usize];
        }
        if zones == 0 {
            return Err(Reject::Topology(
                "the anti-affinity of pods in its zones excludes it",
            ));
        }
        for term in &self.terms[p] {
            let s = term.selector as usize;
            let here = self
                .host_counts
                .get(&(term.selector, c))
                .copied()
                .unwrap_or(0);
            match (term.kind, term.key) {
                (TermKind::Spread(skew), TopologyKey::Hostname) => {
                    // A new node is always a domain with zero pods.
                    if here + u32::from(self_match(term.selector)) > skew {
                        return Err(Reject::Topology("hostname spread"));
                    }
                }
                (TermKind::AntiAffinity, TopologyKey::Hostname) => {
                    if here > 0 {
                        return Err(Reject::Topology("hostname anti-affinity"));
                    }
                }
                (TermKind::Affinity, TopologyKey::Hostname) => {
                    if here == 0 && (self.placed[s] > 0 || !self_match(term.selector)) {
                        return Err(Reject::Topology("hostname affinity"));
                    }
                }
                (TermKind::Spread(skew), TopologyKey::Zone) => {
                    let counts = &self.zone_counts[s];
                    let eligible = bits(pool_zones).map(|z| counts[z]).min().unwrap_or(0);
                    let inc = u32::from(self_match(term.selector));
                    let ok = bits(zones)
                        .filter(|&z| counts[z] + inc <= eligible + skew)
                        .fold(0, |m, z| m | 1 << z);
                    zones &= ok;
                }
                (TermKind::Affinity, TopologyKey::Zone) => {
                    let counts = &self.zone_counts[s];
                    if self.placed[s] > 0 {
                        zones &= bits(zones)
                            .filter(|&z| counts[z] > 0)
                            .fold(0, |m, z| m | 1 << z);
                    } else if !self_match(term.selector) {
                        return Err(Reject::Topology("zone affinity to pods that do not exist"));
                    }
                }
                (TermKind::AntiAffinity, TopologyKey::Zone) => {
                    let counts = &self.zone_counts[s];
                    zones &= bits(zones)
                        .filter(|&z| counts[z] == 0)
                        .fold(0, |m, z| m | 1 << z);
                }
            }
            if zones == 0 {
                return Err(Reject::Topology(
                    "no zone satisfies its topology constraints",
                ));
            }
        }
        Ok(zones)
    }

    /// A pod with zone terms pins its claim to one zone (the least used by its first zone term's
    /// selector); others keep the claim's zones.
    fn pin_zone(&self, p: usize, zones: u64) -> u64 {
        let Some(term) = self.terms[p].iter().find(|t| t.key == TopologyKey::Zone) else {
            return zones;
        };
        let counts = &self.zone_counts[term.selector as usize];
        let pick = match term.kind {
            TermKind::Affinity => bits(zones).max_by_key(|&z| (counts[z], std::cmp::Reverse(z))),
            _ => bits(zones).min_by_key(|&z| (counts[z], z)),
        };
        pick.map_or(zones, |z| 1 << z)
    }

    /// Recomputes a claim's quick-fit bound and limit reservation after its types changed.
    fn refresh(&mut self, c: usize) {
        if c < self.existing.len() {
            let claim = &mut self.claims[c];
            let (r, s, max) = (&claim.planned.requests, &self.smallest, &claim.max_alloc);
            claim.open = r.cpu_millis.saturating_add(s.cpu_millis) <= max.cpu_millis
                && r.memory_bytes.saturating_add(s.memory_bytes) <= max.memory_bytes
                && r.pods < max.pods;
            return;
        }
        let claim = &mut self.claims[c];
        let pool = claim.planned.node_pool;
        let efficient = &claim.efficient;
        let grow_only_efficient = !claim.planned.pods.is_empty();
        let mut max = zero();
        let mut cap = (0u64, 0u64);
        for &t in &claim.planned.instance_types {
            let ty = &self.its.types[t as usize];
            cap = (cap.0.max(ty.capacity.0), cap.1.max(ty.capacity.1));
            if grow_only_efficient && !efficient[t as usize] {
                continue;
            }
            let a = &self.pools[pool].allocatable(ty);
            max.cpu_millis = max.cpu_millis.max(a.cpu_millis);
            max.memory_bytes = max.memory_bytes.max(a.memory_bytes);
            max.ephemeral_storage_bytes =
                max.ephemeral_storage_bytes.max(a.ephemeral_storage_bytes);
            max.pods = max.pods.max(a.pods);
            max.gpus = max.gpus.max(a.gpus);
        }
        if let Some(t) = &claim.target {
            max.cpu_millis = max.cpu_millis.min(t.cpu_millis);
            max.memory_bytes = max.memory_bytes.min(t.memory_bytes);
            max.pods = max.pods.min(t.pods);
        }
        claim.max_alloc = max;
        let (old_cpu, old_mem) = claim.reserved;
        claim.reserved = cap;
        let h = &mut self.headroom[pool];
        h.0 = h.0.saturating_add(old_cpu).saturating_sub(cap.0);
        h.1 = h.1.saturating_add(old_mem).saturating_sub(cap.1);
        let r = &claim.planned.requests;
        let s = &self.smallest;
        claim.open = r.cpu_millis.saturating_add(s.cpu_millis) <= max.cpu_millis
            && r.memory_bytes.saturating_add(s.memory_bytes) <= max.memory_bytes
            && r.pods < max.pods;
    }

    /// The pool's LP bound over every pending pod: its unit prices value what a node holds.
    fn bound(&mut self, pool: usize) -> Option<Bound> {
        if let Some(b) = self.bounds[pool] {
            return b;
        }
        let (_, supplies) = self.pool_supplies(pool);
        // A pool no pod calls home (it takes overflow) is priced for all of them.
        let mut amount = self.demand[pool];
        if amount.iter().all(|&a| a == 0.0) {
            amount = std::array::from_fn(|d| self.demand.iter().map(|a| a[d]).sum());
        }
        let demand = Demand {
            amount,
            nodes: 0.0,
            smallest: Some(cost::amount(&self.smallest)),
        };
        let b = cost::lower_bound(&supplies, &demand);
        self.bounds[pool] = Some(b);
        b
    }

    /// The pool's types with what a node of each holds after DaemonSet overhead, at its
    /// cheapest offering the pool allows.
    fn pool_supplies(&self, pool: usize) -> (Vec<u32>, Vec<cost::Supply>) {
        let np = &self.pools[pool];
        let zones = self.pool_zones[pool];
        self.pool_types[pool]
            .iter()
            .filter_map(|&t| {
                let price = self.its.cheapest(t, zones, &np.requirements)?;
                let ty = &self.its.types[t as usize];
                Some((
                    t,
                    cost::supply(price, &np.allocatable(ty), &np.daemonset_overhead)?,
                ))
            })
            .unzip()
    }

    /// The type a new claim for pod `p` grows to: of `types`, the cheapest whose value per dollar
    /// is within [`SIZE_TOLERANCE`] of the best. What a type would hold is estimated from the pods
    /// from `p` on in visiting order, the ones first fit places next: their sum as a fluid, up to
    /// the node's room (first fit tops nodes up with later, smaller pods, so a mixed backlog
    /// fills them). When the next [`LOOKAHEAD`] are all alike (a Deployment's replicas) or are
    /// the last, they are placed one by one as they fit first — pods are whole: a 2-vCPU node
    /// holds one 1.5-vCPU pod, not 1.3 of them — and the fluid tops up only what the smallest
    /// pending pod still fits in. What it holds is valued at the pool's LP unit prices, so a node's shape, its DaemonSet overhead
    /// (small nodes pay it each) and its price all count, and the last pods get a node their size.
    /// Under a NodePool limit its pods would overrun, what a node holds is weighed against the
    /// capacity it reserves instead of its price.
    fn target(
        &mut self,
        pool: usize,
        p: usize,
        types: &[u32],
        zones: u64,
        requirements: &Requirements,
    ) -> Option<u32> {
        let bound = self.bound(pool)?;
        // Under a limit the pool's pods would overrun, capacity is what is scarce, not dollars:
        // a node is then worth what it holds per unit of limit it takes.
        let limits = &self.pools[pool].limits;
        let (cpu_room, mem_room) = self.headroom[pool];
        let demand = self.demand[pool];
        let scarce_cpu = limits.cpu_millis.is_some() && demand[0] * 1000.0 > cpu_room as f64;
        let scarce_mem =
            limits.memory_bytes.is_some() && demand[1] * f64::from(1u32 << 30) > mem_room as f64;
        let overhead = cost::amount(&self.pools[pool].daemonset_overhead);
        let start = self.position[p];
        let window = &self.sequence[start..(start + LOOKAHEAD).min(self.sequence.len())];
        let beyond = start + window.len();
        // Few pods left, or a run of identical ones (a Deployment's replicas): count them whole.
        let whole = beyond == self.sequence.len() || window.iter().all(|a| *a == window[0]);
        let (base, total) = (self.ahead[beyond], self.ahead[self.ahead.len() - 1]);
        let rest: [f64; DIMS] = std::array::from_fn(|d| total[d] - base[d]);
        let smallest = cost::amount(&self.smallest);
        // Prices per type for claims on the pool's own requirements, computed once per zone set.
        let table = (*requirements == self.pools[pool].requirements).then(|| {
            let its = self.its;
            self.prices.remove(&(pool, zones)).unwrap_or_else(|| {
                (0..its.types.len() as u32)
                    .map(|t| its.cheapest(t, zones, requirements).unwrap_or(f64::NAN))
                    .collect()
            })
        });
        // (value per dollar, price, type)
        let mut scored: Vec<(f64, f64, u32)> = Vec::with_capacity(types.len());
        for &t in types {
            let price = match &table {
                Some(prices) => Some(prices[t as usize]).filter(|p| !p.is_nan()),
                None => self.its.cheapest(t, zones, requirements),
            };
            let Some(price) = price else {
                continue;
            };
            let alloc = cost::amount(&self.pools[pool].allocatable(&self.its.types[t as usize]));
            let mut room: [f64; DIMS] = std::array::from_fn(|d| alloc[d] - overhead[d]);
            if (0..DIMS).any(|d| window[0][d] > room[d] + 1e-9) {
                continue;
            }
            let mut held = [0.0; DIMS];
            if whole {
                for a in window {
                    if (0..DIMS).all(|d| a[d] <= room[d] + 1e-9) {
                        for d in 0..DIMS {
                            room[d] -= a[d];
                            held[d] += a[d];
                        }
                    }
                }
                if (0..DIMS).any(|d| smallest[d] > room[d] + 1e-9) {
                    room = [0.0; DIMS];
                }
                // Topped up in the rest's own shape: identical pods use no resource apart.
                let scale = (0..DIMS)
                    .filter(|&d| rest[d] > 0.0)
                    .map(|d| room[d].max(0.0) / rest[d])
                    .fold(1.0, f64::min);
                for d in 0..DIMS {
                    held[d] += rest[d] * scale;
                }
            } else {
                for d in 0..DIMS {
                    held[d] += room[d].max(0.0).min(rest[d]);
                }
            }
            let worth = if scarce_cpu || scarce_mem {
                let cap = self.its.types[t as usize].capacity;
                let mut fill = f64::INFINITY;
                if scarce_cpu {
                    fill = fill.min(held[0] * 1000.0 / cap.0.max(1) as f64);
                }
                if scarce_mem {
                    fill = fill.min(held[1] * f64::from(1u32 << 30) / cap.1.max(1) as f64);
                }
                fill
            } else {
                bound.value(&held) / price
            };
            scored.push((worth, price, t));
        }
        if let Some(prices) = table {
            self.prices.insert((pool, zones), prices);
        }
        let best = scored.iter().map(|s| s.0).fold(0.0, f64::max);
        if best <= 0.0 {
            return None;
        }
        let r = scored
            .iter()
            .filter(|s| s.0 >= best * (1.0 - SIZE_TOLERANCE))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        r.map(|s| s.2)
    }

    /// Where first fit starts for pod `p` in `pool`: past the closed prefix, and past the claims
    /// that already hold a pod of a selector the pod wants a host of its own from.
    fn scan_start(&mut self, p: usize, pool: usize) -> usize {
        let order = &self.order[pool];
        let claims = &self.claims;
        let mut start = self.first_open[pool];
        while start < order.len() && !claims[order[start]].open {
            start += 1;
        }
        self.first_open[pool] = start;
        for term in &self.terms[p] {
            let exclusive = term.key == TopologyKey::Hostname
                && match term.kind {
                    TermKind::AntiAffinity => true,
                    TermKind::Spread(skew) => skew == 1 && self.matches[p].contains(&term.selector),
                    TermKind::Affinity => false,
                };
            if !exclusive {
                continue;
            }
            let ptr = self.skip.entry((term.selector, pool)).or_insert(0);
            while *ptr < order.len()
                && (!claims[order[*ptr]].open
                    || self
                        .host_counts
                        .get(&(term.selector, order[*ptr]))
                        .is_some_and(|&n| n > 0))
            {
                *ptr += 1;
            }
            start = start.max(*ptr);
        }
        start
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

/// A pod with the topology of its volumes joined to its node terms.
fn with_volume_topology(p: &PendingPod) -> PendingPod {
    let mut q = p.clone();
    if let Some(v) = q.volume_requirements.take() {
        q.node_terms = if p.node_terms.is_empty() {
            vec![v]
        } else {
            p.node_terms.iter().map(|t| t.intersection(&v)).collect()
        };
    }
    q
}

/// A pod with its preferences as requirements: the preferred terms joined to every required
/// term, `ScheduleAnyway` spread held like `DoNotSchedule`.
fn strict(p: &PendingPod) -> PendingPod {
    let mut s = p.clone();
    if !p.preferred.is_empty() {
        let preferred = p
            .preferred
            .iter()
            .fold(Requirements::default(), |a, r| a.intersection(r));
        s.node_terms = if p.node_terms.is_empty() {
            vec![preferred]
        } else {
            p.node_terms
                .iter()
                .map(|t| t.intersection(&preferred))
                .collect()
        };
    }
    s.spread.extend(p.soft_spread.iter().cloned());
    s.preferred.clear();
    s.soft_spread.clear();
    s
}

fn namespace(name: &str) -> &str {
    name.split_once('/').map_or("default", |(ns, _)| ns)
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
mod tests {
    use super::*;
    use crate::catalog;
    use crate::scheduling::model::{
        AffinityTerm, Limits, SpreadConstraint, Taint, TaintEffect, Toleration, labels,
    };
    use crate::scheduling::requirements::{Operator::*, Requirement};

    fn its() -> InstanceTypes {
        let entries = catalog::embedded();
        let cat = catalog::policy_catalog(&entries, &["us-east-1a", "us-east-1b", "us-east-1c"]);
        InstanceTypes::new(&entries, &cat)
    }

    fn pool(name: &str, reqs: &[(&str, crate::scheduling::Operator, &[&str])]) -> NodePoolSpec {
        let list: Vec<Requirement> = reqs
            .iter()
            .map(|(k, o, v)| Requirement::new(k, *o, v))
            .collect();
        NodePoolSpec::new(name, Requirements::from_list(&list))
    }

    fn pods(n: usize, app: &str, cpu: u64, mem_mib: u64) -> Vec<PendingPod> {
        (0..n)
            .map(|i| {
                PendingPod::new(
                    &format!("default/{app}-{i}"),
                    &[("app", app)],
                    cpu,
                    mem_mib << 20,
                )
            })
            .collect()
    }

    fn zone_of(plan: &Plan, c: &PlannedClaim) -> u32 {
        assert_eq!(
            c.zones.count_ones(),
            1,
            "claim {:?} not pinned",
            plan.claims.iter().position(|x| x == c)
        );
        c.zones.trailing_zeros()
    }

    /// Every claim holds its pods on every instance type it offers.
    fn assert_sound(plan: &Plan, pods: &[PendingPod], its: &InstanceTypes) {
        for c in &plan.claims {
            let total = c
                .pods
                .iter()
                .fold(zero(), |acc, &p| add(&acc, &pods[p].requests));
            assert!(fits(&total, &c.requests));
            assert!(!c.instance_types.is_empty() && !c.options(its).is_empty());
            for &t in &c.instance_types {
                assert!(
                    fits(&c.requests, &its.types[t as usize].allocatable),
                    "{}",
                    its.types[t as usize].name
                );
            }
        }
    }

    #[test]
    fn packs_every_pod_on_types_the_pool_allows() {
        let its = its();
        let np = pool(
            "default",
            &[
                (labels::CATEGORY, In, &["c", "m", "r"]),
                (labels::CAPACITY_TYPE, In, &["spot"]),
            ],
        );
        let pods = pods(10, "inflate", 500, 128);
        let plan = solve(&pods, &[np], &its);
        assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
        assert_eq!(plan.claims.iter().map(|c| c.pods.len()).sum::<usize>(), 10);
        // 5 vCPU in all: one 8-vCPU node costs more than a 4-vCPU and a 2-vCPU one, so packing,
        // being cost-driven, takes two.
        assert!(plan.claims.len() <= 2, "{}", plan.claims.len());
        let price = |c: &PlannedClaim| -> f64 {
            c.instance_types
                .iter()
                .filter_map(|&t| its.cheapest(t, c.zones, &c.requirements))
                .fold(f64::INFINITY, f64::min)
        };
        let fleet: f64 = plan.claims.iter().map(price).sum();
        let reqs = &plan.claims[0].requirements;
        let one_node = its
            .admitted_by(reqs)
            .into_iter()
            .filter(|&t| {
                let a = &its.types[t as usize].allocatable;
                a.cpu_millis >= 5000 && a.memory_bytes >= 1280 << 20 && a.pods >= 10
            })
            .filter_map(|t| its.cheapest(t, plan.claims[0].zones, reqs))
            .fold(f64::INFINITY, f64::min);
        assert!(fleet <= one_node, "{fleet} > {one_node}");
        for c in &plan.claims {
            for &t in &c.instance_types {
                assert!(["c", "m", "r"].contains(&its.label(t, labels::CATEGORY).unwrap()));
            }
            for &o in &c.options(&its) {
                let (t, oi) = crate::wit::round::unpack(o);
                assert_eq!(
                    its.types[t].offerings[oi].capacity_type,
                    crate::wit::types::CapacityType::Spot
                );
            }
        }
        assert_sound(&plan, &pods, &its);
    }

    #[test]
    fn an_impossible_pod_gets_a_precise_reason() {
        let its = its();
        let np = pool("default", &[(labels::CATEGORY, In, &["p"])]);
        let mut pod = PendingPod::new("default/train", &[], 1000, 1 << 30);
        pod.node_terms = vec![Requirements::from_list(&[Requirement::new(
            labels::ARCH,
            In,
            &["arm64"],
        )])];
        let plan = solve(&[pod], &[np], &its);
        assert_eq!(
            plan.unschedulable[0].reason,
            "NodePool default: no instance type satisfies aws.dovetail.sh/instance-category In [p] and kubernetes.io/arch In [arm64]"
        );
        let np = pool("default", &[(labels::ARCH, In, &["amd64"])]);
        let mut pod = PendingPod::new("default/x", &[], 1000, 1 << 30);
        pod.node_terms = vec![Requirements::from_list(&[Requirement::new(
            labels::ARCH,
            In,
            &["arm64"],
        )])];
        let plan = solve(&[pod], &[np], &its);
        assert!(
            plan.unschedulable[0]
                .reason
                .contains("conflict with the NodePool"),
            "{:?}",
            plan.unschedulable
        );
    }

    #[test]
    fn taints_need_tolerations_and_weights_order_pools() {
        let its = its();
        let mut gpu = pool("gpu", &[]);
        gpu.taints = vec![Taint {
            key: "nvidia.com/gpu".into(),
            value: "true".into(),
            effect: TaintEffect::NoSchedule,
        }];
        gpu.weight = 10;
        let plain = pool("default", &[]);
        let mut tolerant = PendingPod::new("default/t", &[], 500, 1 << 29);
        tolerant.tolerations = vec![Toleration {
            key: Some("nvidia.com/gpu".into()),
            exists: true,
            value: String::new(),
            effect: None,
        }];
        let intolerant = PendingPod::new("default/i", &[], 500, 1 << 29);
        let plan = solve(&[tolerant, intolerant.clone()], &[plain, gpu.clone()], &its);
        let pool_of = |p: usize| {
            plan.claims
                .iter()
                .find(|c| c.pods.contains(&p))
                .unwrap()
                .node_pool
        };
        assert_eq!(pool_of(0), 1, "heavier pool first when tolerated");
        assert_eq!(pool_of(1), 0);
        let plan = solve(&[intolerant], &[gpu], &its);
        assert!(
            plan.unschedulable[0]
                .reason
                .contains("does not tolerate taint nvidia.com/gpu=true:NoSchedule")
        );
    }

    #[test]
    fn limits_are_never_exceeded() {
        let its = its();
        let mut np = pool("default", &[]);
        np.limits = Limits {
            cpu_millis: Some(100_000),
            memory_bytes: None,
        };
        let pods = pods(300, "big", 1000, 1024);
        let plan = solve(&pods, &[np], &its);
        let reserved: u64 = plan
            .claims
            .iter()
            .map(|c| {
                c.instance_types
                    .iter()
                    .map(|&t| its.types[t as usize].capacity.0)
                    .max()
                    .unwrap()
            })
            .sum();
        assert!(reserved <= 100_000, "{reserved}");
        assert!(!plan.unschedulable.is_empty());
        assert!(
            plan.unschedulable[0].reason.contains("limits reached"),
            "{}",
            plan.unschedulable[0].reason
        );
        let placed: usize = plan.claims.iter().map(|c| c.pods.len()).sum();
        assert!(placed >= 85, "most of the 100 cores used: {placed} pods");
        assert_sound(&plan, &pods, &its);
    }

    #[test]
    fn zone_spread_and_hostname_anti_affinity() {
        let its = its();
        let np = pool("default", &[]);
        let sel = crate::scheduling::model::LabelSelector::labels(&[("app", "web")]);
        let mut web = pods(9, "web", 500, 512);
        for p in &mut web {
            p.spread = vec![SpreadConstraint {
                key: TopologyKey::Zone,
                max_skew: 1,
                selector: sel.clone(),
            }];
        }
        let plan = solve(&web, std::slice::from_ref(&np), &its);
        assert!(plan.unschedulable.is_empty());
        let mut per_zone = [0; 3];
        for c in &plan.claims {
            per_zone[zone_of(&plan, c) as usize] += c.pods.len();
        }
        assert_eq!(per_zone, [3, 3, 3]);

        let sel = crate::scheduling::model::LabelSelector::labels(&[("app", "db")]);
        let mut db = pods(5, "db", 500, 512);
        for p in &mut db {
            p.anti_affinity = vec![AffinityTerm {
                key: TopologyKey::Hostname,
                selector: sel.clone(),
            }];
        }
        let mut all = db.clone();
        all.extend(pods(20, "plain", 250, 256));
        let plan = solve(&all, &[np], &its);
        assert!(plan.unschedulable.is_empty());
        for c in &plan.claims {
            assert!(
                c.pods.iter().filter(|&&p| p < 5).count() <= 1,
                "two db pods on one node"
            );
        }
        assert!(plan.claims.len() >= 5);
        assert_sound(&plan, &all, &its);
    }

    #[test]
    fn zone_affinity_keeps_pods_together_and_overhead_counts() {
        let its = its();
        let mut np = pool("default", &[]);
        np.daemonset_overhead = Resources {
            cpu_millis: 200,
            memory_bytes: 256 << 20,
            ephemeral_storage_bytes: 0,
            pods: 2,
            gpus: 0,
        };
        let sel = crate::scheduling::model::LabelSelector::labels(&[("app", "cache")]);
        let mut cache = pods(30, "cache", 1000, 2048);
        for p in &mut cache {
            p.affinity = vec![AffinityTerm {
                key: TopologyKey::Zone,
                selector: sel.clone(),
            }];
        }
        let plan = solve(&cache, &[np], &its);
        assert!(plan.unschedulable.is_empty());
        let zones: std::collections::BTreeSet<u32> =
            plan.claims.iter().map(|c| zone_of(&plan, c)).collect();
        assert_eq!(zones.len(), 1);
        for c in &plan.claims {
            assert_eq!(c.requests.cpu_millis, 200 + 1000 * c.pods.len() as u64);
            assert_eq!(c.requests.pods, 2 + c.pods.len() as u32);
        }
    }

    fn node(
        its: &InstanceTypes,
        name: &str,
        ty: &str,
        zone: u32,
        on: &[PendingPod],
    ) -> ExistingNode {
        let t = its.types.iter().position(|t| t.name == ty).unwrap();
        let requested = on.iter().fold(zero(), |r, p| add(&r, &p.requests));
        ExistingNode {
            name: name.into(),
            node_pool: Some(0),
            labels: vec![
                (labels::INSTANCE_TYPE.into(), ty.into()),
                (labels::ZONE.into(), its.zones[zone as usize].clone()),
                (
                    labels::ARCH.into(),
                    its.label(t as u32, labels::ARCH).unwrap().into(),
                ),
            ],
            taints: Vec::new(),
            zone,
            allocatable: its.types[t].allocatable,
            requested,
            pods: on
                .iter()
                .map(|p| (p.name.clone(), p.labels.clone()))
                .collect(),
            repels: on
                .iter()
                .flat_map(|p| {
                    let ns = namespace(&p.name).to_string();
                    p.anti_affinity.iter().map(move |a| (ns.clone(), a.clone()))
                })
                .collect(),
        }
    }

    #[test]
    fn a_pod_selecting_a_label_no_pool_defines_waits_with_the_fix_and_a_pool_that_defines_it_serves()
     {
        use crate::scheduling::Operator::{In, NotIn};
        let its = its();
        let mut team = pods(1, "team", 500, 512);
        team[0].node_terms = vec![Requirements::from_labels([("team", "a")])];
        let plain = [pool("default", &[])];
        let plan = solve(&team, &plain, &its);
        assert!(
            plan.claims.is_empty(),
            "no node of the pool would carry team=a"
        );
        let reason = &plan.unschedulable[0].reason;
        assert!(
            reason.contains("it selects the label team, which the NodePool does not define"),
            "{reason}"
        );
        // The pool defines it (a template label becomes an In requirement).
        let defines = [pool("teams", &[("team", In, &["a"])])];
        assert_eq!(solve(&team, &defines, &its).claims.len(), 1);
        // Excluding an undefined label is satisfied by its absence; well-known labels need no
        // definition.
        let mut not_b = pods(1, "not-b", 500, 512);
        not_b[0].node_terms = vec![Requirements::from_list(&[
            Requirement::new("team", NotIn, &["b"]),
            Requirement::new(labels::ARCH, In, &["amd64"]),
        ])];
        assert_eq!(solve(&not_b, &plain, &its).claims.len(), 1);
    }

    #[test]
    fn existing_nodes_are_filled_first_and_their_pods_count_for_topology() {
        let its = its();
        let pools = [pool("default", &[])];
        // m5.xlarge: 4 vCPU; 1 CPU already used.
        let running = pods(1, "web", 1000, 1024);
        let mut nodes = vec![node(&its, "n1", "m5.xlarge", 0, &running)];
        let plan = solve_on(&pods(2, "api", 1000, 1024), &nodes, &pools, &its);
        assert_eq!(plan.bound, vec![(0, 0), (1, 0)]);
        assert!(plan.claims.is_empty());

        // A taint the pods do not tolerate sends them to a new claim.
        nodes[0].taints.push(Taint {
            key: "dedicated".into(),
            value: "x".into(),
            effect: TaintEffect::NoSchedule,
        });
        let plan = solve_on(&pods(2, "api", 1000, 1024), &nodes, &pools, &its);
        assert!(plan.bound.is_empty());
        assert_eq!(plan.claims.iter().map(|c| c.pods.len()).sum::<usize>(), 2);
        nodes[0].taints.clear();

        // A nodeSelector the node's labels do not satisfy.
        let mut arm = pods(1, "arm", 100, 128);
        arm[0].node_terms = vec![Requirements::from_labels([(labels::ARCH, "arm64")])];
        assert!(solve_on(&arm, &nodes, &pools, &its).bound.is_empty());

        // Hostname anti-affinity sees the pod already running there.
        let mut web = pods(1, "web-2", 100, 128);
        web[0].labels = vec![("app".into(), "web".into())];
        web[0].anti_affinity = vec![AffinityTerm {
            key: TopologyKey::Hostname,
            selector: crate::scheduling::model::LabelSelector::labels(&[("app", "web")]),
        }];
        let plan = solve_on(&web, &nodes, &pools, &its);
        assert!(
            plan.bound.is_empty(),
            "anti-affinity to the running web pod"
        );
        assert_eq!(plan.claims.len(), 1);

        // Zone spread counts the running pods: with web in zone 0, the next two go elsewhere.
        let mut spread = pods(2, "web-3", 100, 128);
        for p in &mut spread {
            p.labels = vec![("app".into(), "web".into())];
            p.spread = vec![SpreadConstraint {
                key: TopologyKey::Zone,
                max_skew: 1,
                selector: crate::scheduling::model::LabelSelector::labels(&[("app", "web")]),
            }];
        }
        let plan = solve_on(&spread, &nodes, &pools, &its);
        assert!(plan.bound.is_empty());
        let zones: std::collections::BTreeSet<u32> =
            plan.claims.iter().map(|c| zone_of(&plan, c)).collect();
        assert_eq!(zones, [1, 2].into());
    }

    #[test]
    fn min_values_keep_claims_flexible() {
        let its = its();
        let mut np = pool("default", &[]);
        np.min_values = vec![(labels::INSTANCE_TYPE.into(), 20)];
        let plan = solve(
            &pods(50, "web", 1000, 1024),
            std::slice::from_ref(&np),
            &its,
        );
        assert!(plan.unschedulable.is_empty());
        for c in &plan.claims {
            assert!(
                c.instance_types.len() >= 20,
                "{} types",
                c.instance_types.len()
            );
        }
        // One more distinct type than can hold 150 vCPUs.
        let holding = its
            .types
            .iter()
            .filter(|t| t.allocatable.cpu_millis >= 150_000)
            .count();
        assert!(holding > 0);
        np.min_values = vec![(labels::INSTANCE_TYPE.into(), holding + 1)];
        let plan = solve(&pods(1, "huge", 150_000, 1024), &[np], &its);
        assert_eq!(plan.unschedulable.len(), 1);
        assert!(
            plan.unschedulable[0].reason.contains("minValues"),
            "{}",
            plan.unschedulable[0].reason
        );
    }

    #[test]
    fn preferences_are_honoured_when_possible_and_dropped_when_not() {
        let its = its();
        let pools = [pool("default", &[])];
        let mut arm = pods(4, "arm", 500, 512);
        for p in &mut arm {
            p.preferred = vec![Requirements::from_labels([(labels::ARCH, "arm64")])];
        }
        let plan = solve(&arm, &pools, &its);
        assert!(plan.unschedulable.is_empty());
        for c in &plan.claims {
            assert!(
                c.instance_types
                    .iter()
                    .all(|&t| its.label(t, labels::ARCH) == Some("arm64"))
            );
        }
        let mut impossible = pods(2, "x", 500, 512);
        for p in &mut impossible {
            p.preferred = vec![Requirements::from_labels([(labels::CATEGORY, "zz")])];
        }
        let plan = solve(&impossible, &pools, &its);
        assert!(plan.unschedulable.is_empty(), "a preference never blocks");

        // ScheduleAnyway zone spread spreads when it can…
        let soft = |n: usize| {
            let mut v = pods(n, "soft", 100, 128);
            for p in &mut v {
                p.soft_spread = vec![SpreadConstraint {
                    key: TopologyKey::Zone,
                    max_skew: 1,
                    selector: crate::scheduling::model::LabelSelector::labels(&[("app", "soft")]),
                }];
            }
            v
        };
        let plan = solve(&soft(3), &pools, &its);
        let zones: std::collections::BTreeSet<u32> =
            plan.claims.iter().map(|c| zone_of(&plan, c)).collect();
        assert_eq!(zones.len(), 3);
        // …and schedules anyway when it cannot.
        let one_zone = [pool("one", &[(labels::ZONE, In, &["us-east-1a"])])];
        let plan = solve(&soft(3), &one_zone, &its);
        assert!(plan.unschedulable.is_empty());
    }

    #[test]
    fn preferences_are_relaxed_one_at_a_time_lowest_weight_first() {
        let its = its();
        let pools = [pool("default", &[])];
        // Heavy: amd64; light: a category no type has. Dropping only the light one keeps amd64
        // (all at once would leave the cheapest, arm64).
        let mut two = pods(2, "two", 500, 512);
        for p in &mut two {
            p.preferred = vec![
                Requirements::from_labels([(labels::ARCH, "amd64")]),
                Requirements::from_labels([(labels::CATEGORY, "zz")]),
            ];
        }
        let plan = solve(&two, &pools, &its);
        assert!(plan.unschedulable.is_empty());
        for c in &plan.claims {
            assert!(
                c.instance_types
                    .iter()
                    .all(|&t| its.label(t, labels::ARCH) == Some("amd64"))
            );
        }
        // Preferred node affinity goes before ScheduleAnyway spread: a preferred zone holds the
        // first pod, then the spread sends the next two to the other zones.
        let mut zoned = pods(3, "zoned", 100, 128);
        for p in &mut zoned {
            p.preferred = vec![Requirements::from_labels([(labels::ZONE, "us-east-1a")])];
            p.soft_spread = vec![SpreadConstraint {
                key: TopologyKey::Zone,
                max_skew: 1,
                selector: crate::scheduling::model::LabelSelector::labels(&[("app", "zoned")]),
            }];
        }
        let plan = solve(&zoned, &pools, &its);
        assert!(plan.unschedulable.is_empty());
        let zones: std::collections::BTreeSet<u32> =
            plan.claims.iter().map(|c| zone_of(&plan, c)).collect();
        assert_eq!(zones.len(), 3, "spread kept, zone preference dropped");
    }

    #[test]
    fn a_running_pods_anti_affinity_keeps_the_pods_it_selects_away() {
        let its = its();
        let pools = [pool("default", &[])];
        // A running pod that wants no `web` pod beside it, on a node with room for many.
        let mut loner = pods(1, "loner", 100, 128);
        loner[0].anti_affinity = vec![AffinityTerm {
            key: TopologyKey::Hostname,
            selector: crate::scheduling::model::LabelSelector::labels(&[("app", "web")]),
        }];
        let nodes = vec![node(&its, "n1", "m5.xlarge", 0, &loner)];
        let web = pods(2, "web", 100, 128);
        let plan = solve_on(&web, &nodes, &pools, &its);
        assert!(plan.bound.is_empty(), "kept off the loner's node");
        assert_eq!(plan.claims.iter().map(|c| c.pods.len()).sum::<usize>(), 2);
        // Pods it does not select still fill it.
        let plan = solve_on(&pods(2, "api", 100, 128), &nodes, &pools, &its);
        assert_eq!(plan.bound.len(), 2);

        // By zone: no `web` pod in the loner's zone, new claims included.
        loner[0].anti_affinity[0].key = TopologyKey::Zone;
        let nodes = vec![node(&its, "n1", "m5.xlarge", 0, &loner)];
        let plan = solve_on(&web, &nodes, &pools, &its);
        assert!(plan.bound.is_empty());
        for c in &plan.claims {
            assert_eq!(c.zones & 1, 0, "zone 0 excluded: {:b}", c.zones);
        }

        // Within one round too: a pending pod's anti-affinity keeps later pods it selects away,
        // even when they carry no term of their own.
        let mut round = pods(1, "loner", 100, 128);
        round[0].anti_affinity = vec![AffinityTerm {
            key: TopologyKey::Hostname,
            selector: crate::scheduling::model::LabelSelector::labels(&[("app", "web")]),
        }];
        round.extend(pods(3, "web", 100, 128));
        let plan = solve(&round, &pools, &its);
        assert!(plan.unschedulable.is_empty());
        let with_loner = plan.claims.iter().find(|c| c.pods.contains(&0)).unwrap();
        assert_eq!(with_loner.pods, vec![0], "{:?}", plan.claims);
    }

    #[test]
    fn a_pods_volumes_keep_it_in_their_zone() {
        let its = its();
        let pools = [pool("default", &[])];
        let mut pinned = pods(2, "db", 500, 512);
        pinned[0].volume_requirements = Some(Requirements::from_list(&[Requirement::new(
            labels::ZONE,
            In,
            &["us-east-1c"],
        )]));
        let plan = solve(&pinned, &pools, &its);
        assert!(plan.unschedulable.is_empty());
        let c = plan.claims.iter().find(|c| c.pods.contains(&0)).unwrap();
        assert_eq!(its.zones[zone_of(&plan, c) as usize], "us-east-1c");
        // Also when it joins a claim an unpinned pod opened.
        pinned.swap(0, 1);
        let plan = solve(&pinned, &pools, &its);
        for c in &plan.claims {
            if c.pods.contains(&1) {
                assert_eq!(c.zones.count_ones(), 1, "{:b}", c.zones);
                assert_eq!(its.zones[zone_of(&plan, c) as usize], "us-east-1c");
            }
        }
        // A pool without that zone cannot take it, and says why.
        let elsewhere = [pool(
            "ab",
            &[(labels::ZONE, In, &["us-east-1a", "us-east-1b"])],
        )];
        let plan = solve(&pinned, &elsewhere, &its);
        assert_eq!(plan.unschedulable.len(), 1);
        assert_eq!(plan.unschedulable[0].pod, 1);
        assert!(
            plan.unschedulable[0].reason.contains("us-east-1c"),
            "{}",
            plan.unschedulable[0].reason
        );
    }

    #[test]
    fn a_large_mixed_backlog_is_worked_through_completely() {
        let its = its();
        let np = pool("default", &[]);
        let mut all = pods(3000, "big", 1500, 4096);
        all.extend(pods(3000, "tiny", 100, 100));
        let plan = solve(&all, &[np], &its);
        assert!(
            plan.unschedulable.is_empty(),
            "{} unschedulable",
            plan.unschedulable.len()
        );
        assert_eq!(
            plan.claims.iter().map(|c| c.pods.len()).sum::<usize>(),
            6000
        );
        assert_sound(&plan, &all, &its);
    }
}
