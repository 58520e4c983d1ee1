//! Turning a policy's verdicts into the order the controller launches in.

use super::types::{LaunchOption, ScoringRound, Verdict};

/// One option of a claim, in launch order.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    /// The option (indices into the round's catalog).
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
/// `verdicts` must have passed the output contract (one per option, finite).
pub fn rank(round: &ScoringRound, claim: usize, verdicts: &[Verdict]) -> Ranking {
    let mut out = Ranking::default();
    for (option, verdict) in round.claims[claim].options.iter().zip(verdicts) {
        match verdict {
            Verdict::Score(score) => out.ranked.push(Ranked {
                option: *option,
                score: *score,
            }),
            Verdict::Veto(reason) => out.vetoed.push((*option, reason.clone())),
        }
    }
    let key = |o: &LaunchOption| {
        let t = &round.catalog[o.instance_type as usize];
        let off = &t.offerings[o.offering as usize];
        (off.price, t.name.as_str(), off.zone.as_str())
    };
    out.ranked.sort_by(|a, b| {
        let (ka, kb) = (key(&a.option), key(&b.option));
        b.score
            .total_cmp(&a.score)
            .then(ka.0.total_cmp(&kb.0))
            .then_with(|| ka.1.cmp(kb.1))
            .then_with(|| ka.2.cmp(kb.2))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::types::{Arch, CapacityType, Claim, InstanceType, Offering, Resources};

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
            category: String::new(),
            family: String::new(),
            generation: 0,
            size: String::new(),
            cpu_manufacturer: String::new(),
            vcpus: 2,
            memory_mib: 1024,
            allocatable: r,
            gpu_name: None,
            offerings: prices
                .iter()
                .map(|&price| Offering {
                    zone: "z".into(),
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
        let opt = |t, o| LaunchOption {
            instance_type: t,
            offering: o,
        };
        let round = ScoringRound {
            now: 0,
            catalog: vec![it("b", &[0.2, 0.1]), it("a", &[0.2])],
            claims: vec![Claim {
                node_pool: "p".into(),
                pods: vec![],
                requests: it("x", &[]).allocatable,
                options: vec![opt(0, 0), opt(0, 1), opt(1, 0)],
            }],
        };
        let verdicts = [
            Verdict::Score(1.0),
            Verdict::Score(1.0),
            Verdict::Score(1.0),
        ];
        let order: Vec<_> = rank(&round, 0, &verdicts)
            .ranked
            .iter()
            .map(|r| r.option)
            .collect();
        assert_eq!(
            order,
            vec![opt(0, 1), opt(1, 0), opt(0, 0)],
            "price, then name"
        );
        let verdicts = [
            Verdict::Score(2.0),
            Verdict::Veto("no".into()),
            Verdict::Score(3.0),
        ];
        let r = rank(&round, 0, &verdicts);
        assert_eq!(
            r.ranked.iter().map(|r| r.option).collect::<Vec<_>>(),
            vec![opt(1, 0), opt(0, 0)]
        );
        assert_eq!(r.vetoed, vec![(opt(0, 1), "no".to_string())]);
    }
}
