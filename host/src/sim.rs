//! The simulator: the real provisioning, disruption and termination code over an in-memory
//! cluster and EC2, on a virtual clock. `dovetail simulate -f nodepool.yaml -f deploy.yaml` runs
//! the manifests a user has; a `Scenario` document adds a timeline.
//!
//! The clock jumps from one thing that can happen to the next (a step, a batch window closing,
//! a node becoming Ready, a drain retry, a disruption pass), so 24 virtual hours of a steady
//! cluster take milliseconds.

pub mod decisions;
pub mod html;
mod pdb;
pub mod report;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

pub use report::{Difference, DisruptionRound, Event, EventKind, Report};

use crate::api::duration;
use crate::api::manifest::{self, Manifest, ManifestError};
use crate::api::scenario::{Scenario, Step};
use crate::catalog;
use crate::cloud::CloudProvider;
use crate::cloud::sim::SimCloud;
use crate::cluster::{Cluster, DO_NOT_DISRUPT, Deletion, Node, Pdb, Pod, disrupted_taint};
use crate::controller::{
    ClusterPort, Context, Controller, Interruptions, NewClaim, PortError, Signal,
};
use crate::fleet::{BoundCache, FleetView};
use crate::policy::{EngineConfig, PolicyEngine, PolicyError, PolicyRegistry};
use crate::provisioning::Pool;
use crate::scheduling::from_kube::{ConvertError, deployment_pods, node_pool, pending_pod};
use crate::scheduling::model::{add, capacity_type, zero};
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
    /// With `aws`: where the scenario's EventBridge sends its messages, when not where the
    /// controller calls (EventBridge sends as a service, under the queue's own policy, not the
    /// controller's role).
    pub events_endpoint: Option<String>,
    /// The controller stops right after its n-th effect on the world (counted over the run,
    /// from 1) and a new one starts from the world alone, as a restarted process would from
    /// the API server and the cloud: crash recovery under test.
    pub crash_after: Vec<u32>,
    /// Launches (counted over the run, from 1) whose instance boots but never registers a Node
    /// (a node role the cluster refuses): liveness under test.
    pub never_join: Vec<u32>,
    /// Record the fleet after every step ([`Report::timeline`]): for the HTML report and
    /// `dovetail top`'s replay, off otherwise (it solves an LP whenever what runs changes).
    pub timeline: bool,
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
            events_endpoint: None,
            crash_after: Vec::new(),
            never_join: Vec::new(),
            timeline: false,
        }
    }
}

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
    /// What a run's watcher refused ([`simulate_watched`]).
    #[error("at {}: {what}", report::clock(*at))]
    Violated { at: i64, what: String },
}

/// What a watcher of a run sees after every step: the world as it is, what the cloud runs,
/// and every event so far. Property tests check their invariants on it.
pub struct Moment<'a> {
    /// Seconds since the start.
    pub t: i64,
    /// Unix seconds.
    pub now: i64,
    pub cluster: &'a Cluster,
    pub its: &'a InstanceTypes,
    /// The cloud's instances (the in-memory cloud's; empty against AWS).
    pub instances: Vec<crate::cloud::Instance>,
    pub events: &'a [Event],
    /// Facts of each eviction, at the moment it was asked for.
    pub evictions: &'a [EvictionFact],
    /// Evictions the Eviction API refused: (t, pod, its answer). The controller reads the same
    /// budget status the API decides from, so it should never ask for one.
    pub refused_evictions: &'a [(i64, String, String)],
    pub restarts: u32,
}

/// An eviction the world carried out, as it saw it when asked: the pod's node and that node's
/// deletion, and for each PodDisruptionBudget selecting the pod what the cluster held just
/// before — raw observations, from which a watcher judges the budget itself.
#[derive(Debug, Clone)]
pub struct EvictionFact {
    pub t: i64,
    pub pod: String,
    pub node: String,
    /// The node's NodePool.
    pub node_pool: Option<String>,
    pub deletion: Option<crate::cluster::Deletion>,
    /// Per PDB that selects the pod.
    pub pdbs: Vec<BudgetFact>,
    /// The pod was Ready (a PDB's healthy pod).
    pub ready: bool,
    /// The pod, or its node, says `karpenter.sh/do-not-disrupt`.
    pub do_not_disrupt: bool,
    pub node_do_not_disrupt: bool,
    /// Deleted directly (the grace period forced it out) rather than evicted.
    pub direct: bool,
    /// The pod's own `terminationGracePeriodSeconds`.
    pub grace_seconds: i64,
}

/// What the cluster held for one PodDisruptionBudget just before an eviction.
#[derive(Debug, Clone)]
pub struct BudgetFact {
    /// `namespace/name`.
    pub pdb: String,
    /// Selected pods that are Ready and not being deleted.
    pub healthy: u32,
    /// Selected pods, those being deleted included.
    pub selected: u32,
    /// The summed replicas of the selected pods' workloads (each counted once).
    pub scale: u32,
}

/// How long an instance no claim owns may run before it is terminated (the controller's
/// `--orphan-grace-period` default).
pub const ORPHAN_GRACE: Duration = crate::controller::ORPHAN_GRACE;

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
    run_files(files, opts, None)
}

