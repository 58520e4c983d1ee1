//! A cluster's history as the decisions read it, and its replay in the simulator.
//!
//! `dovetail record` watches a cluster (read-only) and writes a journal: JSON lines, a header
//! then one simulator Scenario step per change — Deployments (their pod template and replicas
//! over time), other pods as they come and go, NodePools, EC2NodeClasses, PodDisruptionBudgets and
//! DaemonSets. Only what a decision reads is kept: requests, scheduling constraints, labels,
//! priorities, the do-not-disrupt annotation and preStop sleeps. Environment, images, commands,
//! volumes, secrets, service accounts and user data never reach the journal.
//!
//! `dovetail simulate --replay` turns a journal into manifests and a Scenario, so the real
//! provisioning and disruption code runs last week's traffic on the virtual clock.
//!
//! Pods of a Deployment are recorded as the Deployment's replicas, not one by one: in the replay,
//! the simulator's ReplicaSet controller recreates what its own disruption evicts, as the real
//! one did (recording each replacement pod would replay the recorded cluster's evictions on top
//! of the replay's own).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api::scenario::{ObjectRef, Scale, Step};
use crate::cluster::DO_NOT_DISRUPT;

/// The header's `journal` value.
pub const FORMAT: &str = "dovetail.sh/journal/v1";

/// A journal's first line.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Header {
    /// [`FORMAT`].
    pub journal: String,
    /// When the recording (of this part) started, Unix seconds.
    pub started: i64,
    /// The API server recorded.
    pub source: String,
    /// 0 for the first file; a rotated part starts with a snapshot of the cluster then.
    pub part: u32,
}

/// A journal's last line, when the recorder stopped cleanly.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Trailer {
    /// Seconds after `started` the recording ended.
    pub ended: i64,
}

/// Why a journal cannot be replayed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JournalError {
    #[error("{file}: empty: a journal starts with its header line")]
    Empty { file: String },
    #[error("{file}:{line}: {message}")]
    Line {
        file: String,
        line: usize,
        message: String,
    },
}

/// What the recorder keeps of one Deployment.
#[derive(Debug, Clone, PartialEq)]
struct Workload {
    /// The sanitized Deployment last written (replicas aside).
    template: Value,
    /// Live pods, by id.
    pods: std::collections::BTreeSet<String>,
    /// Replicas last written.
    written: Option<u32>,
    /// Template last written.
    written_template: Option<Value>,
    /// Creation time of the pod the template is from: the newest wins.
    newest: Option<i64>,
}

/// The recorder's memory: what is live now and what was last written, so that a flush writes
/// only changes. Pure: the kube world feeds it objects and writes what it returns.
#[derive(Debug, Default)]
pub struct Recorder {
    /// By `namespace/name` of the Deployment.
    workloads: BTreeMap<String, Workload>,
    /// Pods not of a Deployment, by id: sanitized now (null: gone), and as last written.
    pods: BTreeMap<String, (Value, Option<Value>)>,
    /// Which workload (or none) each live pod was counted in.
    pod_workload: BTreeMap<String, Option<String>>,
    /// Other objects by `Kind/namespace/name`: sanitized now, and as last written.
    objects: BTreeMap<String, (Option<Value>, Option<Value>)>,
}

