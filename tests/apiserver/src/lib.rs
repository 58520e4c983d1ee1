//! An API server double: a small HTTP server on loopback that speaks enough of the Kubernetes
//! API for kube's `Client`, reflectors and watches to run unchanged against it. It is a test
//! double, not a product; each behaviour it imitates is named after the API convention:
//!
//! - **Resource paths**: `/api/v1[/namespaces/{ns}]/{plural}[/{name}[/{subresource}]]` and
//!   `/apis/{group}/{version}[/namespaces/{ns}]/{plural}[/{name}[/{subresource}]]`; any plural
//!   is stored (no discovery, no schema validation).
//! - **resourceVersion**: one counter for every write; lists carry it, objects carry theirs.
//! - **List and watch**: a list returns every object (no pagination); `watch=true` streams
//!   `ADDED`/`MODIFIED`/`DELETED` after the given resourceVersion from a bounded history, and
//!   answers an `ERROR` event with `410 Gone` for a version older than that history (as etcd
//!   compaction does). `labelSelector` with `k=v` terms filters lists and watches.
//! - **Optimistic concurrency**: a replace or patch that carries `metadata.resourceVersion` is
//!   refused with 409 Conflict (the real message) unless it is the stored object's version.
//! - **Writes**: create (409 AlreadyExists), get (404 NotFound), replace, merge patch (RFC 7386),
//!   JSON patch (RFC 6902: add, replace, remove), strategic merge and server-side apply applied
//!   as a merge of the fields sent (field manager recorded in the request log).
//! - **Field ownership** (server-side apply): every field a merge, strategic merge or apply
//!   patch sets is owned by its field manager; an apply that would change a field another
//!   manager owns is refused with 409 `Conflict` unless `force=true`, as the real server does
//!   (this is what makes a Lease safe for leader election). Only patched fields are tracked.
//! - **Status subresource**: `…/status` writes change only `status`; writes to the object
//!   ignore `status`, as for resources with the status subresource.
//! - **Graceful deletion with finalizers**: delete sets `deletionTimestamp` while finalizers
//!   remain; the object goes when the last finalizer is removed.
//! - **Pod graceful deletion** (kubernetes.io "Pod Lifecycle: Termination of Pods";
//!   `pkg/registry/core/pod/strategy.go` `CheckGracefulDelete` and the generic registry's
//!   `BeforeDelete`): deleting a pod bound to a node that has not finished sets
//!   `deletionTimestamp` to now + its grace and `deletionGracePeriodSeconds` to the grace — the
//!   request's `gracePeriodSeconds`, else the pod's `terminationGracePeriodSeconds` (30 when
//!   unset, as API defaulting sets it) — and keeps the pod until the kubelet, having stopped it,
//!   deletes it with grace 0. An unbound or finished pod, or a grace of 0, goes at once. A later
//!   delete may shorten the grace, never lengthen it. (The kubelet is an actor of the end-to-end
//!   harness, not of this double.)
//! - **PodDisruptionBudgets** (see `disruption.rs`): a disruption-controller actor writes each
//!   budget's status as kube-controller-manager does (Ready pods healthy, expected pods from
//!   the owning workloads' scale), and the Eviction subresource decides from that status alone
//!   as the real registry does (429 with the real message and cause, 500 for a pod two budgets
//!   select, unready pods under `unhealthyPodEvictionPolicy`); an evicted pod is deleted as
//!   above, with its own grace.
//! - **generation** (API conventions, "metadata"): 1 at creation, incremented by a write that
//!   changes anything but `metadata` and `status`.
//! - **generateName** (API conventions, "Idempotency"): a create without a name gets the prefix
//!   and five random characters.
//! - **Garbage collection** (kubernetes.io "Garbage Collection", background propagation): when
//!   an object goes, its dependents — objects whose `ownerReferences` name its uid and no other
//!   owner that still exists — are deleted as a user's delete would (pods gracefully). It runs at
//!   once, where kube-controller-manager's collector takes a moment.
//! - **Field validation** (`fieldValidation`, KEP-2885; `kubectl` sends `Strict` since 1.27):
//!   fields a built-in kind does not declare (Pod, Node, Lease, Event, PodDisruptionBudget,
//!   ConfigMap, ReplicaSet, Deployment) are refused with 400 under `Strict`, and otherwise dropped
//!   — with a `Warning` header under `Warn`, the default for API clients. Custom resources are
//!   checked by the validator only (no pruning).
//! - **JSON patch `test`**: a failed `test` operation refuses the whole patch with 422, as the
//!   real server answers (`NewGenericServerResponse(StatusUnprocessableEntity)`).
//! - **Schema validation** (opt-in, [`ApiServer::validate_with`]): HTTP creates and updates
//!   (status writes included) are checked by a validator the test hands in — the CRDs' own schema
//!   and CEL rules, as the real server applies them — and refused with 422 `Invalid`. An update is
//!   refused only for violations the stored object did not already have, as CRD validation
//!   ratcheting (KEP-4008, on by default since 1.30) lets unchanged invalid fields through: a
//!   status write to an old, now-invalid object succeeds. Objects put by the test itself
//!   ([`ApiServer::put`]) are not checked: they stand for old objects or a CRD without
//!   validation.
//! - **Request log**: method, path, query, body and field manager of every request.
//! - **Faults**: the next N writes can be answered 409 or 429 (a fault-injecting mode).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::broadcast;

mod disruption;
mod fields;

/// How many watch events are kept for watches that resume from a resourceVersion.
const HISTORY: usize = 100_000;

/// One request as the double received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: String,
    pub field_manager: Option<String>,
    pub user_agent: String,
    /// When it arrived.
    pub at: std::time::Instant,
    /// The status code it was answered with (0 while in flight).
    pub code: u16,
}

/// Another writer's change, made to an object just before the next write that names a
/// resourceVersion reaches it (a race the test stages).
type Race = Box<dyn FnOnce(&mut Value) + Send>;

/// Where a resource lives: its collection (`group/version/plural`) and namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub collection: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone)]
struct WatchEvent {
    rv: u64,
    collection: String,
    namespace: String,
    kind: &'static str,
    /// Shared: every watcher's receiver gets its own copy of the event, and a deep copy of the
    /// object for each was most of the double's work under a scale-up.
    object: Arc<Value>,
}

