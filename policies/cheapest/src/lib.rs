//! `cheapest`: Karpenter's default launch choice as a policy.
//!
//! Capacity types are tried in Karpenter's order — reserved (already paid for), then spot, then
//! on-demand — whenever the NodePool allows them and an offering is available; within a capacity
//! type the lowest price wins. With `spot-first: "false"` it is the lowest price, full stop.

use dovetail_policy_sdk::{Claim, LaunchCandidate, Params, Policy, Scorer, Verdict};

/// See the crate documentation.
pub struct Cheapest {
    spot_first: bool,
}

/// Separates capacity tiers: no price per hour comes near it.
const TIER: f64 = 1.0e6;

impl Policy for Cheapest {
    fn new(params: &Params) -> Result<Self, String> {
        params.only(&["spot-first"])?;
        Ok(Self {
            spot_first: params.parse_or("spot-first", true)?,
        })
    }
}

impl Scorer for Cheapest {
    fn score_option(&self, _claim: &Claim, option: LaunchCandidate<'_>) -> Verdict {
        let tier = if self.spot_first {
            f64::from(option.offering.capacity_type.preference()) * TIER
        } else {
            0.0
        };
        Verdict::Score(tier - option.offering.price)
    }
}

dovetail_policy_sdk::export_scorer!(Cheapest);

#[cfg(test)]
mod tests {
    use super::*;
    use dovetail_policy_sdk::testing::{ScoringRoundBuilder, catalog_type, rank};
    use dovetail_policy_sdk::{Arch, CapacityType, Resources};

    fn round() -> dovetail_policy_sdk::testing::TestRound {
        ScoringRoundBuilder::new()
            .instance_type(
                catalog_type("m5.large", Arch::Amd64, 2, 8)
                    .on_demand("a", 0.096)
                    .spot("a", 0.045),
            )
            .instance_type(
                catalog_type("c5.large", Arch::Amd64, 2, 4)
                    .on_demand("a", 0.085)
                    .spot("b", 0.038),
            )
            .instance_type(catalog_type("m5.xlarge", Arch::Amd64, 4, 16).on_demand("a", 0.192))
            .instance_type(catalog_type("t3.small", Arch::Amd64, 2, 2).on_demand("a", 0.0208))
            .claim_for_pods(2, Resources::cpu_mem(1000, 2 << 30))
            .build()
    }

    #[test]
    fn spot_before_on_demand_then_lowest_price() {
        let ranked = rank(&mut Cheapest::new(&Params::default()).unwrap(), &round()).unwrap();
        let order: Vec<_> = ranked[0]
            .iter()
            .map(|r| (r.instance_type.as_str(), r.capacity_type))
            .collect();
        assert_eq!(
            order,
            vec![
                ("c5.large", CapacityType::Spot),
                ("m5.large", CapacityType::Spot),
                ("c5.large", CapacityType::OnDemand),
                ("m5.large", CapacityType::OnDemand),
                ("m5.xlarge", CapacityType::OnDemand),
            ],
            "t3.small does not fit 2 GiB; spot ranks first"
        );
    }

    #[test]
    fn price_only_when_spot_first_is_off() {
        let mut p = Cheapest::new(&Params::from([("spot-first", "false")])).unwrap();
        let ranked = rank(&mut p, &round()).unwrap();
        let prices: Vec<f64> = ranked[0].iter().map(|r| r.price).collect();
        assert!(prices.windows(2).all(|w| w[0] <= w[1]), "{prices:?}");
    }

    #[test]
    fn rejects_unknown_and_malformed_config() {
        assert!(Cheapest::new(&Params::from([("spot-frist", "true")])).is_err());
        let err = Cheapest::new(&Params::from([("spot-first", "yes")]))
            .err()
            .unwrap();
        assert!(err.contains("spot-first"), "{err}");
    }
}
