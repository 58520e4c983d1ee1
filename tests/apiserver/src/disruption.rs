//! PodDisruptionBudgets, split as a real cluster splits them:
//!
//! - **the disruption controller** of kube-controller-manager
//!   (`pkg/controller/disruption/disruption.go`), an actor of the double that writes each
//!   budget's status whenever pods, budgets or workloads change (and every second, for the
//!   disrupted pods' timeout): `expectedPods` from the scale of the pods' controllers —
//!   ReplicaSet (its Deployment's when it has one), StatefulSet, ReplicationController — for
//!   `maxUnavailable` and a percentage `minAvailable`, the selected pods for an integer
//!   `minAvailable`; pods without a controller are not counted ("unmanaged"), a controller it
//!   cannot find fails the sync (`failSafe`: no disruption allowed, condition `SyncFailed`);
//!   `currentHealthy` the selected pods whose Ready condition is True, not being deleted and not
//!   evicted in the last two minutes (`DeletionTimeout`); `disruptionsAllowed` healthy − desired,
//!   and none while nothing is expected; `observedGeneration` the budget's generation.
//! - **the Eviction subresource** (`pkg/registry/core/pod/storage/eviction.go`), deciding from
//!   that status alone: a pod that is Pending, finished or already being deleted is deleted
//!   (`canIgnorePDB`); a pod two budgets select is refused with 500; a pod not Ready is deleted
//!   under `unhealthyPodEvictionPolicy: AlwaysAllow`, or under `IfHealthyBudget` (the default)
//!   while `currentHealthy ≥ desiredHealthy > 0`; a status older than the spec is a 429 ("still
//!   being processed"), no disruption left a 429 naming the budget's needs; otherwise
//!   `disruptionsAllowed` is decremented, the pod recorded in `disruptedPods`, given the
//!   `DisruptionTarget` condition and deleted with its grace.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// `DeletionTimeout`: how long an evicted pod stays out of the healthy count.
const DELETION_TIMEOUT_SECS: i64 = 120;

pub(crate) const PODS: &str = "v1/pods";
pub(crate) const PDBS: &str = "policy/v1/poddisruptionbudgets";

/// What a budget's status is computed from: pods and their controllers.
pub(crate) const READS: [&str; 5] = [
    PODS,
    "apps/v1/replicasets",
    "apps/v1/deployments",
    "apps/v1/statefulsets",
    "v1/replicationcontrollers",
];

/// Whether a change to `collection` can change a budget's status.
pub(crate) fn concerns(collection: &str) -> bool {
    collection == PDBS || READS.contains(&collection)
}

/// A `metav1.LabelSelector` over an object's labels: `matchLabels` and `matchExpressions` (In,
/// NotIn, Exists, DoesNotExist). An unknown operator matches nothing (an invalid selector).
pub(crate) fn label_selector_matches(selector: &Value, obj: &Value) -> bool {
    if selector.is_null() {
        // A nil selector matches nothing (`LabelSelectorAsSelector`).
        return false;
    }
    let labels = &obj["metadata"]["labels"];
    let by_labels = selector["matchLabels"]
        .as_object()
        .is_none_or(|m| m.iter().all(|(k, v)| labels[k] == *v));
    let by_expressions = selector["matchExpressions"].as_array().is_none_or(|es| {
        es.iter().all(|e| {
            let key = e["key"].as_str().unwrap_or_default();
            let values: Vec<&Value> = e["values"].as_array().into_iter().flatten().collect();
            let has = labels.get(key).is_some_and(|v| !v.is_null());
            match e["operator"].as_str() {
                Some("In") => has && values.contains(&&labels[key]),
                Some("NotIn") => !has || !values.contains(&&labels[key]),
                Some("Exists") => has,
                Some("DoesNotExist") => !has,
                _ => false,
            }
        })
    });
    by_labels && by_expressions
}

/// The Ready condition is True.
pub(crate) fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn deleting(obj: &Value) -> bool {
    !obj["metadata"]["deletionTimestamp"].is_null()
}

/// `GetScaledValueFromIntOrPercent(v, total, roundUp=true)`.
fn scaled(v: &Value, total: i64) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<i64>().ok())
            .map(|p| (total * p + 99) / 100),
        _ => None,
    }
}

/// What the disruption controller reads: the objects of one namespace by collection.
pub(crate) struct Namespace<'a> {
    pub objects: Vec<(&'a str, &'a Value)>,
}

