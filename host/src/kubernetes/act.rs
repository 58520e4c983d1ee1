//! Act: the controller core's effects as Kubernetes API calls. Each call is made once per
//! decision; what fails is logged and the next tick, reading a fresh snapshot, decides again.
//! The local snapshot is updated as effects succeed, so later decisions of the same tick see
//! them (a pod nominated to a claim launched a moment ago).

mod events;
mod lifecycle;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node as KubeNode, ObjectReference, Pod as KubePod};
use kube::api::{DeleteParams, EvictParams, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use super::{
    ANNOTATION_DISRUPTION, ANNOTATION_DISRUPTION_POLICY, ANNOTATION_HASH, ANNOTATION_OFFERS,
    ANNOTATION_PURPOSE, ANNOTATION_REPLACEMENT, FIELD_MANAGER, FINALIZER, format_offers,
};
use crate::api::{NodeClaim, NodePool};
use crate::cluster::{self, Cluster, Deletion, Node, disrupted_taint};
use crate::controller::{ClusterPort, EventKind, NewClaim, PortError, Signal, reason_label};
use crate::metrics::{Metrics, why_label};
use crate::scheduling::model::{capacity_type_label, labels};
use crate::snapshot::NOMINATION_TTL;

/// The Kubernetes world behind the controller core's port.
pub struct KubePort {
    client: Client,
    rt: crate::bridge::Bridge,
    recorder: super::Events,
    cluster: Cluster,
    signals: Vec<Signal>,
    /// Nominations made this tick: (pod, claim, until).
    pub nominations: Vec<(String, String, i64)>,
    capacities: Capacities,
    now: i64,
    metrics: Arc<Metrics>,
    /// The leadership state under leader election: a replica that lost the Lease makes no
    /// further write, even within the tick in progress.
    leading: Option<tokio::sync::watch::Receiver<bool>>,
    /// Claims launched this tick (the observer does not take them for unlaunched while the
    /// cache catches up).
    pub launched: Vec<String>,
    /// Writes deferred to the end of the tick, made concurrently by [`KubePort::flush`].
    writes: Vec<futures::future::BoxFuture<'static, Result<(), PortError>>>,
    /// The objects behind the snapshot, for what a write needs beyond it (a Node's finalizers
    /// and resourceVersion, a claim's conditions).
    node_store: Store<KubeNode>,
    claim_store: Store<NodeClaim>,
    deleted_claims: super::DeletedClaims,
    /// Whether the core's last garbage collection reached the cloud (`/readyz`).
    pub cloud_reached: Option<bool>,
}

/// Writes of one tick in flight at once: enough to hide round trips (Karpenter creates a
/// batch's NodeClaims all in parallel; 16 left a 10,000-claim batch waiting on latency, 8 s of
/// creates and 15 s more of launch records), few enough that a batch does not hit the API
/// server as a burst of thousands. The client's rate limit paces them further.
const WRITE_CONCURRENCY: usize = 64;

impl KubePort {
    /// The port for one tick over `cluster`, the snapshot of `stores`.
    pub fn new(
        kube: &super::Kube,
        stores: &super::stores::Stores,
        cluster: Cluster,
        signals: Vec<Signal>,
        capacities: Capacities,
        now: i64,
        leading: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> Self {
        let metrics = kube.metrics.clone();
        KubePort {
            client: kube.client.clone(),
            rt: kube.rt.clone(),
            recorder: kube.events.clone(),
            deleted_claims: kube.deleted_claims.clone(),
            cluster,
            signals,
            nominations: Vec::new(),
            capacities,
            now,
            metrics,
            leading,
            launched: Vec::new(),
            writes: Vec::new(),
            node_store: stores.nodes.clone(),
            claim_store: stores.node_claims.clone(),
            cloud_reached: None,
        }
    }

    /// The name of the Node a claim registered as (the snapshot's, from its providerID).
    fn kube_node_name(&self, claim: &str) -> Option<String> {
        let joined = self.cluster.nodes.get(claim)?.lifecycle.joined.as_ref()?;
        Some(joined.node.clone())
    }

    /// `Err` once this replica no longer holds the leader Lease.
    fn acting(&self) -> Result<(), PortError> {
        match &self.leading {
            Some(l) if !*l.borrow() => Err(PortError::Failed(
                "this replica lost the leader lease".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Makes the tick's deferred writes, [`WRITE_CONCURRENCY`] at a time; a failure is logged
    /// (the next tick decides again from what the API server holds).
    pub fn flush(&mut self) {
        let writes = std::mem::take(&mut self.writes);
        if writes.is_empty() {
            return;
        }
        if let Err(e) = self.acting() {
            // The claims read as unlaunched to the next leader, which adopts their instances.
            tracing::warn!(writes = writes.len(), error = %e, "deferred writes not made");
            return;
        }
        let results: Vec<Result<(), PortError>> = self.rt.wait(
            futures::stream::iter(writes)
                .buffer_unordered(WRITE_CONCURRENCY)
                .collect(),
        );
        // One line, not one per write: a refused burst is many of the same.
        let failed: Vec<PortError> = results.into_iter().filter_map(Result::err).collect();
        if let Some(first) = failed.first() {
            tracing::warn!(failed = failed.len(), first = %first, "deferred writes failed; the next ticks adopt what they launched");
        }
    }

    /// A claim as this process knows it: the informer's, unless it does not show the deletion
    /// this process made and remembers (the cache lags its own writes). A remembered claim the
    /// informer holds under another uid is another claim of that name: forgotten.
    fn known_claim(&self, name: &str) -> Option<NodeClaim> {
        let cached = self.claim_store.get(&ObjectRef::new(name));
        if let Some(c) = &cached
            && c.metadata.deletion_timestamp.is_some()
        {
            return Some(NodeClaim::clone(c));
        }
        let mut deleted = self.deleted_claims.lock().ok()?;
        let remembered = match (deleted.get(name), &cached) {
            (Some(r), Some(c)) if r.metadata.uid != c.metadata.uid => {
                deleted.remove(name);
                None
            }
            (r, _) => r.cloned(),
        };
        remembered.or_else(|| cached.map(|c| NodeClaim::clone(&c)))
    }

    /// The claim's finalizer is released: it is gone or going. It is remembered so — deleting,
    /// without the finalizer — for [`TOMBSTONE_SECONDS`]: a tick whose cache or snapshot still
    /// shows the claim, even as it was before its deletion, then writes nothing to it (forgotten
    /// at once, or once the informer showed it gone, an empty node's claim was deleted a second
    /// time: the tick's snapshot is older than the store read when it acts).
    fn released(&self, name: &str, known: Option<NodeClaim>) {
        let Ok(mut d) = self.deleted_claims.lock() else {
            return;
        };
        let Some(mut claim) = d.remove(name).or(known) else {
            return;
        };
        claim
            .metadata
            .finalizers
            .get_or_insert_default()
            .retain(|f| f != super::FINALIZER);
        if claim.metadata.deletion_timestamp.is_none() {
            claim.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::from_second(self.now).unwrap_or_default(),
                ));
        }
        // Kept even once the informer shows the claim gone: a decision made on the tick's
        // older snapshot may still name it. Tombstones go after TOMBSTONE_SECONDS.
        let now = self.now;
        d.retain(|_, c| {
            holds_finalizer(c)
                || c.metadata
                    .deletion_timestamp
                    .as_ref()
                    .is_none_or(|t| now - super::timestamp(t) < TOMBSTONE_SECONDS)
        });
        if d.len() >= 10_000 {
            d.clear();
        }
        d.insert(name.to_string(), claim);
    }

    fn remember_deleted(&self, claim: NodeClaim) {
        if let Ok(mut d) = self.deleted_claims.lock() {
            // Bounded: entries go as finalizers are released; a claim someone else finished
            // is forgotten with the rest should thousands pile up.
            if d.len() >= 10_000 {
                d.clear();
            }
            d.insert(claim.name_any(), claim);
        }
    }

    /// Adds the disrupted taint to a Node. The taints are one list: written against the
    /// version read — the informer's first, a fresh read only after a 409 Conflict — so another
    /// controller's taint is never lost, and a drain of hundreds of nodes reads none of them.
    fn taint(&self, kube_name: &str) -> Result<(), PortError> {
        let nodes: Api<KubeNode> = Api::all(self.client.clone());
        let mut known = self.node_store.get(&ObjectRef::new(kube_name));
        let uid = known.as_ref().and_then(|n| n.metadata.uid.clone());
        let mut attempts = 0;
        loop {
            let current = match known.take() {
                Some(n) => n,
                None => match self.rt.wait(nodes.get(kube_name)) {
                    // Another Node of that name (a reused address): this one is gone.
                    Ok(n) if uid.is_some() && n.metadata.uid != uid => return Ok(()),
                    Ok(n) => Arc::new(n),
                    // Gone: nothing left to keep pods off.
                    Err(e) if not_found(&e) => return Ok(()),
                    Err(e) => return Err(failed(&self.metrics, "reading Node", kube_name, &e)),
                },
            };
            let mut taints = current
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default();
            let t = disrupted_taint();
            if taints.iter().any(|x| x.key == t.key) {
                return Ok(());
            }
            taints.push(k8s_openapi::api::core::v1::Taint {
                key: t.key,
                effect: "NoSchedule".into(),
                ..Default::default()
            });
            let patch = json!({
                "metadata": {"resourceVersion": current.metadata.resource_version},
                "spec": {"taints": taints},
            });
            match self.rt.wait(nodes.patch(
                kube_name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )) {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 && attempts < 5 => attempts += 1,
                Err(e) => return Err(failed(&self.metrics, "tainting Node", kube_name, &e)),
            }
        }
    }

    fn claims(&self) -> Api<NodeClaim> {
        Api::all(self.client.clone())
    }

    fn patch_claim(&self, name: &str, patch: serde_json::Value) -> Result<(), PortError> {
        let api = self.claims();
        self.rt
            .wait(api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)))
            .map(|_| ())
            .map_err(|e| failed(&self.metrics, "patching NodeClaim", name, &e))
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

    /// The NodeClaim object for a planned claim: requirements narrowed to its offers.
    fn claim_object(&self, claim: &NewClaim) -> Result<NodeClaim, PortError> {
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
        // The template's annotations (as Karpenter's: on the claim, then its Node), ours over them.
        let mut claim_annotations: BTreeMap<String, String> = t.metadata.annotations.clone();
        claim_annotations.insert(ANNOTATION_OFFERS.into(), format_offers(&claim.offers));
        claim_annotations.insert(ANNOTATION_HASH.into(), cluster::format_hash(hash));
        claim_annotations.insert(ANNOTATION_PURPOSE.into(), claim.purpose.to_string());
        let body = json!({
            "apiVersion": "dovetail.sh/v1",
            "kind": "NodeClaim",
            "metadata": {
                "name": claim.name,
                "labels": claim_labels,
                "annotations": claim_annotations,
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
        serde_json::from_value(body)
            .map_err(|e| PortError::Failed(format!("NodeClaim {}: {e}", claim.name)))
    }
}

/// Eviction requests a drain keeps in flight at once. The client's rate limit (`KUBE_CLIENT_QPS`,
/// `KUBE_CLIENT_BURST`) paces them further; a PodDisruptionBudget's 429 is an answer like any.
pub const EVICTIONS_IN_FLIGHT: usize = 32;

/// `POST pods/eviction` for `namespace/name`.
async fn evict_call(client: Client, pod: &str) -> kube::Result<()> {
    let (ns, name) = pod.split_once('/').unwrap_or(("default", pod));
    let pods: Api<KubePod> = Api::namespaced(client, ns);
    pods.evict(name, &EvictParams::default()).await.map(|_| ())
}

/// `DELETE pods` for `namespace/name` with `grace_seconds` to stop.
async fn delete_call(client: Client, pod: &str, grace_seconds: i64) -> kube::Result<()> {
    let (ns, name) = pod.split_once('/').unwrap_or(("default", pod));
    let pods: Api<KubePod> = Api::namespaced(client, ns);
    let params = DeleteParams {
        grace_period_seconds: Some(u32::try_from(grace_seconds.max(0)).unwrap_or(u32::MAX)),
        ..Default::default()
    };
    pods.delete(name, &params).await.map(|_| ())
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

/// A write's error as the core sees it (409 and 429 are refusals to retry), counted.
fn failed(metrics: &Metrics, what: &str, name: &str, e: &kube::Error) -> PortError {
    let code = match e {
        kube::Error::Api(s) if s.code == 409 => "conflict",
        kube::Error::Api(s) if s.code == 429 => "throttled",
        kube::Error::Api(s) if s.code == 404 => "not_found",
        _ => "other",
    };
    metrics
        .api_write_errors
        .get_or_create(&vec![
            ("what", what.to_string()),
            ("code", code.to_string()),
        ])
        .inc();
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

    fn clock_ms(&self) -> i64 {
        super::unix_now_ms()
    }

    fn create_claims(&mut self, claims: &[NewClaim]) -> Vec<Result<(), PortError>> {
        if let Err(e) = self.acting() {
            return claims.iter().map(|_| Err(e.clone())).collect();
        }
        let objects: Vec<Result<NodeClaim, PortError>> =
            claims.iter().map(|c| self.claim_object(c)).collect();
        let api = self.claims();
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let api = &api;
        let params = &params;
        let metrics = &*self.metrics;
        self.rt.wait(
            futures::stream::iter(objects.into_iter().zip(claims))
                .map(|(object, claim)| async move {
                    api.create(params, &object?)
                        .await
                        .map(|_| ())
                        .map_err(|e| failed(metrics, "creating NodeClaim", &claim.name, &e))
                })
                .buffered(WRITE_CONCURRENCY)
                .collect(),
        )
    }

    /// The launch is recorded (labels, then the Launched status) with the tick's other
    /// deferred writes in [`KubePort::flush`]: if that fails, the claim reads as unlaunched
    /// later and its next launch adopts the instance by its tag.
    fn launched(&mut self, claim: &NewClaim, node: Node) -> Result<(), PortError> {
        let offer = node.instance.offer.clone();
        let provider_id = format!("aws:///{}/{}", offer.zone, node.instance.id);
        let labels: BTreeMap<String, String> = node.labels.iter().cloned().collect();
        let name = node.name.clone();
        let (capacity, allocatable) = self
            .capacities
            .get(&offer.instance_type)
            .cloned()
            .unwrap_or_default();
        let message = format!(
            "{} in {} ({})",
            offer.instance_type,
            offer.zone,
            capacity_type_label(offer.capacity_type)
        );
        let status = json!({"status": {
            "providerID": provider_id,
            "capacity": capacity,
            "allocatable": allocatable,
            "conditions": [condition("Launched", true, "Launched", &message, self.now)],
        }});
        self.cluster.nodes.insert(name.clone(), node);
        self.launched.push(name.clone());
        let api = self.claims();
        let write_name = name.clone();
        let metrics = self.metrics.clone();
        self.metrics
            .nodeclaims_created
            .get_or_create(&vec![
                ("nodepool", claim.node_pool.clone()),
                ("reason", claim.purpose.to_string()),
                (
                    "capacity_type",
                    capacity_type_label(offer.capacity_type).to_string(),
                ),
                ("instance_type", offer.instance_type.clone()),
            ])
            .inc();
        self.writes.push(Box::pin(async move {
            let params = PatchParams::default();
            api.patch(
                &write_name,
                &params,
                &Patch::Merge(&json!({"metadata": {"labels": labels}})),
            )
            .await
            .map_err(|e| failed(&metrics, "labelling NodeClaim", &write_name, &e))?;
            api.patch_status(&write_name, &params, &Patch::Merge(&status))
                .await
                .map(|_| ())
                .map_err(|e| {
                    failed(
                        &metrics,
                        "recording the launch of NodeClaim",
                        &write_name,
                        &e,
                    )
                })
        }));
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
        let known = self.known_claim(claim);
        match super::delete_released(&self.rt, &self.claims(), claim, known.as_ref()) {
            Ok(()) => self.released(claim, known),
            Err(e) => {
                tracing::warn!(nodeclaim = claim, error = %e, "could not delete an abandoned NodeClaim")
            }
        }
    }

    fn nominate(&mut self, pod: &str, node: &str) {
        self.cluster.nominate(pod, node, self.now);
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
        self.acting()?;
        if self
            .known_claim(node)
            .is_some_and(|c| c.metadata.deletion_timestamp.is_some())
        {
            // Marked already, by a tick whose deletion the cache has not shown yet (the
            // snapshot offered the node again): nothing to write twice.
            if let Some(n) = self.cluster.nodes.get_mut(node) {
                n.taints.push(disrupted_taint());
                n.deletion = Some(deletion);
            }
            return Ok(());
        }
        let mut annotations = serde_json::Map::new();
        if let Some(r) = deletion.reason {
            annotations.insert(ANNOTATION_DISRUPTION.into(), reason_label(r).into());
        }
        if let Some(r) = &deletion.replacement {
            annotations.insert(ANNOTATION_REPLACEMENT.into(), r.clone().into());
        }
        if let Some(p) = &deletion.policy {
            annotations.insert(ANNOTATION_DISRUPTION_POLICY.into(), p.clone().into());
        }
        if !annotations.is_empty() {
            self.patch_claim(node, json!({"metadata": {"annotations": annotations}}))?;
        }
        // The taint first, so nothing new lands on the node while it drains.
        if let Some(kube_name) = self.kube_node_name(node) {
            self.taint(&kube_name)?;
        }
        let api = self.claims();
        let answer = self
            .rt
            .wait(api.delete(node, &DeleteParams::default()))
            .map_err(|e| failed(&self.metrics, "deleting NodeClaim", node, &e))?;
        if let Some(deleting) = answer.left() {
            self.remember_deleted(deleting);
        }
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
        self.acting()?;
        let answer = self.rt.wait(evict_call(self.client.clone(), pod));
        self.evicted(pod, node, answer)
    }

    fn delete_pod(&mut self, pod: &str, node: &str, grace_seconds: i64) -> Result<(), PortError> {
        self.acting()?;
        let answer = self
            .rt
            .wait(delete_call(self.client.clone(), pod, grace_seconds));
        self.deleted(pod, node, answer)
    }

    /// A drain's asks, [`EVICTIONS_IN_FLIGHT`] at a time (the client's rate limit paces them
    /// further), as Karpenter's eviction queue sends them; each answered as `evict` and
    /// `delete_pod` answer.
    fn evict_all(&mut self, asks: &[crate::controller::Ask]) -> Vec<Result<(), PortError>> {
        if let Err(e) = self.acting() {
            return asks.iter().map(|_| Err(e.clone())).collect();
        }
        let client = self.client.clone();
        let calls = asks.iter().map(|a| {
            let client = client.clone();
            let pod = a.pod.clone();
            let grace = a.grace;
            let leading = self.leading.clone();
            async move {
                // Each call checks the lease as it goes out: a replica that lost it mid-drain
                // sends nothing more.
                if leading.as_ref().is_some_and(|l| !*l.borrow()) {
                    return None;
                }
                Some(match grace {
                    None => evict_call(client, &pod).await,
                    Some(g) => delete_call(client, &pod, g).await,
                })
            }
        });
        let answers: Vec<Option<kube::Result<()>>> = self.rt.wait(
            futures::stream::iter(calls)
                .buffered(EVICTIONS_IN_FLIGHT)
                .collect(),
        );
        asks.iter()
            .zip(answers)
            .map(|(a, answer)| match (answer, a.grace) {
                (None, _) => Err(PortError::Failed(
                    "this replica lost the leader lease".into(),
                )),
                (Some(answer), None) => self.evicted(&a.pod, &a.node, answer),
                (Some(answer), Some(_)) => self.deleted(&a.pod, &a.node, answer),
            })
            .collect()
    }

    fn remove_node(&mut self, node: &str) -> Result<(), PortError> {
        self.acting()?;
        if let Some(kube_name) = self.kube_node_name(node) {
            let nodes: Api<KubeNode> = Api::all(self.client.clone());
            let cached = self.node_store.get(&ObjectRef::new(&kube_name));
            super::delete_released(&self.rt, &nodes, &kube_name, cached.as_deref())
                .map_err(|e| failed(&self.metrics, "deleting Node", &kube_name, &e))?;
        }
        let known = self.known_claim(node);
        super::delete_released(&self.rt, &self.claims(), node, known.as_ref())
            .map_err(|e| failed(&self.metrics, "deleting NodeClaim", node, &e))?;
        self.released(node, known);
        if let Some(n) = self.cluster.nodes.remove(node) {
            let reason = n
                .deletion
                .and_then(|d| d.reason)
                .map_or("deleted", reason_label);
            self.metrics
                .nodeclaims_terminated
                .get_or_create(&vec![
                    ("nodepool", n.instance.node_pool.clone()),
                    ("reason", reason.to_string()),
                ])
                .inc();
        }
        self.cluster
            .pods
            .retain(|_, p| p.node.as_deref() != Some(node));
        Ok(())
    }

    fn provisioned(&mut self, pods: usize, took: Duration) {
        self.metrics.batch_size.observe(pods as f64);
        self.metrics.scheduling_duration.observe(took.as_secs_f64());
    }

    fn disruption_round(&mut self, round: crate::controller::DisruptionRound) {
        let t = round.timings;
        let took = t.moves + t.policy + t.enforce;
        self.metrics.disruption_duration.observe(took.as_secs_f64());
        // A pass holds the loop: one that takes a second or more is worth an operator's eye
        // (the histogram has the others).
        if took >= Duration::from_secs(1) {
            tracing::info!(
                nodes = round.nodes,
                candidates = round.candidates,
                moves = round.moves,
                commands = round.commands,
                moves_ms = t.moves.as_millis() as u64,
                policy_ms = t.policy.as_millis() as u64,
                enforce_ms = t.enforce.as_millis() as u64,
                "slow disruption pass"
            );
        }
    }

    fn record(&mut self, event: EventKind) {
        self.publish_event(event);
    }

    fn take_signals(&mut self) -> Vec<Signal> {
        std::mem::take(&mut self.signals)
    }

    /// Karpenter's registration ([`KubePort::adopt`]).
    fn register(&mut self, claim: &str, node: &str, initialized: bool) -> Result<(), PortError> {
        self.adopt(claim, node, initialized)
    }

    fn initialized(&mut self, claim: &str) -> Result<(), PortError> {
        self.write_initialized(claim)
    }

    /// Every NodeClaim the cache holds, and those launched this tick that it does not yet: a
    /// claim being deleted, or one the snapshot could not model, still owns its instance.
    fn claim_names(&self) -> std::collections::HashSet<String> {
        self.claim_store
            .state()
            .iter()
            .map(|c| c.name_any())
            .chain(self.launched.iter().cloned())
            .chain(self.cluster.nodes.keys().cloned())
            .chain(self.cluster.unlaunched.iter().map(|u| u.name.clone()))
            .collect()
    }

    fn cloud_reached(&mut self, ok: bool) {
        self.cloud_reached = Some(ok);
    }
}

impl KubePort {
    /// A pod asked to go is no longer one to schedule or move, but it still runs on its node
    /// until the kubelet has stopped it: the node waits for it (the observer sees it go).
    fn stopping(&mut self, pod: &str, node: &str) {
        self.cluster.pods.remove(pod);
        if let Some(n) = self.cluster.nodes.get_mut(node) {
            n.terminating.insert(pod.to_string());
        }
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

/// How long a released claim is remembered: far longer than any informer lags.
const TOMBSTONE_SECONDS: i64 = 600;

/// Whether the controller's finalizer is still on the claim.
fn holds_finalizer(claim: &NodeClaim) -> bool {
    claim
        .metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == super::FINALIZER))
}
