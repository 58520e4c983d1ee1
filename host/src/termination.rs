//! Termination: a node marked for deletion — by disruption, by a user, or by the cloud — is
//! drained through evictions that honour PodDisruptionBudgets, its instance is terminated, and
//! it is removed (the finalizer's job in a cluster). A node waiting for its replacement is not
//! drained until the replacement is Ready. After the NodePool's `terminationGracePeriod`, pods
//! are evicted whatever protects them.

use crate::cluster::Cluster;

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
