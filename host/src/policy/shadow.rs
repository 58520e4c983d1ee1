//! Shadow mode: a candidate policy judged on the serving policy's own rounds.
//!
//! A NodePool may name a candidate beside each serving policy (`policies.shadow`). After the
//! serving policy has decided a round, the same round goes to the candidate — inside the
//! candidate's own deadline and memory cap, on a worker thread in the controller so the decision
//! never waits for it — and what each would have done is compared here. The candidate's answer
//! is recorded, never acted on; its failures are counted against it and touch nothing else.
//!
//! The comparison is pure: what each policy's top launch option is (the launch the host would
//! try first), or which moves each would execute. What that costs, and how often they agree,
//! adds up in a [`ShadowTally`] per candidate that the Policy's status, the metrics, `top` and
//! the simulator's summary show.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde::Serialize;

use super::ranking::rank;
use super::round::ScoringRound;
use crate::capacity::claim::ClaimScores;
use crate::cluster::consolidation::{Action, ConsolidationRound};

pub use crate::api::nodepool::ShadowRole;

/// One decision the serving policy made, to be put to a candidate.
#[derive(Debug, Clone, PartialEq)]
pub enum ShadowJob {
    Scoring {
        candidate: String,
        /// The policy whose answer was acted on (the pool's, or its fallback).
        serving: String,
        round: Arc<ScoringRound>,
        serving_scores: Vec<ClaimScores>,
        /// The NodeClaim name of each claim of the round.
        claims: Vec<String>,
    },
    Consolidation {
        candidate: String,
        serving: String,
        round: Arc<ConsolidationRound>,
        serving_actions: Vec<Action>,
        /// The NodePool the round was for.
        node_pool: String,
    },
}

impl ShadowJob {
    /// The candidate's name.
    pub fn candidate(&self) -> &str {
        match self {
            ShadowJob::Scoring { candidate, .. } | ShadowJob::Consolidation { candidate, .. } => {
                candidate
            }
        }
    }

    /// The serving policy's name.
    pub fn serving(&self) -> &str {
        match self {
            ShadowJob::Scoring { serving, .. } | ShadowJob::Consolidation { serving, .. } => {
                serving
            }
        }
    }

    /// The role the candidate shadows.
    pub fn role(&self) -> ShadowRole {
        match self {
            ShadowJob::Scoring { .. } => ShadowRole::Scoring,
            ShadowJob::Consolidation { .. } => ShadowRole::Consolidation,
        }
    }

    /// The round's time, seconds since the Unix epoch.
    pub fn now(&self) -> i64 {
        match self {
            ShadowJob::Scoring { round, .. } => round.now,
            ShadowJob::Consolidation { round, .. } => round.now,
        }
    }
}

/// What the candidate answered: scores for a scoring round, actions for a consolidation round.
#[derive(Debug, Clone, PartialEq)]
pub enum ShadowAnswer {
    Scores(Vec<ClaimScores>),
    Actions(Vec<Action>),
}

/// One decision as each policy would have made it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Comparison {
    /// The round's time, seconds since the Unix epoch.
    pub at: i64,
    /// The NodeClaim (scoring) or NodePool (consolidation) the decision was for.
    pub subject: String,
    /// What the serving policy chose: the launch, or the moves.
    pub serving: String,
    /// What the candidate would have chosen.
    pub shadow: String,
    pub agree: bool,
    /// The candidate's choice minus the serving one's, USD per hour: a launch's price, or the
    /// savings given up by consolidation (positive: the candidate's fleet would cost more).
    pub cost_delta_per_hour: f64,
    /// Nodes the serving policy's moves disrupt.
    pub disruptions_serving: u32,
    /// Nodes the candidate's moves would disrupt.
    pub disruptions_shadow: u32,
}

/// Disagreements a tally keeps to show (the latest).
pub const RECENT_KEPT: usize = 20;

