//! The claim lifecycle after launch, carried out: [`crate::lifecycle`] decides registration,
//! initialization and liveness.

use super::*;

impl Controller {
    /// Registration, initialization and liveness of launched claims ([`crate::lifecycle`]).
    pub(super) fn lifecycle(
        &mut self,
        now: i64,
        port: &mut dyn ClusterPort,
        cloud: &mut dyn CloudProvider,
    ) {
        use crate::lifecycle::Step;
        let steps = crate::lifecycle::decide(port.cluster(), self.settings.registration_ttl, now);
        let nodes = &port.cluster().nodes;
        self.lifecycle_asked
            .retain(|(claim, _), at| nodes.contains_key(claim) && now < *at + LIFECYCLE_RETRY);
        for step in steps {
            let asked = match &step {
                Step::Register { claim, .. } => (claim.clone(), "register"),
                Step::Initialize { claim } => (claim.clone(), "initialize"),
                Step::NeverJoined { claim, .. } => (claim.clone(), "delete"),
            };
            if self.lifecycle_asked.contains_key(&asked) {
                continue;
            }
            self.lifecycle_asked.insert(asked, now);
            match step {
                Step::Register {
                    claim,
                    node,
                    initialized,
                } => {
                    if let Err(e) = port.register(&claim, &node, initialized) {
                        tracing::warn!(nodeclaim = %claim, node = %node, error = %e, "could not register the node");
                    }
                }
                Step::Initialize { claim } => {
                    if let Err(e) = port.initialized(&claim) {
                        tracing::warn!(nodeclaim = %claim, error = %e, "could not mark the claim initialized");
                    }
                }
                Step::NeverJoined {
                    claim,
                    instance,
                    waited,
                } => {
                    self.emit(
                        port,
                        EventKind::NeverJoined {
                            node: claim.clone(),
                            instance: instance.clone(),
                            waited_seconds: waited,
                        },
                    );
                    if let Err(e) = cloud.delete(&instance) {
                        tracing::warn!(nodeclaim = %claim, instance = %instance, error = %e, "terminating the unregistered instance failed");
                        continue;
                    }
                    if let Err(e) = port.remove_node(&claim) {
                        tracing::warn!(nodeclaim = %claim, error = %e, "could not delete the unregistered NodeClaim");
                        continue;
                    }
                    // Its pods are pending again.
                    self.kick(port.cluster(), now);
                    self.changed(now);
                }
            }
        }
    }
}
