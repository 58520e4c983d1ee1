//! The controller core: observe → decide → act, the same in a cluster and in the simulator.
//!
//! Each [`Controller::tick`] reads one consistent [`Cluster`] snapshot from a [`ClusterPort`],
//! runs the decisions that are due (garbage collection, interruptions, termination, a
//! provisioning batch, a disruption pass) and carries out every effect through that port and
//! the [`CloudProvider`]. The port is the only thing that differs between worlds: the simulator
//! mutates its in-memory cluster, the Kubernetes world writes to the API server
//! ([`crate::kubernetes`]). A behaviour fix here is one fix for both.
//!
//! Crash safety is by ordering: a NodeClaim object exists before its instance is launched and
//! the instance is tagged with the NodeClaim's name, so a restart at any point finds either a
//! claim to launch (the provider looks the instance up by tag first) or an instance with no
//! claim (garbage-collected); never two instances for one claim.

pub mod events;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

pub use crate::disruption::{FeatureGates, reason_label};
pub use crate::interruption::Interruptions;
pub use events::{DisruptionRound, EventKind, RANKED_SHOWN, RankedOffer};

use crate::api::duration;
use crate::cloud::{CloudProvider, Instance, LaunchRequest};
use crate::cluster::{self, Cluster, DO_NOT_DISRUPT, Deletion, Node};
use crate::disruption::{self, Note};
use crate::interruption::{Action, Kind as InterruptionKind};
use crate::policy::PolicyRegistry;
use crate::provisioning::{self, Pool};
use crate::scheduling::model::capacity_type_label;
use crate::scheduling::{InstanceTypes, PendingPod};
use crate::wit::types::{Catalog, Resources};

/// Errors of the world behind the port (an API call that failed). The controller logs them and
/// tries again on a later tick; it never assumes an effect that did not happen.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PortError {
    /// The world said no for now (a PodDisruptionBudget's 429, a conflict): retried later.
    #[error("{0}")]
    Refused(String),
    /// The call failed.
    #[error("{0}")]
    Failed(String),
}

/// One pod to take off a draining node: evicted through the Eviction API, or (with `grace`)
/// deleted directly with that many seconds to stop.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    pub pod: String,
    pub node: String,
    pub grace: Option<i64>,
}

/// A NodeClaim about to be created: what the cluster port writes before anything is launched.
#[derive(Debug, Clone, PartialEq)]
pub struct NewClaim {
    pub name: String,
    pub node_pool: String,
    /// The offers it may launch as, best first (its requirements are narrowed to them).
    pub offers: Vec<crate::cloud::Offer>,
    /// Pods plus daemonset overhead.
    pub requests: Resources,
    /// Why it exists: `provisioning`, `replacement`, `interruption`.
    pub purpose: &'static str,
}

/// What the world tells the controller happened since it last asked (a pod became pending, a
/// node became Ready, an object changed): how batches open and disruption wakes up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// A pod became pending at this time: it opens or extends the provisioning batch.
    PodPending(i64),
    /// Something changed that disruption should look at.
    Changed(i64),
    /// Pending pods, if any, want a batch (a NodePool or Policy changed).
    Kick(i64),
}

/// Everything the controller does to the cluster. Implemented by the simulator's in-memory
/// world and by the Kubernetes API.
pub trait ClusterPort {
    /// The snapshot decisions read.
    fn cluster(&self) -> &Cluster;
    /// Creates the NodeClaim objects (each with its termination finalizer) before their
    /// launch; one result per claim, in order. One call per batch, so a world that talks to an
    /// API server can make the writes concurrently.
    fn create_claims(&mut self, claims: &[NewClaim]) -> Vec<Result<(), PortError>>;
    /// The claim's instance was launched: it is an in-flight node from now on.
    fn launched(&mut self, claim: &NewClaim, node: Node) -> Result<(), PortError>;
    /// A claim that could not be launched goes away again.
    fn abandon_claim(&mut self, claim: &str, reason: &str);
    /// A pending pod is to land on a node (Ready or in flight).
    fn nominate(&mut self, pod: &str, node: &str);
    /// The node is tainted `dovetail.sh/disrupted:NoSchedule` and marked for deletion.
    fn mark_deleting(&mut self, node: &str, deletion: Deletion) -> Result<(), PortError>;
    /// Evicts a pod (honouring PodDisruptionBudgets); `Refused` when a budget says no. The
    /// pod is then terminating on its node (its grace period, preStop hooks) until it is gone.
    fn evict(&mut self, pod: &str, node: &str) -> Result<(), PortError>;
    /// Deletes a pod directly with `grace_seconds` to stop, bypassing the Eviction API (the
    /// NodePool's `terminationGracePeriod` ends before any budget would let it go).
    fn delete_pod(&mut self, pod: &str, node: &str, grace_seconds: i64) -> Result<(), PortError>;
    /// Every ask of a drain, answered in order. A world that can make the calls concurrently
    /// does (the Kubernetes port: a bounded number in flight, within the client's rate limit);
    /// by default one at a time.
    fn evict_all(&mut self, asks: &[Ask]) -> Vec<Result<(), PortError>> {
        asks.iter()
            .map(|a| match a.grace {
                None => self.evict(&a.pod, &a.node),
                Some(g) => self.delete_pod(&a.pod, &a.node, g),
            })
            .collect()
    }
    /// The node's instance is gone: the node and its NodeClaim go (their finalizers released).
    fn remove_node(&mut self, node: &str) -> Result<(), PortError>;
    /// The claim's Node (named as the world names it) registered: adopt it and set the claim's
    /// Registered condition.
    fn register(&mut self, claim: &str, node: &str) -> Result<(), PortError>;
    /// The claim's Node is Ready without startup taints: set Initialized.
    fn initialized(&mut self, claim: &str) -> Result<(), PortError>;
    /// Every NodeClaim that exists, whatever its state: what owns an instance. The snapshot's
    /// nodes and unlaunched claims, unless the world holds claims it does not model.
    fn claim_names(&self) -> std::collections::HashSet<String> {
        let c = self.cluster();
        c.nodes
            .keys()
            .cloned()
            .chain(c.unlaunched.iter().map(|u| u.name.clone()))
            .collect()
    }
    /// Whether the last call to the cloud's account-wide listing succeeded (health).
    fn cloud_reached(&mut self, _ok: bool) {}
    /// Something to tell users (a log line was written already where it matters).
    fn record(&mut self, event: EventKind);
    /// A disruption pass that had candidates (for reports and metrics).
    fn disruption_round(&mut self, _round: DisruptionRound) {}
    /// A provisioning batch of `pods` was simulated and scored in `took` (for metrics).
    fn provisioned(&mut self, _pods: usize, _took: Duration) {}
    /// What happened in the world since the last call.
    fn take_signals(&mut self) -> Vec<Signal>;
}

