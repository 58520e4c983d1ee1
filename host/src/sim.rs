//! The simulator: the real provisioning, disruption and termination code over an in-memory
//! cluster and EC2, on a virtual clock. `dovetail simulate -f nodepool.yaml -f deploy.yaml` runs
//! the manifests a user has; a `Scenario` document adds a timeline.
//!
//! The clock jumps from one thing that can happen to the next (a step, a batch window closing,
//! a node becoming Ready, a drain retry, a disruption pass), so 24 virtual hours of a steady
//! cluster take milliseconds.

pub mod report;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

pub use report::{Difference, DisruptionRound, Event, EventKind, Report};

use crate::api::duration;
use crate::api::manifest::{self, Manifest, ManifestError};
use crate::api::scenario::{Scenario, Step};
use crate::catalog;
use crate::cloud::sim::SimCloud;
use crate::cloud::{CloudProvider, LaunchRequest};
use crate::cluster::{
    self, Cluster, DO_NOT_DISRUPT, Deletion, IntOrPercent, Node, Pdb, Pod, disrupted_taint,
};
use crate::disruption::{self, Note};
use crate::policy::types::{CapacityType, Catalog, DisruptionReason};
use crate::policy::{EngineConfig, PolicyEngine, PolicyError, PolicyRegistry};
use crate::provisioning::{Pool, provision};
use crate::scheduling::from_kube::{ConvertError, deployment_pods, node_pool, pending_pod};
use crate::scheduling::model::{add, capacity_type_label, zero};
use crate::scheduling::{InstanceTypes, PendingPod};

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Zones of the simulated region.
    pub zones: Vec<String>,
    /// A batch closes after this long without a new pod…
    pub batch_idle: Duration,
    /// …or this long after its first pod.
    pub batch_max: Duration,
    /// From launch to a Ready node.
    pub launch_delay: Duration,
    /// How long to run when no Scenario says.
    pub duration: Duration,
    /// How often disruption looks for work while the cluster changes.
    pub disruption_interval: Duration,
    /// Wall-clock time of the simulation's start (Unix seconds); policies see it.
    pub start: i64,
    /// Overrides every NodePool's scoring policy.
    pub scoring: Option<String>,
    /// Overrides every NodePool's consolidation policy.
    pub consolidation: Option<String>,
    /// Extra policies by name: component bytes and config (e.g. a policy under development).
    pub policies: Vec<ExtraPolicy>,
    /// Launch on EC2 (or an AWS API server such as moto) instead of the in-memory cloud.
    pub aws: Option<crate::cloud::aws::AwsSettings>,
    /// With `aws`: the SQS queue of interruption events, polled as the simulation runs; an
    /// `interrupt` step sends the documented EventBridge message to it.
    pub interruption_queue: Option<String>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            zones: vec![
                "us-east-1a".into(),
                "us-east-1b".into(),
                "us-east-1c".into(),
            ],
            batch_idle: Duration::from_secs(1),
            batch_max: Duration::from_secs(10),
            launch_delay: Duration::from_secs(40),
            duration: Duration::from_secs(3600),
            disruption_interval: Duration::from_secs(10),
            // Monday 2026-11-23 00:00 UTC.
            start: 1_795_392_000,
            scoring: None,
            consolidation: None,
            policies: Vec::new(),
            aws: None,
            interruption_queue: None,
        }
    }
}

/// How often the simulator looks for nodes whose instance vanished (virtual seconds).
const GC_INTERVAL: i64 = 60;

/// A policy given to the simulator directly: name, component bytes, config.
pub type ExtraPolicy = (String, Vec<u8>, Vec<(String, String)>);

/// Simulator errors.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Convert(#[from] ConvertError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("{0}")]
    Input(String),
}

/// A Deployment the simulated ReplicaSet controller keeps at its replica count.
#[derive(Debug, Clone)]
struct Workload {
    template: PendingPod,
    replicas: u32,
    next: u64,
    do_not_disrupt: bool,
}

