//! `dovetail bench controller`: the real `dovetail controller` process (with the in-memory
//! cloud) against the API server double over HTTP. The benchmark plays kubelet and
//! kube-scheduler, creates the pods, and reads the double's request log and the controller's
//! peak memory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dovetail_apiserver_double::ApiServer;
use serde_json::{Value, json};

const CLAIMS: &str = "dovetail.sh/v1/nodeclaims";
const PODS: &str = "v1/pods";
const NODES: &str = "v1/nodes";

/// The controller's client-side rate limit here: a 2,000-node batch is 2,000 creates, which
/// the default 200 QPS paces over 10 s by design; the benchmark measures the controller, not
/// its limiter.
pub const BENCH_QPS: u32 = 5000;

/// Per pod: fits ten to an m5.large (1,930m allocatable).
const POD_CPU_MILLIS: u64 = 180;

/// The controller's client-side rate limit in a run (`--kube-client-qps`, `--kube-client-burst`).
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    pub qps: u32,
    pub burst: u32,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            qps: BENCH_QPS,
            burst: BENCH_QPS,
        }
    }
}

/// What the benchmark measured.
#[derive(Debug, Clone)]
pub struct ControllerFigures {
    /// The client limits the controller ran with.
    pub limits: ClientLimits,
    pub pods: usize,
    pub nodes: usize,
    /// From the last pending pod's creation to the last NodeClaim created.
    pub to_claims: Duration,
    /// From the last pending pod's creation to every pod bound.
    pub to_bound: Duration,
    /// The controller's peak resident set, bytes.
    pub peak_rss: Option<u64>,
    /// Requests (and writes) to the API server per launched node, during scale-up.
    pub requests_per_launched: f64,
    pub writes_per_launched: f64,
    /// The same from the scale-up's start until every claim is Initialized and the controller
    /// has been quiet for 5 s: all a launch costs, registration and initialization included.
    pub requests_through_initialized: f64,
    pub writes_through_initialized: f64,
    /// What those writes were: (method and resource, count), most first.
    pub launch_writes_by_kind: Vec<(String, usize)>,
    /// With nothing to do: requests (and writes) per minute.
    pub steady_requests_per_minute: f64,
    pub steady_writes_per_minute: f64,
    /// What the idle writes were: (method and resource, count), most first.
    pub steady_writes_by_kind: Vec<(String, usize)>,
    /// After 40% of the pods go: nodes disrupted, and requests (and writes) per disrupted node.
    pub disrupted: usize,
    pub requests_per_disrupted: f64,
    pub writes_per_disrupted: f64,
    /// What the scale-down's writes were: (method and resource, count), most first.
    pub down_writes_by_kind: Vec<(String, usize)>,
    /// Evictions of a pod that had already moved once (the ReplicaSet's replacement of an
    /// evicted pod, evicted in turn): a pod moved twice where once would do.
    pub evicted_again: usize,
    /// From the pods' deletion to the last disrupted NodeClaim's removal (the consolidation
    /// window included).
    pub scale_down: Duration,
    /// The drain alone: from the first NodeClaim's deletion to the last one's removal.
    pub drain: Duration,
    /// Eviction requests the scale-down made, and their rate from the first to the last.
    pub evictions: usize,
    pub evictions_per_second: f64,
    /// CPU seconds of the scale-up (last pod created → every pod bound): the controller's, and
    /// the benchmark's own (the API server double and the actors that play kubelet,
    /// kube-scheduler and the ReplicaSet controller). On two cores, a double at one core is
    /// the bottleneck, not the controller.
    pub scale_up_cpu: (f64, f64),
}

/// CPU seconds (user + system) a process has used so far (`/proc/<pid>/stat`, in USER_HZ ticks,
/// 100 per second on Linux).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses: state is the first, utime the
    // 12th and stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

struct Controller(Child);

