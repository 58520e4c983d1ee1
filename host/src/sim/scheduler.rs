//! kube-scheduler, as the simulator's world plays it: every pod no node holds is bound to a
//! Ready node that passes kube-scheduler's filters, the best by its default scores. It never
//! reads where the controller nominated a pod — Karpenter's nomination is an Event, not
//! `status.nominatedNodeName`, so the real scheduler does not see it either — and so a pod may
//! land elsewhere than planned, or nowhere, as it may in a cluster.
//!
//! Each rule names the kube-scheduler plugin it follows (kubernetes/kubernetes,
//! `pkg/scheduler/framework/plugins/…`). What it does not play: preemption, the soft rules'
//! scores (preferred affinity, `ScheduleAnyway` spread, image locality), ties broken at random
//! (here: the first node examined; nodes in name order, not zone by zone), and pods it reads in
//! the model's parsed form (node terms are matched with the model's requirement sets).

use std::collections::{HashMap, HashSet};

use super::World;
use super::kubelet;
use crate::capacity::Resources;
use crate::cluster::Pod;
use crate::scheduling::PendingPod;
use crate::scheduling::model::{AffinityTerm, LabelSelector, TaintEffect, TopologyKey, labels};

/// A registered node as the scheduler's cache holds it.
struct NodeInfo {
    name: String,
    /// Index into [`Cache::zones`].
    zone: Option<usize>,
    labels: Vec<(String, String)>,
    taints: Vec<crate::scheduling::model::Taint>,
    /// `status.allocatable`, as its kubelet reported it.
    allocatable: Resources,
    /// Requests of every pod on it: bound, still terminating, and its DaemonSets' pods.
    requested: Resources,
    /// CPU millis and memory bytes as scoring counts them: a pod that requests none counts
    /// 100m and 200 MiB (`NonZeroRequested`, pkg/scheduler/util/pod_resources.go).
    scored: (u64, u64),
    /// Whether it is Ready: a NotReady node carries `node.kubernetes.io/not-ready:NoSchedule`
    /// (the node lifecycle controller's TaintNodesByCondition), which no pod here tolerates.
    ready: bool,
}

/// A pod that holds a place in the cache: where it is and what topology rules it brings.
struct Placed {
    namespace: String,
    labels: Vec<(String, String)>,
    node: usize,
    /// Terminating (`deletionTimestamp` set): PodTopologySpread does not count it.
    terminating: bool,
}

/// `namespace/name` → the namespace.
fn namespace(pod: &str) -> &str {
    pod.split_once('/').map_or("default", |(ns, _)| ns)
}

/// Which pods a count is of: a namespace, selectors they all match, terminating ones or not.
type CountKey = (String, Vec<LabelSelector>, bool);

/// The scheduler's view for one pass: nodes, the pods on them, and the anti-affinity terms those
/// pods bring (InterPodAffinity checks an incoming pod against them too).
struct Cache {
    nodes: Vec<NodeInfo>,
    zones: Vec<String>,
    placed: Vec<Placed>,
    /// Existing pods' required anti-affinity: (namespace, term) → the nodes of the pods with it.
    anti: HashMap<(String, AffinityTerm), HashSet<usize>>,
    /// Per-node counts of the pods a [`CountKey`] picks, kept for the pass.
    counted: HashMap<CountKey, Vec<u32>>,
    /// Where the next pod's search for feasible nodes starts.
    next_start: usize,
}

impl Cache {
    /// A node's topology domain under `key`, as an index (a node for hostname, a zone).
    fn domain(&self, node: usize, key: TopologyKey) -> Option<usize> {
        match key {
            TopologyKey::Hostname => Some(node),
            TopologyKey::Zone => self.nodes[node].zone,
        }
    }

    fn domains(&self, key: TopologyKey) -> usize {
        match key {
            TopologyKey::Hostname => self.nodes.len(),
            TopologyKey::Zone => self.zones.len(),
        }
    }