impl Recorder {
    /// A pod as the watch sees it now. Pods that need no capacity from Dovetail (DaemonSet and
    /// mirror pods, finished pods, pods on nodes no NodePool manages) count as gone.
    pub fn pod(&mut self, pod: &Pod, on_unmanaged_node: bool) {
        let id = pod_id(pod);
        let finished = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed");
        let deleting = pod.metadata.deletion_timestamp.is_some();
        if finished || deleting || on_unmanaged_node || !needs_capacity(pod) {
            return self.pod_gone(&id);
        }
        let Some(spec) = pod.spec.as_ref() else {
            return;
        };
        match deployment_of(pod) {
            Some(name) => {
                let ns = namespace(pod);
                let key = format!("{ns}/{name}");
                let template = deployment(&ns, &name, pod, spec);
                let created = pod
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.as_second());
                let w = self.workloads.entry(key.clone()).or_insert(Workload {
                    template: template.clone(),
                    pods: Default::default(),
                    written: None,
                    written_template: None,
                    newest: created,
                });
                // The newest pod's template: a rollout's new pods replace the old ones.
                if created >= w.newest {
                    w.template = template;
                    w.newest = created;
                }
                w.pods.insert(id.clone());
                self.pod_workload.insert(id, Some(key));
            }
            None => {
                let v = bare_pod(pod, spec);
                self.pods.entry(id.clone()).or_insert((Value::Null, None)).0 = v;
                self.pod_workload.insert(id, None);
            }
        }
    }

    /// A pod deleted, or no longer one that needs capacity.
    pub fn pod_gone(&mut self, id: &str) {
        match self.pod_workload.remove(id) {
            Some(Some(key)) => {
                if let Some(w) = self.workloads.get_mut(&key) {
                    w.pods.remove(id);
                }
            }
            Some(None) => {
                // Written: a delete goes out at the flush; never written: forgotten.
                match self.pods.get_mut(id) {
                    Some((now, Some(_))) => *now = Value::Null,
                    Some((_, None)) => {
                        self.pods.remove(id);
                    }
                    None => {}
                }
            }
            None => {}
        }
    }

    /// Every pod not in `live` (ids) is gone.
    pub fn retain_pods(&mut self, live: &std::collections::BTreeSet<String>) {
        let gone: Vec<String> = self
            .pod_workload
            .keys()
            .filter(|id| !live.contains(*id))
            .cloned()
            .collect();
        gone.iter().for_each(|id| self.pod_gone(id));
    }

    /// Another object (NodePool, EC2NodeClass, PodDisruptionBudget, DaemonSet) as it is now,
    /// already sanitized ([`node_pool`], [`node_class`], [`pdb`], [`daemon_set`]); `None`: gone.
    pub fn object(&mut self, kind: &str, namespace: &str, name: &str, now: Option<Value>) {
        let key = format!("{kind}/{namespace}/{name}");
        self.objects.entry(key).or_insert((None, None)).0 = now;
    }

    /// Every object of `kind` not in `live` (by `namespace/name`) is gone.
    pub fn retain_objects(&mut self, kind: &str, live: &std::collections::BTreeSet<String>) {
        for (key, (now, _)) in self.objects.iter_mut() {
            if let Some(rest) = key.strip_prefix(&format!("{kind}/"))
                && !live.contains(rest)
            {
                *now = None;
            }
        }
    }

    /// The steps that bring a replay from what was last written to now, at `at` seconds.
    /// Objects first (a pool before the pods that need it), then workloads, then pods.
    pub fn flush(&mut self, at: i64) -> Vec<Step> {
        let mut steps = Vec::new();
        let at_text = format!("{at}s");
        for (key, (now, written)) in self.objects.iter_mut() {
            if now == written {
                continue;
            }
            let mut parts = key.splitn(3, '/');
            let (kind, ns, name) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            match now {
                Some(v) => steps.push(apply(&at_text, v.clone())),
                // Kept in the replay: the simulator resolves a class once, and a Policy a pool
                // still names would fall back in the cluster too.
                None if kind == "EC2NodeClass" || kind == "Policy" => {}
                None => steps.push(delete(&at_text, kind, ns, name)),
            }
            *written = now.clone();
        }
        self.objects
            .retain(|_, (now, written)| now.is_some() || written.is_some());
        for (key, w) in self.workloads.iter_mut() {
            let replicas = w.pods.len() as u32;
            if w.written_template.as_ref() != Some(&w.template) {
                let mut d = w.template.clone();
                d["spec"]["replicas"] = json!(replicas);
                steps.push(apply(&at_text, d));
                w.written_template = Some(w.template.clone());
                w.written = Some(replicas);
            } else if w.written != Some(replicas) {
                let (ns, name) = key.split_once('/').unwrap_or(("default", key));
                steps.push(Step {
                    at: at_text.clone(),
                    scale: Some(Scale {
                        deployment: name.to_string(),
                        namespace: ns.to_string(),
                        replicas,
                    }),
                    apply: None,
                    delete: None,
                    exhaust: None,
                    interrupt: None,
                });
                w.written = Some(replicas);
            }
        }
        for (id, (v, written)) in self.pods.iter_mut() {
            if v.is_null() {
                if written.is_some() {
                    let (ns, name) = id.split_once('/').unwrap_or(("default", id));
                    steps.push(delete(&at_text, "Pod", ns, name));
                    *written = None;
                }
            } else if written.as_ref() != Some(v) {
                // New, or changed since (an annotation or a label added later).
                steps.push(apply(&at_text, v.clone()));
                *written = Some(v.clone());
            }
        }
        self.pods.retain(|_, (v, _)| !v.is_null());
        steps
    }

    /// Everything live now as steps at `at`, whatever was written: the start of a rotated part.
    pub fn snapshot(&mut self, at: i64) -> Vec<Step> {
        for (now, written) in self.objects.values_mut() {
            *written = None;
            let _ = now;
        }
        for w in self.workloads.values_mut() {
            w.written = None;
            w.written_template = None;
        }
        self.pods.retain(|_, (v, _)| !v.is_null());
        for (_, written) in self.pods.values_mut() {
            *written = None;
        }
        self.flush(at)
    }
}

