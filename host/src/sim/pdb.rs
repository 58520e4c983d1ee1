//! PodDisruptionBudgets in the simulated cluster, split as a real cluster splits them — and
//! neither half calls the controller, which only reads the status and asks for evictions:
//!
//! - **kube-controller-manager's disruption controller** (`pkg/controller/disruption/disruption.go`,
//!   `getExpectedPodCount`, `countHealthyPods`, `updatePdbStatus`) writes each budget's status:
//!   expected pods are the owning workloads' scale (`maxUnavailable`, a percentage
//!   `minAvailable`) or the selected pods (an integer `minAvailable`); healthy pods are the
//!   Ready ones not being deleted; the allowance is healthy − desired, and none while nothing is
//!   expected. (The real controller also leaves out pods the Eviction API let go in the last two
//!   minutes, `disruptedPods`, for the moment before their `deletionTimestamp`; here the
//!   eviction and the deletion are one step, so that list would always be empty.)
//! - **the Eviction API** (`pkg/registry/core/pod/storage/eviction.go`) decides from that
//!   status alone: a pod not yet running goes (`canIgnorePDB`); two budgets over a pod are a
//!   500; an unready pod goes under `AlwaysAllow`, or under `IfHealthyBudget` while the budget
//!   has its desired healthy pods; a status that does not describe the spec, or no disruption
//!   left, is a 429; otherwise one disruption is spent.

use crate::cluster::{IntOrPercent, Pdb, PdbStatus, namespace};

/// A pod as the disruption controller lists it.
pub(super) struct Listed<'a> {
    pub name: &'a str,
    pub labels: &'a [(String, String)],
    /// Its workload (`namespace/name`), whose scale counts as expected pods.
    pub owner: Option<&'a str>,
    pub ready: bool,
    /// It has a `deletionTimestamp`.
    pub terminating: bool,
}

/// Whether `b` selects the pod (its namespace, its selector).
pub(super) fn selected(b: &Pdb, name: &str, labels: &[(String, String)]) -> bool {
    namespace(name) == b.namespace && b.selector.matches(labels)
}

