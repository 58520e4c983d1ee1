//! `dovetail convert`: Karpenter v1 manifests rewritten to Dovetail's groups and keys, with a
//! report of everything that could not be carried over. The result goes through the same reader
//! and validator as every other manifest ([`super::manifest::parse`]), so what `convert` prints
//! is what `simulate` and the API server accept.
//!
//! - `karpenter.sh/v1` NodePool → `dovetail.sh/v1`; `karpenter.k8s.aws/v1` EC2NodeClass →
//!   `aws.dovetail.sh/v1`; a NodePool's `nodeClassRef.group` follows.
//! - Label and annotation keys everywhere they select nodes or guard pods: requirements,
//!   template labels, nodeSelector, node affinity, topology spread keys, pod anti/affinity
//!   topology keys, `karpenter.sh/do-not-disrupt` — in NodePools and in workloads (Pod,
//!   Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob).
//! - Fields Dovetail's types do not have are dropped and named in the report.

use serde_json::Value;

use super::manifest::{self, ManifestError};

/// Converted manifests and what the conversion could not carry over.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// The documents, as YAML.
    pub yaml: String,
    /// One line per thing a user must look at (`NodePool/default: spec.template.spec.kubelet
    /// dropped: …`).
    pub notes: Vec<String>,
    /// How many documents changed.
    pub changed: usize,
}

const KARPENTER: &str = "karpenter.sh/";
const KARPENTER_AWS: &str = "karpenter.k8s.aws/";

/// The Dovetail key of a Karpenter label or annotation key; `Err` with why for a Karpenter key
/// Dovetail has no equivalent for; other keys unchanged.
fn key(k: &str) -> Result<String, String> {
    if let Some(rest) = k.strip_prefix(KARPENTER) {
        return match rest {
            "capacity-type" | "nodepool" | "do-not-disrupt" => Ok(format!("dovetail.sh/{rest}")),
            _ => Err(format!("{k} has no Dovetail equivalent")),
        };
    }
    if let Some(rest) = k.strip_prefix(KARPENTER_AWS) {
        return match rest {
            "instance-category"
            | "instance-family"
            | "instance-generation"
            | "instance-size"
            | "instance-cpu"
            | "instance-memory"
            | "instance-cpu-manufacturer"
            | "instance-gpu-name"
            | "instance-gpu-count"
            | "instance-gpu-manufacturer"
            | "instance-hypervisor"
            | "instance-encryption-in-transit-supported"
            | "instance-local-nvme"
            | "instance-network-bandwidth"
            | "ec2nodeclass" => Ok(format!("aws.dovetail.sh/{rest}")),
            _ => Err(format!("{k} has no Dovetail equivalent")),
        };
    }
    Ok(k.to_string())
}

/// Rewrites Karpenter manifests; refuses text that does not read, and converted documents that
/// Dovetail's schema refuses.
pub fn convert(file: &str, text: &str) -> Result<Converted, ManifestError> {
    let mut notes = Vec::new();
    let mut out = Vec::new();
    let mut changed = 0;
    for doc in manifest::documents(file, text)? {
        let Some(mut doc) = doc else { continue };
        let before = doc.clone();
        let api = doc["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        let name = doc["metadata"]["name"].as_str().unwrap_or("?").to_string();
        let mut c = Ctx {
            notes: &mut notes,
            object: format!("{kind}/{name}"),
        };
        match (api.as_str(), kind.as_str()) {
            ("karpenter.sh/v1", "NodePool") => {
                doc["apiVersion"] = "dovetail.sh/v1".into();
                node_pool(&mut doc, &mut c);
                c.keep_known::<super::NodePool>(&mut doc);
            }
            ("karpenter.k8s.aws/v1", "EC2NodeClass") => {
                doc["apiVersion"] = "aws.dovetail.sh/v1".into();
                if let Some(tags) = doc.pointer("/spec/tags").and_then(Value::as_object) {
                    for k in tags
                        .keys()
                        .filter(|k| k.starts_with(KARPENTER))
                        .cloned()
                        .collect::<Vec<_>>()
                    {
                        c.note(format!("spec.tags.{k}: a Karpenter tag is kept as is; Dovetail tags what it launches with dovetail.sh/*"));
                    }
                }
                for terms in [
                    "subnetSelectorTerms",
                    "securityGroupSelectorTerms",
                    "amiSelectorTerms",
                ] {
                    let list = doc
                        .pointer(&format!("/spec/{terms}"))
                        .and_then(Value::as_array);
                    for t in list.into_iter().flatten() {
                        for k in t["tags"].as_object().into_iter().flatten().map(|(k, _)| k) {
                            if k == "karpenter.sh/discovery" {
                                c.note(format!("spec.{terms}: selects by the tag karpenter.sh/discovery, which stays: retag to dovetail.sh/discovery once Karpenter is gone"));
                            }
                        }
                    }
                }
                node_role(&doc, &mut c);
                c.keep_known::<super::EC2NodeClass>(&mut doc);
            }
            (a, "NodePool" | "NodeClaim" | "EC2NodeClass") if a.starts_with("karpenter") => {
                c.note(format!(
                    "{a} {kind} is not a version convert reads (Karpenter v1 only); left out"
                ));
                continue;
            }
            (_, "NodeClaim") => {
                c.note("NodeClaims are made by a controller, not converted; left out".into());
                continue;
            }
            (_, "Pod") => {
                rekey(&mut doc, "/metadata/annotations", &mut c);
                pod_spec(&mut doc, "/spec", &mut c);
            }
            (_, "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job") => {
                rekey(&mut doc, "/metadata/annotations", &mut c);
                rekey(&mut doc, "/spec/template/metadata/annotations", &mut c);
                pod_spec(&mut doc, "/spec/template/spec", &mut c);
            }
            (_, "CronJob") => {
                rekey(
                    &mut doc,
                    "/spec/jobTemplate/spec/template/metadata/annotations",
                    &mut c,
                );
                pod_spec(&mut doc, "/spec/jobTemplate/spec/template/spec", &mut c);
            }
            _ => {}
        }
        if doc != before {
            changed += 1;
        }
        out.push(doc);
    }
    let yaml = out
        .iter()
        .map(|d| serde_norway::to_string(d).expect("a JSON value is YAML"))
        .collect::<Vec<_>>()
        .join("---\n");
    // What comes out reads and validates like any manifest.
    manifest::parse(&format!("{file} (converted)"), &yaml)?;
    Ok(Converted {
        yaml,
        notes,
        changed,
    })
}

struct Ctx<'a> {
    notes: &'a mut Vec<String>,
    object: String,
}

