//! The Kubernetes world: `dovetail controller`. Reflectors observe the cluster
//! ([`observe`]), the controller core decides on a snapshot, and its effects become API calls
//! ([`act`]); NodeClaim status writes are in [`status`]. The NodeClaim lifecycle (registration,
//! initialization, liveness) is decided in the core ([`crate::lifecycle`]); this world only
//! writes what the core decided.
//!
//! The core loop runs on its own thread: the cloud provider and the core are synchronous, and
//! API calls are driven on the runtime that also runs the watches.

pub mod act;
pub mod fleet_watch;
pub mod leader;
mod main_loop;
pub mod observe;
pub mod pods;
pub mod policies;
pub mod record;
pub mod serve;
pub mod spam;
pub mod status;
pub mod stores;
pub mod throttle;

pub use main_loop::run;
pub use spam::{EVENT_BURST, EVENT_REFILL};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::Client;
use kube::runtime::events::Recorder;

use crate::cloud::Offer;
use crate::cloud::aws::AwsSettings;
use crate::metrics::Metrics;
use crate::scheduling::model::{capacity_type, capacity_type_label};

/// The finalizer on NodeClaims and Nodes: removed only once the instance is terminated.
pub const FINALIZER: &str = "dovetail.sh/termination";
/// The field manager of every write.
pub const FIELD_MANAGER: &str = "dovetail";
/// A NodeClaim's ranked offers (`type/zone/capacity-type/price` joined by `,`), so a restarted
/// controller can launch a claim it created but did not launch.
pub const ANNOTATION_OFFERS: &str = "dovetail.sh/offers";
/// The hash of the NodePool template (and node class) a claim was made from: drift.
pub const ANNOTATION_HASH: &str = "dovetail.sh/nodepool-hash";
/// Why a NodeClaim is being disrupted (`empty`, `underutilized`, `drifted`, `expired`).
pub const ANNOTATION_DISRUPTION: &str = "dovetail.sh/disruption-reason";
/// The NodeClaim that replaces this one: it must be Ready before this one drains.
pub const ANNOTATION_REPLACEMENT: &str = "dovetail.sh/replacement";
/// The consolidation policy whose move a disruption is (`dovetail top` shows it).
pub const ANNOTATION_DISRUPTION_POLICY: &str = "dovetail.sh/disruption-policy";
/// Why a NodeClaim was made (`provisioning`, `interruption`, a replacement).
pub const ANNOTATION_PURPOSE: &str = "dovetail.sh/purpose";

/// Whether a claim's annotation is the controller's own bookkeeping, which stays on the claim;
/// the others (its pool template's, `dovetail.sh/do-not-disrupt` among them) go onto its Node.
pub fn internal_annotation(key: &str) -> bool {
    [
        ANNOTATION_OFFERS,
        ANNOTATION_HASH,
        ANNOTATION_DISRUPTION,
        ANNOTATION_REPLACEMENT,
        ANNOTATION_DISRUPTION_POLICY,
        ANNOTATION_PURPOSE,
    ]
    .contains(&key)
}

/// Errors that stop the controller from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(
        "the caches did not sync within {0:?}; is the API server reachable and are the CRDs installed (helm install dovetail-crd)?"
    )]
    NotSynced(Duration),
    #[error("AWS: {0}")]
    Cloud(#[from] crate::cloud::CloudError),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error("{0}")]
    Runtime(String),
    #[error("leader election: {0}")]
    Lease(String),
    #[error("{0}")]
    Crds(String),
    #[error("interruption queue: {0}")]
    Queue(#[from] crate::interruption::QueueError),
}

/// Refuses CRDs older than this controller, or missing, with what to run (instead of reflectors
/// that fail on fields the cluster's schema drops, or crash-loop).
async fn check_crds(client: &kube::Client) -> Result<(), Error> {
    match crate::api::crds_problem(&crd_versions(client).await?) {
        Some(problem) => Err(Error::Crds(problem)),
        None => Ok(()),
    }
}

/// Each of our CRDs with its version annotation (`None`: not installed).
pub async fn crd_versions(client: &kube::Client) -> Result<Vec<(String, Option<String>)>, Error> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    let mut found = Vec::new();
    for crd in crate::api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let version = match api.get_opt(&name).await {
            Ok(Some(c)) => Some(
                c.metadata
                    .annotations
                    .and_then(|a| a.get(crate::api::CRD_VERSION_ANNOTATION).cloned())
                    .unwrap_or_default(),
            ),
            Ok(None) => None,
            Err(kube::Error::Api(s)) if s.code == 403 => {
                return Err(Error::Crds(format!(
                    "reading CustomResourceDefinition {name} is forbidden: the controller's ClusterRole needs get on apiextensions.k8s.io/customresourcedefinitions (the chart grants it)"
                )));
            }
            Err(e) => return Err(Error::Kube(e)),
        };
        found.push((name, version));
    }
    Ok(found)
}

/// Where the controller launches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cloud {
    /// EC2 (or an AWS API server such as moto).
    Aws,
    /// The in-memory cloud: instances that exist only in the controller (benchmarks, dry runs
    /// against a cluster double).
    Sim,
}

