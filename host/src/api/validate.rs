//! Manifests checked as the API server checks them: against the OpenAPI schema the CRDs
//! publish (types, required fields, patterns, enums, ranges) and their CEL rules
//! (`x-kubernetes-validations`). One validator for every place a manifest enters without an API
//! server — `dovetail simulate`, and anything else that reads files — so a value the cluster
//! would refuse is refused here too, instead of silently becoming a default.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::Value;

/// One rule a document breaks.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// Where, as a field path (`spec.disruption.budgets[0].nodes`).
    pub field: String,
    /// What the rule says (the schema's message, or the CEL rule and its message).
    pub rule: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.rule)
    }
}

/// A CEL rule and where in the schema it applies.
struct Rule {
    /// Schema steps from the root: a property name, or `[]` for every item of an array.
    at: Vec<String>,
    source: String,
    message: Option<String>,
    program: cel::Program,
}

struct Kind {
    schema: jsonschema::Validator,
    /// The OpenAPI schema itself, for the fields it declares.
    openapi: Value,
    rules: Vec<Rule>,
}

fn kinds() -> &'static BTreeMap<String, Kind> {
    static KINDS: OnceLock<BTreeMap<String, Kind>> = OnceLock::new();
    KINDS.get_or_init(|| {
        super::crds()
            .into_iter()
            .filter_map(|crd| {
                let kind = crd.spec.names.kind.clone();
                let schema = crd
                    .spec
                    .versions
                    .first()?
                    .schema
                    .as_ref()?
                    .open_api_v3_schema
                    .as_ref()?;
                let schema = serde_json::to_value(schema).ok()?;
                let mut rules = Vec::new();
                collect_rules(&schema, &mut Vec::new(), &mut rules);
                let validator = jsonschema::validator_for(&openapi_to_json_schema(&schema))
                    .expect("the CRD schemas are valid JSON Schema");
                Some((
                    kind,
                    Kind {
                        schema: validator,
                        openapi: schema,
                        rules,
                    },
                ))
            })
            .collect()
    })
}

/// OpenAPI's `nullable: true` is JSON Schema's `null` among the types.
fn openapi_to_json_schema(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = serde_json::Map::new();
            for (k, x) in m {
                out.insert(k.clone(), openapi_to_json_schema(x));
            }
            if m.get("nullable") == Some(&Value::Bool(true))
                && let Some(Value::String(t)) = m.get("type")
            {
                out.insert("type".into(), serde_json::json!([t, "null"]));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(openapi_to_json_schema).collect()),
        other => other.clone(),
    }
}

fn collect_rules(schema: &Value, at: &mut Vec<String>, out: &mut Vec<Rule>) {
    if let Some(list) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for r in list {
            let Some(source) = r.get("rule").and_then(Value::as_str) else {
                continue;
            };
            let program = cel::Program::compile(source)
                .unwrap_or_else(|e| panic!("the CRD's CEL rule {source:?} compiles: {e}"));
            out.push(Rule {
                at: at.clone(),
                source: source.to_string(),
                message: r.get("message").and_then(Value::as_str).map(str::to_string),
                program,
            });
        }
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, s) in props {
            at.push(name.clone());
            collect_rules(s, at, out);
            at.pop();
        }
    }
    if let Some(items) = schema.get("items") {
        at.push("[]".into());
        collect_rules(items, at, out);
        at.pop();
    }
}

/// Every value the steps reach in `doc`, with its field path.
fn reach<'a>(doc: &'a Value, steps: &[String], path: String, out: &mut Vec<(String, &'a Value)>) {
    let Some((step, rest)) = steps.split_first() else {
        out.push((path, doc));
        return;
    };
    if step == "[]" {
        for (i, x) in doc.as_array().into_iter().flatten().enumerate() {
            reach(x, rest, format!("{path}[{i}]"), out);
        }
    } else if let Some(x) = doc.get(step) {
        let path = if path.is_empty() {
            step.clone()
        } else {
            format!("{path}.{step}")
        };
        reach(x, rest, path, out);
    }
}

