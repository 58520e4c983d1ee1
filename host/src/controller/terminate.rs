//! Termination: draining nodes being deleted (evictions within PDBs and the grace period) and
//! terminating their instances once drained.

use super::*;
use crate::termination::Waiting;

impl Controller {
    /// Drains the nodes being deleted and terminates the instances of those drained.
    pub(super) fn terminate(
        &mut self,
        now: i64,
        port: &mut dyn ClusterPort,
        cloud: &mut dyn CloudProvider,
    ) {
        let plan = crate::termination::plan(port.cluster(), now);
        if !plan.evict.is_empty() || !plan.terminate.is_empty() {
            tracing::debug!(evict = plan.evict.len(), terminate = ?plan.terminate, "termination plan");
        }
        let refused = self.evict(&plan, port);
        let candidates: std::collections::BTreeSet<&String> =
            plan.terminate.iter().chain(&plan.expired).collect();
        for name in candidates {
            let expired = plan.expired.contains(name);
            if refused.contains(name) && !expired {
                continue;
            }
            match crate::termination::waiting_on(port.cluster(), name) {
                Some(Waiting::Pods(pods)) if !expired => {
                    tracing::debug!(node = %name, pods, "waiting for the node's pods to stop");
                    continue;
                }
                Some(Waiting::Volumes(volumes)) if !expired => {
                    tracing::debug!(node = %name, volumes, "waiting for the node's volumes to detach");
                    continue;
                }
                _ => {}
            }
            self.terminate_node(now, name, port, cloud);
        }
    }

    /// Evictions, then the deletions a grace period forces (with their shortened grace), in one
    /// batch the port may send concurrently. Returns the nodes a PDB kept a pod on.
    fn evict(
        &mut self,
        plan: &crate::termination::Plan,
        port: &mut dyn ClusterPort,
    ) -> Vec<String> {
        let asks = drain_order(
            plan.evict
                .iter()
                .map(|(pod, node)| Ask {
                    pod: pod.clone(),
                    node: node.clone(),
                    grace: None,
                })
                .chain(plan.delete.iter().map(|(pod, node, g)| Ask {
                    pod: pod.clone(),
                    node: node.clone(),
                    grace: Some(*g),
                }))
                .collect(),
        );
        if asks.is_empty() {
            return Vec::new();
        }
        let answers = port.evict_all(&asks);
        let mut refused = Vec::new();
        for (ask, done) in asks.iter().zip(answers) {
            let (pod, node) = (&ask.pod, &ask.node);
            match done {
                Ok(()) => self.emit(
                    port,
                    EventKind::Evicted {
                        pod: pod.clone(),
                        node: node.clone(),
                    },
                ),
                Err(e) => {
                    tracing::info!(pod, node, reason = %e, "eviction not allowed yet");
                    refused.push(node.clone());
                }
            }
        }
        refused
    }

    /// Terminates a drained node's instance, then removes the node.
    fn terminate_node(
        &mut self,
        now: i64,
        name: &str,
        port: &mut dyn ClusterPort,
        cloud: &mut dyn CloudProvider,
    ) {
        let Some(node) = port.cluster().nodes.get(name) else {
            return;
        };
        let (id, launched_at) = (node.instance.id.clone(), node.launched_at);
        if let Err(e) = cloud.delete(&id) {
            let kind = EventKind::TerminationFailed {
                node: name.to_string(),
                instance: id,
                error: e.to_string(),
            };
            // Retried every drain round: the same failure is told once.
            if !self.recent.contains(&kind) {
                self.emit(port, kind);
            }
            return;
        }
        if let Err(e) = port.remove_node(name) {
            tracing::warn!(node = %name, error = %e, "could not remove the terminated node");
            return;
        }
        self.emit(
            port,
            EventKind::Terminated {
                node: name.to_string(),
                lived_seconds: now - launched_at,
            },
        );
        self.kick(port.cluster(), now);
        self.changed(now);
    }
}