/// How long a lifecycle step asked for is given to show in the snapshot before it is asked again.
pub const LIFECYCLE_RETRY: i64 = 10;

/// How old an instance no claim owns must be before it is terminated (Karpenter's garbage
/// collection waits as long for a launch's claim to record its instance).
pub const ORPHAN_GRACE: Duration = Duration::from_secs(120);

/// Timing settings of the core (Karpenter's defaults).
#[derive(Debug, Clone)]
pub struct Settings {
    /// A batch closes after this long without a new pod…
    pub batch_idle: Duration,
    /// …or this long after its first pod.
    pub batch_max: Duration,
    /// How often disruption looks for work while the cluster changes.
    pub disruption_interval: Duration,
    /// How often to look for instances that vanished and instances no claim owns.
    pub gc_interval: Duration,
    /// How long a launched claim may wait for its Node to register
    /// ([`crate::lifecycle::REGISTRATION_TTL`]).
    pub registration_ttl: Duration,
    /// How old an instance no claim owns must be before it is terminated: a launch in flight
    /// has an instance before its claim records it.
    pub orphan_grace: Duration,
    /// How soon a draining node is looked at again.
    pub drain_retry: Duration,
    /// How soon claims that could not launch are tried again.
    pub launch_retry: Duration,
    /// How soon claims whose creation the API server refused for now (429, 409) are tried
    /// again.
    pub refused_retry: Duration,
    pub feature_gates: FeatureGates,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            batch_idle: Duration::from_secs(1),
            batch_max: Duration::from_secs(10),
            disruption_interval: Duration::from_secs(10),
            gc_interval: Duration::from_secs(60),
            registration_ttl: crate::lifecycle::REGISTRATION_TTL,
            orphan_grace: ORPHAN_GRACE,
            drain_retry: Duration::from_secs(5),
            launch_retry: Duration::from_secs(30),
            refused_retry: Duration::from_secs(5),
            feature_gates: FeatureGates::default(),
        }
    }
}

/// What the decisions are made with: the instance types, the catalog policies see, and the
/// policies.
#[derive(Clone)]
pub struct Context {
    pub its: InstanceTypes,
    pub catalog: Catalog,
    pub registry: std::sync::Arc<PolicyRegistry>,
    type_index: HashMap<String, u32>,
}

impl Context {
    pub fn new(
        its: InstanceTypes,
        catalog: Catalog,
        registry: std::sync::Arc<PolicyRegistry>,
    ) -> Self {
        let type_index = its
            .types
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i as u32))
            .collect();
        Context {
            its,
            catalog,
            registry,
            type_index,
        }
    }

    /// Index of an instance type by name.
    pub fn type_index(&self, name: &str) -> Option<u32> {
        self.type_index.get(name).copied()
    }

    /// The node a launched instance becomes, as decisions see it.
    pub fn node(&self, instance: Instance, pool: &Pool, cluster: &Cluster, now: i64) -> Node {
        let name = instance.claim.clone();
        let type_index = self.type_index(&instance.offer.instance_type).unwrap_or(0);
        let zone_index = self
            .its
            .zones
            .iter()
            .position(|z| *z == instance.offer.zone)
            .unwrap_or(0) as u32;
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
            launched_at: now,
            ready_at: None,
            last_pod_change: now,
            template_hash: cluster::template_hash(pool, &cluster.node_classes),
            do_not_disrupt,
            deletion: None,
            terminating: Default::default(),
            attached: Default::default(),
            lifecycle: Default::default(),
        }
    }
}

/// One disruption pass's notes, counted: a pass over 500 nodes is one log line, not hundreds
/// (the notes themselves are debug lines and Events).
#[derive(Default)]
struct PassSummary {
    blocked: usize,
    kept: usize,
    overruled: usize,
    policy_failed: usize,
    /// A few of them, as examples.
    examples: Vec<String>,
}

/// Examples a pass's line carries.
const PASS_EXAMPLES: usize = 3;

impl PassSummary {
    fn count(&mut self, note: &Note) {
        let example = match note {
            Note::Blocked { node, why } => {
                self.blocked += 1;
                format!("{node} blocked: {why}")
            }
            Note::Kept { nodes, why } => {
                self.kept += 1;
                format!("{} kept: {why}", nodes.join(","))
            }
            Note::Overruled { nodes, why } => {
                self.overruled += 1;
                format!("{} overruled: {why}", nodes.join(","))
            }
            Note::PolicyFailed { policy, error } => {
                self.policy_failed += 1;
                format!("policy {policy} failed: {error}")
            }
        };
        if self.examples.len() < PASS_EXAMPLES {
            self.examples.push(crate::bounded::bounded(&example, 300));
        }
    }