/// One change to a stored object, as a watch event carries it (see `ApiServer::changes`).
#[derive(Debug, Clone)]
pub struct Change {
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    /// The object as written (for `DELETED`, as it was last).
    pub object: Arc<Value>,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// Shared with the watch events that carry them: a commit stores and sends one object.
    objects: BTreeMap<Key, Arc<Value>>,
    history: VecDeque<WatchEvent>,
    log: Vec<Request>,
    /// Status codes to answer the next writes with.
    faults: VecDeque<u16>,
    /// What `GET /version` reports (`major`, `minor`).
    version: (String, String),
    /// Object → field (a JSON pointer, `/spec/holderIdentity`) → the field manager that owns it.
    owners: BTreeMap<Key, BTreeMap<String, String>>,
    /// Staged races, by object.
    races: Vec<(Key, Race)>,
    /// The garbage collector's graph (kube-controller-manager's `GraphBuilder.uidToNode`): each
    /// stored object by uid, and the objects whose `ownerReferences` name a uid. Kept with every
    /// write, so an owner's deletion finds its dependents without scanning the store (a scan per
    /// deletion made a 40,000-pod scale-down quadratic).
    /// Stored objects per uid (a count: a test may give two objects one uid).
    uids: HashMap<String, usize>,
    dependents: HashMap<String, BTreeSet<Key>>,
}

/// The uids an object's `ownerReferences` name.
fn owner_uids(object: &Value) -> impl Iterator<Item = &str> {
    object["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["uid"].as_str())
}

impl State {
    /// The objects of one collection (and namespace): a contiguous range of the store, since a
    /// key orders by collection, then namespace. A list reads its own objects, not the store.
    fn range<'a>(
        &'a self,
        collection: &str,
        namespace: Option<&str>,
    ) -> impl Iterator<Item = (&'a Key, &'a Value)> {
        let from = Key {
            collection: collection.into(),
            namespace: namespace.unwrap_or_default().into(),
            name: String::new(),
        };
        let (collection, namespace) = (collection.to_string(), namespace.map(str::to_string));
        self.objects
            .range(from..)
            .take_while(move |(k, _)| {
                k.collection == collection && namespace.as_ref().is_none_or(|n| *n == k.namespace)
            })
            .map(|(k, v)| (k, &**v))
    }

    /// A stored object, to change and write back.
    fn copy(&self, key: &Key) -> Option<Value> {
        self.objects.get(key).map(|o| Value::clone(o))
    }

    /// Takes `key`'s stored version out of the collector's graph.
    fn unindex(&mut self, key: &Key) {
        let Some(old) = self.objects.get(key) else {
            return;
        };
        if let Some(uid) = old["metadata"]["uid"].as_str()
            && let Some(n) = self.uids.get_mut(uid)
        {
            *n -= 1;
            if *n == 0 {
                self.uids.remove(uid);
            }
        }
        for owner in owner_uids(old) {
            if let Some(d) = self.dependents.get_mut(owner) {
                d.remove(key);
                if d.is_empty() {
                    self.dependents.remove(owner);
                }
            }
        }
    }

    /// Puts `object`, about to be stored under `key`, into the collector's graph.
    fn index(&mut self, key: &Key, object: &Value) {
        if let Some(uid) = object["metadata"]["uid"].as_str() {
            *self.uids.entry(uid.to_string()).or_default() += 1;
        }
        for owner in owner_uids(object) {
            self.dependents
                .entry(owner.to_string())
                .or_default()
                .insert(key.clone());
        }
    }
}

/// The running double.
#[derive(Clone)]
pub struct ApiServer {
    state: Arc<Mutex<State>>,
    /// Held across a patch, so the ownership check and the write are one step.
    patching: Arc<Mutex<()>>,
    events: broadcast::Sender<WatchEvent>,
    validator: Arc<std::sync::OnceLock<Validator>>,
    pub addr: SocketAddr,
}

/// Checks an object as it would be stored; the violations, empty when it is valid.
pub type Validator = Box<dyn Fn(&Value) -> Vec<String> + Send + Sync>;

