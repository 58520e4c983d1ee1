//! The canary rounds a component must pass before it serves, run inside the Policy's own limits
//! and checked against the output contract. They reach the shapes real rounds have — claims from
//! one pod to the largest the catalog can hold, GPU claims, claims with one option, burstable
//! types only, spot only, zero prices, many claims at once; consolidation rounds empty, typical
//! and full — generated from a fixed seed, so every run asks the same questions. The controller
//! runs them before a swap and `dovetail policy test` runs the same code, so "it passed locally"
//! means "the controller will accept it".

use std::sync::OnceLock;

use super::engine::LoadedPolicy;
use super::error::{PolicyError, Result};
use super::round::ScoringRound;
use crate::capacity::claim::{Pod, Workload};
use crate::capacity::{CapacityType, Resources, unpack};
use crate::catalog;
use crate::cluster::DisruptionReason;
use crate::cluster::consolidation::{Candidate, ConsolidationRound, Move, Replacement};

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

/// What the canary rounds cover (`dovetail policy test` prints it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coverage {
    pub scoring_rounds: usize,
    pub consolidation_rounds: usize,
    /// Pods of the largest claim.
    pub largest_claim: usize,
    /// Candidates of the largest consolidation round.
    pub most_candidates: usize,
}

/// The rounds [`run`] asks.
pub fn coverage() -> Coverage {
    Coverage {
        scoring_rounds: scoring_rounds().len(),
        consolidation_rounds: consolidation_rounds().len(),
        largest_claim: scoring_rounds()
            .iter()
            .flat_map(|(_, r)| &r.claims)
            .map(|c| c.pods.len())
            .max()
            .unwrap_or(0),
        most_candidates: consolidation_rounds()
            .iter()
            .map(|(_, r)| r.candidates.len())
            .max()
            .unwrap_or(0),
    }
}

/// Checks that `policy` exports what `needs` asks for, then runs the canary rounds of each
/// interface it exports (of the ones needed, or all when nothing is named).
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
        for (shape, round) in scoring_rounds() {
            policy.score(round).map_err(|e| canary(shape, e))?;
        }
    }
    if info.consolidation && (needs.consolidation || all) {
        for (shape, round) in consolidation_rounds() {
            policy.consolidate(round).map_err(|e| canary(shape, e))?;
        }
    }
    Ok(())
}

/// A small deterministic generator (an LCG): the canaries vary, identically on every run.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn pods_of(n: usize, workload: u32, cpu_millis: u64, memory_bytes: u64, gpus: u32) -> Vec<Pod> {
    (0..n)
        .map(|_| Pod {
            workload,
            requests: Resources {
                cpu_millis,
                memory_bytes,
                ephemeral_storage_bytes: 0,
                pods: 1,
                gpus,
            },
            priority: 0,
        })
        .collect()
}

fn web() -> Vec<Workload> {
    vec![Workload {
        namespace: "shop".into(),
        owner: "Deployment/web".into(),
        labels: vec![("app".into(), "web".into())],
    }]
}