fn apply(at: &str, object: Value) -> Step {
    Step {
        at: at.to_string(),
        scale: None,
        apply: Some(object),
        delete: None,
        exhaust: None,
        interrupt: None,
    }
}

fn delete(at: &str, kind: &str, namespace: &str, name: &str) -> Step {
    Step {
        at: at.to_string(),
        scale: None,
        apply: None,
        delete: Some(ObjectRef {
            kind: kind.to_string(),
            name: name.to_string(),
            namespace: if namespace.is_empty() {
                "default".into()
            } else {
                namespace.to_string()
            },
        }),
        exhaust: None,
        interrupt: None,
    }
}

fn namespace(pod: &Pod) -> String {
    pod.metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into())
}

/// `namespace/name`.
pub fn pod_id(pod: &Pod) -> String {
    format!(
        "{}/{}",
        namespace(pod),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Whether a pod asks Dovetail for capacity at all: DaemonSet pods come with every node (the
/// DaemonSet is recorded as overhead) and mirror pods with their node.
fn needs_capacity(pod: &Pod) -> bool {
    let daemon = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.kind == "DaemonSet");
    let mirror = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    !daemon && !mirror
}

/// The Deployment a pod belongs to: its controller is a ReplicaSet named after the Deployment
/// and the pod's `pod-template-hash`, as the Deployment controller names them.
fn deployment_of(pod: &Pod) -> Option<String> {
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))?;
    let hash = pod.metadata.labels.as_ref()?.get("pod-template-hash")?;
    (owner.kind == "ReplicaSet")
        .then(|| owner.name.strip_suffix(&format!("-{hash}")))
        .flatten()
        .map(str::to_string)
}

/// The labels a decision reads (selectors, spread, affinity), without the ReplicaSet's hash.
fn labels(pod: &Pod) -> BTreeMap<String, String> {
    let mut l = pod.metadata.labels.clone().unwrap_or_default();
    l.remove("pod-template-hash");
    l
}

/// Only the do-not-disrupt annotation: annotations often carry configuration and secrets.
fn annotations(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Value {
    let kept: BTreeMap<&String, &String> = meta
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| *k == DO_NOT_DISRUPT)
        .collect();
    json!(kept)
}

/// What a decision reads of a container: its requests (and limits, which stand for absent
/// requests), and a preStop sleep (how long its pod takes to stop). Its name is replaced: names
/// can say more than they should.
fn container(i: usize, prefix: &str, c: &Container) -> Container {
    Container {
        name: format!("{prefix}{i}"),
        resources: c
            .resources
            .as_ref()
            .map(|r| k8s_openapi::api::core::v1::ResourceRequirements {
                requests: r.requests.clone(),
                limits: r.limits.clone(),
                ..Default::default()
            }),
        restart_policy: c.restart_policy.clone(),
        lifecycle: c
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|p| p.sleep.clone())
            .map(|sleep| k8s_openapi::api::core::v1::Lifecycle {
                pre_stop: Some(k8s_openapi::api::core::v1::LifecycleHandler {
                    sleep: Some(sleep),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        ..Default::default()
    }
}

/// The parts of a pod spec a decision reads, and nothing else.
pub fn spec(spec: &PodSpec) -> PodSpec {
    PodSpec {
        containers: spec
            .containers
            .iter()
            .enumerate()
            .map(|(i, c)| container(i, "c", c))
            .collect(),
        init_containers: spec.init_containers.as_ref().map(|cs| {
            cs.iter()
                .enumerate()
                .map(|(i, c)| container(i, "init", c))
                .collect()
        }),
        overhead: spec.overhead.clone(),
        node_selector: spec.node_selector.clone(),
        affinity: spec.affinity.clone(),
        tolerations: spec.tolerations.clone(),
        topology_spread_constraints: spec.topology_spread_constraints.clone(),
        priority: spec.priority,
        termination_grace_period_seconds: spec.termination_grace_period_seconds,
        ..Default::default()
    }
}

fn bare_pod(pod: &Pod, s: &PodSpec) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod.metadata.name,
            "namespace": namespace(pod),
            "labels": labels(pod),
            "annotations": annotations(&pod.metadata),
        },
        "spec": spec(s),
    })
}

fn deployment(ns: &str, name: &str, pod: &Pod, s: &PodSpec) -> Value {
    let labels = labels(pod);
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations(&pod.metadata)},
                "spec": spec(s),
            },
        },
    })
}

