//! The fleet at one moment — per node, per NodePool and for the cluster: the one calculation of
//! utilization and cost that `simulate`'s summary, its HTML report and `dovetail top` all read,
//! so no two of them can disagree about what a node costs or how full it is.

use std::collections::HashMap;

use crate::capacity::Resources;
use crate::cluster::Cluster;
use crate::controller::reason_label;
use crate::scheduling::InstanceTypes;
use crate::scheduling::cost::Shapes;
use crate::scheduling::model::{add, capacity_type_label, zero};

/// One node as an operator reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub name: String,
    pub node_pool: String,
    pub instance_type: String,
    pub capacity_type: &'static str,
    pub zone: String,
    /// Seconds since launch.
    pub age_secs: i64,
    /// Its kubelet reports Ready (otherwise the node is still in flight).
    pub ready: bool,
    /// Pods bound or nominated to it, plus its NodePool's DaemonSet overhead.
    pub requested: Resources,
    pub allocatable: Resources,
    pub pods: usize,
    /// USD per hour.
    pub price: f64,
    /// Set while the node is going away.
    pub disrupting: Option<Disrupting>,
}

/// Why a node is going away, and who decided it.
#[derive(Debug, Clone, PartialEq)]
pub struct Disrupting {
    /// `empty`, `underutilized`, `drifted`, `expired`, or `deleted` (by hand, by the cloud, by an
    /// interruption).
    pub reason: &'static str,
    /// The consolidation policy whose move it was, when one chose it.
    pub policy: Option<String>,
    pub since_secs: i64,
}

/// A NodeClaim whose node is not Ready yet: created, or launched and booting.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimView {
    pub name: String,
    pub node_pool: String,
    /// What it launched as, or its best offer while not launched.
    pub instance_type: String,
    pub launched: bool,
    /// Seconds since launch (0 before).
    pub age_secs: i64,
}

/// One NodePool's totals.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolView {
    pub name: String,
    pub nodes: usize,
    pub pods: usize,
    pub requested: Resources,
    pub allocatable: Resources,
    /// USD per hour of its nodes.
    pub cost_per_hour: f64,
    /// The LP lower bound of the pods running on its nodes, USD per hour
    /// ([`Cluster::pool_bound`]); `None` when its types cannot hold them.
    pub bound_per_hour: Option<f64>,
}

/// The whole fleet at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetView {
    /// Unix seconds.
    pub now: i64,
    /// By name.
    pub nodes: Vec<NodeView>,
    /// In the cluster's NodePool order.
    pub pools: Vec<PoolView>,
    pub in_flight: Vec<ClaimView>,
    pub pods: usize,
    pub running: usize,
    /// Pods not running yet (Kubernetes' `Pending`): waiting for a node, or for theirs to be
    /// Ready.
    pub pending: usize,
    /// Of those, the pods no node holds yet.
    pub unplaced: usize,
    /// How long the longest-waiting pending pod has waited, seconds.
    pub oldest_pending_secs: Option<i64>,
    /// USD per hour of every node.
    pub cost_per_hour: f64,
    /// The sum of the pools' bounds; `None` when one of them has none.
    pub bound_per_hour: Option<f64>,
    /// One line per shadow candidate: how its answers compare with the serving policies'.
    pub shadows: Vec<String>,
}

impl Default for FleetView {
    fn default() -> Self {
        FleetView {
            now: 0,
            nodes: Vec::new(),
            pools: Vec::new(),
            in_flight: Vec::new(),
            pods: 0,
            running: 0,
            pending: 0,
            unplaced: 0,
            oldest_pending_secs: None,
            cost_per_hour: 0.0,
            bound_per_hour: Some(0.0),
            shadows: Vec::new(),
        }
    }
}

/// LP bounds already solved, by NodePool and the shapes of its running pods: a fleet sampled
/// every step solves one LP per pool only when what runs there changed.
#[derive(Debug, Default)]
pub struct BoundCache {
    solved: HashMap<(usize, Vec<u64>), Option<f64>>,
}

