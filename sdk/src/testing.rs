//! A native test harness: build rounds with small builders, run a policy on them with `cargo test`
//! (no WebAssembly involved), and get the ranking the controller would act on.
//!
//! [`rank`] and [`decide`] apply the same output contract the controller enforces (one verdict
//! per option, finite scores, move indices in range, no move mentioned twice), so a contract bug
//! fails a unit test instead of a production round.

use crate::{
    Action, Arch, Candidate, CapacityType, Claim, ConsolidationRound, Consolidator,
    DisruptionReason, InstanceType, LaunchOption, Move, Offering, Pod, Replacement, Resources,
    Scorer, ScoringRound, Verdict,
};

/// Starts an instance type for a test catalog. Category, family, generation and size come from
/// the name (`m7g.large`); allocatable is approximated from capacity unless set.
pub fn catalog_type(name: &str, arch: Arch, vcpus: u32, memory_gib: u64) -> InstanceTypeBuilder {
    let (family, size) = name.split_once('.').unwrap_or((name, ""));
    let category: String = family
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect();
    let generation = family[category.len()..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap_or(0);
    let suffix = &family[category.len()..];
    let cpu_manufacturer = match arch {
        Arch::Arm64 => "aws",
        Arch::Amd64 if suffix.contains('a') => "amd",
        Arch::Amd64 => "intel",
    };
    let memory_mib = memory_gib * 1024;
    InstanceTypeBuilder(InstanceType {
        name: name.to_string(),
        arch,
        category,
        family: family.to_string(),
        generation,
        size: size.to_string(),
        cpu_manufacturer: cpu_manufacturer.to_string(),
        vcpus,
        memory_mib,
        allocatable: Resources {
            cpu_millis: u64::from(vcpus) * 950,
            memory_bytes: memory_mib * 9 / 10 * (1 << 20),
            ephemeral_storage_bytes: 17 << 30,
            pods: 110,
            gpus: 0,
        },
        gpu_name: None,
        offerings: Vec::new(),
    })
}

/// Builder returned by [`catalog_type`].
#[derive(Debug, Clone)]
pub struct InstanceTypeBuilder(InstanceType);

impl InstanceTypeBuilder {
    /// Adds an on-demand offering.
    pub fn on_demand(self, zone: &str, price: f64) -> Self {
        self.offering(zone, CapacityType::OnDemand, price, 0.0, 1.0)
    }

    /// Adds a spot offering with a low interruption rate and a deep pool.
    pub fn spot(self, zone: &str, price: f64) -> Self {
        self.offering(zone, CapacityType::Spot, price, 0.03, 0.9)
    }

    /// Adds any offering.
    pub fn offering(
        mut self,
        zone: &str,
        capacity_type: CapacityType,
        price: f64,
        interruption_rate: f32,
        capacity_score: f32,
    ) -> Self {
        self.0.offerings.push(Offering {
            zone: zone.to_string(),
            capacity_type,
            price,
            interruption_rate,
            capacity_score,
        });
        self
    }

    /// Sets what pods can use.
    pub fn allocatable(mut self, allocatable: Resources) -> Self {
        self.0.allocatable = allocatable;
        self
    }

    /// The finished instance type.
    pub fn build(self) -> InstanceType {
        self.0
    }
}

impl From<InstanceTypeBuilder> for InstanceType {
    fn from(b: InstanceTypeBuilder) -> Self {
        b.0
    }
}

/// Builds a [`ScoringRound`] whose claims get every option that fits, as the controller would.
#[derive(Debug, Clone, Default)]
pub struct ScoringRoundBuilder {
    now: i64,
    catalog: Vec<InstanceType>,
    claims: Vec<(usize, Resources)>,
}

impl ScoringRoundBuilder {
    /// An empty round at the Unix epoch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the round's time (seconds since the Unix epoch).
    pub fn now(mut self, now: i64) -> Self {
        self.now = now;
        self
    }

    /// Adds an instance type to the catalog.
    pub fn instance_type(mut self, t: impl Into<InstanceType>) -> Self {
        self.catalog.push(t.into());
        self
    }

    /// Adds a claim of `pods` equal pods whose requests add up to `total`.
    pub fn claim_for_pods(mut self, pods: usize, total: Resources) -> Self {
        self.claims.push((pods, total));
        self
    }

    /// The round, each claim with every (type, offering) whose allocatable holds its requests.
    pub fn build(self) -> ScoringRound {
        let claims = self
            .claims
            .iter()
            .map(|&(n, total)| {
                let n64 = n.max(1) as u64;
                let per_pod = Resources {
                    cpu_millis: total.cpu_millis / n64,
                    memory_bytes: total.memory_bytes / n64,
                    ephemeral_storage_bytes: total.ephemeral_storage_bytes / n64,
                    pods: 1,
                    gpus: total.gpus / n64 as u32,
                };
                let requests = Resources {
                    pods: n as u32,
                    ..total
                };
                let options = self
                    .catalog
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| requests.fits_in(&t.allocatable))
                    .flat_map(|(ti, t)| {
                        (0..t.offerings.len()).map(move |oi| LaunchOption {
                            instance_type: ti as u32,
                            offering: oi as u32,
                        })
                    })
                    .collect();
                Claim {
                    node_pool: "default".into(),
                    pods: (0..n)
                        .map(|i| Pod {
                            namespace: "default".into(),
                            name: format!("pod-{i}"),
                            requests: per_pod,
                            priority: 0,
                            labels: vec![("app".into(), "test".into())],
                        })
                        .collect(),
                    requests,
                    options,
                }
            })
            .collect();
        ScoringRound {
            now: self.now,
            catalog: self.catalog,
            claims,
        }
    }
}