/// Runs manifests (file name, text) — plain ones and an optional Scenario — to the end of the
/// scenario's duration.
pub fn simulate(files: &[(String, String)], opts: &SimOptions) -> Result<Report, SimError> {
    let mut docs = Vec::new();
    let mut scenario: Option<(String, Scenario)> = None;
    for (name, text) in files {
        for m in manifest::parse(name, text)? {
            match m {
                Manifest::Scenario(s) => {
                    if let Some((first, _)) = &scenario {
                        return Err(SimError::Input(format!(
                            "{name}: a second Scenario (the first is in {first}); give one"
                        )));
                    }
                    scenario = Some((name.clone(), *s));
                }
                other => docs.push((name.clone(), other)),
            }
        }
    }
    let mut opts = opts.clone();
    let mut steps = Vec::new();
    if let Some((file, s)) = &scenario {
        let field = |f: &str, v: &str| -> Result<Duration, SimError> {
            duration::parse(v).ok().flatten().ok_or_else(|| {
                SimError::Input(format!(
                    "{file}: Scenario spec.{f}: {v:?} is not a duration"
                ))
            })
        };
        if let Some(d) = &s.spec.duration {
            opts.duration = field("duration", d)?;
        }
        if let Some(d) = &s.spec.launch_delay {
            opts.launch_delay = field("launchDelay", d)?;
        }
        if let Some(d) = &s.spec.batch_idle {
            opts.batch_idle = field("batchIdle", d)?;
        }
        if let Some(d) = &s.spec.batch_max {
            opts.batch_max = field("batchMax", d)?;
        }
        if let Some(z) = &s.spec.zones {
            opts.zones = z.clone();
        }
        for (i, step) in s.spec.steps.iter().enumerate() {
            let at = field(&format!("steps[{i}].at"), &step.at)?.as_secs() as i64;
            let actions = [
                step.scale.is_some(),
                step.apply.is_some(),
                step.delete.is_some(),
                step.exhaust.is_some(),
                step.interrupt.is_some(),
            ];
            if actions.iter().filter(|&&a| a).count() != 1 {
                return Err(SimError::Input(format!(
                    "{file}: Scenario spec.steps[{i}] (at {}): needs exactly one of scale, apply, delete, exhaust, interrupt",
                    step.at
                )));
            }
            // Inline manifests are read now, so a bad one fails before the run.
            let applied = match &step.apply {
                Some(v) => {
                    let text = serde_json::to_string(v).expect("a JSON value serializes");
                    let label = format!("{file} spec.steps[{i}].apply");
                    manifest::parse(&label, &text)?
                }
                None => Vec::new(),
            };
            steps.push((at, i, step.clone(), applied));
        }
        steps.sort_by_key(|(at, i, ..)| (*at, *i));
    }

    let engine = PolicyEngine::new(EngineConfig::default())?;
    let registry = PolicyRegistry::new(engine);
    for (name, wasm, config) in &opts.policies {
        registry.apply(name, wasm, config.clone(), Default::default())?;
    }
    let zones: Vec<&str> = opts.zones.iter().map(String::as_str).collect();
    let mut cloud: Box<dyn CloudProvider> = match &opts.aws {
        Some(settings) => Box::new(
            crate::cloud::aws::AwsCloud::new(settings.clone())
                .map_err(|e| SimError::Input(e.to_string()))?,
        ),
        None => Box::new(SimCloud::new()),
    };
    // Against AWS, decisions use what the account offers; otherwise the embedded catalog.
    let (entries, cat) = match cloud.catalog(&zones) {
        Some(found) => found.map_err(|e| SimError::Input(e.to_string()))?,
        None => {
            let entries = catalog::embedded();
            let cat = catalog::policy_catalog(&entries, &zones);
            (entries, cat)
        }
    };
    let its = InstanceTypes::new(&entries, &cat);
    let mut sim = Sim {
        type_index: its
            .types
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i as u32))
            .collect(),
        opts: opts.clone(),
        t: 0,
        cluster: Cluster::default(),
        cloud,
        queue: match (&opts.aws, &opts.interruption_queue) {
            (Some(settings), Some(url)) => Some(QueueClient::new(settings, url)?),
            (None, Some(_)) => {
                return Err(SimError::Input(
                    "an interruption queue needs the aws cloud".into(),
                ));
            }
            _ => None,
        },
        registry,
        its,
        cat,
        workloads: BTreeMap::new(),
        daemonsets: BTreeMap::new(),
        batch: None,
        ready_due: BTreeMap::new(),
        next_claim: 0,
        next_disruption: None,
        retry_provisioning: None,
        next_gc: GC_INTERVAL,
        unschedulable: HashMap::new(),
        report: Report::default(),
    };
    for (file, m) in docs {
        sim.apply(&file, m)?;
    }
    if sim.cluster.pools.is_empty()
        && !steps
            .iter()
            .any(|(_, _, _, a)| a.iter().any(|m| matches!(m, Manifest::NodePool(_))))
    {
        return Err(SimError::Input("no NodePool in the given manifests".into()));
    }
    sim.run(steps)?;
    Ok(sim.report)
}

struct Sim {
    opts: SimOptions,
    /// Seconds since the start.
    t: i64,
    cluster: Cluster,
    cloud: Box<dyn CloudProvider>,
    queue: Option<QueueClient>,
    registry: PolicyRegistry,
    its: InstanceTypes,
    cat: Catalog,
    type_index: HashMap<String, u32>,
    workloads: BTreeMap<String, Workload>,
    /// DaemonSets by `namespace/name`: their pod requests are on every node.
    daemonsets: BTreeMap<String, crate::policy::types::Resources>,
    /// Open provisioning batch: (first pod, last pod).
    batch: Option<(i64, i64)>,
    /// In-flight nodes and when they become Ready.
    ready_due: BTreeMap<String, i64>,
    next_claim: u64,
    next_disruption: Option<i64>,
    retry_provisioning: Option<i64>,
    /// When to look next for nodes whose instance vanished.
    next_gc: i64,
    /// Last reason logged per unschedulable pod (logged again only when it changes).
    unschedulable: HashMap<String, String>,
    report: Report,
}

impl Sim {
    fn now(&self) -> i64 {
        self.opts.start + self.t
    }

    fn event(&mut self, kind: EventKind) {
        kind.log();
        self.report.events.push(Event { at: self.t, kind });
    }

    /// Something changed that disruption should look at.
    fn dirty(&mut self) {
        let step = self.opts.disruption_interval.as_secs().max(1) as i64;
        let next = (self.t / step + 1) * step;
        self.next_disruption = Some(self.next_disruption.map_or(next, |n| n.min(next)));
    }

    /// Pending pods get another provisioning batch.
    fn kick(&mut self) {
        if self.batch.is_none() && self.cluster.pods.values().any(|p| p.node.is_none()) {
            self.batch = Some((self.t, self.t));
        }
    }

