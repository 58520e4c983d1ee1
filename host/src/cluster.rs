//! The cache of what is: nodes (in flight or Ready), pods, NodePools and PodDisruptionBudgets.
//! The simulator feeds it (kube reflectors will, in a cluster); provisioning and disruption read
//! it as one consistent snapshot and never change it behind each other's back.

use std::collections::{BTreeMap, BTreeSet};

pub mod consolidation;
pub mod pdb;
mod volumes;
pub use volumes::Volumes;

use crate::cloud::Instance;
use crate::scheduling::cost;
use crate::scheduling::model::{
    ExistingNode, LabelSelector, PendingPod, Taint, TaintEffect, add, labels, zero,
};
use crate::scheduling::{InstanceTypes, NodePoolSpec};

/// Pods and nodes with this annotation set to `"true"` are never disrupted voluntarily.
pub const DO_NOT_DISRUPT: &str = "dovetail.sh/do-not-disrupt";
/// The taint a node gets once it is chosen for disruption, so nothing new lands on it.
pub const DISRUPTED_TAINT: &str = "dovetail.sh/disrupted";

/// The `dovetail.sh/disrupted:NoSchedule` taint.
pub fn disrupted_taint() -> Taint {
    Taint {
        key: DISRUPTED_TAINT.into(),
        value: String::new(),
        effect: TaintEffect::NoSchedule,
    }
}

/// Why a node is a candidate for disruption (each is a reason label of Karpenter's metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DisruptionReason {
    /// No pods other than daemonsets.
    Empty,
    /// Its pods fit elsewhere, or elsewhere plus one cheaper node.
    Underutilized,
    /// Its NodePool or node class no longer describes it.
    Drifted,
    /// Older than the NodePool's `expireAfter`.
    Expired,
}

/// A node (one NodeClaim and its instance).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Node name; the NodeClaim's name too.
    pub name: String,
    pub instance: Instance,
    /// Index of its instance type in the round's [`InstanceTypes`].
    pub type_index: u32,
    /// Index of its zone among the round's zones.
    pub zone_index: u32,
    pub labels: Vec<(String, String)>,
    pub taints: Vec<Taint>,
    pub launched_at: i64,
    /// `None` while in flight (launched, not yet Ready).
    pub ready_at: Option<i64>,
    /// When a pod last arrived or left: `consolidateAfter` counts from here.
    pub last_pod_change: i64,
    /// Hash of the NodePool template it was launched from: a different hash now means drift.
    pub template_hash: u64,
    pub do_not_disrupt: bool,
    /// Set once the node is being disrupted or deleted.
    pub deletion: Option<Deletion>,
    /// Pods on it that were asked to go (evicted or deleted: `deletionTimestamp` set) and are
    /// still shutting down — grace period, preStop hooks. Its instance is not terminated while
    /// any is left (unless the NodePool's `terminationGracePeriod` forces it).
    pub terminating: BTreeSet<String>,
    /// PersistentVolumes still attached to it (VolumeAttachments naming it). After its drain
    /// the instance waits for them to detach, as Karpenter does, so a volume is not cut off
    /// while its data is flushed (unless `terminationGracePeriod` forces it).
    pub attached: BTreeSet<String>,
    /// How far its NodeClaim has come since launch: what [`crate::lifecycle`] decides from.
    pub lifecycle: Lifecycle,
}

/// A launched claim's way into the cluster, as the world shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lifecycle {
    /// The Node object kubelet registered for the claim's instance (same providerID), if any.
    pub joined: Option<Joined>,
    /// The claim's Registered condition is True: its Node was adopted.
    pub registered: bool,
    /// The claim's Initialized condition is True.
    pub initialized: bool,
    /// When its launch was recorded (the Launched condition's time), if the world says: the
    /// registration TTL counts from here, not from the claim's creation — a launch resumed
    /// after an outage gets its full TTL. Otherwise the node's `launched_at`.
    pub launched: Option<i64>,
}

/// What the Node object of a claim says.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    /// The Node's name (in a cluster, not the claim's: EC2 names it).
    pub node: String,
    /// Its Ready condition is True.
    pub ready: bool,
    /// One of the claim's startup taints is still on it.
    pub startup_taints_left: bool,
    /// It has a deletionTimestamp.
    pub deleting: bool,
}