    fn log(&self, candidates: usize, commands: usize) {
        if self.blocked + self.kept + self.overruled + self.policy_failed == 0 {
            return;
        }
        if self.policy_failed > 0 {
            tracing::warn!(
                candidates,
                commands,
                blocked = self.blocked,
                kept_by_policy = self.kept,
                overruled_by_host = self.overruled,
                policy_failures = self.policy_failed,
                examples = ?self.examples,
                "disruption pass"
            );
        } else {
            tracing::info!(
                candidates,
                commands,
                blocked = self.blocked,
                kept_by_policy = self.kept,
                overruled_by_host = self.overruled,
                examples = ?self.examples,
                "disruption pass"
            );
        }
    }
}

/// How a launch is carried out and told.
struct Launch<'a> {
    pool: &'a Pool,
    /// Pods it is for (for the log line).
    pods: usize,
    /// The policy whose ranking chose it.
    policy: &'a str,
    /// Its best options as the policy ranked them (none for a replacement or a resumed launch).
    ranked: Vec<RankedOffer>,
    /// Log the launch as an event (replacements), or as provisioning's own line.
    log: bool,
    /// Create the NodeClaim object first (false: it exists — created with its batch, or a
    /// launch resumed after a restart).
    create: bool,
}

impl<'a> Launch<'a> {
    fn resumed(pool: &'a Pool) -> Self {
        Launch {
            pool,
            pods: 0,
            policy: "resumed",
            ranked: Vec::new(),
            log: false,
            create: false,
        }
    }
}

/// How many recent events are remembered to keep repeated disruption notes out.
const RECENT_EVENTS: usize = 200;

/// The controller's own state: timers and what it remembers between ticks. Everything about
/// the cluster itself comes from the port's snapshot.
pub struct Controller {
    pub settings: Settings,
    pub ctx: Context,
    /// Times are aligned to whole intervals from here.
    origin: i64,
    /// Open provisioning batch: (first pod, last pod).
    batch: Option<(i64, i64)>,
    next_claim: u64,
    next_disruption: Option<i64>,
    retry_provisioning: Option<i64>,
    next_gc: i64,
    /// Lifecycle steps asked for (claim, step), and when: a world whose cache lags its writes
    /// shows the step undone for a moment, and it is not asked for again until
    /// [`LIFECYCLE_RETRY`] has passed.
    lifecycle_asked: HashMap<(String, &'static str), i64>,
    /// Last reason given per unschedulable pod (told again only when it changes).
    unschedulable: HashMap<String, String>,
    recent: VecDeque<EventKind>,
}

impl Controller {
    /// A controller starting at `now` (Unix seconds).
    pub fn new(settings: Settings, ctx: Context, now: i64) -> Self {
        // The first tick collects: a new term (or process) starts from what the cloud holds.
        let next_gc = now;
        Controller {
            settings,
            ctx,
            origin: now,
            batch: None,
            next_claim: 0,
            next_disruption: None,
            retry_provisioning: None,
            next_gc,
            lifecycle_asked: HashMap::new(),
            unschedulable: HashMap::new(),
            recent: VecDeque::new(),
        }
    }

    /// What it decides with, to start afresh (a replica that became leader again must not act
    /// on batches and timers from its last term).
    pub fn into_context(self) -> Context {
        self.ctx
    }

    /// NodeClaim names continue past every one of `names` (`default-00042` → 43 on): a
    /// restarted controller, or a new leader, does not reuse a name that exists.
    pub fn continue_names_past<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        let highest = names
            .into_iter()
            .filter_map(|n| n.rsplit_once('-')?.1.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        self.next_claim = self.next_claim.max(highest);
    }

    /// The reason a pod was last found unschedulable.
    pub fn unschedulable_reason(&self, pod: &str) -> Option<&str> {
        self.unschedulable.get(pod).map(String::as_str)
    }

    fn align(&self, t: i64, step: i64) -> i64 {
        self.origin + (t - self.origin + step - 1).div_euclid(step) * step
    }

    /// A pod became pending: it opens or extends the provisioning batch.
    pub fn pod_pending(&mut self, now: i64) {
        self.batch = Some(match self.batch {
            Some((first, _)) => (first, now),
            None => (now, now),
        });
    }

    /// Pending pods, if any, get a batch.
    pub fn kick(&mut self, cluster: &Cluster, now: i64) {
        if self.batch.is_none() && cluster.pods.values().any(|p| p.node.is_none()) {
            self.batch = Some((now, now));
        }
    }

    /// Something changed that disruption should look at (at the next interval).
    pub fn changed(&mut self, now: i64) {
        let step = self.settings.disruption_interval.as_secs().max(1) as i64;
        let next = self.align(now + 1, step);
        self.next_disruption = Some(self.next_disruption.map_or(next, |n| n.min(next)));
    }

    fn batch_close(&self) -> Option<i64> {
        let (first, last) = self.batch?;
        Some(
            (last + self.settings.batch_idle.as_secs() as i64)
                .min(first + self.settings.batch_max.as_secs() as i64),
        )
    }

