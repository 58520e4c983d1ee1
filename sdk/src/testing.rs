//! A native test harness: build rounds with small builders, run a policy on them with `cargo test`
//! (no WebAssembly involved), and get the ranking the controller would act on.
//!
//! [`rank`] and [`decide`] apply the same output contract the controller enforces (one verdict
//! per option, finite scores, move indices in range, no move mentioned twice), so a contract bug
//! fails a unit test instead of a production round.

use crate::{
    Action, Arch, Candidate, CapacityType, Catalog, Claim, ConsolidationRound, Consolidator,
    CpuManufacturer, DisruptionReason, InstanceType, Move, Offering, Pod, Replacement, Resources,
    Round, Scorer, Verdict, Workload, launch_option,
};

/// Starts an instance type for a test catalog; allocatable is approximated from capacity unless
/// set.
pub fn catalog_type(name: &str, arch: Arch, vcpus: u32, memory_gib: u64) -> InstanceTypeBuilder {
    let family = name.split_once('.').map_or(name, |(f, _)| f);
    let suffix = family.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    let cpu_manufacturer = match arch {
        Arch::Arm64 => CpuManufacturer::Aws,
        Arch::Amd64 if suffix.contains('a') => CpuManufacturer::Amd,
        Arch::Amd64 => CpuManufacturer::Intel,
    };
    let memory_mib = memory_gib * 1024;
    InstanceTypeBuilder {
        instance_type: InstanceType {
            name: name.to_string(),
            arch,
            cpu_manufacturer,
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
        },
        zones: Vec::new(),
    }
}

/// Builder returned by [`catalog_type`].
#[derive(Debug, Clone)]
pub struct InstanceTypeBuilder {
    instance_type: InstanceType,
    /// Zone name of each offering, in order.
    zones: Vec<String>,
}

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
        self.instance_type.offerings.push(Offering {
            zone: 0,
            capacity_type,
            price,
            interruption_rate,
            capacity_score,
        });
        self.zones.push(zone.to_string());
        self
    }

    /// Sets what pods can use.
    pub fn allocatable(mut self, allocatable: Resources) -> Self {
        self.instance_type.allocatable = allocatable;
        self
    }

    /// The instance type alone; zone indices count the zones in the order they were added.
    pub fn build(self) -> InstanceType {
        let mut zones = Vec::new();
        self.into_catalog_entry(&mut zones)
    }

    fn into_catalog_entry(mut self, zones: &mut Vec<String>) -> InstanceType {
        for (offering, zone) in self.instance_type.offerings.iter_mut().zip(self.zones) {
            offering.zone = match zones.iter().position(|z| *z == zone) {
                Some(i) => i as u32,
                None => {
                    zones.push(zone);
                    (zones.len() - 1) as u32
                }
            };
        }
        self.instance_type
    }
}

/// A scoring round and its claims, as the controller would hand them to a policy.
#[derive(Debug, Clone, PartialEq)]
pub struct TestRound {
    /// The round: time and catalog.
    pub round: Round,
    /// Claims, each offered every option that fits.
    pub claims: Vec<Claim>,
}

/// Builds a [`TestRound`] whose claims get every option that fits, as the controller would.
#[derive(Debug, Clone, Default)]
pub struct ScoringRoundBuilder {
    now: i64,
    types: Vec<InstanceTypeBuilder>,
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
    pub fn instance_type(mut self, t: InstanceTypeBuilder) -> Self {
        self.types.push(t);
        self
    }

    /// Adds a claim of `pods` equal pods of one Deployment whose requests add up to `total`.
    pub fn claim_for_pods(mut self, pods: usize, total: Resources) -> Self {
        self.claims.push((pods, total));
        self
    }