    fn run(&mut self, steps: Vec<(i64, usize, Step, Vec<Manifest>)>) -> Result<(), SimError> {
        let end = self.opts.duration.as_secs() as i64;
        let mut steps = steps.into_iter().peekable();
        loop {
            let span = tracing::info_span!("sim", t = %report::clock(self.t));
            let _entered = span.enter();
            while let Some((at, ..)) = steps.peek()
                && *at <= self.t
            {
                let (_, i, step, applied) = steps.next().expect("peeked");
                self.step(i, &step, applied)?;
            }
            self.become_ready();
            if self.t >= self.next_gc {
                self.next_gc = self.t + GC_INTERVAL;
                self.collect_vanished();
            }
            self.poll_interruptions();
            self.terminate();
            if let Some(close) = self.batch_close()
                && close <= self.t
            {
                self.provision();
            }
            if self.retry_provisioning.is_some_and(|r| r <= self.t) {
                self.retry_provisioning = None;
                self.kick();
            }
            if self.next_disruption.is_some_and(|d| d <= self.t) {
                self.disrupt();
            }
            self.observe();
            let mut next = i64::MAX;
            if let Some((at, ..)) = steps.peek() {
                next = next.min(*at);
            }
            if let Some(&due) = self.ready_due.values().min() {
                next = next.min(due);
            }
            if let Some(close) = self.batch_close() {
                next = next.min(close);
            }
            if self.cluster.nodes.values().any(|n| n.deletion.is_some()) {
                next = next.min(self.t + 5);
            }
            if !self.cluster.nodes.is_empty() {
                next = next.min(self.next_gc);
            }
            for t in [self.next_disruption, self.retry_provisioning]
                .into_iter()
                .flatten()
            {
                next = next.min(t);
            }
            let next = next.max(self.t + 1);
            let until = next.min(end);
            let price: f64 = self
                .cluster
                .nodes
                .values()
                .map(|n| n.instance.offer.price)
                .sum();
            self.report.cost_usd += price * (until - self.t).max(0) as f64 / 3600.0;
            if next > end {
                self.t = end;
                break;
            }
            self.t = next;
        }
        self.report.duration_secs = end;
        self.report.nodes = self.cluster.nodes.values().cloned().collect();
        self.report.pods = self.cluster.pods.values().cloned().collect();
        self.report.still_pending = self
            .cluster
            .pods
            .values()
            .filter(|p| p.node.is_none())
            .map(|p| {
                let reason = self
                    .unschedulable
                    .get(&p.spec.name)
                    .cloned()
                    .unwrap_or_else(|| "waiting for a provisioning batch".into());
                (p.spec.name.clone(), reason)
            })
            .collect();
        Ok(())
    }

    fn batch_close(&self) -> Option<i64> {
        let (first, last) = self.batch?;
        Some(
            (last + self.opts.batch_idle.as_secs() as i64)
                .min(first + self.opts.batch_max.as_secs() as i64),
        )
    }

    /// Records per-pool disruption concurrency.
    fn observe(&mut self) {
        for pool in &self.cluster.pools {
            let nodes: Vec<&Node> = self
                .cluster
                .nodes
                .values()
                .filter(|n| n.instance.node_pool == pool.spec.name)
                .collect();
            let disrupting = nodes
                .iter()
                .filter(|n| n.deletion.as_ref().is_some_and(|d| d.reason.is_some()))
                .count() as u32;
            let e = self
                .report
                .peak_disrupting
                .entry(pool.spec.name.clone())
                .or_insert((0, 0));
            if disrupting > e.0 {
                *e = (disrupting, nodes.len() as u32);
            }
        }
    }

    // ---- objects ----

    fn apply(&mut self, file: &str, m: Manifest) -> Result<(), SimError> {
        match m {
            Manifest::NodePool(np) => {
                let mut np = *np;
                if let Some(s) = &self.opts.scoring {
                    np.spec.policies.scoring = s.clone();
                }
                if let Some(c) = &self.opts.consolidation {
                    np.spec.policies.consolidation = c.clone();
                }
                let overhead = self.daemonsets.values().fold(zero(), |a, r| add(&a, r));
                let spec = node_pool(&np, overhead, zero())?;
                // Compile the pool's policies now rather than inside its first decision (an
                // unknown name is reported when it is used, with the fallback's decision).
                for name in [&np.spec.policies.scoring, &np.spec.policies.consolidation] {
                    let _ = self.registry.get(name);
                }
                let pool = Pool { resource: np, spec };
                match self.cluster.pool_index(&pool.spec.name) {
                    Some(i) => self.cluster.pools[i] = pool,
                    None => self.cluster.pools.push(pool),
                }
                self.kick();
                self.dirty();
            }
            Manifest::Policy(p) => {
                apply_policy(&self.registry, file, &p)?;
                self.kick();
                self.dirty();
            }
            Manifest::EC2NodeClass(c) => {
                let name = c.metadata.name.clone().unwrap_or_default();
                if let Err(reason) = self.cloud.node_class(&name, &c.spec) {
                    self.event(EventKind::NodeClassNotReady {
                        node_class: name.clone(),
                        reason,
                    });
                }
                let spec = serde_json::to_string(&c.spec).expect("a spec serializes");
                self.cluster.node_classes.insert(name, spec);
                self.dirty();
            }
            Manifest::Scenario(_) => {
                return Err(SimError::Input(format!(
                    "{file}: a Scenario cannot be applied by a step"
                )));
            }
            Manifest::Other { kind, document, .. } => match kind.as_str() {
                "Deployment" => {
                    let d: k8s_openapi::api::apps::v1::Deployment =
                        serde_json::from_value(document)
                            .map_err(|e| SimError::Input(format!("{file}: Deployment: {e}")))?;
                    let ns = d.metadata.namespace.clone().unwrap_or("default".into());
                    let key = format!("{ns}/{}", d.metadata.name.clone().unwrap_or_default());
                    let replicas = d.spec.replicas.unwrap_or(1).max(0);
                    let mut one = d.clone();
                    one.spec.replicas = Some(1);
                    let template = deployment_pods(&one)?.pop().ok_or_else(|| {
                        SimError::Input(format!("{file}: Deployment {key}: no pod"))
                    })?;
                    let do_not_disrupt = d
                        .spec
                        .template
                        .metadata
                        .as_ref()
                        .and_then(|m| m.annotations.as_ref())
                        .is_some_and(|a| a.get(DO_NOT_DISRUPT).is_some_and(|v| v == "true"));
                    let next = self.workloads.get(&key).map_or(0, |w| w.next);
                    self.workloads.insert(
                        key.clone(),
                        Workload {
                            template,
                            replicas: replicas as u32,
                            next,
                            do_not_disrupt,
                        },
                    );
                    self.reconcile(&key);
                }
                "Pod" => {
                    let p: k8s_openapi::api::core::v1::Pod = serde_json::from_value(document)
                        .map_err(|e| SimError::Input(format!("{file}: Pod: {e}")))?;
                    let meta = &p.metadata;
                    let id = format!(
                        "{}/{}",
                        meta.namespace.as_deref().unwrap_or("default"),
                        meta.name.as_deref().unwrap_or("pod")
                    );
                    let spec = p
                        .spec
                        .as_ref()
                        .ok_or_else(|| SimError::Input(format!("{file}: Pod {id}: no spec")))?;
                    let pod = pending_pod(
                        &format!("Pod/{id}"),
                        "spec",
                        &id,
                        &meta.labels.clone().unwrap_or_default(),
                        spec,
                    )?;
                    let dnd = meta
                        .annotations
                        .as_ref()
                        .is_some_and(|a| a.get(DO_NOT_DISRUPT).is_some_and(|v| v == "true"));
                    self.create_pod(pod, None, dnd);
                }
                "DaemonSet" => {
                    let d: k8s_openapi::api::apps::v1::DaemonSet = serde_json::from_value(document)
                        .map_err(|e| SimError::Input(format!("{file}: DaemonSet: {e}")))?;
                    let key = format!(
                        "{}/{}",
                        d.metadata.namespace.as_deref().unwrap_or("default"),
                        d.metadata.name.as_deref().unwrap_or_default()
                    );
                    let spec = d.spec.template.spec.as_ref().ok_or_else(|| {
                        SimError::Input(format!("{file}: DaemonSet {key}: no pod template"))
                    })?;
                    let pod = pending_pod(
                        &format!("DaemonSet/{key}"),
                        "spec.template.spec",
                        &key,
                        &Default::default(),
                        spec,
                    )?;
                    self.daemonsets.insert(key, pod.requests);
                    let overhead = self.daemonsets.values().fold(zero(), |a, r| add(&a, r));
                    for p in &mut self.cluster.pools {
                        p.spec.daemonset_overhead = overhead;
                    }
                }
                "PodDisruptionBudget" => {
                    let pdb = pdb(file, document)?;
                    self.cluster.pdbs.retain(|p| {
                        (p.namespace.as_str(), p.name.as_str())
                            != (pdb.namespace.as_str(), pdb.name.as_str())
                    });
                    self.cluster.pdbs.push(pdb);
                    self.dirty();
                }
                // Services, ConfigMaps and the like do not change capacity decisions.
                _ => {}
            },
        }
        Ok(())
    }