    /// Per node, the pods a key picks (computed once a pass, then kept as pods are placed).
    fn counts(&mut self, key: CountKey) -> &[u32] {
        if !self.counted.contains_key(&key) {
            let (ns, selectors, terminating) = &key;
            let mut out = vec![0; self.nodes.len()];
            for p in &self.placed {
                if (*terminating || !p.terminating)
                    && p.namespace == *ns
                    && selectors.iter().all(|s| s.matches(&p.labels))
                {
                    out[p.node] += 1;
                }
            }
            self.counted.insert(key.clone(), out);
        }
        &self.counted[&key]
    }

    /// Per domain under `key`, the sum of `per_node` over the nodes `eligible` keeps, and
    /// which domains such a node is in.
    fn by_domain(
        &self,
        key: TopologyKey,
        per_node: &[u32],
        eligible: impl Fn(&NodeInfo) -> bool,
    ) -> (Vec<u32>, Vec<bool>) {
        let mut counts = vec![0; self.domains(key)];
        let mut present = vec![false; counts.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(d) = self.domain(i, key)
                && eligible(n)
            {
                counts[d] += per_node[i];
                present[d] = true;
            }
        }
        (counts, present)
    }

    /// A pod takes its place on `node`: its requests, the counts kept so far, and the
    /// anti-affinity it brings.
    fn place(&mut self, pod: &PendingPod, node: usize, terminating: bool) {
        let n = &mut self.nodes[node];
        let pods = n.requested.pods + 1;
        n.requested = crate::scheduling::model::add(&n.requested, &pod.requests);
        n.requested.pods = pods;
        let (cpu, memory) = nonzero(&pod.requests);
        n.scored = (n.scored.0 + cpu, n.scored.1 + memory);
        let ns = namespace(&pod.name).to_string();
        for ((cns, selectors, with_terminating), per_node) in &mut self.counted {
            if *cns == ns
                && (*with_terminating || !terminating)
                && selectors.iter().all(|s| s.matches(&pod.labels))
            {
                per_node[node] += 1;
            }
        }
        for t in &pod.anti_affinity {
            self.anti
                .entry((ns.clone(), t.clone()))
                .or_default()
                .insert(node);
        }
        self.placed.push(Placed {
            namespace: ns,
            labels: pod.labels.clone(),
            node,
            terminating,
        });
    }
}

/// A pod's CPU and memory as scoring counts them (`NonZeroRequested`).
fn nonzero(r: &Resources) -> (u64, u64) {
    let cpu = if r.cpu_millis == 0 { 100 } else { r.cpu_millis };
    let memory = if r.memory_bytes == 0 {
        200 << 20
    } else {
        r.memory_bytes
    };
    (cpu, memory)
}

/// A label lookup over a node's labels.
fn label<'a>(labels: &'a [(String, String)]) -> impl Fn(&str) -> Option<&'a str> {
    move |k: &str| {
        labels
            .iter()
            .find(|(lk, _)| lk == k)
            .map(|(_, v)| v.as_str())
    }
}

/// NodeAffinity's filter: `labels` satisfy the pod's `nodeSelector` and required node affinity
/// (any one term).
fn node_terms_allow(pod: &PendingPod, labels: &[(String, String)]) -> bool {
    pod.node_terms.is_empty() || pod.node_terms.iter().any(|t| t.matches(label(labels)))
}

/// VolumeBinding and VolumeZone: the node is where the pod's volumes can be used.
fn volumes_allow(pod: &PendingPod, labels: &[(String, String)]) -> bool {
    pod.volume_requirements
        .as_ref()
        .is_none_or(|r| r.matches(label(labels)))
}

/// TaintToleration's filter: every `NoSchedule` and `NoExecute` taint is tolerated
/// (`PreferNoSchedule` only scores).
fn tolerated(pod: &PendingPod, node: &NodeInfo) -> bool {
    node.taints
        .iter()
        .filter(|t| t.effect != TaintEffect::PreferNoSchedule)
        .all(|t| pod.tolerations.iter().any(|tol| tol.tolerates(t)))
}

