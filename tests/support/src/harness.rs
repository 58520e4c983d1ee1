//! The world the controller's end-to-end tests run in: moto (EC2), the API server double, and
//! the test playing kubelet (registers a Node once a NodeClaim has a running instance) and
//! kube-scheduler (marks pending pods Unschedulable, binds them where they fit). The
//! controller runs as a thread ([`Running`]) or as its own process ([`Process`]).

use std::time::{Duration, Instant};

use dovetail::cloud::aws::{AwsSettings, tags};
use dovetail::kubernetes::{Settings, Shutdown};
use dovetail_apiserver_double::ApiServer;
use serde_json::{Value, json};

use crate::moto::Moto;
use crate::seed;

pub const CLAIMS: &str = "dovetail.sh/v1/nodeclaims";

pub const PODS: &str = "v1/pods";

pub const NODES: &str = "v1/nodes";

pub fn node_pool(consolidate_after: &str) -> Value {
    json!({
        "apiVersion": "dovetail.sh/v1", "kind": "NodePool",
        "metadata": {"name": "default"},
        "spec": {
            "template": {"spec": {
                "requirements": [
                    {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["m5.large", "m5.xlarge", "c5.xlarge"]},
                    {"key": "dovetail.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
                ],
                "nodeClassRef": {"group": "aws.dovetail.sh", "kind": "EC2NodeClass", "name": "default"},
            }},
            "disruption": {"consolidationPolicy": "WhenEmptyOrUnderutilized", "consolidateAfter": consolidate_after},
        },
    })
}

pub fn node_class() -> Value {
    json!({
        "apiVersion": "aws.dovetail.sh/v1", "kind": "EC2NodeClass",
        "metadata": {"name": "default"},
        "spec": {
            "instanceProfile": "dovetail-node",
            "amiSelectorTerms": [{"tags": {seed::DISCOVERY: "my-cluster"}}],
            "subnetSelectorTerms": [{"tags": {seed::DISCOVERY: "my-cluster"}}],
            "securityGroupSelectorTerms": [{"tags": {seed::DISCOVERY: "my-cluster"}}],
        },
    })
}

/// A pod of the `inflate` Deployment (owned by its ReplicaSet), as the ReplicaSet controller
/// creates it.
pub fn inflate_pod(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("inflate-7d9f-{i:05}"), "namespace": "default",
            "labels": {"app": "inflate"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "inflate-7d9f", "uid": "rs-1", "controller": true}],
        },
        "spec": {"containers": [{"name": "inflate", "image": "public.ecr.aws/eks-distro/kubernetes/pause:3.7",
                                  "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}}}]},
        "status": {"phase": "Pending"},
    })
}

pub fn settings(moto: &Moto) -> Settings {
    let mut aws = AwsSettings::new("us-east-1", "my-cluster");
    aws.endpoint = Some(moto.endpoint.clone());
    aws.cluster_endpoint = "https://ABCDEF.gr7.us-east-1.eks.amazonaws.com".into();
    aws.cluster_ca = "LS0tLS1CRUdJTi...".into();
    aws.service_cidr = "10.100.0.0/16".into();
    aws.kubernetes_version = "1.34".into();
    Settings {
        cloud: dovetail::kubernetes::Cloud::Aws,
        aws,
        interruption_queue: None,
        zones: vec![
            "us-east-1a".into(),
            "us-east-1b".into(),
            "us-east-1c".into(),
        ],
        core: dovetail::controller::Settings {
            // Garbage collection every few seconds, so a test sees it.
            gc_interval: Duration::from_secs(3),
            registration_ttl: Duration::from_secs(900),
            orphan_grace: Duration::from_secs(5),
            ..Default::default()
        },
        sync_timeout: Duration::from_secs(20),
        instance: "test".into(),
        operation: Default::default(),
        policy_fetch: Default::default(),
        policy_config_map_namespaces: Vec::new(),
    }
}

/// The controller on its own thread until the returned handle is stopped.
pub struct Running {
    shutdown: Shutdown,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    pub fn start(api: &ApiServer, settings: Settings) -> Running {
        let shutdown = Shutdown::default();
        let stop = shutdown.clone();
        let config = api.config();
        let thread = std::thread::spawn(move || {
            dovetail::kubernetes::run(config, settings, stop).expect("the controller runs");
        });
        Running {
            shutdown,
            thread: Some(thread),
        }
    }

