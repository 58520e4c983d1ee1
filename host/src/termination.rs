//! Termination: a node marked for deletion — by disruption, by a user, or by the cloud — is
//! drained through evictions that honour PodDisruptionBudgets; its instance is terminated once
//! its pods are *gone*, not merely evicted (an evicted pod runs its grace period and preStop
//! hooks first), and it is removed (the finalizer's job in a cluster). A node waiting for its
//! replacement is not drained until the replacement is Ready.
//!
//! The NodePool's `terminationGracePeriod` bounds it all, as Karpenter's does: a pod the
//! Eviction API would keep refusing (a PodDisruptionBudget, do-not-disrupt) is deleted directly
//! once its own grace would no longer end by the deadline, with its grace shortened to end
//! there; at the deadline the instance is terminated whatever still runs.

use crate::cluster::{Cluster, Eviction, disrupted_taint};

/// What one termination pass decides: the evictions PDBs allow now, and the nodes with nothing
/// left to wait for. Nothing is changed here; the controller carries it out.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// (pod, node) evictions, in node order.
    pub evict: Vec<(String, String)>,
    /// (pod, node, grace seconds): deletions that bypass the Eviction API, because the node's
    /// `terminationGracePeriod` will end before the pod would otherwise go.
    pub delete: Vec<(String, String, i64)>,
    /// Nodes with nothing left that must be asked to go: their instance is terminated once no
    /// pod is left on them (the controller checks after carrying out the evictions).
    pub terminate: Vec<String>,
    /// Nodes past their `terminationGracePeriod`: terminated whatever still runs on them.
    pub expired: Vec<String>,
}

/// Drains every deleting node as far as budgets allow; the drained ones are to be terminated.
pub fn plan(cluster: &Cluster, now: i64) -> Plan {
    let mut out = Plan::default();
    let mut allowance = cluster.pdb_allowance();
    let by_node = cluster.pods_by_node();
    let disrupted = disrupted_taint();
    for node in cluster.nodes.values() {
        let Some(deletion) = node.deletion.as_ref() else {
            continue;
        };
        if let Some(r) = &deletion.replacement
            && cluster.nodes.get(r).is_some_and(|r| r.ready_at.is_none())
        {
            continue;
        }
        let grace = cluster.pool_index(&node.instance.node_pool).and_then(|i| {
            cluster.pools[i]
                .resource
                .spec
                .template
                .spec
                .termination_grace_period
                .as_deref()
                .and_then(|g| crate::api::duration::parse(g).ok().flatten())
        });
        let deadline = grace.map(|g| deletion.since + g.as_secs() as i64);
        let expired = deadline.is_some_and(|d| now >= d);
        let mut left = 0;
        for pod in by_node.get(node.name.as_str()).into_iter().flatten() {
            // A pod that tolerates the disrupted taint would only land here again (as
            // Karpenter, it is left to go with the node).
            if pod.spec.tolerations.iter().any(|t| t.tolerates(&disrupted)) {
                continue;
            }
            let verdict = if pod.do_not_disrupt {
                Eviction::Refused(String::new())
            } else {
                cluster.eviction(pod, &allowance)
            };
            if let Eviction::Refused(_) = verdict {
                // Deleted directly once its own grace would no longer end by the deadline.
                match deadline {
                    Some(d) if now >= d - pod.spec.grace_seconds => {
                        out.delete.push((
                            pod.spec.name.clone(),
                            node.name.clone(),
                            (d - now).max(0),
                        ));
                    }
                    _ => left += 1,
                }
                continue;
            }
            if let Eviction::Spends(i) = verdict {
                allowance[i] -= 1;
            }
            out.evict.push((pod.spec.name.clone(), node.name.clone()));
        }
        if left == 0 {
            out.terminate.push(node.name.clone());
        }
        if expired {
            out.expired.push(node.name.clone());
        }
    }
    out
}

/// What a drained node still waits for before its instance may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// Evicted is not gone: the instance waits until its pods have stopped (or the grace period
    /// is over), so their preStop hooks are not cut short.
    Pods(usize),
    /// Then for its volumes to detach — those of pods that stay with it (they tolerate the
    /// disrupted taint) excepted.
    Volumes(usize),
}

