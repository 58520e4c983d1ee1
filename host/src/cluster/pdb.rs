//! A policy/v1 PodDisruptionBudget read into the budget the host's safety rules judge with.

use crate::scheduling::from_kube::{operator, selector_of};
use crate::scheduling::model::LabelSelector;
use crate::scheduling::{Operator, Requirement};

/// A policy/v1 PodDisruptionBudget as the host's safety rules read it.
pub fn from_kube(
    b: &k8s_openapi::api::policy::v1::PodDisruptionBudget,
) -> Result<super::Pdb, String> {
    use super::IntOrPercent;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let name = b.metadata.name.clone().unwrap_or_default();
    let spec = b.spec.clone().unwrap_or_default();
    let value = |v: Option<IntOrString>, field: &str| -> Result<Option<IntOrPercent>, String> {
        match v {
            None => Ok(None),
            Some(IntOrString::Int(n)) => Ok(Some(IntOrPercent::Count(n.max(0) as u32))),
            Some(IntOrString::String(s)) => IntOrPercent::parse(&s)
                .map(Some)
                .map_err(|e| format!("PodDisruptionBudget {name}: spec.{field}: {e}")),
        }
    };
    // A budget without a selector selects nothing (`LabelSelectorAsSelector(nil)`); an empty
    // one, every pod of its namespace (policy/v1).
    let nil_selector = spec.selector.is_none();
    let selector = spec.selector.unwrap_or_default();
    // A selector is not widened: an operator we do not know refuses the budget (a dropped
    // expression would protect more pods than asked, or, in a Deployment, fewer).
    for (i, e) in selector.match_expressions.iter().flatten().enumerate() {
        if operator(&e.operator).is_none() {
            return Err(format!(
                "PodDisruptionBudget {name}: spec.selector.matchExpressions[{i}].operator: {:?} is not In, NotIn, Exists or DoesNotExist",
                e.operator
            ));
        }
    }
    if spec.min_available.is_some() && spec.max_unavailable.is_some() {
        return Err(format!(
            "PodDisruptionBudget {name}: spec: minAvailable and maxUnavailable cannot both be set"
        ));
    }
    // The status counts only once it describes this spec (the Eviction API's own rule).
    let generation = b.metadata.generation.unwrap_or(0);
    let status = b.status.as_ref().map(|s| super::PdbStatus {
        observed: s.observed_generation.unwrap_or(0) >= generation,
        disruptions_allowed: s.disruptions_allowed.unwrap_or(0).max(0) as u32,
        current_healthy: s.current_healthy.unwrap_or(0).max(0) as u32,
        desired_healthy: s.desired_healthy.unwrap_or(0).max(0) as u32,
        expected_pods: s.expected_pods.unwrap_or(0).max(0) as u32,
    });
    Ok(super::Pdb {
        namespace: b.metadata.namespace.clone().unwrap_or("default".into()),
        selector: if nil_selector {
            LabelSelector {
                match_labels: Vec::new(),
                match_expressions: vec![Requirement {
                    key: "dovetail.sh/no-selector".into(),
                    operator: Operator::In,
                    values: Vec::new(),
                }],
            }
        } else {
            selector_of(&selector)
        },
        min_available: value(spec.min_available, "minAvailable")?,
        max_unavailable: value(spec.max_unavailable, "maxUnavailable")?,
        always_allow_unhealthy: spec.unhealthy_pod_eviction_policy.as_deref()
            == Some("AlwaysAllow"),
        status,
        name,
    })
}
