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
//! the model's parsed form.

use std::collections::HashMap;

use super::World;
use crate::capacity::Resources;
use crate::cluster::Pod;
use crate::scheduling::PendingPod;
use crate::scheduling::model::{AffinityTerm, LabelSelector, TaintEffect, TopologyKey, labels};

/// A registered node as the scheduler's cache holds it.
struct NodeInfo {
    name: String,
    zone: Option<String>,
    labels: Vec<(String, String)>,
    taints: Vec<crate::scheduling::model::Taint>,
    /// `status.allocatable`, as its kubelet reported it.
    allocatable: Resources,
    /// Requests of every pod on it: bound, still terminating, and its DaemonSets' pods.
    requested: Resources,
    /// Whether it is Ready: a NotReady node carries `node.kubernetes.io/not-ready:NoSchedule`
    /// (the node lifecycle controller's TaintNodesByCondition), which no pod here tolerates.
    ready: bool,
}

impl NodeInfo {
    fn domain(&self, key: TopologyKey) -> Option<&str> {
        match key {
            TopologyKey::Hostname => Some(&self.name),
            TopologyKey::Zone => self.zone.as_deref(),
        }
    }
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

/// The scheduler's view for one pass: nodes, the pods on them, and the anti-affinity terms those
/// pods bring (InterPodAffinity checks an incoming pod against them too).
struct Cache {
    nodes: Vec<NodeInfo>,
    placed: Vec<Placed>,
    /// Existing pods' required anti-affinity: (namespace, term) → the nodes of the pods with it.
    anti: HashMap<(String, AffinityTerm), Vec<usize>>,
    /// Per-node counts of the pods a selector picks, by (namespace, selector, with terminating).
    counted: HashMap<(String, Vec<LabelSelector>, bool), Vec<u32>>,
    /// Where the next pod's search for feasible nodes starts.
    next_start: usize,
}

impl Cache {
    /// Pods of `namespace` that every one of `selectors` selects, per node; terminating ones too when
    /// `terminating`. Kept for the pass and updated as pods are placed.
    fn counts(
        &mut self,
        namespace: &str,
        selectors: &[LabelSelector],
        terminating: bool,
    ) -> &[u32] {
        let key = (namespace.to_string(), selectors.to_vec(), terminating);
        if !self.counted.contains_key(&key) {
            let mut out = vec![0; self.nodes.len()];
            for p in &self.placed {
                if (terminating || !p.terminating)
                    && p.namespace == namespace
                    && selectors.iter().all(|s| s.matches(&p.labels))
                {
                    out[p.node] += 1;
                }
            }
            self.counted.insert(key.clone(), out);
        }
        &self.counted[&key]
    }

    /// Per topology domain, the sum of `per_node` over the nodes `eligible` keeps.
    fn by_domain(
        &self,
        key: TopologyKey,
        per_node: &[u32],
        eligible: impl Fn(&NodeInfo) -> bool,
    ) -> HashMap<String, u32> {
        let mut out: HashMap<String, u32> = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if !eligible(n) {
                continue;
            }
            if let Some(d) = n.domain(key) {
                *out.entry(d.to_string()).or_default() += per_node[i];
            }
        }
        out
    }

    /// A pod takes its place on `node`: its requests, the counts kept so far, and the
    /// anti-affinity it brings.
    fn place(&mut self, pod: &PendingPod, node: usize, terminating: bool) {
        let n = &mut self.nodes[node];
        let pods = n.requested.pods + 1;
        n.requested = crate::scheduling::model::add(&n.requested, &pod.requests);
        n.requested.pods = pods;
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
                .push(node);
        }
        self.placed.push(Placed {
            namespace: ns,
            labels: pod.labels.clone(),
            node,
            terminating,
        });
    }
}