impl ApiServer {
    /// Starts the double on a free loopback port, on the given runtime.
    pub fn start(rt: &tokio::runtime::Runtime) -> ApiServer {
        let (tx, _) = broadcast::channel(HISTORY);
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("a loopback port");
        let addr = listener.local_addr().expect("an address");
        let server = ApiServer {
            state: Arc::new(Mutex::new(State {
                version: ("1".into(), "33".into()),
                ..Default::default()
            })),
            patching: Arc::default(),
            events: tx,
            validator: Arc::default(),
            addr,
        };
        let s = server.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let s = s.clone();
                async move { s.handle(method, uri, headers, body) }
            },
        );
        rt.spawn(async move {
            axum::serve(listener, app).await.expect("serving");
        });
        let s = server.clone();
        let mut changes = server.events.subscribe();
        rt.spawn(async move {
            // kube-controller-manager's disruption controller: on every change that concerns a
            // budget, and every second (disrupted pods time out).
            let mut last = tokio::time::Instant::now();
            loop {
                let due = last + std::time::Duration::from_secs(1);
                let mut concerned = match tokio::time::timeout_at(due, changes.recv()).await {
                    Ok(Ok(e)) => disruption::concerns(&e.collection),
                    Ok(Err(broadcast::error::RecvError::Closed)) => return,
                    Ok(Err(broadcast::error::RecvError::Lagged(_))) | Err(_) => true,
                };
                // Everything already queued is one pass.
                while let Ok(e) = changes.try_recv() {
                    concerned |= disruption::concerns(&e.collection);
                }
                if concerned || tokio::time::Instant::now() >= due {
                    s.sync_budgets();
                    last = tokio::time::Instant::now();
                }
            }
        });
        server
    }

    /// One pass of the disruption controller over every budget (see `disruption.rs`).
    fn sync_budgets(&self) {
        let mut st = self.state.lock().unwrap();
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        // A cluster without budgets costs one lookup, and a budget reads only what it counts.
        let range = |st: &'_ State, collection: &str, namespace: Option<&str>| {
            st.range(collection, namespace)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Vec<_>>()
        };
        let pdbs = range(&st, disruption::PDBS, None);
        let mut updates = Vec::new();
        for (k, pdb) in pdbs {
            let read: Vec<(&str, Vec<(Key, Value)>)> = disruption::READS
                .iter()
                .map(|c| (*c, range(&st, c, Some(&k.namespace))))
                .collect();
            let ns = disruption::Namespace {
                objects: read
                    .iter()
                    .flat_map(|(c, objects)| objects.iter().map(move |(_, v)| (*c, v)))
                    .collect(),
            };
            let status = disruption::status(&pdb, &ns, now);
            if status != pdb["status"] {
                let mut new = pdb.clone();
                new["status"] = status;
                updates.push((k, new));
            }
        }
        for (k, new) in updates {
            self.commit(&mut st, k, new, "MODIFIED");
        }
    }

    /// Stages another writer's change to an object: made just before the next write that
    /// names a resourceVersion reaches it, so that write is stale (409) and must be retried
    /// with the fresh object.
    pub fn race_next_write(
        &self,
        collection: &str,
        namespace: &str,
        name: &str,
        change: impl FnOnce(&mut Value) + Send + 'static,
    ) {
        let key = Key {
            collection: collection.into(),
            namespace: namespace.into(),
            name: name.into(),
        };
        self.state
            .lock()
            .unwrap()
            .races
            .push((key, Box::new(change)));
    }

    /// Checks every HTTP create and update with `validator` from now on (set once).
    pub fn validate_with(&self, validator: Validator) {
        let _ = self.validator.set(validator);
    }

    /// 422 Invalid, as the real server answers, when the validator refuses `object` for
    /// something `old` (the stored version, on an update) did not already break.
    fn invalid(&self, object: &Value, old: Option<&Value>) -> Option<Response> {
        let validate = self.validator.get()?;
        let before = old.map(validate).unwrap_or_default();
        let violations: Vec<String> = validate(object)
            .into_iter()
            .filter(|v| !before.contains(v))
            .collect();
        if violations.is_empty() {
            return None;
        }
        let kind = object["kind"].as_str().unwrap_or("object");
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        Some(status(
            422,
            "Invalid",
            &format!("{kind} \"{name}\" is invalid: {}", violations.join(", ")),
        ))
    }

    /// A kube client configuration pointing here.
    pub fn config(&self) -> kube::Config {
        let mut c = kube::Config::new(format!("http://{}", self.addr).parse().expect("a URL"));
        c.default_namespace = "default".into();
        // Every answer as the double gave it: no client-side retry of a 429.
        c.default_retry = false;
        c
    }

    /// A kubeconfig pointing here, for a controller run as its own process.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: double, cluster: {{server: \"http://{}\"}}}}]\nusers: [{{name: double, user: {{}}}}]\ncontexts: [{{name: double, context: {{cluster: double, user: double, namespace: default}}}}]\ncurrent-context: double\n",
            self.addr
        )
    }

    /// Plays kubelet for a launched NodeClaim: registers a Ready Node named `node` with the
    /// claim's providerID, labels and allocatable, as a joining node does. Returns the name.
    pub fn register_node(&self, claim: &Value, node: &str) -> String {
        let mut labels = claim["metadata"]["labels"].clone();
        labels["kubernetes.io/hostname"] = node.into();
        self.put(
            "v1/nodes",
            json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": node, "labels": labels},
                "spec": {"providerID": claim["status"]["providerID"]},
                "status": {
                    "allocatable": claim["status"]["allocatable"],
                    "capacity": claim["status"]["capacity"],
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "", "lastTransitionTime": now_rfc3339()}],
                },
            }),
        );
        node.to_string()
    }

    /// Sets the Kubernetes version `GET /version` reports (default 1.33).
    pub fn set_version(&self, major: &str, minor: &str) {
        self.state.lock().unwrap().version = (major.into(), minor.into());
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Request> {
        self.state.lock().unwrap().log.clone()
    }

    /// How many requests so far.
    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().log.len()
    }

    /// The next `n` writes are answered with `code` (409 Conflict or 429 TooManyRequests).
    pub fn inject(&self, code: u16, n: usize) {
        let mut st = self.state.lock().unwrap();
        st.faults.extend(std::iter::repeat_n(code, n));
    }

    /// Injected faults not yet answered.
    pub fn faults_left(&self) -> usize {
        self.state.lock().unwrap().faults.len()
    }

    /// Objects of a collection (`v1/pods`, `dovetail.sh/v1/nodeclaims`).
    pub fn list(&self, collection: &str) -> Vec<Value> {
        let st = self.state.lock().unwrap();
        st.range(collection, None).map(|(_, v)| v.clone()).collect()
    }

    /// Shows `f` every object of a collection, in list order, without copying them: a test's
    /// actor that reads a large collection (a benchmark's kube-scheduler listing 100k pods)
    /// keeps out of the way of the requests it serves. The double is locked meanwhile.
    /// Returns the resourceVersion the objects were read at, as a list's `metadata` does: a
    /// reader that keeps a cache follows on from it with `changes`.
    pub fn visit(&self, collection: &str, mut f: impl FnMut(&Value)) -> u64 {
        let st = self.state.lock().unwrap();
        st.range(collection, None).for_each(|(_, v)| f(v));
        st.rv
    }

    /// What a watch of `collection` from resourceVersion `since` would deliver now: each
    /// change after it, oldest first (`ADDED`, `MODIFIED`, `DELETED` and the object as
    /// written), and the version the reader is then at. `None` where the watch answers
    /// `410 Gone` (the history no longer reaches back to `since`; for `since` 0, once any of
    /// the history is gone, where the watch would start from now): the reader lists again, as
    /// an informer does. For a test's actors that keep a cache of a large collection, as
    /// kube-scheduler's informer does, instead of reading all of it each round.
    pub fn changes(&self, collection: &str, since: u64) -> Option<(u64, Vec<Change>)> {
        let st = self.state.lock().unwrap();
        let oldest = st.history.front().map_or(st.rv + 1, |e| e.rv);
        if since + 1 < oldest {
            return None;
        }
        // The history is in resourceVersion order: start at the first event after `since`.
        let from = st.history.partition_point(|e| e.rv <= since);
        let changes = st
            .history
            .range(from..)
            .filter(|e| e.collection == collection)
            .map(|e| Change {
                kind: e.kind,
                object: e.object.clone(),
            })
            .collect();
        Some((st.rv, changes))
    }

    /// One object.
    pub fn get(&self, collection: &str, namespace: &str, name: &str) -> Option<Value> {
        let st = self.state.lock().unwrap();
        st.copy(&Key {
            collection: collection.into(),
            namespace: namespace.into(),
            name: name.into(),
        })
    }

    /// Creates or replaces an object as a client would (status included): test fixtures and
    /// the kubelet/scheduler the tests play.
    pub fn put(&self, collection: &str, mut object: Value) {
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = object["metadata"]["name"]
            .as_str()
            .expect("a name")
            .to_string();
        let key = Key {
            collection: collection.into(),
            namespace: ns,
            name,
        };
        let mut st = self.state.lock().unwrap();
        let kind = if st.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        if kind == "ADDED" {
            stamp_put(&mut object, st.rv + 1);
        }
        self.commit(&mut st, key, object, kind);
    }

    /// Deletes an object outright (a user's `kubectl delete` honours finalizers: see `delete`).
    pub fn delete(&self, collection: &str, namespace: &str, name: &str) {
        let key = Key {
            collection: collection.into(),
            namespace: namespace.into(),
            name: name.into(),
        };
        let mut st = self.state.lock().unwrap();
        if let Some(obj) = st.copy(&key) {
            self.delete_gracefully(&mut st, key, obj);
        }
    }

    /// Returns the object as stored: with its new resourceVersion, which the answer to the write
    /// carries (a client writes its next change against it).
    fn commit(
        &self,
        st: &mut State,
        key: Key,
        mut object: Value,
        kind: &'static str,
    ) -> Arc<Value> {
        if kind == "MODIFIED"
            && let Some(old) = st.objects.get(&key)
        {
            object["metadata"]["generation"] = next_generation(old, &object).into();
        }
        st.rv += 1;
        object["metadata"]["resourceVersion"] = st.rv.to_string().into();
        let event = WatchEvent {
            rv: st.rv,
            collection: key.collection.clone(),
            namespace: key.namespace.clone(),
            kind,
            object: Arc::new(object),
        };
        let object = event.object.clone();
        st.unindex(&key);
        if kind == "DELETED" {
            st.owners.remove(&key);
            st.objects.remove(&key);
        } else {
            st.index(&key, &object);
            st.objects.insert(key, object.clone());
        }
        if st.history.len() == HISTORY {
            st.history.pop_front();
        }
        st.history.push_back(event.clone());
        let uid = event.object["metadata"]["uid"].clone();
        let _ = self.events.send(event);
        if kind == "DELETED" && !uid.is_null() {
            self.collect_dependents(st, &uid);
        }
        object
    }

    /// Background garbage collection: the dependents of a deleted owner with no other owner
    /// left are deleted, as a user's delete would (pods gracefully, finalizers honoured).
    fn collect_dependents(&self, st: &mut State, uid: &Value) {
        let Some(uid) = uid.as_str() else {
            return;
        };
        let dependents: Vec<Key> = st
            .dependents
            .get(uid)
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default();
        let orphans: Vec<(Key, Value)> = dependents
            .into_iter()
            .filter_map(|k| st.objects.get(&k).map(|o| (k, o)))
            .filter(|(_, o)| {
                owner_uids(o).all(|u| u == uid || !st.uids.contains_key(u))
                    && o["metadata"]["deletionTimestamp"].is_null()
            })
            .map(|(k, o)| (k, Value::clone(o)))
            .collect();
        for (k, o) in orphans {
            if k.collection == disruption::PODS {
                self.delete_pod(st, k, o, None);
            } else {
                self.delete_gracefully(st, k, o);
            }
        }
    }

    /// A pod's deletion: graceful while bound and running (see the module doc), else at once.
    fn delete_pod(
        &self,
        st: &mut State,
        key: Key,
        mut pod: Value,
        requested: Option<i64>,
    ) -> Value {
        let own = pod["spec"]["terminationGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(30);
        let bound = pod["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty());
        let finished = matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        );
        let mut grace = requested.unwrap_or(own).max(0);
        if !bound || finished {
            grace = 0;
        }
        if let Some(already) = pod["metadata"]["deletionGracePeriodSeconds"].as_i64() {
            grace = grace.min(already);
        }
        if grace == 0 {
            return self.delete_gracefully(st, key, pod);
        }
        let at = k8s_openapi::jiff::Timestamp::now()
            .round(k8s_openapi::jiff::Unit::Second)
            .unwrap_or_default()
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(grace))
            .unwrap_or_default();
        pod["metadata"]["deletionTimestamp"] = at.to_string().into();
        pod["metadata"]["deletionGracePeriodSeconds"] = grace.into();
        Value::clone(&self.commit(st, key, pod, "MODIFIED"))
    }

    /// Deletion with finalizers: a deletionTimestamp while any remain, then gone. The answer is
    /// the object as the deletion left it (its new resourceVersion included), as the registry's
    /// `Delete` returns it (`staging/src/k8s.io/apiserver/pkg/registry/generic/registry/store.go`).
    fn delete_gracefully(&self, st: &mut State, key: Key, mut obj: Value) -> Value {
        let finalizers = obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if finalizers {
            if obj["metadata"]["deletionTimestamp"].is_null() {
                obj["metadata"]["deletionTimestamp"] = now_rfc3339().into();
                return Value::clone(&self.commit(st, key, obj, "MODIFIED"));
            }
            obj
        } else {
            Value::clone(&self.commit(st, key, obj, "DELETED"))
        }
    }

    /// Answers a request and records it, with its status code, in the log.
    fn handle(&self, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
        let (index, response) = self.answer(method, uri, headers, body);
        if let Some(r) = self.state.lock().unwrap().log.get_mut(index) {
            r.code = response.status().as_u16();
        }
        response
    }

    fn answer(
        &self,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> (usize, Response) {
        let query: BTreeMap<String, String> = uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.to_string(), percent_decode(v)))
            })
            .collect();
        let text = String::from_utf8_lossy(&body).to_string();
        let index;
        {
            let mut st = self.state.lock().unwrap();
            st.log.push(Request {
                method: method.to_string(),
                path: uri.path().to_string(),
                query: uri.query().unwrap_or_default().to_string(),
                body: text.clone(),
                field_manager: query.get("fieldManager").cloned(),
                user_agent: headers
                    .get("user-agent")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string(),
                at: std::time::Instant::now(),
                code: 0,
            });
            index = st.log.len() - 1;
            if method != Method::GET
                && let Some(code) = st.faults.pop_front()
            {
                let reason = if code == 409 {
                    "Conflict"
                } else {
                    "TooManyRequests"
                };
                return (
                    index,
                    status(
                        code,
                        reason,
                        "the double was told to refuse this (injected fault)",
                    ),
                );
            }
        }
        // The server's build version, as kube-apiserver serves it at /version
        // (k8s.io/apimachinery/pkg/version.Info; clients read major and minor from it).
        if method == Method::GET && uri.path() == "/version" {
            let (major, minor) = self.state.lock().unwrap().version.clone();
            return (
                index,
                json_response(
                    200,
                    json!({"major": major, "minor": minor,
                           "gitVersion": format!("v{major}.{minor}.0"),
                           "platform": "linux/amd64"}),
                ),
            );
        }
        let Some(path) = parse_path(uri.path()) else {
            return (
                index,
                status(404, "NotFound", &format!("no route {}", uri.path())),
            );
        };
        if matches!(method, Method::PUT | Method::PATCH) && text.contains("resourceVersion") {
            self.run_race(&path.key());
        }
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_string();
        let response = match (method.clone(), path.name.is_some()) {
            (Method::GET, false) if query.get("watch").is_some_and(|w| w == "true" || w == "1") => {
                self.watch(&path, &query)
            }
            (Method::GET, false) => self.list_response(&path, &query),
            (Method::GET, true) => match self.get(
                &path.collection,
                &path.namespace,
                path.name.as_deref().unwrap(),
            ) {
                Some(o) => json_response(200, o),
                None => not_found(&path),
            },
            (Method::POST, false) => self.create(&path, &text, &query),
            (Method::POST, true) if path.subresource.as_deref() == Some("eviction") => {
                self.evict(&path, &text)
            }
            (Method::PUT, true) => self.replace(&path, &text, &query),
            (Method::PATCH, true) => self.patch(&path, &text, &content_type, &query),
            (Method::DELETE, true) => {
                let key = path.key();
                let mut st = self.state.lock().unwrap();
                let requested = query
                    .get("gracePeriodSeconds")
                    .and_then(|g| g.parse::<i64>().ok())
                    .or_else(|| {
                        serde_json::from_str::<Value>(&text)
                            .ok()
                            .and_then(|o| o["gracePeriodSeconds"].as_i64())
                    });
                match st.copy(&key) {
                    Some(obj) if key.collection == "v1/pods" => {
                        let obj = self.delete_pod(&mut st, key, obj, requested);
                        json_response(200, obj)
                    }
                    Some(obj) => {
                        let held = obj["metadata"]["finalizers"]
                            .as_array()
                            .is_some_and(|f| !f.is_empty());
                        let name = key.name.clone();
                        let resource = path.plural.clone();
                        let obj = self.delete_gracefully(&mut st, key, obj);
                        // Deleted at once, the registry answers a Status of success, not the
                        // object (`finalizeDelete`: only pods set `ReturnDeletedObject`).
                        if held {
                            json_response(200, obj)
                        } else {
                            json_response(
                                200,
                                json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                       "status": "Success",
                                       "details": {"name": name, "kind": resource,
                                                   "uid": obj["metadata"]["uid"]}}),
                            )
                        }
                    }
                    None => not_found(&path),
                }
            }
            _ => status(405, "MethodNotAllowed", &format!("{method} {}", uri.path())),
        };
        (index, response)
    }

    /// Makes the staged change of another writer to `key`, if one waits.
    fn run_race(&self, key: &Key) {
        let mut st = self.state.lock().unwrap();
        let Some(i) = st.races.iter().position(|(k, _)| k == key) else {
            return;
        };
        let (_, change) = st.races.remove(i);
        if let Some(mut obj) = st.copy(key) {
            change(&mut obj);
            self.commit(&mut st, key.clone(), obj, "MODIFIED");
        }
    }

    fn list_response(&self, path: &Path, query: &BTreeMap<String, String>) -> Response {
        let selector = query.get("labelSelector").cloned().unwrap_or_default();
        let st = self.state.lock().unwrap();
        let namespace = (!path.namespace.is_empty()).then_some(path.namespace.as_str());
        let items: Vec<Value> = st
            .range(&path.collection, namespace)
            .filter(|(_, v)| selects(&selector, v))
            .map(|(_, v)| v.clone())
            .collect();
        json_response(
            200,
            json!({
                "apiVersion": path.api_version(),
                "kind": "List",
                "metadata": {"resourceVersion": st.rv.to_string()},
                "items": items,
            }),
        )
    }

    fn watch(&self, path: &Path, query: &BTreeMap<String, String>) -> Response {
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let selector = query.get("labelSelector").cloned().unwrap_or_default();
        let (backlog, mut rx) = {
            let st = self.state.lock().unwrap();
            let oldest = st.history.front().map_or(st.rv + 1, |e| e.rv);
            if from != 0 && from + 1 < oldest {
                let gone = json!({"type": "ERROR", "object": {
                    "kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "Expired", "code": 410,
                    "message": format!("too old resource version: {from} ({})", oldest - 1),
                }});
                return Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(Body::from(format!("{gone}\n")))
                    .unwrap();
            }
            let backlog: Vec<WatchEvent> =
                st.history.iter().filter(|e| e.rv > from).cloned().collect();
            (backlog, self.events.subscribe())
        };
        let p = path.clone();
        let matches = move |e: &WatchEvent| {
            e.collection == p.collection
                && (p.namespace.is_empty() || e.namespace == p.namespace)
                && selects(&selector, &e.object)
        };
        let (tx, out) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1024);
        tokio::spawn(async move {
            let mut last = from;
            for e in backlog.into_iter().filter(|e| matches(e)) {
                last = e.rv;
                if tx.send(Ok(line(&e))).await.is_err() {
                    return;
                }
            }
            loop {
                match rx.recv().await {
                    Ok(e) if e.rv > last && matches(&e) => {
                        last = e.rv;
                        if tx.send(Ok(line(&e))).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // A watcher that fell behind is cut off, as the real one does; the client
                    // re-lists.
                    Err(_) => return,
                }
            }
        });
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(Body::from_stream(tokio_stream(out)))
            .unwrap()
    }

    fn create(&self, path: &Path, text: &str, query: &BTreeMap<String, String>) -> Response {
        let Ok(mut obj) = serde_json::from_str::<Value>(text) else {
            return status(400, "BadRequest", "body is not JSON");
        };
        if obj["metadata"]["name"].is_null()
            && let Some(prefix) = obj["metadata"]["generateName"].as_str()
        {
            obj["metadata"]["name"] = format!("{prefix}{}", random_suffix()).into();
        }
        let name = obj["metadata"]["name"].as_str().map(str::to_string);
        let Some(name) = name else {
            return status(422, "Invalid", "metadata.name: Required value");
        };
        if !path.namespace.is_empty() {
            obj["metadata"]["namespace"] = path.namespace.clone().into();
        }
        let warnings = match validate_fields(path, &mut obj, &Value::Null, query) {
            Ok(w) => w,
            Err(refused) => return *refused,
        };
        let key = Key {
            collection: path.collection.clone(),
            namespace: path.namespace.clone(),
            name: name.clone(),
        };
        let mut st = self.state.lock().unwrap();
        if st.objects.contains_key(&key) {
            return status(
                409,
                "AlreadyExists",
                &format!("{} \"{name}\" already exists", path.plural),
            );
        }
        if let Some(refused) = self.invalid(&obj, None) {
            return refused;
        }
        stamp_new(&mut obj, st.rv + 1);
        self.commit(&mut st, key.clone(), obj, "ADDED");
        let obj = st
            .objects
            .get(&key)
            .cloned()
            .expect("an object just created is stored");
        warned(json_response(201, obj), &warnings)
    }

    fn replace(&self, path: &Path, text: &str, query: &BTreeMap<String, String>) -> Response {
        let Ok(new) = serde_json::from_str::<Value>(text) else {
            return status(400, "BadRequest", "body is not JSON");
        };
        self.update(path, query, |old| {
            let mut out = new.clone();
            keep_identity(old, &mut out);
            Ok(out)
        })
    }

    fn patch(
        &self,
        path: &Path,
        text: &str,
        content_type: &str,
        query: &BTreeMap<String, String>,
    ) -> Response {
        let Ok(patch) = serde_json::from_str::<Value>(text) else {
            return status(400, "BadRequest", "body is not JSON");
        };
        let json_patch = content_type.starts_with("application/json-patch+json");
        let _one_at_a_time = self.patching.lock().unwrap();
        if !json_patch {
            let apply = content_type.starts_with("application/apply-patch");
            let force = query.get("force").is_some_and(|f| f == "true");
            let manager = query.get("fieldManager").cloned().unwrap_or_default();
            if let Err(conflict) = self.own_fields(path, &patch, &manager, apply && !force) {
                return status(409, "Conflict", &conflict);
            }
        }
        self.update(path, query, |old| {
            let mut out = old.clone();
            if json_patch {
                apply_json_patch(&mut out, &patch)
                    .map_err(|e| Box::new(status(422, "Invalid", &e)))?;
            } else {
                merge(&mut out, &patch);
            }
            Ok(out)
        })
    }

    /// Records `manager` as the owner of every field `patch` sets (a null removes the field and
    /// its owner). With `check`, a field another manager owns whose value would change is a
    /// conflict, and nothing is recorded.
    fn own_fields(
        &self,
        path: &Path,
        patch: &Value,
        manager: &str,
        check: bool,
    ) -> Result<(), String> {
        let key = path.key();
        let mut st = self.state.lock().unwrap();
        // Read in place (a copy of the object per patch was a good part of a scale-up's work).
        let State {
            objects, owners, ..
        } = &mut *st;
        let current = objects.get(&key);
        let mut fields = Vec::new();
        leaves(patch, String::new(), &mut fields);
        let owners = owners.entry(key).or_default();
        if check {
            let conflicts: Vec<String> = fields
                .iter()
                .filter(|(field, value)| {
                    owners.get(field).is_some_and(|o| o != manager)
                        && current
                            .and_then(|c| c.pointer(field))
                            .is_some_and(|v| v != *value)
                })
                .map(|(field, _)| format!("conflict with \"{}\": {field}", owners[field]))
                .collect();
            if !conflicts.is_empty() {
                return Err(format!(
                    "Apply failed with {} conflict{}: {}",
                    conflicts.len(),
                    if conflicts.len() == 1 { "" } else { "s" },
                    conflicts.join(", ")
                ));
            }
        }
        for (field, value) in fields {
            if value.is_null() {
                owners.remove(&field);
            } else {
                owners.insert(field, manager.to_string());
            }
        }
        Ok(())
    }

    /// A write to an object or its status subresource, then finalizer-driven deletion.
    fn update(
        &self,
        path: &Path,
        query: &BTreeMap<String, String>,
        f: impl FnOnce(&Value) -> Result<Value, Box<Response>>,
    ) -> Response {
        let key = path.key();
        let mut st = self.state.lock().unwrap();
        // Shared, not copied: `f` makes the one copy a write needs.
        let Some(old) = st.objects.get(&key).cloned() else {
            return not_found(path);
        };
        let mut new = match f(&old) {
            Ok(new) => new,
            Err(refused) => return *refused,
        };
        let warnings = match validate_fields(path, &mut new, &old, query) {
            Ok(w) => w,
            Err(refused) => return *refused,
        };
        // Optimistic concurrency (API concepts, "Concurrency control and consistency"): a write
        // that names a resourceVersion — in a replaced object or in a patch — applies only to
        // that version; otherwise 409 Conflict with the real server's message.
        if let Some(wanted) = new["metadata"]["resourceVersion"].as_str()
            && Some(wanted) != old["metadata"]["resourceVersion"].as_str()
        {
            return status(
                409,
                "Conflict",
                &format!(
                    "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                    key.collection.rsplit('/').next().unwrap_or_default(),
                    key.name
                ),
            );
        }
        let status_only = path.subresource.as_deref() == Some("status");
        if status_only {
            let mut kept = Value::clone(&old);
            kept["status"] = new["status"].take();
            new = kept;
        } else if old.get("status").is_some() || new.get("status").is_some() {
            new["status"] = old.get("status").cloned().unwrap_or(Value::Null);
            if new["status"].is_null() {
                new.as_object_mut().map(|o| o.remove("status"));
            }
        }
        keep_identity(&old, &mut new);
        // ValidateObjectMetaUpdate: no finalizer may be added to an object being deleted.
        let finalizers = |o: &Value| -> Vec<Value> {
            o["metadata"]["finalizers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        };
        let added: Vec<Value> = finalizers(&new)
            .into_iter()
            .filter(|f| !finalizers(&old).contains(f))
            .collect();
        if !old["metadata"]["deletionTimestamp"].is_null() && !added.is_empty() {
            return status(
                422,
                "Invalid",
                &format!(
                    "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                ),
            );
        }
        if let Some(refused) = self.invalid(&new, Some(&old)) {
            return refused;
        }
        let deleting = !new["metadata"]["deletionTimestamp"].is_null();
        let finalizers_left = new["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        // The response is the object as written, also when that write let it go.
        let response = if deleting && !finalizers_left {
            self.commit(&mut st, key.clone(), new.clone(), "DELETED");
            json_response(200, new)
        } else {
            self.commit(&mut st, key.clone(), new, "MODIFIED");
            json_response(200, st.copy(&key).unwrap_or_default())
        };
        warned(response, &warnings)
    }

    /// The Eviction subresource: the pod goes, or the refusal, as `disruption.rs` decides it
    /// from the budgets' status. The Eviction's own `deleteOptions.gracePeriodSeconds` applies.
    fn evict(&self, path: &Path, text: &str) -> Response {
        let key = path.key();
        let grace = serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|e| e["deleteOptions"]["gracePeriodSeconds"].as_i64());
        let mut st = self.state.lock().unwrap();
        let Some(mut pod) = st.copy(&key) else {
            return not_found(path);
        };
        let answer = {
            let pdbs: Vec<&Value> = st
                .objects
                .iter()
                .filter(|(k, _)| k.collection == disruption::PDBS && k.namespace == key.namespace)
                .map(|(_, v)| &**v)
                .collect();
            disruption::evict(&pod, &pdbs, &now_rfc3339())
        };
        match answer {
            disruption::Answer::Internal(message) => status(500, "InternalError", message),
            disruption::Answer::TooManyRequests { cause, retry_after } => {
                let mut r = json_response(
                    429,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "message": disruption::REFUSED, "reason": "TooManyRequests",
                           "details": {"causes": [{"reason": "DisruptionBudget", "message": cause}],
                                       "retryAfterSeconds": retry_after},
                           "code": 429}),
                );
                if retry_after > 0 {
                    r.headers_mut()
                        .insert("retry-after", retry_after.to_string().parse().unwrap());
                }
                r
            }
            disruption::Answer::Delete(spent) => {
                if let Some((name, after)) = spent {
                    let pdb_key = Key {
                        collection: disruption::PDBS.into(),
                        namespace: key.namespace.clone(),
                        name,
                    };
                    if let Some(mut b) = st.copy(&pdb_key) {
                        b["status"] = after;
                        self.commit(&mut st, pdb_key, b, "MODIFIED");
                    }
                }
                if pod["metadata"]["deletionTimestamp"].is_null() {
                    disruption::disruption_target(&mut pod);
                    self.commit(&mut st, key.clone(), pod.clone(), "MODIFIED");
                    pod = st.copy(&key).unwrap_or(pod);
                }
                self.delete_pod(&mut st, key, pod, grace);
                json_response(
                    201,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                )
            }
        }
    }
}