#[cfg(test)]
impl Node {
    /// A Ready on-demand m5.large of pool `default`, instance `i-<name>`, launched at 0.
    pub fn example(name: &str) -> Node {
        Node {
            name: name.into(),
            instance: crate::cloud::Instance {
                id: format!("i-{name}"),
                claim: name.into(),
                node_pool: "default".into(),
                offer: crate::cloud::Offer {
                    instance_type: "m5.large".into(),
                    zone: "us-east-1a".into(),
                    capacity_type: crate::capacity::CapacityType::OnDemand,
                    price: 0.096,
                },
            },
            type_index: 0,
            zone_index: 0,
            labels: Vec::new(),
            taints: Vec::new(),
            launched_at: 0,
            ready_at: Some(0),
            last_pod_change: 0,
            template_hash: 0,
            do_not_disrupt: false,
            deletion: None,
            terminating: Default::default(),
            attached: Default::default(),
            lifecycle: Lifecycle::default(),
        }
    }
}

/// Why and since when a node is going away.
#[derive(Debug, Clone, PartialEq)]
pub struct Deletion {
    /// `None`: deleted by hand (or by the cloud), not by a disruption decision.
    pub reason: Option<DisruptionReason>,
    pub since: i64,
    /// Replacement node that must be Ready before this one is drained.
    pub replacement: Option<String>,
    /// The consolidation policy whose move it is (what `top` shows beside the reason).
    pub policy: Option<String>,
}

impl Deletion {
    /// Deleted by hand (or by the cloud, or with its NodePool), not by a disruption decision.
    pub fn by_hand(since: i64) -> Deletion {
        Deletion {
            reason: None,
            since,
            replacement: None,
            policy: None,
        }
    }
}

/// A pod and where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Pod {
    /// Shared with the pod cache: a snapshot of 100,000 pods copies none of their specs.
    pub spec: std::sync::Arc<PendingPod>,
    /// Its controller (`namespace/deployment`); `None` for a bare pod, which nothing recreates.
    pub owner: Option<String>,
    pub created_at: i64,
    /// Bound (node Ready) or nominated (node in flight) to this node.
    pub node: Option<String>,
    /// When it started running on a Ready node.
    pub running_since: Option<i64>,
    /// Its Ready condition: what a PodDisruptionBudget counts as healthy.
    pub ready: bool,
    pub do_not_disrupt: bool,
}

/// A count or a percentage (`maxUnavailable: 1`, `"10%"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum IntOrPercent {
    Count(u32),
    Percent(u32),
}

impl IntOrPercent {
    /// Parses `3` or `"25%"`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.strip_suffix('%') {
            Some(p) => p
                .trim()
                .parse()
                .map(IntOrPercent::Percent)
                .map_err(|_| format!("{s:?} is not a percentage")),
            None => s
                .trim()
                .parse()
                .map(IntOrPercent::Count)
                .map_err(|_| format!("{s:?} is not a count or a percentage")),
        }
    }

    /// The value scaled against `total`, percentages rounded up (as Kubernetes and Karpenter do).
    pub fn of(self, total: u32) -> u32 {
        match self {
            IntOrPercent::Count(n) => n,
            IntOrPercent::Percent(p) => (u64::from(total) * u64::from(p)).div_ceil(100) as u32,
        }
    }
}

/// A PodDisruptionBudget: its spec, and the status kube-controller-manager's disruption
/// controller keeps — the figures the Eviction API decides with, so the ones decisions read
/// (the host never computes a budget's allowance itself).
#[derive(Debug, Clone, PartialEq)]
pub struct Pdb {
    pub name: String,
    pub namespace: String,
    pub selector: LabelSelector,
    pub min_available: Option<IntOrPercent>,
    pub max_unavailable: Option<IntOrPercent>,
    /// `spec.unhealthyPodEvictionPolicy`: `AlwaysAllow`, else `IfHealthyBudget` (the default).
    pub always_allow_unhealthy: bool,
    /// The status kube-controller-manager last wrote; `None` before its first.
    pub status: Option<PdbStatus>,
}

