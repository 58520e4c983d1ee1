//! Act: the controller core's effects as Kubernetes API calls. Each call is made once per
//! decision; what fails is logged and the next tick, reading a fresh snapshot, decides again.
//! The local snapshot is updated as effects succeed, so later decisions of the same tick see
//! them (a pod nominated to a claim launched a moment ago).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node as KubeNode, ObjectReference, Pod as KubePod};
use kube::api::{DeleteParams, EvictParams, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Api, Client, Resource};
use serde_json::json;

use super::observe::NOMINATION_TTL;
use super::{
    ANNOTATION_DISRUPTION, ANNOTATION_HASH, ANNOTATION_OFFERS, ANNOTATION_REPLACEMENT,
    FIELD_MANAGER, FINALIZER, format_offers,
};
use crate::api::{NodeClaim, NodePool};
use crate::cluster::{self, Cluster, Deletion, Node, disrupted_taint};
use crate::controller::{ClusterPort, EventKind, NewClaim, PortError, Signal, reason_label};
use crate::scheduling::model::{capacity_type_label, labels};

/// The Kubernetes world behind the controller core's port.
pub struct KubePort {
    client: Client,
    rt: tokio::runtime::Handle,
    recorder: super::Events,
    cluster: Cluster,
    signals: Vec<Signal>,
    /// NodeClaim → Node name, for claims whose node registered.
    node_names: BTreeMap<String, String>,
    /// Nominations made this tick: (pod, claim, until).
    pub nominations: Vec<(String, String, i64)>,
    capacities: Capacities,
    now: i64,
}

impl KubePort {
    pub fn new(
        kube: &super::Kube,
        cluster: Cluster,
        signals: Vec<Signal>,
        node_names: BTreeMap<String, String>,
        capacities: Capacities,
        now: i64,
    ) -> Self {
        KubePort {
            client: kube.client.clone(),
            rt: kube.rt.clone(),
            recorder: kube.events.clone(),
            cluster,
            signals,
            node_names,
            nominations: Vec::new(),
            capacities,
            now,
        }
    }

    fn claims(&self) -> Api<NodeClaim> {
        Api::all(self.client.clone())
    }

    fn patch_claim(&self, name: &str, patch: serde_json::Value) -> Result<(), PortError> {
        let api = self.claims();
        self.rt
            .block_on(api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)))
            .map(|_| ())
            .map_err(|e| failed("patching NodeClaim", name, &e))
    }

    fn publish(&self, reference: ObjectReference, type_: EventType, reason: &str, note: String) {
        self.recorder.publish(reference, type_, reason, note);
    }

    fn claim_ref(&self, name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some(NodeClaim::api_version(&()).into()),
            kind: Some("NodeClaim".into()),
            name: Some(name.into()),
            ..Default::default()
        }
    }
}

/// A pod's reference from its `namespace/name`.
fn pod_ref(id: &str) -> ObjectReference {
    let (ns, name) = id.split_once('/').unwrap_or(("default", id));
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(ns.into()),
        name: Some(name.into()),
        ..Default::default()
    }
}

