//! Reading Kubernetes manifests (multi-document YAML) into our resources, with errors that name
//! the file, the line and the field.

use serde::Deserialize;

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
        Err(ManifestError::Rejected {
            file: file.to_string(),
            line: document_line(text, index),
            object: format!(
                "{kind}/{}",
                json["metadata"]["name"].as_str().unwrap_or("?")
            ),
            violations: violations.iter().map(ToString::to_string).collect(),
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
            _ => Manifest::Other {
                api_version: meta.api_version.clone(),
                kind: meta.kind.clone(),
                document: serde_json::Value::deserialize(doc).map_err(invalid)?,
            },
        };
        out.push(manifest);
    }
    Ok(out)
}
