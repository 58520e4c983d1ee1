//! Termination: a node marked for deletion — by disruption, by a user, or by the cloud — is
//! drained through evictions that honour PodDisruptionBudgets, its instance is terminated, and
//! it is removed (the finalizer's job in a cluster). A node waiting for its replacement is not
//! drained until the replacement is Ready. After the NodePool's `terminationGracePeriod`, pods
//! are evicted whatever protects them.

use crate::cloud::{CloudError, CloudProvider};
use crate::cluster::{Cluster, Node, Pod};

/// What one termination step did.
#[derive(Debug, Default)]
pub struct Step {
    /// Evicted pods with the node they left. Their controllers recreate them.
    pub evicted: Vec<(Pod, String)>,
    /// Nodes whose instance was terminated and that are gone.
    pub terminated: Vec<Node>,
    /// Cloud errors; the node stays and is retried.
    pub errors: Vec<CloudError>,
}

/// Drains every deleting node as far as budgets allow and removes the drained ones.
pub fn step(cluster: &mut Cluster, cloud: &mut dyn CloudProvider, now: i64) -> Step {
    let mut out = Step::default();
    let mut allowance = cluster.pdb_allowance();
    let deleting: Vec<String> = cluster
        .nodes
        .values()
        .filter(|n| n.deletion.is_some())
        .map(|n| n.name.clone())
        .collect();
    for name in deleting {
        let node = &cluster.nodes[&name];
        let deletion = node.deletion.as_ref().expect("filtered");
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
        let on_node: Vec<String> = cluster
            .pods_on(&name)
            .map(|p| p.spec.name.clone())
            .collect();
        let mut left = 0;
        for pod_name in on_node {
            let pod = &cluster.pods[&pod_name];
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
            let pod = cluster.pods.remove(&pod_name).expect("listed");
            out.evicted.push((pod, name.clone()));
        }
        if left > 0 {
            continue;
        }
        let id = cluster.nodes[&name].instance.id.clone();
        match cloud.delete(&id) {
            Ok(()) => {
                let node = cluster.nodes.remove(&name).expect("listed");
                out.terminated.push(node);
            }
            Err(e) => out.errors.push(e),
        }
    }
    out
}
