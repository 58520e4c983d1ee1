//! `arm-first`: launch arm64 (Graviton) whenever it is not worse value than amd64.
//!
//! Every option of a claim runs the same pods, so value is the node's price. Within each capacity
//! type (tried in Karpenter's order: reserved, spot, on-demand), arm64 options rank above amd64
//! ones when the cheapest arm64 option costs at most `(1 + tolerance)` times the cheapest amd64
//! option; otherwise the cheapest wins whatever its architecture. Within an architecture, the
//! lowest price wins.

use dovetail_policy_sdk::{
    Arch, Claim, ClaimScores, LaunchCandidate, Params, Policy, Round, Scorer, Verdict,
};

/// See the crate documentation.
pub struct ArmFirst {
    tolerance: f64,
}

const TIER: f64 = 1.0e6;
const ARCH: f64 = 1.0e3;

impl Policy for ArmFirst {
    fn new(params: &Params) -> Result<Self, String> {
        params.only(&["tolerance"])?;
        let tolerance: f64 = params.parse_or("tolerance", 0.0)?;
        if !(tolerance.is_finite() && tolerance >= 0.0) {
            return Err(format!(
                "config tolerance={tolerance}: must be a finite number ≥ 0"
            ));
        }
        Ok(ArmFirst { tolerance })
    }
}

impl Scorer for ArmFirst {
    fn score_option(&self, _claim: &Claim, option: LaunchCandidate<'_>) -> Verdict {
        Verdict::Score(-option.offering.price)
    }

    fn score_claim(&self, round: &Round, claim: &Claim) -> Result<ClaimScores, String> {
        let options = claim
            .options
            .iter()
            .map(|&o| round.resolve(o))
            .collect::<Result<Vec<_>, _>>()?;
        // Cheapest price per (capacity tier, arch).
        let mut cheapest = [[f64::INFINITY; 2]; 3];
        for c in &options {
            let slot = &mut cheapest[tier(c)][arch(c)];
            *slot = slot.min(c.offering.price);
        }
        let arm_wins = |t: usize| cheapest[t][1] <= cheapest[t][0] * (1.0 + self.tolerance);
        Ok(options
            .iter()
            .map(|c| {
                let t = tier(c);
                let bonus = if arch(c) == 1 && arm_wins(t) {
                    ARCH
                } else {
                    0.0
                };
                Verdict::Score(t as f64 * TIER + bonus - c.offering.price)
            })
            .collect())
    }
}

fn tier(c: &LaunchCandidate<'_>) -> usize {
    usize::from(c.offering.capacity_type.preference())
}

fn arch(c: &LaunchCandidate<'_>) -> usize {
    usize::from(c.instance_type.arch == Arch::Arm64)
}

dovetail_policy_sdk::export_scorer!(ArmFirst);

#[cfg(test)]
mod tests {
    use super::*;
    use dovetail_policy_sdk::Resources;
    use dovetail_policy_sdk::testing::{ScoringRoundBuilder, TestRound, catalog_type, rank};

    fn round(arm_price: f64) -> TestRound {
        ScoringRoundBuilder::new()
            .instance_type(catalog_type("m5.large", Arch::Amd64, 2, 8).on_demand("a", 0.096))
            .instance_type(catalog_type("m7i.large", Arch::Amd64, 2, 8).on_demand("a", 0.1008))
            .instance_type(catalog_type("m7g.large", Arch::Arm64, 2, 8).on_demand("a", arm_price))
            .claim_for_pods(3, Resources::cpu_mem(1500, 3 << 30))
            .build()
    }

    #[test]
    fn arm_wins_when_not_dearer() {
        let mut p = ArmFirst::new(&Params::default()).unwrap();
        let ranked = rank(&mut p, &round(0.0816)).unwrap();
        assert_eq!(ranked[0][0].instance_type, "m7g.large");
        let ranked = rank(&mut p, &round(0.096)).unwrap();
        assert_eq!(ranked[0][0].instance_type, "m7g.large", "equal price: arm");
    }

    #[test]
    fn amd_wins_when_arm_is_dearer_beyond_tolerance() {
        let mut p = ArmFirst::new(&Params::default()).unwrap();
        assert_eq!(
            rank(&mut p, &round(0.11)).unwrap()[0][0].instance_type,
            "m5.large"
        );
        let mut lenient = ArmFirst::new(&Params::from([("tolerance", "0.2")])).unwrap();
        assert_eq!(
            rank(&mut lenient, &round(0.11)).unwrap()[0][0].instance_type,
            "m7g.large"
        );
    }

    #[test]
    fn spot_still_comes_before_on_demand() {
        let round = ScoringRoundBuilder::new()
            .instance_type(catalog_type("m5.large", Arch::Amd64, 2, 8).spot("a", 0.04))
            .instance_type(catalog_type("m7g.large", Arch::Arm64, 2, 8).on_demand("a", 0.0816))
            .claim_for_pods(1, Resources::cpu_mem(500, 1 << 30))
            .build();
        let ranked = rank(&mut ArmFirst::new(&Params::default()).unwrap(), &round).unwrap();
        assert_eq!(ranked[0][0].instance_type, "m5.large");
    }
}
