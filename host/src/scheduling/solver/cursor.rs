//! Cursors: where first fit may start for a pod, past the claims that refused an earlier pod
//! of its class for good.

use super::*;

/// Pods alike in everything that decides whether a claim takes them: requests, node terms,
/// topology terms and the selectors their labels match (a Deployment's replicas). A claim too
/// full for one of them is too full for the rest (a claim's requests only grow and what it may
/// become only narrows). When their terms are only of the kinds whose refusals last (see
/// [`lasting`]), every other refusal lasts too — its types and zones only narrow, the pods on it
/// and their anti-affinity only accrue — but one: a node term's label the claim's requirements
/// do not define yet. So first fit for the next pod of the class starts past the run of claims
/// whose refusal lasts. At 100,000 pods this turns the scan over thousands of full claims per
/// pod into one step.
pub(super) struct Cursor {
    requests: Resources,
    node_terms: Vec<Requirements>,
    terms: Vec<Term>,
    matches: Vec<u32>,
    /// Position in the pool's claim order before which every claim refused the class.
    at: usize,
}

/// Whether a claim's refusals under this term last: the pods a node holds only grow, so a
/// hostname spread's skew or a hostname anti-affinity that refuses a claim refuses it for good,
/// and neither moves the zone a pod is placed in. A zone term does not: a zone spread's skew
/// allows a zone again as others fill, an affinity's pod may come, and a zone anti-affinity
/// moves the zone a pod is pinned to, where another type may be offered.
pub(super) fn lasting(t: &Term) -> bool {
    matches!(
        (t.kind, t.key),
        (TermKind::Spread(_), TopologyKey::Hostname)
            | (TermKind::AntiAffinity, TopologyKey::Hostname)
    )
}

impl<'a> Solver<'a> {
    /// The hash of pod `p`'s [`Cursor`] class.
    pub(super) fn class_of(&self, p: usize) -> Option<u64> {
        use std::hash::{BuildHasher, Hash, Hasher};
        let pod = &self.pods[p];
        let mut h = FastHash.build_hasher();
        pod.requests.hash(&mut h);
        pod.node_terms.hash(&mut h);
        self.terms[p].hash(&mut h);
        self.matches[p].hash(&mut h);
        Some(h.finish())
    }

    /// Whether pod `p` is of the class `c` holds a cursor for (not a hash collision).
    fn of_class(&self, c: &Cursor, p: usize) -> bool {
        let pod = &self.pods[p];
        c.requests == pod.requests
            && c.node_terms == pod.node_terms
            && c.terms == self.terms[p]
            && c.matches == self.matches[p]
    }

    /// Where first fit may start in `pool` for pod `p` of class `class`, if the class has a
    /// cursor there and `p` really is of it (not a hash collision).
    pub(super) fn cursor(&self, pool: usize, class: u64, p: usize) -> Option<usize> {
        let c = self.cursors.get(&(pool, class))?;
        self.of_class(c, p).then_some(c.at)
    }

    /// Every claim of `pool` before position `at` refused pod `p` (of `class`).
    pub(super) fn advance(&mut self, pool: usize, class: Option<u64>, p: usize, at: usize) {
        let Some(k) = class else {
            return;
        };
        if let Some(c) = self.cursors.get(&(pool, k)) {
            if self.of_class(c, p) {
                let c = self.cursors.get_mut(&(pool, k)).expect("just read");
                c.at = c.at.max(at);
            }
            return;
        }
        let pod = &self.pods[p];
        self.cursors.insert(
            (pool, k),
            Cursor {
                requests: pod.requests,
                node_terms: pod.node_terms.clone(),
                terms: self.terms[p].clone(),
                matches: self.matches[p].clone(),
                at,
            },
        );
    }
}
