//! The pod cache. Pods are the bulk of what the controller watches (20,000 in a big cluster),
//! so each one is converted once, when it changes, into what decisions read — its scheduling
//! model and a few facts — instead of being kept as kube's full `Pod` (about 2.5 kB of structs
//! each, held twice while kube's store clones it) and converted again every tick. A pod that
//! cannot be read is logged once, when it changes, not every tick.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod as KubePod;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use tokio::sync::{Notify, watch};

use super::timestamp;
use crate::cluster::DO_NOT_DISRUPT;
use crate::scheduling::PendingPod;
use crate::scheduling::from_kube::{pending_pod, workload_owner};

/// A pod as decisions read it.
#[derive(Debug, Clone)]
pub struct ObservedPod {
    /// `namespace/name`.
    pub id: String,
    /// Deleting, finished (Succeeded, Failed), or a DaemonSet's or static pod: not ours to
    /// schedule or count.
    pub ignored: bool,
    /// Asked to go (`deletionTimestamp`) and still on its node: a drain waits for it. Not a
    /// DaemonSet's or static pod (those are not drained), not finished.
    pub terminating: bool,
    pub node_name: Option<String>,
    /// kube-scheduler found no node (PodScheduled=False, reason Unschedulable).
    pub unschedulable: bool,
    /// Phase Running.
    pub running: bool,
    /// Its Ready condition is True (what a PodDisruptionBudget counts as healthy).
    pub ready: bool,
    /// `status.startTime`.
    pub start_time: Option<i64>,
    pub created_at: Option<i64>,
    /// `namespace/name` of its controller (a ReplicaSet…).
    pub controller: Option<String>,
    pub do_not_disrupt: bool,
    /// Its scheduling model, or why it cannot be read.
    pub spec: Result<Arc<PendingPod>, String>,
}

impl ObservedPod {
    pub fn from_kube(p: &KubePod) -> ObservedPod {
        let ns = p.namespace().unwrap_or_else(|| "default".into());
        let id = format!("{ns}/{}", p.name_any());
        let status = p.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
        let controller = p
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true));
        let finished = phase == "Succeeded" || phase == "Failed";
        let daemon = controller.is_some_and(|o| o.kind == "DaemonSet" || o.kind == "Node");
        let deleting = p.meta().deletion_timestamp.is_some();
        let ignored = deleting || finished || daemon;
        let terminating = deleting && !finished && !daemon;
        let unschedulable = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
            });
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let spec = match p.spec.as_ref() {
            None => Err("no spec".to_string()),
            Some(spec) if !ignored => {
                pending_pod(&format!("Pod/{id}"), "spec", &id, p.labels(), spec)
                    .map(|mut s| {
                        s.owner = workload_owner(p.owner_references(), p.labels());
                        Arc::new(s)
                    })
                    .map_err(|e| {
                        tracing::warn!(pod = %id, error = %e, "ignoring a pod that cannot be read");
                        e.to_string()
                    })
            }
            Some(_) => Err("not scheduled by Dovetail".to_string()),
        };
        ObservedPod {
            node_name: p.spec.as_ref().and_then(|s| s.node_name.clone()),
            unschedulable,
            running: phase == "Running",
            ready,
            start_time: status.and_then(|s| s.start_time.as_ref()).map(timestamp),
            created_at: p.meta().creation_timestamp.as_ref().map(timestamp),
            controller: controller.map(|o| format!("{ns}/{}", o.name)),
            do_not_disrupt: p
                .annotations()
                .get(DO_NOT_DISRUPT)
                .is_some_and(|v| v == "true"),
            ignored,
            terminating,
            spec,
            id,
        }
    }
}

/// The cache: pod id → what was observed, and whether the first list is in.
#[derive(Clone)]
pub struct PodCache {
    pods: Arc<RwLock<HashMap<String, Arc<ObservedPod>>>>,
    ready: watch::Receiver<bool>,
}

impl PodCache {
    /// Watches `api` on the current runtime; `changed` is told of every change.
    pub fn start(api: Api<KubePod>, changed: Arc<Notify>) -> PodCache {
        let pods: Arc<RwLock<HashMap<String, Arc<ObservedPod>>>> = Arc::default();
        let (ready_tx, ready) = watch::channel(false);
        let cache = pods.clone();
        tokio::spawn(async move {
            let mut stream =
                std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
            // A relist builds a fresh map and swaps it in whole (pods deleted meanwhile go).
            let mut fresh: Option<HashMap<String, Arc<ObservedPod>>> = None;
            while let Some(event) = stream.next().await {
                let write = || cache.write().unwrap_or_else(|p| p.into_inner());
                match event {
                    Ok(watcher::Event::Init) => fresh = Some(HashMap::new()),
                    Ok(watcher::Event::InitApply(p)) => {
                        let o = ObservedPod::from_kube(&p);
                        fresh
                            .get_or_insert_with(HashMap::new)
                            .insert(o.id.clone(), Arc::new(o));
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(f) = fresh.take() {
                            *write() = f;
                        }
                        let _ = ready_tx.send(true);
                        changed.notify_one();
                    }
                    Ok(watcher::Event::Apply(p)) => {
                        let o = ObservedPod::from_kube(&p);
                        write().insert(o.id.clone(), Arc::new(o));
                        changed.notify_one();
                    }
                    Ok(watcher::Event::Delete(p)) => {
                        let id = format!(
                            "{}/{}",
                            p.namespace().unwrap_or_else(|| "default".into()),
                            p.name_any()
                        );
                        write().remove(&id);
                        changed.notify_one();
                    }
                    Err(e) => {
                        let why = super::watch_failure("pods", &e);
                        tracing::warn!(resource = "pods", error = %why, "watch failed; retrying with backoff")
                    }
                }
            }
        });
        PodCache { pods, ready }
    }

    /// Every pod observed.
    pub fn state(&self) -> Vec<Arc<ObservedPod>> {
        self.pods
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Waits for the first list.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|r| *r).await;
    }
}
