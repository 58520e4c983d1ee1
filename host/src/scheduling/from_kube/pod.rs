//! A pod spec as the scheduling simulation sees it ([`PendingPod`]): what it asks of a node
//! (containers, init containers, sidecars, overhead), where it may and would rather run (node
//! affinity, tolerations), and how it spreads (topology spread, pod (anti-)affinity).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodAffinityTerm, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::{ConvertError, effect, lenient, operator, selector_of};
use crate::capacity::Resources;
use crate::quantity;
use crate::scheduling::model::{
    AffinityTerm, PendingPod, SpreadConstraint, Toleration, TopologyKey, labels, max, zero,
};
use crate::scheduling::requirements::{Operator, Requirement, Requirements};

/// One pending pod from a pod spec. `path` prefixes field names in errors.
pub fn pending_pod(
    object: &str,
    path: &str,
    name: &str,
    pod_labels: &BTreeMap<String, String>,
    spec: &PodSpec,
) -> Result<PendingPod, ConvertError> {
    let at = At { object, path };
    let (spread, soft_spread) = spreads(spec);
    let aff = spec.affinity.as_ref();
    let affinity = affinity_terms(aff.and_then(|a| a.pod_affinity.as_ref()).and_then(|p| {
        p.required_during_scheduling_ignored_during_execution
            .as_ref()
    }));
    let anti_affinity = affinity_terms(aff.and_then(|a| a.pod_anti_affinity.as_ref()).and_then(
        |p| {
            p.required_during_scheduling_ignored_during_execution
                .as_ref()
        },
    ));
    Ok(PendingPod {
        name: name.to_string(),
        labels: pod_labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        requests: pod_requests(&at, spec)?,
        node_terms: node_terms(&at, spec)?,
        tolerations: tolerations(spec),
        spread,
        preferred: preferred_terms(spec),
        soft_spread,
        affinity,
        anti_affinity,
        grace_seconds: spec
            .termination_grace_period_seconds
            .unwrap_or(crate::scheduling::model::DEFAULT_GRACE_SECONDS)
            .max(0),
        workload: 0,
        priority: spec.priority.unwrap_or(0),
        owner: None,
        volume_claims: spec
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| v.persistent_volume_claim.as_ref())
            .map(|c| {
                let ns = name.split_once('/').map_or("default", |s| s.0);
                format!("{ns}/{}", c.claim_name)
            })
            .collect(),
        volume_requirements: None,
    })
}

/// Where in which object a pod spec was read: errors name the field.
struct At<'a> {
    object: &'a str,
    /// Prefixes field names (`spec.template.spec`).
    path: &'a str,
}

impl At<'_> {
    fn err(&self, field: String, message: String) -> ConvertError {
        ConvertError {
            object: self.object.into(),
            field,
            message,
        }
    }

    /// One container's requests: per resource, the request, else the limit (Kubernetes
    /// defaults a missing request to its limit key by key, also when other requests are set).
    fn requests(
        &self,
        r: Option<&ResourceRequirements>,
        field: String,
    ) -> Result<Resources, ConvertError> {
        let mut out = zero();
        let mut map: BTreeMap<&String, &Quantity> = BTreeMap::new();
        if let Some(r) = r {
            map.extend(r.limits.iter().flatten());
            map.extend(r.requests.iter().flatten());
        }
        for (key, q) in map {
            let parse = |f: fn(&str) -> Result<u64, quantity::QuantityError>, q: &Quantity| {
                f(&q.0).map_err(|e| self.err(format!("{field}.{key}"), e.to_string()))
            };
            match key.as_str() {
                "cpu" => out.cpu_millis = parse(quantity::cpu_millis, q)?,
                "memory" => out.memory_bytes = parse(quantity::bytes, q)?,
                "ephemeral-storage" => out.ephemeral_storage_bytes = parse(quantity::bytes, q)?,
                "nvidia.com/gpu" => out.gpus = parse(quantity::count, q)? as u32,
                _ => {}
            }
        }
        Ok(out)
    }
}

/// What the pod asks of a node: containers run together; init containers one at a time before
/// them (sidecars — init containers with restartPolicy Always — keep running and add up); the
/// RuntimeClass overhead on top.
fn pod_requests(at: &At<'_>, spec: &PodSpec) -> Result<Resources, ConvertError> {
    let path = at.path;
    let mut running = zero();
    for (i, c) in spec.containers.iter().enumerate() {
        let r = at.requests(
            c.resources.as_ref(),
            format!("{path}.containers[{i}].resources.requests"),
        )?;
        running = crate::scheduling::model::add(&running, &r);
    }
    let mut peak = running;
    let mut sidecars = zero();
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let r = at.requests(
            c.resources.as_ref(),
            format!("{path}.initContainers[{i}].resources.requests"),
        )?;
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars = crate::scheduling::model::add(&sidecars, &r);
        } else {
            let during = crate::scheduling::model::add(&sidecars, &r);
            peak = max(&peak, &during);
        }
    }
    let mut requests = max(&crate::scheduling::model::add(&running, &sidecars), &peak);
    if let Some(overhead) = &spec.overhead {
        let r = at.requests(
            Some(&ResourceRequirements {
                requests: Some(overhead.clone()),
                ..Default::default()
            }),
            format!("{path}.overhead"),
        )?;
        requests = crate::scheduling::model::add(&requests, &r);
    }
    requests.pods = 1;
    Ok(requests)
}