    fn step(&mut self, i: usize, step: &Step, applied: Vec<Manifest>) -> Result<(), SimError> {
        let label = format!("Scenario spec.steps[{i}] (at {})", step.at);
        if let Some(s) = &step.scale {
            let key = format!("{}/{}", s.namespace, s.deployment);
            let w = self
                .workloads
                .get_mut(&key)
                .ok_or_else(|| SimError::Input(format!("{label}: scale: no Deployment {key}")))?;
            w.replicas = s.replicas;
            self.event(EventKind::Scaled {
                deployment: key.clone(),
                replicas: s.replicas,
            });
            self.reconcile(&key);
        }
        for m in applied {
            self.apply(&label, m)?;
        }
        if let Some(d) = &step.delete {
            let key = format!("{}/{}", d.namespace, d.name);
            match d.kind.as_str() {
                "Deployment" => {
                    if self
                        .workloads
                        .get_mut(&key)
                        .map(|w| w.replicas = 0)
                        .is_none()
                    {
                        return Err(SimError::Input(format!(
                            "{label}: delete: no Deployment {key}"
                        )));
                    }
                    self.reconcile(&key);
                    self.workloads.remove(&key);
                }
                "Pod" => {
                    if self.cluster.pods.contains_key(&key) {
                        self.delete_pod(&key);
                    }
                }
                "Node" => {
                    let t = self.now();
                    let n = self.cluster.nodes.get_mut(&d.name).ok_or_else(|| {
                        SimError::Input(format!("{label}: delete: no Node {}", d.name))
                    })?;
                    if n.deletion.is_none() {
                        n.taints.push(disrupted_taint());
                        n.deletion = Some(Deletion {
                            reason: None,
                            since: t,
                            replacement: None,
                        });
                    }
                    self.event(EventKind::Deleting {
                        node: d.name.clone(),
                    });
                }
                "NodePool" => {
                    let t = self.now();
                    self.cluster.pools.retain(|p| p.spec.name != d.name);
                    for n in self.cluster.nodes.values_mut() {
                        if n.instance.node_pool == d.name && n.deletion.is_none() {
                            n.taints.push(disrupted_taint());
                            n.deletion = Some(Deletion {
                                reason: None,
                                since: t,
                                replacement: None,
                            });
                        }
                    }
                }
                "PodDisruptionBudget" => {
                    self.cluster
                        .pdbs
                        .retain(|p| p.namespace != d.namespace || p.name != d.name);
                    self.dirty();
                }
                // The instance behind a node, terminated outside the controller.
                "Instance" => {
                    let id = self
                        .cluster
                        .nodes
                        .get(&d.name)
                        .map(|n| n.instance.id.clone())
                        .ok_or_else(|| {
                            SimError::Input(format!("{label}: delete: no Node {}", d.name))
                        })?;
                    self.cloud
                        .delete(&id)
                        .map_err(|e| SimError::Input(format!("{label}: delete: {e}")))?;
                }
                other => {
                    return Err(SimError::Input(format!(
                        "{label}: delete: kind {other:?} (Deployment, Pod, Node, NodePool, PodDisruptionBudget, Instance)"
                    )));
                }
            }
        }
        if let Some(x) = &step.interrupt {
            let kind = match x.kind.as_deref().unwrap_or("spot") {
                "spot" => crate::interruption::Kind::SpotInterruption,
                "scheduled-change" => crate::interruption::Kind::ScheduledChange,
                "capacity-reservation" => {
                    crate::interruption::Kind::CapacityReservationInterruption
                }
                "stopping" => crate::interruption::Kind::StateChange("stopping".into()),
                other => {
                    return Err(SimError::Input(format!(
                        "{label}: interrupt.kind {other:?} (spot, scheduled-change, capacity-reservation, stopping)"
                    )));
                }
            };
            let Some(node) = self.cluster.nodes.get(&x.node) else {
                return Err(SimError::Input(format!(
                    "{label}: interrupt: no Node {}",
                    x.node
                )));
            };
            match &mut self.queue {
                // Through the real queue: EC2's message, as AWS documents it.
                Some(q) => {
                    let id = node.instance.id.clone();
                    q.send(&kind, &id)
                        .map_err(|e| SimError::Input(format!("{label}: interrupt: {e}")))?;
                }
                None => self.interrupt(&x.node, &kind),
            }
        }
        if let Some(x) = &step.exhaust {
            let capacity = match x.capacity_type.as_str() {
                "spot" => CapacityType::Spot,
                "on-demand" => CapacityType::OnDemand,
                "reserved" => CapacityType::Reserved,
                other => {
                    return Err(SimError::Input(format!(
                        "{label}: exhaust.capacityType {other:?} (spot, on-demand, reserved)"
                    )));
                }
            };
            self.cloud
                .exhaust(&x.instance_type, &x.zone, capacity)
                .map_err(|e| SimError::Input(format!("{label}: exhaust: {e}")))?;
        }
        Ok(())
    }