/// `PodDisruptionBudgetStatus` as kube-controller-manager writes it (`pkg/controller/disruption`):
/// healthy pods are the Ready ones not being deleted; expected pods come from the owning
/// workloads' scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PdbStatus {
    /// It describes the current spec (`observedGeneration` ≥ `generation`); until it does, the
    /// Eviction API answers 429 ("still being processed") for a Ready pod.
    pub observed: bool,
    pub disruptions_allowed: u32,
    pub current_healthy: u32,
    pub desired_healthy: u32,
    pub expected_pods: u32,
}

impl Pdb {
    /// Whether the budget covers a pod.
    pub fn selects(&self, pod: &Pod) -> bool {
        namespace(&pod.spec.name) == self.namespace && self.selector.matches(&pod.spec.labels)
    }
}

/// What the Eviction API would answer for a pod now.
#[derive(Debug, Clone, PartialEq)]
pub enum Eviction {
    /// No budget is consulted or spent (no budget covers it, it is not running yet, or it is
    /// not Ready and its budget lets unhealthy pods go).
    Free,
    /// Allowed, spending one of the budget's (by index) disruptions.
    Spends(usize),
    /// Refused (429, or 500 for a pod two budgets cover): why, in the API's terms.
    Refused(String),
}

/// A NodeClaim object with no instance recorded yet: a controller that stopped between creating
/// it and launching. Launching it again is safe (the provider finds an instance already tagged
/// with the claim's name).
#[derive(Debug, Clone, PartialEq)]
pub struct UnlaunchedClaim {
    pub name: String,
    pub node_pool: String,
    /// Its ranked offers, best first.
    pub offers: Vec<crate::cloud::Offer>,
}

/// A NodePool: the resource (for its policies) and its simulation view.
#[derive(Debug, Clone)]
pub struct Pool {
    pub resource: crate::api::NodePool,
    pub spec: NodePoolSpec,
}

/// Everything the controllers know.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    pub nodes: BTreeMap<String, Node>,
    pub pods: BTreeMap<String, Pod>,
    pub pools: Vec<Pool>,
    pub pdbs: Vec<Pdb>,
    /// EC2NodeClass specs by name, as JSON: a change drifts the nodes launched from them.
    pub node_classes: BTreeMap<String, String>,
    /// NodeClaims created but not launched (only after a restart in a cluster).
    pub unlaunched: Vec<UnlaunchedClaim>,
    /// Where PersistentVolumeClaims let their pods run.
    pub volumes: Volumes,
}

impl Cluster {
    /// Gives each NodePool what its EC2NodeClass changes about its nodes' allocatable (kubelet,
    /// root volume); a pool whose class is missing or unreadable keeps the AMI's defaults (the
    /// class's own status says why).
    pub fn apply_node_classes(&mut self) {
        for p in &mut self.pools {
            let class = &p.resource.spec.template.spec.node_class_ref.name;
            p.spec.node = self
                .node_classes
                .get(class)
                .and_then(|json| {
                    serde_json::from_str::<crate::api::ec2nodeclass::EC2NodeClassSpec>(json).ok()
                })
                .and_then(|spec| crate::scheduling::from_kube::node_settings(class, &spec).ok())
                .filter(|s| *s != Default::default());
        }
    }

    /// Index of a NodePool by name.
    pub fn pool_index(&self, name: &str) -> Option<usize> {
        self.pools.iter().position(|p| p.spec.name == name)
    }