/// The required node affinity's terms (any one must hold), each with the nodeSelector, which
/// applies to every term.
fn node_terms(at: &At<'_>, spec: &PodSpec) -> Result<Vec<Requirements>, ConvertError> {
    let path = at.path;
    let selector: Vec<Requirement> = spec
        .node_selector
        .iter()
        .flatten()
        .map(|(k, v)| Requirement::new(k, Operator::In, &[v]))
        .collect();
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let mut node_terms = Vec::new();
    match required {
        Some(req) => {
            for (ti, term) in req.node_selector_terms.iter().enumerate() {
                let mut list = selector.clone();
                for (ei, e) in term.match_expressions.iter().flatten().enumerate() {
                    let operator = operator(&e.operator).ok_or_else(|| {
                        at.err(
                            format!("{path}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[{ti}].matchExpressions[{ei}].operator"),
                            format!("unknown operator {:?}", e.operator),
                        )
                    })?;
                    list.push(Requirement {
                        key: e.key.clone(),
                        operator,
                        values: e.values.clone().unwrap_or_default(),
                    });
                }
                node_terms.push(Requirements::from_list(&list));
            }
        }
        None if !selector.is_empty() => node_terms.push(Requirements::from_list(&selector)),
        None => {}
    }
    Ok(node_terms)
}

/// Preferred node affinity terms, highest weight first (expressions with unknown operators are
/// dropped, as a preference must never make a pod unschedulable).
fn preferred_terms(spec: &PodSpec) -> Vec<Requirements> {
    let mut weighted: Vec<(i32, Requirements)> = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .map(|t| {
            let list: Vec<Requirement> = t
                .preference
                .match_expressions
                .iter()
                .flatten()
                .filter_map(|e| lenient(&e.key, &e.operator, &e.values))
                .collect();
            (t.weight, Requirements::from_list(&list))
        })
        .collect();
    weighted.sort_by_key(|(w, _)| std::cmp::Reverse(*w));
    weighted.into_iter().map(|(_, r)| r).collect()
}

fn tolerations(spec: &PodSpec) -> Vec<Toleration> {
    spec.tolerations
        .iter()
        .flatten()
        .map(|t| Toleration {
            key: t.key.clone().filter(|k| !k.is_empty()),
            exists: t.operator.as_deref() == Some("Exists"),
            value: t.value.clone().unwrap_or_default(),
            effect: t.effect.as_deref().and_then(effect),
        })
        .collect()
}

/// The topology keys the model knows (zone, hostname); constraints over others are left out.
fn topology(key: &str) -> Option<TopologyKey> {
    match key {
        labels::ZONE => Some(TopologyKey::Zone),
        labels::HOSTNAME => Some(TopologyKey::Hostname),
        _ => None,
    }
}

/// Topology spread constraints: (DoNotSchedule, ScheduleAnyway).
fn spreads(spec: &PodSpec) -> (Vec<SpreadConstraint>, Vec<SpreadConstraint>) {
    let spread_where = |hard: bool| -> Vec<SpreadConstraint> {
        spec.topology_spread_constraints
            .iter()
            .flatten()
            .filter(|c| (c.when_unsatisfiable == "DoNotSchedule") == hard)
            .filter_map(|c| {
                Some(SpreadConstraint {
                    key: topology(&c.topology_key)?,
                    max_skew: c.max_skew.max(1) as u32,
                    selector: c
                        .label_selector
                        .as_ref()
                        .map(selector_of)
                        .unwrap_or_default(),
                })
            })
            .collect()
    };
    (spread_where(true), spread_where(false))
}

/// Required pod (anti-)affinity terms over the topology keys the model knows.
fn affinity_terms(terms: Option<&Vec<PodAffinityTerm>>) -> Vec<AffinityTerm> {
    terms
        .into_iter()
        .flatten()
        .filter_map(|t| {
            Some(AffinityTerm {
                key: topology(&t.topology_key)?,
                selector: t
                    .label_selector
                    .as_ref()
                    .map(selector_of)
                    .unwrap_or_default(),
            })
        })
        .collect()
}
