//! Reading Kubernetes manifests (multi-document YAML) into our resources, with errors that name
//! the file, the line and the field.

use serde::Deserialize;
use serde_json::Value;

use super::{EC2NodeClass, NodePool, Policy};

/// One object of a manifest file.
#[derive(Debug, Clone, PartialEq)]
pub enum Manifest {
    NodePool(Box<NodePool>),
    EC2NodeClass(Box<EC2NodeClass>),
    Policy(Box<Policy>),
    /// The simulator's timeline (`sim.dovetail.sh/v1`).
    Scenario(Box<super::scenario::Scenario>),
    /// Any other kind (Deployment, Pod, PodDisruptionBudget…), left for its reader.
    Other {
        api_version: String,
        kind: String,
        document: serde_json::Value,
    },
}

/// A manifest that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ManifestError {
    /// YAML syntax, a missing or unknown field value, a wrong type.
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// A document without `apiVersion` and `kind`.
    #[error("{file}: document {document}: {message}")]
    NotAnObject {
        file: String,
        document: usize,
        message: String,
    },
    /// A document the API server would refuse: its schema or a CEL rule of its CRD.
    #[error("{file}:{line}: {object}: {}", violations.join("; "))]
    Rejected {
        file: String,
        /// Where the document starts.
        line: usize,
        /// `Kind/name`.
        object: String,
        /// `field: rule`, every one broken.
        violations: Vec<String>,
    },
    /// An old or foreign API version of one of our kinds.
    #[error("{file}: document {document}: {kind} must be apiVersion {expected}, not {found}")]
    WrongVersion {
        file: String,
        document: usize,
        kind: String,
        expected: String,
        found: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

/// The line where the `index`th document of a YAML stream starts (1-based).
fn document_line(text: &str, index: usize) -> usize {
    let separators: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| *l == "---" || l.starts_with("--- "))
        .map(|(n, _)| n + 1)
        .collect();
    let leading = text
        .lines()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .is_some_and(|l| l == "---" || l.starts_with("--- "));
    let k = if leading {
        Some(index)
    } else {
        index.checked_sub(1)
    };
    match k {
        None => 1,
        Some(k) => separators.get(k).map_or(1, |l| l + 1),
    }
}

/// The line (1-based) of a field (`spec.disruption.budgets[1].nodes`) in the document that starts
/// at `doc_line`, found by its keys and list items in block-style YAML; as deep as it can be
/// followed (a flow-style `{…}` or `[…]` value ends the search at its key's line).
pub fn field_line(text: &str, doc_line: usize, field: &str) -> usize {
    enum Step<'a> {
        Key(&'a str),
        Item(usize),
    }
    let mut steps = Vec::new();
    for part in field.split('.') {
        let (key, indices) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            steps.push(Step::Key(key));
        }
        for i in indices.split('[') {
            if let Ok(n) = i.trim_end_matches(']').parse() {
                steps.push(Step::Item(n));
            }
        }
    }
    let lines: Vec<&str> = text
        .lines()
        .skip(doc_line.saturating_sub(1))
        .take_while({
            let mut first = true;
            move |l| {
                let sep = *l == "---" || l.starts_with("--- ");
                let keep = first || !sep;
                first = false;
                keep
            }
        })
        .collect();
    // (indent of the content, the content) of a line; a list item's dash is part of the
    // indentation of what follows it.
    let content = |l: &str| -> Option<(usize, bool, String)> {
        let trimmed = l.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed == "---" {
            return None;
        }
        let indent = l.len() - trimmed.len();
        match trimmed.strip_prefix("- ") {
            Some(rest) => Some((indent + 2, true, rest.trim_start().to_string())),
            None => Some((indent, false, trimmed.to_string())),
        }
    };
    let mut found = 0usize;
    let mut pos = 0usize;
    let mut parent: isize = -1;
    'steps: for step in steps {
        match step {
            Step::Key(key) => {
                for (i, l) in lines.iter().enumerate().skip(pos) {
                    let Some((indent, _, c)) = content(l) else {
                        continue;
                    };
                    if i > pos && (indent as isize) <= parent {
                        break;
                    }
                    let named = [
                        format!("{key}:"),
                        format!("\"{key}\":"),
                        format!("'{key}':"),
                    ];
                    if (indent as isize) > parent && named.iter().any(|n| c.starts_with(n.as_str()))
                    {
                        found = i;
                        pos = i + 1;
                        parent = indent as isize;
                        continue 'steps;
                    }
                }
                break;
            }
            Step::Item(n) => {
                let mut seen = 0;
                let mut dash = None;
                for (i, l) in lines.iter().enumerate().skip(pos) {
                    let Some((indent, item, _)) = content(l) else {
                        continue;
                    };
                    let at = indent as isize - 2;
                    if (indent as isize) <= parent && !(item && at >= parent) {
                        break;
                    }
                    if item && dash.is_none_or(|d| d == at) {
                        dash = Some(at);
                        if seen == n {
                            found = i;
                            // The item's first key is on this line: search it from here.
                            pos = i;
                            parent = at;
                            continue 'steps;
                        }
                        seen += 1;
                    }
                }
                break;
            }
        }
    }
    doc_line + found
}

