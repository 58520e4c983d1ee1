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

mod disrupt;
pub mod events;
mod interrupt;
mod lifecycle;
mod provision;
mod terminate;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

pub use crate::disruption::{FeatureGates, reason_label};
pub use crate::interruption::Interruptions;
pub use events::{DisruptionRound, EventKind, RANKED_SHOWN, RankedOffer};

use crate::api::duration;
use crate::capacity::{Catalog, Resources};
use crate::cloud::{CloudProvider, Instance, LaunchRequest};
use crate::cluster::{self, Cluster, DO_NOT_DISRUPT, Deletion, Node};
use crate::disruption::{self, Note};
use crate::interruption::{Action, Kind as InterruptionKind};
use crate::policy::PolicyRegistry;
use crate::provisioning::{self, Pool};
use crate::scheduling::model::capacity_type_label;
use crate::scheduling::{InstanceTypes, PendingPod};

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
    /// A pod became pending at this time (Unix milliseconds: a one-second idle window is
    /// measured finer than the whole second a tick reads): it opens or extends the
    /// provisioning batch.
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
    /// The world's clock now, Unix milliseconds: a provisioning batch closes on it once its
    /// pods have been idle for the whole window, not at the next whole second.
    fn clock_ms(&self) -> i64;
    /// Creates the NodeClaim objects (each with its termination finalizer) before their
    /// launch; one result per claim, in order. One call per batch, so a world that talks to an
    /// API server can make the writes concurrently.
    fn create_claims(&mut self, claims: &[NewClaim]) -> Vec<Result<(), PortError>>;
    /// The claim's instance was launched: it is an in-flight node from now on.
    fn launched(&mut self, claim: &NewClaim, node: Node) -> Result<(), PortError>;
    /// A claim that could not be launched goes away again.
    fn abandon_claim(&mut self, claim: &str, reason: &str);
    /// A pending pod is to land on a node (Ready or in flight); the snapshot shows it there
    /// from now on ([`Cluster::nominate`]).
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
    /// With `initialized`, the Node is Ready already: set Initialized in the same write.
    fn register(&mut self, claim: &str, node: &str, initialized: bool) -> Result<(), PortError>;
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
    /// Open provisioning batch: (first pod, last pod), Unix milliseconds.
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
    /// Per NodePool, since when consolidation has held its busier nodes back while lighter
    /// ones settle (`disruption::decide`).
    holding_since: BTreeMap<String, i64>,
}

impl Controller {
    /// A controller starting at `now` (Unix seconds).
    pub fn new(settings: Settings, ctx: Context, now: i64) -> Self {
        // Not on the first tick: EC2's listing can lag a launch the previous term made in its
        // last seconds, and that claim is not to be taken for one whose instance vanished.
        let next_gc = now + settings.gc_interval.as_secs() as i64;
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
            holding_since: BTreeMap::new(),
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

    /// A pod became pending at `at_ms` (Unix milliseconds): it opens or extends the
    /// provisioning batch.
    pub fn pod_pending(&mut self, at_ms: i64) {
        self.batch = Some(match self.batch {
            Some((first, last)) => (first, last.max(at_ms)),
            None => (at_ms, at_ms),
        });
    }

    /// Pending pods, if any, get a batch.
    pub fn kick(&mut self, cluster: &Cluster, now: i64) {
        if self.batch.is_none() && cluster.pods.values().any(|p| p.node.is_none()) {
            self.batch = Some((now * 1000, now * 1000));
        }
    }

    /// Something changed that disruption should look at (at the next interval).
    pub fn changed(&mut self, now: i64) {
        let step = self.settings.disruption_interval.as_secs().max(1) as i64;
        let next = self.align(now + 1, step);
        self.next_disruption = Some(self.next_disruption.map_or(next, |n| n.min(next)));
    }

    /// When the open batch closes, Unix milliseconds.
    fn batch_close(&self) -> Option<i64> {
        let (first, last) = self.batch?;
        Some(
            (last + self.settings.batch_idle.as_millis() as i64)
                .min(first + self.settings.batch_max.as_millis() as i64),
        )
    }

    /// When the controller next has something to do (Unix seconds, rounded up), if anything.
    pub fn next_wake(&self, cluster: &Cluster, now: i64) -> Option<i64> {
        self.next_wake_ms(cluster, now)
            .map(|t| (t + 999).div_euclid(1000))
    }

    /// When the controller next has something to do, Unix milliseconds, if anything.
    pub fn next_wake_ms(&self, cluster: &Cluster, now: i64) -> Option<i64> {
        let mut next: Option<i64> = None;
        let mut at_ms = |t: i64| next = Some(next.map_or(t, |n: i64| n.min(t)));
        if let Some(close) = self.batch_close() {
            at_ms(close);
        }
        let mut at = |t: i64| at_ms(t * 1000);
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
            .filter(|n| {
                n.lifecycle.joined.is_none() && !n.lifecycle.registered && n.deletion.is_none()
            })
            .map(|n| {
                let due = n.lifecycle.launched.unwrap_or(n.launched_at)
                    + self.settings.registration_ttl.as_secs() as i64
                    + 1;
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
            && close <= port.clock_ms()
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

    fn controller(now: i64) -> Controller {
        let its = InstanceTypes {
            types: Vec::new(),
            zones: Vec::new(),
        };
        let engine = crate::policy::PolicyEngine::new(Default::default()).expect("an engine");
        let registry = std::sync::Arc::new(PolicyRegistry::new(engine));
        let ctx = Context::new(its, Catalog::default(), registry);
        Controller::new(Settings::default(), ctx, now)
    }

    #[test]
    fn a_batch_closes_once_its_pods_have_been_idle_for_the_whole_window() {
        let mut c = controller(50);
        let cluster = Cluster::default();
        c.pod_pending(53_670);
        c.pod_pending(53_900);
        // One second after the last pod, not at the next whole second (54).
        assert_eq!(c.batch_close(), Some(54_900));
        assert_eq!(c.next_wake_ms(&cluster, 53), Some(54_900));
        assert_eq!(c.next_wake(&cluster, 53), Some(55));
        // A pod seen late but stamped earlier does not shorten the window.
        c.pod_pending(53_100);
        assert_eq!(c.batch_close(), Some(54_900));
        // Pods that keep coming close it at the longest window after the first.
        for t in (54_000..70_000).step_by(500) {
            c.pod_pending(t);
        }
        assert_eq!(c.batch_close(), Some(63_670));
    }

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
