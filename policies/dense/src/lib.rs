//! `dense`: the node that leaves the least CPU and memory unused by the packed pods, price as the
//! tie-break.
//!
//! Waste is the mean unused share of CPU and memory ([`dovetail_policy_sdk::resources::waste`]),
//! compared in buckets of `bucket-percent` (default 1 %), so that a node 0.1 % denser but twice
//! the price does not win: within a bucket the lower price does.

use dovetail_policy_sdk::resources::waste;
use dovetail_policy_sdk::{Claim, LaunchCandidate, Params, Policy, Scorer, Verdict};

/// See the crate documentation.
pub struct Dense {
    bucket: f64,
}

impl Policy for Dense {
    fn new(params: &Params) -> Result<Self, String> {
        params.only(&["bucket-percent"])?;
        let pct: f64 = params.parse_or("bucket-percent", 1.0)?;
        if !(pct.is_finite() && pct > 0.0 && pct <= 100.0) {
            return Err(format!("config bucket-percent={pct}: must be in (0, 100]"));
        }
        Ok(Dense {
            bucket: pct / 100.0,
        })
    }
}

impl Scorer for Dense {
    fn score_option(&self, claim: &Claim, option: LaunchCandidate<'_>) -> Verdict {
        let w = waste(&claim.requests, &option.instance_type.allocatable);
        let bucket = (w / self.bucket).floor();
        // Prices stay far below the bucket step, so price only orders within a bucket.
        Verdict::Score(-bucket * 1.0e4 - option.offering.price)
    }
}

dovetail_policy_sdk::export_scorer!(Dense);

#[cfg(test)]
mod tests {
    use super::*;
    use dovetail_policy_sdk::testing::{ScoringRoundBuilder, catalog_type, rank};
    use dovetail_policy_sdk::{Arch, Resources};

    #[test]
    fn least_waste_first_then_price() {
        let round = ScoringRoundBuilder::new()
            .instance_type(
                catalog_type("c5.xlarge", Arch::Amd64, 4, 8)
                    .on_demand("a", 0.17)
                    .allocatable(Resources {
                        pods: 58,
                        ..Resources::cpu_mem(4000, 8 << 30)
                    }),
            )
            .instance_type(
                catalog_type("m5.xlarge", Arch::Amd64, 4, 16)
                    .on_demand("a", 0.192)
                    .allocatable(Resources {
                        pods: 58,
                        ..Resources::cpu_mem(4000, 16 << 30)
                    }),
            )
            .instance_type(
                catalog_type("c5a.xlarge", Arch::Amd64, 4, 8)
                    .on_demand("a", 0.154)
                    .allocatable(Resources {
                        pods: 58,
                        ..Resources::cpu_mem(4000, 8 << 30)
                    }),
            )
            .claim_for_pods(4, Resources::cpu_mem(3600, 7 << 30))
            .build();
        let ranked = rank(&mut Dense::new(&Params::default()).unwrap(), &round).unwrap();
        let names: Vec<&str> = ranked[0].iter().map(|r| r.instance_type.as_str()).collect();
        // The two 8 GiB types waste the same; the cheaper wins. The 16 GiB type wastes most.
        assert_eq!(names, ["c5a.xlarge", "c5.xlarge", "m5.xlarge"]);
    }

    #[test]
    fn rejects_bad_bucket() {
        assert!(Dense::new(&Params::from([("bucket-percent", "0")])).is_err());
    }
}
