//! Turning a policy's verdicts into the order the controller launches in.

use super::round::ScoringRound;
use crate::capacity::LaunchOption;
use crate::capacity::claim::ClaimScores;

/// One option of a claim, in launch order.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    /// The packed option (see [`crate::capacity::unpack`]).
    pub option: LaunchOption,
    /// The policy's score.
    pub score: f64,
}

/// A claim's options after the policy spoke.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ranking {
    /// Options to try, best first.
    pub ranked: Vec<Ranked>,
    /// Options the policy vetoed, with its reason.
    pub vetoed: Vec<(LaunchOption, String)>,
}

/// Orders one claim's options by score (higher first), breaking ties by lower price, then
/// instance-type name, then zone, so that equal scores give the same launch on every run.
/// `scores` must have passed the output contract.
pub fn rank(round: &ScoringRound, claim: usize, scores: &ClaimScores) -> Ranking {
    let options = &round.claims[claim].options;
    let mut vetoed = vec![false; options.len()];
    let mut out = Ranking::default();
    for veto in &scores.vetoes {
        vetoed[veto.option_index as usize] = true;
        out.vetoed
            .push((options[veto.option_index as usize], veto.reason.clone()));
    }
    let mut keyed: Vec<(Ranked, (f64, u32, u32))> = options
        .iter()
        .zip(&scores.scores)
        .zip(vetoed)
        .filter(|(_, vetoed)| !vetoed)
        .map(|((&option, &score), _)| (Ranked { option, score }, round.tie_break(option)))
        .collect();
    keyed.sort_by(|(a, ka), (b, kb)| {
        b.score
            .total_cmp(&a.score)
            .then(ka.0.total_cmp(&kb.0))
            .then(ka.1.cmp(&kb.1))
            .then(ka.2.cmp(&kb.2))
    });
    out.ranked = keyed.into_iter().map(|(r, _)| r).collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::claim::{Claim, Veto};
    use crate::capacity::pack;
    use crate::capacity::{
        Arch, CapacityType, Catalog, CpuManufacturer, InstanceType, Offering, Resources,
    };

    fn it(name: &str, prices: &[f64]) -> InstanceType {
        let r = Resources {
            cpu_millis: 0,
            memory_bytes: 0,
            ephemeral_storage_bytes: 0,
            pods: 0,
            gpus: 0,
        };
        InstanceType {
            name: name.into(),
            arch: Arch::Amd64,
            cpu_manufacturer: CpuManufacturer::Intel,
            vcpus: 2,
            memory_mib: 1024,
            allocatable: r,
            gpu_name: None,
            offerings: prices
                .iter()
                .map(|&price| Offering {
                    zone: 0,
                    capacity_type: CapacityType::OnDemand,
                    price,
                    interruption_rate: 0.0,
                    capacity_score: 1.0,
                })
                .collect(),
        }
    }

    #[test]
    fn score_then_price_then_name_and_vetoes_apart() {
        let catalog = Catalog {
            zones: vec!["z".into()],
            instance_types: vec![it("b", &[0.2, 0.1]), it("a", &[0.2])],
        };
        let claim = Claim {
            node_pool: "p".into(),
            workloads: vec![],
            pods: vec![],
            requests: it("x", &[]).allocatable,
            options: vec![pack(0, 0), pack(0, 1), pack(1, 0)],
        };
        let round = ScoringRound::new(0, &catalog, vec![claim]);
        let scores = |scores: Vec<f64>, vetoes: Vec<Veto>| ClaimScores { scores, vetoes };
        let order: Vec<_> = rank(&round, 0, &scores(vec![1.0; 3], vec![]))
            .ranked
            .iter()
            .map(|r| r.option)
            .collect();
        assert_eq!(
            order,
            vec![pack(0, 1), pack(1, 0), pack(0, 0)],
            "price, then name"
        );
        let r = rank(
            &round,
            0,
            &scores(
                vec![2.0, 0.0, 3.0],
                vec![Veto {
                    option_index: 1,
                    reason: "no".into(),
                }],
            ),
        );
        assert_eq!(
            r.ranked.iter().map(|r| r.option).collect::<Vec<_>>(),
            vec![pack(1, 0), pack(0, 0)]
        );
        assert_eq!(r.vetoed, vec![(pack(0, 1), "no".to_string())]);
    }
}
