//! `price-capacity`: a spot-aware scorer in the spirit of EC2's `price-capacity-optimized`.
//!
//! Each offering gets an *effective* hourly cost: its price, raised by its expected interruptions
//! and by how shallow its capacity pool is:
//!
//! ```text
//! effective = price × (1 + interruption-weight × interruption-rate)
//!                   × (1 + capacity-weight × (1 − capacity-score))
//! ```
//!
//! On-demand and reserved offerings have rate 0 and score 1, so their effective cost is their
//! price: a cheap spot pool wins unless it is both risky and shallow. Spot offerings above
//! `max-interruption-rate` are vetoed.

use dovetail_policy_sdk::{CapacityType, Claim, LaunchCandidate, Params, Policy, Scorer, Verdict};

/// See the crate documentation.
pub struct PriceCapacity {
    interruption_weight: f64,
    capacity_weight: f64,
    max_interruption_rate: f64,
}

impl Policy for PriceCapacity {
    fn new(params: &Params) -> Result<Self, String> {
        params.only(&[
            "interruption-weight",
            "capacity-weight",
            "max-interruption-rate",
        ])?;
        let p = PriceCapacity {
            interruption_weight: params.parse_or("interruption-weight", 2.0)?,
            capacity_weight: params.parse_or("capacity-weight", 0.5)?,
            max_interruption_rate: params.parse_or("max-interruption-rate", 1.0)?,
        };
        for (key, v) in [
            ("interruption-weight", p.interruption_weight),
            ("capacity-weight", p.capacity_weight),
            ("max-interruption-rate", p.max_interruption_rate),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("config {key}={v}: must be a finite number ≥ 0"));
            }
        }
        Ok(p)
    }
}

impl PriceCapacity {
    /// The effective hourly cost of an offering.
    pub fn effective_cost(&self, option: LaunchCandidate<'_>) -> f64 {
        let o = option.offering;
        let (rate, depth) = match o.capacity_type {
            CapacityType::Spot => (f64::from(o.interruption_rate), f64::from(o.capacity_score)),
            _ => (0.0, 1.0),
        };
        o.price
            * (1.0 + self.interruption_weight * rate.clamp(0.0, 1.0))
            * (1.0 + self.capacity_weight * (1.0 - depth.clamp(0.0, 1.0)))
    }
}

impl Scorer for PriceCapacity {
    fn score_option(&self, _claim: &Claim, option: LaunchCandidate<'_>) -> Verdict {
        let o = option.offering;
        if o.capacity_type == CapacityType::Spot
            && f64::from(o.interruption_rate) > self.max_interruption_rate
        {
            return Verdict::Veto(format!(
                "spot interruption rate {:.0}% above the {:.0}% maximum",
                o.interruption_rate * 100.0,
                self.max_interruption_rate * 100.0
            ));
        }
        Verdict::Score(-self.effective_cost(option))
    }
}

dovetail_policy_sdk::export_scorer!(PriceCapacity);

#[cfg(test)]
mod tests {
    use super::*;
    use dovetail_policy_sdk::testing::{ScoringRoundBuilder, catalog_type, rank};
    use dovetail_policy_sdk::{Arch, Resources};

    fn round() -> dovetail_policy_sdk::testing::TestRound {
        ScoringRoundBuilder::new()
            // Cheapest spot, but risky and shallow.
            .instance_type(catalog_type("c5.large", Arch::Amd64, 2, 4).offering(
                "a",
                CapacityType::Spot,
                0.030,
                0.20,
                0.1,
            ))
            // A little dearer spot in a deep, calm pool.
            .instance_type(catalog_type("c6i.large", Arch::Amd64, 2, 4).offering(
                "a",
                CapacityType::Spot,
                0.036,
                0.03,
                0.95,
            ))
            .instance_type(catalog_type("c6i.xlarge", Arch::Amd64, 4, 8).on_demand("a", 0.17))
            .claim_for_pods(2, Resources::cpu_mem(1000, 1 << 30))
            .build()
    }

    #[test]
    fn prefers_the_deep_calm_pool_over_the_cheapest_risky_one() {
        let mut p = PriceCapacity::new(&Params::default()).unwrap();
        let ranked = rank(&mut p, &round()).unwrap();
        let names: Vec<&str> = ranked[0].iter().map(|r| r.instance_type.as_str()).collect();
        assert_eq!(names, ["c6i.large", "c5.large", "c6i.xlarge"]);
    }

    #[test]
    fn with_zero_weights_it_is_price_only() {
        let mut p = PriceCapacity::new(&Params::from([
            ("interruption-weight", "0"),
            ("capacity-weight", "0"),
        ]))
        .unwrap();
        let ranked = rank(&mut p, &round()).unwrap();
        assert_eq!(ranked[0][0].instance_type, "c5.large");
    }

    #[test]
    fn vetoes_spot_above_the_maximum_rate_and_checks_config() {
        let mut p = PriceCapacity::new(&Params::from([("max-interruption-rate", "0.1")])).unwrap();
        let ranked = rank(&mut p, &round()).unwrap();
        assert!(ranked[0].iter().all(|r| r.instance_type != "c5.large"));
        assert!(PriceCapacity::new(&Params::from([("capacity-weight", "-1")])).is_err());
        assert!(PriceCapacity::new(&Params::from([("capacity-weight", "NaN")])).is_err());
    }
}
