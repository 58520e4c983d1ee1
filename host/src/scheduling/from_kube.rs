//! Kubernetes objects → the simulation's model: a `NodePool` resource into a [`NodePoolSpec`],
//! a pod template (of a Deployment, or a bare Pod) into [`PendingPod`]s.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PodAffinityTerm, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as KubeSelector;

use super::kubelet::{NodeSettings, Reserved, Threshold};
use super::model::{
    AffinityTerm, LabelSelector, Limits, NodePoolSpec, PendingPod, SpreadConstraint, Taint,
    TaintEffect, Toleration, TopologyKey, labels, max, zero,
};
use super::requirements::{Operator, Requirement, Requirements};
use crate::api::NodePool;
use crate::capacity::Resources;
use crate::quantity;

/// An object the simulation cannot use, with the field at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{object}: {field}: {message}")]
pub struct ConvertError {
    /// `NodePool/default`, `Deployment/web`.
    pub object: String,
    /// Path of the field, e.g. `spec.template.spec.containers[0].resources.requests.cpu`.
    pub field: String,
    pub message: String,
}

/// What an EC2NodeClass changes about its nodes' allocatable: `kubelet` and the root volume.
/// A value kubelet would refuse is an error naming the field.
pub fn node_settings(
    name: &str,
    spec: &crate::api::ec2nodeclass::EC2NodeClassSpec,
) -> Result<NodeSettings, ConvertError> {
    let err = |field: String, message: String| ConvertError {
        object: format!("EC2NodeClass/{name}"),
        field,
        message,
    };
    let mut out = NodeSettings::default();
    if let Some(k) = &spec.kubelet {
        let positive = |field: &str, v: Option<i32>| -> Result<Option<u32>, ConvertError> {
            v.map(|n| {
                u32::try_from(n)
                    .map_err(|_| err(format!("spec.kubelet.{field}"), format!("{n} is negative")))
            })
            .transpose()
        };
        out.max_pods = positive("maxPods", k.max_pods)?;
        out.pods_per_core = positive("podsPerCore", k.pods_per_core)?;
        let reserved = |field: &str,
                        map: &BTreeMap<String, String>|
         -> Result<Reserved, ConvertError> {
            let mut r = Reserved::default();
            for (key, value) in map {
                let at = || format!("spec.kubelet.{field}.{key}");
                match key.as_str() {
                    "cpu" => {
                        r.cpu_millis = Some(
                            quantity::cpu_millis(value).map_err(|e| err(at(), e.to_string()))?,
                        )
                    }
                    "memory" => {
                        r.memory_bytes =
                            Some(quantity::bytes(value).map_err(|e| err(at(), e.to_string()))?)
                    }
                    "ephemeral-storage" => {
                        r.ephemeral_storage_bytes =
                            Some(quantity::bytes(value).map_err(|e| err(at(), e.to_string()))?)
                    }
                    "pid" => {}
                    _ => {
                        return Err(err(
                            at(),
                            "kubelet reserves only cpu, memory, ephemeral-storage and pid".into(),
                        ));
                    }
                }
            }
            Ok(r)
        };
        out.kube_reserved = reserved("kubeReserved", &k.kube_reserved)?;
        out.system_reserved = reserved("systemReserved", &k.system_reserved)?;
        for (i, (field, map)) in [
            ("evictionHard", &k.eviction_hard),
            ("evictionSoft", &k.eviction_soft),
        ]
        .into_iter()
        .enumerate()
        {
            for (key, value) in map {
                let at = format!("spec.kubelet.{field}.{key}");
                let threshold = match value.strip_suffix('%') {
                    Some(p) => Threshold::Percent(
                        p.parse::<f64>()
                            .ok()
                            .filter(|p| (0.0..=100.0).contains(p))
                            .ok_or_else(|| {
                                err(at.clone(), format!("{value:?} is not a percentage"))
                            })?,
                    ),
                    None => Threshold::Bytes(
                        quantity::bytes(value).map_err(|e| err(at.clone(), e.to_string()))?,
                    ),
                };
                match key.as_str() {
                    "memory.available" => out.eviction_memory[i] = Some(threshold),
                    "nodefs.available" => out.eviction_nodefs[i] = Some(threshold),
                    _ => {}
                }
            }
        }
    }
    match spec.instance_store_policy.as_deref() {
        None => {}
        Some("RAID0") => out.instance_store_raid0 = true,
        Some(other) => {
            return Err(err(
                "spec.instanceStorePolicy".into(),
                format!("{other:?} is not supported (RAID0)"),
            ));
        }
    }
    let root = spec
        .block_device_mappings
        .iter()
        .enumerate()
        .find(|(_, b)| b.root_volume == Some(true))
        .or_else(|| spec.block_device_mappings.iter().enumerate().next());
    if let Some((i, b)) = root
        && let Some(size) = b.ebs.as_ref().and_then(|e| e.volume_size.as_ref())
    {
        out.root_volume_bytes = Some(quantity::bytes(&size.0).map_err(|e| {
            err(
                format!("spec.blockDeviceMappings[{i}].ebs.volumeSize"),
                e.to_string(),
            )
        })?);
    }
    Ok(out)
}