    /// A pod nominated to a node, as the snapshot shows it until the next one is taken: on
    /// the node, whose pods changed now (as [`crate::snapshot::PodChanges`] will date them),
    /// so that a later decision of the same tick does not take the node for one long still.
    /// Every world's [`crate::controller::ClusterPort::nominate`] applies it.
    pub fn nominate(&mut self, pod: &str, node: &str, now: i64) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.last_pod_change = now;
        }
        if let Some(p) = self.pods.get_mut(pod) {
            p.node = Some(node.to_string());
        }
    }

    /// Pods no node holds, in name order.
    pub fn pending(&self) -> Vec<&Pod> {
        self.pods.values().filter(|p| p.node.is_none()).collect()
    }

    /// Pods bound or nominated to a node.
    pub fn pods_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Pod> + 'a {
        self.pods
            .values()
            .filter(move |p| p.node.as_deref() == Some(node))
    }

    /// Pods on each node, in one pass.
    pub fn pods_by_node(&self) -> BTreeMap<&str, Vec<&Pod>> {
        let mut out: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
        for p in self.pods.values() {
            if let Some(n) = &p.node {
                out.entry(n.as_str()).or_default().push(p);
            }
        }
        out
    }

    /// The NodePools as the simulation sees them, with capacity in use counted from their nodes.
    pub fn pool_specs(&self, its: &InstanceTypes) -> Vec<NodePoolSpec> {
        let mut specs: Vec<NodePoolSpec> = self.pools.iter().map(|p| p.spec.clone()).collect();
        for n in self.nodes.values() {
            if let Some(i) = self.pool_index(&n.instance.node_pool) {
                let (cpu, mem) = its.types[n.type_index as usize].capacity;
                specs[i].in_use.cpu_millis += cpu;
                specs[i].in_use.memory_bytes += mem;
            }
        }
        specs
    }

    /// The LP lower bound of what runs, USD per hour: per NodePool, the pods running on its
    /// nodes, each on a node of a type it fits, priced as the cheapest fractional fleet of the
    /// pool's types would hold them ([`cost::fitting_lower_bound`], DaemonSet overhead paid per
    /// node), summed. The summary prints it beside the real cost so a user sees how close a
    /// NodePool and its policy get. `None` when some pool's types cannot hold its pods at all.
    pub fn running_bound(&self, its: &InstanceTypes) -> Option<f64> {
        let mut total = 0.0;
        for (i, shapes) in self.running_shapes().iter().enumerate() {
            if !shapes.is_empty() {
                total += self.pool_bound(its, i, shapes)?;
            }
        }
        Some(total)
    }

    /// The same with each resource pooled over the fleet ([`cost::lower_bound`]): lower, as it
    /// may buy CPU and memory from types no pod could use together. Printed beside the other
    /// so a figure can be compared with one measured against it.
    pub fn pooled_running_bound(&self, its: &InstanceTypes) -> Option<f64> {
        let mut total = 0.0;
        for (i, shapes) in self.running_shapes().iter().enumerate() {
            if !shapes.is_empty() {
                total += cost::lower_bound(&self.pool_supplies(its, i), &shapes.demand())?.cost;
            }
        }
        Some(total)
    }

    /// The pods running on each NodePool's nodes, by shape, by pool index.
    pub fn running_shapes(&self) -> Vec<cost::Shapes> {
        let mut shapes = vec![cost::Shapes::default(); self.pools.len()];
        for p in self.pods.values() {
            let (Some(node), Some(_)) = (&p.node, p.running_since) else {
                continue;
            };
            let Some(i) = self
                .nodes
                .get(node)
                .and_then(|n| self.pool_index(&n.instance.node_pool))
            else {
                continue;
            };
            shapes[i].add(&cost::amount(&p.spec.requests));
        }
        shapes
    }

    /// The LP lower bound of `shapes` on pool `pool`'s instance types, each pod on a node it
    /// fits, USD per hour; pooled over the fleet when some running pod fits none of the types
    /// the pool now admits (its requirements narrowed under it).
    pub fn pool_bound(
        &self,
        its: &InstanceTypes,
        pool: usize,
        shapes: &cost::Shapes,
    ) -> Option<f64> {
        let supplies = self.pool_supplies(its, pool);
        cost::fitting_lower_bound(&supplies, shapes, 0.0, |_, _| f64::INFINITY)
            .or_else(|| Some(cost::lower_bound(&supplies, &shapes.demand())?.cost))
    }

    /// What a node of each of pool `pool`'s types holds for pods, at its cheapest offering.
    fn pool_supplies(&self, its: &InstanceTypes, pool: usize) -> Vec<cost::Supply> {
        let spec = &self.pools[pool].spec;
        let reqs = &spec.requirements;
        cost::supplies(
            its,
            &its.admitted_by(reqs),
            reqs,
            &spec.daemonset_overhead,
            spec.node.as_ref(),
        )
    }

    /// The nodes new pods may go on (not being deleted, not excluded), as the simulation sees
    /// them, and their names in the same order.
    pub fn schedulable_nodes(
        &self,
        its: &InstanceTypes,
        exclude: impl Fn(&Node) -> bool,
    ) -> (Vec<ExistingNode>, Vec<String>) {
        let by_node = self.pods_by_node();
        let mut nodes = Vec::new();
        let mut names = Vec::new();
        for n in self.nodes.values() {
            if n.deletion.is_some() || exclude(n) {
                continue;
            }
            let pool = self.pool_index(&n.instance.node_pool);
            let pods = by_node.get(n.name.as_str()).map_or(&[][..], Vec::as_slice);
            let overhead = pool.map_or(zero(), |i| self.pools[i].spec.daemonset_overhead);
            let requested = pods.iter().fold(overhead, |r, p| add(&r, &p.spec.requests));
            nodes.push(ExistingNode {
                name: n.name.clone(),
                node_pool: pool,
                labels: n.labels.clone(),
                taints: n.taints.clone(),
                zone: n.zone_index,
                allocatable: pool.map_or(its.types[n.type_index as usize].allocatable, |i| {
                    self.pools[i]
                        .spec
                        .allocatable(&its.types[n.type_index as usize])
                }),
                requested,
                pods: pods
                    .iter()
                    .map(|p| (p.spec.name.clone(), p.spec.labels.clone()))
                    .collect(),
                repels: pods
                    .iter()
                    .flat_map(|p| {
                        let ns = p.spec.name.split_once('/').map_or("default", |s| s.0);
                        p.spec
                            .anti_affinity
                            .iter()
                            .map(move |a| (ns.to_string(), a.clone()))
                    })
                    .collect(),
            });
            names.push(n.name.clone());
        }
        (nodes, names)
    }

    /// How many more pods each PDB lets go right now, by PDB index: its status's
    /// `disruptionsAllowed`, 0 while its status is not current.
    pub fn pdb_allowance(&self) -> Vec<u32> {
        self.pdbs
            .iter()
            .map(|b| {
                b.status
                    .filter(|s| s.observed)
                    .map_or(0, |s| s.disruptions_allowed)
            })
            .collect()
    }

    /// What the Eviction API would answer for `pod`, as the API server decides it
    /// (`pkg/registry/core/pod/storage/eviction.go`): a pod not yet running goes freely
    /// (`canIgnorePDB`); one two budgets cover is refused (500); a pod not Ready goes without
    /// spending its budget under `AlwaysAllow`, or under `IfHealthyBudget` while the budget has
    /// its desired healthy pods; otherwise the budget must have a disruption left in
    /// `allowance` (its status's, less what this pass already spent).
    pub fn eviction(&self, pod: &Pod, allowance: &[u32]) -> Eviction {
        if pod.running_since.is_none() {
            return Eviction::Free;
        }
        let covering: Vec<usize> = (0..self.pdbs.len())
            .filter(|&i| self.pdbs[i].selects(pod))
            .collect();
        let &[i] = covering.as_slice() else {
            if covering.is_empty() {
                return Eviction::Free;
            }
            let names: Vec<String> = covering
                .iter()
                .map(|&i| format!("{}/{}", self.pdbs[i].namespace, self.pdbs[i].name))
                .collect();
            return Eviction::Refused(format!(
                "pod {} is covered by more than one PodDisruptionBudget ({}), which the Eviction API refuses",
                pod.spec.name,
                names.join(", ")
            ));
        };
        let b = &self.pdbs[i];
        if !pod.ready {
            let healthy_budget = b
                .status
                .is_some_and(|s| s.current_healthy >= s.desired_healthy && s.desired_healthy > 0);
            if b.always_allow_unhealthy || healthy_budget {
                return Eviction::Free;
            }
        }
        match b.status.filter(|s| s.observed) {
            None => Eviction::Refused(format!(
                "PodDisruptionBudget {}/{} is still being processed by kube-controller-manager (pod {})",
                b.namespace, b.name, pod.spec.name
            )),
            Some(s) if allowance[i] == 0 => Eviction::Refused(format!(
                "PodDisruptionBudget {}/{} allows no disruption of pod {}: it needs {} healthy pods and has {}",
                b.namespace, b.name, pod.spec.name, s.desired_healthy, s.current_healthy
            )),
            Some(_) => Eviction::Spends(i),
        }
    }
}