/// Field validation of a create or update (see `fields.rs`): under `Strict`, fields its kind
/// does not declare (and `old` did not already hold) are refused with 400; otherwise they are
/// dropped, with a warning each under `Warn` (the default).
fn validate_fields(
    path: &Path,
    obj: &mut Value,
    old: &Value,
    query: &BTreeMap<String, String>,
) -> Result<Vec<String>, Box<Response>> {
    let before: Vec<String> = fields::unknown(&path.collection, old)
        .into_iter()
        .map(|u| u.name)
        .collect();
    let unknown: Vec<fields::Unknown> = fields::unknown(&path.collection, obj)
        .into_iter()
        .filter(|u| !before.contains(&u.name))
        .collect();
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<String> = unknown
        .iter()
        .map(|u| format!("unknown field \"{}\"", u.name))
        .collect();
    match query.get("fieldValidation").map(String::as_str) {
        Some("Strict") => {
            let kind = obj["kind"].as_str().unwrap_or("object");
            Err(Box::new(status(
                400,
                "BadRequest",
                &format!(
                    "{kind} in version \"{}\" cannot be handled as a {kind}: strict decoding error: {}",
                    path.group_version.rsplit('/').next().unwrap_or_default(),
                    names.join(", ")
                ),
            )))
        }
        Some("Ignore") => {
            fields::drop_fields(obj, &unknown);
            Ok(Vec::new())
        }
        _ => {
            fields::drop_fields(obj, &unknown);
            Ok(names)
        }
    }
}