/// A candidate's record so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShadowTally {
    /// The roles it shadows, and beside which serving policies.
    pub beside: BTreeSet<(ShadowRole, String)>,
    /// Decisions compared (launches for scoring; consolidation rounds with moves).
    pub compared: u64,
    pub agreed: u64,
    /// Sum of the per-decision cost deltas, USD per hour.
    pub cost_delta_per_hour: f64,
    pub disruptions_serving: u64,
    pub disruptions_shadow: u64,
    /// Rounds the candidate failed (trap, deadline, memory, contract).
    pub failures: u64,
    /// The first failure's message, one clean line.
    pub first_failure: String,
    /// Rounds not put to the candidate because it had not finished the earlier ones.
    pub skipped: u64,
    /// The latest disagreements, oldest first.
    pub recent: VecDeque<Comparison>,
}

impl ShadowTally {
    /// Adds one compared decision.
    pub fn add(&mut self, c: Comparison) {
        self.compared += 1;
        self.agreed += u64::from(c.agree);
        self.cost_delta_per_hour += c.cost_delta_per_hour;
        self.disruptions_serving += u64::from(c.disruptions_serving);
        self.disruptions_shadow += u64::from(c.disruptions_shadow);
        if !c.agree {
            if self.recent.len() == RECENT_KEPT {
                self.recent.pop_front();
            }
            self.recent.push_back(c);
        }
    }

    /// Agreement in percent, when anything was compared.
    pub fn agreement_percent(&self) -> Option<f64> {
        (self.compared > 0).then(|| self.agreed as f64 * 100.0 / self.compared as f64)
    }

    /// "scoring beside cheapest", "consolidation beside balanced", joined.
    pub fn beside_text(&self) -> String {
        self.beside
            .iter()
            .map(|(role, serving)| format!("{} beside {serving}", role.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::fmt::Display for ShadowTally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} decision{} compared",
            self.beside_text(),
            self.compared,
            if self.compared == 1 { "" } else { "s" }
        )?;
        if let Some(p) = self.agreement_percent() {
            write!(f, ", {} agreed ({p:.0}%)", self.agreed)?;
        }
        write!(
            f,
            "; cost {:+.4} $/hour; disruptions {} serving vs {} shadow; failures {}",
            self.cost_delta_per_hour,
            self.disruptions_serving,
            self.disruptions_shadow,
            self.failures
        )?;
        if self.skipped > 0 {
            write!(f, "; {} rounds skipped (still busy)", self.skipped)?;
        }
        if !self.first_failure.is_empty() {
            write!(f, "; first failure: {}", self.first_failure)?;
        }
        Ok(())
    }
}