/// NodeResourcesFit's filter: the pod's requests fit what the node's pods leave, and one more
/// pod fits its pod count.
fn fits(pod: &Resources, node: &NodeInfo) -> bool {
    let (a, r) = (&node.allocatable, &node.requested);
    r.cpu_millis + pod.cpu_millis <= a.cpu_millis
        && r.memory_bytes + pod.memory_bytes <= a.memory_bytes
        && r.ephemeral_storage_bytes + pod.ephemeral_storage_bytes <= a.ephemeral_storage_bytes
        && r.gpus + pod.gpus <= a.gpus
        && r.pods < a.pods
}

/// The scores of the default profile that depend on where requests land: NodeResourcesFit's
/// `LeastAllocated` and NodeResourcesBalancedAllocation, both weight 1 over CPU and memory.
fn score(pod: &Resources, node: &NodeInfo) -> f64 {
    let share = |req: u64, alloc: u64| {
        if alloc == 0 {
            1.0
        } else {
            (req as f64 / alloc as f64).min(1.0)
        }
    };
    let (cpu, memory) = nonzero(pod);
    let cpu = share(node.scored.0 + cpu, node.allocatable.cpu_millis);
    let mem = share(node.scored.1 + memory, node.allocatable.memory_bytes);
    // least_allocated.go: (allocatable − requested) × 100 / allocatable, averaged by weight.
    let least = ((1.0 - cpu) + (1.0 - mem)) * 100.0 / 2.0;
    // balanced_allocation.go: (1 − standard deviation of the shares) × 100.
    let balanced = (1.0 - (cpu - mem).abs() / 2.0) * 100.0;
    least + balanced
}

/// PodTopologySpread's filter for one `DoNotSchedule` constraint: placing the pod on a node
/// must leave its domain no more than `maxSkew` above the emptiest eligible domain. Eligible
/// nodes are those the pod's node affinity allows (`nodeAffinityPolicy: Honor`), taints or not
/// (`nodeTaintsPolicy: Ignore`); terminating pods do not count. A node outside every eligible
/// domain, or a constraint with no domain at all, refuses the pod.
struct Spread {
    key: TopologyKey,
    max_skew: u32,
    own: u32,
    counts: Vec<u32>,
    present: Vec<bool>,
    min: Option<u32>,
}

impl Spread {
    fn of(cache: &mut Cache, pod: &PendingPod) -> Vec<Spread> {
        let ns = namespace(&pod.name).to_string();
        pod.spread
            .iter()
            .map(|c| {
                cache.counts((ns.clone(), vec![c.selector.clone()], false));
                let per_node = &cache.counted[&(ns.clone(), vec![c.selector.clone()], false)];
                let (counts, present) =
                    cache.by_domain(c.key, per_node, |n| node_terms_allow(pod, &n.labels));
                let min = counts
                    .iter()
                    .zip(&present)
                    .filter(|(_, p)| **p)
                    .map(|(c, _)| *c)
                    .min();
                Spread {
                    key: c.key,
                    max_skew: c.max_skew,
                    own: u32::from(c.selector.matches(&pod.labels)),
                    counts,
                    present,
                    min,
                }
            })
            .collect()
    }

    fn allows(&self, cache: &Cache, node: usize) -> bool {
        let (Some(min), Some(d)) = (self.min, cache.domain(node, self.key)) else {
            return false;
        };
        self.present[d] && self.counts[d] + self.own <= min + self.max_skew
    }
}

/// InterPodAffinity's filter. Required affinity: a pod that every term selects runs in the
/// node's domain of each term — or no such pod runs anywhere and the pod matches its own terms,
/// so the first of a group can start (on a node with each term's key). Required anti-affinity,
/// both ways: no pod the incoming pod's term selects is in the node's domain, and no pod there
/// has a term that selects the incoming one. Terms look in the pod's own namespace; terminating
/// pods count.
#[derive(Default)]
struct Affinity {
    /// Per required term: its key and the domains where a pod matching every term runs; `None`
    /// for the first of a group.
    required: Option<Vec<(TopologyKey, Vec<u32>)>>,
    keys: Vec<TopologyKey>,
    anti: Vec<(TopologyKey, Vec<u32>)>,
    /// Domains an existing pod's anti-affinity keeps this pod out of.
    forbidden: HashSet<(TopologyKey, usize)>,
}

