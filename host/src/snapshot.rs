//! The rules a world follows when it builds the core's snapshot from the objects it holds:
//! how long a nomination or a launch the cache has not shown yet stands, what an unreadable
//! PodDisruptionBudget means, which template a claim without a hash was made from, and since
//! when a node's pods are unchanged. They are decisions, so they live here; a world remembers
//! what it saw and asks.

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::{IntOrPercent, Node, Pdb, Pool};

/// How long a nomination holds before a pod counts as pending again (Karpenter's is the batch
/// window plus the node's start-up; 5 minutes covers a slow launch).
pub const NOMINATION_TTL: i64 = 300;

/// How long a nomination to a Ready node holds (from the later of the nomination and the
/// node's readiness): kube-scheduler binds within seconds when the pod fits, so a pod still
/// unbound after this does not fit there as kube-scheduler sees the node, and is planned again.
/// Karpenter's nomination window is likewise twice its batch window, 20 s by default.
pub const NOMINATION_READY_WINDOW: i64 = 20;

/// How long a launch this process made stands in for what the cache has not shown yet (a
/// watch event is usually milliseconds behind; a slow one must not cause a second launch).
pub const LAUNCH_GRACE: i64 = 30;

/// A launch made at `at` still stands in for the cache.
pub fn launch_unseen(at: i64, now: i64) -> bool {
    now - at < LAUNCH_GRACE
}

/// Whether a pod's nomination to a claim, made to hold until `until`, still holds. It ends when
/// it expires, when its claim is gone (deleted, never joined: `claim_exists` is false), or once
/// the claim's node (`node`) has been Ready for [`NOMINATION_READY_WINDOW`] without
/// kube-scheduler binding the pod there: the pod is pending again rather than waiting on a node
/// that will not come or will not take it (a pod the model does not know about holds the room).
pub fn nomination_holds(until: i64, node: Option<&Node>, claim_exists: bool, now: i64) -> bool {
    let nominated_at = until - NOMINATION_TTL;
    let refused = node.is_some_and(|n| {
        n.ready_at
            .is_some_and(|r| now >= r.max(nominated_at) + NOMINATION_READY_WINDOW)
    });
    until > now && !refused && claim_exists
}

/// What a PodDisruptionBudget that cannot be read stands for: one that lets no pod of its
/// namespace go voluntarily until it is fixed. Failing safe — a budget the controller cannot
/// read is not taken to be no budget.
pub fn unreadable_pdb(namespace: &str, name: &str) -> Pdb {
    Pdb {
        namespace: namespace.to_string(),
        name: name.to_string(),
        selector: Default::default(),
        min_available: None,
        max_unavailable: Some(IntOrPercent::Count(0)),
        always_allow_unhealthy: false,
        status: None,
    }
}

/// The hash of the template a claim was made from: its annotation, or for a claim without a
/// readable one (made by hand, or by an older controller with another scheme) the pool's
/// template as it is now — no evidence of drift. 0 when the pool is gone too.
pub fn template_hash(
    annotation: Option<&str>,
    pool: Option<&Pool>,
    node_classes: &BTreeMap<String, String>,
) -> u64 {
    annotation
        .and_then(crate::cluster::parse_hash)
        .or_else(|| Some(crate::cluster::template_hash(pool?, node_classes)))
        .unwrap_or(0)
}

/// Since when a node's pods are what they are now (`consolidateAfter` counts from here), from
/// what was remembered last time: the same set keeps its time, another set starts now, and a
/// node seen for the first time counts from when it became Ready (or launched). The flag says
/// the set changed (disruption should look again).
pub fn pods_unchanged_since(
    before: Option<&(BTreeSet<String>, i64)>,
    pods: &BTreeSet<String>,
    node: &Node,
    now: i64,
) -> (i64, bool) {
    match before {
        Some((seen, since)) if seen == pods => (*since, false),
        Some(_) => (now, true),
        None => (
            node.ready_at
                .unwrap_or(node.launched_at)
                .max(node.launched_at),
            false,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nomination_ends_on_expiry_on_a_gone_claim_or_once_its_ready_node_did_not_take_the_pod() {
        let until = 1000 + NOMINATION_TTL;
        let mut n = Node::example("a");
        n.ready_at = None;
        assert!(nomination_holds(until, Some(&n), true, 1100));
        assert!(!nomination_holds(until, Some(&n), true, until), "expired");
        assert!(
            !nomination_holds(until, Some(&n), false, 1100),
            "claim gone"
        );
        // Ready at 1050: kube-scheduler had 20 s to bind.
        n.ready_at = Some(1050);
        assert!(nomination_holds(until, Some(&n), true, 1069));
        assert!(!nomination_holds(until, Some(&n), true, 1070));
        // Ready before the nomination: the window counts from the nomination.
        n.ready_at = Some(900);
        assert!(nomination_holds(until, Some(&n), true, 1019));
        assert!(!nomination_holds(until, Some(&n), true, 1020));
        // A claim launched this moment, not in the snapshot yet.
        assert!(nomination_holds(until, None, true, 1100));
    }

    #[test]
    fn a_launch_stands_in_for_the_cache_for_the_grace_and_no_longer() {
        assert!(launch_unseen(100, 100 + LAUNCH_GRACE - 1));
        assert!(!launch_unseen(100, 100 + LAUNCH_GRACE));
    }

    #[test]
    fn an_unreadable_pdb_lets_no_pod_of_its_namespace_go() {
        let b = unreadable_pdb("shop", "web");
        assert_eq!(b.max_unavailable, Some(IntOrPercent::Count(0)));
        let pod = |name: &str| crate::cluster::Pod {
            spec: crate::scheduling::PendingPod::new(name, &[("app", "anything")], 100, 1 << 20),
            owner: None,
            created_at: 0,
            node: Some("n".into()),
            running_since: Some(0),
            ready: true,
            do_not_disrupt: false,
        };
        assert!(b.selects(&pod("shop/api-1")), "every pod of its namespace");
        assert!(!b.selects(&pod("other/api-1")), "and no other");
    }

    #[test]
    fn a_node_s_pods_keep_their_time_until_the_set_changes() {
        let mut n = Node::example("a");
        n.launched_at = 10;
        n.ready_at = Some(50);
        let pods: BTreeSet<String> = ["p1".to_string()].into();
        assert_eq!(pods_unchanged_since(None, &pods, &n, 99), (50, false));
        n.ready_at = None;
        assert_eq!(pods_unchanged_since(None, &pods, &n, 99), (10, false));
        let seen = (pods.clone(), 70);
        assert_eq!(
            pods_unchanged_since(Some(&seen), &pods, &n, 99),
            (70, false)
        );
        let other: BTreeSet<String> = ["p2".to_string()].into();
        assert_eq!(
            pods_unchanged_since(Some(&seen), &other, &n, 99),
            (99, true)
        );
    }

    #[test]
    fn a_claim_without_a_hash_is_taken_as_made_from_its_pool_as_it_is() {
        let classes = BTreeMap::new();
        assert_eq!(template_hash(None, None, &classes), 0);
        assert_eq!(template_hash(Some("not a hash"), None, &classes), 0);
        let h = crate::cluster::format_hash(0xfeed);
        assert_eq!(template_hash(Some(&h), None, &classes), 0xfeed);
    }
}
