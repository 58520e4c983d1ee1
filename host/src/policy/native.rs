//! The fallback scorer in the host's own code: Karpenter's choice — reserved capacity, then spot,
//! then on-demand; the lowest price within — exactly as the built-in `cheapest` component scores
//! with its defaults. It decides when a NodePool's scoring policy failed: instant, no sandbox, no
//! deadline, so the fallback cannot fail with the policy (a round too big for any WebAssembly
//! deadline included). `tests/builtin_policies.rs` checks it ranks as the component does.

use super::round::ScoringRound;
use super::types::CapacityType;
use crate::capacity::claim::ClaimScores;

/// The name the fallback reports as: the built-in it stands for.
pub const NAME: &str = "cheapest";

/// Separates capacity tiers: no price per hour comes near it (as the component's).
const TIER: f64 = 1.0e6;

/// Karpenter's buying order: higher is preferred.
fn preference(c: CapacityType) -> f64 {
    match c {
        CapacityType::Reserved => 2.0,
        CapacityType::Spot => 1.0,
        CapacityType::OnDemand => 0.0,
    }
}

/// Scores every claim of the round.
pub fn cheapest(round: &ScoringRound) -> Vec<ClaimScores> {
    round
        .claims
        .iter()
        .map(|claim| ClaimScores {
            scores: claim
                .options
                .iter()
                .map(|&o| {
                    let (_, offering, _) = round.resolve(o);
                    preference(offering.capacity_type) * TIER - offering.price
                })
                .collect(),
            vetoes: Vec::new(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spot_before_on_demand_and_the_lowest_price_within() {
        let round = crate::policy::canary::scoring_round();
        let scores = cheapest(&round);
        let claim = &round.claims[0];
        let best = (0..claim.options.len())
            .max_by(|&a, &b| scores[0].scores[a].total_cmp(&scores[0].scores[b]))
            .unwrap();
        let (_, o, _) = round.resolve(claim.options[best]);
        assert_eq!(o.capacity_type, CapacityType::Spot);
        let cheapest_spot = claim
            .options
            .iter()
            .map(|&x| round.resolve(x).1)
            .filter(|o| o.capacity_type == CapacityType::Spot)
            .map(|o| o.price)
            .fold(f64::INFINITY, f64::min);
        assert_eq!(o.price, cheapest_spot);
    }
}