impl Drop for Controller {
    /// The whole process group: under a profiler (`DOVETAIL_BENCH_WRAP`) the controller is the
    /// wrapper's child.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn name(o: &Value) -> String {
    o["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn pod(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("web-{}-{i:06}", i % 10), "namespace": "default",
            "labels": {"app": format!("web-{}", i % 10)},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": format!("web-{}", i % 10), "uid": format!("rs-{}", i % 10), "controller": true}],
        },
        "spec": {"containers": [{"name": "app", "image": "pause",
            "resources": {"requests": {"cpu": format!("{POD_CPU_MILLIS}m"), "memory": "128Mi"}}}]},
        "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/0 nodes are available"}]},
    })
}

/// kubelet, kube-scheduler and the ReplicaSet controller for the benchmark: nodes register as
/// soon as their claim is launched, pods bind first-fit by CPU, and a pod that is evicted comes
/// back pending under a new name.
#[derive(Default)]
struct World {
    /// providerIDs registered, with their node's allocatable CPU millis.
    registered: HashMap<String, (String, u64)>,
    /// The replicas that should exist: base name → current pod name, and back.
    replicas: BTreeMap<String, String>,
    current: HashMap<String, String>,
    next: usize,
    /// The pods as kube-scheduler's informer holds them.
    pods: PodCache,
}

/// The pods, kept as an informer keeps them: listed once, then followed by the changes since
/// (a new list only where the double's history no longer reaches back). A round then costs
/// what changed, not 100,000 pods read again (reading them all each round was more than half
/// of the benchmark's own CPU at 100k, and its rounds slowed the binding it measures).
#[derive(Default)]
struct PodCache {
    /// The resourceVersion the cache is at; `None` until the first list.
    at: Option<u64>,
    /// Every pod, (namespace, name) → the node it is bound to.
    bound: HashMap<(String, String), Option<String>>,
    /// The pods with no node, in list order (the order the scheduler binds them).
    waiting: BTreeSet<(String, String)>,
    /// CPU millis the bound pods take, by node.
    taken: HashMap<String, u64>,
    /// Bound pods being deleted (`deletionTimestamp` set): kubelet stops them and deletes them.
    stopping: BTreeSet<(String, String)>,
    /// Pods deleted since the ReplicaSet last looked; `None` after a new list (it checks all).
    deleted: Option<Vec<String>>,
}

impl PodCache {
    /// Brings the cache up to the double's present.
    fn sync(&mut self, api: &ApiServer) {
        if let Some(at) = self.at
            && let Some((now, changes)) = api.changes(PODS, at)
        {
            for c in changes {
                self.apply(c.kind, &c.object);
            }
            self.at = Some(now);
            return;
        }
        *self = PodCache::default();
        let mut listed = Vec::new();
        let at = api.visit(PODS, |p| listed.push(key_and_node(p)));
        for (key, node, deleting) in listed {
            self.add(key, node, deleting);
        }
        self.at = Some(at);
    }

    fn apply(&mut self, kind: &str, pod: &Value) {
        let (key, node, deleting) = key_and_node(pod);
        self.stopping.remove(&key);
        if let Some(old) = self.bound.remove(&key) {
            match old {
                Some(n) => {
                    if let Some(t) = self.taken.get_mut(&n) {
                        *t = t.saturating_sub(POD_CPU_MILLIS);
                    }
                }
                None => {
                    self.waiting.remove(&key);
                }
            }
        }
        if kind == "DELETED" {
            if let Some(d) = &mut self.deleted {
                d.push(key.1);
            }
        } else {
            self.add(key, node, deleting);
        }
    }

    fn add(&mut self, key: (String, String), node: Option<String>, deleting: bool) {
        if deleting && node.is_some() {
            self.stopping.insert(key.clone());
        }
        match &node {
            Some(n) => *self.taken.entry(n.clone()).or_default() += POD_CPU_MILLIS,
            None => {
                self.waiting.insert(key.clone());
            }
        }
        self.bound.insert(key, node);
    }
}