/// A NodePool's spec (its status is the recorded controller's, not the replay's), without the
/// annotations its template gives nodes (configuration, not decisions).
pub fn node_pool(object: &Value) -> Value {
    let mut spec = object["spec"].clone();
    // (`get_mut`: indexing a Value mutably would insert the keys it looks for.)
    if let Some(meta) = spec
        .get_mut("template")
        .and_then(|t| t.get_mut("metadata"))
        .and_then(Value::as_object_mut)
    {
        meta.remove("annotations");
    }
    json!({
        "apiVersion": object["apiVersion"],
        "kind": "NodePool",
        "metadata": {"name": object["metadata"]["name"]},
        "spec": spec,
    })
}

/// A Policy served by a built-in (its name and configuration); `None` for a component that
/// lives in the cluster (a ConfigMap, a URL, a registry), which a journal cannot carry.
pub fn policy(p: &crate::api::Policy) -> Option<Value> {
    let builtin = p.spec.source.builtin.as_ref()?;
    Some(json!({
        "apiVersion": "dovetail.sh/v1",
        "kind": "Policy",
        "metadata": {"name": p.metadata.name},
        "spec": {"source": {"builtin": builtin}, "config": p.spec.config, "limits": p.spec.limits},
    }))
}

/// What decisions read of an EC2NodeClass — its kubelet settings, AMI family and alias, and the
/// size of its volumes — with placeholders where the schema wants the account's identifiers
/// (role, instance profile, selector tags, keys, snapshots: none of them decides anything in a
/// replay, and all of them describe the account).
pub fn node_class(object: &Value) -> Value {
    let spec = &object["spec"];
    let mut out = serde_json::Map::new();
    for kept in ["kubelet", "amiFamily", "instanceStorePolicy"] {
        if !spec[kept].is_null() {
            out.insert(kept.into(), spec[kept].clone());
        }
    }
    if !spec["role"].is_null() {
        out.insert("role".into(), json!("recorded-node-role"));
    }
    if !spec["instanceProfile"].is_null() {
        out.insert("instanceProfile".into(), json!("recorded-instance-profile"));
    }
    let placeholder = json!([{"tags": {"recorded": "true"}}]);
    for terms in ["subnetSelectorTerms", "securityGroupSelectorTerms"] {
        out.insert(terms.into(), placeholder.clone());
    }
    let aliases: Vec<Value> = spec["amiSelectorTerms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["alias"].is_string())
        .map(|t| json!({"alias": t["alias"]}))
        .collect();
    out.insert(
        "amiSelectorTerms".into(),
        if aliases.is_empty() {
            placeholder
        } else {
            json!(aliases)
        },
    );
    if let Some(mappings) = spec["blockDeviceMappings"].as_array() {
        let sized: Vec<Value> = mappings
            .iter()
            .map(|m| {
                json!({
                    "deviceName": m["deviceName"],
                    "rootVolume": m["rootVolume"],
                    "ebs": {"volumeSize": m["ebs"]["volumeSize"], "volumeType": m["ebs"]["volumeType"]},
                })
            })
            .collect();
        out.insert("blockDeviceMappings".into(), json!(sized));
    }
    json!({
        "apiVersion": object["apiVersion"],
        "kind": "EC2NodeClass",
        "metadata": {"name": object["metadata"]["name"]},
        "spec": out,
    })
}

/// A PodDisruptionBudget's selector and limits.
pub fn pdb(b: &k8s_openapi::api::policy::v1::PodDisruptionBudget) -> Value {
    json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": b.metadata.name, "namespace": b.metadata.namespace},
        "spec": b.spec,
    })
}

/// The name a DaemonSet is recorded under: a digest of its own, which would list the agents a
/// cluster runs.
pub fn daemon_set_name(namespace: &str, name: &str) -> String {
    // FNV-1a: stable across runs and versions, unlike the standard library's hasher.
    let hash = format!("{namespace}/{name}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    format!("daemonset-{:08x}", hash as u32)
}

/// A DaemonSet's pod template, as overhead on every node, under its recorded name.
pub fn daemon_set(d: &k8s_openapi::api::apps::v1::DaemonSet) -> Option<Value> {
    let s = d.spec.template.spec.as_ref()?;
    let ns = d
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = daemon_set_name(&ns, d.metadata.name.as_deref().unwrap_or_default());
    Some(json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec(s)},
        },
    }))
}

/// A journal read back: its header, the manifests its first moment holds, the steps after it,
/// and how long it ran.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    pub header: Header,
    /// Objects applied at second 0, as the simulator's input manifests.
    pub initial: Vec<Value>,
    /// Everything later, as Scenario steps.
    pub steps: Vec<Step>,
    /// The recording's length, seconds (the trailer's, or the last step's).
    pub duration: i64,
}