impl Ctx<'_> {
    fn note(&mut self, n: String) {
        self.notes.push(format!("{}: {n}", self.object));
    }

    /// Rewrites a key, noting one with no equivalent (kept as is, so nothing is silently lost).
    fn key(&mut self, at: &str, k: &str) -> String {
        match key(k) {
            Ok(new) => new,
            Err(why) => {
                self.note(format!("{at}: {why}; kept as is"));
                k.to_string()
            }
        }
    }

    /// Drops the fields `T` does not know, naming each.
    fn keep_known<T: serde::de::DeserializeOwned + serde::Serialize>(&mut self, doc: &mut Value) {
        let Ok(typed) = serde_json::from_value::<T>(doc.clone()) else {
            return; // the reader reports it with its line
        };
        let known = serde_json::to_value(typed).expect("our types serialize");
        let mut dropped = Vec::new();
        manifest::lost_fields(doc, &known, "", &["metadata", "status"], &mut dropped);
        for d in dropped {
            self.note(format!("{d} has no Dovetail equivalent; dropped"));
        }
        // Our serializer fills defaults: the user's document stays, minus the unknown fields.
        prune(doc, &known);
    }
}

/// Removes from `doc` what `known` does not have.
fn prune(doc: &mut Value, known: &Value) {
    match (doc, known) {
        (Value::Object(d), Value::Object(k)) => {
            d.retain(|name, _| name == "metadata" || name == "status" || k.contains_key(name));
            for (name, v) in d.iter_mut() {
                if let Some(kv) = k.get(name)
                    && name != "metadata"
                {
                    prune(v, kv);
                }
            }
        }
        (Value::Array(d), Value::Array(k)) => {
            for (dv, kv) in d.iter_mut().zip(k) {
                prune(dv, kv);
            }
        }
        _ => {}
    }
}

fn node_pool(doc: &mut Value, c: &mut Ctx) {
    if let Some(group) = doc.pointer_mut("/spec/template/spec/nodeClassRef/group")
        && group == "karpenter.k8s.aws"
    {
        *group = "aws.dovetail.sh".into();
    }
    keys_of(doc, "/spec/template/spec/requirements", "key", c);
    rekey(doc, "/spec/template/metadata/labels", c);
    rekey(doc, "/spec/template/metadata/annotations", c);
}

/// The role the stack's controller policy lets the controller pass (`AllowPassingNodeRole` in
/// deploy/cloudformation.yaml): `DovetailNodeRole-<cluster>`.
const NODE_ROLE_PREFIX: &str = "DovetailNodeRole-";

/// Names a node role the stack's policy will not pass: every launch with it would be refused
/// (`iam:PassRole`), the commonest failure of a migrated class.
fn node_role(doc: &Value, c: &mut Ctx) {
    if let Some(role) = doc.pointer("/spec/role").and_then(Value::as_str)
        && !role.starts_with(NODE_ROLE_PREFIX)
    {
        c.note(format!(
            "spec.role {role}: Dovetail's controller policy (deploy/cloudformation.yaml, AllowPassingNodeRole) passes only {NODE_ROLE_PREFIX}<cluster>, so every launch would be refused (iam:PassRole); set spec.role: {NODE_ROLE_PREFIX}<cluster>, or add this role to that statement"
        ));
    }
    if let Some(profile) = doc.pointer("/spec/instanceProfile").and_then(Value::as_str) {
        c.note(format!(
            "spec.instanceProfile {profile}: its role must be {NODE_ROLE_PREFIX}<cluster> (the only one the controller may pass); `dovetail doctor --role-arn …` dry-runs a launch with it"
        ));
    }
}