/// Compares the candidate's answer with the serving one. A scoring round gives one comparison
/// per claim (the launch each would try first); a consolidation round gives one, or none when
/// it had no move to choose from.
pub fn compare(job: &ShadowJob, answer: &ShadowAnswer) -> Vec<Comparison> {
    match (job, answer) {
        (
            ShadowJob::Scoring {
                round,
                serving_scores,
                claims,
                ..
            },
            ShadowAnswer::Scores(shadow),
        ) => (0..round.claims.len())
            .map(|k| {
                let pick = |scores: &ClaimScores| {
                    rank(round, k, scores).ranked.first().map(|r| {
                        let (t, o, zone) = round.resolve(r.option);
                        (
                            format!(
                                "{} {} {zone} {:.4} $/h",
                                t.name,
                                capacity_label(o.capacity_type),
                                o.price
                            ),
                            o.price,
                        )
                    })
                };
                let served = pick(&serving_scores[k]);
                let shadowed = pick(&shadow[k]);
                let text = |p: &Option<(String, f64)>| {
                    p.as_ref()
                        .map_or("nothing (every option vetoed)".to_string(), |(s, _)| {
                            s.clone()
                        })
                };
                Comparison {
                    at: round.now,
                    subject: claims
                        .get(k)
                        .cloned()
                        .unwrap_or_else(|| format!("claim {k}")),
                    serving: text(&served),
                    shadow: text(&shadowed),
                    agree: served.as_ref().map(|s| &s.0) == shadowed.as_ref().map(|s| &s.0),
                    cost_delta_per_hour: match (&served, &shadowed) {
                        (Some((_, a)), Some((_, b))) => b - a,
                        _ => 0.0,
                    },
                    disruptions_serving: 0,
                    disruptions_shadow: 0,
                }
            })
            .collect(),
        (
            ShadowJob::Consolidation {
                round,
                serving_actions,
                node_pool,
                ..
            },
            ShadowAnswer::Actions(shadow),
        ) => {
            if round.moves.is_empty() {
                return Vec::new();
            }
            let chosen = |actions: &[Action]| -> Vec<u32> {
                let mut seen = BTreeSet::new();
                actions
                    .iter()
                    .filter_map(|a| match a {
                        Action::Execute(i) => Some(*i),
                        Action::Keep(_) => None,
                    })
                    .filter(|i| (*i as usize) < round.moves.len() && seen.insert(*i))
                    .collect()
            };
            let (served, shadowed) = (chosen(serving_actions), chosen(shadow));
            // What the moves would do, as the host would carry them out: a move touching a node
            // an earlier one disrupts is skipped.
            let effect = |moves: &[u32]| {
                let mut nodes = BTreeSet::new();
                let mut taken = BTreeSet::new();
                let mut savings = 0.0;
                let mut text = Vec::new();
                for &i in moves {
                    let m = &round.moves[i as usize];
                    if m.nodes.iter().any(|n| nodes.contains(n)) {
                        continue;
                    }
                    taken.insert(i);
                    nodes.extend(m.nodes.iter().copied());
                    savings += m.savings_per_hour;
                    let names = node_names(round, m);
                    text.push(match &m.replacement {
                        Some(r) => format!("replace {names} with {}", r.instance_type),
                        None => format!("delete {names}"),
                    });
                }
                let text = if text.is_empty() {
                    "no move".to_string()
                } else {
                    text.join(", ")
                };
                (nodes, savings, text, taken)
            };
            // What each keeps, with its reason: the other half of a consolidator's answer.
            let kept = |actions: &[Action]| -> String {
                let kept: Vec<String> = actions
                    .iter()
                    .filter_map(|a| match a {
                        Action::Keep(k) => round
                            .moves
                            .get(k.move_index as usize)
                            .map(|m| format!("{} ({})", node_names(round, m), k.reason)),
                        Action::Execute(_) => None,
                    })
                    .take(3)
                    .collect();
                if kept.is_empty() {
                    String::new()
                } else {
                    format!("; keeps {}", kept.join(", "))
                }
            };
            let (a, b) = (effect(&served), effect(&shadowed));
            vec![Comparison {
                at: round.now,
                subject: node_pool.clone(),
                // The same moves carried out, in whatever order they were given.
                agree: a.3 == b.3,
                serving: a.2 + &kept(serving_actions),
                shadow: b.2 + &kept(shadow),
                cost_delta_per_hour: a.1 - b.1,
                disruptions_serving: a.0.len() as u32,
                disruptions_shadow: b.0.len() as u32,
            }]
        }
        _ => Vec::new(),
    }
}

/// A move's nodes by name, `a+b`.
fn node_names(round: &ConsolidationRound, m: &crate::cluster::consolidation::Move) -> String {
    m.nodes
        .iter()
        .filter_map(|&n| round.candidates.get(n as usize))
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join("+")
}

fn capacity_label(c: super::types::CapacityType) -> &'static str {
    match c {
        super::types::CapacityType::OnDemand => "on-demand",
        super::types::CapacityType::Spot => "spot",
        super::types::CapacityType::Reserved => "reserved",
    }
}

/// Every candidate's tally, by name.
pub type ShadowTallies = BTreeMap<String, ShadowTally>;