impl Affinity {
    fn of(cache: &mut Cache, pod: &PendingPod) -> Affinity {
        let ns = namespace(&pod.name).to_string();
        let mut out = Affinity {
            keys: pod.affinity.iter().map(|t| t.key).collect(),
            ..Default::default()
        };
        if !pod.affinity.is_empty() {
            let selectors: Vec<LabelSelector> =
                pod.affinity.iter().map(|t| t.selector.clone()).collect();
            let key = (ns.clone(), selectors.clone(), true);
            cache.counts(key.clone());
            let per_node = &cache.counted[&key];
            let first = per_node.iter().all(|&c| c == 0)
                && selectors.iter().all(|s| s.matches(&pod.labels));
            if !first {
                out.required = Some(
                    pod.affinity
                        .iter()
                        .map(|t| (t.key, cache.by_domain(t.key, per_node, |_| true).0))
                        .collect(),
                );
            }
        }
        for t in &pod.anti_affinity {
            let key = (ns.clone(), vec![t.selector.clone()], true);
            cache.counts(key.clone());
            let per_node = &cache.counted[&key];
            out.anti
                .push((t.key, cache.by_domain(t.key, per_node, |_| true).0));
        }
        for ((term_ns, term), nodes) in &cache.anti {
            if *term_ns != ns || !term.selector.matches(&pod.labels) {
                continue;
            }
            for &at in nodes {
                if let Some(d) = cache.domain(at, term.key) {
                    out.forbidden.insert((term.key, d));
                }
            }
        }
        out
    }

    fn allows(&self, cache: &Cache, node: usize) -> bool {
        if !self.keys.iter().all(|&k| cache.domain(node, k).is_some()) {
            return false;
        }
        if let Some(required) = &self.required
            && !required
                .iter()
                .all(|(k, counts)| cache.domain(node, *k).is_some_and(|d| counts[d] > 0))
        {
            return false;
        }
        let anti_ok = self
            .anti
            .iter()
            .all(|(k, counts)| cache.domain(node, *k).is_none_or(|d| counts[d] == 0));
        anti_ok
            && [TopologyKey::Hostname, TopologyKey::Zone]
                .into_iter()
                .all(|k| {
                    cache
                        .domain(node, k)
                        .is_none_or(|d| !self.forbidden.contains(&(k, d)))
                })
    }
}

impl World {
    /// The scheduler's cache now: registered nodes and the pods on them.
    fn cache(&self) -> Cache {
        let overhead = self
            .daemonsets
            .values()
            .fold(crate::scheduling::model::zero(), |a, r| {
                crate::scheduling::model::add(&a, r)
            });
        let daemon_pods = self.daemonsets.len() as u32;
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut zones: Vec<String> = Vec::new();
        let mut reported: HashMap<(&str, &str), Resources> = HashMap::new();
        let mut nodes = Vec::new();
        for n in self
            .cluster
            .nodes
            .values()
            .filter(|n| n.lifecycle.joined.is_some())
        {
            let zone = n
                .labels
                .iter()
                .find(|(k, _)| k == labels::ZONE)
                .map(|(_, v)| match zones.iter().position(|z| z == v) {
                    Some(i) => i,
                    None => {
                        zones.push(v.clone());
                        zones.len() - 1
                    }
                });
            let allocatable = *reported
                .entry((&n.instance.node_pool, &n.instance.offer.instance_type))
                .or_insert_with(|| self.allocatable(n));
            index.insert(&n.name, nodes.len());
            nodes.push(NodeInfo {
                name: n.name.clone(),
                zone,
                labels: n.labels.clone(),
                taints: n.taints.clone(),
                allocatable,
                requested: Resources {
                    pods: daemon_pods,
                    ..overhead
                },
                scored: (overhead.cpu_millis, overhead.memory_bytes),
                ready: n.ready_at.is_some(),
            });
        }
        let mut cache = Cache {
            nodes,
            zones,
            placed: Vec::new(),
            anti: HashMap::new(),
            counted: HashMap::new(),
            next_start: self.next_start,
        };
        let bound = self
            .cluster
            .pods
            .values()
            .filter(|p| p.running_since.is_some())
            .map(|p| (p, p.node.as_deref().unwrap_or_default(), false));
        let stopping = self
            .stopping
            .values()
            .map(|s| (&s.pod, s.node.as_str(), true));
        for (p, node, terminating) in bound.chain(stopping) {
            if let Some(&i) = index.get(node) {
                cache.place(&p.spec, i, terminating);
            }
        }
        cache
    }