    fn create_pod(&mut self, spec: PendingPod, owner: Option<String>, do_not_disrupt: bool) {
        let pod = Pod {
            spec,
            owner,
            created_at: self.now(),
            node: None,
            running_since: None,
            do_not_disrupt,
        };
        self.cluster.pods.insert(pod.spec.name.clone(), pod);
        self.batch = Some(match self.batch {
            Some((first, _)) => (first, self.t),
            None => (self.t, self.t),
        });
    }

    fn delete_pod(&mut self, name: &str) {
        if let Some(p) = self.cluster.pods.remove(name)
            && let Some(n) = p.node.and_then(|n| self.cluster.nodes.get_mut(&n))
        {
            n.last_pod_change = self.opts.start + self.t;
            self.dirty();
        }
    }

    /// The ReplicaSet controller: creates missing replicas, removes extra ones (pending first,
    /// then those on the nodes with the most replicas, newest first — Kubernetes' ranking).
    fn reconcile(&mut self, key: &str) {
        let Some(w) = self.workloads.get(key).cloned() else {
            return;
        };
        let mine: Vec<&Pod> = self
            .cluster
            .pods
            .values()
            .filter(|p| p.owner.as_deref() == Some(key))
            .collect();
        let have = mine.len() as u32;
        if have < w.replicas {
            let mut next = w.next;
            for _ in have..w.replicas {
                let name = format!("{key}-{next:05}");
                next += 1;
                self.create_pod(
                    PendingPod {
                        name,
                        ..w.template.clone()
                    },
                    Some(key.to_string()),
                    w.do_not_disrupt,
                );
            }
            self.workloads.get_mut(key).expect("present").next = next;
        } else if have > w.replicas {
            let mut per_node: HashMap<&str, usize> = HashMap::new();
            for p in &mine {
                if let Some(n) = &p.node {
                    *per_node.entry(n.as_str()).or_default() += 1;
                }
            }
            let mut ranked: Vec<(
                bool,
                std::cmp::Reverse<usize>,
                std::cmp::Reverse<i64>,
                String,
            )> = mine
                .iter()
                .map(|p| {
                    (
                        p.node.is_some(),
                        std::cmp::Reverse(p.node.as_deref().map_or(0, |n| per_node[n])),
                        std::cmp::Reverse(p.created_at),
                        p.spec.name.clone(),
                    )
                })
                .collect();
            ranked.sort();
            for (.., name) in ranked.into_iter().take((have - w.replicas) as usize) {
                self.delete_pod(&name);
            }
        }
    }

    // ---- controllers ----