/// Reads a journal's text (`file` names it in errors).
pub fn read(file: &str, text: &str) -> Result<Replay, JournalError> {
    let err = |line: usize, message: String| JournalError::Line {
        file: file.to_string(),
        line,
        message,
    };
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, first)) = lines.next() else {
        return Err(JournalError::Empty {
            file: file.to_string(),
        });
    };
    let header: Header = serde_json::from_str(first).map_err(|e| {
        err(
            1,
            format!("not a journal header ({e}); `dovetail record` writes journals"),
        )
    })?;
    if header.journal != FORMAT {
        return Err(err(
            1,
            format!(
                "journal format {:?}: this dovetail reads {FORMAT:?}",
                header.journal
            ),
        ));
    }
    let mut replay = Replay {
        header,
        initial: Vec::new(),
        steps: Vec::new(),
        duration: 0,
    };
    let mut ended = None;
    for (i, line) in lines {
        let value: Value = serde_json::from_str(line).map_err(|e| err(i + 1, e.to_string()))?;
        if value.get("ended").is_some() {
            let t: Trailer =
                serde_json::from_value(value).map_err(|e| err(i + 1, e.to_string()))?;
            ended = Some(t.ended);
            continue;
        }
        let step: Step = serde_json::from_value(value).map_err(|e| err(i + 1, e.to_string()))?;
        let at = crate::api::duration::parse(&step.at)
            .map_err(|e| err(i + 1, format!("at: {e}")))?
            .unwrap_or_default()
            .as_secs() as i64;
        replay.duration = replay.duration.max(at);
        match (&step.apply, at) {
            (Some(object), 0) => replay.initial.push(object.clone()),
            _ => replay.steps.push(step),
        }
    }
    replay.duration = ended.unwrap_or(replay.duration + 300).max(60);
    Ok(replay)
}

impl Replay {
    /// Policies the journal's NodePools name that neither are built-ins nor come with the
    /// journal (their components live in the cluster): the replay needs them another way.
    pub fn missing_policies(&self) -> Vec<String> {
        let objects = self
            .initial
            .iter()
            .chain(self.steps.iter().filter_map(|s| s.apply.as_ref()));
        let mut named = std::collections::BTreeSet::new();
        let mut held = std::collections::BTreeSet::new();
        for o in objects {
            match o["kind"].as_str() {
                Some("NodePool") => {
                    let p = &o["spec"]["policies"];
                    for v in [
                        &p["scoring"],
                        &p["consolidation"],
                        &p["shadow"]["scoring"],
                        &p["shadow"]["consolidation"],
                    ] {
                        if let Some(n) = v.as_str() {
                            named.insert(n.to_string());
                        }
                    }
                }
                Some("Policy") => {
                    held.insert(
                        o["metadata"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    );
                }
                _ => {}
            }
        }
        named
            .into_iter()
            .filter(|n| !held.contains(n) && crate::policy::builtin::find(n).is_none())
            .collect()
    }

    /// The simulator's input: the first moment's objects, and a Scenario with the rest.
    pub fn manifests(&self, file: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .initial
            .iter()
            .map(|o| (file.to_string(), o.to_string()))
            .collect();
        let steps: Vec<Value> = self
            .steps
            .iter()
            .map(|s| serde_json::to_value(StepOut(s)).unwrap_or_default())
            .collect();
        let scenario = json!({
            "apiVersion": "sim.dovetail.sh/v1",
            "kind": "Scenario",
            "metadata": {"name": format!("replay of {}", self.header.source)},
            "spec": {"duration": format!("{}s", self.duration), "steps": steps},
        });
        out.push((file.to_string(), scenario.to_string()));
        out
    }
}

/// A step as the journal writes it (Steps are read with serde; this writes them back).
pub struct StepOut<'a>(pub &'a Step);

impl Serialize for StepOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let step = self.0;
        let mut v = serde_json::Map::new();
        v.insert("at".into(), json!(step.at));
        if let Some(sc) = &step.scale {
            v.insert(
                "scale".into(),
                json!({"deployment": sc.deployment, "namespace": sc.namespace, "replicas": sc.replicas}),
            );
        }
        if let Some(a) = &step.apply {
            v.insert("apply".into(), a.clone());
        }
        if let Some(d) = &step.delete {
            v.insert(
                "delete".into(),
                json!({"kind": d.kind, "name": d.name, "namespace": d.namespace}),
            );
        }
        Value::Object(v).serialize(s)
    }
}

#[cfg(test)]
mod tests;
