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
//! - **Eviction** (`pods/{name}/eviction`): refused with 429 and the real message when a
//!   PodDisruptionBudget of the namespace (matchLabels) would be violated, counting Running
//!   pods as healthy; otherwise the pod is deleted as above, with its own grace.
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

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::broadcast;

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
}

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
    object: Value,
}

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<WatchEvent>,
    log: Vec<Request>,
    /// Status codes to answer the next writes with.
    faults: VecDeque<u16>,
    /// Object → field (a JSON pointer, `/spec/holderIdentity`) → the field manager that owns it.
    owners: BTreeMap<Key, BTreeMap<String, String>>,
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
            state: Arc::default(),
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
        server
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
        st.objects
            .iter()
            .filter(|(k, _)| k.collection == collection)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// One object.
    pub fn get(&self, collection: &str, namespace: &str, name: &str) -> Option<Value> {
        let st = self.state.lock().unwrap();
        st.objects
            .get(&Key {
                collection: collection.into(),
                namespace: namespace.into(),
                name: name.into(),
            })
            .cloned()
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
            stamp_new(&mut object, st.rv + 1);
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
        if let Some(obj) = st.objects.get(&key).cloned() {
            self.delete_gracefully(&mut st, key, obj);
        }
    }

    fn commit(&self, st: &mut State, key: Key, mut object: Value, kind: &'static str) {
        st.rv += 1;
        object["metadata"]["resourceVersion"] = st.rv.to_string().into();
        let event = WatchEvent {
            rv: st.rv,
            collection: key.collection.clone(),
            namespace: key.namespace.clone(),
            kind,
            object: object.clone(),
        };
        if kind == "DELETED" {
            st.owners.remove(&key);
            st.objects.remove(&key);
        } else {
            st.objects.insert(key, object);
        }
        if st.history.len() == HISTORY {
            st.history.pop_front();
        }
        st.history.push_back(event.clone());
        let _ = self.events.send(event);
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
        self.commit(st, key, pod.clone(), "MODIFIED");
        pod
    }

    /// Deletion with finalizers: a deletionTimestamp while any remain, then gone.
    fn delete_gracefully(&self, st: &mut State, key: Key, mut obj: Value) -> Value {
        let finalizers = obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if finalizers {
            if obj["metadata"]["deletionTimestamp"].is_null() {
                obj["metadata"]["deletionTimestamp"] = now_rfc3339().into();
                self.commit(st, key, obj.clone(), "MODIFIED");
            }
        } else {
            self.commit(st, key, obj.clone(), "DELETED");
        }
        obj
    }

    fn handle(&self, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
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
            });
            if method != Method::GET
                && let Some(code) = st.faults.pop_front()
            {
                let reason = if code == 409 {
                    "Conflict"
                } else {
                    "TooManyRequests"
                };
                return status(
                    code,
                    reason,
                    "the double was told to refuse this (injected fault)",
                );
            }
        }
        let Some(path) = parse_path(uri.path()) else {
            return status(404, "NotFound", &format!("no route {}", uri.path()));
        };
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_string();
        match (method.clone(), path.name.is_some()) {
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
            (Method::POST, false) => self.create(&path, &text),
            (Method::POST, true) if path.subresource.as_deref() == Some("eviction") => {
                self.evict(&path)
            }
            (Method::PUT, true) => self.replace(&path, &text),
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
                match st.objects.get(&key).cloned() {
                    Some(obj) if key.collection == "v1/pods" => {
                        let obj = self.delete_pod(&mut st, key, obj, requested);
                        json_response(200, obj)
                    }
                    Some(obj) => {
                        let obj = self.delete_gracefully(&mut st, key, obj);
                        json_response(200, obj)
                    }
                    None => not_found(&path),
                }
            }
            _ => status(405, "MethodNotAllowed", &format!("{method} {}", uri.path())),
        }
    }

    fn list_response(&self, path: &Path, query: &BTreeMap<String, String>) -> Response {
        let selector = query.get("labelSelector").cloned().unwrap_or_default();
        let st = self.state.lock().unwrap();
        let items: Vec<Value> = st
            .objects
            .iter()
            .filter(|(k, v)| {
                k.collection == path.collection
                    && (path.namespace.is_empty() || k.namespace == path.namespace)
                    && selects(&selector, v)
            })
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

    fn create(&self, path: &Path, text: &str) -> Response {
        let Ok(mut obj) = serde_json::from_str::<Value>(text) else {
            return status(400, "BadRequest", "body is not JSON");
        };
        let name = obj["metadata"]["name"].as_str().map(str::to_string);
        let Some(name) = name else {
            return status(422, "Invalid", "metadata.name: Required value");
        };
        if !path.namespace.is_empty() {
            obj["metadata"]["namespace"] = path.namespace.clone().into();
        }
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
        self.commit(&mut st, key, obj.clone(), "ADDED");
        let obj = st
            .objects
            .get(&path.key_named(&name))
            .cloned()
            .unwrap_or(obj);
        json_response(201, obj)
    }

    fn replace(&self, path: &Path, text: &str) -> Response {
        let Ok(new) = serde_json::from_str::<Value>(text) else {
            return status(400, "BadRequest", "body is not JSON");
        };
        self.update(path, |old| {
            let mut out = new.clone();
            keep_identity(old, &mut out);
            out
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
        self.update(path, |old| {
            let mut out = old.clone();
            if json_patch {
                apply_json_patch(&mut out, &patch);
            } else {
                merge(&mut out, &patch);
            }
            out
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
        let current = st.objects.get(&key).cloned().unwrap_or(Value::Null);
        let mut fields = Vec::new();
        leaves(patch, String::new(), &mut fields);
        let owners = st.owners.entry(key).or_default();
        if check {
            let conflicts: Vec<String> = fields
                .iter()
                .filter(|(field, value)| {
                    owners.get(field).is_some_and(|o| o != manager)
                        && current.pointer(field).is_some_and(|v| v != *value)
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
    fn update(&self, path: &Path, f: impl FnOnce(&Value) -> Value) -> Response {
        let key = path.key();
        let mut st = self.state.lock().unwrap();
        let Some(old) = st.objects.get(&key).cloned() else {
            return not_found(path);
        };
        let mut new = f(&old);
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
            let mut kept = old.clone();
            kept["status"] = new["status"].clone();
            new = kept;
        } else if old.get("status").is_some() || new.get("status").is_some() {
            new["status"] = old.get("status").cloned().unwrap_or(Value::Null);
            if new["status"].is_null() {
                new.as_object_mut().map(|o| o.remove("status"));
            }
        }
        keep_identity(&old, &mut new);
        if let Some(refused) = self.invalid(&new, Some(&old)) {
            return refused;
        }
        let deleting = !new["metadata"]["deletionTimestamp"].is_null();
        let finalizers_left = new["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        // The response is the object as written, also when that write let it go.
        if deleting && !finalizers_left {
            self.commit(&mut st, key.clone(), new.clone(), "DELETED");
            json_response(200, new)
        } else {
            self.commit(&mut st, key.clone(), new, "MODIFIED");
            json_response(200, st.objects.get(&key).cloned().unwrap_or(Value::Null))
        }
    }

    /// The Eviction subresource, enforcing PodDisruptionBudgets.
    fn evict(&self, path: &Path) -> Response {
        let key = path.key();
        let mut st = self.state.lock().unwrap();
        let Some(pod) = st.objects.get(&key).cloned() else {
            return not_found(path);
        };
        let pods: Vec<Value> = st
            .objects
            .iter()
            .filter(|(k, _)| k.collection == "v1/pods" && k.namespace == key.namespace)
            .map(|(_, v)| v.clone())
            .collect();
        for (k, pdb) in st.objects.iter() {
            if k.collection != "policy/v1/poddisruptionbudgets" || k.namespace != key.namespace {
                continue;
            }
            let selector = &pdb["spec"]["selector"]["matchLabels"];
            let chosen = |p: &Value| {
                selector
                    .as_object()
                    .is_some_and(|m| m.iter().all(|(lk, lv)| p["metadata"]["labels"][lk] == *lv))
            };
            if !chosen(&pod) {
                continue;
            }
            let selected: Vec<&Value> = pods.iter().filter(|p| chosen(p)).collect();
            let expected = selected.len() as i64;
            let healthy = selected
                .iter()
                .filter(|p| {
                    p["status"]["phase"] == "Running"
                        && p["metadata"]["deletionTimestamp"].is_null()
                })
                .count() as i64;
            let value = |v: &Value| -> Option<i64> {
                match v {
                    Value::Number(n) => n.as_i64(),
                    Value::String(s) => s
                        .strip_suffix('%')
                        .and_then(|p| p.parse::<i64>().ok())
                        .map(|p| (expected * p + 99) / 100),
                    _ => None,
                }
            };
            let allowed = if let Some(max) = value(&pdb["spec"]["maxUnavailable"]) {
                max - (expected - healthy)
            } else if let Some(min) = value(&pdb["spec"]["minAvailable"]) {
                healthy - min
            } else {
                i64::MAX
            };
            if allowed <= 0 {
                let name = pdb["metadata"]["name"].as_str().unwrap_or_default();
                return status(
                    429,
                    "TooManyRequests",
                    &format!(
                        "Cannot evict pod as it would violate the pod's disruption budget. The disruption budget {name} needs {} healthy pods and has {healthy} currently",
                        expected - allowed.max(0)
                    ),
                );
            }
        }
        self.delete_pod(&mut st, key, pod, None);
        json_response(
            201,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201}),
        )
    }
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

/// RFC 6902 JSON patch: add, replace, remove (enough for metadata and finalizer edits).
fn apply_json_patch(target: &mut Value, ops: &Value) {
    for op in ops.as_array().into_iter().flatten() {
        let path = op["path"].as_str().unwrap_or_default();
        let pointer = path
            .rsplit_once('/')
            .map(|(p, last)| (p.to_string(), last.replace("~1", "/").replace("~0", "~")));
        let Some((parent, last)) = pointer else {
            continue;
        };
        let Some(container) = target.pointer_mut(&parent) else {
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
    if obj["metadata"]["creationTimestamp"].is_null() {
        obj["metadata"]["creationTimestamp"] = now_rfc3339().into();
    }
    obj["metadata"]["generation"] = 1.into();
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or_default()
        .to_string()
}

fn line(e: &WatchEvent) -> Bytes {
    Bytes::from(format!("{}\n", json!({"type": e.kind, "object": e.object})))
}

fn json_response(code: u16, v: Value) -> Response {
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