    /// When the controller next has something to do (Unix seconds), if anything.
    pub fn next_wake(&self, cluster: &Cluster, now: i64) -> Option<i64> {
        let mut next: Option<i64> = None;
        let mut at = |t: i64| next = Some(next.map_or(t, |n: i64| n.min(t)));
        if let Some(close) = self.batch_close() {
            at(close);
        }
        if cluster.nodes.values().any(|n| n.deletion.is_some()) {
            at(now + self.settings.drain_retry.as_secs() as i64);
        }
        if !cluster.nodes.is_empty() {
            at(self.next_gc);
        }
        // A claim still waiting for its Node is looked at again as its TTL runs out.
        if let Some(due) = cluster
            .nodes
            .values()
            .filter(|n| n.lifecycle.joined.is_none() && !n.lifecycle.registered)
            .map(|n| {
                let due = n.launched_at + self.settings.registration_ttl.as_secs() as i64 + 1;
                self.lifecycle_asked
                    .get(&(n.name.clone(), "delete"))
                    .map_or(due, |&asked| due.max(asked + LIFECYCLE_RETRY))
            })
            .min()
        {
            at(due);
        }
        for t in [self.next_disruption, self.retry_provisioning]
            .into_iter()
            .flatten()
        {
            at(t);
        }
        next
    }

    fn emit(&mut self, port: &mut dyn ClusterPort, kind: EventKind) {
        kind.log();
        self.remember(port, kind);
    }

    fn remember(&mut self, port: &mut dyn ClusterPort, kind: EventKind) {
        if self.recent.len() == RECENT_EVENTS {
            self.recent.pop_front();
        }
        self.recent.push_back(kind.clone());
        port.record(kind);
    }

    /// Takes in what the world signalled.
    pub fn absorb(&mut self, port: &mut dyn ClusterPort) {
        for s in port.take_signals() {
            match s {
                Signal::PodPending(t) => self.pod_pending(t),
                Signal::Changed(t) => self.changed(t),
                Signal::Kick(t) => self.kick(port.cluster(), t),
            }
        }
    }

    /// One pass of everything that is due at `now`.
    pub fn tick(
        &mut self,
        now: i64,
        port: &mut dyn ClusterPort,
        cloud: &mut dyn CloudProvider,
        interruptions: Option<&mut dyn Interruptions>,
    ) {
        self.absorb(port);
        // Shadow records of candidates no pool names any more are dropped, in either world.
        self.ctx.registry.retain_shadows(
            &port
                .cluster()
                .pools
                .iter()
                .filter_map(|p| p.resource.spec.policies.shadow.as_ref())
                .flat_map(|s| [s.scoring.clone(), s.consolidation.clone()])
                .flatten()
                .collect(),
        );
        if now >= self.next_gc {
            self.next_gc = now + self.settings.gc_interval.as_secs() as i64;
            self.collect_vanished(now, port, cloud);
            self.collect_orphans(now, port, cloud);
        }
        self.lifecycle(now, port, cloud);
        self.resume_launches(now, port, cloud);
        if let Some(q) = interruptions {
            self.poll_interruptions(now, port, cloud, q);
        }
        self.terminate(now, port, cloud);
        self.absorb(port);
        if let Some(close) = self.batch_close()
            && close <= now
        {
            self.provision(now, port, cloud);
        }
        if self.retry_provisioning.is_some_and(|r| r <= now) {
            self.retry_provisioning = None;
            self.kick(port.cluster(), now);
        }
        self.absorb(port);
        if self.next_disruption.is_some_and(|d| d <= now) {
            self.disrupt(now, port, cloud);
        }
    }

    // ---- provisioning ----

    fn provision(&mut self, now: i64, port: &mut dyn ClusterPort, cloud: &mut dyn CloudProvider) {
        self.batch = None;
        let pending: Vec<String> = port
            .cluster()
            .pods
            .values()
            .filter(|p| p.node.is_none())
            .map(|p| p.spec.name.clone())
            .collect();
        self.provision_pods(now, pending, true, port, cloud);
    }

