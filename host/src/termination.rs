//! Termination: a node marked for deletion — by disruption, by a user, or by the cloud — is
//! drained through evictions that honour PodDisruptionBudgets, its instance is terminated, and
//! it is removed (the finalizer's job in a cluster). A node waiting for its replacement is not
//! drained until the replacement is Ready. After the NodePool's `terminationGracePeriod`, pods
//! are evicted whatever protects them.

use crate::cluster::{Cluster, disrupted_taint};

/// What one termination pass decides: the evictions PDBs allow now, and the nodes with nothing
/// left to wait for. Nothing is changed here; the controller carries it out.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// (pod, node) evictions, in node order.
    pub evict: Vec<(String, String)>,
    /// Nodes whose pods are all evicted by this plan (or gone): their instance can be
    /// terminated once the evictions went through.
    pub terminate: Vec<String>,
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
        let forced = grace.is_some_and(|g| now - deletion.since >= g.as_secs() as i64);
        let mut left = 0;
        for pod in by_node.get(node.name.as_str()).into_iter().flatten() {
            // A pod that tolerates the disrupted taint would only land here again (as
            // Karpenter, it is left to go with the node).
            if pod.spec.tolerations.iter().any(|t| t.tolerates(&disrupted)) {
                continue;
            }
            let covering: Vec<usize> = cluster
                .pdbs
                .iter()
                .enumerate()
                .filter(|(_, b)| b.selects(pod))
                .map(|(i, _)| i)
                .collect();
            let may = forced || (!pod.do_not_disrupt && covering.iter().all(|&i| allowance[i] > 0));
            if !may {
                left += 1;
                continue;
            }
            for &i in &covering {
                allowance[i] = allowance[i].saturating_sub(1);
            }
            out.evict.push((pod.spec.name.clone(), node.name.clone()));
        }
        if left == 0 {
            out.terminate.push(node.name.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::{Instance, Offer};
    use crate::cluster::{Deletion, Node, Pod};
    use crate::policy::types::CapacityType;
    use crate::scheduling::model::{PendingPod, Toleration};

    #[test]
    fn pods_tolerating_the_disrupted_taint_are_not_evicted_and_do_not_hold_the_node() {
        let mut c = Cluster::default();
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
            },
        );
        for (name, tolerant) in [("default/web", false), ("default/agent", true)] {
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
                    spec,
                    owner: Some("default/rs".into()),
                    created_at: 0,
                    node: Some("n1".into()),
                    running_since: Some(0),
                    do_not_disrupt: false,
                },
            );
        }
        let plan = plan(&c, 10);
        assert_eq!(
            plan.evict,
            vec![("default/web".to_string(), "n1".to_string())]
        );
        assert_eq!(plan.terminate, vec!["n1".to_string()]);
    }
}
