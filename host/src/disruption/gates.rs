//! Disruption's switches (`FEATURE_GATES`) and the labels of its reasons.

use crate::cluster::DisruptionReason;

/// Behaviours that can be switched (`FEATURE_GATES`, Karpenter's syntax: `Name=true,…`).
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureGates {
    /// Replace a spot node with a cheaper spot node (only with at least
    /// [`crate::disruption::MIN_SPOT_TO_SPOT_TYPES`] cheaper spot types, so the replacement is
    /// not the next to be reclaimed). On by default here; Karpenter's is off.
    pub spot_to_spot_consolidation: bool,
}

impl Default for FeatureGates {
    fn default() -> Self {
        FeatureGates {
            spot_to_spot_consolidation: true,
        }
    }
}

impl std::str::FromStr for FeatureGates {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut gates = FeatureGates::default();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (name, value) = term.split_once('=').ok_or_else(|| {
                format!("feature gate {term:?}: expected Name=true or Name=false")
            })?;
            let on = match value.trim() {
                "true" => true,
                "false" => false,
                v => return Err(format!("feature gate {name}: {v:?} is not true or false")),
            };
            match name.trim() {
                "SpotToSpotConsolidation" => gates.spot_to_spot_consolidation = on,
                other => {
                    return Err(format!(
                        "unknown feature gate {other:?} (known: SpotToSpotConsolidation)"
                    ));
                }
            }
        }
        Ok(gates)
    }
}

/// The label of a disruption reason (`empty`, `underutilized`, `drifted`, `expired`).
pub fn reason_label(r: DisruptionReason) -> &'static str {
    match r {
        DisruptionReason::Empty => "empty",
        DisruptionReason::Underutilized => "underutilized",
        DisruptionReason::Drifted => "drifted",
        DisruptionReason::Expired => "expired",
    }
}
