//! The canary rounds a component must pass before it serves: one small scoring round and one
//! small consolidation round, run inside the Policy's own limits and checked against the output
//! contract. The controller runs them before a swap and `dovetail policy test` runs the same
//! code, so "it passed locally" means "the controller will accept it".

use super::engine::LoadedPolicy;
use super::error::{PolicyError, Result};
use super::round::ScoringRound;
use super::types::{
    Candidate, CapacityType, ConsolidationRound, DisruptionReason, Move, Pod, Replacement,
    Resources, Workload,
};
use crate::catalog;

/// Which interfaces a component must serve: the roles the NodePools that name it give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Roles {
    pub scoring: bool,
    pub consolidation: bool,
}

impl Roles {
    /// Every interface the component exports.
    pub fn of(policy: &LoadedPolicy) -> Roles {
        Roles {
            scoring: policy.info().scoring,
            consolidation: policy.info().consolidation,
        }
    }
}

/// Fixed time of the canary rounds (2026-01-05 12:00 UTC, a Monday noon), so a time-dependent
/// policy answers the same way on every run.
const NOW: i64 = 1_767_614_400;

/// Checks that `policy` exports what `needs` asks for, then runs a canary round of each interface
/// it exports (of the ones needed, or all when nothing is named).
pub fn run(policy: &LoadedPolicy, needs: Roles) -> Result<()> {
    let info = policy.info();
    for (needed, has, what) in [
        (needs.scoring, info.scoring, "scoring"),
        (needs.consolidation, info.consolidation, "consolidation"),
    ] {
        if needed && !has {
            return Err(PolicyError::MissingExport {
                policy: policy.name().to_string(),
                missing: format!("dovetail:policy/{what} (a NodePool names it for {what})"),
                exports: info.exports.join(", "),
            });
        }
    }
    let all = needs == Roles::default();
    let canary = |round: &'static str, e: PolicyError| PolicyError::Canary {
        round,
        inner: Box::new(e),
    };
    if info.scoring && (needs.scoring || all) {
        policy
            .score(&scoring_round())
            .map_err(|e| canary("scoring", e))?;
    }
    if info.consolidation && (needs.consolidation || all) {
        policy
            .consolidate(&consolidation_round())
            .map_err(|e| canary("consolidation", e))?;
    }
    Ok(())
}

/// Two web pods and one batch pod on the embedded catalog in two zones.
pub fn scoring_round() -> ScoringRound {
    let entries = catalog::embedded();
    let cat = catalog::policy_catalog(&entries, &["us-east-1a", "us-east-1b"]);
    let requests = |cpu_millis, gib: u64| Resources {
        cpu_millis,
        memory_bytes: gib << 30,
        ephemeral_storage_bytes: 0,
        pods: 1,
        gpus: 0,
    };
    let workloads = vec![
        Workload {
            namespace: "shop".into(),
            owner: "Deployment/web".into(),
            labels: vec![("app".into(), "web".into())],
        },
        Workload {
            namespace: "batch".into(),
            owner: "Job/nightly".into(),
            labels: Vec::new(),
        },
    ];
    let pods = vec![
        Pod {
            workload: 0,
            requests: requests(500, 1),
            priority: 0,
        },
        Pod {
            workload: 0,
            requests: requests(500, 1),
            priority: 0,
        },
        Pod {
            workload: 1,
            requests: requests(2000, 4),
            priority: -10,
        },
    ];
    catalog::scoring_round(NOW, cat, "canary", workloads, pods)
}

/// Three candidates (empty, underutilized, drifted) and one move of each kind.
pub fn consolidation_round() -> ConsolidationRound {
    let node = |name: &str, instance_type: &str, price, pods, reasons| Candidate {
        name: name.into(),
        node_pool: "canary".into(),
        instance_type: instance_type.into(),
        capacity_type: CapacityType::OnDemand,
        zone: "us-east-1a".into(),
        price,
        age_seconds: 86_400,
        allocatable: Resources {
            cpu_millis: 3_920,
            memory_bytes: 14 << 30,
            ephemeral_storage_bytes: 0,
            pods: 58,
            gpus: 0,
        },
        requested: Resources {
            cpu_millis: 250 + 500 * u64::from(pods),
            memory_bytes: (1 + u64::from(pods)) << 30,
            ephemeral_storage_bytes: 0,
            pods: 1 + pods,
            gpus: 0,
        },
        pods,
        reasons,
    };
    ConsolidationRound {
        now: NOW,
        candidates: vec![
            node(
                "canary-empty",
                "m7i.xlarge",
                0.2016,
                0,
                vec![DisruptionReason::Empty],
            ),
            node(
                "canary-underutilized",
                "m7i.xlarge",
                0.2016,
                2,
                vec![DisruptionReason::Underutilized],
            ),
            node(
                "canary-drifted",
                "m6i.xlarge",
                0.192,
                3,
                vec![DisruptionReason::Drifted, DisruptionReason::Underutilized],
            ),
        ],
        moves: vec![
            Move {
                nodes: vec![0],
                replacement: None,
                savings_per_hour: 0.2016,
                disruption_cost: 0.0,
                reason: DisruptionReason::Empty,
            },
            Move {
                nodes: vec![1],
                replacement: Some(Replacement {
                    instance_type: "m7g.medium".into(),
                    capacity_type: CapacityType::OnDemand,
                    zone: "us-east-1a".into(),
                    price: 0.0408,
                }),
                savings_per_hour: 0.1608,
                disruption_cost: 2.0,
                reason: DisruptionReason::Underutilized,
            },
            Move {
                nodes: vec![2],
                replacement: None,
                savings_per_hour: 0.192,
                disruption_cost: 3.0,
                reason: DisruptionReason::Drifted,
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canary_scoring_round_has_options_for_its_claim() {
        let round = scoring_round();
        assert_eq!(round.claims.len(), 1);
        assert!(round.claims[0].options.len() > 10);
        assert_eq!(round.claims[0].pods.len(), 3);
    }
}