    fn become_ready(&mut self) {
        let due: Vec<String> = self
            .ready_due
            .iter()
            .filter(|&(_, &t)| t <= self.t)
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            self.ready_due.remove(&name);
            let t = self.now();
            let Some(node) = self.cluster.nodes.get_mut(&name) else {
                continue;
            };
            node.ready_at = Some(t);
            node.last_pod_change = t;
            for p in self.cluster.pods.values_mut() {
                if p.node.as_deref() == Some(name.as_str()) && p.running_since.is_none() {
                    p.running_since = Some(t);
                    self.report.pending_seconds.push((t - p.created_at) as f64);
                }
            }
            self.event(EventKind::Ready { node: name });
            self.dirty();
        }
    }

    fn provision(&mut self) {
        self.batch = None;
        let pending: Vec<String> = self
            .cluster
            .pods
            .values()
            .filter(|p| p.node.is_none())
            .map(|p| p.spec.name.clone())
            .collect();
        self.provision_pods(pending, true);
    }

    /// Provisions for `pending` (pod names). With `bind`, the pods are bound or nominated to
    /// where they go; without, only the capacity they need is launched (a replacement launched
    /// in parallel with an interrupted node's drain).
    fn provision_pods(&mut self, pending: Vec<String>, bind: bool) {
        if pending.is_empty() {
            return;
        }
        let specs: Vec<PendingPod> = pending
            .iter()
            .map(|n| self.cluster.pods[n].spec.clone())
            .collect();
        let (existing, names) = self.cluster.schedulable_nodes(&self.its, |_| false);
        let pool_specs = self.cluster.pool_specs(&self.its);
        let pools: Vec<Pool> = self
            .cluster
            .pools
            .iter()
            .zip(pool_specs)
            .map(|(p, spec)| Pool {
                resource: p.resource.clone(),
                spec,
            })
            .collect();
        let now = self.now();
        let outcome = provision(
            now,
            &specs,
            &existing,
            &pools,
            &self.its,
            &self.cat,
            &self.registry,
            self.cloud.as_mut(),
            &mut self.next_claim,
        );
        for &(p, n) in outcome.bound.iter().filter(|_| bind) {
            self.bind(&pending[p], &names[n]);
        }
        for l in &outcome.launched {
            let pool = pools
                .iter()
                .find(|p| p.spec.name == l.instance.node_pool)
                .expect("launched from a pool");
            // Provisioning logged the launch already.
            let name = self.add_node(l.instance.clone(), pool, l.pods.len(), &l.policy, false);
            for &p in l.pods.iter().filter(|_| bind) {
                self.bind(&pending[p], &name);
            }
        }
        for u in &outcome.unschedulable {
            let pod = pending[u.pod].clone();
            if self.unschedulable.get(&pod) != Some(&u.reason) {
                self.unschedulable.insert(pod.clone(), u.reason.clone());
                self.report.events.push(Event {
                    at: self.t,
                    kind: EventKind::Unschedulable {
                        pod,
                        reason: u.reason.clone(),
                    },
                });
            }
        }
        for n in &outcome.not_launched {
            self.event(EventKind::NotLaunched {
                claim: n.claim.clone(),
                reason: n.reason.clone(),
            });
            self.retry_provisioning = Some(self.t + 30);
        }
        self.dirty();
    }

    /// A launched instance joins the cluster as an in-flight node; returns its name.
    fn add_node(
        &mut self,
        instance: crate::cloud::Instance,
        pool: &Pool,
        pods: usize,
        policy: &str,
        log: bool,
    ) -> String {
        let kind = EventKind::Launched {
            node: instance.claim.clone(),
            instance_type: instance.offer.instance_type.clone(),
            zone: instance.offer.zone.clone(),
            capacity_type: capacity_type_label(instance.offer.capacity_type),
            price: instance.offer.price,
            pods,
            policy: policy.to_string(),
        };
        let node = self.node(instance, pool);
        let name = node.name.clone();
        self.cluster.nodes.insert(name.clone(), node);
        self.ready_due.insert(
            name.clone(),
            self.t + self.opts.launch_delay.as_secs() as i64,
        );
        self.report.launched += 1;
        if log {
            self.event(kind);
        } else {
            self.report.events.push(Event { at: self.t, kind });
        }
        name
    }

    fn node(&self, instance: crate::cloud::Instance, pool: &Pool) -> Node {
        let name = instance.claim.clone();
        let type_index = self.type_index[&instance.offer.instance_type];
        let zone_index = self
            .its
            .zones
            .iter()
            .position(|z| *z == instance.offer.zone)
            .expect("a zone of the round") as u32;
        let labels = cluster::node_labels(
            &self.its,
            type_index,
            &instance.offer.zone,
            capacity_type_label(instance.offer.capacity_type),
            pool,
            &name,
        );
        let do_not_disrupt = pool
            .resource
            .spec
            .template
            .metadata
            .annotations
            .get(DO_NOT_DISRUPT)
            .is_some_and(|v| v == "true");
        Node {
            name,
            instance,
            type_index,
            zone_index,
            labels,
            taints: pool.spec.taints.clone(),
            launched_at: self.now(),
            ready_at: None,
            last_pod_change: self.now(),
            template_hash: cluster::template_hash(pool, &self.cluster.node_classes),
            do_not_disrupt,
            deletion: None,
        }
    }

    fn bind(&mut self, pod: &str, node: &str) {
        let t = self.now();
        let now = t;
        let ready = self
            .cluster
            .nodes
            .get(node)
            .and_then(|n| n.ready_at)
            .is_some();
        if let Some(n) = self.cluster.nodes.get_mut(node) {
            n.last_pod_change = now;
        }
        let Some(p) = self.cluster.pods.get_mut(pod) else {
            return;
        };
        p.node = Some(node.to_string());
        self.unschedulable.remove(pod);
        if ready {
            p.running_since = Some(t);
            self.report.pending_seconds.push((t - p.created_at) as f64);
        }
    }

    /// Nodes whose instance is gone (terminated outside the controller) are removed; their pods
    /// are recreated by their controllers and scheduled again.
    fn collect_vanished(&mut self) {
        let claims: BTreeMap<String, String> = self
            .cluster
            .nodes
            .values()
            .map(|n| (n.name.clone(), n.instance.id.clone()))
            .collect();
        let gone = match self.cloud.vanished(&claims) {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "listing instances failed");
                return;
            }
        };
        for name in gone {
            if self.cluster.nodes.remove(&name).is_none() {
                continue;
            }
            self.ready_due.remove(&name);
            self.event(EventKind::InstanceGone { node: name.clone() });
            let pods: Vec<Pod> = self
                .cluster
                .pods
                .values()
                .filter(|p| p.node.as_deref() == Some(name.as_str()))
                .cloned()
                .collect();
            for p in pods {
                self.cluster.pods.remove(&p.spec.name);
                if let Some(owner) = p.owner {
                    self.reconcile(&owner);
                }
            }
            self.kick();
            self.dirty();
        }
    }

    /// Handles what the interruption queue holds (nothing without one).
    fn poll_interruptions(&mut self) {
        let Some(mut q) = self.queue.take() else {
            return;
        };
        match q.poll() {
            Ok(received) => {
                for r in received {
                    let action = crate::interruption::action(&r.notice, false);
                    if action == crate::interruption::Action::Replace {
                        for id in &r.notice.instance_ids {
                            let node = self
                                .cluster
                                .nodes
                                .values()
                                .find(|n| n.instance.id == *id)
                                .map(|n| n.name.clone());
                            match node {
                                Some(n) => self.interrupt(&n, &r.notice.kind),
                                None => {
                                    tracing::info!(instance = %id, "interruption for an instance that is not ours")
                                }
                            }
                        }
                    }
                    if let Err(e) = q.done(&r, action) {
                        tracing::warn!(error = %e, "could not delete an interruption message");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "polling the interruption queue failed"),
        }
        self.report.interruption = q.queue.metrics.clone();
        self.queue = Some(q);
    }

    /// EC2 announced the node's instance is going: the replacement is launched now, in parallel
    /// with the drain (a spot node has two minutes), and a spot offering is left out a while.
    fn interrupt(&mut self, node: &str, kind: &crate::interruption::Kind) {
        let t = self.now();
        let Some(n) = self.cluster.nodes.get_mut(node) else {
            return;
        };
        if n.deletion.is_some() {
            return;
        }
        let offer = n.instance.offer.clone();
        n.taints.push(disrupted_taint());
        n.deletion = Some(Deletion {
            reason: None,
            since: t,
            replacement: None,
        });
        if *kind == crate::interruption::Kind::SpotInterruption {
            self.cloud
                .mark_unavailable(&offer.instance_type, &offer.zone, offer.capacity_type);
        }
        self.event(EventKind::Interrupted {
            node: node.to_string(),
            kind: kind.label(),
        });
        let pods: Vec<String> = self
            .cluster
            .pods_on(node)
            .map(|p| p.spec.name.clone())
            .collect();
        self.provision_pods(pods, false);
        self.dirty();
    }

    fn disrupt(&mut self) {
        self.next_disruption = None;
        let interval = self.opts.disruption_interval.as_secs().max(1) as i64;
        // Let the cluster settle first: a batch is open or nodes are on their way.
        let launching = self.ready_due.keys().any(|n| {
            !self.cluster.nodes.values().any(|d| {
                d.deletion.as_ref().and_then(|x| x.replacement.as_deref()) == Some(n.as_str())
            })
        });
        if self.batch.is_some() || launching {
            self.next_disruption = Some(self.t + interval);
            return;
        }
        let now = self.now();
        let decision = disruption::decide(&self.cluster, &self.its, &self.registry, now);
        if decision.candidates > 0 {
            self.report.disruption_rounds.push(report::DisruptionRound {
                at: self.t,
                nodes: self.cluster.nodes.len(),
                pods: self.cluster.pods.len(),
                candidates: decision.candidates,
                moves: decision.moves_offered,
                commands: decision.commands.len(),
                timings: decision.timings,
            });
        }
        let mut revisit = false;
        for note in &decision.notes {
            revisit = true;
            let kind = match note {
                Note::Blocked { node, why } => EventKind::Blocked {
                    node: node.clone(),
                    why: why.clone(),
                },
                Note::Kept { nodes, why } => EventKind::Kept {
                    nodes: nodes.clone(),
                    why: why.clone(),
                },
                Note::Overruled { nodes, why } => EventKind::Overruled {
                    nodes: nodes.clone(),
                    why: why.clone(),
                },
                Note::PolicyFailed { policy, error } => EventKind::PolicyFailed {
                    policy: policy.clone(),
                    error: error.clone(),
                },
            };
            // Repeats of the same note every pass say nothing new.
            if !self
                .report
                .events
                .iter()
                .rev()
                .take(200)
                .any(|e| e.kind == kind)
            {
                self.event(kind);
            }
        }
        for c in decision.commands {
            self.execute(c);
        }
        // Time alone can make more nodes candidates: consolidateAfter and expireAfter passing,
        // and the policy or a budget schedule changing its mind.
        let mut next = if revisit { Some(self.t + 300) } else { None };
        for n in self.cluster.nodes.values() {
            let Some(i) = self.cluster.pool_index(&n.instance.node_pool) else {
                continue;
            };
            let spec = &self.cluster.pools[i].resource.spec;
            let after = |d: &str| {
                duration::parse(d)
                    .ok()
                    .flatten()
                    .map(|d| d.as_secs() as i64)
            };
            let mut times = Vec::new();
            if let Some(ca) = after(&spec.disruption.consolidate_after) {
                times.push(n.last_pod_change - self.opts.start + ca);
            }
            if let Some(ea) = after(&spec.template.spec.expire_after) {
                times.push(n.launched_at - self.opts.start + ea);
            }
            for t in times.into_iter().filter(|&t| t > self.t) {
                let aligned = (t + interval - 1) / interval * interval;
                next = Some(next.map_or(aligned, |x: i64| x.min(aligned)));
            }
        }
        if let Some(n) = next {
            self.next_disruption = Some(self.next_disruption.map_or(n, |x| x.min(n)));
        }
    }

    fn execute(&mut self, c: disruption::Command) {
        let t = self.now();
        let mut replacement = None;
        if let Some(offer) = &c.replacement {
            self.next_claim += 1;
            let claim = format!("{}-{:05}", c.node_pool, self.next_claim);
            let request = LaunchRequest {
                claim,
                node_pool: c.node_pool.clone(),
                offers: vec![offer.clone()],
            };
            match self.cloud.create(&request) {
                Ok(instance) => {
                    let Some(pool) = self
                        .cluster
                        .pool_index(&c.node_pool)
                        .map(|i| self.cluster.pools[i].clone())
                    else {
                        return;
                    };
                    replacement = Some(self.add_node(instance, &pool, 0, &c.policy, true));
                }
                Err(e) => {
                    self.event(EventKind::NotLaunched {
                        claim: request.claim,
                        reason: format!("replacement for {:?}: {e}", c.nodes),
                    });
                    return;
                }
            }
        }
        for name in &c.nodes {
            if let Some(n) = self.cluster.nodes.get_mut(name) {
                n.taints.push(disrupted_taint());
                n.deletion = Some(Deletion {
                    reason: Some(c.reason),
                    since: t,
                    replacement: replacement.clone(),
                });
            }
        }
        *self
            .report
            .disruptions
            .entry(reason_label(c.reason).to_string())
            .or_default() += c.nodes.len() as u32;
        self.event(EventKind::Disrupting {
            nodes: c.nodes.clone(),
            reason: reason_label(c.reason),
            replacement,
            savings_per_hour: c.savings_per_hour,
            policy: c.policy.clone(),
        });
    }

    fn terminate(&mut self) {
        let now = self.now();
        let step = crate::termination::step(&mut self.cluster, self.cloud.as_mut(), now);
        for (pod, node) in step.evicted {
            self.report.evictions += 1;
            self.event(EventKind::Evicted {
                pod: pod.spec.name.clone(),
                node,
            });
            // Its controller recreates it.
            if let Some(owner) = pod.owner {
                self.reconcile(&owner);
            }
        }
        for node in step.terminated {
            self.ready_due.remove(&node.name);
            self.event(EventKind::Terminated {
                node: node.name.clone(),
                lived_seconds: now - node.launched_at,
            });
            self.kick();
            self.dirty();
        }
        for e in step.errors {
            self.event(EventKind::NotLaunched {
                claim: String::new(),
                reason: format!("terminate: {e}"),
            });
        }
    }
}

fn reason_label(r: DisruptionReason) -> &'static str {
    match r {
        DisruptionReason::Empty => "empty",
        DisruptionReason::Underutilized => "underutilized",
        DisruptionReason::Drifted => "drifted",
        DisruptionReason::Expired => "expired",
    }
}