/// [`simulate`], with `watch` shown the world after every step (every controller tick and
/// every Scenario step); the run stops with [`SimError::Violated`] at the first refusal.
pub fn simulate_watched(
    files: &[(String, String)],
    opts: &SimOptions,
    watch: &mut dyn FnMut(&Moment<'_>) -> Result<(), String>,
) -> Result<Report, SimError> {
    run_files(files, opts, Some(watch))
}

/// A watcher of a run, when there is one: without, no [`Moment`] is built.
type Watch<'w> = Option<&'w mut dyn FnMut(&Moment<'_>) -> Result<(), String>>;

fn run_files(
    files: &[(String, String)],
    opts: &SimOptions,
    watch: Watch<'_>,
) -> Result<Report, SimError> {
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
    let settings = crate::controller::Settings {
        batch_idle: opts.batch_idle,
        batch_max: opts.batch_max,
        disruption_interval: opts.disruption_interval,
        ..Default::default()
    };
    let ctx = Context::new(its, cat, std::sync::Arc::new(registry));
    let mut sim = Sim {
        controller: Controller::new(settings, ctx, opts.start),
        world: World {
            opts: opts.clone(),
            t: 0,
            cluster: Cluster::default(),
            workloads: BTreeMap::new(),
            daemonsets: BTreeMap::new(),
            ready_due: BTreeMap::new(),
            report: Report::default(),
            signals: Vec::new(),
            effects: 0,
            crash_after: opts.crash_after.iter().copied().collect(),
            crashed: false,
            evictions: Vec::new(),
            refused: Vec::new(),
            stopping: BTreeMap::new(),
            stop_seconds: BTreeMap::new(),
        },
        cloud,
        queue: match (&opts.aws, &opts.interruption_queue) {
            (Some(settings), Some(url)) => Some(QueueClient::new(
                settings,
                url,
                opts.events_endpoint.as_deref(),
            )?),
            (None, Some(_)) => {
                return Err(SimError::Input(
                    "an interruption queue needs the aws cloud".into(),
                ));
            }
            _ => None,
        },
        bounds: BoundCache::default(),
    };
    for (file, m) in docs {
        sim.apply(&file, m)?;
    }
    if sim.world.cluster.pools.is_empty()
        && !steps
            .iter()
            .any(|(_, _, _, a)| a.iter().any(|m| matches!(m, Manifest::NodePool(_))))
    {
        return Err(SimError::Input("no NodePool in the given manifests".into()));
    }
    sim.run(steps, watch)?;
    Ok(sim.world.report)
}

/// The simulator: the controller core acting on the in-memory world, with the cloud it
/// launches in and the interruption queue it polls.
struct Sim {
    controller: Controller,
    world: World,
    cloud: Box<dyn CloudProvider>,
    queue: Option<QueueClient>,
    /// LP bounds solved for the fleet views so far.
    bounds: BoundCache,
}

/// The in-memory world the controller acts on: the cluster, and what kubelet, kube-scheduler
/// and the ReplicaSet controller would do in it. It decides nothing an autoscaler decides.
struct World {
    opts: SimOptions,
    /// Seconds since the start.
    t: i64,
    cluster: Cluster,
    workloads: BTreeMap<String, Workload>,
    /// DaemonSets by `namespace/name`: their pod requests are on every node.
    daemonsets: BTreeMap<String, crate::wit::types::Resources>,
    /// In-flight nodes and when they become Ready (kubelet).
    ready_due: BTreeMap<String, i64>,
    report: Report,
    /// What happened since the controller last asked.
    signals: Vec<Signal>,
    /// Effects the controller has had on the world so far, and the counts it stops after.
    effects: u32,
    crash_after: BTreeSet<u32>,
    /// Stopped: every further effect of this tick is refused, then a new controller starts.
    crashed: bool,
    evictions: Vec<EvictionFact>,
    /// Evictions the Eviction API refused: (t, pod, its answer).
    refused: Vec<(i64, String, String)>,
    /// Pods asked to go, still stopping on their node (kubelet), by name.
    stopping: BTreeMap<String, Stopping>,
    /// How long a pod takes to stop once asked (its preStop sleep), by workload or bare pod.
    stop_seconds: BTreeMap<String, i64>,
}

/// A pod with a deletionTimestamp: it leaves its node at `gone_at`.
#[derive(Debug, Clone)]
struct Stopping {
    pod: Pod,
    node: String,
    gone_at: i64,
}

impl World {
    fn now(&self) -> i64 {
        self.opts.start + self.t
    }

    /// Every pool's DaemonSet overhead, after a DaemonSet came or went.
    fn daemonset_overhead_changed(&mut self) {
        let overhead = self.daemonsets.values().fold(zero(), |a, r| add(&a, r));
        for p in &mut self.cluster.pools {
            p.spec.daemonset_overhead = overhead;
        }
    }

    fn event(&mut self, kind: EventKind) {
        kind.log();
        self.report.events.push(Event { at: self.t, kind });
    }

    /// Something changed that disruption should look at.
    fn dirty(&mut self) {
        self.signals.push(Signal::Changed(self.now()));
    }

    /// Pending pods get another provisioning batch.
    fn kick(&mut self) {
        self.signals.push(Signal::Kick(self.now()));
    }

    /// Nodes whose kubelet reports Ready now.
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
            // kubelet registers the Node and reports it Ready at once; the Node is named as
            // its claim is (the simulator keeps one name for both).
            node.lifecycle.joined = Some(crate::cluster::Joined {
                node: name.clone(),
                ready: true,
                startup_taints_left: false,
                deleting: false,
            });
            for p in self.cluster.pods.values_mut() {
                if p.node.as_deref() == Some(name.as_str()) && p.running_since.is_none() {
                    p.running_since = Some(t);
                    p.ready = true;
                    self.report.pending_seconds.push((t - p.created_at) as f64);
                }
            }
            self.event(EventKind::Ready { node: name });
            self.dirty();
        }
    }

    /// Pods on a node that is gone are gone too; their controllers recreate them.
    fn drop_pods_of(&mut self, node: &str) {
        let pods: Vec<Pod> = self
            .cluster
            .pods
            .values()
            .filter(|p| p.node.as_deref() == Some(node))
            .cloned()
            .collect();
        for p in pods {
            self.cluster.pods.remove(&p.spec.name);
            if let Some(owner) = p.owner {
                self.reconcile(&owner);
            }
        }
    }
}