impl<'a> Namespace<'a> {
    fn find(&self, collection: &str, name: &str, uid: &Value) -> Option<&'a Value> {
        self.objects
            .iter()
            .find(|(c, o)| {
                *c == collection && o["metadata"]["name"] == name && o["metadata"]["uid"] == *uid
            })
            .map(|(_, o)| *o)
    }

    fn pods(&self) -> impl Iterator<Item = &'a Value> + '_ {
        self.objects
            .iter()
            .filter(|(c, _)| *c == PODS)
            .map(|(_, o)| *o)
    }

    /// The scale of a pod's controller (the finders of `getExpectedScale`): `Ok(None)` for a
    /// pod without one, `Err` when it cannot be found.
    fn controller_scale(&self, pod: &Value) -> Result<Option<(String, i64)>, String> {
        let Some(owner) = pod["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["controller"] == true)
        else {
            return Ok(None);
        };
        let name = owner["name"].as_str().unwrap_or_default();
        let uid = &owner["uid"];
        let replicas = |o: &Value| o["spec"]["replicas"].as_i64().unwrap_or(1);
        let found = match owner["kind"].as_str() {
            Some("ReplicaSet") => self.find("apps/v1/replicasets", name, uid).map(|rs| {
                let deployment = rs["metadata"]["ownerReferences"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|o| o["controller"] == true && o["kind"] == "Deployment")
                    .and_then(|d| {
                        self.find(
                            "apps/v1/deployments",
                            d["name"].as_str().unwrap_or_default(),
                            &d["uid"],
                        )
                    });
                match deployment {
                    Some(d) => (d["metadata"]["uid"].to_string(), replicas(d)),
                    None => (uid.to_string(), replicas(rs)),
                }
            }),
            Some("StatefulSet") => self
                .find("apps/v1/statefulsets", name, uid)
                .map(|s| (uid.to_string(), replicas(s))),
            Some("ReplicationController") => self
                .find("v1/replicationcontrollers", name, uid)
                .map(|s| (uid.to_string(), replicas(s))),
            _ => None,
        };
        found.map(Some).ok_or_else(|| {
            format!(
                "found no controllers for pod {:?}",
                pod["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
    }
}

/// The status the disruption controller writes for `pdb` at `now` (unix seconds), or the
/// failSafe status when the sync fails.
pub(crate) fn status(pdb: &Value, ns: &Namespace<'_>, now: i64) -> Value {
    let old = &pdb["status"];
    let generation = pdb["metadata"]["generation"].as_i64().unwrap_or(1);
    let selector = &pdb["spec"]["selector"];
    let pods: Vec<&Value> = ns
        .pods()
        .filter(|p| label_selector_matches(selector, p))
        .collect();
    let expected_scale = || -> Result<i64, String> {
        let mut scales = BTreeMap::new();
        for p in &pods {
            if let Some((controller, scale)) = ns.controller_scale(p)? {
                scales.insert(controller, scale);
            }
        }
        Ok(scales.values().sum())
    };
    let spec = &pdb["spec"];
    let counted: Result<(i64, i64), String> = if !spec["maxUnavailable"].is_null() {
        expected_scale().map(|expected| {
            let max = scaled(&spec["maxUnavailable"], expected).unwrap_or(0);
            (expected, (expected - max).max(0))
        })
    } else if let Value::Number(n) = &spec["minAvailable"] {
        Ok((pods.len() as i64, n.as_i64().unwrap_or(0)))
    } else if !spec["minAvailable"].is_null() {
        expected_scale().map(|expected| {
            (
                expected,
                scaled(&spec["minAvailable"], expected).unwrap_or(0),
            )
        })
    } else {
        Ok((0, 0))
    };
    let (expected, desired) = match counted {
        Ok(c) => c,
        Err(why) => {
            // failSafe: no disruption, the reason in the condition, the generation not observed.
            let mut failed = old.clone();
            if !failed.is_object() {
                failed = json!({});
            }
            failed["disruptionsAllowed"] = 0.into();
            let seen = old["observedGeneration"].as_i64().unwrap_or(0);
            failed["conditions"] = json!([condition(old, false, "SyncFailed", &why, seen)]);
            return failed;
        }
    };
    // disruptedPods: kept while the pod exists, is not yet being deleted, and is recent.
    let mut disrupted = serde_json::Map::new();
    if let Some(m) = old["disruptedPods"].as_object() {
        for (name, at) in m {
            let since = at
                .as_str()
                .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
                .map_or(0, |t| t.as_second());
            let live = pods
                .iter()
                .any(|p| p["metadata"]["name"] == name.as_str() && !deleting(p));
            if live && since + DELETION_TIMEOUT_SECS > now {
                disrupted.insert(name.clone(), at.clone());
            }
        }
    }
    let healthy = pods
        .iter()
        .filter(|p| {
            !deleting(p)
                && !disrupted.contains_key(p["metadata"]["name"].as_str().unwrap_or_default())
                && ready(p)
        })
        .count() as i64;
    let allowed = if expected <= 0 {
        0
    } else {
        (healthy - desired).max(0)
    };
    let (reason, message) = if allowed > 0 {
        ("SufficientPods", "")
    } else {
        ("InsufficientPods", "")
    };
    let mut out = json!({
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "expectedPods": expected,
        "disruptionsAllowed": allowed,
        "observedGeneration": generation,
        "conditions": [condition(old, allowed > 0, reason, message, generation)],
    });
    if !disrupted.is_empty() {
        out["disruptedPods"] = Value::Object(disrupted);
    }
    out
}

/// The `DisruptionAllowed` condition, keeping its transition time while its status holds.
fn condition(old: &Value, allowed: bool, reason: &str, message: &str, generation: i64) -> Value {
    let status = if allowed { "True" } else { "False" };
    let since = old["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "DisruptionAllowed" && c["status"] == status)
        .map(|c| c["lastTransitionTime"].clone())
        .unwrap_or_else(|| crate::now_rfc3339().into());
    json!({"type": "DisruptionAllowed", "status": status, "reason": reason,
           "message": message, "lastTransitionTime": since,
           "observedGeneration": generation})
}

/// The Eviction subresource's answer for a pod.
#[derive(Debug)]
pub(crate) enum Answer {
    /// Delete the pod; with the budget (by name) and its status after the decrement.
    Delete(Option<(String, Value)>),
    /// 429 with the cause's message, and the seconds to wait it suggests (`Retry-After`).
    TooManyRequests { cause: String, retry_after: u32 },
    /// 500 with the message.
    Internal(&'static str),
}

pub(crate) const REFUSED: &str =
    "Cannot evict pod as it would violate the pod's disruption budget.";

/// What the Eviction API answers for `pod` given the namespace's budgets, at `now`.
pub(crate) fn evict(pod: &Value, pdbs: &[&Value], now: &str) -> Answer {
    let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
    if matches!(phase, "Pending" | "Succeeded" | "Failed") || deleting(pod) {
        return Answer::Delete(None);
    }
    let covering: Vec<&&Value> = pdbs
        .iter()
        .filter(|b| label_selector_matches(&b["spec"]["selector"], pod))
        .collect();
    let pdb = match covering.as_slice() {
        [] => return Answer::Delete(None),
        [one] => **one,
        _ => {
            return Answer::Internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            );
        }
    };
    let name = pdb["metadata"]["name"].as_str().unwrap_or_default();
    let s = &pdb["status"];
    let n = |f: &str| s[f].as_i64().unwrap_or(0);
    if !ready(pod) {
        let always = pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow";
        if always || (n("currentHealthy") >= n("desiredHealthy") && n("desiredHealthy") > 0) {
            return Answer::Delete(None);
        }
    }
    if n("observedGeneration") < pdb["metadata"]["generation"].as_i64().unwrap_or(1) {
        return Answer::TooManyRequests {
            cause: format!("The disruption budget {name} is still being processed by the server."),
            retry_after: 10,
        };
    }
    if n("disruptionsAllowed") <= 0 {
        return Answer::TooManyRequests {
            cause: format!(
                "The disruption budget {name} needs {} healthy pods and has {} currently",
                n("desiredHealthy"),
                n("currentHealthy")
            ),
            retry_after: 0,
        };
    }
    let mut after = s.clone();
    after["disruptionsAllowed"] = (n("disruptionsAllowed") - 1).into();
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
    after["disruptedPods"][pod_name] = now.into();
    Answer::Delete(Some((name.to_string(), after)))
}

/// The condition the Eviction API gives a pod it deletes.
pub(crate) fn disruption_target(pod: &mut Value) {
    let conditions = pod["status"]["conditions"].take();
    let mut list: Vec<Value> = conditions
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c["type"] != "DisruptionTarget")
        .collect();
    list.push(json!({"type": "DisruptionTarget", "status": "True",
                     "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting",
                     "lastTransitionTime": crate::now_rfc3339()}));
    pod["status"]["conditions"] = Value::Array(list);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_older_than_the_spec_refuses_a_ready_pod_with_retry_after() {
        let pod = json!({"metadata": {"name": "web-0", "labels": {"app": "web"}},
                         "status": {"phase": "Running",
                                    "conditions": [{"type": "Ready", "status": "True"}]}});
        let pdb = json!({"metadata": {"name": "web", "generation": 2},
                         "spec": {"selector": {"matchLabels": {"app": "web"}}},
                         "status": {"observedGeneration": 1, "disruptionsAllowed": 3}});
        match evict(&pod, &[&pdb], "2026-12-06T00:00:00Z") {
            Answer::TooManyRequests { cause, retry_after } => {
                assert!(cause.contains("still being processed"), "{cause}");
                assert_eq!(retry_after, 10);
            }
            other => panic!("{other:?}"),
        }
        // A nil selector selects nothing.
        let nil = json!({"metadata": {"name": "all", "generation": 1}, "spec": {}});
        assert!(matches!(evict(&pod, &[&nil], "now"), Answer::Delete(None)));
    }
}