/// A policy/v1 PodDisruptionBudget.
fn pdb(file: &str, document: serde_json::Value) -> Result<Pdb, SimError> {
    let b: k8s_openapi::api::policy::v1::PodDisruptionBudget = serde_json::from_value(document)
        .map_err(|e| SimError::Input(format!("{file}: PodDisruptionBudget: {e}")))?;
    let name = b.metadata.name.clone().unwrap_or_default();
    let spec = b.spec.unwrap_or_default();
    let value = |v: Option<k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
                 field: &str|
     -> Result<Option<IntOrPercent>, SimError> {
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        match v {
            None => Ok(None),
            Some(IntOrString::Int(n)) => Ok(Some(IntOrPercent::Count(n.max(0) as u32))),
            Some(IntOrString::String(s)) => IntOrPercent::parse(&s).map(Some).map_err(|e| {
                SimError::Input(format!(
                    "{file}: PodDisruptionBudget {name}: spec.{field}: {e}"
                ))
            }),
        }
    };
    let selector = spec.selector.unwrap_or_default();
    Ok(Pdb {
        namespace: b.metadata.namespace.clone().unwrap_or("default".into()),
        selector: crate::scheduling::from_kube::selector_of(&selector),
        min_available: value(spec.min_available, "minAvailable")?,
        max_unavailable: value(spec.max_unavailable, "maxUnavailable")?,
        name,
    })
}

