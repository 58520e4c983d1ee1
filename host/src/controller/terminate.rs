//! Termination: draining nodes being deleted (evictions within PDBs and the grace period) and
//! terminating their instances once drained.

use super::*;

impl Controller {
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
        let mut refused: Vec<String> = Vec::new();
        // Evictions, then the deletions a grace period forces (with their shortened grace), in
        // one batch the port may send concurrently.
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
        let answers = if asks.is_empty() {
            Vec::new()
        } else {
            port.evict_all(&asks)
        };
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
        let disrupted = cluster::disrupted_taint();
        let candidates: std::collections::BTreeSet<&String> =
            plan.terminate.iter().chain(&plan.expired).collect();
        for name in candidates {
            let expired = plan.expired.contains(name);
            if refused.contains(name) && !expired {
                continue;
            }
            let Some(node) = port.cluster().nodes.get(name) else {
                continue;
            };
            // Evicted is not gone: the instance waits until its pods have stopped (or the
            // grace period is over), so their preStop hooks and volumes are not cut short.
            let still: usize = node.terminating.len()
                + port
                    .cluster()
                    .pods_on(name)
                    .filter(|p| !p.spec.tolerations.iter().any(|t| t.tolerates(&disrupted)))
                    .count();
            if still > 0 && !expired {
                tracing::debug!(node = %name, pods = still, "waiting for the node's pods to stop");
                continue;
            }
            // Then for its volumes to detach — those of pods that stay with it excepted.
            let cluster = port.cluster();
            let kept: std::collections::BTreeSet<&str> = cluster
                .pods_on(name)
                .flat_map(|p| &p.spec.volume_claims)
                .filter_map(|c| cluster.volumes.volume_of(c))
                .collect();
            let attached = node
                .attached
                .iter()
                .filter(|v| !kept.contains(v.as_str()))
                .count();
            if attached > 0 && !expired {
                tracing::debug!(node = %name, volumes = attached, "waiting for the node's volumes to detach");
                continue;
            }
            let name = name.clone();
            let (id, launched_at) = (node.instance.id.clone(), node.launched_at);
            if let Err(e) = cloud.delete(&id) {
                let kind = EventKind::TerminationFailed {
                    node: name.clone(),
                    instance: id,
                    error: e.to_string(),
                };
                // Retried every drain round: the same failure is told once.
                if !self.recent.contains(&kind) {
                    self.emit(port, kind);
                }
                continue;
            }
            if let Err(e) = port.remove_node(&name) {
                tracing::warn!(node = %name, error = %e, "could not remove the terminated node");
                continue;
            }
            self.emit(
                port,
                EventKind::Terminated {
                    node: name.clone(),
                    lived_seconds: now - launched_at,
                },
            );
            self.kick(port.cluster(), now);
            self.changed(now);
        }
    }
}
