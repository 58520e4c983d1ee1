//! Preferences and volumes, as the solver holds them: a pod's preferred node affinity and
//! `ScheduleAnyway` spread are held like requirements first and dropped one at a time when the
//! pod cannot be placed so (Karpenter's `preferences.go` relaxes the same way), and its volumes'
//! topology joins its node terms.

use super::{Selectors, Term};
use crate::scheduling::model::PendingPod;
use crate::scheduling::requirements::Requirements;

/// Preferences (preferred node affinity, ScheduleAnyway spread) are first held like
/// requirements; a pod that cannot be placed so is placed again without them.
pub(super) fn prefers(p: &PendingPod) -> bool {
    !p.preferred.is_empty() || !p.soft_spread.is_empty()
}

/// What to try when a pod with preferences does not fit, in order, last first (they are
/// popped): its preferred node affinity terms dropped one at a time, lowest weight first, then
/// its ScheduleAnyway spreads one at a time, last written first, down to the pod with none — the
/// most important preferences are kept longest.
pub(super) fn relaxations(
    p: &PendingPod,
    selectors: &mut Selectors,
) -> Vec<(PendingPod, Vec<Term>)> {
    if !prefers(p) {
        return Vec::new();
    }
    let mut stages = Vec::new();
    let mut q = p.clone();
    while q.preferred.pop().is_some() || q.soft_spread.pop().is_some() {
        let s = strict(&q);
        let t = selectors.terms(&s);
        stages.push((s, t));
    }
    stages.reverse();
    stages
}

/// A pod with the topology of its volumes joined to its node terms.
pub(super) fn with_volume_topology(p: &PendingPod) -> PendingPod {
    let mut q = p.clone();
    if let Some(v) = q.volume_requirements.take() {
        q.node_terms = if p.node_terms.is_empty() {
            vec![v]
        } else {
            p.node_terms.iter().map(|t| t.intersection(&v)).collect()
        };
    }
    q
}

/// A pod with its preferences as requirements: the preferred terms joined to every required
/// term, `ScheduleAnyway` spread held like `DoNotSchedule`.
pub(super) fn strict(p: &PendingPod) -> PendingPod {
    let mut s = p.clone();
    if !p.preferred.is_empty() {
        let preferred = p
            .preferred
            .iter()
            .fold(Requirements::default(), |a, r| a.intersection(r));
        s.node_terms = if p.node_terms.is_empty() {
            vec![preferred]
        } else {
            p.node_terms
                .iter()
                .map(|t| t.intersection(&preferred))
                .collect()
        };
    }
    s.spread.extend(p.soft_spread.iter().cloned());
    s.preferred.clear();
    s.soft_spread.clear();
    s
}
