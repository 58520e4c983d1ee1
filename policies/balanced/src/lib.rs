//! `balanced`: Karpenter's `WhenEmptyOrUnderutilized` consolidation as a policy.
//!
//! Empty nodes go first, then drifted and expired nodes (least disruptive first), then moves that
//! delete or replace under-used nodes, best savings per unit of disruption first. A replacement
//! must be at least `replace-margin` (default 5 %) cheaper and of another instance type, and a
//! move must save at least `min-savings-per-hour` (default 0) — no churn for a cent.

use dovetail_policy_sdk::select::{BalancedOptions, balanced};
use dovetail_policy_sdk::{Action, ConsolidationRound, Consolidator, Params, Policy};

/// See the crate documentation.
pub struct Balanced {
    opts: BalancedOptions,
}

impl Policy for Balanced {
    fn new(params: &Params) -> Result<Self, String> {
        params.only(BalancedOptions::KEYS)?;
        Ok(Balanced {
            opts: BalancedOptions::from_params(params, true)?,
        })
    }
}

impl Consolidator for Balanced {
    fn consolidate(&self, round: &ConsolidationRound) -> Result<Vec<Action>, String> {
        Ok(balanced(round, &self.opts))
    }
}

dovetail_policy_sdk::export_consolidator!(Balanced);

#[cfg(test)]
mod tests {
    use super::*;
    use dovetail_policy_sdk::DisruptionReason::*;
    use dovetail_policy_sdk::testing::{ConsolidationRoundBuilder, decide, executed};

    #[test]
    fn consolidates_underused_nodes_that_pay() {
        let round = ConsolidationRoundBuilder::new()
            .node("a", "m5.xlarge", 0.192, Underutilized)
            .node("b", "m5.large", 0.096, Empty)
            .replace(&[0], "m5.large", 0.096, 2.0)
            .delete(&[1], 0.096, 0.0)
            .build();
        let p = Balanced::new(&Params::default()).unwrap();
        assert_eq!(executed(&decide(&p, &round).unwrap()), vec![1, 0]);
    }

    #[test]
    fn the_margin_is_configurable() {
        let round = ConsolidationRoundBuilder::new()
            .node("a", "m5.xlarge", 0.192, Underutilized)
            .replace(&[0], "m6a.xlarge", 0.1728, 2.0) // 10% cheaper
            .build();
        let strict = Balanced::new(&Params::from([("replace-margin", "0.15")])).unwrap();
        assert!(executed(&decide(&strict, &round).unwrap()).is_empty());
        let loose = Balanced::new(&Params::from([("replace-margin", "0.05")])).unwrap();
        assert_eq!(executed(&decide(&loose, &round).unwrap()), vec![0]);
        assert!(Balanced::new(&Params::from([("replace-margin", "1.5")])).is_err());
    }
}