/// Whether `labels` satisfy the pod's `nodeSelector` and required node affinity (NodeAffinity:
/// any one term) and its volumes' node affinity (VolumeBinding, VolumeZone).
fn node_affinity_allows(pod: &PendingPod, labels: &[(String, String)]) -> bool {
    let get = |k: &str| {
        labels
            .iter()
            .find(|(lk, _)| lk == k)
            .map(|(_, v)| v.as_str())
    };
    let terms = pod.node_terms.is_empty() || pod.node_terms.iter().any(|t| t.matches(get));
    terms
        && pod
            .volume_requirements
            .as_ref()
            .is_none_or(|r| r.matches(get))
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
    let cpu = share(
        node.requested.cpu_millis + pod.cpu_millis,
        node.allocatable.cpu_millis,
    );
    let mem = share(
        node.requested.memory_bytes + pod.memory_bytes,
        node.allocatable.memory_bytes,
    );
    // least_allocated.go: (allocatable − requested) × 100 / allocatable, averaged by weight.
    let least = ((1.0 - cpu) + (1.0 - mem)) * 100.0 / 2.0;
    // balanced_allocation.go: (1 − standard deviation of the shares) × 100.
    let balanced = (1.0 - (cpu - mem).abs() / 2.0) * 100.0;
    least + balanced
}

/// PodTopologySpread's filter for every `DoNotSchedule` constraint: placing the pod on a node
/// must leave its domain no more than `maxSkew` above the emptiest eligible domain. Eligible
/// nodes are those the pod's node affinity allows (`nodeAffinityPolicy: Honor`), taints or not
/// (`nodeTaintsPolicy: Ignore`); terminating pods do not count.
fn spread_allows(cache: &mut Cache, pod: &PendingPod, candidates: &mut [bool]) {
    let ns = namespace(&pod.name);
    for c in &pod.spread {
        let per_node = cache
            .counts(ns, std::slice::from_ref(&c.selector), false)
            .to_vec();
        let domains = cache.by_domain(c.key, &per_node, |n| node_affinity_allows(pod, &n.labels));
        let Some(&min) = domains.values().min() else {
            continue;
        };
        let own = u32::from(c.selector.matches(&pod.labels));
        for (i, n) in cache.nodes.iter().enumerate() {
            if !candidates[i] {
                continue;
            }
            let count = n.domain(c.key).and_then(|d| domains.get(d).copied());
            candidates[i] = match count {
                Some(count) => count + own <= min + c.max_skew,
                // A node without the key, or one the pod's affinity excludes: not a domain.
                None => false,
            };
        }
    }
}

/// InterPodAffinity's filter. Required affinity: a pod that every term selects runs in the
/// node's domain of each term — or no such pod runs anywhere and the pod matches its own terms,
/// so the first of a group can start. Required anti-affinity, both ways: no pod the incoming
/// pod's term selects is in the node's domain, and no pod there has a term that selects the
/// incoming one. Terms look in the pod's own namespace; terminating pods count.
fn affinity_allows(cache: &mut Cache, pod: &PendingPod, candidates: &mut [bool]) {
    let ns = namespace(&pod.name);
    let all = |_: &NodeInfo| true;
    if !pod.affinity.is_empty() {
        let selectors: Vec<LabelSelector> =
            pod.affinity.iter().map(|t| t.selector.clone()).collect();
        let per_node = cache.counts(ns, &selectors, true).to_vec();
        let first_of_group =
            per_node.iter().all(|&c| c == 0) && selectors.iter().all(|s| s.matches(&pod.labels));
        if !first_of_group {
            for t in &pod.affinity {
                let domains = cache.by_domain(t.key, &per_node, all);
                for (i, n) in cache.nodes.iter().enumerate() {
                    candidates[i] &= n
                        .domain(t.key)
                        .is_some_and(|d| domains.get(d).is_some_and(|&c| c > 0));
                }
            }
        }
    }
    for t in &pod.anti_affinity {
        let per_node = cache
            .counts(ns, std::slice::from_ref(&t.selector), true)
            .to_vec();
        let domains = cache.by_domain(t.key, &per_node, all);
        for (i, n) in cache.nodes.iter().enumerate() {
            candidates[i] &= n
                .domain(t.key)
                .is_none_or(|d| domains.get(d).is_none_or(|&c| c == 0));
        }
    }
    // Existing pods' anti-affinity: the domains where a pod whose term selects this one runs.
    let mut forbidden: std::collections::HashSet<(TopologyKey, &str)> = Default::default();
    for ((term_ns, term), nodes) in &cache.anti {
        if term_ns != ns || !term.selector.matches(&pod.labels) {
            continue;
        }
        for &at in nodes {
            if let Some(d) = cache.nodes[at].domain(term.key) {
                forbidden.insert((term.key, d));
            }
        }
    }
    if !forbidden.is_empty() {
        for (i, n) in cache.nodes.iter().enumerate() {
            candidates[i] &= [TopologyKey::Hostname, TopologyKey::Zone]
                .into_iter()
                .all(|k| n.domain(k).is_none_or(|d| !forbidden.contains(&(k, d))));
        }
    }
}