    /// The round and its claims.
    pub fn build(self) -> TestRound {
        let mut zones = Vec::new();
        let instance_types: Vec<InstanceType> = self
            .types
            .into_iter()
            .map(|t| t.into_catalog_entry(&mut zones))
            .collect();
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
                let options = instance_types
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| requests.fits_in(&t.allocatable))
                    .flat_map(|(ti, t)| (0..t.offerings.len()).map(move |oi| launch_option(ti, oi)))
                    .collect();
                Claim {
                    node_pool: "default".into(),
                    workloads: vec![Workload {
                        namespace: "default".into(),
                        owner: "Deployment/test".into(),
                        labels: vec![("app".into(), "test".into())],
                    }],
                    pods: (0..n)
                        .map(|_| Pod {
                            workload: 0,
                            requests: per_pod,
                            priority: 0,
                        })
                        .collect(),
                    requests,
                    options,
                }
            })
            .collect();
        TestRound {
            round: Round {
                now: self.now,
                catalog: Catalog {
                    zones,
                    instance_types,
                },
            },
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

/// Runs a round through a scorer as the controller does (`begin_round`, then each claim) and
/// returns each claim's non-vetoed options, best first, in the controller's order (score, then
/// lower price, then name, then zone). Contract violations are errors.
pub fn rank<S: Scorer>(scorer: &mut S, test: &TestRound) -> Result<Vec<Vec<Ranked>>, String> {
    scorer.begin_round(&test.round)?;
    test.claims
        .iter()
        .enumerate()
        .map(|(ci, claim)| {
            let scores = scorer.score_claim(&test.round, claim)?;
            if scores.scores.len() != claim.options.len() {
                return Err(format!(
                    "claim {ci}: {} scores for {} options",
                    scores.scores.len(),
                    claim.options.len()
                ));
            }
            let mut ranked = Vec::new();
            for (i, &option) in claim.options.iter().enumerate() {
                let Some(Verdict::Score(score)) = scores.verdict(i) else {
                    continue;
                };
                if !score.is_finite() {
                    return Err(format!("claim {ci}: score {score} is not finite"));
                }
                let c = test.round.resolve(option)?;
                ranked.push(Ranked {
                    instance_type: c.instance_type.name.clone(),
                    zone: c.zone.to_string(),
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
                    .then_with(|| a.zone.cmp(&b.zone))
            });
            Ok(ranked)
        })
        .collect()
}

/// Builds a [`ConsolidationRound`] from a few nodes and moves.
#[derive(Debug, Clone)]
pub struct ConsolidationRoundBuilder {
    round: ConsolidationRound,
}

impl Default for ConsolidationRoundBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsolidationRoundBuilder {
    /// An empty round at the Unix epoch.
    pub fn new() -> Self {
        ConsolidationRoundBuilder {
            round: ConsolidationRound {
                now: 0,
                candidates: Vec::new(),
                moves: Vec::new(),
            },
        }
    }

    /// Sets the round's time (seconds since the Unix epoch).
    pub fn now(mut self, now: i64) -> Self {
        self.round.now = now;
        self
    }

    /// Adds a candidate node: on-demand, in `us-east-1a`, a day old, half used. The modifiers
    /// that follow ([`Self::age_seconds`], [`Self::spot`], [`Self::zone`], [`Self::pods`]) change
    /// the last node added.
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

    /// Sets the last added node's age.
    pub fn age_seconds(mut self, seconds: u64) -> Self {
        self.last_node().age_seconds = seconds;
        self
    }

    /// Makes the last added node a spot node at `price`.
    pub fn spot(mut self, price: f64) -> Self {
        let node = self.last_node();
        node.capacity_type = CapacityType::Spot;
        node.price = price;
        self
    }

    /// Moves the last added node to `zone`.
    pub fn zone(mut self, zone: &str) -> Self {
        self.last_node().zone = zone.into();
        self
    }

    /// Sets how many pods the last added node would evict and what they request together.
    pub fn pods(mut self, pods: u32, requested: Resources) -> Self {
        let node = self.last_node();
        node.pods = pods;
        node.requested = Resources { pods, ..requested };
        self
    }

    /// Sets the last added move's savings (a replacement's are otherwise the nodes' prices minus
    /// its own).
    pub fn savings(mut self, savings_per_hour: f64) -> Self {
        self.round
            .moves
            .last_mut()
            .expect("savings() follows delete() or replace()")
            .savings_per_hour = savings_per_hour;
        self
    }

    fn last_node(&mut self) -> &mut Candidate {
        self.round
            .candidates
            .last_mut()
            .expect("a node() comes first")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClaimScores, Params, Policy};

    #[test]
    fn node_and_move_modifiers_change_the_last_one_added() {
        let round = ConsolidationRoundBuilder::new()
            .node("a", "m5.large", 0.096, DisruptionReason::Underutilized)
            .age_seconds(600)
            .spot(0.04)
            .zone("us-east-1b")
            .pods(7, Resources::cpu_mem(1500, 3 << 30))
            .node("b", "m5.large", 0.096, DisruptionReason::Underutilized)
            .replace(&[0, 1], "m5.xlarge", 0.1, 2.0)
            .savings(0.01)
            .build();
        let a = &round.candidates[0];
        assert_eq!(
            (
                a.age_seconds,
                a.capacity_type,
                a.price,
                a.zone.as_str(),
                a.pods
            ),
            (600, CapacityType::Spot, 0.04, "us-east-1b", 7)
        );
        assert_eq!(a.requested.pods, 7);
        assert_eq!(
            round.candidates[1].age_seconds, 86_400,
            "b keeps the defaults"
        );
        assert_eq!(round.moves[0].savings_per_hour, 0.01);
    }

    /// Ranks arm64 options by price among themselves, amd64 after: a score that depends on the
    /// other options, so it needs the whole claim.
    struct ArmThenCheapest;

    impl Policy for ArmThenCheapest {
        fn new(_: &Params) -> Result<Self, String> {
            Ok(Self)
        }
    }

    impl Scorer for ArmThenCheapest {
        fn score_claim(&self, round: &Round, claim: &Claim) -> Result<ClaimScores, String> {
            let options = claim
                .options
                .iter()
                .map(|&o| round.resolve(o))
                .collect::<Result<Vec<_>, _>>()?;
            let any_arm = options.iter().any(|o| o.instance_type.arch == Arch::Arm64);
            Ok(options
                .iter()
                .map(|o| match (any_arm, o.instance_type.arch) {
                    (true, Arch::Amd64) => Verdict::Veto("an arm64 option exists".into()),
                    _ => Verdict::Score(-o.offering.price),
                })
                .collect())
        }
    }

    #[test]
    fn a_scorer_may_implement_only_score_claim() {
        let test = ScoringRoundBuilder::new()
            .instance_type(
                catalog_type("m5.large", Arch::Amd64, 2, 8).on_demand("us-east-1a", 0.05),
            )
            .instance_type(
                catalog_type("m7g.large", Arch::Arm64, 2, 8).on_demand("us-east-1a", 0.08),
            )
            .claim_for_pods(2, Resources::cpu_mem(1000, 1 << 30))
            .build();
        let ranked = rank(&mut ArmThenCheapest, &test).unwrap();
        let names: Vec<&str> = ranked[0].iter().map(|r| r.instance_type.as_str()).collect();
        assert_eq!(names, ["m7g.large"]);
    }
}
