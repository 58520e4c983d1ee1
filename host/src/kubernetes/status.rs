//! Status writes of the Kubernetes world: which Node each NodeClaim registered as, NodePool and
//! EC2NodeClass status. (The claims' lifecycle is decided in the core, [`crate::lifecycle`].)

use std::collections::HashMap;

use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::Kube;
use super::act::condition;
use super::{observe::PoolProblem, stores::Stores};
use crate::api::{EC2NodeClass, NodePool};
use crate::cloud::CloudProvider;
use crate::cluster::Cluster;
use crate::policy::shadow::ShadowRole;

/// EC2NodeClass resolution, redone when a class changes; its status says what was found.
#[derive(Debug, Default)]
pub struct NodeClasses {
    seen: HashMap<String, String>,
    /// Whether this process has swept the profiles of classes deleted while none ran.
    swept: bool,
}

impl NodeClasses {
    pub fn resolve(
        &mut self,
        stores: &Stores,
        cloud: &mut dyn CloudProvider,
        kube: &Kube,
        now: i64,
    ) {
        let (client, rt) = (&kube.client, &kube.rt);
        let api: Api<EC2NodeClass> = Api::all(client.clone());
        // A class deleted: what the cloud made for it goes too (its instance profile), once no
        // NodeClaim launched from it is left (their instances still use the profile).
        let live: std::collections::HashSet<String> = stores
            .node_classes
            .state()
            .iter()
            .map(|c| c.name_any())
            .chain(
                stores
                    .node_claims
                    .state()
                    .iter()
                    .map(|c| c.spec.node_class_ref.name.clone()),
            )
            .collect();
        if !self.swept {
            match cloud.collect_node_classes(&live.iter().cloned().collect()) {
                Ok(removed) => {
                    self.swept = true;
                    if !removed.is_empty() {
                        tracing::info!(?removed, "removed what deleted EC2NodeClasses left behind");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not sweep what deleted EC2NodeClasses left behind (retried)");
                }
            }
        }
        let gone: Vec<String> = self
            .seen
            .keys()
            .filter(|n| !live.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            match cloud.remove_node_class(&name) {
                Ok(()) => {
                    tracing::info!(node_class = %name, "EC2NodeClass deleted; its instance profile removed");
                    self.seen.remove(&name);
                }
                Err(e) => {
                    tracing::warn!(node_class = %name, error = %e, "EC2NodeClass deleted; removing its instance profile failed (retried)");
                }
            }
        }
        for c in stores.node_classes.state() {
            let name = c.name_any();
            let version = c.resource_version().unwrap_or_default();
            let spec_version = serde_json::to_string(&c.spec).unwrap_or_default();
            if self.seen.get(&name) == Some(&spec_version) {
                continue;
            }
            self.seen.insert(name.clone(), spec_version);
            let checked = crate::scheduling::from_kube::node_settings(&name, &c.spec)
                .map_err(|e| format!("{}: {}", e.field, e.message))
                .and_then(|_| cloud.node_class(&name, &c.spec).map_err(|e| e.to_string()));
            let status = match checked {
                Ok(()) => cloud.node_class_status(&name, now).unwrap_or_else(|| {
                    crate::api::ec2nodeclass::EC2NodeClassStatus {
                        conditions: vec![ready(true, "Resolved", "", now)],
                        ..Default::default()
                    }
                }),
                Err(reason) => {
                    tracing::warn!(node_class = %name, reason = %reason, "EC2NodeClass not ready");
                    crate::api::ec2nodeclass::EC2NodeClassStatus {
                        conditions: vec![ready(false, "ResolutionFailed", &reason, now)],
                        ..Default::default()
                    }
                }
            };
            let patch = json!({"status": status});
            if let Err(e) =
                rt.wait(api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)))
            {
                tracing::warn!(node_class = %name, version, error = %e, "could not write the EC2NodeClass status");
            }
        }
    }
}