/// A response with a `Warning: 299` header per warning.
fn warned(mut response: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let value = format!("299 - {:?}", w);
        if let Ok(v) = axum::http::HeaderValue::from_str(&value) {
            response.headers_mut().append("warning", v);
        }
    }
    response
}

/// Five characters for `generateName`, as the real server's `SimpleNameGenerator` picks them
/// (consonants and digits, no vowels).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    let mut n = h.finish();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize];
            n /= ALPHABET.len() as u64;
            c as char
        })
        .collect()
}

/// A parsed resource path.
#[derive(Debug, Clone)]
struct Path {
    /// `v1` or `group/version`.
    group_version: String,
    plural: String,
    /// `group_version/plural`.
    collection: String,
    namespace: String,
    name: Option<String>,
    subresource: Option<String>,
}

impl Path {
    fn key(&self) -> Key {
        self.key_named(self.name.as_deref().unwrap_or_default())
    }
    fn key_named(&self, name: &str) -> Key {
        Key {
            collection: self.collection.clone(),
            namespace: self.namespace.clone(),
            name: name.into(),
        }
    }
    fn api_version(&self) -> &str {
        &self.group_version
    }
}

fn parse_path(p: &str) -> Option<Path> {
    let parts: Vec<&str> = p.trim_matches('/').split('/').collect();
    let (gv, rest) = match parts.as_slice() {
        ["api", v, rest @ ..] => (v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, rest @ ..] => (ns.to_string(), [&[*plural][..], rest].concat()),
        other => (String::new(), other.to_vec()),
    };
    let plural = rest.first()?.to_string();
    Some(Path {
        collection: format!("{gv}/{plural}"),
        group_version: gv,
        plural,
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        subresource: rest.get(2).map(|s| s.to_string()),
    })
}