/// A NodePool resource as the simulation sees it. `daemonset_overhead` and `in_use` come from
/// the cluster.
pub fn node_pool(
    np: &NodePool,
    daemonset_overhead: Resources,
    in_use: Resources,
) -> Result<NodePoolSpec, ConvertError> {
    let name = np.metadata.name.clone().unwrap_or_default();
    let object = format!("NodePool/{name}");
    let err = |field: &str, message: String| ConvertError {
        object: object.clone(),
        field: field.into(),
        message,
    };
    let tmpl = &np.spec.template;
    let mut reqs: Vec<Requirement> = tmpl
        .spec
        .requirements
        .iter()
        .map(|r| Requirement {
            key: r.key.clone(),
            operator: r.operator,
            values: r.values.clone(),
        })
        .collect();
    // The template's labels are on every node, so pods may select them.
    for (k, v) in &tmpl.metadata.labels {
        reqs.push(Requirement::new(k, Operator::In, &[v]));
    }
    reqs.push(Requirement::new(labels::NODEPOOL, Operator::In, &[&name]));
    let requirements = Requirements::from_list(&reqs);
    if let Some(key) = requirements.unsatisfiable_key() {
        return Err(err(
            "spec.template.spec.requirements",
            format!("no node can satisfy the requirements on {key}"),
        ));
    }
    let taints = tmpl
        .spec
        .taints
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Ok(Taint {
                key: t.key.clone(),
                value: t.value.clone().unwrap_or_default(),
                effect: effect(&t.effect).ok_or_else(|| {
                    err(
                        &format!("spec.template.spec.taints[{i}].effect"),
                        format!("unknown effect {:?}", t.effect),
                    )
                })?,
            })
        })
        .collect::<Result<_, _>>()?;
    let limit = |key: &str, parse: fn(&str) -> Result<u64, quantity::QuantityError>| {
        np.spec
            .limits
            .get(key)
            .map(|q| parse(&q.0).map_err(|e| err(&format!("spec.limits.{key}"), e.to_string())))
            .transpose()
    };
    Ok(NodePoolSpec {
        name,
        weight: np.spec.weight.unwrap_or(0),
        requirements,
        taints,
        limits: Limits {
            cpu_millis: limit("cpu", quantity::cpu_millis)?,
            memory_bytes: limit("memory", quantity::bytes)?,
        },
        in_use,
        daemonset_overhead,
        min_values: tmpl
            .spec
            .requirements
            .iter()
            .filter_map(|r| Some((r.key.clone(), r.min_values? as usize)))
            .collect(),
        node: None,
    })
}

