//! The rules a world follows when it builds the core's snapshot from the objects it holds:
//! how long a nomination or a launch the cache has not shown yet stands, what an unreadable
//! PodDisruptionBudget means, which template a claim without a hash was made from, and since
//! when a node's pods are unchanged. They are decisions, so they live here; a world remembers
//! what it saw and asks.

use std::collections::{BTreeMap, HashMap};

use crate::cluster::{Cluster, IntOrPercent, Node, Pdb, Pool};

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
/// what was remembered last time: the same set keeps its time, another set starts now. Not
/// before the node became Ready: Karpenter counts from a node's last pod event, or from its
/// initialization before any (kubernetes-sigs/karpenter
/// `pkg/controllers/nodeclaim/disruption/consolidation.go`), and a pod binds only once its
/// node is Ready — once: a node Ready again after a kubelet restart keeps its time. A node
/// seen for the first time counts from now: after a restart the controller does not know when
/// its pods last changed, and waits `consolidateAfter` afresh rather than disrupt a node whose
/// pods just came. The flag says the set changed (disruption should look again).
pub fn pods_unchanged_since(
    before: Option<Seen>,
    pods: PodSet,
    node: &Node,
    now: i64,
) -> (i64, bool) {
    match before {
        Some(seen) if seen.pods == pods => match node.ready_at {
            Some(ready) if !seen.ready => (seen.since.max(ready), false),
            _ => (seen.since, false),
        },
        Some(_) => (now, true),
        None => (now, false),
    }
}

/// What was remembered of a node's pods last time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub pods: PodSet,
    pub since: i64,
    /// The node was Ready then.
    pub ready: bool,
}

/// A set of pod names, by count and an order-free digest of the names: comparing two costs
/// nothing and remembering one allocates nothing (a world dates every node's pods each pass).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodSet {
    count: u32,
    digest: u64,
}

impl PodSet {
    pub fn insert(&mut self, name: &str) {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let h = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .hash_one(name);
        self.count += 1;
        // A sum, not an exclusive or: two pods of one name (on two nodes, briefly) do not
        // cancel out.
        self.digest = self.digest.wrapping_add(h);
    }
}

/// What an observer remembers of each node's pods between snapshots, so that every world
/// dates them by [`pods_unchanged_since`] alike. It is the controller's memory: a restarted
/// controller starts without it.
#[derive(Debug, Default)]
pub struct PodChanges {
    /// Node → what its pods were, and since when.
    seen: HashMap<String, Seen>,
}

impl PodChanges {
    /// Sets every node's `last_pod_change` in `cluster` (pods nominated to a node count as on
    /// it). True when some node's pods changed since the last call.
    pub fn date(&mut self, cluster: &mut Cluster, now: i64) -> bool {
        let mut sets: HashMap<&str, PodSet> = HashMap::with_capacity(cluster.nodes.len());
        for p in cluster.pods.values() {
            if let Some(n) = &p.node {
                sets.entry(n.as_str()).or_default().insert(&p.spec.name);
            }
        }
        let mut changed = false;
        let mut seen = HashMap::with_capacity(cluster.nodes.len());
        for (name, node) in cluster.nodes.iter_mut() {
            let pods = sets.get(name.as_str()).copied().unwrap_or_default();
            let (since, moved) =
                pods_unchanged_since(self.seen.get(name.as_str()).copied(), pods, node, now);
            changed |= moved;
            node.last_pod_change = since;
            seen.insert(
                name.clone(),
                Seen {
                    pods,
                    since,
                    // Once Ready, for good: a node NotReady for a while (a kubelet restart)
                    // and Ready again keeps its time.
                    ready: node.ready_at.is_some()
                        || self.seen.get(name.as_str()).is_some_and(|s| s.ready),
                },
            );
        }
        self.seen = seen;
        changed
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
            spec: crate::scheduling::PendingPod::new(name, &[("app", "anything")], 100, 1 << 20)
                .into(),
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
    fn a_node_s_pods_keep_their_time_until_the_set_changes_and_never_predate_readiness() {
        let mut n = Node::example("a");
        n.launched_at = 10;
        n.ready_at = Some(50);
        let set = |names: &[&str]| {
            let mut s = PodSet::default();
            names.iter().for_each(|p| s.insert(p));
            s
        };
        let pods = set(&["p1"]);
        let seen = |since, ready| Some(Seen { pods, since, ready });
        // First seen (a restart): from now, not from readiness.
        assert_eq!(pods_unchanged_since(None, pods, &n, 99), (99, false));
        assert_eq!(
            pods_unchanged_since(seen(70, true), pods, &n, 99),
            (70, false)
        );
        assert_eq!(
            pods_unchanged_since(seen(70, true), set(&["p2"]), &n, 99),
            (99, true)
        );
        // Nominated while in flight (at 20), Ready at 50: counted from readiness…
        assert_eq!(
            pods_unchanged_since(seen(20, false), pods, &n, 99),
            (50, false)
        );
        // …once: Ready again later (a kubelet restart) changes nothing.
        n.ready_at = Some(90);
        assert_eq!(
            pods_unchanged_since(seen(50, true), pods, &n, 99),
            (50, false)
        );
        // The set is the names, in any order; a name twice is not no name.
        assert_eq!(set(&["a", "b"]), set(&["b", "a"]));
        assert_ne!(set(&["a", "a"]), set(&[]));
        assert_ne!(set(&["a"]), set(&["b"]));
    }

    #[test]
    fn dating_a_cluster_keeps_a_node_s_time_until_its_pods_change() {
        let mut c = Cluster::default();
        let mut n = Node::example("a");
        n.launched_at = 0;
        n.ready_at = Some(10);
        c.nodes.insert("a".into(), n);
        let pod = |name: &str| crate::cluster::Pod {
            spec: crate::scheduling::PendingPod::new(name, &[], 100, 1 << 20).into(),
            owner: None,
            created_at: 0,
            node: Some("a".into()),
            running_since: Some(10),
            ready: true,
            do_not_disrupt: false,
        };
        c.pods.insert("p1".into(), pod("p1"));
        let mut changes = PodChanges::default();
        assert!(!changes.date(&mut c, 20), "first seen is no change");
        assert_eq!(c.nodes["a"].last_pod_change, 20);
        assert!(!changes.date(&mut c, 30));
        assert_eq!(
            c.nodes["a"].last_pod_change, 20,
            "the same pods keep their time"
        );
        c.pods.insert("p2".into(), pod("p2"));
        assert!(changes.date(&mut c, 40));
        assert_eq!(c.nodes["a"].last_pod_change, 40);
        c.pods.remove("p1");
        assert!(changes.date(&mut c, 50), "one pod for another is a change");
        assert_eq!(c.nodes["a"].last_pod_change, 50);
        // NotReady for a pass (a kubelet restart), then Ready again: the time stands.
        c.nodes.get_mut("a").unwrap().ready_at = None;
        assert!(!changes.date(&mut c, 60));
        c.nodes.get_mut("a").unwrap().ready_at = Some(70);
        assert!(!changes.date(&mut c, 80));
        assert_eq!(c.nodes["a"].last_pod_change, 50);
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