impl ClusterPort for World {
    fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// A NodeClaim object exists from here until its node does (what a restart resumes).
    fn create_claims(&mut self, claims: &[NewClaim]) -> Vec<Result<(), PortError>> {
        claims
            .iter()
            .map(|c| {
                self.effect()?;
                self.cluster
                    .unlaunched
                    .push(crate::cluster::UnlaunchedClaim {
                        name: c.name.clone(),
                        node_pool: c.node_pool.clone(),
                        offers: c.offers.clone(),
                    });
                Ok(())
            })
            .collect()
    }

    fn launched(&mut self, claim: &NewClaim, node: Node) -> Result<(), PortError> {
        self.effect()?;
        self.cluster.unlaunched.retain(|u| u.name != claim.name);
        let name = node.name.clone();
        self.cluster.nodes.insert(name.clone(), node);
        self.report.launched += 1;
        // An instance told never to join boots, but its kubelet never registers.
        if !self.opts.never_join.contains(&self.report.launched) {
            self.ready_due
                .insert(name, self.t + self.opts.launch_delay.as_secs() as i64);
        }
        Ok(())
    }

    fn abandon_claim(&mut self, claim: &str, _reason: &str) {
        if self.effect().is_ok() {
            self.cluster.unlaunched.retain(|u| u.name != claim);
        }
    }

    /// kube-scheduler binds the pod once the node exists; it runs once the node is Ready.
    fn nominate(&mut self, pod: &str, node: &str) {
        if self.effect().is_err() {
            return;
        }
        let t = self.now();
        let ready = self
            .cluster
            .nodes
            .get(node)
            .and_then(|n| n.ready_at)
            .is_some();
        if let Some(n) = self.cluster.nodes.get_mut(node) {
            n.last_pod_change = t;
        }
        let Some(p) = self.cluster.pods.get_mut(pod) else {
            return;
        };
        p.node = Some(node.to_string());
        if !p.spec.volume_claims.is_empty() {
            // The CSI provisioner makes a waiting claim's volume in the zone its pod landed in.
            let zone = self.cluster.nodes.get(node).and_then(|n| {
                n.labels
                    .iter()
                    .find(|(k, _)| k == crate::scheduling::model::labels::ZONE)
                    .map(|(_, v)| v.clone())
            });
            let claims = p.spec.volume_claims.clone();
            if let Some(zone) = zone
                && self.cluster.volumes.provision(&claims, &zone)
            {
                self.resolve_volumes();
            }
        }
        let Some(p) = self.cluster.pods.get_mut(pod) else {
            return;
        };
        if ready {
            p.running_since = Some(t);
            p.ready = true;
            self.report.pending_seconds.push((t - p.created_at) as f64);
        }
    }

    fn mark_deleting(&mut self, node: &str, deletion: Deletion) -> Result<(), PortError> {
        self.effect()?;
        let n = self
            .cluster
            .nodes
            .get_mut(node)
            .ok_or_else(|| PortError::Failed(format!("no node {node}")))?;
        n.taints.push(disrupted_taint());
        n.deletion = Some(deletion);
        Ok(())
    }

    /// A direct deletion: no budget is consulted; the pod stops within `grace_seconds`.
    fn delete_pod(&mut self, pod: &str, node: &str, grace_seconds: i64) -> Result<(), PortError> {
        self.effect()?;
        let mut fact = self.eviction_fact(pod, node)?;
        fact.direct = true;
        self.evictions.push(fact);
        self.ask_to_stop(pod, node, Some(grace_seconds));
        Ok(())
    }

    /// The Eviction API (see `sim/pdb.rs`): the pod stops within its own grace, or the call is
    /// refused as the API server refuses it.
    fn evict(&mut self, pod: &str, node: &str) -> Result<(), PortError> {
        self.effect()?;
        let p = self
            .cluster
            .pods
            .get(pod)
            .ok_or_else(|| PortError::Failed(format!("no pod {pod}")))?;
        let answer = pdb::evict(
            &self.cluster.pdbs,
            pod,
            &p.spec.labels,
            p.running_since.is_some(),
            p.ready,
        );
        match answer {
            pdb::Answer::Delete(spent) => {
                let fact = self.eviction_fact(pod, node)?;
                self.evictions.push(fact);
                if let Some(s) = spent.and_then(|i| self.cluster.pdbs[i].status.as_mut()) {
                    s.disruptions_allowed -= 1;
                }
                self.ask_to_stop(pod, node, None);
                Ok(())
            }
            pdb::Answer::TooManyRequests(m) => {
                self.refused.push((self.t, pod.to_string(), m.clone()));
                Err(PortError::Refused(m))
            }
            pdb::Answer::InternalError(m) => {
                self.refused.push((self.t, pod.to_string(), m.clone()));
                Err(PortError::Failed(m))
            }
        }
    }

