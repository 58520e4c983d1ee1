//! What the port tells of the core's events: Kubernetes Events on claims, pods and NodePools, and
//! the metrics they count; and what an eviction's or a deletion's answer means.

use super::*;

impl KubePort {
    /// What an eviction's answer means: the pod is stopping, was gone already, or stays (a
    /// budget's refusal is a Warning Event on its claim).
    pub(super) fn evicted(
        &mut self,
        pod: &str,
        node: &str,
        answer: kube::Result<()>,
    ) -> Result<(), PortError> {
        let outcome = |o: &str| vec![("outcome", o.to_string())];
        match answer {
            Ok(()) => {
                self.metrics
                    .evictions
                    .get_or_create(&outcome("evicted"))
                    .inc();
            }
            Err(e) if not_found(&e) => {
                self.cluster.pods.remove(pod);
                return Ok(());
            }
            Err(e) => {
                let err = failed(&self.metrics, "evicting Pod", pod, &e);
                let o = if matches!(err, PortError::Refused(_)) {
                    "refused_by_pdb"
                } else {
                    "failed"
                };
                self.metrics.evictions.get_or_create(&outcome(o)).inc();
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
        self.stopping(pod, node);
        Ok(())
    }

    /// What a direct deletion's answer means.
    pub(super) fn deleted(
        &mut self,
        pod: &str,
        node: &str,
        answer: kube::Result<()>,
    ) -> Result<(), PortError> {
        match answer {
            Ok(()) => {
                self.metrics
                    .evictions
                    .get_or_create(&vec![("outcome", "deleted".to_string())])
                    .inc();
            }
            Err(e) if not_found(&e) => {
                self.cluster.pods.remove(pod);
                return Ok(());
            }
            Err(e) => return Err(failed(&self.metrics, "deleting Pod", pod, &e)),
        }
        self.stopping(pod, node);
        Ok(())
    }

    pub(super) fn pool_ref(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some(NodePool::api_version(&()).into()),
            kind: Some("NodePool".into()),
            name: Some(name.into()),
            ..Default::default()
        }
    }

    /// What a NodePool's owner should see on it: its limits reached (a pod could not get a
    /// node because of them), or one of its policies failing.
    pub(super) fn tell_node_pools(&self, event: &EventKind) {
        match event {
            EventKind::Unschedulable { reason, .. } => {
                for part in reason.split("; ") {
                    if let Some((pool, why)) = part
                        .strip_prefix("NodePool ")
                        .and_then(|p| p.split_once(": "))
                        && why.starts_with("limits reached")
                    {
                        self.publish(
                            Self::pool_ref(pool),
                            EventType::Warning,
                            "LimitsReached",
                            format!("pending pods need more than the limits allow: {why}"),
                        );
                    }
                }
            }
            EventKind::PolicyFailed { policy, error } => {
                for p in &self.cluster.pools {
                    let policies = &p.resource.spec.policies;
                    if policies.scoring == *policy || policies.consolidation == *policy {
                        self.publish(
                            Self::pool_ref(&p.spec.name),
                            EventType::Warning,
                            "PolicyFailed",
                            format!(
                                "policy {policy} failed ({error}); onFailure {:?} decided",
                                policies.on_failure
                            ),
                        );
                    }
                }
            }
            _ => {}
        }
    }

    /// The metrics an event stands for.
    pub(super) fn count(&self, event: &EventKind) {
        let decision = |reason: &str, policy: &str, outcome: &str, why: &str| {
            self.metrics
                .disruption_decisions
                .get_or_create(&vec![
                    ("reason", reason.to_string()),
                    ("policy", policy.to_string()),
                    ("outcome", outcome.to_string()),
                    ("why", why.to_string()),
                ])
                .inc();
        };
        match event {
            EventKind::NotLaunched { .. } => {
                self.metrics.nodeclaims_not_launched.inc();
            }
            EventKind::Disrupting { reason, policy, .. } => {
                decision(reason, policy, "executed", "")
            }
            EventKind::Kept { why, .. } => decision("", "", "kept_by_policy", why_label(why)),
            EventKind::Overruled { why, .. } => {
                decision("", "", "overruled_by_host", why_label(why))
            }
            EventKind::Blocked { why, .. } => decision("", "", "blocked", why_label(why)),
            _ => {}
        }
    }

    /// A core event as a Kubernetes Event (and its metrics), for the people who look.
    pub(super) fn publish_event(&mut self, event: EventKind) {
        self.count(&event);
        self.tell_node_pools(&event);
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
            EventKind::TerminationFailed {
                node,
                instance,
                error,
            } => (
                self.claim_ref(node),
                EventType::Warning,
                "FailedTerminating",
                format!("terminating {instance}: {error}"),
            ),
            EventKind::NeverJoined {
                node,
                instance,
                waited_seconds,
            } => (
                self.claim_ref(node),
                EventType::Warning,
                "NodeNeverJoined",
                format!(
                    "the instance {instance} has not registered as a Node after {}m: check that the node role may join the cluster (an EKS access entry or the aws-auth ConfigMap) and that its subnets reach the API server; deleting it",
                    waited_seconds / 60
                ),
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
}