impl BoundCache {
    fn bound(
        &mut self,
        cluster: &Cluster,
        its: &InstanceTypes,
        pool: usize,
        shapes: &Shapes,
    ) -> Option<f64> {
        let key = (pool, shapes.key());
        if let Some(b) = self.solved.get(&key) {
            return *b;
        }
        // Pool specs change rarely; a cache that grew past any real run's needs starts over.
        if self.solved.len() > 4096 {
            self.solved.clear();
        }
        let b = cluster.pool_bound(its, pool, shapes);
        self.solved.insert(key, b);
        b
    }
}

impl FleetView {
    /// The fleet of `cluster` at Unix time `now`.
    pub fn of(cluster: &Cluster, its: &InstanceTypes, now: i64, cache: &mut BoundCache) -> Self {
        let by_node = cluster.pods_by_node();
        let mut pools: Vec<PoolView> = cluster
            .pools
            .iter()
            .map(|p| PoolView {
                name: p.spec.name.clone(),
                nodes: 0,
                pods: 0,
                requested: zero(),
                allocatable: zero(),
                cost_per_hour: 0.0,
                bound_per_hour: Some(0.0),
            })
            .collect();
        let mut nodes = Vec::with_capacity(cluster.nodes.len());
        let mut in_flight = Vec::new();
        for n in cluster.nodes.values() {
            let pool = cluster.pool_index(&n.instance.node_pool);
            let pods = by_node.get(n.name.as_str()).map_or(&[][..], Vec::as_slice);
            let view = NodeView::of(n, pods, cluster, its, now);
            if !view.ready {
                in_flight.push(ClaimView {
                    name: n.name.clone(),
                    node_pool: view.node_pool.clone(),
                    instance_type: view.instance_type.clone(),
                    launched: true,
                    age_secs: view.age_secs,
                });
            }
            if let Some(i) = pool {
                let p = &mut pools[i];
                p.nodes += 1;
                p.pods += view.pods;
                p.requested = add(&p.requested, &view.requested);
                p.allocatable = add(&p.allocatable, &view.allocatable);
                p.cost_per_hour += view.price;
            }
            nodes.push(view);
        }
        for u in &cluster.unlaunched {
            in_flight.push(ClaimView {
                name: u.name.clone(),
                node_pool: u.node_pool.clone(),
                instance_type: u
                    .offers
                    .first()
                    .map_or(String::new(), |o| o.instance_type.clone()),
                launched: false,
                age_secs: 0,
            });
        }
        let running = cluster.running_shapes();
        let mut bound = Some(0.0);
        for (i, shapes) in running.iter().enumerate() {
            let b = if shapes.is_empty() {
                Some(0.0)
            } else {
                cache.bound(cluster, its, i, shapes)
            };
            pools[i].bound_per_hour = b;
            bound = bound.zip(b).map(|(a, b)| a + b);
        }
        let pending: Vec<i64> = cluster
            .pods
            .values()
            .filter(|p| p.running_since.is_none())
            .map(|p| (now - p.created_at).max(0))
            .collect();
        FleetView {
            now,
            cost_per_hour: nodes.iter().map(|n| n.price).sum(),
            nodes,
            pools,
            in_flight,
            pods: cluster.pods.len(),
            running: cluster
                .pods
                .values()
                .filter(|p| p.running_since.is_some())
                .count(),
            pending: pending.len(),
            unplaced: cluster.pods.values().filter(|p| p.node.is_none()).count(),
            oldest_pending_secs: pending.iter().copied().max(),
            bound_per_hour: bound,
            shadows: Vec::new(),
        }
    }
}