/// What `dovetail controller` is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub cloud: Cloud,
    pub aws: AwsSettings,
    /// The SQS queue of interruption events, if any.
    pub interruption_queue: Option<String>,
    /// Zones to decide for when no node class has resolved subnets.
    pub zones: Vec<String>,
    pub core: crate::controller::Settings,
    /// How long to wait for the caches at start.
    pub sync_timeout: Duration,
    /// The identity in Events, the User-Agent and the Lease (the pod name in a cluster).
    pub instance: String,
    pub operation: Operation,
    /// Limits and trust of fetching Policy components (`url`, `oci`).
    pub policy_fetch: crate::policy::source::FetchSettings,
    /// The namespaces whose labelled ConfigMaps may hold Policy components (empty: every
    /// namespace). A Policy naming a ConfigMap elsewhere is refused with the reason.
    pub policy_config_map_namespaces: Vec<String>,
}

/// How the process runs beside its replicas and is watched.
#[derive(Debug, Clone)]
pub struct Operation {
    /// `None`: a single replica that always acts (`--leader-elect=false`).
    pub leader_election: Option<leader::LeaderElection>,
    /// Where `/metrics` is served (`None`: not at all).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Where `/healthz` and `/readyz` are served.
    pub health_addr: Option<std::net::SocketAddr>,
    /// Client-side rate limit of the Kubernetes API: sustained requests per second…
    pub kube_qps: f32,
    /// …and the burst above it.
    pub kube_burst: u32,
    /// `/healthz` fails when the loop has not come round for this long.
    pub stuck_after: Duration,
}

impl Default for Operation {
    /// One replica, nothing served, Karpenter's client limits (200 QPS, burst 300).
    fn default() -> Self {
        Operation {
            leader_election: None,
            metrics_addr: None,
            health_addr: None,
            kube_qps: 200.0,
            kube_burst: 300,
            stuck_after: Duration::from_secs(120),
        }
    }
}

/// Stops the controller loop when set (SIGTERM, or a test).
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The connection every write goes through: the client, the runtime that drives it, and where
/// Events go.
#[derive(Clone)]
pub struct Kube {
    pub client: Client,
    /// Every call is waited on here.
    pub rt: crate::bridge::Bridge,
    pub events: Events,
    pub metrics: Arc<Metrics>,
    /// NodeClaims this process deleted, as the deletion answered, and once their finalizer is
    /// released, as tombstones for a few minutes: the informer may not have
    /// seen a deletion by the next tick (an empty node is removed one tick after it is marked),
    /// and a claim being deleted, or gone, is not deleted again.
    pub deleted_claims: DeletedClaims,
}

/// See [`Kube::deleted_claims`].
pub type DeletedClaims =
    Arc<std::sync::Mutex<std::collections::HashMap<String, crate::api::NodeClaim>>>;

/// Deletes an object the controller holds a finalizer on and releases it: once its instance
/// is gone nothing is left to wait for. An object already gone is not an error. `cached` is the
/// object as the informer holds it: a deletion it already shows is not asked for again, and the
/// finalizer is released against it, or against the deletion's answer (the object as the
/// deletion left it) — a read only when that version is stale (409 Conflict). Two writes per
/// object in a drain of hundreds of nodes, not four requests.
pub fn delete_released<K>(
    rt: &crate::bridge::Bridge,
    api: &kube::Api<K>,
    name: &str,
    cached: Option<&K>,
) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let current = match cached {
        Some(o) if o.meta().deletion_timestamp.is_some() => Some(o.clone()),
        _ => match rt.wait(api.delete(name, &kube::api::DeleteParams::default())) {
            // A Status instead of the object: gone at once, no finalizer held it.
            Ok(answer) => match answer.left() {
                Some(o) => Some(o),
                None => return Ok(()),
            },
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => return Err(e),
        },
    };
    release_finalizer(rt, api, name, current)
}