/// A pod's (namespace, name), its node, and whether it is being deleted.
fn key_and_node(pod: &Value) -> ((String, String), Option<String>, bool) {
    let meta = &pod["metadata"];
    let key = (
        meta["namespace"].as_str().unwrap_or_default().to_string(),
        meta["name"].as_str().unwrap_or_default().to_string(),
    );
    let node = pod["spec"]["nodeName"].as_str().map(str::to_string);
    (key, node, !meta["deletionTimestamp"].is_null())
}

impl World {
    /// A replica the ReplicaSet keeps.
    fn keep(&mut self, base: String, current: String) {
        self.current.insert(current.clone(), base.clone());
        self.replicas.insert(base, current);
    }

    /// The replicas a scale-down removes: `share` of each node's pods (the first by name), so
    /// that every node keeps some. Returns the pods to delete.
    fn forget_share_of_each_node(&mut self, api: &ApiServer, share: f64) -> Vec<String> {
        self.pods.sync(api);
        let mut by_node: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for ((_, pod), node) in &self.pods.bound {
            if let Some(node) = node {
                by_node.entry(node).or_default().push(pod);
            }
        }
        let mut gone = Vec::new();
        for pods in by_node.values_mut() {
            pods.sort_unstable();
            let k = (pods.len() as f64 * share).round() as usize;
            gone.extend(pods[..k].iter().map(|p| p.to_string()));
        }
        for current in &gone {
            if let Some(base) = self.current.remove(current) {
                self.replicas.remove(&base);
            }
        }
        gone
    }

    /// A replica the ReplicaSet no longer keeps: its pod's name, to delete.
    fn forget(&mut self, base: &str) -> Option<String> {
        let current = self.replicas.remove(base)?;
        self.current.remove(&current);
        Some(current)
    }

    fn round(&mut self, api: &ApiServer) -> usize {
        // Launched claims not registered yet (copied: registering writes to the double).
        let mut launched = Vec::new();
        api.visit(CLAIMS, |c| {
            if let Some(pid) = c["status"]["providerID"].as_str()
                && !self.registered.contains_key(pid)
                && c["metadata"]["deletionTimestamp"].is_null()
            {
                launched.push(c.clone());
            }
        });
        for c in launched {
            let pid = c["status"]["providerID"].as_str().unwrap_or_default();
            if self.registered.contains_key(pid) {
                continue;
            }
            let node = api.register_node(
                &c,
                &format!("ip-{}", pid.rsplit('/').next().unwrap_or_default()),
            );
            let cpu = c["status"]["allocatable"]["cpu"]
                .as_str()
                .and_then(|s| s.strip_suffix('m'))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            self.registered.insert(pid.to_string(), (node, cpu));
        }
        // kubelet: a bound pod being deleted is stopped (the pause container exits on SIGTERM)
        // and deleted with grace 0, as the status manager does once its containers are gone
        // (pkg/kubelet/status/status_manager.go, `canBeDeleted` then a delete with grace 0).
        self.pods.sync(api);
        // (Kept until its deletion is seen: a pod a finalizer holds is asked again.)
        for (ns, n) in self.pods.stopping.clone() {
            api.delete(PODS, &ns, &n);
        }
        // The ReplicaSet: evicted replicas come back pending.
        self.pods.sync(api);
        let missing: Vec<String> = match self.pods.deleted.replace(Vec::new()) {
            Some(deleted) => deleted
                .into_iter()
                .filter_map(|name| self.current.get(&name).cloned())
                .collect(),
            None => self
                .replicas
                .iter()
                .filter(|(_, current)| {
                    !self
                        .pods
                        .bound
                        .contains_key(&("default".to_string(), (*current).clone()))
                })
                .map(|(base, _)| base.clone())
                .collect(),
        };
        for base in missing {
            self.next += 1;
            let mut p = pod(0);
            let fresh = format!("{base}-r{}", self.next);
            p["metadata"]["name"] = fresh.clone().into();
            self.forget(&base);
            self.keep(base, fresh);
            api.put(PODS, p);
        }
        self.pods.sync(api);
        // Usable nodes and their room.
        let mut free: BTreeMap<String, u64> = BTreeMap::new();
        api.visit(NODES, |n| {
            let usable = n["metadata"]["deletionTimestamp"].is_null()
                && n["spec"]["taints"].as_array().is_none_or(|t| t.is_empty());
            if usable {
                let cpu = self
                    .registered
                    .get(n["spec"]["providerID"].as_str().unwrap_or_default())
                    .map_or(0, |r| r.1);
                let taken = self
                    .pods
                    .taken
                    .get(n["metadata"]["name"].as_str().unwrap_or_default());
                free.insert(name(n), cpu.saturating_sub(taken.copied().unwrap_or(0)));
            }
        });
        // First fit, as before, with a cursor: every pod asks the same POD_CPU_MILLIS and a
        // node's room only shrinks, so the nodes before the first with room stay full (a scan
        // from the start per pod was quadratic at 100k).
        let mut free: Vec<(String, u64)> = free.into_iter().collect();
        let mut at = 0;
        let mut left = 0;
        for (ns, n) in &self.pods.waiting {
            while at < free.len() && free[at].1 < POD_CPU_MILLIS {
                at += 1;
            }
            let Some((node, f)) = free.get_mut(at) else {
                left += 1;
                continue;
            };
            // Gone meanwhile: its replacement comes next round; still waiting.
            let Some(mut p) = api.get(PODS, ns, n) else {
                left += 1;
                continue;
            };
            *f -= POD_CPU_MILLIS;
            p["spec"]["nodeName"] = node.clone().into();
            p["status"] = json!({"phase": "Running", "startTime": "2026-12-02T00:00:00Z",
                "conditions": [{"type": "PodScheduled", "status": "True"}]});
            api.put(PODS, p);
        }
        left
    }
}