    /// Provisions for `pending` (pod names). With `bind`, the pods are nominated to where they
    /// go; without, only the capacity they need is launched (a replacement launched in
    /// parallel with an interrupted node's drain).
    fn provision_pods(
        &mut self,
        now: i64,
        pending: Vec<String>,
        bind: bool,
        port: &mut dyn ClusterPort,
        cloud: &mut dyn CloudProvider,
    ) {
        if pending.is_empty() {
            return;
        }
        let cluster = port.cluster();
        let specs: Vec<PendingPod> = pending
            .iter()
            .map(|n| cluster.pods[n].spec.clone())
            .collect();
        let (existing, names) = cluster.schedulable_nodes(&self.ctx.its, |_| false);
        let pool_specs = cluster.pool_specs(&self.ctx.its);
        let pools: Vec<Pool> = cluster
            .pools
            .iter()
            .zip(pool_specs)
            .map(|(p, spec)| Pool {
                resource: p.resource.clone(),
                spec,
            })
            .collect();
        let next_claim = &mut self.next_claim;
        let started = std::time::Instant::now();
        let plan = provisioning::plan(
            now,
            &specs,
            &existing,
            &pools,
            &self.ctx.its,
            &self.ctx.catalog,
            &self.ctx.registry,
            cloud,
            &mut |pool| {
                *next_claim += 1;
                format!("{pool}-{:05}", *next_claim)
            },
        );
        port.provisioned(specs.len(), started.elapsed());
        for &(p, n) in plan.bound.iter().filter(|_| bind) {
            port.nominate(&pending[p], &names[n]);
            self.unschedulable.remove(&pending[p]);
        }
        let mut failed = false;
        let claims: Vec<NewClaim> = plan
            .claims
            .iter()
            .map(|c| NewClaim {
                name: c.request.claim.clone(),
                node_pool: c.request.node_pool.clone(),
                offers: c.request.offers.clone(),
                requests: c.requests,
                purpose: if bind { "provisioning" } else { "interruption" },
            })
            .collect();
        let created = port.create_claims(&claims);
        let mut refused = false;
        for ((c, claim), created) in plan.claims.iter().zip(&claims).zip(created) {
            let pool = pools
                .iter()
                .find(|p| p.spec.name == c.request.node_pool)
                .expect("planned from a pool");
            let how = Launch {
                pool,
                pods: c.pods.len(),
                policy: &c.policy,
                ranked: c
                    .request
                    .offers
                    .iter()
                    .zip(&c.scores)
                    .take(RANKED_SHOWN)
                    .map(|(o, &score)| RankedOffer {
                        instance_type: o.instance_type.clone(),
                        zone: o.zone.clone(),
                        capacity_type: capacity_type_label(o.capacity_type),
                        price: o.price,
                        score,
                    })
                    .collect(),
                log: false,
                create: false,
            };
            // The API server said "not now" (429, 409): a short wait, not a failed launch's.
            if matches!(created, Err(PortError::Refused(_))) {
                refused = true;
            }
            let launched = created
                .map_err(|e| format!("creating the NodeClaim: {e}"))
                .and_then(|()| self.launch(now, claim, how, port, cloud));
            match launched {
                Ok(name) => {
                    for &p in c.pods.iter().filter(|_| bind) {
                        port.nominate(&pending[p], &name);
                        self.unschedulable.remove(&pending[p]);
                    }
                }
                Err(reason) => {
                    failed = true;
                    self.emit(
                        port,
                        EventKind::NotLaunched {
                            claim: claim.name.clone(),
                            reason,
                        },
                    );
                }
            }
        }
        for u in &plan.unschedulable {
            let pod = pending[u.pod].clone();
            if self.unschedulable.get(&pod) != Some(&u.reason) {
                self.unschedulable.insert(pod.clone(), u.reason.clone());
                // Provisioning logged it already.
                self.remember(
                    port,
                    EventKind::Unschedulable {
                        pod,
                        reason: u.reason.clone(),
                    },
                );
            }
        }
        for (policy, error) in &plan.policy_failures {
            let kind = EventKind::PolicyFailed {
                policy: policy.clone(),
                error: error.clone(),
            };
            // Every batch until it is fixed: told once while it repeats (logged by the call).
            if !self.recent.contains(&kind) {
                self.remember(port, kind);
            }
        }
        for n in &plan.not_launched {
            failed = true;
            self.emit(
                port,
                EventKind::NotLaunched {
                    claim: n.claim.clone(),
                    reason: n.reason.clone(),
                },
            );
        }
        if failed {
            let wait = if refused {
                self.settings.refused_retry
            } else {
                self.settings.launch_retry
            };
            self.retry_provisioning = Some(now + wait.as_secs() as i64);
        }
        // The launches are under way: now the shadow candidates may have the same rounds.
        plan.shadow
            .into_iter()
            .for_each(|job| self.ctx.registry.shadow(job));
        self.changed(now);
    }