fn effect(e: &str) -> Option<TaintEffect> {
    match e {
        "NoSchedule" => Some(TaintEffect::NoSchedule),
        "PreferNoSchedule" => Some(TaintEffect::PreferNoSchedule),
        "NoExecute" => Some(TaintEffect::NoExecute),
        _ => None,
    }
}

/// The pending pods of a Deployment: `replicas` (default 1) copies of its template.
pub fn deployment_pods(d: &Deployment) -> Result<Vec<PendingPod>, ConvertError> {
    let name = d.metadata.name.clone().unwrap_or_default();
    let namespace = d
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let object = format!("Deployment/{name}");
    let spec = &d.spec;
    let template_spec = spec.template.spec.as_ref().ok_or_else(|| ConvertError {
        object: object.clone(),
        field: "spec.template.spec".into(),
        message: "missing".into(),
    })?;
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let pod = pending_pod(
        &object,
        "spec.template.spec",
        &format!("{namespace}/{name}"),
        &labels,
        template_spec,
    )?;
    let replicas = spec.replicas.unwrap_or(1).max(0) as usize;
    Ok((0..replicas)
        .map(|i| PendingPod {
            name: format!("{namespace}/{name}-{i}"),
            owner: Some(object.clone()),
            ..pod.clone()
        })
        .collect())
}

/// The workload a pod belongs to, from its controller's ownerReference: `Kind/name`, with a
/// ReplicaSet made by a Deployment (its name is the Deployment's plus `-<pod-template-hash>`)
/// counted as that Deployment. `None` for a bare pod.
pub fn workload_owner(
    refs: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference],
    labels: &BTreeMap<String, String>,
) -> Option<String> {
    let c = refs.iter().find(|o| o.controller == Some(true))?;
    if c.kind == "ReplicaSet"
        && let Some(hash) = labels.get("pod-template-hash")
        && let Some(deployment) = c.name.strip_suffix(&format!("-{hash}"))
    {
        return Some(format!("Deployment/{deployment}"));
    }
    Some(format!("{}/{}", c.kind, c.name))
}

