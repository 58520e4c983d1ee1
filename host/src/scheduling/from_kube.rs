//! Kubernetes objects → the simulation's model: a `NodePool` resource into a [`NodePoolSpec`],
//! a pod template (of a Deployment, or a bare Pod) into [`PendingPod`]s.

use std::collections::BTreeMap;

mod pod;
pub use pod::pending_pod;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as KubeSelector;

use super::kubelet::{NodeSettings, Reserved, Threshold};
use super::model::{LabelSelector, Limits, NodePoolSpec, PendingPod, Taint, TaintEffect, labels};
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
        out.kube_reserved = kubelet_reserved(name, "kubeReserved", &k.kube_reserved)?;
        out.system_reserved = kubelet_reserved(name, "systemReserved", &k.system_reserved)?;
        for (i, (field, map)) in [
            ("evictionHard", &k.eviction_hard),
            ("evictionSoft", &k.eviction_soft),
        ]
        .into_iter()
        .enumerate()
        {
            for (key, value) in map {
                let at = format!("spec.kubelet.{field}.{key}");
                let threshold = eviction_threshold(value).map_err(|m| err(at, m))?;
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

/// `kubeReserved` or `systemReserved` of an EC2NodeClass named `name`: kubelet reserves only
/// cpu, memory, ephemeral-storage and pid.
fn kubelet_reserved(
    name: &str,
    field: &str,
    map: &BTreeMap<String, String>,
) -> Result<Reserved, ConvertError> {
    let mut r = Reserved::default();
    for (key, value) in map {
        let err = |message: String| ConvertError {
            object: format!("EC2NodeClass/{name}"),
            field: format!("spec.kubelet.{field}.{key}"),
            message,
        };
        match key.as_str() {
            "cpu" => {
                r.cpu_millis = Some(quantity::cpu_millis(value).map_err(|e| err(e.to_string()))?)
            }
            "memory" => {
                r.memory_bytes = Some(quantity::bytes(value).map_err(|e| err(e.to_string()))?)
            }
            "ephemeral-storage" => {
                r.ephemeral_storage_bytes =
                    Some(quantity::bytes(value).map_err(|e| err(e.to_string()))?)
            }
            "pid" => {}
            _ => {
                return Err(err(
                    "kubelet reserves only cpu, memory, ephemeral-storage and pid".into(),
                ));
            }
        }
    }
    Ok(r)
}

/// An eviction threshold: a percentage (0–100) or a quantity.
fn eviction_threshold(value: &str) -> Result<Threshold, String> {
    match value.strip_suffix('%') {
        Some(p) => p
            .parse::<f64>()
            .ok()
            .filter(|p| (0.0..=100.0).contains(p))
            .map(Threshold::Percent)
            .ok_or_else(|| format!("{value:?} is not a percentage")),
        None => quantity::bytes(value)
            .map(Threshold::Bytes)
            .map_err(|e| e.to_string()),
    }
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

/// A DaemonSet's `namespace/name`, and what its pod asks of every node its NodePools launch
/// (`None` without a pod template). Both worlds count a pool's DaemonSet overhead from this.
pub fn daemonset_requests(
    d: &k8s_openapi::api::apps::v1::DaemonSet,
) -> Result<(String, Option<Resources>), ConvertError> {
    let key = format!(
        "{}/{}",
        d.metadata.namespace.as_deref().unwrap_or("default"),
        d.metadata.name.as_deref().unwrap_or_default()
    );
    let Some(spec) = d.spec.template.spec.as_ref() else {
        return Ok((key, None));
    };
    let pod = pending_pod(
        &format!("DaemonSet/{key}"),
        "spec.template.spec",
        &key,
        &BTreeMap::new(),
        spec,
    )?;
    Ok((key, Some(pod.requests)))
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
    use crate::scheduling::model::zero;
    use crate::scheduling::{InstanceTypes, solve};
    use k8s_openapi::api::core::v1::PodSpec;

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