/// The JSON pointer as a field path for the report (`/spec/a/0/b` → `spec.a[0].b`).
fn path(pointer: &str) -> String {
    let mut out = String::new();
    for part in pointer.trim_start_matches('/').split('/') {
        if part.parse::<usize>().is_ok() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

/// Rewrites the keys of the string map at `pointer` (labels, annotations, nodeSelector), when
/// there is one.
fn rekey(doc: &mut Value, pointer: &str, c: &mut Ctx) {
    let Some(m) = doc.pointer_mut(pointer).and_then(Value::as_object_mut) else {
        return;
    };
    let entries: Vec<(String, Value)> = std::mem::take(m).into_iter().collect();
    let mut renamed = serde_json::Map::new();
    for (k, v) in entries {
        renamed.insert(c.key(&format!("{}.{k}", path(pointer)), &k), v);
    }
    *m = renamed;
}

/// Rewrites `field` (a label key) of every item of the list at `pointer`.
fn keys_of(doc: &mut Value, pointer: &str, field: &str, c: &mut Ctx) {
    let Some(list) = doc.pointer_mut(pointer).and_then(Value::as_array_mut) else {
        return;
    };
    for (i, item) in list.iter_mut().enumerate() {
        if let Some(k) = item.get(field).and_then(Value::as_str).map(str::to_string) {
            let at = format!("{}[{i}].{field}", path(pointer));
            item[field] = c.key(&at, &k).into();
        }
    }
}

fn pod_spec(doc: &mut Value, at: &str, c: &mut Ctx) {
    rekey(doc, &format!("{at}/nodeSelector"), c);
    let na = format!("{at}/affinity/nodeAffinity");
    // (list of terms, where a term keeps its expressions)
    for (terms, exprs) in [
        (
            format!("{na}/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms"),
            "matchExpressions",
        ),
        (
            format!("{na}/preferredDuringSchedulingIgnoredDuringExecution"),
            "preference/matchExpressions",
        ),
    ] {
        let n = doc
            .pointer(&terms)
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        for t in 0..n {
            keys_of(doc, &format!("{terms}/{t}/{exprs}"), "key", c);
        }
    }
    keys_of(
        doc,
        &format!("{at}/topologySpreadConstraints"),
        "topologyKey",
        c,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_dovetails_and_unknown_karpenter_keys_say_so() {
        assert_eq!(
            key("karpenter.sh/capacity-type").unwrap(),
            "dovetail.sh/capacity-type"
        );
        assert_eq!(
            key("karpenter.k8s.aws/instance-family").unwrap(),
            "aws.dovetail.sh/instance-family"
        );
        assert_eq!(
            key("topology.kubernetes.io/zone").unwrap(),
            "topology.kubernetes.io/zone"
        );
        assert!(key("karpenter.sh/registered").is_err());
    }

    #[test]
    fn a_node_role_the_policy_will_not_pass_is_named_with_the_fix() {
        let class = |role: &str| {
            format!(
                r#"
apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {{name: default}}
spec:
  role: {role}
  amiSelectorTerms: [{{alias: al2023@latest}}]
  subnetSelectorTerms: [{{tags: {{dovetail.sh/discovery: c}}}}]
  securityGroupSelectorTerms: [{{tags: {{dovetail.sh/discovery: c}}}}]
"#
            )
        };
        let c = convert("c.yaml", &class("KarpenterNodeRole-c")).unwrap();
        assert!(
            c.notes
                .iter()
                .any(|n| n.contains("spec.role KarpenterNodeRole-c")
                    && n.contains("iam:PassRole")
                    && n.contains("DovetailNodeRole-<cluster>")),
            "{:?}",
            c.notes
        );
        let c = convert("c.yaml", &class("DovetailNodeRole-c")).unwrap();
        assert!(c.notes.is_empty(), "{:?}", c.notes);
    }

    #[test]
    fn a_workload_keeps_its_shape_and_gets_dovetail_keys() {
        let text = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations: {karpenter.sh/do-not-disrupt: "true"}
    spec:
      nodeSelector: {karpenter.sh/capacity-type: on-demand}
      containers: [{name: web, image: nginx}]
"#;
        let c = convert("web.yaml", text).unwrap();
        assert!(c.yaml.contains("dovetail.sh/do-not-disrupt"), "{}", c.yaml);
        assert!(
            c.yaml.contains("dovetail.sh/capacity-type: on-demand"),
            "{}",
            c.yaml
        );
        assert!(!c.yaml.contains("karpenter"), "{}", c.yaml);
        assert!(
            !c.yaml.contains("affinity"),
            "no empty objects appear: {}",
            c.yaml
        );
        assert_eq!(c.changed, 1);
        assert!(c.notes.is_empty(), "{:?}", c.notes);
    }
}