    /// What the node's kubelet reports: its machine and its node class's kubelet settings.
    fn allocatable(&self, node: &crate::cluster::Node) -> Resources {
        let machine = self
            .kubelet
            .get(&node.instance.offer.instance_type)
            .copied()
            .unwrap_or_default();
        let class = self
            .cluster
            .pools
            .iter()
            .find(|p| p.spec.name == node.instance.node_pool)
            .and_then(|p| {
                let name = &p.resource.spec.template.spec.node_class_ref.name;
                self.cluster.node_classes.get(name)
            })
            .and_then(|json| serde_json::from_str::<serde_json::Value>(json).ok());
        kubelet::allocatable(machine, class.as_ref())
    }

    /// kube-scheduler's pass: the pods no node holds, highest priority first and then oldest
    /// (PrioritySort), each bound to the best node that passes every filter, or left pending.
    pub(super) fn schedule(&mut self) {
        let mut queue: Vec<&Pod> = self
            .cluster
            .pods
            .values()
            .filter(|p| p.running_since.is_none())
            .collect();
        if queue.is_empty() {
            return;
        }
        queue.sort_by(|a, b| {
            (
                std::cmp::Reverse(a.spec.priority),
                a.created_at,
                &a.spec.name,
            )
                .cmp(&(
                    std::cmp::Reverse(b.spec.priority),
                    b.created_at,
                    &b.spec.name,
                ))
        });
        let queue: Vec<String> = queue.into_iter().map(|p| p.spec.name.clone()).collect();
        let mut cache = self.cache();
        if cache.nodes.is_empty() {
            return;
        }
        let mut bound = false;
        for name in queue {
            let Some(pod) = self.cluster.pods.get(&name) else {
                continue;
            };
            if let Some(i) = pick(&mut cache, &pod.spec) {
                cache.place(&pod.spec, i, false);
                let node = cache.nodes[i].name.clone();
                self.bind(&name, &node);
                bound = true;
            }
        }
        self.next_start = cache.next_start;
        if bound {
            // Disruption looks again at nodes whose pods changed.
            self.dirty();
        }
    }

    /// The binding: the pod is on the node and its kubelet starts it at once; a volume that
    /// waited for its first consumer is provisioned in the node's zone (the CSI provisioner
    /// reads the scheduler's selected node).
    fn bind(&mut self, pod: &str, node: &str) {
        let t = self.now();
        if self.nominations.remove(pod).is_some() {
            let planned = self.cluster.pods.get(pod).and_then(|p| p.node.as_deref());
            self.report.nominated_binds += 1;
            self.report.off_plan_binds += u32::from(planned != Some(node));
        }
        let zone = self.cluster.nodes.get(node).and_then(|n| {
            n.labels
                .iter()
                .find(|(k, _)| k == labels::ZONE)
                .map(|(_, v)| v.clone())
        });
        let Some(p) = self.cluster.pods.get_mut(pod) else {
            return;
        };
        p.node = Some(node.to_string());
        p.running_since = Some(t);
        p.ready = true;
        let waited = (t - p.created_at) as f64;
        let claims = p.spec.volume_claims.clone();
        self.report.pending_seconds.push(waited);
        if let Some(n) = self.cluster.nodes.get_mut(node) {
            n.last_pod_change = t;
        }
        if let Some(zone) = zone
            && !claims.is_empty()
            && self.cluster.volumes.provision(&claims, &zone)
        {
            self.resolve_volumes();
        }
    }
}

