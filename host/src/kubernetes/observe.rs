//! Observe: [`Observer::snapshot`] turns the objects the reflectors keep ([`super::stores`])
//! into the [`Cluster`] the controller core decides on, applying the core's snapshot rules
//! ([`crate::snapshot`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node as KubeNode;
use kube::{Resource, ResourceExt};

use super::stores::{Stores, stores_generation};
use super::{
    ANNOTATION_DISRUPTION, ANNOTATION_DISRUPTION_POLICY, ANNOTATION_HASH, ANNOTATION_OFFERS,
    ANNOTATION_REPLACEMENT, timestamp,
};
use crate::api::{NodeClaim, NodePool};
use crate::cloud::{Instance, Offer};
use crate::cluster::pdb::from_kube as pdb;
use crate::cluster::{Cluster, DO_NOT_DISRUPT, Deletion, Node, Pod, UnlaunchedClaim};
use crate::controller::{Context, Signal};
use crate::provisioning::Pool;
use crate::scheduling::from_kube::{daemonset_requests, node_pool};
use crate::scheduling::model::capacity_type;
use crate::scheduling::model::{Taint, TaintEffect, add, labels, zero};

/// A NodePool that cannot be used, and why: its Ready=False condition and Event.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolProblem {
    pub node_pool: String,
    pub reason: String,
}

/// What the observer remembers between snapshots: when each node's pods last changed (for
/// `consolidateAfter`), the pods seen pending (a new one opens a batch) and nominations.
#[derive(Debug, Default)]
pub struct Observer {
    /// When each node's pods last changed.
    pod_changes: crate::snapshot::PodChanges,
    pending: HashSet<String>,
    /// Pod → (NodeClaim, until when the nomination holds).
    pub nominated: HashMap<String, (String, i64)>,
    /// NodeClaim → when this process wrote its launch (the tick's writes flushed): until the
    /// cache shows the launch, the claim is neither launched again nor does a nomination to it
    /// end.
    pub launched: HashMap<String, i64>,
    /// PodDisruptionBudgets (name@resourceVersion) already reported as unreadable.
    unreadable: BTreeSet<String>,
    /// Pods seen without a node → when they were created.
    unbound: HashMap<String, i64>,
    /// Seconds from creation to bound on a node we launched, of pods bound since last taken.
    pub started: Vec<i64>,
    /// Objects seen last time, to signal changes.
    last_generation: u64,
}

/// How long after its creation a pod bound to a node not (yet) known is still looked at for its
/// startup duration.
const STARTUP_WAIT: i64 = 600;

impl Observer {
    /// The cluster as decisions see it, the signals since the last snapshot, and the NodePools
    /// that could not be used.
    pub fn snapshot(
        &mut self,
        stores: &Stores,
        ctx: &Context,
        now: i64,
    ) -> (Cluster, Vec<Signal>, Vec<PoolProblem>) {
        self.launched
            .retain(|_, at| crate::snapshot::launch_unseen(*at, now));
        let mut cluster = Cluster::default();
        let mut signals = Vec::new();
        let mut problems = Vec::new();

        Self::observe_pools(stores, &mut cluster, &mut problems);
        Self::observe_classes_and_volumes(stores, &mut cluster);
        self.observe_pdbs(stores, &mut cluster);
        let claim_of_node = self.observe_nodes(stores, ctx, &mut cluster, now);
        self.observe_pods(stores, &mut cluster, &claim_of_node, &mut signals, now);
        self.observe_pod_changes(&mut cluster, &mut signals, now);

        let generation = stores_generation(stores);
        if generation != self.last_generation {
            self.last_generation = generation;
            signals.push(Signal::Changed(now));
            signals.push(Signal::Kick(now));
        }
        tracing::debug!(
            nodes = cluster.nodes.len(),
            deleting = cluster
                .nodes
                .values()
                .filter(|n| n.deletion.is_some())
                .count(),
            pods = cluster.pods.len(),
            pdbs = cluster.pdbs.len(),
            "snapshot"
        );
        (cluster, signals, problems)
    }