/// A Warning Event's reason and message.
type Warning = Option<(&'static str, String)>;

/// NodePool status: Ready with a reason, and resources in use; written when it changes.
#[derive(Debug, Default)]
pub struct PoolStatus {
    written: HashMap<String, serde_json::Value>,
}

impl PoolStatus {
    pub fn write(
        &mut self,
        cluster: &Cluster,
        its: &crate::scheduling::InstanceTypes,
        registry: &crate::policy::PolicyRegistry,
        problems: &[PoolProblem],
        kube: &Kube,
        now: i64,
    ) {
        let (client, rt, recorder) = (&kube.client, &kube.rt, &kube.events);
        let api: Api<NodePool> = Api::all(client.clone());
        // Per pool: the status to write, and the Warning (reason, message) it comes with.
        let mut wanted: Vec<(String, serde_json::Value, Warning)> = Vec::new();
        for p in problems {
            let status =
                json!({"conditions": [condition("Ready", false, "InvalidSpec", &p.reason, 0)]});
            wanted.push((
                p.node_pool.clone(),
                status,
                Some(("InvalidSpec", p.reason.clone())),
            ));
        }
        for (pool, spec) in cluster.pools.iter().zip(cluster.pool_specs(its)) {
            let nodes = cluster
                .nodes
                .values()
                .filter(|n| n.instance.node_pool == pool.spec.name)
                .count();
            let resources = json!({
                "cpu": format!("{}m", spec.in_use.cpu_millis),
                "memory": format!("{}Ki", spec.in_use.memory_bytes / 1024),
                "nodes": nodes.to_string(),
            });
            let policies = &pool.resource.spec.policies;
            let mut in_use = serde_json::Map::new();
            let mut missing = Vec::new();
            for (role, name) in [
                ("scoring", &policies.scoring),
                ("consolidation", &policies.consolidation),
            ] {
                match registry.get(name) {
                    Ok(p) => {
                        in_use.insert(
                            role.into(),
                            json!({"name": name, "digest": p.info().digest}),
                        );
                    }
                    Err(e) => {
                        let why = registry
                            .status(name)
                            .map(|s| s.message)
                            .unwrap_or_else(|| e.to_string());
                        missing.push(format!("{role} policy {name} is not serving ({why})"));
                        // null: a merge patch removes the digest written while it served.
                        in_use.insert(role.into(), json!({"name": name, "digest": null}));
                    }
                }
            }
            // Shadow candidates, by role: named while the pool names them (null removes the
            // key from the status when it stops), never a reason for the pool not to be ready.
            for (role, key) in [
                (ShadowRole::Scoring, "shadowScoring"),
                (ShadowRole::Consolidation, "shadowConsolidation"),
            ] {
                let shown = policies.shadow_of(role).map(|name| {
                    let digest = registry.get(name).ok().map(|p| p.info().digest.clone());
                    json!({"name": name, "digest": digest})
                });
                in_use.insert(key.into(), shown.unwrap_or(serde_json::Value::Null));
            }
            let policies_ready = if missing.is_empty() {
                condition("PoliciesReady", true, "Serving", "", 0)
            } else {
                let then = match policies.on_failure {
                    crate::api::nodepool::OnFailure::Fallback => {
                        "onFailure Fallback: the built-in defaults decide"
                    }
                    crate::api::nodepool::OnFailure::Block => {
                        "onFailure Block: no decisions for this pool"
                    }
                };
                condition(
                    "PoliciesReady",
                    false,
                    "PolicyNotServing",
                    &format!("{}; {then}", missing.join("; ")),
                    0,
                )
            };
            let warning = (!missing.is_empty()).then(|| {
                (
                    "PolicyNotServing",
                    policies_ready["message"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            });
            let status = json!({
                "conditions": [condition("Ready", true, "Ready", "", 0), policies_ready],
                "resources": resources,
                "policies": in_use,
            });
            wanted.push((pool.spec.name.clone(), status, warning));
        }
        for (name, key, warning) in wanted {
            if self.written.get(&name) == Some(&key) {
                continue;
            }
            let mut status = key.clone();
            for c in status["conditions"].as_array_mut().into_iter().flatten() {
                c["lastTransitionTime"] = super::rfc3339(now).into();
            }
            match rt.wait(api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            )) {
                Ok(np) => {
                    self.written.insert(name.clone(), key);
                    if let Some((reason, message)) = warning {
                        tracing::warn!(nodepool = %name, reason, message = %message, "NodePool not ready");
                        recorder.publish(np.object_ref(&()), EventType::Warning, reason, message);
                    }
                }
                Err(e) => {
                    tracing::warn!(nodepool = %name, error = %e, "could not write the NodePool status")
                }
            }
        }
    }
}

fn ready(
    ok: bool,
    reason: &str,
    message: &str,
    now: i64,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    serde_json::from_value(condition("Ready", ok, reason, message, now)).expect("a condition")
}