/// The scoring rounds, each named by its shape (the name a refusal gives).
pub fn scoring_rounds() -> &'static [(&'static str, ScoringRound)] {
    static ROUNDS: OnceLock<Vec<(&'static str, ScoringRound)>> = OnceLock::new();
    ROUNDS.get_or_init(|| {
        let entries = catalog::embedded();
        let cat = catalog::policy_catalog(&entries, &["us-east-1a", "us-east-1b"]);
        let (cpu, mem) = (250, 512u64 << 20);
        // The most pods of this shape any type holds: the largest claim a round can have.
        let most = cat
            .instance_types
            .iter()
            .map(|t| {
                (t.allocatable.pods as u64)
                    .min(t.allocatable.cpu_millis / cpu)
                    .min(t.allocatable.memory_bytes / mem)
            })
            .max()
            .unwrap_or(1) as usize;
        let claim = |pods: Vec<Pod>| catalog::claim_for(&cat, "canary", web(), pods);
        let round = |claims| ScoringRound::new(NOW, &cat, claims);
        let only = |mut c: crate::capacity::claim::Claim,
                    keep: &dyn Fn(&str, CapacityType) -> bool| {
            c.options.retain(|&o| {
                let (ti, oi) = unpack(o);
                let t = &cat.instance_types[ti];
                keep(&t.name, t.offerings[oi].capacity_type)
            });
            c
        };
        let mut rounds = vec![("scoring (small)", scoring_round())];
        for (n, name) in [
            (1, "scoring (claim of 1 pod)"),
            (5, "scoring (claim of 5 pods)"),
            (20, "scoring (claim of 20 pods)"),
            (60, "scoring (claim of 60 pods)"),
            (110, "scoring (claim of 110 pods)"),
            (most, "scoring (the largest claim the catalog holds)"),
        ] {
            rounds.push((name, round(vec![claim(pods_of(n, 0, cpu, mem, 0))])));
        }
        rounds.push((
            "scoring (GPU claim)",
            round(vec![claim(pods_of(2, 0, 4_000, 16 << 30, 1))]),
        ));
        let mut one = claim(pods_of(5, 0, cpu, mem, 0));
        one.options.truncate(1);
        rounds.push(("scoring (one option)", round(vec![one])));
        rounds.push((
            "scoring (burstable types only)",
            round(vec![only(claim(pods_of(3, 0, cpu, mem, 0)), &|name, _| {
                name.starts_with('t')
            })]),
        ));
        rounds.push((
            "scoring (spot only)",
            round(vec![only(claim(pods_of(8, 0, cpu, mem, 0)), &|_, c| {
                c == CapacityType::Spot
            })]),
        ));
        // Free offerings (capacity already paid for): a price of zero must not break a ratio.
        let mut free = cat.clone();
        for t in free.instance_types.iter_mut().step_by(3) {
            for o in &mut t.offerings {
                o.price = 0.0;
            }
        }
        let free = ScoringRound::new(NOW, &free, vec![claim(pods_of(4, 0, cpu, mem, 0))]);
        rounds.push(("scoring (zero prices)", free));
        // A provisioning batch: many claims of mixed sizes and owners in one round.
        let mut seed = Seeded(0x00d0_7e11);
        let batch = (0..12)
            .map(|i| {
                let n = 1 + seed.below(40) as usize;
                let cpu = 100 + 100 * seed.below(20);
                let mem = (128 + 128 * seed.below(32)) << 20;
                let mut c = claim(pods_of(n, 0, cpu, mem, 0));
                c.workloads[0].owner = format!("Deployment/app-{i}");
                c
            })
            .collect();
        rounds.push(("scoring (a batch of 12 claims)", round(batch)));
        rounds
    })
}

/// The consolidation rounds, each named by its shape.
pub fn consolidation_rounds() -> &'static [(&'static str, ConsolidationRound)] {
    static ROUNDS: OnceLock<Vec<(&'static str, ConsolidationRound)>> = OnceLock::new();
    ROUNDS.get_or_init(|| {
        let typical = consolidation_round();
        let empty = ConsolidationRound {
            now: NOW,
            candidates: Vec::new(),
            moves: Vec::new(),
        };
        // A full round: many nodes of every reason, age, capacity type and price (free
        // included), single and multi-node moves with and without replacements.
        let mut seed = Seeded(0x0c0f_fee5);
        let reasons = [
            DisruptionReason::Empty,
            DisruptionReason::Underutilized,
            DisruptionReason::Drifted,
            DisruptionReason::Expired,
        ];
        let types = [
            ("m7i.xlarge", 0.2016),
            ("c7g.large", 0.0725),
            ("r6i.2xlarge", 0.504),
            ("t3.micro", 0.0104),
            ("m5.large", 0.0),
        ];
        let candidates: Vec<Candidate> = (0..60)
            .map(|i| {
                let (ty, price) = types[seed.below(types.len() as u64) as usize];
                let pods = seed.below(12) as u32;
                let reason = reasons[seed.below(reasons.len() as u64) as usize];
                Candidate {
                    name: format!("canary-{i:02}"),
                    node_pool: "canary".into(),
                    instance_type: ty.into(),
                    capacity_type: if seed.below(2) == 0 {
                        CapacityType::Spot
                    } else {
                        CapacityType::OnDemand
                    },
                    zone: if i % 2 == 0 {
                        "us-east-1a"
                    } else {
                        "us-east-1b"
                    }
                    .into(),
                    price,
                    age_seconds: 60 * (1 + seed.below(60 * 24 * 60)),
                    allocatable: XLARGE,
                    requested: requested(
                        250 + 300 * u64::from(pods),
                        (1 + u64::from(pods)) << 29,
                        pods,
                    ),
                    pods,
                    reasons: if pods == 0 {
                        vec![DisruptionReason::Empty]
                    } else {
                        vec![reason]
                    },
                }
            })
            .collect();
        let mut moves: Vec<Move> = candidates
            .iter()
            .enumerate()
            .map(|(i, c)| Move {
                nodes: vec![i as u32],
                replacement: (c.pods > 6).then(|| Replacement {
                    instance_type: "m7g.medium".into(),
                    capacity_type: CapacityType::OnDemand,
                    zone: c.zone.clone(),
                    price: 0.0408,
                }),
                savings_per_hour: (c.price - if c.pods > 6 { 0.0408 } else { 0.0 }).max(0.0),
                disruption_cost: f64::from(c.pods),
                reason: c.reasons[0],
            })
            .collect();
        for k in 0..8u32 {
            let nodes: Vec<u32> = (0..2 + k % 3).map(|j| (k * 7 + j * 3) % 60).collect();
            let savings = nodes.iter().map(|&n| candidates[n as usize].price).sum();
            let cost = nodes
                .iter()
                .map(|&n| f64::from(candidates[n as usize].pods))
                .sum();
            moves.push(Move {
                nodes,
                replacement: None,
                savings_per_hour: savings,
                disruption_cost: cost,
                reason: DisruptionReason::Underutilized,
            });
        }
        let full = ConsolidationRound {
            now: NOW,
            candidates,
            moves,
        };
        vec![
            ("consolidation (typical)", typical),
            ("consolidation (empty)", empty),
            ("consolidation (60 candidates)", full),
        ]
    })
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
    ScoringRound::one_claim(NOW, &cat, "canary", workloads, pods)
}

/// What an xlarge node offers its pods.
const XLARGE: Resources = Resources {
    cpu_millis: 3_920,
    memory_bytes: 14 << 30,
    ephemeral_storage_bytes: 0,
    pods: 58,
    gpus: 0,
};

/// A candidate's requests: `pods` pods and a DaemonSet's.
fn requested(cpu_millis: u64, memory_bytes: u64, pods: u32) -> Resources {
    Resources {
        cpu_millis,
        memory_bytes,
        ephemeral_storage_bytes: 0,
        pods: 1 + pods,
        gpus: 0,
    }
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
        allocatable: XLARGE,
        requested: requested(
            250 + 500 * u64::from(pods),
            (1 + u64::from(pods)) << 30,
            pods,
        ),
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
    fn every_canary_claim_has_options_and_the_largest_is_as_large_as_the_catalog_allows() {
        for (shape, round) in scoring_rounds() {
            for c in &round.claims {
                assert!(!c.options.is_empty(), "{shape}: a claim without options");
            }
        }
        let c = coverage();
        assert!(c.largest_claim > 110, "{c:?}");
        assert_eq!(c.most_candidates, 60);
        assert!(
            c.scoring_rounds >= 12 && c.consolidation_rounds == 3,
            "{c:?}"
        );
    }

    #[test]
    fn the_canary_scoring_round_has_options_for_its_claim() {
        let round = scoring_round();
        assert_eq!(round.claims.len(), 1);
        assert!(round.claims[0].options.len() > 10);
        assert_eq!(round.claims[0].pods.len(), 3);
    }
}