/// Runs the benchmark with `pods` pods (ten per node).
pub fn run(pods: usize, limits: ClientLimits) -> Result<ControllerFigures, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let api = ApiServer::start(&rt);
    seed(&api)?;
    let controller = start_controller(&api, limits)?;
    let pid = controller.0.id().to_string();
    wait_until(
        "the controller's first status write",
        Duration::from_secs(60),
        &mut || {
            api.get("dovetail.sh/v1/nodepools", "", "default")
                .is_some_and(|np| !np["status"].is_null())
        },
    )?;
    let mut world = World::default();
    let up = scale_up(&api, &mut world, pods, &pid)?;
    let steady = settle(&api, &mut world, up.before, up.nodes)?;
    let down = scale_down(&api, &mut world, pods, up.nodes)?;
    Ok(ControllerFigures {
        limits,
        pods,
        nodes: up.nodes,
        to_claims: up.to_claims,
        to_bound: up.to_bound,
        peak_rss: super::peak_rss_of(&pid),
        requests_per_launched: up.requests_per_launched,
        writes_per_launched: up.writes_per_launched,
        requests_through_initialized: steady.requests_through_initialized,
        writes_through_initialized: steady.writes_through_initialized,
        launch_writes_by_kind: steady.launch_writes_by_kind,
        steady_requests_per_minute: steady.requests_per_minute,
        steady_writes_per_minute: steady.writes_per_minute,
        steady_writes_by_kind: steady.writes_by_kind,
        disrupted: down.disrupted,
        requests_per_disrupted: down.requests_per_disrupted,
        writes_per_disrupted: down.writes_per_disrupted,
        down_writes_by_kind: down.writes_by_kind,
        evicted_again: down.evicted_again,
        scale_down: down.wall,
        drain: down.drain,
        evictions: down.evictions,
        evictions_per_second: down.evictions_per_second,
        scale_up_cpu: up.cpu,
    })
}