/// What a DaemonSet's pod asks of every node its NodePools launch, with the DaemonSet's
/// `namespace/name`; `None` for one without a pod template. Both worlds count a pool's
/// DaemonSet overhead from this.
pub fn daemonset_requests(
    d: &k8s_openapi::api::apps::v1::DaemonSet,
) -> Result<Option<(String, Resources)>, ConvertError> {
    let key = format!(
        "{}/{}",
        d.metadata.namespace.as_deref().unwrap_or("default"),
        d.metadata.name.as_deref().unwrap_or_default()
    );
    let Some(spec) = d.spec.template.spec.as_ref() else {
        return Ok(None);
    };
    let pod = pending_pod(
        &format!("DaemonSet/{key}"),
        "spec.template.spec",
        &key,
        &BTreeMap::new(),
        spec,
    )?;
    Ok(Some((key, pod.requests)))
}

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
            .unwrap_or(super::model::DEFAULT_GRACE_SECONDS)
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
        running = super::model::add(&running, &r);
    }
    let mut peak = running;
    let mut sidecars = zero();
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let r = at.requests(
            c.resources.as_ref(),
            format!("{path}.initContainers[{i}].resources.requests"),
        )?;
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars = super::model::add(&sidecars, &r);
        } else {
            let during = super::model::add(&sidecars, &r);
            peak = max(&peak, &during);
        }
    }
    let mut requests = max(&super::model::add(&running, &sidecars), &peak);
    if let Some(overhead) = &spec.overhead {
        let r = at.requests(
            Some(&ResourceRequirements {
                requests: Some(overhead.clone()),
                ..Default::default()
            }),
            format!("{path}.overhead"),
        )?;
        requests = super::model::add(&requests, &r);
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

pub fn operator(op: &str) -> Option<Operator> {
    Some(match op {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        "Gt" => Operator::Gt,
        "Lt" => Operator::Lt,
        _ => return None,
    })
}

/// A Kubernetes label selector (unknown operators are dropped: the apiserver rejects them).
pub fn selector_of(s: &KubeSelector) -> LabelSelector {
    LabelSelector {
        match_labels: s
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        match_expressions: s
            .match_expressions
            .iter()
            .flatten()
            .filter_map(|e| lenient(&e.key, &e.operator, &e.values))
            .collect(),
    }
}

/// A match expression as a requirement, or `None` for an operator we do not know (dropped where
/// it may only widen what matches: preferences and the apiserver-validated selectors).
fn lenient(key: &str, op: &str, values: &Option<Vec<String>>) -> Option<Requirement> {
    Some(Requirement {
        key: key.to_string(),
        operator: operator(op)?,
        values: values.clone().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::manifest::{Manifest, parse};
    use crate::catalog;
    use crate::scheduling::{InstanceTypes, solve};

    fn deployment(yaml: &str) -> Deployment {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn the_guide_nodepool_admits_what_it_says() {
        let text = include_str!("../../../tests/manifests/karpenter-getting-started.yaml");
        let Manifest::NodePool(np) = &parse("guide.yaml", text).unwrap()[0] else {
            panic!()
        };
        let spec = node_pool(np, zero(), zero()).unwrap();
        assert_eq!(spec.limits.cpu_millis, Some(1_000_000));
        let entries = catalog::embedded();
        let its = InstanceTypes::new(
            &entries,
            &catalog::policy_catalog(&entries, &["us-east-1a"]),
        );
        let admitted = its.admitted_by(&spec.requirements);
        assert!(!admitted.is_empty());
        for t in admitted {
            assert!(["c", "m", "r"].contains(&its.label(t, labels::CATEGORY).unwrap()));
            assert!(
                its.label(t, labels::GENERATION)
                    .unwrap()
                    .parse::<u32>()
                    .unwrap()
                    > 2
            );
            assert_eq!(its.label(t, labels::ARCH), Some("amd64"));
        }
    }

    #[test]
    fn deployment_pods_carry_requests_and_constraints() {
        let d = deployment(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      nodeSelector: {kubernetes.io/arch: arm64}
      initContainers:
        - name: migrate
          image: busybox
          resources: {requests: {cpu: "2", memory: 256Mi}}
        - name: proxy
          image: envoy
          restartPolicy: Always
          resources: {requests: {cpu: 100m, memory: 64Mi}}
      containers:
        - name: app
          image: nginx
          resources: {requests: {cpu: 500m, memory: 1Gi}}
        - name: log
          image: fluent
          resources: {requests: {cpu: 100m, memory: 128Mi}}
      overhead: {cpu: 10m}
      tolerations: [{key: dedicated, operator: Equal, value: web, effect: NoSchedule}]
      topologySpreadConstraints:
        - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: web}}}
        - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway, labelSelector: {matchLabels: {app: web}}}
      affinity:
        nodeAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 10
              preference: {matchExpressions: [{key: dovetail.sh/capacity-type, operator: In, values: [on-demand]}]}
            - weight: 90
              preference: {matchExpressions: [{key: aws.dovetail.sh/instance-category, operator: In, values: [c]}]}
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            - {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: web}}}
"#,
        );
        let pods = deployment_pods(&d).unwrap();
        assert_eq!(pods.len(), 3);
        let p = &pods[0];
        assert_eq!(p.name, "shop/web-0");
        // max(containers 600m + sidecar 100m, migrate 2000m + sidecar-before-it 0) + overhead 10m
        assert_eq!(p.requests.cpu_millis, 2010);
        assert_eq!(p.requests.memory_bytes, (1024 + 128 + 64) << 20);
        assert_eq!(p.node_terms.len(), 1);
        assert_eq!(
            p.spread.len(),
            1,
            "ScheduleAnyway is a preference, not a constraint"
        );
        assert_eq!(p.soft_spread.len(), 1);
        assert_eq!(p.preferred.len(), 2);
        assert_eq!(
            p.preferred[0].describe(),
            "aws.dovetail.sh/instance-category In [c]",
            "highest weight first"
        );
        assert_eq!(p.anti_affinity.len(), 1);
        assert_eq!(p.tolerations[0].key.as_deref(), Some("dedicated"));

        // And the simulation honours them: one pod per node, arm64 only, spread over zones.
        let entries = catalog::embedded();
        let cat = catalog::policy_catalog(&entries, &["us-east-1a", "us-east-1b", "us-east-1c"]);
        let its = InstanceTypes::new(&entries, &cat);
        let mut np = NodePoolSpec::new("default", Requirements::default());
        np.taints = vec![Taint {
            key: "dedicated".into(),
            value: "web".into(),
            effect: TaintEffect::NoSchedule,
        }];
        let plan = solve(&pods, &[np], &its);
        assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
        assert_eq!(plan.claims.len(), 3);
        let zones: std::collections::BTreeSet<u64> = plan.claims.iter().map(|c| c.zones).collect();
        assert_eq!(zones.len(), 3);
        for c in &plan.claims {
            assert!(
                c.instance_types
                    .iter()
                    .all(|&t| its.label(t, labels::ARCH) == Some("arm64"))
            );
        }
    }

    #[test]
    fn bad_quantities_and_effects_name_the_field() {
        let d = deployment(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  selector: {}\n  template:\n    spec:\n      containers: [{name: a, resources: {requests: {cpu: lots}}}]\n",
        );
        let e = deployment_pods(&d).unwrap_err();
        assert_eq!(
            e.field,
            "spec.template.spec.containers[0].resources.requests.cpu"
        );
        assert_eq!(e.object, "Deployment/x");
        let text = include_str!("../../../tests/manifests/karpenter-getting-started.yaml")
            .replace("  limits:\n    cpu: 1000", "  limits:\n    cpu: 10 cores");
        let Manifest::NodePool(np) = &parse("p.yaml", &text).unwrap()[0] else {
            panic!()
        };
        let e = node_pool(np, zero(), zero()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "NodePool/default: spec.limits.cpu: invalid quantity \"10 cores\": not a number"
        );
    }

    #[test]
    fn a_request_missing_for_a_resource_defaults_to_its_limit_key_by_key() {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [{"name": "app", "resources": {
                "requests": {"cpu": "250m"},
                "limits": {"cpu": "1", "memory": "512Mi"}}}]
        }))
        .unwrap();
        let p = pending_pod("Pod/x", "spec", "x", &BTreeMap::new(), &spec).unwrap();
        assert_eq!(
            p.requests.cpu_millis, 250,
            "the request wins where there is one"
        );
        assert_eq!(
            p.requests.memory_bytes,
            512 << 20,
            "the limit stands in where not"
        );
    }

    #[test]
    fn a_pods_workload_comes_from_its_owner_references_not_its_name() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        let rs = |name: &str| OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: name.into(),
            uid: "u".into(),
            controller: Some(true),
            ..Default::default()
        };
        let hash = BTreeMap::from([("pod-template-hash".to_string(), "7d9f8b".to_string())]);
        assert_eq!(
            workload_owner(&[rs("web-api-7d9f8b")], &hash).as_deref(),
            Some("Deployment/web-api")
        );
        assert_eq!(
            workload_owner(&[rs("standalone")], &BTreeMap::new()).as_deref(),
            Some("ReplicaSet/standalone"),
            "a ReplicaSet of its own"
        );
        assert_eq!(
            workload_owner(&[], &BTreeMap::new()),
            None,
            "a bare pod `my-pod` is no Deployment `my`"
        );
    }
}