/// One option of a claim, after ranking.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    /// Instance type name.
    pub instance_type: String,
    /// Availability zone.
    pub zone: String,
    /// Capacity type.
    pub capacity_type: CapacityType,
    /// Price in USD per hour.
    pub price: f64,
    /// The policy's score.
    pub score: f64,
}

/// Scores a round and returns each claim's non-vetoed options, best first, in the controller's
/// order (score, then lower price, then name). Contract violations are errors.
pub fn rank<S: Scorer>(scorer: &S, round: &ScoringRound) -> Result<Vec<Vec<Ranked>>, String> {
    let verdicts = scorer.score(round)?;
    if verdicts.len() != round.claims.len() {
        return Err(format!(
            "{} verdict lists for {} claims",
            verdicts.len(),
            round.claims.len()
        ));
    }
    round
        .claims
        .iter()
        .zip(verdicts)
        .enumerate()
        .map(|(ci, (claim, verdicts))| {
            if verdicts.len() != claim.options.len() {
                return Err(format!(
                    "claim {ci}: {} verdicts for {} options",
                    verdicts.len(),
                    claim.options.len()
                ));
            }
            let mut ranked = Vec::new();
            for (option, verdict) in claim.options.iter().zip(verdicts) {
                let Verdict::Score(score) = verdict else {
                    continue;
                };
                if !score.is_finite() {
                    return Err(format!("claim {ci}: score {score} is not finite"));
                }
                let c = round.resolve(option)?;
                ranked.push(Ranked {
                    instance_type: c.instance_type.name.clone(),
                    zone: c.offering.zone.clone(),
                    capacity_type: c.offering.capacity_type,
                    price: c.offering.price,
                    score,
                });
            }
            ranked.sort_by(|a, b| {
                b.score
                    .total_cmp(&a.score)
                    .then(a.price.total_cmp(&b.price))
                    .then_with(|| a.instance_type.cmp(&b.instance_type))
            });
            Ok(ranked)
        })
        .collect()
}

/// Builds a [`ConsolidationRound`] from a few nodes and moves.
#[derive(Debug, Clone, Default)]
pub struct ConsolidationRoundBuilder {
    round: ConsolidationRound,
}