/// The CRDs, the EC2NodeClass and a NodePool of m5.large that consolidates 20 s after a change.
fn seed(api: &ApiServer) -> Result<(), String> {
    for crd in crate::api::crds() {
        api.put(
            "apiextensions.k8s.io/v1/customresourcedefinitions",
            serde_json::to_value(crd).map_err(|e| e.to_string())?,
        );
    }
    api.put(
        "aws.dovetail.sh/v1/ec2nodeclasses",
        json!({"apiVersion": "aws.dovetail.sh/v1", "kind": "EC2NodeClass", "metadata": {"name": "default"},
               "spec": {"instanceProfile": "nodes", "amiSelectorTerms": [{"alias": "al2023@latest"}],
                        "subnetSelectorTerms": [{"tags": {"dovetail.sh/discovery": "bench"}}],
                        "securityGroupSelectorTerms": [{"tags": {"dovetail.sh/discovery": "bench"}}]}}),
    );
    api.put(
        "dovetail.sh/v1/nodepools",
        json!({"apiVersion": "dovetail.sh/v1", "kind": "NodePool", "metadata": {"name": "default"},
               "spec": {"template": {"spec": {
                            "requirements": [
                                {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["m5.large"]},
                                {"key": "dovetail.sh/capacity-type", "operator": "In", "values": ["on-demand"]}],
                            "nodeClassRef": {"group": "aws.dovetail.sh", "kind": "EC2NodeClass", "name": "default"}}},
                        "disruption": {"consolidationPolicy": "WhenEmptyOrUnderutilized", "consolidateAfter": "20s",
                                       "budgets": [{"nodes": "100%"}]}}}),
    );
    Ok(())
}