/// The node a pod binds to: the highest-scoring of the feasible nodes found. Filtering stops
/// once enough are found, starting where the last pod's search stopped
/// (findNodesThatPassFilters, `nextStartNodeIndex`).
fn pick(cache: &mut Cache, pod: &PendingPod) -> Option<usize> {
    let spread = Spread::of(cache, pod);
    let affinity =
        if !pod.affinity.is_empty() || !pod.anti_affinity.is_empty() || !cache.anti.is_empty() {
            Some(Affinity::of(cache, pod))
        } else {
            None
        };
    let n = cache.nodes.len();
    let wanted = feasible_to_find(n);
    let (mut found, mut examined) = (Vec::new(), n);
    for k in 0..n {
        let i = (cache.next_start + k) % n;
        let node = &cache.nodes[i];
        let feasible = node.ready
            && fits(&pod.requests, node)
            && tolerated(pod, node)
            && node_terms_allow(pod, &node.labels)
            && volumes_allow(pod, &node.labels)
            && spread.iter().all(|s| s.allows(cache, i))
            && affinity.as_ref().is_none_or(|a| a.allows(cache, i));
        if feasible {
            found.push(i);
            if found.len() == wanted {
                examined = k + 1;
                break;
            }
        }
    }
    cache.next_start = (cache.next_start + examined) % n;
    let mut best: Option<(f64, usize)> = None;
    for i in found {
        let s = score(&pod.requests, &cache.nodes[i]);
        if best.is_none_or(|(b, _)| s > b) {
            best = Some((s, i));
        }
    }
    best.map(|(_, i)| i)
}