    /// NodePools as decisions see them (with the DaemonSets' overhead); those that cannot be
    /// used are problems, with why.
    fn observe_pools(stores: &Stores, cluster: &mut Cluster, problems: &mut Vec<PoolProblem>) {
        // DaemonSet overhead: every node runs one of each.
        let mut overhead = zero();
        for d in stores.daemonsets.state() {
            if let Ok((_, Some(requests))) = daemonset_requests(&d) {
                overhead = add(&overhead, &requests);
            }
        }
        for object in stores.node_pools.state() {
            let name = object.name_any();
            if object.meta().deletion_timestamp.is_some() {
                continue;
            }
            // What the API server should have refused (a CRD without validation, an object
            // older than a rule) is refused here, with the same messages, rather than read as
            // a default.
            let value = serde_json::to_value(&*object).unwrap_or_default();
            let np: NodePool = match serde_json::from_value(value.clone()) {
                Ok(np) => np,
                Err(e) => {
                    problems.push(PoolProblem {
                        node_pool: name.clone(),
                        reason: format!("cannot be read: {e}"),
                    });
                    continue;
                }
            };
            let violations = crate::api::validate::validate("NodePool", &value);
            if !violations.is_empty() {
                problems.push(PoolProblem {
                    node_pool: name.clone(),
                    reason: violations
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; "),
                });
                continue;
            }
            match node_pool(&np, overhead, zero()) {
                Ok(spec) => cluster.pools.push(Pool { resource: np, spec }),
                Err(e) => problems.push(PoolProblem {
                    node_pool: name,
                    reason: e.to_string(),
                }),
            }
        }
        cluster.pools.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    }

    /// Volumes (classes, volumes, claims) and node classes.
    fn observe_classes_and_volumes(stores: &Stores, cluster: &mut Cluster) {
        for c in stores.storage_classes.state() {
            cluster.volumes.apply_class(&c);
        }
        for v in stores.persistent_volumes.state() {
            cluster.volumes.apply_volume(&v);
        }
        for c in stores.persistent_volume_claims.state() {
            cluster.volumes.apply_claim(&c);
        }
        for c in stores.node_classes.state() {
            cluster.node_classes.insert(
                c.name_any(),
                serde_json::to_string(&c.spec).unwrap_or_default(),
            );
        }
        cluster.apply_node_classes();
    }

    /// PodDisruptionBudgets; one that cannot be read by the core's fail-safe rule.
    fn observe_pdbs(&mut self, stores: &Stores, cluster: &mut Cluster) {
        for b in stores.pdbs.state() {
            match pdb(&b) {
                Ok(p) => cluster.pdbs.push(p),
                Err(e) => {
                    // Fail safe: a budget that cannot be read protects every pod of its
                    // namespace (no voluntary eviction there) until it is fixed.
                    let version = format!(
                        "{}@{}",
                        b.name_any(),
                        b.resource_version().unwrap_or_default()
                    );
                    if self.unreadable.insert(version) {
                        tracing::warn!(pdb = %b.name_any(), error = %e, "a PodDisruptionBudget cannot be read; no pod of its namespace is evicted voluntarily until it is fixed");
                    }
                    cluster.pdbs.push(crate::snapshot::unreadable_pdb(
                        &b.namespace().unwrap_or_else(|| "default".into()),
                        &b.name_any(),
                    ));
                }
            }
        }
    }