/// Removes the controller's own finalizer — only it: another controller's stays — from the
/// object as it is now, with its resourceVersion as the precondition, retried on 409 Conflict
/// with the fresh object. `known` is the object as last seen (read first when `None`). An
/// object gone (or replaced by another of its name), or without the finalizer, is not an error.
pub fn release_finalizer<K>(
    rt: &crate::bridge::Bridge,
    api: &kube::Api<K>,
    name: &str,
    mut known: Option<K>,
) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut attempts = 0;
    // The object meant: one of the same name read later (a Node named for a reused address)
    // is another, and its finalizer not this release's to remove.
    let uid = known.as_ref().and_then(|o| o.meta().uid.clone());
    loop {
        let object = match known.take() {
            Some(o) => o,
            None => match rt.wait(api.get(name)) {
                Ok(o) if uid.is_some() && o.meta().uid != uid => return Ok(()),
                Ok(o) => o,
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
                Err(e) => return Err(e),
            },
        };
        let meta = object.meta();
        let finalizers = meta.finalizers.clone().unwrap_or_default();
        if !finalizers.iter().any(|f| f == FINALIZER) {
            return Ok(());
        }
        let left: Vec<&String> = finalizers.iter().filter(|f| *f != FINALIZER).collect();
        let release = serde_json::json!({"metadata": {
            "finalizers": left,
            "resourceVersion": meta.resource_version,
        }});
        match rt.wait(api.patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&release),
        )) {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 && attempts < 5 => attempts += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Where Events go: a bounded queue drained by one task, so a decision never waits on an Event
/// and a burst (20,000 pods nominated at once) costs a bounded amount of memory. When the
/// queue is full, further Events are dropped and counted (Events are for people; kube's own
/// recorder drops the same way). A storm of one Event (same object, same reason) is cut down
/// before it is queued, as client-go's spam filter does: a burst of [`EVENT_BURST`], then one
/// per [`EVENT_REFILL`]; the recorder aggregates what passes into one Event with a count.
#[derive(Clone)]
pub struct Events {
    tx: tokio::sync::mpsc::Sender<(
        k8s_openapi::api::core::v1::ObjectReference,
        kube::runtime::events::Event,
    )>,
    spam: Arc<std::sync::Mutex<spam::SpamFilter>>,
    metrics: Arc<crate::metrics::Metrics>,
}

/// Events waiting to be published, at most.
const EVENT_QUEUE: usize = 1024;

impl Events {
    /// Starts the publishing task on `rt`.
    pub fn start(
        rt: &tokio::runtime::Handle,
        recorder: Recorder,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Events {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(
            k8s_openapi::api::core::v1::ObjectReference,
            kube::runtime::events::Event,
        )>(EVENT_QUEUE);
        rt.spawn(async move {
            while let Some((reference, event)) = rx.recv().await {
                if let Err(e) = recorder.publish(&event, &reference).await {
                    tracing::debug!(error = %e, reason = %event.reason, "could not publish an Event");
                }
            }
        });
        Events {
            tx,
            spam: Arc::default(),
            metrics,
        }
    }

    /// Whether an Event of this object and reason may go out now ([`spam::SpamFilter`]).
    fn admit(&self, object: String, reason: &str, now: i64) -> bool {
        let mut spam = self.spam.lock().unwrap_or_else(|p| p.into_inner());
        spam.admit(object, reason, now)
    }

    /// Queues an Event; the note is bounded (the API takes at most 1 kB).
    pub fn publish(
        &self,
        reference: k8s_openapi::api::core::v1::ObjectReference,
        type_: kube::runtime::events::EventType,
        reason: &str,
        note: String,
    ) {
        let object = format!(
            "{}/{}/{}",
            reference.kind.as_deref().unwrap_or_default(),
            reference.namespace.as_deref().unwrap_or_default(),
            reference.name.as_deref().unwrap_or_default()
        );
        if !self.admit(object, reason, unix_now()) {
            self.metrics
                .events_not_published
                .get_or_create(&vec![("why", "suppressed".to_string())])
                .inc();
            return;
        }
        let note = crate::bounded::bounded(&note, 1000);
        let event = kube::runtime::events::Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if self.tx.try_send((reference, event)).is_err() {
            let c = self
                .metrics
                .events_not_published
                .get_or_create(&vec![("why", "dropped".to_string())]);
            let n = c.inc() + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "Event queue full; dropping Events");
            }
        }
    }
}

/// Unix milliseconds now: what a batch window is measured in.
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Unix seconds of a Kubernetes timestamp.
pub fn timestamp(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> i64 {
    t.0.as_second()
}

/// RFC 3339 of Unix seconds.
pub fn rfc3339(t: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(t)
        .unwrap_or_default()
        .to_string()
}

/// Offers as the NodeClaim annotation records them.
pub fn format_offers(offers: &[Offer]) -> String {
    offers
        .iter()
        .take(60)
        .map(|o| {
            format!(
                "{}/{}/{}/{}",
                o.instance_type,
                o.zone,
                capacity_type_label(o.capacity_type),
                o.price
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Offers back from the annotation (malformed entries are skipped).
pub fn parse_offers(s: &str) -> Vec<Offer> {
    s.split(',')
        .filter_map(|o| {
            let mut it = o.split('/');
            Some(Offer {
                instance_type: it.next()?.to_string(),
                zone: it.next()?.to_string(),
                capacity_type: capacity_type(it.next()?)?,
                price: it.next()?.parse().ok()?,
            })
        })
        .collect()
}

/// Why a watch failed, naming the resource; a 403 names the RBAC rule that is missing.
pub fn watch_failure(resource: &str, error: &dyn std::fmt::Display) -> String {
    let text = error.to_string();
    if text.contains("403") || text.contains("Forbidden") || text.contains("forbidden") {
        let (plural, group) = resource.split_once('.').unwrap_or((resource, ""));
        format!(
            "watching {resource} is forbidden: the controller's ClusterRole needs verbs [list, watch] on resources [{plural}] in apiGroups [\"{group}\"] (the chart grants them; is the ServiceAccount bound?): {text}"
        )
    } else {
        format!("watching {resource} failed: {text}")
    }
}