/// How many feasible nodes kube-scheduler looks for before it stops filtering
/// (`numFeasibleNodesToFind` in schedule_one.go, with the default adaptive
/// `percentageOfNodesToScore`): every node below 100; else 50 % less a point per 125 nodes, at
/// least 5 % and at least 100 nodes.
fn feasible_to_find(nodes: usize) -> usize {
    if nodes < 100 {
        return nodes;
    }
    let percent = 50usize.saturating_sub(nodes / 125).max(5);
    (nodes * percent / 100).max(100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Joined, Node};
    use crate::controller::ClusterPort;
    use crate::scheduling::model::{SpreadConstraint, Taint, Toleration};

    /// A world whose nodes (name, zone, vCPUs) are registered and Ready, each of its own
    /// instance type with that many vCPUs, 4 GiB and 10 pods (940m allocatable of one vCPU).
    fn world(nodes: &[(&str, &str, u32)]) -> World {
        let mut w = World::new(&super::super::SimOptions::default());
        for &(name, zone, vcpus) in nodes {
            let mut n = Node::example(name);
            n.instance.offer.instance_type = format!("t-{name}");
            n.labels = vec![(labels::ZONE.to_string(), zone.to_string())];
            n.lifecycle.joined = Some(Joined {
                node: name.into(),
                ready: true,
                startup_taints_left: false,
                deleting: false,
            });
            let machine = kubelet::Machine {
                vcpus,
                memory_mib: 4096,
                gpus: 0,
                eni_pods: 10,
            };
            w.kubelet.insert(format!("t-{name}"), machine);
            w.cluster.nodes.insert(name.into(), n);
        }
        w
    }

    fn pod(name: &str, app: &str, cpu: u64) -> PendingPod {
        PendingPod::new(&format!("default/{name}"), &[("app", app)], cpu, 128 << 20)
    }

    fn node_of<'a>(w: &'a World, pod: &str) -> Option<&'a str> {
        let p = &w.cluster.pods[&format!("default/{pod}")];
        p.running_since.and(p.node.as_deref())
    }

    #[test]
    fn a_pod_binds_only_to_a_ready_node_its_requests_and_one_more_pod_fit() {
        let mut w = world(&[("a", "z1", 1), ("b", "z1", 4)]);
        w.cluster.nodes.get_mut("b").unwrap().ready_at = None;
        w.create_pod(pod("p1", "x", 700), None, false);
        w.create_pod(pod("p2", "x", 700), None, false);
        w.schedule();
        assert_eq!(node_of(&w, "p1"), Some("a"));
        assert_eq!(node_of(&w, "p2"), None, "a is full and b is not Ready");
        assert!(w.cluster.pods["default/p2"].node.is_none());
        // NodeResourcesFit counts pods: a node of 10 holding 10 takes no 11th, however small.
        let mut w = world(&[("a", "z1", 4)]);
        for i in 0..11 {
            w.create_pod(pod(&format!("q{i:02}"), "x", 1), None, false);
        }
        w.schedule();
        assert_eq!(node_of(&w, "q09"), Some("a"));
        assert_eq!(node_of(&w, "q10"), None);
    }

    #[test]
    fn pods_spread_over_equal_nodes_by_least_allocated_whatever_the_nomination() {
        let mut w = world(&[("a", "z1", 2), ("b", "z1", 2)]);
        for i in 0..4 {
            w.create_pod(pod(&format!("p{i}"), "x", 200), None, false);
        }
        // The controller nominated every pod to `b`; kube-scheduler never reads that.
        for i in 0..4 {
            w.nominate(&format!("default/p{i}"), "b");
        }
        w.schedule();
        let on = |n: &str| {
            (0..4)
                .filter(|i| node_of(&w, &format!("p{i}")) == Some(n))
                .count()
        };
        assert_eq!((on("a"), on("b")), (2, 2));
        assert!(w.nominations.is_empty(), "a bound pod's nomination is over");
        assert_eq!(
            (w.report.nominated_binds, w.report.off_plan_binds),
            (4, 2),
            "two of the four went elsewhere than planned"
        );
    }

    #[test]
    fn large_clusters_are_searched_for_a_share_of_their_nodes() {
        assert_eq!(feasible_to_find(50), 50);
        assert_eq!(feasible_to_find(150), 100, "at least 100");
        assert_eq!(feasible_to_find(1000), 420, "42 % of 1,000");
        assert_eq!(feasible_to_find(5000), 500, "10 % of 5,000");
        assert_eq!(feasible_to_find(20000), 1000, "at least 5 %");
        // 300 empty equal nodes: the first pod takes the first of the 144 it finds, the next
        // search starts after them, so the second pod lands on the 145th node.
        let names: Vec<String> = (0..300).map(|i| format!("n{i:03}")).collect();
        let nodes: Vec<(&str, &str, u32)> = names.iter().map(|n| (n.as_str(), "z1", 1)).collect();
        let mut w = world(&nodes);
        w.create_pod(pod("p1", "x", 100), None, false);
        w.create_pod(pod("p2", "x", 100), None, false);
        w.schedule();
        assert_eq!(node_of(&w, "p1"), Some("n000"));
        assert_eq!(node_of(&w, "p2"), Some("n144"));
    }

    #[test]
    fn higher_priority_pods_are_placed_first() {
        let mut w = world(&[("a", "z1", 1)]);
        w.create_pod(pod("low", "x", 700), None, false);
        let mut high = pod("high", "x", 700);
        high.priority = 1000;
        w.create_pod(high, None, false);
        w.schedule();
        assert_eq!(node_of(&w, "high"), Some("a"));
        assert_eq!(node_of(&w, "low"), None);
    }

    #[test]
    fn a_no_schedule_taint_keeps_pods_off_unless_they_tolerate_it() {
        let mut w = world(&[("a", "z1", 2)]);
        let taint = |effect| Taint {
            key: "dedicated".into(),
            value: "gpu".into(),
            effect,
        };
        w.cluster.nodes.get_mut("a").unwrap().taints = vec![taint(TaintEffect::NoSchedule)];
        w.create_pod(pod("plain", "x", 100), None, false);
        let mut tolerant = pod("tolerant", "x", 100);
        tolerant.tolerations = vec![Toleration {
            key: Some("dedicated".into()),
            exists: true,
            value: String::new(),
            effect: None,
        }];
        w.create_pod(tolerant, None, false);
        w.schedule();
        assert_eq!(node_of(&w, "plain"), None);
        assert_eq!(node_of(&w, "tolerant"), Some("a"));
        // PreferNoSchedule only scores.
        w.cluster.nodes.get_mut("a").unwrap().taints = vec![taint(TaintEffect::PreferNoSchedule)];
        w.schedule();
        assert_eq!(node_of(&w, "plain"), Some("a"));
    }

    #[test]
    fn hostname_spread_counts_every_eligible_node_as_a_domain() {
        let mut w = world(&[("a", "z1", 4), ("b", "z1", 4), ("c", "z1", 0)]);
        let spread = |mut p: PendingPod| {
            p.spread = vec![SpreadConstraint {
                key: TopologyKey::Hostname,
                max_skew: 1,
                selector: LabelSelector::labels(&[("app", "web")]),
            }];
            p
        };
        for i in 0..3 {
            w.create_pod(spread(pod(&format!("w{i}"), "web", 500)), None, false);
        }
        w.schedule();
        // `c` has no room, but it is a domain with none: after one each on a and b, the skew
        // rule keeps a third off both (1 + 1 − 0 > 1).
        assert_eq!(node_of(&w, "w0"), Some("a"));
        assert_eq!(node_of(&w, "w1"), Some("b"));
        assert_eq!(node_of(&w, "w2"), None);
        // A node the pod's node affinity excludes is no domain (nodeAffinityPolicy: Honor).
        w.cluster.nodes.get_mut("c").unwrap().labels[0].1 = "z2".into();
        let only_z1 = crate::scheduling::Requirements::from_labels([(labels::ZONE, "z1")]);
        let w2 = w.cluster.pods.get_mut("default/w2").unwrap();
        std::sync::Arc::make_mut(&mut w2.spec).node_terms = vec![only_z1];
        w.schedule();
        assert_eq!(node_of(&w, "w2"), Some("a"));
    }

    #[test]
    fn anti_affinity_holds_both_ways_and_affinity_lets_a_group_start() {
        let mut w = world(&[("a", "z1", 4), ("b", "z2", 4)]);
        let mut db = pod("db", "db", 100);
        db.anti_affinity = vec![AffinityTerm {
            key: TopologyKey::Zone,
            selector: LabelSelector::labels(&[("app", "cache")]),
        }];
        w.create_pod(db, None, false);
        w.schedule();
        assert_eq!(node_of(&w, "db"), Some("a"));
        // The cache pod has no term of its own, but the db's term selects it: not in z1.
        w.create_pod(pod("cache", "cache", 100), None, false);
        w.schedule();
        assert_eq!(node_of(&w, "cache"), Some("b"));
        // Affinity to a group no pod of which runs yet: the first member starts anywhere…
        let near = |name: &str| {
            let mut p = pod(name, "api", 100);
            p.affinity = vec![AffinityTerm {
                key: TopologyKey::Zone,
                selector: LabelSelector::labels(&[("app", "api")]),
            }];
            p
        };
        w.create_pod(near("api1"), None, false);
        w.schedule();
        let first = node_of(&w, "api1").unwrap().to_string();
        // …and the rest follow it, though the other node is emptier.
        for i in 2..5 {
            w.create_pod(near(&format!("api{i}")), None, false);
        }
        w.schedule();
        for i in 2..5 {
            assert_eq!(node_of(&w, &format!("api{i}")), Some(first.as_str()));
        }
    }

    #[test]
    fn a_terminating_pod_holds_its_requests_until_it_is_gone() {
        // With a preStop sleep it stays on the node, holding its CPU, until it has stopped.
        let mut w = world(&[("a", "z1", 1)]);
        w.create_pod(pod("old", "x", 800), None, false);
        w.schedule();
        w.stop_seconds.insert("default/old".into(), 20);
        w.ask_to_stop("default/old", "a", None);
        w.create_pod(pod("new", "y", 800), None, false);
        w.schedule();
        assert_eq!(
            node_of(&w, "new"),
            None,
            "the terminating pod's CPU is still in use"
        );
        w.t += 20;
        w.stop_pods();
        w.schedule();
        assert_eq!(node_of(&w, "new"), Some("a"));
    }
}
