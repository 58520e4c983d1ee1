//! Candidates: the nodes a pass may disrupt, with why each is or is not (do-not-disrupt pods, PDBs
//! that allow no eviction, budgets, `consolidateAfter`), and what moving a pod costs.

use super::*;

/// A pool's candidates and their reasons; protected nodes become `Blocked` notes.
pub(super) fn candidates<'a>(
    cluster: &'a Cluster,
    pool: &Pool,
    by_node: &BTreeMap<&str, Vec<&'a Pod>>,
    allowance: &[u32],
    now: i64,
    decision: &mut Decision,
) -> Vec<Candidate<'a>> {
    let spec = &pool.resource.spec;
    let consolidate_after = crate::api::duration::parse(&spec.disruption.consolidate_after)
        .ok()
        .flatten();
    let expire_after = crate::api::duration::parse(&spec.template.spec.expire_after)
        .ok()
        .flatten();
    let hash = crate::cluster::template_hash(pool, &cluster.node_classes);
    let mut out = Vec::new();
    for node in cluster.nodes.values() {
        if node.instance.node_pool != pool.spec.name
            || node.deletion.is_some()
            || node.ready_at.is_none()
        {
            continue;
        }
        let pods: Vec<&Pod> = by_node.get(node.name.as_str()).cloned().unwrap_or_default();
        let mut reasons = Vec::new();
        if expire_after.is_some_and(|d| now - node.launched_at >= d.as_secs() as i64) {
            reasons.push(DisruptionReason::Expired);
        }
        let label = |k: &str| {
            node.labels
                .iter()
                .find(|(lk, _)| lk == k)
                .map(|(_, v)| v.as_str())
        };
        if node.template_hash != hash || !pool.spec.requirements.matches(label) {
            reasons.push(DisruptionReason::Drifted);
        }
        let settled =
            consolidate_after.is_some_and(|d| now - node.last_pod_change >= d.as_secs() as i64);
        if settled && pods.is_empty() {
            reasons.push(DisruptionReason::Empty);
        } else if settled
            && spec.disruption.consolidation_policy == ConsolidationPolicy::WhenEmptyOrUnderutilized
        {
            reasons.push(DisruptionReason::Underutilized);
        }
        if reasons.is_empty() {
            continue;
        }
        if let Some(why) = protected(cluster, node, &pods, allowance) {
            decision.notes.push(Note::Blocked {
                node: node.name.clone(),
                why,
            });
            continue;
        }
        let cost = pods.iter().map(|p| pod_cost(p, now)).sum();
        out.push(Candidate {
            node,
            reasons,
            pods,
            cost,
        });
    }
    out
}

/// Why the host never disrupts this node voluntarily, if it must not.
pub(super) fn protected(
    cluster: &Cluster,
    node: &Node,
    pods: &[&Pod],
    allowance: &[u32],
) -> Option<String> {
    if node.do_not_disrupt {
        return Some(format!(
            "node has annotation {}",
            crate::cluster::DO_NOT_DISRUPT
        ));
    }
    for p in pods {
        if p.do_not_disrupt {
            return Some(format!(
                "pod {} has annotation {}",
                p.spec.name,
                crate::cluster::DO_NOT_DISRUPT
            ));
        }
        if p.owner.is_none() {
            return Some(format!(
                "pod {} has no controller to recreate it",
                p.spec.name
            ));
        }
        if let crate::cluster::Eviction::Refused(why) = cluster.eviction(p, allowance) {
            return Some(why);
        }
    }
    None
}

/// The harm of evicting a pod: more for higher priority and for pods that only just started.
fn pod_cost(p: &Pod, now: i64) -> f64 {
    let priority = (f64::from(p.spec.priority) / 1e9).clamp(-1.0, 1.0);
    let recent = match p.running_since {
        Some(s) if now - s < 600 => 1.5,
        _ => 1.0,
    };
    (1.0 + priority) * recent
}