impl NodeView {
    /// A node with its pods (bound or nominated), its pool's DaemonSet overhead and the room its
    /// pool's settings give it.
    fn of(
        n: &crate::cluster::Node,
        pods: &[&crate::cluster::Pod],
        cluster: &Cluster,
        its: &InstanceTypes,
        now: i64,
    ) -> NodeView {
        let pool = cluster.pool_index(&n.instance.node_pool);
        let overhead = pool.map_or(zero(), |i| cluster.pools[i].spec.daemonset_overhead);
        let requested = pods.iter().fold(overhead, |r, p| add(&r, &p.spec.requests));
        let allocatable = its.types.get(n.type_index as usize).map_or(zero(), |t| {
            pool.map_or(t.allocatable, |i| cluster.pools[i].spec.allocatable(t))
        });
        let offer = &n.instance.offer;
        NodeView {
            name: n.name.clone(),
            node_pool: n.instance.node_pool.clone(),
            instance_type: offer.instance_type.clone(),
            capacity_type: capacity_type_label(offer.capacity_type),
            zone: offer.zone.clone(),
            age_secs: (now - n.launched_at).max(0),
            ready: n.ready_at.is_some(),
            requested,
            allocatable,
            pods: pods.len(),
            price: offer.price,
            disrupting: n.deletion.as_ref().map(|d| Disrupting {
                reason: d.reason.map_or("deleted", reason_label),
                policy: d.policy.clone(),
                since_secs: (now - d.since).max(0),
            }),
        }
    }
}

impl FleetView {
    /// The same fleet `secs` later with nothing changed: every age grows (a replay between two
    /// recorded moments).
    pub fn later(&self, secs: i64) -> FleetView {
        let mut f = self.clone();
        f.now += secs;
        for n in &mut f.nodes {
            n.age_secs += secs;
            if let Some(d) = &mut n.disrupting {
                d.since_secs += secs;
            }
        }
        for c in f.in_flight.iter_mut().filter(|c| c.launched) {
            c.age_secs += secs;
        }
        if let Some(w) = &mut f.oldest_pending_secs {
            *w += secs;
        }
        f
    }

    /// Node counts by (instance type, capacity type).
    pub fn by_type(&self) -> std::collections::BTreeMap<(String, &'static str), TypeTotals> {
        let mut out: std::collections::BTreeMap<(String, &'static str), TypeTotals> =
            Default::default();
        for n in &self.nodes {
            let e = out
                .entry((n.instance_type.clone(), n.capacity_type))
                .or_default();
            e.nodes += 1;
            e.pods += n.pods;
            e.cost_per_hour += n.price;
        }
        out
    }

    /// Nodes being disrupted, by reason.
    pub fn disrupting(&self) -> impl Iterator<Item = (&NodeView, &Disrupting)> {
        self.nodes
            .iter()
            .filter_map(|n| n.disrupting.as_ref().map(|d| (n, d)))
    }
}

/// What the nodes of one instance type and capacity type add up to.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TypeTotals {
    pub nodes: usize,
    pub pods: usize,
    pub cost_per_hour: f64,
}

