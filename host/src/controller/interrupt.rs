//! Interruptions (EC2 notices from the queue: replace, then drain) and garbage collection (nodes
//! whose instance vanished, instances no claim owns).

use super::*;

impl Controller {
    /// Handles what the interruption queue holds.
    pub(super) fn poll_interruptions(
        &mut self,
        now: i64,
        port: &mut dyn ClusterPort,
        cloud: &mut dyn CloudProvider,
        q: &mut dyn Interruptions,
    ) {
        let received = match q.poll() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "polling the interruption queue failed");
                return;
            }
        };
        for r in received {
            let action = crate::interruption::action(&r.notice, false);
            if action == Action::Replace {
                for id in &r.notice.instance_ids {
                    let node = port
                        .cluster()
                        .nodes
                        .values()
                        .find(|n| n.instance.id == *id)
                        .map(|n| n.name.clone());
                    match node {
                        Some(n) => self.interrupt(now, &n, &r.notice.kind, port, cloud),
                        None => {
                            tracing::info!(instance = %id, "interruption for an instance that is not ours")
                        }
                    }
                }
            }
            if let Err(e) = q.done(&r, action) {
                tracing::warn!(error = %e, "could not delete an interruption message");
            }
        }
    }

    /// EC2 announced the node's instance is going: the replacement is launched now, in parallel
    /// with the drain (a spot node has two minutes), and a spot offering is left out a while.
    pub fn interrupt(
        &mut self,
        now: i64,
        node: &str,
        kind: &InterruptionKind,
        port: &mut dyn ClusterPort,
        cloud: &mut dyn CloudProvider,
    ) {
        let Some(n) = port.cluster().nodes.get(node) else {
            return;
        };
        if n.deletion.is_some() {
            return;
        }
        let offer = n.instance.offer.clone();
        let deletion = Deletion::by_hand(now);
        if let Err(e) = port.mark_deleting(node, deletion) {
            tracing::warn!(node, error = %e, "could not mark the interrupted node");
            return;
        }
        if *kind == InterruptionKind::SpotInterruption {
            cloud.mark_unavailable(&offer.instance_type, &offer.zone, offer.capacity_type);
        }
        self.emit(
            port,
            EventKind::Interrupted {
                node: node.to_string(),
                kind: kind.label(),
            },
        );
        let pods: Vec<String> = port
            .cluster()
            .pods_on(node)
            .map(|p| p.spec.name.clone())
            .collect();
        self.provision_pods(now, pods, false, port, cloud);
        self.changed(now);
    }

    /// Nodes whose instance is gone (terminated outside the controller) are removed.
    pub(super) fn collect_vanished(
        &mut self,
        now: i64,
        port: &mut dyn ClusterPort,
        cloud: &mut dyn CloudProvider,
    ) {
        let claims: BTreeMap<String, String> = port
            .cluster()
            .nodes
            .values()
            .map(|n| (n.name.clone(), n.instance.id.clone()))
            .collect();
        if claims.is_empty() {
            return;
        }
        let gone = match cloud.vanished(&claims) {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "listing instances failed");
                return;
            }
        };
        for name in gone {
            if !port.cluster().nodes.contains_key(&name) {
                continue;
            }
            self.emit(port, EventKind::InstanceGone { node: name.clone() });
            if let Err(e) = port.remove_node(&name) {
                tracing::warn!(node = %name, error = %e, "could not remove the node");
                continue;
            }
            self.kick(port.cluster(), now);
            self.changed(now);
        }
    }

    /// Instances of the cluster no claim owns, older than the grace period, are terminated.
    pub(super) fn collect_orphans(
        &mut self,
        now: i64,
        port: &mut dyn ClusterPort,
        cloud: &mut dyn CloudProvider,
    ) {
        let claims = port.claim_names();
        match cloud.collect_garbage(&claims, self.settings.orphan_grace, now) {
            Ok(gone) => {
                if !gone.is_empty() {
                    tracing::info!(instances = ?gone, "terminated instances no NodeClaim claims");
                }
                port.cloud_reached(true);
            }
            Err(e) => {
                tracing::warn!(error = %e, "garbage collection failed");
                port.cloud_reached(false);
            }
        }
    }
}