/// Paths in `doc` that `known` — the same document read into a type and written back — does not
/// have: the fields the type does not declare. A value that is null or empty may be dropped by
/// the writing and is not counted; `skip` names top-level fields not judged.
pub fn lost_fields(doc: &Value, known: &Value, at: &str, skip: &[&str], out: &mut Vec<String>) {
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    };
    match (doc, known) {
        (Value::Object(d), Value::Object(k)) => {
            for (name, v) in d {
                if at.is_empty() && skip.contains(&name.as_str()) {
                    continue;
                }
                let path = if at.is_empty() {
                    name.clone()
                } else {
                    format!("{at}.{name}")
                };
                match k.get(name) {
                    Some(kv) => lost_fields(v, kv, &path, &[], out),
                    None if empty(v) => {}
                    None => out.push(path),
                }
            }
        }
        (Value::Array(d), Value::Array(k)) => {
            for (i, (dv, kv)) in d.iter().zip(k).enumerate() {
                lost_fields(dv, kv, &format!("{at}[{i}]"), &[], out);
            }
        }
        _ => {}
    }
}

/// The fields of a built-in kind's document that Kubernetes does not declare, as the API server
/// refuses them under strict field validation (`kubectl apply`'s default), read through
/// k8s-openapi's types. A document that does not read is left to its reader to refuse.
fn undeclared_builtin(api_version: &str, kind: &str, doc: &Value) -> Vec<String> {
    fn lost<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) -> Vec<String> {
        let Ok(typed) = serde_json::from_value::<T>(doc.clone()) else {
            return Vec::new();
        };
        let Ok(known) = serde_json::to_value(typed) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        lost_fields(doc, &known, "", &["status"], &mut out);
        out
    }
    use k8s_openapi::api;
    match (api_version, kind) {
        ("apps/v1", "Deployment") => lost::<api::apps::v1::Deployment>(doc),
        ("apps/v1", "DaemonSet") => lost::<api::apps::v1::DaemonSet>(doc),
        ("apps/v1", "StatefulSet") => lost::<api::apps::v1::StatefulSet>(doc),
        ("apps/v1", "ReplicaSet") => lost::<api::apps::v1::ReplicaSet>(doc),
        ("v1", "Pod") => lost::<api::core::v1::Pod>(doc),
        ("v1", "PersistentVolume") => lost::<api::core::v1::PersistentVolume>(doc),
        ("v1", "PersistentVolumeClaim") => lost::<api::core::v1::PersistentVolumeClaim>(doc),
        ("v1", "ConfigMap") => lost::<api::core::v1::ConfigMap>(doc),
        ("policy/v1", "PodDisruptionBudget") => lost::<api::policy::v1::PodDisruptionBudget>(doc),
        ("storage.k8s.io/v1", "StorageClass") => lost::<api::storage::v1::StorageClass>(doc),
        _ => Vec::new(),
    }
}

/// A YAML error with its place.
fn invalid(file: &str, e: serde_norway::Error) -> ManifestError {
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    ManifestError::Invalid {
        file: file.to_string(),
        line,
        column,
        message: e.to_string(),
    }
}

/// The documents of a YAML stream as JSON values (`None` for an empty document), with errors
/// that name the line.
pub fn documents(file: &str, text: &str) -> Result<Vec<Option<serde_json::Value>>, ManifestError> {
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let value = serde_norway::Value::deserialize(doc).map_err(|e| invalid(file, e))?;
        out.push(if value.is_null() {
            None
        } else {
            serde_norway::from_value(value).ok()
        });
    }
    Ok(out)
}