    pub fn stop(&mut self) {
        self.shutdown.stop();
        if let Some(t) = self.thread.take() {
            t.join().expect("the controller thread ends cleanly");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.stop();
    }
}

pub fn cpu_millis(q: &Value) -> u64 {
    let s = q.as_str().unwrap_or("0");
    match s.strip_suffix('m') {
        Some(m) => m.parse().unwrap_or(0),
        None => s.parse::<f64>().map_or(0, |c| (c * 1000.0) as u64),
    }
}

pub fn name(o: &Value) -> String {
    o["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// One round of kubelet and kube-scheduler.
pub fn play_kubelet_and_scheduler(api: &ApiServer, live: &[String]) {
    play(api, live, true)
}

/// kubelet (registering nodes only with `register`) and kube-scheduler.
/// The annotation that says how long a test pod takes to stop once asked (its preStop hook and
/// shutdown), in seconds; 0 when absent.
pub const STOP_SECONDS: &str = "test.dovetail.sh/stop-seconds";

/// The annotation that keeps a test pod's readiness probe failing: it runs, never Ready.
pub const NOT_READY: &str = "test.dovetail.sh/not-ready";

/// The `inflate` ReplicaSet its pods name as their controller ([`inflate_pod`]), at `replicas`:
/// the disruption controller reads its scale, and the ReplicaSet controller (played in
/// [`play`]) replaces its pods that are being deleted.
pub fn inflate_replica_set(api: &ApiServer, replicas: u32) {
    api.put(
        "apps/v1/replicasets",
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
               "metadata": {"name": "inflate-7d9f", "namespace": "default", "uid": "rs-1"},
               "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "inflate"}}}}),
    );
}

pub fn play(api: &ApiServer, live: &[String], register: bool) {
    // ReplicaSet controller: pods not being deleted are counted against the replicas, and
    // missing ones created (kubernetes.io "ReplicaSet"; a terminating pod is replaced at once).
    for rs in api.list("apps/v1/replicasets") {
        let pods = api.list(PODS);
        let mine = |p: &&Value| p["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"];
        let active = pods
            .iter()
            .filter(mine)
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .count() as u64;
        let want = rs["spec"]["replicas"].as_u64().unwrap_or(1);
        let next = pods
            .iter()
            .filter(mine)
            .filter_map(|p| name(p).rsplit('-').next()?.parse::<usize>().ok())
            .max()
            .map_or(0, |n| n + 1);
        for i in 0..want.saturating_sub(active) as usize {
            api.put(PODS, inflate_pod(next + i));
        }
    }
    // kubelet: a pod asked to go stops after its preStop and shutdown time, or is killed at the
    // end of its grace period, whichever comes first; then the kubelet deletes it for good
    // (kubernetes.io "Pod Lifecycle: Termination of Pods").
    let now = k8s_openapi::jiff::Timestamp::now();
    for p in api.list(PODS) {
        let Some(deadline) = p["metadata"]["deletionTimestamp"]
            .as_str()
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        else {
            continue;
        };
        let grace = p["metadata"]["deletionGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(0);
        let stop = p["metadata"]["annotations"][STOP_SECONDS]
            .as_str()
            .and_then(|s| s.parse::<i64>().ok())
            .unwrap_or(0);
        let asked = deadline - k8s_openapi::jiff::SignedDuration::from_secs(grace);
        if now >= asked + k8s_openapi::jiff::SignedDuration::from_secs(stop.min(grace)) {
            let ns = p["metadata"]["namespace"].as_str().unwrap_or("default");
            api.delete(PODS, ns, p["metadata"]["name"].as_str().unwrap_or_default());
        }
    }
    // kubelet: an instance that runs registers its Node, Ready at once.
    let nodes = api.list(NODES);
    for c in api.list(CLAIMS).into_iter().filter(|_| register) {
        let Some(pid) = c["status"]["providerID"].as_str() else {
            continue;
        };
        let id = pid.rsplit('/').next().unwrap_or_default();
        if !live.iter().any(|l| l == id) || nodes.iter().any(|n| n["spec"]["providerID"] == pid) {
            continue;
        }
        api.register_node(
            &c,
            &format!("ip-{}.ec2.internal", id.trim_start_matches("i-")),
        );
    }
    // kube-scheduler: bind where a Ready, untainted node has room; otherwise Unschedulable.
    let nodes = api.list(NODES);
    let mut pods = api.list(PODS);
    for i in 0..pods.len() {
        if !pods[i]["spec"]["nodeName"].is_null()
            || !pods[i]["metadata"]["deletionTimestamp"].is_null()
        {
            continue;
        }
        let want = cpu_millis(&pods[i]["spec"]["containers"][0]["resources"]["requests"]["cpu"]);
        let fits = nodes.iter().find(|n| {
            let tainted = n["spec"]["taints"]
                .as_array()
                .is_some_and(|t| !t.is_empty());
            let used: u64 = pods
                .iter()
                .filter(|p| p["spec"]["nodeName"] == n["metadata"]["name"])
                .map(|p| cpu_millis(&p["spec"]["containers"][0]["resources"]["requests"]["cpu"]))
                .sum();
            !tainted
                && n["metadata"]["deletionTimestamp"].is_null()
                && used + want <= cpu_millis(&n["status"]["allocatable"]["cpu"])
        });
        let mut pod = pods[i].clone();
        match fits {
            Some(n) => {
                // Bound, started, and Ready unless its readiness probe fails (kubelet).
                let ready = if pod["metadata"]["annotations"][NOT_READY].is_null() {
                    "True"
                } else {
                    "False"
                };
                pod["spec"]["nodeName"] = n["metadata"]["name"].clone();
                pod["status"] = json!({"phase": "Running", "startTime": "2026-12-02T00:00:00Z",
                    "conditions": [{"type": "PodScheduled", "status": "True"},
                                   {"type": "Ready", "status": ready}]});
            }
            None if pod["status"]["conditions"].is_null() => {
                pod["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": "0/0 nodes are available"}]);
            }
            None => continue,
        }
        api.put(PODS, pod.clone());
        pods[i] = pod;
    }
}

/// Ids of the cluster's live instances in moto.
pub fn live(moto: &Moto) -> Vec<String> {
    seed::runtime().block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&moto.config().await);
        let out = ec2.describe_instances().send().await.unwrap();
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter(|i| {
                i.state()
                    .and_then(|s| s.name())
                    .is_some_and(|n| matches!(n.as_str(), "pending" | "running"))
                    && i.tags()
                        .iter()
                        .any(|t| t.key() == Some(tags::CLUSTER) && t.value() == Some("my-cluster"))
            })
            .map(|i| i.instance_id().unwrap_or_default().to_string())
            .collect()
    })
}