impl World {
    /// The node kubelet registered, as it reports it: the instance type's allocatable (the EKS
    /// AMI's defaults, from the catalog) with the pod count its node class sets — kubelet's
    /// `maxPods`, capped by `podsPerCore` × cores when that is set.
    fn allocatable(&self, node: &crate::cluster::Node) -> Resources {
        let ty = &node.instance.offer.instance_type;
        let (mut a, cores) = self.kubelet.get(ty).copied().unwrap_or_default();
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
        if let Some(kubelet) = class.as_ref().and_then(|c| c.get("kubelet")) {
            if let Some(max) = kubelet.get("maxPods").and_then(|v| v.as_u64()) {
                a.pods = max as u32;
            }
            if let Some(per_core) = kubelet.get("podsPerCore").and_then(|v| v.as_u64())
                && per_core > 0
            {
                a.pods = a.pods.min((per_core * u64::from(cores)) as u32);
            }
        }
        a
    }

    /// The scheduler's cache now: registered nodes and the pods on them.
    fn cache(&self) -> Cache {
        let overhead = self
            .daemonsets
            .values()
            .fold(crate::scheduling::model::zero(), |a, r| {
                crate::scheduling::model::add(&a, r)
            });
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut nodes = Vec::new();
        for n in self
            .cluster
            .nodes
            .values()
            .filter(|n| n.lifecycle.joined.is_some())
        {
            index.insert(&n.name, nodes.len());
            nodes.push(NodeInfo {
                name: n.name.clone(),
                zone: n
                    .labels
                    .iter()
                    .find(|(k, _)| k == labels::ZONE)
                    .map(|(_, v)| v.clone()),
                labels: n.labels.clone(),
                taints: n.taints.clone(),
                allocatable: self.allocatable(n),
                requested: Resources {
                    pods: self.daemonsets.len() as u32,
                    ..overhead
                },
                ready: n.ready_at.is_some(),
            });
        }
        let mut cache = Cache {
            nodes,
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

/// The node a pod binds to: the highest-scoring node among those that pass every filter.
fn pick(cache: &mut Cache, pod: &PendingPod) -> Option<usize> {
    let mut candidates: Vec<bool> = cache
        .nodes
        .iter()
        .map(|n| {
            n.ready
                && fits(&pod.requests, n)
                && tolerated(pod, n)
                && node_affinity_allows(pod, &n.labels)
        })
        .collect();
    if !candidates.iter().any(|&c| c) {
        return None;
    }
    if !pod.spread.is_empty() {
        spread_allows(cache, pod, &mut candidates);
    }
    if !pod.affinity.is_empty() || !pod.anti_affinity.is_empty() || !cache.anti.is_empty() {
        affinity_allows(cache, pod, &mut candidates);
    }
    // Filtering stops once enough feasible nodes are found, starting where the last pod's
    // search stopped (findNodesThatPassFilters, `nextStartNodeIndex`).
    let n = cache.nodes.len();
    let wanted = feasible_to_find(n);
    let (mut found, mut examined) = (Vec::new(), n);
    for k in 0..n {
        let i = (cache.next_start + k) % n;
        if candidates[i] {
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

    const GIB: u64 = 1 << 30;

    /// A world whose nodes (name, zone, CPU millis) are registered and Ready, each of its own
    /// instance type with that much CPU, 4 GiB and 10 pods allocatable.
    fn world(nodes: &[(&str, &str, u64)]) -> World {
        let mut w = World::new(&super::super::SimOptions::default());
        for &(name, zone, cpu) in nodes {
            let mut n = Node::example(name);
            n.instance.offer.instance_type = format!("t-{name}");
            n.labels = vec![(labels::ZONE.to_string(), zone.to_string())];
            n.lifecycle.joined = Some(Joined {
                node: name.into(),
                ready: true,
                startup_taints_left: false,
                deleting: false,
            });
            let allocatable = Resources {
                cpu_millis: cpu,
                memory_bytes: 4 * GIB,
                ephemeral_storage_bytes: 10 * GIB,
                pods: 10,
                gpus: 0,
            };
            w.kubelet.insert(format!("t-{name}"), (allocatable, 2));
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
        let mut w = world(&[("a", "z1", 1000), ("b", "z1", 4000)]);
        w.cluster.nodes.get_mut("b").unwrap().ready_at = None;
        w.create_pod(pod("p1", "x", 700), None, false);
        w.create_pod(pod("p2", "x", 700), None, false);
        w.schedule();
        assert_eq!(node_of(&w, "p1"), Some("a"));
        assert_eq!(node_of(&w, "p2"), None, "a is full and b is not Ready");
        assert!(w.cluster.pods["default/p2"].node.is_none());
        // NodeResourcesFit counts pods: a node of 10 holding 10 takes no 11th, however small.
        let mut w = world(&[("a", "z1", 4000)]);
        for i in 0..11 {
            w.create_pod(pod(&format!("q{i:02}"), "x", 1), None, false);
        }
        w.schedule();
        assert_eq!(node_of(&w, "q09"), Some("a"));
        assert_eq!(node_of(&w, "q10"), None);
    }

    #[test]
    fn pods_spread_over_equal_nodes_by_least_allocated_whatever_the_nomination() {
        let mut w = world(&[("a", "z1", 2000), ("b", "z1", 2000)]);
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
        let nodes: Vec<(&str, &str, u64)> =
            names.iter().map(|n| (n.as_str(), "z1", 1000)).collect();
        let mut w = world(&nodes);
        w.create_pod(pod("p1", "x", 100), None, false);
        w.create_pod(pod("p2", "x", 100), None, false);
        w.schedule();
        assert_eq!(node_of(&w, "p1"), Some("n000"));
        assert_eq!(node_of(&w, "p2"), Some("n144"));
    }

    #[test]
    fn higher_priority_pods_are_placed_first() {
        let mut w = world(&[("a", "z1", 1000)]);
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
        let mut w = world(&[("a", "z1", 2000)]);
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
        let mut w = world(&[("a", "z1", 4000), ("b", "z1", 4000), ("c", "z1", 100)]);
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
        w.cluster
            .pods
            .get_mut("default/w2")
            .unwrap()
            .spec
            .node_terms = vec![only_z1];
        w.schedule();
        assert_eq!(node_of(&w, "w2"), Some("a"));
    }

    #[test]
    fn anti_affinity_holds_both_ways_and_affinity_lets_a_group_start() {
        let mut w = world(&[("a", "z1", 4000), ("b", "z2", 4000)]);
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
        let mut w = world(&[("a", "z1", 1000)]);
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