impl Default for ConsolidationRound {
    fn default() -> Self {
        ConsolidationRound {
            now: 0,
            candidates: Vec::new(),
            moves: Vec::new(),
        }
    }
}

impl ConsolidationRoundBuilder {
    /// An empty round at the Unix epoch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the round's time (seconds since the Unix epoch).
    pub fn now(mut self, now: i64) -> Self {
        self.round.now = now;
        self
    }

    /// Adds a candidate node: on-demand, in `us-east-1a`, a day old, half used.
    pub fn node(
        mut self,
        name: &str,
        instance_type: &str,
        price: f64,
        reason: DisruptionReason,
    ) -> Self {
        let allocatable = Resources {
            pods: 110,
            ..Resources::cpu_mem(2000, 8 << 30)
        };
        self.round.candidates.push(Candidate {
            name: name.into(),
            node_pool: "default".into(),
            instance_type: instance_type.into(),
            capacity_type: CapacityType::OnDemand,
            zone: "us-east-1a".into(),
            price,
            age_seconds: 86_400,
            allocatable,
            requested: Resources {
                pods: 3,
                ..Resources::cpu_mem(1000, 4 << 30)
            },
            pods: if reason == DisruptionReason::Empty {
                0
            } else {
                3
            },
            reasons: vec![reason],
        });
        self
    }

    /// Adds a move that deletes `nodes`.
    pub fn delete(mut self, nodes: &[u32], savings_per_hour: f64, disruption_cost: f64) -> Self {
        let reason = self.reason_of(nodes);
        self.round.moves.push(Move {
            nodes: nodes.to_vec(),
            replacement: None,
            savings_per_hour,
            disruption_cost,
            reason,
        });
        self
    }

    /// Adds a move that replaces `nodes` with one on-demand `instance_type` node.
    pub fn replace(
        mut self,
        nodes: &[u32],
        instance_type: &str,
        price: f64,
        disruption_cost: f64,
    ) -> Self {
        let reason = self.reason_of(nodes);
        let replaced: f64 = nodes
            .iter()
            .map(|&n| self.round.candidates[n as usize].price)
            .sum();
        self.round.moves.push(Move {
            nodes: nodes.to_vec(),
            replacement: Some(Replacement {
                instance_type: instance_type.into(),
                capacity_type: CapacityType::OnDemand,
                zone: "us-east-1a".into(),
                price,
            }),
            savings_per_hour: replaced - price,
            disruption_cost,
            reason,
        });
        self
    }

    fn reason_of(&self, nodes: &[u32]) -> DisruptionReason {
        nodes
            .first()
            .and_then(|&n| self.round.candidates.get(n as usize))
            .and_then(|c| c.reasons.first().copied())
            .unwrap_or(DisruptionReason::Underutilized)
    }

    /// The finished round.
    pub fn build(self) -> ConsolidationRound {
        self.round
    }
}

/// Runs a consolidator and checks its answer against the controller's contract.
pub fn decide<C: Consolidator>(
    policy: &C,
    round: &ConsolidationRound,
) -> Result<Vec<Action>, String> {
    let actions = policy.consolidate(round)?;
    let mut seen = vec![false; round.moves.len()];
    for action in &actions {
        let i = match action {
            Action::Execute(i) => *i,
            Action::Keep(k) => k.move_index,
        } as usize;
        match seen.get_mut(i) {
            None => {
                return Err(format!(
                    "action refers to move #{i} of {}",
                    round.moves.len()
                ));
            }
            Some(true) => return Err(format!("move #{i} mentioned twice")),
            Some(s) => *s = true,
        }
    }
    Ok(actions)
}

/// Indices of the moves an action list executes, in order.
pub fn executed(actions: &[Action]) -> Vec<u32> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Execute(i) => Some(*i),
            Action::Keep(_) => None,
        })
        .collect()
}