    /// Nodes: one per launched NodeClaim, with what its Node object reports; claims not yet
    /// launched. Returns Node name → claim name.
    fn observe_nodes(
        &self,
        stores: &Stores,
        ctx: &Context,
        cluster: &mut Cluster,
        now: i64,
    ) -> HashMap<String, String> {
        // Nodes: one per launched NodeClaim; the Node object, once registered, adds what the
        // kubelet reports.
        let kube_nodes: HashMap<String, Arc<KubeNode>> = stores
            .nodes
            .state()
            .into_iter()
            .filter_map(|n| {
                let id = n.spec.as_ref()?.provider_id.clone()?;
                Some((id, n))
            })
            .collect();
        let mut claim_of_node: HashMap<String, String> = HashMap::new();
        for c in stores.node_claims.state() {
            let name = c.name_any();
            let pool = c
                .labels()
                .get(labels::NODEPOOL)
                .cloned()
                .unwrap_or_default();
            let status = c.status.clone().unwrap_or_default();
            let Some(provider_id) = status.provider_id.clone() else {
                if c.meta().deletion_timestamp.is_none() && !self.launched.contains_key(&name) {
                    cluster.unlaunched.push(UnlaunchedClaim {
                        name,
                        node_pool: pool,
                        offers: offers_of(&c),
                    });
                }
                continue;
            };
            let (offer, type_index, zone_index) = offer_on(&c, ctx);
            let kube_node = kube_nodes.get(&provider_id).map(Arc::as_ref);
            if let Some(n) = kube_node {
                claim_of_node.insert(n.name_any(), name.clone());
            }
            let node_labels: Vec<(String, String)> = kube_node
                .map_or(c.labels().clone(), |n| n.labels().clone())
                .into_iter()
                .collect();
            let taints = kube_node
                .and_then(|n| n.spec.as_ref()?.taints.clone())
                .unwrap_or_else(|| c.spec.taints.clone())
                .iter()
                .map(taint)
                .collect();
            let ready_at = kube_node.and_then(|n| {
                n.status
                    .as_ref()?
                    .conditions
                    .as_ref()?
                    .iter()
                    .find(|c| c.type_ == "Ready" && c.status == "True")
                    .map(|c| c.last_transition_time.as_ref().map_or(now, timestamp))
            });
            let annotations = c.annotations();
            // On the Node; on its claim (from the pool's template) only until the Node exists, so
            // removing it from one Node takes effect.
            let do_not_disrupt = kube_node
                .map_or(annotations, |n| n.annotations())
                .get(DO_NOT_DISRUPT)
                .is_some_and(|v| v == "true");
            let launched_at = c.meta().creation_timestamp.as_ref().map_or(now, timestamp);
            // A claim without the hash (made by hand, or by an older controller with another
            // scheme) shows no evidence of drift: it counts as made from the pool as it is.
            let template_hash = crate::snapshot::template_hash(
                annotations.get(ANNOTATION_HASH).map(String::as_str),
                cluster.pools.iter().find(|p| p.spec.name == pool),
                &cluster.node_classes,
            );
            cluster.nodes.insert(
                name.clone(),
                Node {
                    name: name.clone(),
                    instance: Instance {
                        id: provider_id
                            .rsplit('/')
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                        claim: name.clone(),
                        node_pool: pool,
                        offer,
                    },
                    type_index,
                    zone_index,
                    labels: node_labels,
                    taints,
                    launched_at,
                    ready_at,
                    last_pod_change: launched_at,
                    template_hash,
                    do_not_disrupt,
                    deletion: deletion_of(&c, kube_node),
                    terminating: Default::default(),
                    attached: Default::default(),
                    lifecycle: lifecycle_of(&c, kube_node, ready_at.is_some()),
                },
            );
        }
        claim_of_node
    }