/// The status the disruption controller writes for `b`. `scale` gives a workload's replicas.
pub(super) fn status(
    b: &Pdb,
    pods: &[Listed<'_>],
    scale: impl Fn(&str) -> Option<u32>,
) -> PdbStatus {
    let mine: Vec<&Listed<'_>> = pods
        .iter()
        .filter(|p| selected(b, p.name, p.labels))
        .collect();
    // SUM over the distinct controllers of the selected pods of their scale; a pod without
    // one is not counted (the "unmanaged pods" of getExpectedScale).
    let from_scale = || -> u32 {
        let mut owners: Vec<&str> = mine.iter().filter_map(|p| p.owner).collect();
        owners.sort_unstable();
        owners.dedup();
        owners.iter().filter_map(|o| scale(o)).sum()
    };
    let round_up = |v: IntOrPercent, total: u32| match v {
        IntOrPercent::Count(n) => n,
        IntOrPercent::Percent(p) => (u64::from(total) * u64::from(p)).div_ceil(100) as u32,
    };
    let (expected, desired) = match (b.max_unavailable, b.min_available) {
        (Some(max), _) => {
            let expected = from_scale();
            (expected, expected.saturating_sub(round_up(max, expected)))
        }
        (None, Some(IntOrPercent::Count(n))) => (mine.len() as u32, n),
        (None, Some(min)) => {
            let expected = from_scale();
            (expected, round_up(min, expected))
        }
        (None, None) => (0, 0),
    };
    let healthy = mine.iter().filter(|p| !p.terminating && p.ready).count() as u32;
    let allowed = if expected == 0 {
        0
    } else {
        healthy.saturating_sub(desired)
    };
    PdbStatus {
        observed: true,
        disruptions_allowed: allowed,
        current_healthy: healthy,
        desired_healthy: desired,
        expected_pods: expected,
    }
}

/// The Eviction API's answer.
#[derive(Debug, PartialEq)]
pub(super) enum Answer {
    /// Delete the pod; `Some(i)`: it spent a disruption of budget `i`.
    Delete(Option<usize>),
    /// 429 TooManyRequests, with the API's message.
    TooManyRequests(String),
    /// 500, with the API's message.
    InternalError(String),
}

/// What the Eviction API answers for a pod (`running`: phase Running).
pub(super) fn evict(
    pdbs: &[Pdb],
    name: &str,
    labels: &[(String, String)],
    running: bool,
    ready: bool,
) -> Answer {
    if !running {
        return Answer::Delete(None);
    }
    let mut covering = (0..pdbs.len()).filter(|&i| selected(&pdbs[i], name, labels));
    let Some(i) = covering.next() else {
        return Answer::Delete(None);
    };
    if covering.next().is_some() {
        return Answer::InternalError(
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
                .into(),
        );
    }
    let b = &pdbs[i];
    if !ready
        && (b.always_allow_unhealthy
            || b.status
                .is_some_and(|s| s.current_healthy >= s.desired_healthy && s.desired_healthy > 0))
    {
        return Answer::Delete(None);
    }
    let refused = "Cannot evict pod as it would violate the pod's disruption budget.";
    match b.status.filter(|s| s.observed) {
        None => Answer::TooManyRequests(format!(
            "{refused} The disruption budget {} is still being processed by the server.",
            b.name
        )),
        Some(s) if s.disruptions_allowed == 0 => Answer::TooManyRequests(format!(
            "{refused} The disruption budget {} needs {} healthy pods and has {} currently",
            b.name, s.desired_healthy, s.current_healthy
        )),
        Some(_) => Answer::Delete(Some(i)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduling::model::LabelSelector;

    fn budget(min: Option<&str>, max: Option<&str>) -> Pdb {
        Pdb {
            name: "web".into(),
            namespace: "default".into(),
            selector: LabelSelector::labels(&[("app", "web")]),
            min_available: min.map(|s| IntOrPercent::parse(s).unwrap()),
            max_unavailable: max.map(|s| IntOrPercent::parse(s).unwrap()),
            always_allow_unhealthy: false,
            status: None,
        }
    }

    fn web() -> Vec<(String, String)> {
        vec![("app".into(), "web".into())]
    }

    /// Four pods of `default/web` (scale 5): three Ready, one Running but not Ready.
    fn census(labels: &[(String, String)]) -> Vec<Listed<'_>> {
        [
            "default/web-0",
            "default/web-1",
            "default/web-2",
            "default/web-3",
        ]
        .into_iter()
        .enumerate()
        .map(|(i, name)| Listed {
            name,
            labels,
            owner: Some("default/web"),
            ready: i < 3,
            terminating: false,
        })
        .collect()
    }

    #[test]
    fn the_disruption_controller_counts_ready_pods_against_the_workloads_scale() {
        let labels = web();
        let pods = census(&labels);
        let scale = |o: &str| (o == "default/web").then_some(5);
        let s = |min, max| status(&budget(min, max), &pods, scale);
        // maxUnavailable: expected from the scale (5), desired 5 - 1; 3 Ready < 4.
        assert_eq!(
            s(None, Some("1")),
            PdbStatus {
                observed: true,
                disruptions_allowed: 0,
                current_healthy: 3,
                desired_healthy: 4,
                expected_pods: 5
            }
        );
        // An integer minAvailable expects the selected pods; the unready one is not healthy.
        let min2 = s(Some("2"), None);
        assert_eq!((min2.expected_pods, min2.current_healthy), (4, 3));
        assert_eq!(min2.disruptions_allowed, 1);
        // A percentage rounds up against the scale: 50% of 5 is 3.
        assert_eq!(s(Some("50%"), None).desired_healthy, 3);
        // Bare pods have no scale: nothing is expected, so nothing may go.
        let bare: Vec<Listed<'_>> = census(&labels)
            .into_iter()
            .map(|p| Listed { owner: None, ..p })
            .collect();
        let b = status(&budget(None, Some("3")), &bare, scale);
        assert_eq!((b.expected_pods, b.disruptions_allowed), (0, 0));
        // A pod being deleted is not healthy even if it still shows Ready.
        let mut stopping = census(&labels);
        stopping[0].terminating = true;
        let r = status(&budget(Some("1"), None), &stopping, scale);
        assert_eq!(r.current_healthy, 2);
    }

    #[test]
    fn the_eviction_api_decides_from_the_status_alone() {
        let labels = web();
        let mut b = budget(Some("2"), None);
        // Not yet processed: 429.
        let answer = evict(
            std::slice::from_ref(&b),
            "default/web-0",
            &labels,
            true,
            true,
        );
        assert!(
            matches!(answer, Answer::TooManyRequests(m) if m.contains("still being processed"))
        );
        b.status = Some(PdbStatus {
            observed: true,
            disruptions_allowed: 0,
            current_healthy: 2,
            desired_healthy: 2,
            expected_pods: 3,
        });
        let pdbs = vec![b];
        let answer = evict(&pdbs, "default/web-0", &labels, true, true);
        assert!(
            matches!(&answer, Answer::TooManyRequests(m) if m.contains("needs 2 healthy pods and has 2 currently")),
            "{answer:?}"
        );
        // An unready pod goes while the budget is whole (IfHealthyBudget), a pending one always.
        assert_eq!(
            evict(&pdbs, "default/web-1", &labels, true, false),
            Answer::Delete(None)
        );
        assert_eq!(
            evict(&pdbs, "default/web-2", &labels, false, false),
            Answer::Delete(None)
        );
        // Two budgets: 500 whatever they allow.
        let two = vec![pdbs[0].clone(), pdbs[0].clone()];
        assert!(matches!(
            evict(&two, "default/web-0", &labels, false, false),
            Answer::Delete(None)
        ));
        assert!(matches!(
            evict(&two, "default/web-0", &labels, true, true),
            Answer::InternalError(_)
        ));
    }
}