/// `dovetail controller` as its own process (this binary), with the in-memory cloud, against
/// the double; killed when dropped.
fn start_controller(api: &ApiServer, limits: ClientLimits) -> Result<Controller, String> {
    let dir = std::env::temp_dir().join(format!("dovetail-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // The controller's log lines, at info, into a file (`DOVETAIL_BENCH_LOG=/tmp/ctl.log`).
    let log = std::env::var("DOVETAIL_BENCH_LOG")
        .ok()
        .and_then(|p| std::fs::File::create(p).ok());
    // A profiler to run the controller under (`DOVETAIL_BENCH_WRAP="heaptrack -o /tmp/ctl"`).
    let wrap: Vec<String> = std::env::var("DOVETAIL_BENCH_WRAP")
        .map(|w| w.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let mut command = match wrap.split_first() {
        Some((tool, args)) => {
            let mut c = Command::new(tool);
            c.args(args).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    use std::os::unix::process::CommandExt;
    let child = command
        .process_group(0)
        .args([
            "controller",
            "--cloud",
            "sim",
            "--cluster-name",
            "bench",
            "--aws-region",
            "us-east-1",
            "--log-format",
            "text",
            "--leader-elect=false",
            "--kube-client-qps",
            &limits.qps.to_string(),
            "--kube-client-burst",
            &limits.burst.to_string(),
            "--metrics-port",
            "0",
            "--health-probe-port",
            "0",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", if log.is_some() { "info" } else { "error" })
        .stdout(log.as_ref().map_or_else(Stdio::null, |f| {
            f.try_clone().map_or_else(|_| Stdio::null(), Stdio::from)
        }))
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the controller: {e}"))?;
    Ok(Controller(child))
}

/// Polls `done` every 200 ms until it holds, or fails naming `what` after `limit`.
fn wait_until(what: &str, limit: Duration, done: &mut dyn FnMut() -> bool) -> Result<(), String> {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > limit {
            return Err(format!("{what}: not within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn writes(requests: &[dovetail_apiserver_double::Request]) -> usize {
    requests.iter().filter(|r| r.method != "GET").count()
}

/// What the scale-up measured; `before` is where its requests start in the double's log.
struct ScaleUp {
    before: usize,
    nodes: usize,
    to_claims: Duration,
    to_bound: Duration,
    requests_per_launched: f64,
    writes_per_launched: f64,
    cpu: (f64, f64),
}

/// Every pod at once, pending and Unschedulable, until every one is bound.
fn scale_up(api: &ApiServer, world: &mut World, pods: usize, pid: &str) -> Result<ScaleUp, String> {
    let before = api.requests();
    for i in 0..pods {
        let p = pod(i);
        world.keep(name(&p), name(&p));
        api.put(PODS, p);
    }
    let created = Instant::now();
    let cpu_before = (cpu_seconds(pid), cpu_seconds("self"));
    wait_until("every pod bound", Duration::from_secs(600), &mut || {
        world.round(api) == 0
    })?;
    let to_bound = created.elapsed();
    let cpu = (
        cpu_seconds(pid) - cpu_before.0,
        cpu_seconds("self") - cpu_before.1,
    );
    let log = api.log();
    let last_claim = log
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/nodeclaims"))
        .map(|r| r.at)
        .max()
        .ok_or("no NodeClaim was created")?;
    let to_claims = last_claim.saturating_duration_since(created);
    let nodes = api.list(CLAIMS).len();
    let scale_up = &log[before..];
    let requests_per_launched = scale_up.len() as f64 / nodes.max(1) as f64;
    let writes_per_launched = writes(scale_up) as f64 / nodes.max(1) as f64;
    // As each phase ends, so a run that fails later still shows what it measured.
    eprintln!(
        "scale-up done: {nodes} nodes; last NodeClaim {:.2} s, every pod bound {:.2} s; \
         {requests_per_launched:.1} requests per launched node; CPU s: controller {:.1}, \
         double and actors {:.1}",
        to_claims.as_secs_f64(),
        to_bound.as_secs_f64(),
        cpu.0,
        cpu.1
    );
    Ok(ScaleUp {
        before,
        nodes,
        to_claims,
        to_bound,
        requests_per_launched,
        writes_per_launched,
        cpu,
    })
}

/// What a launch costs through initialization, and the requests with nothing to do.
struct Steady {
    requests_through_initialized: f64,
    writes_through_initialized: f64,
    launch_writes_by_kind: Vec<(String, usize)>,
    requests_per_minute: f64,
    writes_per_minute: f64,
    writes_by_kind: Vec<(String, usize)>,
}

/// Once every claim is Initialized and the controller has written nothing for 5 s, 30 s with
/// nothing to do. (A lull of 5 s alone came before the last of 10,000 claims were initialized,
/// and their writes were counted as idle.)
fn settle(
    api: &ApiServer,
    world: &mut World,
    before: usize,
    nodes: usize,
) -> Result<Steady, String> {
    let initialized = |c: &Value| {
        c["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|k| k["type"] == "Initialized" && k["status"] == "True")
        })
    };
    wait_until(
        "the controller goes quiet",
        Duration::from_secs(300),
        &mut || {
            // kubelet keeps registering the nodes of claims that launch late.
            world.round(api);
            let log = api.log();
            api.list(CLAIMS).iter().all(initialized)
                && log
                    .iter()
                    .rev()
                    .find(|r| r.method != "GET")
                    .is_none_or(|r| r.at.elapsed() > Duration::from_secs(5))
        },
    )?;
    let quiet = api.requests();
    std::thread::sleep(Duration::from_secs(30));
    let log = api.log();
    // Everything a launch costs, through registration and initialization.
    let launch = &log[before..quiet];
    let steady = &log[quiet..];
    let requests_per_minute = steady.len() as f64 * 2.0;
    eprintln!("idle done: {requests_per_minute:.0} requests per minute");
    Ok(Steady {
        requests_through_initialized: launch.len() as f64 / nodes.max(1) as f64,
        writes_through_initialized: writes(launch) as f64 / nodes.max(1) as f64,
        launch_writes_by_kind: writes_by_kind(launch),
        requests_per_minute,
        writes_per_minute: writes(steady) as f64 * 2.0,
        writes_by_kind: writes_by_kind(steady),
    })
}

/// What the scale-down measured.
struct ScaleDown {
    disrupted: usize,
    requests_per_disrupted: f64,
    writes_per_disrupted: f64,
    writes_by_kind: Vec<(String, usize)>,
    evicted_again: usize,
    wall: Duration,
    drain: Duration,
    evictions: usize,
    evictions_per_second: f64,
}

/// 40% of the pods go, four of every node's ten: every node stays in use, so consolidation
/// drains 40% of them into the room the others have left (deleting the pods of a fixed 40% of
/// the replicas instead emptied whole nodes, which go without an eviction).
fn scale_down(
    api: &ApiServer,
    world: &mut World,
    pods: usize,
    nodes: usize,
) -> Result<ScaleDown, String> {
    let mark = api.requests();
    let down_started = std::time::Instant::now();
    for current in world.forget_share_of_each_node(api, 0.4) {
        api.delete(PODS, "default", &current);
    }
    // Settled once the fleet has changed (40% of the pods went: consolidation must act) and then
    // held for 30 s.
    let mut changed: Option<Instant> = None;
    let mut last = nodes;
    wait_until(
        "consolidation settles",
        // 600 s for 20,000 pods, more for more.
        Duration::from_secs(600.max(pods as u64 / 30)),
        &mut || {
            let pending = world.round(api);
            let now = api.list(CLAIMS).len() + pending;
            if now != last {
                changed = Some(Instant::now());
            }
            last = now;
            // Settled: no change for 30 s of wall clock, however long a round of the actors
            // takes.
            changed.is_some_and(|c| c.elapsed() >= Duration::from_secs(30)) && pending == 0
        },
    )?;
    let log = api.log();
    let down = &log[mark..];
    // Nothing but disruption writes to a claim in the scale-down (no pod is pending, so none is
    // launched): the drain is from the first claim's deletion to the last write to a claim,
    // the release of its finalizer (the deletion is not asked again).
    let claim_writes: Vec<_> = down
        .iter()
        .filter(|r| r.method != "GET" && r.path.contains("/nodeclaims/"))
        .collect();
    let wall = claim_writes.last().map_or(Duration::ZERO, |r| {
        r.at.saturating_duration_since(down_started)
    });
    let drain = match (
        claim_writes.iter().find(|r| r.method == "DELETE"),
        claim_writes.last(),
    ) {
        (Some(a), Some(b)) => b.at.saturating_duration_since(a.at),
        _ => Duration::ZERO,
    };
    let evictions: Vec<_> = down
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/eviction"))
        .collect();
    let evictions_per_second = match (evictions.first(), evictions.last()) {
        (Some(a), Some(b)) if b.at > a.at => {
            evictions.len() as f64 / b.at.duration_since(a.at).as_secs_f64()
        }
        _ => 0.0,
    };
    let disrupted = down
        .iter()
        .filter(|r| r.method == "DELETE" && r.path.contains("/nodeclaims/"))
        .map(|r| r.path.clone())
        .collect::<std::collections::HashSet<_>>()
        .len();
    Ok(ScaleDown {
        disrupted,
        requests_per_disrupted: down.len() as f64 / disrupted.max(1) as f64,
        writes_per_disrupted: writes(down) as f64 / disrupted.max(1) as f64,
        writes_by_kind: writes_by_kind(down),
        evicted_again: evictions.iter().filter(|r| r.path.contains("-r")).count(),
        wall,
        drain,
        evictions: evictions.len(),
        evictions_per_second,
    })
}

/// Writes by method and resource (`POST pods/eviction`, `PATCH nodeclaims/status`), the eight
/// most frequent first.
fn writes_by_kind(requests: &[dovetail_apiserver_double::Request]) -> Vec<(String, usize)> {
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for r in requests.iter().filter(|r| r.method != "GET") {
        // `/api/v1/namespaces/default/pods/web-1/eviction` → `POST pods/eviction`.
        let parts: Vec<&str> = r.path.split('/').filter(|p| !p.is_empty()).collect();
        let plural = parts
            .iter()
            .position(|p| *p == "namespaces")
            .map_or_else(
                || parts.get(if parts[0] == "api" { 2 } else { 3 }).copied(),
                |i| parts.get(i + 2).copied(),
            )
            .unwrap_or("?");
        let sub = if parts
            .last()
            .is_some_and(|l| matches!(*l, "status" | "eviction"))
        {
            format!("/{}", parts.last().unwrap())
        } else {
            String::new()
        };
        *by_kind
            .entry(format!("{} {plural}{sub}", r.method))
            .or_default() += 1;
    }
    let mut kinds: Vec<(String, usize)> = by_kind.into_iter().collect();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
    kinds.truncate(8);
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, cpu_millis: u64) -> Value {
        json!({"apiVersion": "dovetail.sh/v1", "kind": "NodeClaim", "metadata": {"name": name},
               "status": {"providerID": format!("aws:///us-east-1a/i-{name}"),
                          "allocatable": {"cpu": format!("{cpu_millis}m")}}})
    }

    fn bound(api: &ApiServer) -> BTreeMap<String, usize> {
        let mut on = BTreeMap::new();
        api.visit(PODS, |p| {
            if let Some(n) = p["spec"]["nodeName"].as_str() {
                *on.entry(n.to_string()).or_default() += 1;
            }
        });
        on
    }

    /// The actors bind first-fit within a node's CPU, learn of later pods and nodes from the
    /// changes alone, finish a graceful deletion as kubelet does, and bring a deleted replica
    /// back pending under a new name (not one the benchmark scaled down).
    #[test]
    fn the_actors_bind_what_fits_and_replace_what_goes() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let api = ApiServer::start(&rt);
        let mut world = World::default();
        for i in 0..25 {
            let p = pod(i);
            world.keep(name(&p), name(&p));
            api.put(PODS, p);
        }
        assert_eq!(world.round(&api), 25, "no node yet");
        api.put(CLAIMS, claim("a", 10 * POD_CPU_MILLIS + 50));
        assert_eq!(world.round(&api), 15);
        assert_eq!(bound(&api).values().sum::<usize>(), 10);
        api.put(CLAIMS, claim("b", 20 * POD_CPU_MILLIS));
        assert_eq!(world.round(&api), 0);
        assert_eq!(
            bound(&api).into_values().collect::<Vec<_>>(),
            [10, 15],
            "first fit: the first node full, the rest on the second"
        );
        // Evicted: the replica comes back, and binds where its pod left room.
        let gone = name(&pod(3));
        api.delete(PODS, "default", &gone);
        let scaled_down = world.forget(&name(&pod(4))).unwrap();
        api.delete(PODS, "default", &scaled_down);
        assert_eq!(world.round(&api), 0);
        let names: Vec<String> = api.list(PODS).iter().map(name).collect();
        assert_eq!(names.len(), 24);
        assert!(names.iter().any(|n| n.starts_with(&format!("{gone}-r"))));
        assert!(
            !names
                .iter()
                .any(|n| n.starts_with(&format!("{scaled_down}-r")))
        );
        assert_eq!(bound(&api).values().sum::<usize>(), 24);
        // Evicted through the API, a running pod is only marked (its grace runs): kubelet
        // stops it and deletes it, and its replica comes back.
        let evicted = name(&pod(5));
        let mut p = api.get(PODS, "default", &evicted).unwrap();
        p["metadata"]["deletionTimestamp"] = "2026-12-02T00:00:30Z".into();
        api.put(PODS, p);
        assert_eq!(world.round(&api), 0);
        assert!(api.get(PODS, "default", &evicted).is_none());
        let names: Vec<String> = api.list(PODS).iter().map(name).collect();
        assert_eq!(names.len(), 24);
        assert!(names.iter().any(|n| n.starts_with(&format!("{evicted}-r"))));
    }
}