    /// Pods (and the nominations that still hold), the volumes attached to each node, and the
    /// pods seen pending for the first time (a signal).
    fn observe_pods(
        &mut self,
        stores: &Stores,
        cluster: &mut Cluster,
        claim_of_node: &HashMap<String, String>,
        signals: &mut Vec<Signal>,
        now: i64,
    ) {
        // Pods: bound ones on their node's claim (or on a node we do not manage), pending ones
        // only once kube-scheduler found them unschedulable.
        // Nominations end by the core's rule ([`crate::snapshot::nomination_holds`]).
        let unlaunched: BTreeSet<&str> =
            cluster.unlaunched.iter().map(|u| u.name.as_str()).collect();
        let launched = &self.launched;
        self.nominated.retain(|_, (claim, until)| {
            let node = cluster.nodes.get(claim.as_str());
            let exists = node.is_some()
                || unlaunched.contains(claim.as_str())
                || launched.contains_key(claim);
            crate::snapshot::nomination_holds(*until, node, exists, now)
        });
        let mut pending_now = HashSet::new();
        // The pods, sorted once and built into the map in one go (the cache's order is a
        // hash's: inserting 100,000 pods one by one costs a tree walk each).
        let mut pods = Vec::new();
        // When this snapshot saw a pod pending for the first time.
        let seen_ms = super::unix_now_ms();
        let mut unbound_now = HashMap::new();
        // Attachments of PersistentVolumes (an inline volume's goes with its pod, as
        // Karpenter also leaves it).
        for va in stores.volume_attachments.state() {
            let spec = &va.spec;
            if let Some(volume) = &spec.source.persistent_volume_name
                && let Some(node) = claim_of_node
                    .get(&spec.node_name)
                    .and_then(|claim| cluster.nodes.get_mut(claim.as_str()))
            {
                node.attached.insert(volume.clone());
            }
        }
        for p in stores.pods.state() {
            if p.terminating
                && let Some(node) = p
                    .node_name
                    .as_ref()
                    .and_then(|n| claim_of_node.get(n))
                    .and_then(|claim| cluster.nodes.get_mut(claim.as_str()))
            {
                node.terminating.insert(p.id.clone());
            }
            let Some(mut pod) = self.pod(&p, claim_of_node, now) else {
                continue;
            };
            if pod.node.is_none() && !pod.spec.volume_claims.is_empty() {
                std::sync::Arc::make_mut(&mut pod.spec).volume_requirements =
                    cluster.volumes.requirements(&pod.spec.volume_claims);
            }
            match p.node_name.as_ref() {
                None => {
                    unbound_now.insert(pod.spec.name.clone(), pod.created_at);
                }
                // Pending until now, bound to a node we launched: its startup is ours.
                Some(node) if claim_of_node.contains_key(node) => {
                    if let Some(created) = self.unbound.get(&pod.spec.name) {
                        self.started.push(now - created);
                    }
                }
                // Bound to a node the cache does not know yet (its watch event can come after
                // the pod's): asked again next time, for a while.
                Some(_) => {
                    if let Some(&created) = self.unbound.get(&pod.spec.name)
                        && now - created < STARTUP_WAIT
                    {
                        unbound_now.insert(pod.spec.name.clone(), created);
                    }
                }
            }
            if pod.node.is_none() {
                pending_now.insert(pod.spec.name.clone());
                if !self.pending.contains(&pod.spec.name) {
                    signals.push(Signal::PodPending(seen_ms));
                }
            }
            pods.push((pod.spec.name.clone(), pod));
        }
        cluster.pods = pods.into_iter().collect();
        self.pending = pending_now;
        self.unbound = unbound_now;
    }

    /// Since when each node's pods are what they are ([`crate::snapshot::PodChanges`]).
    fn observe_pod_changes(&mut self, cluster: &mut Cluster, signals: &mut Vec<Signal>, now: i64) {
        if self.pod_changes.date(cluster, now) {
            signals.push(Signal::Changed(now));
        }
    }

    /// A pod as decisions see it, or `None` for pods that are not ours to place: finished,
    /// terminating, DaemonSet and static pods, and pods the scheduler has not tried yet.
    fn pod(
        &self,
        p: &super::pods::ObservedPod,
        claim_of_node: &HashMap<String, String>,
        now: i64,
    ) -> Option<Pod> {
        if p.ignored {
            return None;
        }
        let spec = p.spec.as_ref().ok()?;
        let node = match &p.node_name {
            Some(n) => Some(claim_of_node.get(n).cloned().unwrap_or_else(|| n.clone())),
            None => match self.nominated.get(&p.id) {
                Some((claim, _)) => Some(claim.clone()),
                None if p.unschedulable => None,
                None => return None,
            },
        };
        Some(Pod {
            spec: spec.clone(),
            owner: p.controller.clone(),
            created_at: p.created_at.unwrap_or(now),
            node,
            running_since: p.running.then(|| p.start_time.unwrap_or(now)),
            ready: p.ready,
            do_not_disrupt: p.do_not_disrupt,
        })
    }
}