/// Plays kubelet and scheduler until `done` holds, or fails after `limit`.
pub fn until(
    api: &ApiServer,
    moto: &Moto,
    limit: Duration,
    what: &str,
    done: impl Fn(&ApiServer, &[String]) -> bool,
) {
    until_with(api, moto, limit, what, true, done)
}

/// [`until`], with a kubelet that registers nodes only with `register`.
pub fn until_with(
    api: &ApiServer,
    moto: &Moto,
    limit: Duration,
    what: &str,
    register: bool,
    done: impl Fn(&ApiServer, &[String]) -> bool,
) {
    let started = Instant::now();
    loop {
        let ids = live(moto);
        play(api, &ids, register);
        if done(api, &ids) {
            eprintln!("{what}: {:.1} s", started.elapsed().as_secs_f64());
            return;
        }
        assert!(
            started.elapsed() < limit,
            "{what}: not within {limit:?}; live {:?}; nodes {:?}; claims {:#?}; pods {:#?}",
            live(moto),
            api.list(NODES).iter().map(name).collect::<Vec<_>>(),
            api.list(CLAIMS)
                .iter()
                .map(|c| (
                    name(c),
                    c["status"].clone(),
                    c["metadata"]["deletionTimestamp"].clone()
                ))
                .collect::<Vec<_>>(),
            api.list(PODS)
                .iter()
                .map(|p| (name(p), p["spec"]["nodeName"].clone()))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// The Event with `reason` (about the object named `regarding`), waiting a little for it:
/// the controller publishes Events without waiting on them.
pub fn event(api: &ApiServer, reason: &str, regarding: Option<&str>) -> Value {
    let started = Instant::now();
    loop {
        let events = api.list("events.k8s.io/v1/events");
        if let Some(e) = events.iter().find(|e| {
            e["reason"] == reason && regarding.is_none_or(|r| e["regarding"]["name"] == r)
        }) {
            return e.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no {reason} Event about {regarding:?}: {events:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Creates `n` inflate pods and plays kubelet and scheduler until they run on registered nodes
/// (nodes carrying the termination finalizer).
pub fn run_pods(api: &ApiServer, moto: &Moto, n: usize) {
    for i in 0..n {
        api.put(PODS, inflate_pod(i));
    }
    wait_running(api, moto, Duration::from_secs(60));
}

/// Until every pod runs and every node carries the controller's termination finalizer.
pub fn wait_running(api: &ApiServer, moto: &Moto, limit: Duration) {
    until(api, moto, limit, "pods running", |api, _| {
        api.list(PODS)
            .iter()
            .all(|p| p["status"]["phase"] == "Running")
            && api
                .list(NODES)
                .iter()
                .all(|n| n["metadata"]["finalizers"] == json!(["dovetail.sh/termination"]))
    });
}

/// What the controller writes is checked against the CRDs' schema and CEL rules, as a real API
/// server would.
pub fn crd_validator() -> dovetail_apiserver_double::Validator {
    Box::new(|object| {
        dovetail::api::validate::validate(object["kind"].as_str().unwrap_or_default(), object)
            .iter()
            .map(|v| v.to_string())
            .collect()
    })
}

/// The CRDs of this release, as `helm install dovetail-crd` leaves them (the controller checks
/// their version at start).
pub fn install_crds(api: &ApiServer) {
    for crd in dovetail::api::crds() {
        api.put(
            "apiextensions.k8s.io/v1/customresourcedefinitions",
            serde_json::to_value(crd).unwrap(),
        );
    }
}

/// moto with a seeded account, the double with the default node class, on a runtime.
pub fn world() -> Option<(Moto, tokio::runtime::Runtime, ApiServer)> {
    logs();
    let moto = Moto::start()?;
    seed::seed(&moto, true);
    seed::eks_cluster(&moto);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let api = ApiServer::start(&rt);
    api.validate_with(crd_validator());
    install_crds(&api);
    api.put("aws.dovetail.sh/v1/ec2nodeclasses", node_class());
    Some((moto, rt, api))
}

pub fn ready_condition(api: &ApiServer, pool: &str) -> Value {
    api.get("dovetail.sh/v1/nodepools", "", pool)
        .expect("the pool")["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned())
        .unwrap_or(Value::Null)
}

pub use crate::paths::dovetail_exe;

/// `dovetail controller` as its own process (the binary `cargo test` built beside this test),
/// killed when dropped.
pub struct Process(pub std::process::Child);

impl Process {
    pub fn start(api: &ApiServer, aws_endpoint: &str, dir: &std::path::Path) -> Process {
        Process::start_with(api, aws_endpoint, dir, &[])
    }

    /// [`Process::start`] with more environment (settings) on top.
    pub fn start_with(
        api: &ApiServer,
        aws_endpoint: &str,
        dir: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Process {
        let exe = dovetail_exe();
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
        let child = std::process::Command::new(exe)
            .args(["controller", "--log-format", "text"])
            .env("KUBECONFIG", &kubeconfig)
            .env("CLUSTER_NAME", "my-cluster")
            // No endpoint, CA, CIDR or version: the process learns them from moto's EKS
            // (world() made the cluster), through the IAM check.
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", aws_endpoint)
            .env("ZONES", "us-east-1a,us-east-1b,us-east-1c")
            .env("ORPHAN_GRACE_PERIOD", "5s")
            .env("RUST_LOG", "warn")
            .env("LEADER_ELECT", "false")
            .env("METRICS_PORT", "0")
            .env("HEALTH_PROBE_PORT", "0")
            .envs(env.iter().copied())
            .spawn()
            .expect("the controller starts");
        Process(child)
    }

    /// Sends SIGTERM, as the kubelet does to a pod it stops.
    pub fn terminate(&self) {
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "SIGTERM delivered");
    }

    /// Waits for the process to end.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "the controller did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A loopback port free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET over plain HTTP/1.0: the status code and the body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((code, body))
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