/// The tally as a Policy's status shows it.
impl From<&ShadowTally> for crate::api::policy::ShadowStatus {
    fn from(t: &ShadowTally) -> Self {
        crate::api::policy::ShadowStatus {
            beside: t.beside_text(),
            decisions_compared: t.compared,
            agreed: t.agreed,
            agreement_percent: t.agreement_percent().map(|p| p.floor() as i32),
            cost_delta_per_hour: format!("{:+.4}", t.cost_delta_per_hour),
            disruptions_serving: t.disruptions_serving,
            disruptions_shadow: t.disruptions_shadow,
            failures: t.failures,
            skipped: t.skipped,
            last_disagreement: t
                .recent
                .back()
                .map(|c| format!("{}: serving {}, shadow {}", c.subject, c.serving, c.shadow)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::claim::{Claim, Veto};
    use crate::capacity::pack;
    use crate::capacity::{
        Arch, CapacityType, Catalog, CpuManufacturer, InstanceType, Offering, Resources,
    };
    use crate::cluster::consolidation::{Candidate, Kept, Move};

    fn scoring_job() -> ShadowJob {
        let t = |name: &str, arch, price| InstanceType {
            name: name.into(),
            arch,
            cpu_manufacturer: CpuManufacturer::Intel,
            vcpus: 2,
            memory_mib: 4096,
            allocatable: Resources {
                cpu_millis: 1900,
                memory_bytes: 3 << 30,
                ephemeral_storage_bytes: 0,
                pods: 29,
                gpus: 0,
            },
            gpu_name: None,
            offerings: vec![Offering {
                zone: 0,
                capacity_type: CapacityType::Spot,
                price,
                interruption_rate: 0.05,
                capacity_score: 1.0,
            }],
        };
        let claim = Claim {
            node_pool: "default".into(),
            workloads: Vec::new(),
            pods: Vec::new(),
            requests: Resources {
                cpu_millis: 500,
                memory_bytes: 1 << 30,
                ephemeral_storage_bytes: 0,
                pods: 1,
                gpus: 0,
            },
            options: vec![pack(0, 0), pack(1, 0)],
        };
        let catalog = Catalog {
            zones: vec!["us-east-1a".into()],
            instance_types: vec![
                t("c5a.large", Arch::Amd64, 0.03),
                t("c6g.large", Arch::Arm64, 0.04),
            ],
        };
        let round = ScoringRound::new(1000, &catalog, vec![claim.clone(), claim]);
        // The serving policy: the cheaper the better.
        let cheapest = ClaimScores {
            scores: vec![-0.03, -0.04],
            vetoes: Vec::new(),
        };
        ShadowJob::Scoring {
            candidate: "arm-first".into(),
            serving: "cheapest".into(),
            round: Arc::new(round),
            serving_scores: vec![cheapest.clone(), cheapest],
            claims: vec!["default-00001".into(), "default-00002".into()],
        }
    }

    #[test]
    fn a_scoring_shadow_is_compared_launch_by_launch_with_its_price_difference() {
        let job = scoring_job();
        let arm = ClaimScores {
            scores: vec![0.0, 1.0],
            vetoes: Vec::new(),
        };
        let same = ClaimScores {
            scores: vec![5.0, 1.0],
            vetoes: Vec::new(),
        };
        let got = compare(&job, &ShadowAnswer::Scores(vec![arm, same]));
        assert_eq!(got.len(), 2);
        assert!(!got[0].agree);
        assert_eq!(got[0].subject, "default-00001");
        assert_eq!(got[0].serving, "c5a.large spot us-east-1a 0.0300 $/h");
        assert_eq!(got[0].shadow, "c6g.large spot us-east-1a 0.0400 $/h");
        assert!((got[0].cost_delta_per_hour - 0.01).abs() < 1e-9);
        assert!(got[1].agree && got[1].cost_delta_per_hour == 0.0);

        let mut tally = ShadowTally::default();
        got.into_iter().for_each(|c| tally.add(c));
        assert_eq!(
            (tally.compared, tally.agreed, tally.recent.len()),
            (2, 1, 1)
        );
        assert_eq!(tally.agreement_percent(), Some(50.0));
    }

    #[test]
    fn a_shadow_that_vetoes_everything_disagrees_without_a_price() {
        let job = scoring_job();
        let veto_all = ClaimScores {
            scores: vec![0.0, 0.0],
            vetoes: (0..2)
                .map(|i| Veto {
                    option_index: i,
                    reason: "no".into(),
                })
                .collect(),
        };
        let got = compare(
            &job,
            &ShadowAnswer::Scores(vec![veto_all.clone(), veto_all]),
        );
        assert!(!got[0].agree);
        assert_eq!(got[0].shadow, "nothing (every option vetoed)");
        assert_eq!(got[0].cost_delta_per_hour, 0.0);
    }

    fn consolidation_job(serving_actions: Vec<Action>) -> ShadowJob {
        let candidate = |name: &str, price| Candidate {
            name: name.into(),
            node_pool: "default".into(),
            instance_type: "m5.large".into(),
            capacity_type: CapacityType::OnDemand,
            zone: "us-east-1a".into(),
            price,
            age_seconds: 600,
            allocatable: Resources {
                cpu_millis: 1900,
                memory_bytes: 7 << 30,
                ephemeral_storage_bytes: 0,
                pods: 29,
                gpus: 0,
            },
            requested: Resources {
                cpu_millis: 100,
                memory_bytes: 1 << 30,
                ephemeral_storage_bytes: 0,
                pods: 1,
                gpus: 0,
            },
            pods: 1,
            reasons: vec![crate::cluster::DisruptionReason::Underutilized],
        };
        let delete = |nodes: Vec<u32>, savings| Move {
            nodes,
            replacement: None,
            savings_per_hour: savings,
            disruption_cost: 1.0,
            reason: crate::cluster::DisruptionReason::Underutilized,
        };
        ShadowJob::Consolidation {
            candidate: "settle".into(),
            serving: "balanced".into(),
            round: Arc::new(ConsolidationRound {
                now: 2000,
                candidates: vec![candidate("a", 0.096), candidate("b", 0.096)],
                moves: vec![delete(vec![0, 1], 0.192), delete(vec![0], 0.096)],
            }),
            serving_actions,
            node_pool: "default".into(),
        }
    }

    #[test]
    fn a_consolidation_shadow_is_compared_by_the_moves_the_host_would_carry_out() {
        let job = consolidation_job(vec![Action::Execute(0), Action::Execute(1)]);
        // Move 1 overlaps move 0: the host would skip it, so serving disrupts a and b once.
        let keep = Action::Keep(Kept {
            move_index: 0,
            reason: "young".into(),
        });
        let got = compare(&job, &ShadowAnswer::Actions(vec![keep, Action::Execute(1)]));
        assert_eq!(got.len(), 1);
        let c = &got[0];
        assert!(!c.agree);
        assert_eq!(
            (c.serving.as_str(), c.shadow.as_str()),
            ("delete a+b", "delete a; keeps a+b (young)")
        );
        assert_eq!((c.disruptions_serving, c.disruptions_shadow), (2, 1));
        assert!(
            (c.cost_delta_per_hour - 0.096).abs() < 1e-9,
            "gives up b's saving"
        );

        let same = compare(&job, &ShadowAnswer::Actions(vec![Action::Execute(0)]));
        assert!(same[0].agree, "{same:?}");
        // Only the moves the host would carry out count: one it would skip (it overlaps an
        // earlier one) changes nothing.
        let job = consolidation_job(vec![Action::Execute(1), Action::Execute(0)]);
        let reordered = compare(&job, &ShadowAnswer::Actions(vec![Action::Execute(1)]));
        assert!(reordered[0].agree, "{reordered:?}");
    }

    #[test]
    fn a_round_without_moves_is_no_decision() {
        let mut job = consolidation_job(Vec::new());
        if let ShadowJob::Consolidation { round, .. } = &mut job {
            Arc::make_mut(round).moves.clear();
        }
        assert!(compare(&job, &ShadowAnswer::Actions(Vec::new())).is_empty());
    }
}