/// What a launched claim bought, from its labels: the offer (priced from the catalog), and the
/// indices of its instance type and zone.
fn offer_on(c: &NodeClaim, ctx: &Context) -> (Offer, u32, u32) {
    let get = |k: &str| c.labels().get(k).cloned().unwrap_or_default();
    let instance_type = get(labels::INSTANCE_TYPE);
    let zone = get(labels::ZONE);
    let capacity_type = capacity_type(&get(labels::CAPACITY_TYPE))
        .unwrap_or(crate::capacity::CapacityType::OnDemand);
    let type_index = ctx.type_index(&instance_type).unwrap_or(0);
    let zone_index = ctx.its.zones.iter().position(|z| *z == zone).unwrap_or(0) as u32;
    let price = ctx.its.types[type_index as usize]
        .offerings
        .iter()
        .find(|o| o.capacity_type == capacity_type && o.zone == zone_index)
        .map_or(0.0, |o| o.price);
    let offer = Offer {
        instance_type,
        zone,
        capacity_type,
        price,
    };
    (offer, type_index, zone_index)
}

/// The claim's deletion (or its Node's), with why and for what, as the annotations recorded.
fn deletion_of(c: &NodeClaim, kube_node: Option<&KubeNode>) -> Option<Deletion> {
    let annotations = c.annotations();
    let node_deleting = kube_node.and_then(|n| n.meta().deletion_timestamp.as_ref());
    c.meta()
        .deletion_timestamp
        .as_ref()
        .or(node_deleting)
        .map(|t| Deletion {
            reason: annotations
                .get(ANNOTATION_DISRUPTION)
                .and_then(|r| reason(r)),
            since: timestamp(t),
            replacement: annotations.get(ANNOTATION_REPLACEMENT).cloned(),
            policy: annotations.get(ANNOTATION_DISRUPTION_POLICY).cloned(),
        })
}

/// Where the claim is in its lifecycle: its conditions, and its Node once registered.
fn lifecycle_of(
    c: &NodeClaim,
    kube_node: Option<&KubeNode>,
    ready: bool,
) -> crate::cluster::Lifecycle {
    crate::cluster::Lifecycle {
        joined: kube_node.map(|n| crate::cluster::Joined {
            node: n.name_any(),
            ready,
            startup_taints_left: c.spec.startup_taints.iter().any(|s| {
                n.spec
                    .as_ref()
                    .and_then(|spec| spec.taints.as_ref())
                    .is_some_and(|ts| ts.iter().any(|t| t.key == s.key && t.effect == s.effect))
            }),
            deleting: n.meta().deletion_timestamp.is_some(),
        }),
        registered: true_condition(c, "Registered").is_some(),
        initialized: true_condition(c, "Initialized").is_some(),
        launched: true_condition(c, "Launched").map(|x| timestamp(&x.last_transition_time)),
    }
}

fn taint(t: &k8s_openapi::api::core::v1::Taint) -> Taint {
    Taint {
        key: t.key.clone(),
        value: t.value.clone().unwrap_or_default(),
        effect: match t.effect.as_str() {
            "NoExecute" => TaintEffect::NoExecute,
            "PreferNoSchedule" => TaintEffect::PreferNoSchedule,
            _ => TaintEffect::NoSchedule,
        },
    }
}

fn reason(label: &str) -> Option<crate::cluster::DisruptionReason> {
    use crate::cluster::DisruptionReason as R;
    [R::Empty, R::Underutilized, R::Drifted, R::Expired]
        .into_iter()
        .find(|r| crate::controller::reason_label(*r) == label)
}

/// The ranked offers recorded on a NodeClaim (`type/zone/capacity-type/price`, best first).
fn offers_of(c: &NodeClaim) -> Vec<Offer> {
    c.annotations()
        .get(ANNOTATION_OFFERS)
        .map(|s| super::parse_offers(s))
        .unwrap_or_default()
}

/// The claim's condition of this type, if it is True.
fn true_condition<'c>(
    c: &'c NodeClaim,
    type_: &str,
) -> Option<&'c k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    c.status
        .as_ref()?
        .conditions
        .iter()
        .find(|x| x.type_ == type_ && x.status == "True")
}