/// Loads a Policy manifest into the registry (built-in sources; the simulator has no cluster to
/// read ConfigMaps from and fetches nothing).
fn apply_policy(
    registry: &PolicyRegistry,
    file: &str,
    p: &crate::api::Policy,
) -> Result<(), SimError> {
    let name = p.metadata.name.clone().unwrap_or_default();
    let Some(builtin) = &p.spec.source.builtin else {
        return Err(SimError::Input(format!(
            "{file}: Policy {name}: the simulator runs built-in sources only (spec.source.builtin)"
        )));
    };
    let b = crate::policy::builtin::find(builtin).ok_or_else(|| {
        SimError::Input(format!(
            "{file}: Policy {name}: spec.source.builtin: no built-in {builtin:?} (built-ins: {})",
            crate::policy::builtin::names().join(", ")
        ))
    })?;
    let config = p
        .spec
        .config
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let limits = crate::policy::Limits {
        timeout: p
            .spec
            .limits
            .as_ref()
            .and_then(|l| l.timeout_millis)
            .map(|ms| Duration::from_millis(ms.into())),
        memory_mib: p
            .spec
            .limits
            .as_ref()
            .and_then(|l| l.memory_mib)
            .map(u64::from),
    };
    registry.apply(&name, b.wasm, config, limits)?;
    Ok(())
}

/// The interruption queue with the runtime that drives it (the simulator is synchronous).
struct QueueClient {
    rt: tokio::runtime::Runtime,
    sqs: aws_sdk_sqs::Client,
    url: String,
    queue: crate::interruption::Queue,
}

impl QueueClient {
    fn new(settings: &crate::cloud::aws::AwsSettings, url: &str) -> Result<Self, SimError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SimError::Input(format!("runtime: {e}")))?;
        let config = rt.block_on(settings.sdk_config());
        let sqs = aws_sdk_sqs::Client::new(&config);
        let mut queue = crate::interruption::Queue::new(sqs.clone(), url);
        // The virtual clock does not wait: take what is there.
        queue.wait = Duration::ZERO;
        Ok(QueueClient {
            rt,
            sqs,
            url: url.into(),
            queue,
        })
    }

    fn poll(
        &mut self,
    ) -> Result<Vec<crate::interruption::Received>, crate::interruption::QueueError> {
        self.rt.block_on(self.queue.poll())
    }

    fn done(
        &mut self,
        r: &crate::interruption::Received,
        action: crate::interruption::Action,
    ) -> Result<(), crate::interruption::QueueError> {
        self.rt.block_on(self.queue.done(r, action))
    }

    /// Sends the EventBridge message EC2 would for `instance`.
    fn send(&mut self, kind: &crate::interruption::Kind, instance: &str) -> Result<(), String> {
        let body = crate::interruption::example_message(kind, instance);
        self.rt
            .block_on(
                self.sqs
                    .send_message()
                    .queue_url(&self.url)
                    .message_body(body)
                    .send(),
            )
            .map(|_| ())
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(&e).to_string())
    }
}