/// Whether node `name` waits for pods to stop or volumes to detach; `None` when it may be
/// terminated (or is gone).
pub fn waiting_on(cluster: &Cluster, name: &str) -> Option<Waiting> {
    let node = cluster.nodes.get(name)?;
    let disrupted = disrupted_taint();
    let still = node.terminating.len()
        + cluster
            .pods_on(name)
            .filter(|p| !p.spec.tolerations.iter().any(|t| t.tolerates(&disrupted)))
            .count();
    if still > 0 {
        return Some(Waiting::Pods(still));
    }
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
    (attached > 0).then_some(Waiting::Volumes(attached))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::CapacityType;
    use crate::cloud::{Instance, Offer};
    use crate::cluster::{Deletion, Node, Pod};
    use crate::scheduling::model::{PendingPod, Toleration};

    /// A deleting node `n1` of pool `default` (deleted at 0, `terminationGracePeriod` as given)
    /// with the named pods on it.
    fn draining(grace: Option<&str>, pods: &[(&str, bool, bool)]) -> Cluster {
        let mut c = Cluster::default();
        let mut spec = serde_json::json!({"template": {"spec": {
            "nodeClassRef": {"group": "aws.dovetail.sh", "kind": "EC2NodeClass", "name": "default"}}}});
        if let Some(g) = grace {
            spec["template"]["spec"]["terminationGracePeriod"] = g.into();
        }
        let resource: crate::api::NodePool = serde_json::from_value(serde_json::json!({
            "apiVersion": "dovetail.sh/v1", "kind": "NodePool", "metadata": {"name": "default"},
            "spec": spec}))
        .unwrap();
        c.pools.push(crate::provisioning::Pool {
            resource,
            spec: crate::scheduling::NodePoolSpec::new("default", Default::default()),
        });
        c.nodes.insert(
            "n1".into(),
            Node {
                name: "n1".into(),
                instance: Instance {
                    id: "i-1".into(),
                    claim: "n1".into(),
                    node_pool: "default".into(),
                    offer: Offer {
                        instance_type: "m5.large".into(),
                        zone: "us-east-1a".into(),
                        capacity_type: CapacityType::OnDemand,
                        price: 0.1,
                    },
                },
                type_index: 0,
                zone_index: 0,
                labels: Vec::new(),
                taints: vec![disrupted_taint()],
                launched_at: 0,
                ready_at: Some(0),
                last_pod_change: 0,
                template_hash: 0,
                do_not_disrupt: false,
                deletion: Some(Deletion {
                    reason: None,
                    since: 0,
                    replacement: None,
                    policy: None,
                }),
                terminating: Default::default(),
                attached: Default::default(),
                lifecycle: Default::default(),
            },
        );
        for &(name, tolerant, protected) in pods {
            let mut spec = PendingPod::new(name, &[], 100, 1 << 20);
            if tolerant {
                spec.tolerations.push(Toleration {
                    key: None,
                    exists: true,
                    value: String::new(),
                    effect: None,
                });
            }
            c.pods.insert(
                name.into(),
                Pod {
                    spec: spec.into(),
                    owner: Some("default/rs".into()),
                    created_at: 0,
                    node: Some("n1".into()),
                    running_since: Some(0),
                    ready: true,
                    do_not_disrupt: protected,
                },
            );
        }
        c
    }

    #[test]
    fn an_instance_waits_for_pods_to_stop_then_volumes_to_detach_but_not_for_tolerant_pods() {
        let mut c = draining(None, &[("default/agent", true, false)]);
        assert_eq!(
            waiting_on(&c, "n1"),
            None,
            "a tolerant pod stays with the node"
        );
        let n1 = c.nodes.get_mut("n1").unwrap();
        n1.terminating.insert("default/web".into());
        n1.attached.insert("pv-1".into());
        assert_eq!(waiting_on(&c, "n1"), Some(Waiting::Pods(1)));
        c.nodes.get_mut("n1").unwrap().terminating.clear();
        assert_eq!(waiting_on(&c, "n1"), Some(Waiting::Volumes(1)));
        c.nodes.get_mut("n1").unwrap().attached.clear();
        assert_eq!(waiting_on(&c, "n1"), None);
        assert_eq!(waiting_on(&c, "gone"), None);
    }

    #[test]
    fn pods_tolerating_the_disrupted_taint_are_not_evicted_and_do_not_hold_the_node() {
        let c = draining(
            None,
            &[
                ("default/web", false, false),
                ("default/agent", true, false),
            ],
        );
        let plan = plan(&c, 10);
        assert_eq!(
            plan.evict,
            vec![("default/web".to_string(), "n1".to_string())]
        );
        assert_eq!(plan.terminate, vec!["n1".to_string()]);
        assert!(plan.expired.is_empty() && plan.delete.is_empty());
    }

    #[test]
    fn a_protected_pod_holds_the_node_until_its_grace_no_longer_fits_before_the_deadline() {
        // terminationGracePeriod 2m; the pod's own grace is the default 30 s.
        let c = draining(Some("2m"), &[("default/db", false, true)]);
        let early = plan(&c, 60);
        assert!(early.evict.is_empty() && early.delete.is_empty());
        assert!(early.terminate.is_empty(), "held by the pod");
        // From 90 s its 30 s would not end by 120 s: deleted directly, its grace shortened.
        let late = plan(&c, 100);
        assert_eq!(
            late.delete,
            vec![("default/db".to_string(), "n1".to_string(), 20)]
        );
        assert_eq!(late.terminate, vec!["n1".to_string()]);
        assert!(late.expired.is_empty());
        let over = plan(&c, 120);
        assert_eq!(over.delete[0].2, 0);
        assert_eq!(over.expired, vec!["n1".to_string()]);
    }

    #[test]
    fn without_a_grace_period_a_protected_pod_holds_the_node_for_good() {
        let c = draining(None, &[("default/db", false, true)]);
        let p = plan(&c, 1_000_000);
        assert!(p.delete.is_empty() && p.terminate.is_empty() && p.expired.is_empty());
    }
}
