//! Field validation (KEP-2885, `fieldValidation=Strict|Warn|Ignore`): which fields of a written
//! object its kind does not declare. A built-in kind's declared fields are those k8s-openapi's
//! type for it keeps when the object is read into it and written back out; what the round trip
//! drops was never declared. Custom resources are left to the validator.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A field the kind does not declare: as the API names it (`spec.containers[0].foo`) and as a
/// JSON pointer (to drop it).
pub(crate) struct Unknown {
    pub name: String,
    pub pointer: String,
}

fn round_trip<T: DeserializeOwned + Serialize>(v: &Value) -> Option<Value> {
    serde_json::from_value::<T>(v.clone())
        .ok()
        .and_then(|t| serde_json::to_value(t).ok())
}

/// The undeclared fields of `obj`, written to `collection`; none for a kind not known here.
pub(crate) fn unknown(collection: &str, obj: &Value) -> Vec<Unknown> {
    use k8s_openapi::api::{apps, coordination, core, events, policy};
    let declared = match collection {
        "v1/pods" => round_trip::<core::v1::Pod>(obj),
        "v1/nodes" => round_trip::<core::v1::Node>(obj),
        "v1/configmaps" => round_trip::<core::v1::ConfigMap>(obj),
        "v1/events" => round_trip::<core::v1::Event>(obj),
        "events.k8s.io/v1/events" => round_trip::<events::v1::Event>(obj),
        "coordination.k8s.io/v1/leases" => round_trip::<coordination::v1::Lease>(obj),
        "policy/v1/poddisruptionbudgets" => round_trip::<policy::v1::PodDisruptionBudget>(obj),
        "apps/v1/replicasets" => round_trip::<apps::v1::ReplicaSet>(obj),
        "apps/v1/deployments" => round_trip::<apps::v1::Deployment>(obj),
        _ => None,
    };
    let mut out = Vec::new();
    if let Some(declared) = declared {
        walk(obj, &declared, "", "", &mut out);
    }
    out
}

fn walk(given: &Value, declared: &Value, name: &str, pointer: &str, out: &mut Vec<Unknown>) {
    match (given, declared) {
        (Value::Object(g), Value::Object(d)) => {
            for (k, v) in g {
                if v.is_null() {
                    continue;
                }
                let n = if name.is_empty() {
                    k.clone()
                } else {
                    format!("{name}.{k}")
                };
                let p = format!("{pointer}/{}", k.replace('~', "~0").replace('/', "~1"));
                match d.get(k) {
                    None => out.push(Unknown {
                        name: n,
                        pointer: p,
                    }),
                    Some(dv) => walk(v, dv, &n, &p, out),
                }
            }
        }
        (Value::Array(g), Value::Array(d)) if g.len() == d.len() => {
            for (i, (gv, dv)) in g.iter().zip(d).enumerate() {
                walk(
                    gv,
                    dv,
                    &format!("{name}[{i}]"),
                    &format!("{pointer}/{i}"),
                    out,
                );
            }
        }
        _ => {}
    }
}

/// Drops the fields (pruning, as the server does when it does not refuse them).
pub(crate) fn drop_fields(obj: &mut Value, unknown: &[Unknown]) {
    // Deepest first, so an array index stays valid.
    for u in unknown.iter().rev() {
        let Some((parent, last)) = u.pointer.rsplit_once('/') else {
            continue;
        };
        let last = last.replace("~1", "/").replace("~0", "~");
        if let Some(Value::Object(m)) = obj.pointer_mut(parent) {
            m.remove(&last);
        }
    }
}