/// Reads every document of a YAML stream. `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Vec<Manifest>, ManifestError> {
    let invalid = |e: serde_norway::Error| invalid(file, e);
    // First pass: the kind of each document (empty documents skipped).
    let mut kinds = Vec::new();
    let mut jsons = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let value = serde_norway::Value::deserialize(doc).map_err(invalid)?;
        if value.is_null() {
            kinds.push(None);
            jsons.push(None);
            continue;
        }
        let meta: TypeMeta = serde_norway::from_value(value.clone()).map_err(invalid)?;
        jsons.push(serde_norway::from_value::<serde_json::Value>(value).ok());
        kinds.push(Some(meta));
    }
    // Our kinds are checked as the API server would check them, once they read (a wrong
    // type or enum is reported with its line by the reading itself).
    let check = |index: usize, kind: &str| -> Result<(), ManifestError> {
        let Some(json) = jsons.get(index).and_then(Option::as_ref) else {
            return Ok(());
        };
        let violations = super::validate::validate(kind, json);
        if violations.is_empty() {
            return Ok(());
        }
        // Each refusal at its field's own line.
        let start = document_line(text, index);
        let lines: Vec<usize> = violations
            .iter()
            .map(|v| field_line(text, start, &v.field))
            .collect();
        Err(ManifestError::Rejected {
            file: file.to_string(),
            line: lines[0],
            object: format!(
                "{kind}/{}",
                json["metadata"]["name"].as_str().unwrap_or("?")
            ),
            violations: violations
                .iter()
                .zip(&lines)
                .enumerate()
                .map(|(i, (v, line))| {
                    if i == 0 {
                        v.to_string()
                    } else {
                        format!("line {line}: {v}")
                    }
                })
                .collect(),
        })
    };
    // Second pass: each document into its type, so errors carry the line in the file.
    let mut out = Vec::new();
    for (i, (doc, meta)) in serde_norway::Deserializer::from_str(text)
        .zip(kinds)
        .enumerate()
    {
        let Some(meta) = meta else { continue };
        if meta.api_version.is_empty() || meta.kind.is_empty() {
            return Err(ManifestError::NotAnObject {
                file: file.to_string(),
                document: i + 1,
                message: "missing apiVersion or kind".into(),
            });
        }
        let ours = |expected: &str| -> Result<(), ManifestError> {
            if meta.api_version == expected {
                Ok(())
            } else {
                Err(ManifestError::WrongVersion {
                    file: file.to_string(),
                    document: i + 1,
                    kind: meta.kind.clone(),
                    expected: expected.to_string(),
                    found: meta.api_version.clone(),
                })
            }
        };
        let group = meta.api_version.split('/').next().unwrap_or_default();
        let manifest = match (group, meta.kind.as_str()) {
            ("dovetail.sh", "NodePool") => {
                ours("dovetail.sh/v1")?;
                let pool = NodePool::deserialize(doc).map_err(invalid)?;
                check(i, "NodePool")?;
                Manifest::NodePool(Box::new(pool))
            }
            ("aws.dovetail.sh", "EC2NodeClass") => {
                ours("aws.dovetail.sh/v1")?;
                let class = EC2NodeClass::deserialize(doc).map_err(invalid)?;
                check(i, "EC2NodeClass")?;
                Manifest::EC2NodeClass(Box::new(class))
            }
            ("dovetail.sh", "Policy") => {
                ours("dovetail.sh/v1")?;
                let policy = Policy::deserialize(doc).map_err(invalid)?;
                check(i, "Policy")?;
                Manifest::Policy(Box::new(policy))
            }
            ("sim.dovetail.sh", "Scenario") => {
                ours("sim.dovetail.sh/v1")?;
                Manifest::Scenario(Box::new(
                    super::scenario::Scenario::deserialize(doc).map_err(invalid)?,
                ))
            }
            _ => {
                let document = serde_json::Value::deserialize(doc).map_err(invalid)?;
                let lost = undeclared_builtin(&meta.api_version, &meta.kind, &document);
                if !lost.is_empty() {
                    let start = document_line(text, i);
                    let lines: Vec<usize> =
                        lost.iter().map(|f| field_line(text, start, f)).collect();
                    return Err(ManifestError::Rejected {
                        file: file.to_string(),
                        line: lines[0],
                        object: format!(
                            "{}/{}",
                            meta.kind,
                            document["metadata"]["name"].as_str().unwrap_or("?")
                        ),
                        violations: lost
                            .iter()
                            .zip(&lines)
                            .enumerate()
                            .map(|(n, (f, line))| {
                                let what = format!(
                                    "{f}: unknown field (not in {} {})",
                                    meta.api_version, meta.kind
                                );
                                if n == 0 {
                                    what
                                } else {
                                    format!("line {line}: {what}")
                                }
                            })
                            .collect(),
                    });
                }
                Manifest::Other {
                    api_version: meta.api_version.clone(),
                    kind: meta.kind.clone(),
                    document,
                }
            }
        };
        out.push(manifest);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::field_line;

    const TEXT: &str = "# a comment
apiVersion: v1
kind: Thing
---
apiVersion: dovetail.sh/v1
kind: NodePool
metadata:
  name: default
spec:
  template:
    spec:
      requirements:
        - key: a
          operator: In
        - key: b
          operator: Bogus
      nodeClassRef: {name: default}
  disruption:
    consolidateAfter: banana
    budgets:
    - nodes: \"10%\"
    - nodes: \"x\"
";

    #[test]
    fn a_field_is_found_at_its_own_line() {
        assert_eq!(field_line(TEXT, 5, "spec.disruption.consolidateAfter"), 19);
        assert_eq!(
            field_line(TEXT, 5, "spec.template.spec.requirements[1].operator"),
            16
        );
        assert_eq!(
            field_line(TEXT, 5, "spec.template.spec.requirements[1]"),
            15
        );
        assert_eq!(field_line(TEXT, 5, "spec.disruption.budgets[1].nodes"), 22);
        // Into a flow mapping: its key's line.
        assert_eq!(
            field_line(TEXT, 5, "spec.template.spec.nodeClassRef.name"),
            17
        );
        // Not there: as deep as it goes.
        assert_eq!(field_line(TEXT, 5, "spec.nothing"), 9);
        assert_eq!(field_line(TEXT, 5, "(root)"), 5);
    }
}