/// The labels a node launched from an offering carries.
pub fn node_labels(
    its: &InstanceTypes,
    type_index: u32,
    zone: &str,
    capacity_type: &str,
    pool: &Pool,
    name: &str,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = labels::TYPE_KEYS
        .iter()
        .filter_map(|&k| {
            its.label(type_index, k)
                .map(|v| (k.to_string(), v.to_string()))
        })
        .collect();
    out.push((labels::ZONE.into(), zone.into()));
    out.push((labels::CAPACITY_TYPE.into(), capacity_type.into()));
    out.push((labels::NODEPOOL.into(), pool.spec.name.clone()));
    out.push((labels::HOSTNAME.into(), name.into()));
    for (k, v) in &pool.resource.spec.template.metadata.labels {
        out.push((k.clone(), v.clone()));
    }
    out
}

/// A hash of everything in a NodePool's template except its requirements (requirement drift is
/// judged on the node's labels instead, so widening them does not replace every node), and of
/// the spec of the node class it references. It is stored on every NodeClaim, so it must not
/// change unless the template does: SHA-256 over canonical JSON (keys sorted, no whitespace),
/// its first 8 bytes. [`HASH_VERSION`] names this scheme in the annotation.
pub fn template_hash(pool: &Pool, node_classes: &BTreeMap<String, String>) -> u64 {
    use sha2::{Digest, Sha256};
    let t = &pool.resource.spec.template;
    let form = serde_json::json!({
        "metadata": t.metadata,
        "nodeClassRef": t.spec.node_class_ref,
        "taints": t.spec.taints,
        "startupTaints": t.spec.startup_taints,
        "nodeClass": node_classes.get(&t.spec.node_class_ref.name),
    });
    let mut text = String::new();
    canonical(&form, &mut text);
    let digest = Sha256::digest(text.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// The version of [`template_hash`]'s scheme, written with it (`v1:…`): a later scheme is a
/// new version, and a claim with another version shows no evidence of drift.
pub const HASH_VERSION: &str = "v1";

/// The hash as the NodeClaim annotation holds it.
pub fn format_hash(hash: u64) -> String {
    format!("{HASH_VERSION}:{hash:016x}")
}

/// The hash back from the annotation; `None` for another scheme or garbage.
pub fn parse_hash(s: &str) -> Option<u64> {
    let (version, hex) = s.split_once(':')?;
    if version != HASH_VERSION || hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// JSON with object keys sorted at every level and no whitespace.
fn canonical(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&m[k], out);
            }
            out.push('}');
        }
        serde_json::Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// `namespace` of a `namespace/name`.
pub fn namespace(name: &str) -> &str {
    name.split_once('/').map_or("default", |(ns, _)| ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, app: &str, running: bool) -> Pod {
        Pod {
            spec: PendingPod::new(name, &[("app", app)], 100, 1 << 20).into(),
            owner: Some("default/web".into()),
            created_at: 0,
            node: running.then(|| "n1".to_string()),
            running_since: running.then_some(0),
            ready: running,
            do_not_disrupt: false,
        }
    }

    #[test]
    fn a_nominated_pod_is_on_its_node_whose_pods_changed_now() {
        let mut c = Cluster::default();
        let mut n = Node::example("n1");
        n.last_pod_change = 10;
        c.nodes.insert("n1".into(), n);
        c.pods.insert("p".into(), pod("p", "web", false));
        c.nominate("p", "n1", 50);
        assert_eq!(c.pods["p"].node.as_deref(), Some("n1"));
        assert_eq!(c.nodes["n1"].last_pod_change, 50);
        assert!(c.pending().is_empty());
    }

    fn pool_with(requirements: serde_json::Value, taints: serde_json::Value) -> Pool {
        let resource: crate::api::NodePool = serde_json::from_value(serde_json::json!({
            "apiVersion": "dovetail.sh/v1", "kind": "NodePool", "metadata": {"name": "default"},
            "spec": {"template": {
                "metadata": {"labels": {"team": "web"}},
                "spec": {"requirements": requirements, "taints": taints,
                         "nodeClassRef": {"group": "aws.dovetail.sh", "kind": "EC2NodeClass", "name": "default"}}}}
        }))
        .unwrap();
        Pool {
            resource,
            spec: crate::scheduling::NodePoolSpec::new("default", Default::default()),
        }
    }

    #[test]
    fn the_template_hash_is_pinned_so_an_upgrade_does_not_drift_the_fleet() {
        let classes = BTreeMap::from([(
            "default".to_string(),
            r#"{"amiFamily":"AL2023"}"#.to_string(),
        )]);
        let reqs = serde_json::json!([{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]);
        let pool = pool_with(reqs, serde_json::json!([]));
        let h = template_hash(&pool, &classes);
        // The scheme's output for this pool, recorded once: a change here re-hashes every
        // NodeClaim in every cluster, so it needs a new HASH_VERSION instead.
        assert_eq!(format_hash(h), "v1:bea2352c7037779f");
        assert_eq!(parse_hash(&format_hash(h)), Some(h));
        assert_eq!(parse_hash("12345"), None, "an older scheme is not compared");
        // Requirements do not count (label drift judges them); taints do.
        let wider = pool_with(serde_json::json!([]), serde_json::json!([]));
        assert_eq!(template_hash(&wider, &classes), h);
        let tainted = pool_with(
            serde_json::json!([]),
            serde_json::json!([{"key": "gpu", "value": "true", "effect": "NoSchedule"}]),
        );
        assert_ne!(template_hash(&tainted, &classes), h);
    }

    fn web_pdb(name: &str, status: Option<(u32, u32, u32)>) -> Pdb {
        Pdb {
            name: name.into(),
            namespace: "default".into(),
            selector: LabelSelector::labels(&[("app", "web")]),
            min_available: None,
            max_unavailable: Some(IntOrPercent::Count(1)),
            always_allow_unhealthy: false,
            status: status.map(|(allowed, current, desired)| PdbStatus {
                observed: true,
                disruptions_allowed: allowed,
                current_healthy: current,
                desired_healthy: desired,
                expected_pods: 3,
            }),
        }
    }

    #[test]
    fn an_eviction_is_judged_from_the_budgets_status_as_the_api_server_judges_it() {
        let mut c = Cluster::default();
        let running = pod("default/web-0", "web", true);
        let mut unready = pod("default/web-1", "web", true);
        unready.ready = false;
        let pending = pod("default/web-2", "web", false);
        // Allowed while the status has a disruption left; the allowance is what is spent.
        c.pdbs = vec![web_pdb("web", Some((1, 3, 2)))];
        assert_eq!(c.eviction(&running, &[1]), Eviction::Spends(0));
        let refused = c.eviction(&running, &[0]);
        assert!(
            matches!(&refused, Eviction::Refused(w) if w.contains("needs 2 healthy pods and has 3")),
            "{refused:?}"
        );
        // Not yet running: the budget is not consulted (canIgnorePDB).
        assert_eq!(c.eviction(&pending, &[0]), Eviction::Free);
        // Not Ready: free while the budget has its desired healthy pods (IfHealthyBudget)...
        assert_eq!(c.eviction(&unready, &[0]), Eviction::Free);
        // ...but not when it is short of them, unless the budget says AlwaysAllow.
        c.pdbs = vec![web_pdb("web", Some((0, 1, 2)))];
        assert!(matches!(c.eviction(&unready, &[0]), Eviction::Refused(_)));
        c.pdbs[0].always_allow_unhealthy = true;
        assert_eq!(c.eviction(&unready, &[0]), Eviction::Free);
        // A status that does not yet describe the spec refuses everything it covers.
        c.pdbs = vec![web_pdb("web", None)];
        assert_eq!(c.pdb_allowance(), vec![0]);
        assert!(
            matches!(c.eviction(&running, &[0]), Eviction::Refused(w) if w.contains("still being processed"))
        );
        // Two budgets over one pod: refused whatever both allow.
        c.pdbs = vec![web_pdb("a", Some((5, 3, 0))), web_pdb("b", Some((5, 3, 0)))];
        assert!(
            matches!(c.eviction(&running, &[5, 5]), Eviction::Refused(w) if w.contains("default/a, default/b"))
        );
    }

    #[test]
    fn percentages_round_up() {
        assert_eq!(IntOrPercent::parse("10%").unwrap().of(19), 2);
        assert_eq!(IntOrPercent::parse("10%").unwrap().of(20), 2);
        assert_eq!(IntOrPercent::parse("3").unwrap().of(20), 3);
        assert!(IntOrPercent::parse("ten").is_err());
    }
}