    fn remove_node(&mut self, node: &str) -> Result<(), PortError> {
        self.effect()?;
        self.cluster.nodes.remove(node);
        self.ready_due.remove(node);
        self.stopping.retain(|_, s| s.node != node);
        self.drop_pods_of(node);
        self.update_pdb_status();
        Ok(())
    }

    fn register(&mut self, claim: &str, _node: &str) -> Result<(), PortError> {
        self.effect()?;
        if let Some(n) = self.cluster.nodes.get_mut(claim) {
            n.lifecycle.registered = true;
        }
        Ok(())
    }

    fn initialized(&mut self, claim: &str) -> Result<(), PortError> {
        self.effect()?;
        if let Some(n) = self.cluster.nodes.get_mut(claim) {
            n.lifecycle.initialized = true;
        }
        Ok(())
    }

    fn record(&mut self, kind: EventKind) {
        if let EventKind::Disrupting { nodes, reason, .. } = &kind {
            *self
                .report
                .disruptions
                .entry(reason.to_string())
                .or_default() += nodes.len() as u32;
        }
        self.report.events.push(Event { at: self.t, kind });
    }

    fn disruption_round(&mut self, mut round: DisruptionRound) {
        round.at -= self.opts.start;
        self.report.disruption_rounds.push(round);
    }

    fn take_signals(&mut self) -> Vec<Signal> {
        std::mem::take(&mut self.signals)
    }
}

impl Sim {
    fn now(&self) -> i64 {
        self.world.now()
    }

    /// Shows `watch` the world now.
    fn watch(&self, watch: &mut Watch<'_>) -> Result<(), SimError> {
        let Some(watch) = watch else {
            return Ok(());
        };
        let moment = Moment {
            t: self.world.t,
            now: self.now(),
            cluster: &self.world.cluster,
            its: &self.controller.ctx.its,
            instances: self.cloud.running().unwrap_or_default(),
            events: &self.world.report.events,
            evictions: &self.world.evictions,
            refused_evictions: &self.world.refused,
            restarts: self.world.report.restarts,
        };
        watch(&moment).map_err(|what| SimError::Violated {
            at: self.world.t,
            what,
        })
    }

    /// The controller stopped: a new one starts with nothing but what the world and the cloud
    /// hold (as a restarted process has the API server and the account), its names continuing
    /// past every claim that exists.
    fn restart(&mut self) {
        let now = self.now();
        let settings = self.controller.settings.clone();
        let ctx = self.controller.ctx.clone();
        self.controller = Controller::new(settings, ctx, now);
        let instances = self.cloud.running().unwrap_or_default();
        let w = &self.world.cluster;
        self.controller.continue_names_past(
            w.nodes
                .keys()
                .map(String::as_str)
                .chain(w.unlaunched.iter().map(|u| u.name.as_str()))
                .chain(instances.iter().map(|i| i.claim.as_str())),
        );
        self.world.crashed = false;
        self.world.report.restarts += 1;
        self.world.kick();
        self.world.dirty();
    }

    fn run(
        &mut self,
        steps: Vec<(i64, usize, Step, Vec<Manifest>)>,
        mut watch: Watch<'_>,
    ) -> Result<(), SimError> {
        let end = self.world.opts.duration.as_secs() as i64;
        let start = self.world.opts.start;
        let mut steps = steps.into_iter().peekable();
        loop {
            let span = tracing::info_span!("sim", t = %report::clock(self.world.t));
            let _entered = span.enter();
            while let Some((at, ..)) = steps.peek()
                && *at <= self.world.t
            {
                let (_, i, step, applied) = steps.next().expect("peeked");
                self.step(i, &step, applied)?;
                self.watch(&mut watch)?;
            }
            self.world.become_ready();
            self.world.stop_pods();
            self.world.update_pdb_status();
            let now = self.now();
            let queue = self
                .queue
                .as_mut()
                .map(|q| &mut q.queue as &mut dyn Interruptions);
            self.controller
                .tick(now, &mut self.world, self.cloud.as_mut(), queue);
            if let Some(q) = &self.queue {
                self.world.report.interruption = q.queue.queue.metrics.clone();
            }
            self.world.observe();
            if self.world.opts.timeline {
                let mut fleet = FleetView::of(
                    &self.world.cluster,
                    &self.controller.ctx.its,
                    now,
                    &mut self.bounds,
                );
                fleet.shadows = shadow_lines(&self.controller.ctx.registry);
                let frame = self.world.frame(fleet);
                self.world.record_frame(frame, false);
            }
            self.watch(&mut watch)?;
            if self.world.crashed {
                self.restart();
                continue;
            }
            let t = self.world.t;
            let mut next = i64::MAX;
            if let Some((at, ..)) = steps.peek() {
                next = next.min(*at);
            }
            if let Some(&due) = self.world.ready_due.values().min() {
                next = next.min(due);
            }
            if let Some(gone) = self.world.stopping.values().map(|s| s.gone_at).min() {
                next = next.min(gone);
            }
            if let Some(wake) = self.controller.next_wake(&self.world.cluster, now) {
                next = next.min(wake - start);
            }
            let next = next.max(t + 1);
            let until = next.min(end);
            let price: f64 = self
                .world
                .cluster
                .nodes
                .values()
                .map(|n| n.instance.offer.price)
                .sum();
            self.world.report.cost_usd += price * (until - t).max(0) as f64 / 3600.0;
            if next > end {
                self.world.t = end;
                break;
            }
            self.world.t = next;
        }
        let w = &mut self.world;
        w.report.duration_secs = end;
        w.report.nodes = w.cluster.nodes.values().cloned().collect();
        w.report.pods = w.cluster.pods.values().cloned().collect();
        w.report.end = FleetView::of(
            &w.cluster,
            &self.controller.ctx.its,
            w.now(),
            &mut self.bounds,
        );
        if w.opts.timeline {
            let frame = w.frame(w.report.end.clone());
            w.record_frame(frame, true);
        }
        w.report.still_pending = w
            .cluster
            .pods
            .values()
            .filter(|p| p.node.is_none())
            .map(|p| {
                let reason = self
                    .controller
                    .unschedulable_reason(&p.spec.name)
                    .unwrap_or("waiting for a provisioning batch")
                    .to_string();
                (p.spec.name.clone(), reason)
            })
            .collect();
        w.report.policy_failures = self.controller.ctx.registry.failures();
        w.report.shadows = self.controller.ctx.registry.shadows();
        // Like the events', the report's times count from the start.
        for c in w
            .report
            .shadows
            .values_mut()
            .flat_map(|t| t.recent.iter_mut())
        {
            c.at -= w.opts.start;
        }
        Ok(())
    }
}

