//! The simulator: the real provisioning, disruption and termination code over an in-memory
//! cluster and EC2, on a virtual clock. `dovetail simulate -f nodepool.yaml -f deploy.yaml` runs
//! the manifests a user has; a `Scenario` document adds a timeline.
//!
//! The clock jumps from one thing that can happen to the next (a step, a batch window closing,
//! a node becoming Ready, a drain retry, a disruption pass), so 24 virtual hours of a steady
//! cluster take milliseconds.

mod apply;
pub mod decisions;
pub mod html;
mod kubelet;
mod pdb;
mod queue;
pub mod report;
mod scheduler;
mod world;

use queue::QueueClient;

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
use crate::scheduling::from_kube::{
    ConvertError, daemonset_requests, deployment_pods, node_pool, pending_pod,
};
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
    let Manifests { docs, scenario } = read_manifests(files)?;
    let mut opts = opts.clone();
    let steps = match &scenario {
        Some((file, s)) => scenario_steps(file, s, &mut opts)?,
        None => Vec::new(),
    };
    let mut sim = Sim::new(&opts)?;
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

/// A Scenario step: when (seconds from the start), its place in the Scenario, the step, and
/// the manifests it applies (read before the run, so a bad one fails first).
type TimedStep = (i64, usize, Step, Vec<Manifest>);

/// What the given files hold: the manifests, each with its file's name, and the one Scenario.
struct Manifests {
    docs: Vec<(String, Manifest)>,
    scenario: Option<(String, Scenario)>,
}

/// The manifests of `files`; a second Scenario is an error that names both files.
fn read_manifests(files: &[(String, String)]) -> Result<Manifests, SimError> {
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
    Ok(Manifests { docs, scenario })
}

/// The Scenario `s` (from `file`): its settings go into `opts`, and its steps are returned in
/// the order they run. A bad duration or step names its field.
fn scenario_steps(
    file: &str,
    s: &Scenario,
    opts: &mut SimOptions,
) -> Result<Vec<TimedStep>, SimError> {
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
        let ttl = crate::lifecycle::REGISTRATION_TTL;
        if opts.launch_delay >= ttl {
            return Err(SimError::Input(format!(
                "{file}: Scenario spec.launchDelay: {d:?} is not less than the registration TTL ({}m): a node that takes that long to become Ready is deleted as never joined",
                ttl.as_secs() / 60
            )));
        }
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
    let mut steps = Vec::new();
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
    Ok(steps)
}

impl Sim {
    /// The controller core with its policies and catalog, an empty world, the cloud (in
    /// memory, or AWS) and the interruption queue `opts` names.
    fn new(opts: &SimOptions) -> Result<Sim, SimError> {
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
        let queue = match (&opts.aws, &opts.interruption_queue) {
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
        };
        let mut world = World::new(opts);
        world.kubelet = entries
            .iter()
            .map(|e| {
                let machine = kubelet::Machine {
                    vcpus: e.vcpus,
                    memory_mib: e.memory_mib,
                    gpus: e.allocatable.gpus,
                    eni_pods: e.allocatable.pods,
                };
                (e.name.clone(), machine)
            })
            .collect();
        Ok(Sim {
            controller: Controller::new(settings, ctx, opts.start),
            world,
            cloud,
            queue,
            bounds: BoundCache::default(),
            pod_changes: Default::default(),
        })
    }
}

impl World {
    /// An empty cluster at time zero.
    fn new(opts: &SimOptions) -> World {
        World {
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
            kubelet: HashMap::new(),
            nominations: BTreeMap::new(),
            next_start: 0,
        }
    }
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
    /// The controller's memory of when each node's pods last changed: the same code dates
    /// them here as in a cluster, and a restarted controller starts without it.
    pod_changes: crate::snapshot::PodChanges,
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
    daemonsets: BTreeMap<String, crate::capacity::Resources>,
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
    /// The machine of each instance type, as EC2 describes it: what kubelet computes a node's
    /// allocatable from.
    kubelet: HashMap<String, kubelet::Machine>,
    /// The controller's nominations the snapshot shows (pod → until when it holds, as the
    /// kube port remembers them): what a restarted controller has lost.
    nominations: BTreeMap<String, i64>,
    /// Where kube-scheduler's next search for feasible nodes starts (`nextStartNodeIndex`).
    next_start: usize,
}

/// A pod with a deletionTimestamp: it leaves its node at `gone_at`.
#[derive(Debug, Clone)]
struct Stopping {
    pod: Pod,
    node: String,
    gone_at: i64,
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

    /// Dates each node's pods as a cluster's observer does ([`crate::snapshot::PodChanges`]),
    /// before the controller reads the world and after it acted (so that the next step's
    /// changes are dated when they happen).
    fn date_pods(&mut self, now: i64) {
        if self.pod_changes.date(&mut self.world.cluster, now) {
            self.world.dirty();
        }
    }

    /// The controller stopped: a new one starts with nothing but what the world and the cloud
    /// hold (as a restarted process has the API server and the account), its names continuing
    /// past every claim that exists.
    fn restart(&mut self) {
        let now = self.now();
        let settings = self.controller.settings.clone();
        let ctx = self.controller.ctx.clone();
        self.controller = Controller::new(settings, ctx, now);
        self.pod_changes = Default::default();
        self.world.forget_nominations();
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

    fn run(&mut self, steps: Vec<TimedStep>, mut watch: Watch<'_>) -> Result<(), SimError> {
        let end = self.world.opts.duration.as_secs() as i64;
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
            self.world.schedule();
            self.world.lapse_nominations();
            self.world.update_pdb_status();
            let now = self.now();
            self.date_pods(now);
            let queue = self
                .queue
                .as_mut()
                .map(|q| &mut q.queue as &mut dyn Interruptions);
            self.controller
                .tick(now, &mut self.world, self.cloud.as_mut(), queue);
            if let Some(q) = &self.queue {
                self.world.report.interruption = q.queue.queue.metrics.clone();
            }
            // What the tick's evictions and deletions sent back pending binds where it fits.
            self.world.schedule();
            self.date_pods(now);
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
            let next = self
                .next_moment(steps.peek().map(|(at, ..)| *at), now)
                .max(t + 1);
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
        self.finish(end);
        Ok(())
    }

    /// When something next can happen (seconds since the start): the next step, a node's
    /// readiness, a pod done stopping, a nomination lapsing, or the controller's own wake-up.
    fn next_moment(&self, step: Option<i64>, now: i64) -> i64 {
        let start = self.world.opts.start;
        [
            step,
            self.world.ready_due.values().min().copied(),
            self.world.stopping.values().map(|s| s.gone_at).min(),
            self.world.next_lapse().map(|l| l - start),
            self.controller
                .next_wake(&self.world.cluster, now)
                .map(|w| w - start),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(i64::MAX)
    }

    /// The report's end: what the world holds, the fleet and its bounds, what still waits and
    /// why, and the policies' record.
    fn finish(&mut self, end: i64) {
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
        w.report.pooled_bound_per_hour = w.cluster.pooled_running_bound(&self.controller.ctx.its);
        if w.opts.timeline {
            let frame = w.frame(w.report.end.clone());
            w.record_frame(frame, true);
        }
        w.report.still_pending = w
            .cluster
            .pods
            .values()
            .filter(|p| p.running_since.is_none())
            .map(|p| {
                let reason = match &p.node {
                    Some(node) => format!("nominated to {node}, not bound by kube-scheduler"),
                    None => self
                        .controller
                        .unschedulable_reason(&p.spec.name)
                        .unwrap_or("waiting for a provisioning batch")
                        .to_string(),
                };
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