/// `used` over `of`, 0 when there is nothing to use.
pub fn share(used: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        used as f64 / of as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::CapacityType;
    use crate::cloud::{Instance, Offer};
    use crate::cluster::DisruptionReason;
    use crate::cluster::{Deletion, Node, Pod};
    use crate::scheduling::model::PendingPod;

    fn node(name: &str, ty: u32, its: &InstanceTypes, price: f64, ready: bool) -> Node {
        Node {
            name: name.into(),
            instance: Instance {
                id: format!("i-{name}"),
                claim: name.into(),
                node_pool: "default".into(),
                offer: Offer {
                    instance_type: its.types[ty as usize].name.clone(),
                    zone: "us-east-1a".into(),
                    capacity_type: CapacityType::Spot,
                    price,
                },
            },
            type_index: ty,
            zone_index: 0,
            labels: vec![],
            taints: vec![],
            launched_at: 100,
            ready_at: ready.then_some(140),
            last_pod_change: 100,
            template_hash: 0,
            do_not_disrupt: false,
            deletion: None,
            terminating: Default::default(),
            attached: Default::default(),
            lifecycle: Default::default(),
        }
    }

    fn pod(name: &str, node: Option<&str>, cpu: u64, running: bool) -> Pod {
        Pod {
            spec: PendingPod::new(name, &[], cpu, 1 << 30).into(),
            owner: None,
            created_at: 50,
            node: node.map(Into::into),
            running_since: running.then_some(140),
            ready: running,
            do_not_disrupt: false,
        }
    }

    fn world() -> (Cluster, InstanceTypes) {
        let entries = crate::catalog::embedded();
        let catalog = crate::catalog::policy_catalog(&entries, &["us-east-1a"]);
        let its = InstanceTypes::new(&entries, &catalog);
        let resource: crate::api::NodePool = serde_json::from_value(serde_json::json!({
            "apiVersion": "dovetail.sh/v1", "kind": "NodePool", "metadata": {"name": "default"},
            "spec": {"template": {"spec": {"requirements": [],
                "nodeClassRef": {"group": "aws.dovetail.sh", "kind": "EC2NodeClass", "name": "default"}}}}
        }))
        .unwrap();
        let mut cluster = Cluster::default();
        cluster.pools.push(crate::provisioning::Pool {
            resource,
            spec: crate::scheduling::NodePoolSpec::new("default", Default::default()),
        });
        (cluster, its)
    }

    #[test]
    fn a_node_is_requested_what_its_pods_and_daemonsets_ask_and_costs_its_price() {
        let (mut cluster, its) = world();
        cluster.pools[0].spec.daemonset_overhead.cpu_millis = 100;
        let ty = its
            .types
            .iter()
            .position(|t| t.name == "m7g.large")
            .unwrap() as u32;
        cluster
            .nodes
            .insert("a".into(), node("a", ty, &its, 0.05, true));
        let mut b = node("b", ty, &its, 0.03, false);
        b.deletion = Some(Deletion {
            reason: Some(DisruptionReason::Underutilized),
            since: 190,
            replacement: None,
            policy: Some("least-waste".into()),
        });
        cluster.nodes.insert("b".into(), b);
        for (p, n, cpu, run) in [
            ("ns/p1", Some("a"), 500, true),
            ("ns/p2", Some("a"), 250, true),
            ("ns/p3", Some("b"), 1000, false),
            ("ns/p4", None, 100, false),
        ] {
            cluster.pods.insert(p.into(), pod(p, n, cpu, run));
        }
        let f = FleetView::of(&cluster, &its, 200, &mut BoundCache::default());
        assert_eq!(f.nodes.len(), 2);
        assert_eq!(f.nodes[0].requested.cpu_millis, 850);
        assert_eq!(f.nodes[0].pods, 2);
        assert_eq!(f.nodes[0].age_secs, 100);
        assert_eq!(
            f.nodes[0].allocatable, its.types[ty as usize].allocatable,
            "allocatable comes from the type"
        );
        assert!((f.cost_per_hour - 0.08).abs() < 1e-12);
        assert!((f.pools[0].cost_per_hour - 0.08).abs() < 1e-12);
        assert_eq!(f.pools[0].requested.cpu_millis, 850 + 1100);
        assert_eq!((f.pending, f.unplaced, f.running, f.pods), (2, 1, 2, 4));
        assert_eq!(f.oldest_pending_secs, Some(150));
        assert_eq!(f.in_flight.len(), 1, "b is not Ready");
        let (n, d) = f.disrupting().next().unwrap();
        assert_eq!(
            (n.name.as_str(), d.reason, d.policy.as_deref(), d.since_secs),
            ("b", "underutilized", Some("least-waste"), 10)
        );
        // Only running pods count towards the bound, and it is the cluster's own figure.
        assert_eq!(f.bound_per_hour, cluster.running_bound(&its));
        assert!(f.bound_per_hour.unwrap() > 0.0);
        let by_type = f.by_type();
        assert_eq!(by_type[&("m7g.large".to_string(), "spot")].nodes, 2);
    }
}