/// `k=v,k2=v2` label selectors (the equality form the controller uses).
fn selects(selector: &str, obj: &Value) -> bool {
    selector
        .split(',')
        .filter(|t| !t.is_empty())
        .all(|term| match term.split_once('=') {
            Some((k, v)) => obj["metadata"]["labels"][k.trim_end_matches('=')] == v,
            None => !obj["metadata"]["labels"][term].is_null(),
        })
}

/// RFC 7386 JSON merge patch.
/// The leaf fields a patch sets, as JSON pointers (identity fields excluded).
fn leaves<'a>(v: &'a Value, at: String, out: &mut Vec<(String, &'a Value)>) {
    match v.as_object() {
        Some(o) if !o.is_empty() => {
            for (k, child) in o {
                if at.is_empty() && (k == "apiVersion" || k == "kind") {
                    continue;
                }
                if at == "/metadata" && matches!(k.as_str(), "name" | "namespace") {
                    continue;
                }
                let escaped = k.replace('~', "~0").replace('/', "~1");
                leaves(child, format!("{at}/{escaped}"), out);
            }
        }
        _ => out.push((at, v)),
    }
}

pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("an object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// RFC 6902 JSON patch: add, replace, remove and test; a failed `test` refuses the whole
/// patch (the error, which the server answers with 422).
fn apply_json_patch(target: &mut Value, ops: &Value) -> Result<(), String> {
    let mut out = target.clone();
    for op in ops.as_array().into_iter().flatten() {
        let path = op["path"].as_str().unwrap_or_default();
        if op["op"] == "test" {
            if out.pointer(path) != Some(&op["value"]) {
                return Err(format!(
                    "the server rejected our request due to an error in our request: testing value {path} failed: test failed"
                ));
            }
            continue;
        }
        let pointer = path
            .rsplit_once('/')
            .map(|(p, last)| (p.to_string(), last.replace("~1", "/").replace("~0", "~")));
        let Some((parent, last)) = pointer else {
            continue;
        };
        let Some(container) = out.pointer_mut(&parent) else {
            continue;
        };
        match (op["op"].as_str(), container) {
            (Some("add") | Some("replace"), Value::Object(m)) => {
                m.insert(last, op["value"].clone());
            }
            (Some("add"), Value::Array(a)) => {
                let v = op["value"].clone();
                match last.as_str() {
                    "-" => a.push(v),
                    i => a.insert(i.parse().unwrap_or(a.len()).min(a.len()), v),
                }
            }
            (Some("replace"), Value::Array(a)) => {
                if let Some(slot) = last.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                    *slot = op["value"].clone();
                }
            }
            (Some("remove"), Value::Object(m)) => {
                m.remove(&last);
            }
            (Some("remove"), Value::Array(a)) => {
                if let Ok(i) = last.parse::<usize>()
                    && i < a.len()
                {
                    a.remove(i);
                }
            }
            _ => {}
        }
    }
    *target = out;
    Ok(())
}