/// Fields the schema does not declare, as the API server refuses them under strict field
/// validation (`kubectl apply`'s default): an object schema with `properties` and neither
/// `additionalProperties` (a map) nor `x-kubernetes-preserve-unknown-fields` accepts no other
/// key. `apiVersion`, `kind` and `metadata` are the API server's own and not checked here.
fn unknown_fields(doc: &Value, schema: &Value, path: &str, out: &mut Vec<Violation>) {
    match doc {
        Value::Object(m) => {
            if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
                return;
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let map_of = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, v) in m {
                let at = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                match (props.and_then(|p| p.get(k)), map_of) {
                    (Some(s), _) => unknown_fields(v, s, &at, out),
                    (None, Some(s)) => unknown_fields(v, s, &at, out),
                    (None, None) if props.is_some() => {
                        let mut known: Vec<&str> = props
                            .into_iter()
                            .flatten()
                            .map(|(k, _)| k.as_str())
                            .collect();
                        known.sort_unstable();
                        out.push(Violation {
                            field: at,
                            rule: format!("unknown field (declared here: {})", known.join(", ")),
                        });
                    }
                    (None, None) => {}
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = schema.get("items") {
                for (i, x) in a.iter().enumerate() {
                    unknown_fields(x, items, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// JSON pointer `/spec/budgets/0/nodes` as a field path `spec.budgets[0].nodes`.
fn field_path(pointer: &str) -> String {
    let mut out = String::new();
    for part in pointer.split('/').filter(|p| !p.is_empty()) {
        let part = part.replace("~1", "/").replace("~0", "~");
        if part.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&part);
        }
    }
    if out.is_empty() { "(root)".into() } else { out }
}

/// Checks a document of one of our kinds (`NodePool`, `EC2NodeClass`, `Policy`, `NodeClaim`);
/// other kinds pass. Every violation is returned: unknown fields, then the schema's, then the CEL
/// rules'.
pub fn validate(kind: &str, doc: &Value) -> Vec<Violation> {
    let Some(k) = kinds().get(kind) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    unknown_fields(doc, &k.openapi, "", &mut out);
    out.extend(k.schema.iter_errors(doc).map(|e| Violation {
        field: field_path(e.instance_path().as_str()),
        rule: e.to_string(),
    }));
    for rule in &k.rules {
        let mut reached = Vec::new();
        reach(doc, &rule.at, String::new(), &mut reached);
        for (path, value) in reached {
            let mut ctx = cel::Context::default();
            let Ok(()) = ctx.add_variable("self", value.clone()) else {
                continue;
            };
            let broken = match rule.program.execute(&ctx) {
                Ok(cel::Value::Bool(true)) => None,
                Ok(other) => Some(format!("is {other:?}")),
                Err(e) => Some(format!("cannot be evaluated: {e}")),
            };
            if let Some(how) = broken {
                out.push(Violation {
                    field: if path.is_empty() {
                        "(root)".into()
                    } else {
                        path
                    },
                    rule: match &rule.message {
                        Some(m) => format!("{m} (rule `{}` {how})", rule.source),
                        None => format!("rule `{}` {how}", rule.source),
                    },
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pool(spec: Value) -> Value {
        json!({"apiVersion": "dovetail.sh/v1", "kind": "NodePool", "metadata": {"name": "p"}, "spec": spec})
    }

    fn template() -> Value {
        json!({"spec": {"requirements": [], "nodeClassRef": {"group": "aws.dovetail.sh", "kind": "EC2NodeClass", "name": "default"}}})
    }

    #[test]
    fn a_valid_node_pool_passes() {
        let v = validate("NodePool", &pool(json!({"template": template()})));
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn fields_the_schema_does_not_declare_are_refused_where_they_are() {
        let mut p = pool(json!({"template": template(),
            "policies": {"scoring": "cheapest", "consolidaton": "balanced"}}));
        p["spec"]["template"]["metadata"] = json!({"labels": {"any-key": "fine"}});
        p["metadata"]["anything"] = json!("the API server's, not checked here");
        let v = validate("NodePool", &p);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].field, "spec.policies.consolidaton");
        assert!(
            v[0].rule.contains("unknown field") && v[0].rule.contains("consolidation"),
            "{v:?}"
        );
        let policy = json!({"apiVersion": "dovetail.sh/v1", "kind": "Policy", "metadata": {"name": "p"},
            "spec": {"source": {"builtin": "cheapest"}, "confg": {"a": "b"}}});
        let v = validate("Policy", &policy);
        assert!(v.iter().any(|x| x.field == "spec.confg"), "{v:?}");
    }

    #[test]
    fn schema_and_cel_rules_are_both_applied() {
        let bad = pool(json!({
            "template": {"spec": {
                "requirements": [{"key": "kubernetes.io/arch", "operator": "In", "values": []}],
                "nodeClassRef": {"group": "aws.dovetail.sh", "kind": "EC2NodeClass", "name": "default"}}},
            "disruption": {"consolidateAfter": "banana"}
        }));
        let v = validate("NodePool", &bad);
        assert!(
            v.iter()
                .any(|x| x.field == "spec.disruption.consolidateAfter"),
            "{v:?}"
        );
        assert!(
            v.iter()
                .any(|x| x.field == "spec.template.spec.requirements[0]"
                    && x.rule.contains("size(self.values)")),
            "{v:?}"
        );
    }
}
