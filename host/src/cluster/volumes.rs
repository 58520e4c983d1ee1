//! Volume topology: where a pod's PersistentVolumeClaims let it run, as kube-scheduler's
//! VolumeBinding plugin decides it. A claim bound to a PersistentVolume pins its pods to the
//! volume's node affinity (an EBS volume lives in one zone); an unbound claim of a StorageClass
//! with `WaitForFirstConsumer` limits them to the class's allowed topologies, and once its first
//! pod lands the volume is provisioned in that pod's zone, so the pods that come after follow it.

use std::collections::BTreeMap;

use crate::scheduling::model::labels;
use crate::scheduling::{Operator, Requirement, Requirements};

/// Zone labels CSI drivers and older clusters write on volumes, all meaning the node's zone.
const ZONE_KEYS: [&str; 3] = [
    labels::ZONE,
    "topology.ebs.csi.aws.com/zone",
    "failure-domain.beta.kubernetes.io/zone",
];

/// PersistentVolumes, PersistentVolumeClaims and StorageClasses, as far as they decide placement.
#[derive(Debug, Clone, Default)]
pub struct Volumes {
    /// By `namespace/name`.
    claims: BTreeMap<String, Claim>,
    /// PersistentVolume name → where its pods may run.
    volumes: BTreeMap<String, Requirements>,
    /// Claim `namespace/name` → the PersistentVolume whose `claimRef` reserves it for it.
    claim_refs: BTreeMap<String, String>,
    classes: BTreeMap<String, Class>,
    /// The class marked `storageclass.kubernetes.io/is-default-class`.
    default_class: Option<String>,
}

#[derive(Debug, Clone)]
struct Claim {
    volume: Option<String>,
    class: Option<String>,
}

#[derive(Debug, Clone)]
struct Class {
    wait_for_first_consumer: bool,
    allowed: Option<Requirements>,
}

/// Node-selector expressions as requirements, zone aliases read as the zone label (the first
/// term of several: volumes name one topology in practice).
fn requirements_of(terms: &[k8s_openapi::api::core::v1::NodeSelectorTerm]) -> Option<Requirements> {
    let term = terms.first()?;
    let list: Vec<Requirement> = term
        .match_expressions
        .iter()
        .flatten()
        .filter_map(|e| {
            let op = match e.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                _ => return None,
            };
            let key = if ZONE_KEYS.contains(&e.key.as_str()) {
                labels::ZONE
            } else {
                e.key.as_str()
            };
            let values: Vec<&str> = e.values.iter().flatten().map(String::as_str).collect();
            Some(Requirement::new(key, op, &values))
        })
        .collect();
    Some(Requirements::from_list(&list))
}

impl Volumes {
    /// The PersistentVolume a claim (`namespace/name`) is bound to.
    pub fn volume_of(&self, claim: &str) -> Option<&str> {
        self.claims.get(claim)?.volume.as_deref()
    }

    pub fn apply_claim(&mut self, pvc: &k8s_openapi::api::core::v1::PersistentVolumeClaim) {
        let ns = pvc.metadata.namespace.as_deref().unwrap_or("default");
        let name = pvc.metadata.name.as_deref().unwrap_or_default();
        let spec = pvc.spec.as_ref();
        let key = format!("{ns}/{name}");
        let volume = spec
            .and_then(|s| s.volume_name.clone())
            .or_else(|| self.claim_refs.get(&key).cloned());
        self.claims.insert(
            key,
            Claim {
                volume,
                class: spec.and_then(|s| s.storage_class_name.clone()),
            },
        );
    }