/// Identity fields the server owns survive a client's write.
fn keep_identity(old: &Value, new: &mut Value) {
    for f in [
        "uid",
        "creationTimestamp",
        "namespace",
        "name",
        "deletionTimestamp",
    ] {
        if !old["metadata"][f].is_null() {
            new["metadata"][f] = old["metadata"][f].clone();
        }
    }
    if new.get("apiVersion").is_none() {
        new["apiVersion"] = old["apiVersion"].clone();
        new["kind"] = old["kind"].clone();
    }
}

fn stamp_new(obj: &mut Value, n: u64) {
    obj["metadata"]["uid"] = format!("00000000-0000-0000-0000-{n:012}").into();
    obj["metadata"]["generation"] = 1.into();
    if obj["metadata"]["creationTimestamp"].is_null() {
        obj["metadata"]["creationTimestamp"] = now_rfc3339().into();
    }
}

/// The generation after a write: incremented when anything but `metadata` and `status`
/// changed.
fn next_generation(old: &Value, new: &Value) -> i64 {
    let spec = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("metadata");
            o.remove("status");
        }
        v
    };
    let was = old["metadata"]["generation"].as_i64().unwrap_or(1);
    if spec(old) == spec(new) { was } else { was + 1 }
}

/// A test's own object (`ApiServer::put`): a uid it gives is kept (an owner's uid its
/// dependents name).
fn stamp_put(obj: &mut Value, n: u64) {
    let uid = obj["metadata"]["uid"].clone();
    stamp_new(obj, n);
    if !uid.is_null() {
        obj["metadata"]["uid"] = uid;
    }
}

