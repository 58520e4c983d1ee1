//! `empty-only`: Karpenter's `WhenEmpty` consolidation as a policy. Empty nodes are removed; drifted
//! and expired nodes are still replaced (that is not consolidation); under-used nodes are kept.

use dovetail_policy_sdk::select::{BalancedOptions, balanced};
use dovetail_policy_sdk::{Action, ConsolidationRound, Consolidator, Params, Policy};

/// See the crate documentation.
pub struct EmptyOnly {
    opts: BalancedOptions,
}

impl Policy for EmptyOnly {
    fn new(params: &Params) -> Result<Self, String> {
        params.only(BalancedOptions::KEYS)?;
        Ok(EmptyOnly {
            opts: BalancedOptions::from_params(params, false)?,
        })
    }
}

impl Consolidator for EmptyOnly {
    fn consolidate(&self, round: &ConsolidationRound) -> Result<Vec<Action>, String> {
        Ok(balanced(round, &self.opts))
    }
}

dovetail_policy_sdk::export_consolidator!(EmptyOnly);

#[cfg(test)]
mod tests {
    use super::*;
    use dovetail_policy_sdk::DisruptionReason::*;
    use dovetail_policy_sdk::testing::{ConsolidationRoundBuilder, decide, executed};

    #[test]
    fn removes_empty_and_drifted_keeps_underused() {
        let round = ConsolidationRoundBuilder::new()
            .node("under", "m5.xlarge", 0.192, Underutilized)
            .node("empty", "m5.large", 0.096, Empty)
            .node("drift", "m5.large", 0.096, Drifted)
            .delete(&[0], 0.192, 1.0)
            .delete(&[1], 0.096, 0.0)
            .replace(&[2], "m6g.large", 0.077, 1.0)
            .build();
        let p = EmptyOnly::new(&Params::default()).unwrap();
        assert_eq!(executed(&decide(&p, &round).unwrap()), vec![1, 2]);
    }
}