impl World {
    /// The fleet now, with the run's counters so far.
    fn frame(&self, fleet: FleetView) -> report::Frame {
        report::Frame {
            at: self.t,
            fleet,
            disruptions: self.report.disruptions.clone(),
            evictions: self.report.evictions,
        }
    }

    /// Adds a frame to the timeline when something changed since the last one (not only the
    /// clock), or when `last`: a frame at the same time as the last replaces it.
    fn record_frame(&mut self, frame: report::Frame, last: bool) {
        let timeline = &mut self.report.timeline;
        if let Some(prev) = timeline.last() {
            let same = prev.disruptions == frame.disruptions
                && prev.evictions == frame.evictions
                && prev.fleet.later(frame.at - prev.at) == frame.fleet;
            if same && !last {
                return;
            }
            if prev.at == frame.at {
                timeline.pop();
            }
        }
        timeline.push(frame);
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
}

impl Sim {
    // ---- objects ----

    fn apply(&mut self, file: &str, m: Manifest) -> Result<(), SimError> {
        match m {
            Manifest::NodePool(np) => {
                let mut np = *np;
                if let Some(s) = &self.world.opts.scoring {
                    np.spec.policies.scoring = s.clone();
                }
                if let Some(c) = &self.world.opts.consolidation {
                    np.spec.policies.consolidation = c.clone();
                }
                let overhead = self
                    .world
                    .daemonsets
                    .values()
                    .fold(zero(), |a, r| add(&a, r));
                let spec = node_pool(&np, overhead, zero())?;
                // Compile the pool's policies now rather than inside its first decision (an
                // unknown name is reported when it is used, with the fallback's decision).
                let shadows = np.spec.policies.shadow.iter().flat_map(|s| {
                    [s.scoring.as_ref(), s.consolidation.as_ref()]
                        .into_iter()
                        .flatten()
                });
                for name in [&np.spec.policies.scoring, &np.spec.policies.consolidation]
                    .into_iter()
                    .chain(shadows)
                {
                    let _ = self.controller.ctx.registry.get(name);
                }
                let pool = Pool { resource: np, spec };
                match self.world.cluster.pool_index(&pool.spec.name) {
                    Some(i) => self.world.cluster.pools[i] = pool,
                    None => self.world.cluster.pools.push(pool),
                }
                self.world.cluster.apply_node_classes();
                self.world.kick();
                self.world.dirty();
            }
            Manifest::Policy(p) => {
                apply_policy(&self.controller.ctx.registry, file, &p)?;
                self.world.kick();
                self.world.dirty();
            }
            Manifest::EC2NodeClass(c) => {
                let name = c.metadata.name.clone().unwrap_or_default();
                crate::scheduling::from_kube::node_settings(&name, &c.spec)?;
                if let Err(e) = self.cloud.node_class(&name, &c.spec) {
                    self.world.event(EventKind::NodeClassNotReady {
                        node_class: name.clone(),
                        reason: e.to_string(),
                    });
                }
                let spec = serde_json::to_string(&c.spec).expect("a spec serializes");
                self.world.cluster.node_classes.insert(name, spec);
                self.world.cluster.apply_node_classes();
                self.world.dirty();
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
                    let next = self.world.workloads.get(&key).map_or(0, |w| w.next);
                    let stop = d.spec.template.spec.as_ref().map_or(0, pre_stop_seconds);
                    self.world.stop_seconds.insert(key.clone(), stop);
                    self.world.workloads.insert(
                        key.clone(),
                        Workload {
                            template,
                            replicas: replicas as u32,
                            next,
                            do_not_disrupt,
                        },
                    );
                    self.world.reconcile(&key);
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
                    self.world
                        .stop_seconds
                        .insert(id.clone(), pre_stop_seconds(spec));
                    self.world.create_pod(pod, None, dnd);
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
                    self.world.daemonsets.insert(key, pod.requests);
                    self.world.daemonset_overhead_changed();
                }
                "PodDisruptionBudget" => {
                    let pdb = pdb(file, document)?;
                    self.world.cluster.pdbs.retain(|p| {
                        (p.namespace.as_str(), p.name.as_str())
                            != (pdb.namespace.as_str(), pdb.name.as_str())
                    });
                    self.world.cluster.pdbs.push(pdb);
                    self.world.dirty();
                }
                "PersistentVolume" | "PersistentVolumeClaim" | "StorageClass" => {
                    let bad =
                        |e: serde_json::Error| SimError::Input(format!("{file}: {kind}: {e}"));
                    let v = &mut self.world.cluster.volumes;
                    match kind.as_str() {
                        "PersistentVolume" => {
                            v.apply_volume(&serde_json::from_value(document).map_err(bad)?)
                        }
                        "PersistentVolumeClaim" => {
                            v.apply_claim(&serde_json::from_value(document).map_err(bad)?)
                        }
                        _ => v.apply_class(&serde_json::from_value(document).map_err(bad)?),
                    }
                    self.world.resolve_volumes();
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
            let w =
                self.world.workloads.get_mut(&key).ok_or_else(|| {
                    SimError::Input(format!("{label}: scale: no Deployment {key}"))
                })?;
            w.replicas = s.replicas;
            self.world.event(EventKind::Scaled {
                deployment: key.clone(),
                replicas: s.replicas,
            });
            self.world.reconcile(&key);
        }
        for m in applied {
            self.apply(&label, m)?;
        }
        if let Some(d) = &step.delete {
            let key = format!("{}/{}", d.namespace, d.name);
            match d.kind.as_str() {
                "Deployment" => {
                    if self
                        .world
                        .workloads
                        .get_mut(&key)
                        .map(|w| w.replicas = 0)
                        .is_none()
                    {
                        return Err(SimError::Input(format!(
                            "{label}: delete: no Deployment {key}"
                        )));
                    }
                    self.world.reconcile(&key);
                    self.world.workloads.remove(&key);
                }
                "Pod" => {
                    if let Some(owner) = self.world.cluster.pods.get(&key).map(|p| p.owner.clone())
                    {
                        self.world.delete_pod(&key);
                        // Its ReplicaSet makes a new one, as in a cluster.
                        if let Some(owner) = owner {
                            self.world.reconcile(&owner);
                        }
                    }
                }
                "Node" => {
                    let t = self.now();
                    let n = self.world.cluster.nodes.get_mut(&d.name).ok_or_else(|| {
                        SimError::Input(format!("{label}: delete: no Node {}", d.name))
                    })?;
                    if n.deletion.is_none() {
                        n.taints.push(disrupted_taint());
                        n.deletion = Some(Deletion {
                            reason: None,
                            since: t,
                            replacement: None,
                            policy: None,
                        });
                    }
                    self.world.event(EventKind::Deleting {
                        node: d.name.clone(),
                    });
                }
                "NodePool" => {
                    let t = self.now();
                    self.world.cluster.pools.retain(|p| p.spec.name != d.name);
                    for n in self.world.cluster.nodes.values_mut() {
                        if n.instance.node_pool == d.name && n.deletion.is_none() {
                            n.taints.push(disrupted_taint());
                            n.deletion = Some(Deletion {
                                reason: None,
                                since: t,
                                replacement: None,
                                policy: None,
                            });
                        }
                    }
                }
                "PodDisruptionBudget" => {
                    self.world
                        .cluster
                        .pdbs
                        .retain(|p| p.namespace != d.namespace || p.name != d.name);
                    self.world.dirty();
                }
                // Its pods leave every node: the pools' overhead shrinks.
                "DaemonSet" => {
                    self.world.daemonsets.remove(&key);
                    self.world.daemonset_overhead_changed();
                    self.world.dirty();
                }
                // The instance behind a node, terminated outside the controller.
                "Instance" => {
                    let id = self
                        .world
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
                        "{label}: delete: kind {other:?} (Deployment, Pod, Node, NodePool, PodDisruptionBudget, DaemonSet, Instance)"
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
            let Some(node) = self.world.cluster.nodes.get(&x.node) else {
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
                None => {
                    let now = self.now();
                    self.controller.interrupt(
                        now,
                        &x.node,
                        &kind,
                        &mut self.world,
                        self.cloud.as_mut(),
                    );
                }
            }
        }
        if let Some(x) = &step.exhaust {
            let capacity = capacity_type(&x.capacity_type).ok_or_else(|| {
                SimError::Input(format!(
                    "{label}: exhaust.capacityType {:?} (spot, on-demand, reserved)",
                    x.capacity_type
                ))
            })?;
            self.cloud
                .exhaust(&x.instance_type, &x.zone, capacity)
                .map_err(|e| SimError::Input(format!("{label}: exhaust: {e}")))?;
        }
        Ok(())
    }
}

impl World {
    /// Counts one effect of the controller; refuses it once the controller has stopped.
    fn effect(&mut self) -> Result<(), PortError> {
        if self.crashed {
            return Err(PortError::Failed("the controller stopped".into()));
        }
        self.effects += 1;
        if self.crash_after.contains(&self.effects) {
            self.crashed = true;
        }
        Ok(())
    }

    /// Graceful deletion (kubernetes.io "Pod Lifecycle: Termination of Pods"): the pod gets a
    /// deletionTimestamp and leaves its node once stopped — after its preStop sleep, at the
    /// latest at the end of its grace (`grace`, else its own) — while its ReplicaSet replaces it
    /// at once (a ReplicaSet counts only pods not being deleted). A pod not yet running goes at
    /// once.
    fn ask_to_stop(&mut self, pod: &str, node: &str, grace: Option<i64>) {
        let Some(p) = self.cluster.pods.remove(pod) else {
            return;
        };
        self.report.evictions += 1;
        let key = p.owner.clone().unwrap_or_else(|| pod.to_string());
        let stop = self.stop_seconds.get(&key).copied().unwrap_or(0);
        let within = stop.min(grace.unwrap_or(p.spec.grace_seconds)).max(0);
        let owner = p.owner.clone();
        match self.cluster.nodes.get_mut(node) {
            Some(n) if p.running_since.is_some() && within > 0 => {
                n.terminating.insert(pod.to_string());
                self.stopping.insert(
                    pod.to_string(),
                    Stopping {
                        pod: p,
                        node: node.to_string(),
                        gone_at: self.t + within,
                    },
                );
            }
            _ => self.left_node(node),
        }
        if let Some(owner) = owner {
            self.reconcile(&owner);
        }
    }

    /// kubelet: pods whose stop time has come leave their nodes.
    fn stop_pods(&mut self) {
        let t = self.t;
        let gone: Vec<String> = self
            .stopping
            .iter()
            .filter(|(_, s)| s.gone_at <= t)
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            let s = self.stopping.remove(&name).expect("listed");
            if let Some(n) = self.cluster.nodes.get_mut(&s.node) {
                n.terminating.remove(&name);
            }
            self.left_node(&s.node);
        }
    }

    /// A pod left `node`: disruption looks again, and waiting pods may fit there now.
    fn left_node(&mut self, node: &str) {
        if let Some(n) = self.cluster.nodes.get_mut(node) {
            n.last_pod_change = self.opts.start + self.t;
        }
        self.dirty();
        if self.cluster.pods.values().any(|p| p.node.is_none()) {
            self.kick();
        }
    }

    /// The pods as the disruption controller lists them: live and stopping.
    fn listed(&self) -> Vec<pdb::Listed<'_>> {
        let live = self.cluster.pods.values().map(|p| (p, false));
        let stopping = self.stopping.values().map(|s| (&s.pod, true));
        live.chain(stopping)
            .map(|(p, terminating)| pdb::Listed {
                name: &p.spec.name,
                labels: &p.spec.labels,
                owner: p.owner.as_deref(),
                ready: p.ready,
                terminating,
            })
            .collect()
    }

    /// kube-controller-manager's disruption controller: every budget's status, from the pods
    /// and the workloads' scale now (see `sim/pdb.rs`).
    fn update_pdb_status(&mut self) {
        if self.cluster.pdbs.is_empty() {
            return;
        }
        let statuses: Vec<crate::cluster::PdbStatus> = {
            let listed = self.listed();
            let scale = |o: &str| self.workloads.get(o).map(|w| w.replicas);
            self.cluster
                .pdbs
                .iter()
                .map(|b| pdb::status(b, &listed, scale))
                .collect()
        };
        for (b, s) in self.cluster.pdbs.iter_mut().zip(statuses) {
            b.status = Some(s);
        }
    }

    /// What the cluster holds for the budgets that select `pod`, just before it goes.
    fn eviction_fact(&self, pod: &str, node: &str) -> Result<EvictionFact, PortError> {
        let p = self
            .cluster
            .pods
            .get(pod)
            .ok_or_else(|| PortError::Failed(format!("no pod {pod}")))?;
        let covering: Vec<&Pdb> = self
            .cluster
            .pdbs
            .iter()
            .filter(|b| pdb::selected(b, pod, &p.spec.labels))
            .collect();
        // Every pod is listed only when a budget covers this one (a drain evicts many).
        let listed = if covering.is_empty() {
            Vec::new()
        } else {
            self.listed()
        };
        let selects = |b: &Pdb, q: &pdb::Listed<'_>| pdb::selected(b, q.name, q.labels);
        let pdbs = covering
            .into_iter()
            .map(|b| {
                let mine: Vec<&pdb::Listed<'_>> = listed.iter().filter(|q| selects(b, q)).collect();
                let mut owners: Vec<&str> = mine.iter().filter_map(|q| q.owner).collect();
                owners.sort_unstable();
                owners.dedup();
                BudgetFact {
                    pdb: format!("{}/{}", b.namespace, b.name),
                    healthy: mine.iter().filter(|q| q.ready && !q.terminating).count() as u32,
                    selected: mine.len() as u32,
                    scale: owners
                        .iter()
                        .filter_map(|o| self.workloads.get(*o).map(|w| w.replicas))
                        .sum(),
                }
            })
            .collect();
        let n = self.cluster.nodes.get(node);
        Ok(EvictionFact {
            t: self.t,
            pod: pod.to_string(),
            node: node.to_string(),
            node_pool: n.map(|n| n.instance.node_pool.clone()),
            deletion: n.and_then(|n| n.deletion.clone()),
            pdbs,
            ready: p.ready,
            do_not_disrupt: p.do_not_disrupt,
            node_do_not_disrupt: n.is_some_and(|n| n.do_not_disrupt),
            direct: false,
            grace_seconds: p.spec.grace_seconds,
        })
    }

    fn create_pod(&mut self, mut spec: PendingPod, owner: Option<String>, do_not_disrupt: bool) {
        spec.volume_requirements = self.cluster.volumes.requirements(&spec.volume_claims);
        let pod = Pod {
            spec,
            owner,
            created_at: self.now(),
            node: None,
            running_since: None,
            ready: false,
            do_not_disrupt,
        };
        self.cluster.pods.insert(pod.spec.name.clone(), pod);
        self.signals.push(Signal::PodPending(self.now()));
    }

    /// Resolves again where each waiting pod's volumes let it run (volumes or claims changed).
    fn resolve_volumes(&mut self) {
        let volumes = &self.cluster.volumes;
        for p in self.cluster.pods.values_mut() {
            if p.node.is_none() && !p.spec.volume_claims.is_empty() {
                p.spec.volume_requirements = volumes.requirements(&p.spec.volume_claims);
            }
        }
        self.dirty();
    }

    fn delete_pod(&mut self, name: &str) {
        if let Some(p) = self.cluster.pods.remove(name)
            && let Some(n) = p.node.and_then(|n| self.cluster.nodes.get_mut(&n))
        {
            n.last_pod_change = self.opts.start + self.t;
            self.dirty();
            // Room on a node: kube-scheduler would bind pods that wait and now fit there, so
            // they are looked at again.
            if self.cluster.pods.values().any(|p| p.node.is_none()) {
                self.kick();
            }
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
}

/// How long a pod takes to stop once asked: the longest `preStop` sleep of its containers (a
/// process is taken to exit on SIGTERM at once otherwise; the grace period bounds it either way).
fn pre_stop_seconds(spec: &k8s_openapi::api::core::v1::PodSpec) -> i64 {
    spec.containers
        .iter()
        .filter_map(|c| c.lifecycle.as_ref()?.pre_stop.as_ref()?.sleep.as_ref())
        .map(|s| s.seconds.max(0))
        .max()
        .unwrap_or(0)
}

/// A policy/v1 PodDisruptionBudget from a manifest.
fn pdb(file: &str, document: serde_json::Value) -> Result<Pdb, SimError> {
    let b: k8s_openapi::api::policy::v1::PodDisruptionBudget = serde_json::from_value(document)
        .map_err(|e| SimError::Input(format!("{file}: PodDisruptionBudget: {e}")))?;
    crate::cluster::pdb::from_kube(&b).map_err(|e| SimError::Input(format!("{file}: {e}")))
}

/// Loads a Policy manifest into the registry: a built-in, or a local component (`file`, relative
/// to the manifest's directory). The simulator has no cluster to read ConfigMaps from and
/// fetches nothing, so other sources are refused with what to use instead.
fn apply_policy(
    registry: &PolicyRegistry,
    file: &str,
    p: &crate::api::Policy,
) -> Result<(), SimError> {
    let name = p.metadata.name.clone().unwrap_or_default();
    let src = &p.spec.source;
    let wasm: std::borrow::Cow<'static, [u8]> = if let Some(builtin) = &src.builtin {
        let b = crate::policy::builtin::find(builtin).ok_or_else(|| {
            SimError::Input(format!(
                "{file}: Policy {name}: spec.source.builtin: no built-in {builtin:?} (built-ins: {})",
                crate::policy::builtin::names().join(", ")
            ))
        })?;
        b.wasm.into()
    } else if let Some(path) = &src.file {
        // A step's label is "FILE spec.steps[i].apply": paths are relative to FILE's directory.
        let manifest = file.split(" spec.steps[").next().unwrap_or(file);
        let dir = std::path::Path::new(manifest)
            .parent()
            .unwrap_or(std::path::Path::new(""));
        let at = dir.join(path);
        std::fs::read(&at)
            .map_err(|e| {
                SimError::Input(format!(
                    "{file}: Policy {name}: spec.source.file: cannot read {}: {e}",
                    at.display()
                ))
            })?
            .into()
    } else {
        return Err(SimError::Input(format!(
            "{file}: Policy {name}: the simulator reads builtin and file sources; {} is read by the controller in a cluster (use spec.source.file to try the component here)",
            src.describe()
        )));
    };
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
    registry.apply(&name, &wasm, config, limits)?;
    Ok(())
}

/// The interruption queue with the runtime that drives it (the simulator is synchronous).
struct QueueClient {
    rt: tokio::runtime::Runtime,
    sqs: aws_sdk_sqs::Client,
    url: String,
    queue: crate::interruption::BlockingQueue,
}

impl QueueClient {
    fn new(
        settings: &crate::cloud::aws::AwsSettings,
        url: &str,
        events_endpoint: Option<&str>,
    ) -> Result<Self, SimError> {
        // One worker drives the I/O, so the queue can block on the runtime's handle.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| SimError::Input(format!("runtime: {e}")))?;
        let config = rt.block_on(settings.sdk_config());
        let mut queue = crate::interruption::Queue::new(aws_sdk_sqs::Client::new(&config), url);
        let sqs = match events_endpoint {
            Some(endpoint) => {
                let mut events = settings.clone();
                events.endpoint = Some(endpoint.to_string());
                aws_sdk_sqs::Client::new(&rt.block_on(events.sdk_config()))
            }
            None => aws_sdk_sqs::Client::new(&config),
        };
        // The virtual clock does not wait: take what is there.
        queue.wait = Duration::ZERO;
        Ok(QueueClient {
            queue: crate::interruption::BlockingQueue {
                rt: rt.handle().clone(),
                queue,
            },
            rt,
            sqs,
            url: url.into(),
        })
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

/// One line per shadow candidate, as `top` shows it.
fn shadow_lines(registry: &crate::policy::PolicyRegistry) -> Vec<String> {
    registry
        .shadows()
        .iter()
        .map(|(name, t)| crate::api::policy::ShadowStatus::from(t).line(name))
        .collect()
}