pub(crate) fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or_default()
        .to_string()
}

fn line(e: &WatchEvent) -> Bytes {
    // Written straight from the shared object: `json!` would copy it into a new value first.
    Bytes::from(format!(
        "{{\"type\":\"{}\",\"object\":{}}}\n",
        e.kind, e.object
    ))
}

fn json_response(code: u16, v: impl std::fmt::Display) -> Response {
    (
        StatusCode::from_u16(code).unwrap(),
        [("content-type", "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// A `metav1.Status` failure.
fn status(code: u16, reason: &str, message: &str) -> Response {
    json_response(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "reason": reason, "message": message, "code": code}),
    )
}

fn not_found(p: &Path) -> Response {
    status(
        404,
        "NotFound",
        &format!(
            "{} \"{}\" not found",
            p.plural,
            p.name.as_deref().unwrap_or_default()
        ),
    )
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An mpsc receiver as a stream of body chunks.
fn tokio_stream(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `visit` shows what `list` returns, in the same order, and only that collection.
    #[test]
    fn visit_shows_a_collection_as_list_does() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let api = ApiServer::start(&rt);
        for name in ["b", "a"] {
            api.put(
                "v1/pods",
                serde_json::json!({"metadata": {"name": name, "namespace": "default"}}),
            );
        }
        api.put("v1/nodes", serde_json::json!({"metadata": {"name": "n"}}));
        let mut seen = Vec::new();
        api.visit("v1/pods", |p| seen.push(p.clone()));
        assert_eq!(seen, api.list("v1/pods"));
        assert_eq!(seen.len(), 2);
    }

    /// A reader that listed at a version and follows with `changes` sees every later write to
    /// its collection once, in order, and none of another collection's.
    #[test]
    fn changes_follow_on_from_a_visit() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let api = ApiServer::start(&rt);
        let pod =
            |name: &str| serde_json::json!({"metadata": {"name": name, "namespace": "default"}});
        api.put("v1/pods", pod("a"));
        let at = api.visit("v1/pods", |_| {});
        api.put("v1/pods", pod("b"));
        api.put("v1/nodes", serde_json::json!({"metadata": {"name": "n"}}));
        let mut b = pod("b");
        b["spec"] = serde_json::json!({"nodeName": "n"});
        api.put("v1/pods", b);
        api.delete("v1/pods", "default", "a");
        let (now, changes) = api.changes("v1/pods", at).expect("within the history");
        let seen: Vec<(&str, &str)> = changes
            .iter()
            .map(|c| (c.kind, c.object["metadata"]["name"].as_str().unwrap()))
            .collect();
        assert_eq!(seen, [("ADDED", "b"), ("MODIFIED", "b"), ("DELETED", "a")]);
        assert_eq!(changes[1].object["spec"]["nodeName"], "n");
        let (again, none) = api.changes("v1/pods", now).unwrap();
        assert_eq!((again, none.len()), (now, 0));
    }

    /// Past the history, `changes` is the watch's 410 Gone: the reader must list again.
    #[test]
    fn changes_from_before_the_history_are_gone() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let api = ApiServer::start(&rt);
        for i in 0..HISTORY + 2 {
            api.put(
                "v1/nodes",
                serde_json::json!({"metadata": {"name": format!("n{i}")}}),
            );
        }
        assert!(api.changes("v1/nodes", 1).is_none());
        let at = api.visit("v1/nodes", |_| {});
        assert!(
            api.changes("v1/nodes", at)
                .is_some_and(|(_, c)| c.is_empty())
        );
    }
}