    pub fn apply_volume(&mut self, pv: &k8s_openapi::api::core::v1::PersistentVolume) {
        let name = pv.metadata.name.clone().unwrap_or_default();
        let reqs = pv
            .spec
            .as_ref()
            .and_then(|s| s.node_affinity.as_ref())
            .and_then(|a| a.required.as_ref())
            .and_then(|r| requirements_of(&r.node_selector_terms))
            .unwrap_or_default();
        // A claim naming this volume through `spec.claimRef` is bound to it.
        if let Some(c) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
            let key = format!(
                "{}/{}",
                c.namespace.as_deref().unwrap_or("default"),
                c.name.as_deref().unwrap_or_default()
            );
            if let Some(claim) = self.claims.get_mut(&key) {
                claim.volume.get_or_insert_with(|| name.clone());
            }
            self.claim_refs.insert(key, name.clone());
        }
        self.volumes.insert(name, reqs);
    }

    pub fn apply_class(&mut self, sc: &k8s_openapi::api::storage::v1::StorageClass) {
        let name = sc.metadata.name.clone().unwrap_or_default();
        let allowed = sc.allowed_topologies.as_ref().and_then(|t| {
            let terms: Vec<k8s_openapi::api::core::v1::NodeSelectorTerm> = t
                .iter()
                .map(|term| k8s_openapi::api::core::v1::NodeSelectorTerm {
                    match_expressions: Some(
                        term.match_label_expressions
                            .iter()
                            .flatten()
                            .map(|e| k8s_openapi::api::core::v1::NodeSelectorRequirement {
                                key: e.key.clone(),
                                operator: "In".into(),
                                values: Some(e.values.clone()),
                            })
                            .collect(),
                    ),
                    match_fields: None,
                })
                .collect();
            requirements_of(&terms)
        });
        let default = sc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("storageclass.kubernetes.io/is-default-class"))
            .is_some_and(|v| v == "true");
        if default {
            self.default_class = Some(name.clone());
        }
        self.classes.insert(
            name,
            Class {
                wait_for_first_consumer: sc.volume_binding_mode.as_deref()
                    == Some("WaitForFirstConsumer"),
                allowed,
            },
        );
    }

    /// Where pods using `claims` (`namespace/name`) may run; `None` for anywhere. A claim not
    /// (yet) known constrains nothing here: kube-scheduler holds such a pod back, and the
    /// autoscaler cannot help it either way.
    pub fn requirements(&self, claims: &[String]) -> Option<Requirements> {
        let mut out: Option<Requirements> = None;
        for key in claims {
            let Some(claim) = self.claims.get(key) else {
                continue;
            };
            let reqs = match &claim.volume {
                Some(v) => self.volumes.get(v).cloned(),
                None => claim
                    .class
                    .as_ref()
                    .or(self.default_class.as_ref())
                    .and_then(|c| self.classes.get(c))
                    .and_then(|c| c.allowed.clone()),
            };
            if let Some(r) = reqs {
                out = Some(match out {
                    Some(o) => o.intersection(&r),
                    None => r,
                });
            }
        }
        out
    }

    /// A pod using `claims` landed in `zone`: each unbound claim of a `WaitForFirstConsumer`
    /// class gets its volume there (what the CSI provisioner does), binding it. Returns whether
    /// any claim was bound (so pods waiting on them must be looked at again).
    pub fn provision(&mut self, claims: &[String], zone: &str) -> bool {
        let mut bound = false;
        for key in claims {
            let Some(claim) = self.claims.get(key) else {
                continue;
            };
            if claim.volume.is_some() {
                continue;
            }
            let class = claim
                .class
                .as_ref()
                .or(self.default_class.as_ref())
                .and_then(|c| self.classes.get(c));
            if !class.is_some_and(|c| c.wait_for_first_consumer) {
                continue;
            }
            let name = format!("pvc-{}", key.replace('/', "-"));
            self.volumes.insert(
                name.clone(),
                Requirements::from_list(&[Requirement::new(labels::ZONE, Operator::In, &[zone])]),
            );
            if let Some(c) = self.claims.get_mut(key) {
                c.volume = Some(name);
            }
            bound = true;
        }
        bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn a_bound_volume_pins_its_zone_and_a_waiting_class_binds_where_the_pod_lands() {
        let mut v = Volumes::default();
        v.apply_class(&parse(
            "metadata: {name: gp3, annotations: {storageclass.kubernetes.io/is-default-class: \"true\"}}\nprovisioner: ebs.csi.aws.com\nvolumeBindingMode: WaitForFirstConsumer\n",
        ));
        v.apply_claim(&parse(
            "metadata: {name: data, namespace: db}\nspec: {volumeName: pv-1}\n",
        ));
        v.apply_volume(&parse(
            "metadata: {name: pv-1}\nspec:\n  nodeAffinity:\n    required:\n      nodeSelectorTerms:\n        - matchExpressions:\n            - {key: topology.ebs.csi.aws.com/zone, operator: In, values: [us-east-1b]}\n",
        ));
        let r = v.requirements(&["db/data".into()]).unwrap();
        assert_eq!(r.describe(), "topology.kubernetes.io/zone In [us-east-1b]");

        // Unbound, default class, no allowed topologies: anywhere, until its pod lands.
        v.apply_claim(&parse("metadata: {name: cache, namespace: db}\nspec: {}\n"));
        assert_eq!(v.requirements(&["db/cache".into()]), None);
        assert!(v.provision(&["db/cache".into()], "us-east-1c"));
        assert!(
            !v.provision(&["db/cache".into()], "us-east-1a"),
            "bound once"
        );
        let r = v
            .requirements(&["db/cache".into(), "db/data".into()])
            .unwrap();
        assert!(
            r.get(labels::ZONE)
                .is_some_and(|z| !z.allows(Some("us-east-1b")) && !z.allows(Some("us-east-1c"))),
            "two volumes in two zones: nowhere ({})",
            r.describe()
        );
        // A claim not known yet constrains nothing.
        assert_eq!(v.requirements(&["db/other".into()]), None);
    }

    #[test]
    fn allowed_topologies_limit_an_unbound_claim() {
        let mut v = Volumes::default();
        v.apply_class(&parse(
            "metadata: {name: zonal}\nprovisioner: ebs.csi.aws.com\nvolumeBindingMode: WaitForFirstConsumer\nallowedTopologies:\n  - matchLabelExpressions:\n      - {key: topology.ebs.csi.aws.com/zone, values: [us-east-1a, us-east-1c]}\n",
        ));
        v.apply_claim(&parse(
            "metadata: {name: d}\nspec: {storageClassName: zonal}\n",
        ));
        let r = v.requirements(&["default/d".into()]).unwrap();
        assert_eq!(
            r.describe(),
            "topology.kubernetes.io/zone In [us-east-1a, us-east-1c]"
        );
    }
}