fn failed(what: &str, name: &str, e: &kube::Error) -> PortError {
    match e {
        kube::Error::Api(s) if s.code == 429 || s.code == 409 => {
            PortError::Refused(format!("{what} {name}: {}", s.message))
        }
        _ => PortError::Failed(format!("{what} {name}: {e}")),
    }
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

impl ClusterPort for KubePort {
    fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    fn create_claim(&mut self, claim: &NewClaim) -> Result<(), PortError> {
        let pool = self
            .cluster
            .pools
            .iter()
            .find(|p| p.spec.name == claim.node_pool)
            .ok_or_else(|| PortError::Failed(format!("no NodePool {}", claim.node_pool)))?;
        let np: &NodePool = &pool.resource;
        let t = &np.spec.template;
        let distinct = |f: &dyn Fn(&crate::cloud::Offer) -> String| {
            let mut v: Vec<String> = claim.offers.iter().map(f).collect();
            v.sort();
            v.dedup();
            v
        };
        let types = distinct(&|o| o.instance_type.clone());
        let zones = distinct(&|o| o.zone.clone());
        let capacity = distinct(&|o| capacity_type_label(o.capacity_type).to_string());
        let mut requirements: Vec<serde_json::Value> = t
            .spec
            .requirements
            .iter()
            .filter(|r| {
                ![labels::INSTANCE_TYPE, labels::ZONE, labels::CAPACITY_TYPE]
                    .contains(&r.key.as_str())
            })
            .map(|r| serde_json::to_value(r).unwrap_or_default())
            .collect();
        for (key, values) in [
            (labels::INSTANCE_TYPE, types),
            (labels::ZONE, zones),
            (labels::CAPACITY_TYPE, capacity),
        ] {
            requirements.push(json!({"key": key, "operator": "In", "values": values}));
        }
        let mut claim_labels: BTreeMap<String, String> = t.metadata.labels.clone();
        claim_labels.insert(labels::NODEPOOL.into(), claim.node_pool.clone());
        let hash = cluster::template_hash(pool, &self.cluster.node_classes);
        let body = json!({
            "apiVersion": "dovetail.sh/v1",
            "kind": "NodeClaim",
            "metadata": {
                "name": claim.name,
                "labels": claim_labels,
                "annotations": {
                    ANNOTATION_OFFERS: format_offers(&claim.offers),
                    ANNOTATION_HASH: hash.to_string(),
                    "dovetail.sh/purpose": claim.purpose,
                },
                "finalizers": [FINALIZER],
                "ownerReferences": [{
                    "apiVersion": "dovetail.sh/v1",
                    "kind": "NodePool",
                    "name": claim.node_pool,
                    "uid": np.metadata.uid.clone().unwrap_or_default(),
                    "blockOwnerDeletion": true,
                }],
            },
            "spec": {
                "requirements": requirements,
                "resources": {"requests": {
                    "cpu": format!("{}m", claim.requests.cpu_millis),
                    "memory": claim.requests.memory_bytes.to_string(),
                }},
                "nodeClassRef": t.spec.node_class_ref,
                "taints": t.spec.taints,
                "startupTaints": t.spec.startup_taints,
                "expireAfter": t.spec.expire_after,
                "terminationGracePeriod": t.spec.termination_grace_period,
            },
        });
        let claim_obj: NodeClaim = serde_json::from_value(body)
            .map_err(|e| PortError::Failed(format!("NodeClaim {}: {e}", claim.name)))?;
        let api = self.claims();
        self.rt
            .block_on(api.create(
                &PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                },
                &claim_obj,
            ))
            .map(|_| ())
            .map_err(|e| failed("creating NodeClaim", &claim.name, &e))
    }

    fn launched(&mut self, claim: &NewClaim, node: Node) -> Result<(), PortError> {
        let offer = &node.instance.offer;
        let provider_id = format!("aws:///{}/{}", offer.zone, node.instance.id);
        let labels: BTreeMap<String, String> = node.labels.iter().cloned().collect();
        let name = node.name.clone();
        self.cluster.nodes.insert(name.clone(), node);
        self.patch_claim(&name, json!({"metadata": {"labels": labels}}))?;
        let it = &self.cluster.nodes[&name].instance.offer;
        let (capacity, allocatable) = self
            .capacities
            .get(&it.instance_type)
            .cloned()
            .unwrap_or_default();
        let message = format!(
            "{} in {} ({})",
            it.instance_type,
            it.zone,
            capacity_type_label(it.capacity_type)
        );
        let status = json!({"status": {
            "providerID": provider_id,
            "capacity": capacity,
            "allocatable": allocatable,
            "conditions": [condition("Launched", true, "Launched", &message, self.now)],
        }});
        let api = self.claims();
        self.rt
            .block_on(api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)))
            .map_err(|e| failed("recording the launch of NodeClaim", &name, &e))?;
        self.publish(
            self.claim_ref(&name),
            EventType::Normal,
            "Launched",
            format!(
                "launched {} for {} ({})",
                provider_id, claim.node_pool, claim.purpose
            ),
        );
        Ok(())
    }

    fn abandon_claim(&mut self, claim: &str, reason: &str) {
        self.publish(
            self.claim_ref(claim),
            EventType::Warning,
            "LaunchFailed",
            reason.to_string(),
        );
        if let Err(e) = super::delete_released(&self.rt, &self.claims(), claim) {
            tracing::warn!(nodeclaim = claim, error = %e, "could not delete an abandoned NodeClaim");
        }
    }

    fn nominate(&mut self, pod: &str, node: &str) {
        if let Some(p) = self.cluster.pods.get_mut(pod) {
            p.node = Some(node.to_string());
        }
        self.nominations
            .push((pod.into(), node.into(), self.now + NOMINATION_TTL));
        self.publish(
            pod_ref(pod),
            EventType::Normal,
            "Nominated",
            format!("Pod should schedule on: nodeclaim/{node}"),
        );
    }

    fn mark_deleting(&mut self, node: &str, deletion: Deletion) -> Result<(), PortError> {
        let mut annotations = serde_json::Map::new();
        if let Some(r) = deletion.reason {
            annotations.insert(ANNOTATION_DISRUPTION.into(), reason_label(r).into());
        }
        if let Some(r) = &deletion.replacement {
            annotations.insert(ANNOTATION_REPLACEMENT.into(), r.clone().into());
        }
        if !annotations.is_empty() {
            self.patch_claim(node, json!({"metadata": {"annotations": annotations}}))?;
        }
        // The taint first, so nothing new lands on the node while it drains.
        if let Some(kube_name) = self.node_names.get(node).cloned() {
            let nodes: Api<KubeNode> = Api::all(self.client.clone());
            let mut taints = self.rt.block_on(nodes.get(&kube_name)).map_or_else(
                |_| Vec::new(),
                |n| n.spec.and_then(|s| s.taints).unwrap_or_default(),
            );
            let t = disrupted_taint();
            if !taints.iter().any(|x| x.key == t.key) {
                taints.push(k8s_openapi::api::core::v1::Taint {
                    key: t.key,
                    effect: "NoSchedule".into(),
                    ..Default::default()
                });
                let patch = json!({"spec": {"taints": taints}});
                self.rt
                    .block_on(nodes.patch(
                        &kube_name,
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    ))
                    .map_err(|e| failed("tainting Node", &kube_name, &e))?;
            }
        }
        let api = self.claims();
        self.rt
            .block_on(api.delete(node, &DeleteParams::default()))
            .map_err(|e| failed("deleting NodeClaim", node, &e))?;
        let why = deletion
            .reason
            .map_or("deleted or interrupted".to_string(), |r| {
                reason_label(r).to_string()
            });
        self.publish(
            self.claim_ref(node),
            EventType::Normal,
            "Disrupting",
            format!(
                "{why}{}",
                deletion
                    .replacement
                    .as_ref()
                    .map_or(String::new(), |r| format!("; replacement {r}"))
            ),
        );
        if let Some(n) = self.cluster.nodes.get_mut(node) {
            n.taints.push(disrupted_taint());
            n.deletion = Some(deletion);
        }
        Ok(())
    }

    fn evict(&mut self, pod: &str, node: &str) -> Result<(), PortError> {
        let (ns, name) = pod.split_once('/').unwrap_or(("default", pod));
        let pods: Api<KubePod> = Api::namespaced(self.client.clone(), ns);
        match self.rt.block_on(pods.evict(name, &EvictParams::default())) {
            Ok(_) => {}
            Err(e) if not_found(&e) => {}
            Err(e) => {
                let err = failed("evicting Pod", pod, &e);
                if matches!(err, PortError::Refused(_)) {
                    self.publish(
                        self.claim_ref(node),
                        EventType::Warning,
                        "FailedDraining",
                        format!("evicting {pod}: {err}"),
                    );
                }
                return Err(err);
            }
        }
        self.cluster.pods.remove(pod);
        Ok(())
    }

    fn remove_node(&mut self, node: &str) -> Result<(), PortError> {
        if let Some(kube_name) = self.node_names.get(node).cloned() {
            let nodes: Api<KubeNode> = Api::all(self.client.clone());
            super::delete_released(&self.rt, &nodes, &kube_name)
                .map_err(|e| failed("deleting Node", &kube_name, &e))?;
        }
        super::delete_released(&self.rt, &self.claims(), node)
            .map_err(|e| failed("deleting NodeClaim", node, &e))?;
        self.cluster.nodes.remove(node);
        self.cluster
            .pods
            .retain(|_, p| p.node.as_deref() != Some(node));
        Ok(())
    }

    fn record(&mut self, event: EventKind) {
        let (reference, type_, reason, note) = match &event {
            EventKind::Unschedulable { pod, reason } => (
                pod_ref(pod),
                EventType::Warning,
                "FailedScheduling",
                format!("no node can be launched: {reason}"),
            ),
            EventKind::NotLaunched { claim, reason } if !claim.is_empty() => (
                self.claim_ref(claim),
                EventType::Warning,
                "LaunchFailed",
                reason.clone(),
            ),
            EventKind::Blocked { node, why } => (
                self.claim_ref(node),
                EventType::Normal,
                "DisruptionBlocked",
                why.clone(),
            ),
            EventKind::Terminated { node, .. } => (
                self.claim_ref(node),
                EventType::Normal,
                "Terminated",
                "instance terminated".to_string(),
            ),
            EventKind::Interrupted { node, kind } => (
                self.claim_ref(node),
                EventType::Warning,
                "Interrupted",
                format!("EC2 {kind}: replacing"),
            ),
            _ => return,
        };
        self.publish(reference, type_, reason, note);
    }

    fn take_signals(&mut self) -> Vec<Signal> {
        std::mem::take(&mut self.signals)
    }
}

/// Capacity and allocatable per instance type, as NodeClaim status quantities.
pub type Capacities = std::sync::Arc<BTreeMap<String, (serde_json::Value, serde_json::Value)>>;

/// The quantities of every instance type decisions know.
pub fn capacities(its: &crate::scheduling::InstanceTypes) -> Capacities {
    let q = |cpu: u64, mem: u64, pods: Option<u64>| {
        let mut m = json!({"cpu": format!("{cpu}m"), "memory": format!("{}Ki", mem / 1024)});
        if let Some(p) = pods {
            m["pods"] = p.to_string().into();
        }
        m
    };
    std::sync::Arc::new(
        its.types
            .iter()
            .map(|t| {
                let (cpu, mem) = t.capacity;
                (
                    t.name.clone(),
                    (
                        q(cpu, mem, None),
                        q(
                            t.allocatable.cpu_millis,
                            t.allocatable.memory_bytes,
                            Some(u64::from(t.allocatable.pods)),
                        ),
                    ),
                )
            })
            .collect(),
    )
}

/// A status condition as NodeClaims and NodePools carry them.
pub fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    now: i64,
) -> serde_json::Value {
    json!({
        "type": type_,
        "status": if ok { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "lastTransitionTime": super::rfc3339(now),
    })
}