    /// Creates the NodeClaim, launches its instance, and makes it an in-flight node; returns its
    /// name, or why not (the claim is then abandoned).
    fn launch(
        &mut self,
        now: i64,
        claim: &NewClaim,
        how: Launch<'_>,
        port: &mut dyn ClusterPort,
        cloud: &mut dyn CloudProvider,
    ) -> Result<String, String> {
        let Launch {
            pool,
            pods,
            policy,
            ranked,
            log,
            create,
        } = how;
        if create {
            port.create_claims(std::slice::from_ref(claim))
                .pop()
                .unwrap_or(Ok(()))
                .map_err(|e| format!("creating the NodeClaim: {e}"))?;
        }
        let request = LaunchRequest {
            claim: claim.name.clone(),
            node_pool: claim.node_pool.clone(),
            node_class: pool.resource.spec.template.spec.node_class_ref.name.clone(),
            offers: claim.offers.clone(),
        };
        let instance = match cloud.create(&request) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(nodeclaim = %claim.name, error = %e, "launch failed");
                port.abandon_claim(&claim.name, &e.to_string());
                return Err(e.to_string());
            }
        };
        if !log {
            tracing::info!(
                nodeclaim = %instance.claim,
                nodepool = %claim.node_pool,
                instance_type = %instance.offer.instance_type,
                zone = %instance.offer.zone,
                capacity_type = capacity_type_label(instance.offer.capacity_type),
                price = instance.offer.price,
                pods,
                policy = %policy,
                "launched nodeclaim"
            );
        }
        let kind = EventKind::Launched {
            node: instance.claim.clone(),
            instance_type: instance.offer.instance_type.clone(),
            zone: instance.offer.zone.clone(),
            capacity_type: capacity_type_label(instance.offer.capacity_type),
            price: instance.offer.price,
            pods,
            policy: policy.to_string(),
            ranked,
        };
        let node = self.ctx.node(instance, pool, port.cluster(), now);
        let name = node.name.clone();
        // The instance exists and carries the claim's tag: if recording it fails, the next
        // launch of this claim finds it by that tag, and GC keeps it as the claim's.
        if let Err(e) = port.launched(claim, node) {
            tracing::warn!(nodeclaim = %name, error = %e, "recording the launch failed");
        }
        if log {
            self.emit(port, kind);
        } else {
            self.remember(port, kind);
        }
        Ok(name)
    }

    /// Claims that exist without an instance (a restart between creating and launching) are
    /// launched now; the provider finds an instance already tagged with the claim first.
    fn resume_launches(
        &mut self,
        now: i64,
        port: &mut dyn ClusterPort,
        cloud: &mut dyn CloudProvider,
    ) {
        let unlaunched = port.cluster().unlaunched.clone();
        for u in unlaunched {
            let Some(pool) = port
                .cluster()
                .pool_index(&u.node_pool)
                .map(|i| port.cluster().pools[i].clone())
            else {
                continue;
            };
            let claim = NewClaim {
                name: u.name.clone(),
                node_pool: u.node_pool.clone(),
                offers: u.offers.clone(),
                requests: crate::scheduling::model::zero(),
                purpose: "resumed",
            };
            if let Err(reason) = self.launch(now, &claim, Launch::resumed(&pool), port, cloud) {
                self.emit(
                    port,
                    EventKind::NotLaunched {
                        claim: u.name.clone(),
                        reason,
                    },
                );
            }
        }
    }

    // ---- interruption and garbage collection ----

    /// Handles what the interruption queue holds.
    fn poll_interruptions(
        &mut self,
        now: i64,
        port: &mut dyn ClusterPort,
        cloud: &mut dyn CloudProvider,
        q: &mut dyn Interruptions,
    ) {
        let received = match q.poll() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "polling the interruption queue failed");
                return;
            }
        };
        for r in received {
            let action = crate::interruption::action(&r.notice, false);
            if action == Action::Replace {
                for id in &r.notice.instance_ids {
                    let node = port
                        .cluster()
                        .nodes
                        .values()
                        .find(|n| n.instance.id == *id)
                        .map(|n| n.name.clone());
                    match node {
                        Some(n) => self.interrupt(now, &n, &r.notice.kind, port, cloud),
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

    /// EC2 announced the node's instance is going: the replacement is launched now, in parallel
    /// with the drain (a spot node has two minutes), and a spot offering is left out a while.
    pub fn interrupt(
        &mut self,
        now: i64,
        node: &str,
        kind: &InterruptionKind,
        port: &mut dyn ClusterPort,
        cloud: &mut dyn CloudProvider,
    ) {
        let Some(n) = port.cluster().nodes.get(node) else {
            return;
        };
        if n.deletion.is_some() {
            return;
        }
        let offer = n.instance.offer.clone();
        let deletion = Deletion {
            reason: None,
            since: now,
            replacement: None,
            policy: None,
        };
        if let Err(e) = port.mark_deleting(node, deletion) {
            tracing::warn!(node, error = %e, "could not mark the interrupted node");
            return;
        }
        if *kind == InterruptionKind::SpotInterruption {
            cloud.mark_unavailable(&offer.instance_type, &offer.zone, offer.capacity_type);
        }
        self.emit(
            port,
            EventKind::Interrupted {
                node: node.to_string(),
                kind: kind.label(),
            },
        );
        let pods: Vec<String> = port
            .cluster()
            .pods_on(node)
            .map(|p| p.spec.name.clone())
            .collect();
        self.provision_pods(now, pods, false, port, cloud);
        self.changed(now);
    }

    /// Nodes whose instance is gone (terminated outside the controller) are removed.
    fn collect_vanished(
        &mut self,
        now: i64,
        port: &mut dyn ClusterPort,
        cloud: &mut dyn CloudProvider,
    ) {
        let claims: BTreeMap<String, String> = port
            .cluster()
            .nodes
            .values()
            .map(|n| (n.name.clone(), n.instance.id.clone()))
            .collect();
        if claims.is_empty() {
            return;
        }
        let gone = match cloud.vanished(&claims) {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "listing instances failed");
                return;
            }
        };
        for name in gone {
            if !port.cluster().nodes.contains_key(&name) {
                continue;
            }
            self.emit(port, EventKind::InstanceGone { node: name.clone() });
            if let Err(e) = port.remove_node(&name) {
                tracing::warn!(node = %name, error = %e, "could not remove the node");
                continue;
            }
            self.kick(port.cluster(), now);
            self.changed(now);
        }
    }

    /// Instances of the cluster no claim owns, older than the grace period, are terminated.
    fn collect_orphans(
        &mut self,
        now: i64,
        port: &mut dyn ClusterPort,
        cloud: &mut dyn CloudProvider,
    ) {
        let claims = port.claim_names();
        match cloud.collect_garbage(&claims, self.settings.orphan_grace, now) {
            Ok(gone) => {
                if !gone.is_empty() {
                    tracing::info!(instances = ?gone, "terminated instances no NodeClaim claims");
                }
                port.cloud_reached(true);
            }
            Err(e) => {
                tracing::warn!(error = %e, "garbage collection failed");
                port.cloud_reached(false);
            }
        }
    }

    // ---- lifecycle ----

    /// Registration, initialization and liveness of launched claims ([`crate::lifecycle`]).
    fn lifecycle(&mut self, now: i64, port: &mut dyn ClusterPort, cloud: &mut dyn CloudProvider) {
        use crate::lifecycle::Step;
        let steps = crate::lifecycle::decide(port.cluster(), self.settings.registration_ttl, now);
        let nodes = &port.cluster().nodes;
        self.lifecycle_asked
            .retain(|(claim, _), at| nodes.contains_key(claim) && now < *at + LIFECYCLE_RETRY);
        for step in steps {
            let asked = match &step {
                Step::Register { claim, .. } => (claim.clone(), "register"),
                Step::Initialize { claim } => (claim.clone(), "initialize"),
                Step::NeverJoined { claim, .. } => (claim.clone(), "delete"),
            };
            if self.lifecycle_asked.contains_key(&asked) {
                continue;
            }
            self.lifecycle_asked.insert(asked, now);
            match step {
                Step::Register { claim, node } => {
                    if let Err(e) = port.register(&claim, &node) {
                        tracing::warn!(nodeclaim = %claim, node = %node, error = %e, "could not register the node");
                    }
                }
                Step::Initialize { claim } => {
                    if let Err(e) = port.initialized(&claim) {
                        tracing::warn!(nodeclaim = %claim, error = %e, "could not mark the claim initialized");
                    }
                }
                Step::NeverJoined {
                    claim,
                    instance,
                    waited,
                } => {
                    self.emit(
                        port,
                        EventKind::NeverJoined {
                            node: claim.clone(),
                            instance: instance.clone(),
                            waited_seconds: waited,
                        },
                    );
                    if let Err(e) = cloud.delete(&instance) {
                        tracing::warn!(nodeclaim = %claim, instance = %instance, error = %e, "terminating the unregistered instance failed");
                        continue;
                    }
                    if let Err(e) = port.remove_node(&claim) {
                        tracing::warn!(nodeclaim = %claim, error = %e, "could not delete the unregistered NodeClaim");
                        continue;
                    }
                    // Its pods are pending again.
                    self.kick(port.cluster(), now);
                    self.changed(now);
                }
            }
        }
    }

    // ---- termination ----

    fn terminate(&mut self, now: i64, port: &mut dyn ClusterPort, cloud: &mut dyn CloudProvider) {
        let plan = crate::termination::plan(port.cluster(), now);
        if !plan.evict.is_empty() || !plan.terminate.is_empty() {
            tracing::debug!(evict = plan.evict.len(), terminate = ?plan.terminate, "termination plan");
        }
        let mut refused: Vec<String> = Vec::new();
        // Evictions, then the deletions a grace period forces (with their shortened grace), in
        // one batch the port may send concurrently.
        let asks = drain_order(
            plan.evict
                .iter()
                .map(|(pod, node)| Ask {
                    pod: pod.clone(),
                    node: node.clone(),
                    grace: None,
                })
                .chain(plan.delete.iter().map(|(pod, node, g)| Ask {
                    pod: pod.clone(),
                    node: node.clone(),
                    grace: Some(*g),
                }))
                .collect(),
        );
        let answers = if asks.is_empty() {
            Vec::new()
        } else {
            port.evict_all(&asks)
        };
        for (ask, done) in asks.iter().zip(answers) {
            let (pod, node) = (&ask.pod, &ask.node);
            match done {
                Ok(()) => self.emit(
                    port,
                    EventKind::Evicted {
                        pod: pod.clone(),
                        node: node.clone(),
                    },
                ),
                Err(e) => {
                    tracing::info!(pod, node, reason = %e, "eviction not allowed yet");
                    refused.push(node.clone());
                }
            }
        }
        let disrupted = cluster::disrupted_taint();
        let candidates: std::collections::BTreeSet<&String> =
            plan.terminate.iter().chain(&plan.expired).collect();
        for name in candidates {
            let expired = plan.expired.contains(name);
            if refused.contains(name) && !expired {
                continue;
            }
            let Some(node) = port.cluster().nodes.get(name) else {
                continue;
            };
            // Evicted is not gone: the instance waits until its pods have stopped (or the
            // grace period is over), so their preStop hooks and volumes are not cut short.
            let still: usize = node.terminating.len()
                + port
                    .cluster()
                    .pods_on(name)
                    .filter(|p| !p.spec.tolerations.iter().any(|t| t.tolerates(&disrupted)))
                    .count();
            if still > 0 && !expired {
                tracing::debug!(node = %name, pods = still, "waiting for the node's pods to stop");
                continue;
            }
            // Then for its volumes to detach — those of pods that stay with it excepted.
            let cluster = port.cluster();
            let kept: std::collections::BTreeSet<&str> = cluster
                .pods_on(name)
                .flat_map(|p| &p.spec.volume_claims)
                .filter_map(|c| cluster.volumes.volume_of(c))
                .collect();
            let attached = node
                .attached
                .iter()
                .filter(|v| !kept.contains(v.as_str()))
                .count();
            if attached > 0 && !expired {
                tracing::debug!(node = %name, volumes = attached, "waiting for the node's volumes to detach");
                continue;
            }
            let name = name.clone();
            let (id, launched_at) = (node.instance.id.clone(), node.launched_at);
            if let Err(e) = cloud.delete(&id) {
                let kind = EventKind::TerminationFailed {
                    node: name.clone(),
                    instance: id,
                    error: e.to_string(),
                };
                // Retried every drain round: the same failure is told once.
                if !self.recent.contains(&kind) {
                    self.emit(port, kind);
                }
                continue;
            }
            if let Err(e) = port.remove_node(&name) {
                tracing::warn!(node = %name, error = %e, "could not remove the terminated node");
                continue;
            }
            self.emit(
                port,
                EventKind::Terminated {
                    node: name.clone(),
                    lived_seconds: now - launched_at,
                },
            );
            self.kick(port.cluster(), now);
            self.changed(now);
        }
    }

    // ---- disruption ----

    fn disrupt(&mut self, now: i64, port: &mut dyn ClusterPort, cloud: &mut dyn CloudProvider) {
        self.next_disruption = None;
        let interval = self.settings.disruption_interval.as_secs().max(1) as i64;
        let cluster = port.cluster();
        // Let the cluster settle first: a batch is open or nodes are on their way.
        let launching = cluster.nodes.values().any(|n| {
            n.ready_at.is_none()
                && n.deletion.is_none()
                && !cluster.nodes.values().any(|d| {
                    d.deletion.as_ref().and_then(|x| x.replacement.as_deref())
                        == Some(n.name.as_str())
                })
        });
        if self.batch.is_some() || launching {
            self.next_disruption = Some(now + interval);
            return;
        }
        let decision = disruption::decide(
            cluster,
            &self.ctx.its,
            &self.ctx.registry,
            now,
            &self.settings.feature_gates,
        );
        if decision.candidates > 0 {
            let round = DisruptionRound {
                at: now,
                nodes: cluster.nodes.len(),
                pods: cluster.pods.len(),
                candidates: decision.candidates,
                moves: decision.moves_offered,
                commands: decision.commands.len(),
                timings: decision.timings,
            };
            port.disruption_round(round);
        }
        let mut revisit = false;
        let mut pass = PassSummary::default();
        for note in &decision.notes {
            revisit = true;
            pass.count(note);
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
            // Repeats of the same note every pass say nothing new. Each note is a debug line
            // and an Event; the pass says what happened in one line below.
            if !self.recent.iter().any(|e| *e == kind) {
                tracing::debug!(note = ?kind, "disruption note");
                self.remember(port, kind);
            }
        }
        pass.log(decision.candidates, decision.commands.len());
        for c in decision.commands {
            self.execute(now, c, port, cloud);
        }
        // The moves are under way: now the shadow candidates may have the same rounds.
        decision
            .shadow
            .into_iter()
            .for_each(|job| self.ctx.registry.shadow(job));
        // Time alone can make more nodes candidates: consolidateAfter and expireAfter passing,
        // and the policy or a budget schedule changing its mind.
        let mut next = if revisit { Some(now + 300) } else { None };
        let cluster = port.cluster();
        for n in cluster.nodes.values() {
            let Some(i) = cluster.pool_index(&n.instance.node_pool) else {
                continue;
            };
            let spec = &cluster.pools[i].resource.spec;
            let after = |d: &str| {
                duration::parse(d)
                    .ok()
                    .flatten()
                    .map(|d| d.as_secs() as i64)
            };
            let mut times = Vec::new();
            if let Some(ca) = after(&spec.disruption.consolidate_after) {
                times.push(n.last_pod_change + ca);
            }
            if let Some(ea) = after(&spec.template.spec.expire_after) {
                times.push(n.launched_at + ea);
            }
            for t in times.into_iter().filter(|&t| t > now) {
                let aligned = self.align(t, interval);
                next = Some(next.map_or(aligned, |x: i64| x.min(aligned)));
            }
        }
        if let Some(n) = next {
            self.next_disruption = Some(self.next_disruption.map_or(n, |x| x.min(n)));
        }
    }

    fn execute(
        &mut self,
        now: i64,
        c: disruption::Command,
        port: &mut dyn ClusterPort,
        cloud: &mut dyn CloudProvider,
    ) {
        let mut replacement = None;
        if let Some(offer) = &c.replacement {
            let Some(pool) = port
                .cluster()
                .pool_index(&c.node_pool)
                .map(|i| port.cluster().pools[i].clone())
            else {
                tracing::info!(nodepool = %c.node_pool, nodes = ?c.nodes, "NodePool gone; the disruption is not carried out");
                return;
            };
            self.next_claim += 1;
            let claim = NewClaim {
                name: format!("{}-{:05}", c.node_pool, self.next_claim),
                node_pool: c.node_pool.clone(),
                offers: vec![offer.clone()],
                requests: crate::scheduling::model::zero(),
                purpose: "replacement",
            };
            let how = Launch {
                pool: &pool,
                pods: 0,
                policy: &c.policy,
                ranked: Vec::new(),
                log: true,
                create: true,
            };
            match self.launch(now, &claim, how, port, cloud) {
                Ok(name) => replacement = Some(name),
                Err(reason) => {
                    self.emit(
                        port,
                        EventKind::NotLaunched {
                            claim: claim.name.clone(),
                            reason: format!("replacement for {:?}: {reason}", c.nodes),
                        },
                    );
                    return;
                }
            }
        }
        for name in &c.nodes {
            let deletion = Deletion {
                reason: Some(c.reason),
                since: now,
                replacement: replacement.clone(),
                policy: Some(c.policy.clone()),
            };
            if let Err(e) = port.mark_deleting(name, deletion) {
                tracing::warn!(node = %name, error = %e, "could not mark the node for disruption");
            }
        }
        self.emit(
            port,
            EventKind::Disrupting {
                nodes: c.nodes.clone(),
                reason: reason_label(c.reason),
                replacement,
                savings_per_hour: c.savings_per_hour,
                policy: c.policy.clone(),
            },
        );
    }
}

/// The asks of a drain interleaved node by node (the first pod of each node, then the second…),
/// so a node with many pods does not hold the others' drains behind it in a bounded queue.
pub fn drain_order(asks: Vec<Ask>) -> Vec<Ask> {
    let mut by_node: BTreeMap<String, VecDeque<Ask>> = BTreeMap::new();
    for a in asks {
        by_node.entry(a.node.clone()).or_default().push_back(a);
    }
    let mut out = Vec::new();
    while !by_node.is_empty() {
        by_node.retain(|_, q| {
            if let Some(a) = q.pop_front() {
                out.push(a);
            }
            !q.is_empty()
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_takes_one_pod_of_each_node_in_turn() {
        let ask = |pod: &str, node: &str| Ask {
            pod: pod.into(),
            node: node.into(),
            grace: None,
        };
        let order: Vec<String> = drain_order(vec![
            ask("a1", "a"),
            ask("a2", "a"),
            ask("a3", "a"),
            ask("b1", "b"),
            ask("c1", "c"),
            ask("c2", "c"),
        ])
        .into_iter()
        .map(|a| a.pod)
        .collect();
        assert_eq!(order, ["a1", "b1", "c1", "a2", "c2", "a3"]);
    }
}
