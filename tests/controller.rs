//! `dovetail controller` end to end: the controller runs unchanged against the API server
//! double (real HTTP, kube's client, reflectors and watches) and moto (real EC2 API paths);
//! the test plays kubelet (registers a Node once a NodeClaim has an instance, marks it Ready)
//! and kube-scheduler (marks pending pods Unschedulable, binds them where they fit).

#[path = "aws/moto.rs"]
mod moto;
#[path = "aws/seed.rs"]
mod seed;

use std::time::{Duration, Instant};

use dovetail::cloud::aws::{AwsSettings, tags};
use dovetail::kubernetes::{Settings, Shutdown};
use dovetail_apiserver_double::ApiServer;
use moto::Moto;
use serde_json::{Value, json};

const CLAIMS: &str = "dovetail.sh/v1/nodeclaims";
const PODS: &str = "v1/pods";
const NODES: &str = "v1/nodes";

fn node_pool(consolidate_after: &str) -> Value {
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

fn node_class() -> Value {
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
fn inflate_pod(i: usize) -> Value {
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

fn settings(moto: &Moto) -> Settings {
    let mut aws = AwsSettings::new("us-east-1", "my-cluster");
    aws.endpoint = Some(moto.endpoint.clone());
    aws.cluster_endpoint = "https://ABCDEF.gr7.us-east-1.eks.amazonaws.com".into();
    aws.cluster_ca = "LS0tLS1CRUdJTi...".into();
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
            ..Default::default()
        },
        registration_ttl: Duration::from_secs(900),
        sync_timeout: Duration::from_secs(20),
        orphan_grace: Duration::from_secs(5),
        instance: "test".into(),
    }
}

/// The controller on its own thread until the returned handle is stopped.
struct Running {
    shutdown: Shutdown,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(api: &ApiServer, settings: Settings) -> Running {
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

    fn stop(&mut self) {
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

fn cpu_millis(q: &Value) -> u64 {
    let s = q.as_str().unwrap_or("0");
    match s.strip_suffix('m') {
        Some(m) => m.parse().unwrap_or(0),
        None => s.parse::<f64>().map_or(0, |c| (c * 1000.0) as u64),
    }
}

fn name(o: &Value) -> String {
    o["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// One round of kubelet and kube-scheduler.
fn play_kubelet_and_scheduler(api: &ApiServer, live: &[String]) {
    play(api, live, true)
}

/// kubelet (registering nodes only with `register`) and kube-scheduler.
fn play(api: &ApiServer, live: &[String], register: bool) {
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
                pod["spec"]["nodeName"] = n["metadata"]["name"].clone();
                pod["status"] = json!({"phase": "Running", "startTime": "2026-12-02T00:00:00Z",
                    "conditions": [{"type": "PodScheduled", "status": "True"}]});
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
fn live(moto: &Moto) -> Vec<String> {
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
fn until(
    api: &ApiServer,
    moto: &Moto,
    limit: Duration,
    what: &str,
    done: impl Fn(&ApiServer, &[String]) -> bool,
) {
    until_with(api, moto, limit, what, true, done)
}

/// [`until`], with a kubelet that registers nodes only with `register`.
fn until_with(
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

fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

#[test]
fn inflate_scales_up_through_nodeclaims_and_ec2_then_consolidates_to_zero() {
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    api.put("dovetail.sh/v1/nodepools", node_pool("5s"));

    // What the simulator decides for the same manifests on the same account.
    let manifests = format!(
        "{}\n---\n{}\n---\n{}",
        serde_json::to_string(&node_pool("5s")).unwrap(),
        serde_json::to_string(&node_class()).unwrap(),
        serde_json::to_string(&json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "inflate", "namespace": "default"},
            "spec": {"replicas": 5, "selector": {"matchLabels": {"app": "inflate"}},
                     "template": {"metadata": {"labels": {"app": "inflate"}}, "spec": inflate_pod(0)["spec"]}},
        }))
        .unwrap()
    );
    let mut sim_aws = settings(&moto).aws;
    sim_aws.cluster_name = "simulated".into();
    let report = dovetail::sim::simulate(
        &[("inflate.yaml".into(), manifests)],
        &dovetail::sim::SimOptions {
            aws: Some(sim_aws),
            duration: Duration::from_secs(60),
            ..Default::default()
        },
    )
    .expect("the simulation runs");
    let mut simulated: Vec<String> = report
        .nodes
        .iter()
        .map(|n| n.instance.offer.instance_type.clone())
        .collect();
    simulated.sort();
    assert!(!simulated.is_empty());

    let mut controller = Running::start(&api, settings(&moto));
    for i in 0..5 {
        api.put(PODS, inflate_pod(i));
    }
    until(
        &api,
        &moto,
        Duration::from_secs(90),
        "five pods bound to launched, registered nodes",
        |api, ids| {
            let pods = api.list(PODS);
            let claims = api.list(CLAIMS);
            pods.len() == 5
                && pods.iter().all(|p| !p["spec"]["nodeName"].is_null())
                && !claims.is_empty()
                && claims.iter().all(|c| {
                    let conds = c["status"]["conditions"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    ["Launched", "Registered", "Initialized"].iter().all(|t| {
                        conds
                            .iter()
                            .any(|x| x["type"] == *t && x["status"] == "True")
                    })
                })
                && ids.len() == claims.len()
        },
    );
    let claims = api.list(CLAIMS);
    let mut launched: Vec<String> = claims
        .iter()
        .map(|c| {
            c["metadata"]["labels"]["node.kubernetes.io/instance-type"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    launched.sort();
    assert_eq!(
        launched, simulated,
        "the controller decides what the simulator decides"
    );
    for c in &claims {
        assert_eq!(
            c["metadata"]["finalizers"],
            json!(["dovetail.sh/termination"])
        );
        assert_eq!(c["metadata"]["ownerReferences"][0]["kind"], "NodePool");
        let node = api
            .get(
                NODES,
                "",
                c["status"]["nodeName"].as_str().expect("a node name"),
            )
            .expect("its node");
        assert_eq!(
            node["metadata"]["finalizers"],
            json!(["dovetail.sh/termination"])
        );
        assert_eq!(
            node["metadata"]["labels"]["dovetail.sh/nodepool"],
            "default"
        );
        assert_eq!(
            node["metadata"]["ownerReferences"][0]["name"],
            c["metadata"]["name"]
        );
    }
    // The NodePool counts what its nodes hold against its limits (written on the next pass).
    let started = Instant::now();
    let np = loop {
        let np = api.get("dovetail.sh/v1/nodepools", "", "default").unwrap();
        if np["status"]["resources"]["nodes"].as_str() == Some(claims.len().to_string().as_str()) {
            break np;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            np["status"]
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        np["status"]["resources"]["cpu"]
            .as_str()
            .unwrap()
            .ends_with('m')
    );
    // The NodeClaim object existed before its instance: the create came before any status.
    let log = api.log();
    let created = log
        .iter()
        .position(|r| r.method == "POST" && r.path.ends_with("/nodeclaims"))
        .expect("a create");
    let launched_at = log
        .iter()
        .position(|r| {
            r.method == "PATCH" && r.path.ends_with("/status") && r.body.contains("providerID")
        })
        .expect("a launch record");
    assert!(created < launched_at);
    // Pods were told where they go.
    event(&api, "Nominated", None);

    // Scale to zero: the empty nodes are consolidated, drained, terminated, released.
    for p in api.list(PODS) {
        api.delete(PODS, "default", &name(&p));
    }
    until(
        &api,
        &moto,
        Duration::from_secs(90),
        "nodes consolidated away",
        |api, ids| api.list(CLAIMS).is_empty() && api.list(NODES).is_empty() && ids.is_empty(),
    );
    controller.stop();
}

/// The Event with `reason` (about the object named `regarding`), waiting a little for it:
/// the controller publishes Events without waiting on them.
fn event(api: &ApiServer, reason: &str, regarding: Option<&str>) -> Value {
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
fn run_pods(api: &ApiServer, moto: &Moto, n: usize) {
    for i in 0..n {
        api.put(PODS, inflate_pod(i));
    }
    until(
        api,
        moto,
        Duration::from_secs(60),
        "pods running",
        |api, _| {
            api.list(PODS)
                .iter()
                .all(|p| p["status"]["phase"] == "Running")
                && api
                    .list(NODES)
                    .iter()
                    .all(|n| n["metadata"]["finalizers"] == json!(["dovetail.sh/termination"]))
        },
    );
}

/// moto with a seeded account, the double with the default node class, on a runtime.
fn world() -> Option<(Moto, tokio::runtime::Runtime, ApiServer)> {
    logs();
    let moto = Moto::start()?;
    seed::seed(&moto, true);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let api = ApiServer::start(&rt);
    api.put("aws.dovetail.sh/v1/ec2nodeclasses", node_class());
    Some((moto, rt, api))
}

fn ready_condition(api: &ApiServer, pool: &str) -> Value {
    api.get("dovetail.sh/v1/nodepools", "", pool)
        .expect("the pool")["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned())
        .unwrap_or(Value::Null)
}

#[test]
fn a_malformed_node_pool_is_not_ready_with_a_reason_and_an_event_while_others_provision() {
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    let mut bad = node_pool("5s");
    bad["metadata"]["name"] = "broken".into();
    bad["spec"]["limits"] = json!({"cpu": "banana"});
    bad["spec"]["weight"] = 100.into();
    api.put("dovetail.sh/v1/nodepools", bad);
    api.put("dovetail.sh/v1/nodepools", node_pool("1h"));
    let _controller = Running::start(&api, settings(&moto));
    for i in 0..3 {
        api.put(PODS, inflate_pod(i));
    }
    until(
        &api,
        &moto,
        Duration::from_secs(60),
        "pods bound through the good pool",
        |api, _| {
            api.list(PODS)
                .iter()
                .all(|p| !p["spec"]["nodeName"].is_null())
                && ready_condition(api, "broken")["status"] == "False"
        },
    );
    let broken = ready_condition(&api, "broken");
    assert_eq!(broken["reason"], "InvalidSpec");
    assert!(
        broken["message"]
            .as_str()
            .unwrap()
            .contains("spec.limits.cpu"),
        "{broken}"
    );
    assert_eq!(ready_condition(&api, "default")["status"], "True");
    assert!(
        api.list(CLAIMS)
            .iter()
            .all(|c| c["metadata"]["labels"]["dovetail.sh/nodepool"] == "default")
    );
    event(&api, "InvalidSpec", Some("broken"));
}

#[test]
fn a_pdb_with_max_unavailable_zero_blocks_the_drain_until_it_is_relaxed() {
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    api.put("dovetail.sh/v1/nodepools", node_pool("1h"));
    let pdb = |max: i64| {
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
               "metadata": {"name": "inflate", "namespace": "default"},
               "spec": {"maxUnavailable": max, "selector": {"matchLabels": {"app": "inflate"}}}})
    };
    api.put("policy/v1/poddisruptionbudgets", pdb(0));
    let _controller = Running::start(&api, settings(&moto));
    run_pods(&api, &moto, 2);
    // A user deletes the node: the finalizer holds it while it drains.
    let node = name(&api.list(NODES)[0]);
    api.delete(NODES, "", &node);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        play_kubelet_and_scheduler(&api, &live(&moto));
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(api.list(PODS).len(), 2, "the budget allows no eviction");
    assert!(
        api.get(NODES, "", &node).is_some(),
        "the node stays while its pods cannot leave"
    );
    // The host honours the budget itself: it does not even ask.
    assert!(
        !api.log()
            .iter()
            .any(|r| r.path.ends_with("/eviction") && r.method == "POST"),
        "no eviction was attempted while the budget allows none"
    );
    // Relaxed: the drain goes on, one allowance at a time, and the node goes.
    api.put("policy/v1/poddisruptionbudgets", pdb(1));
    until(
        &api,
        &moto,
        Duration::from_secs(60),
        "drained and terminated",
        |api, ids| {
            api.get(NODES, "", &node).is_none()
                && !ids
                    .iter()
                    .any(|i| node.contains(i.trim_start_matches("i-")))
        },
    );
    let evictions = api
        .log()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/eviction"))
        .count();
    assert!(
        evictions >= 2,
        "evictions through the subresource: {evictions}"
    );
}

#[test]
fn an_instance_whose_node_never_registers_is_cleaned_up_by_liveness() {
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    api.put("dovetail.sh/v1/nodepools", node_pool("1h"));
    let mut s = settings(&moto);
    s.registration_ttl = Duration::from_secs(3);
    let _controller = Running::start(&api, s);
    api.put(PODS, inflate_pod(0));
    until_with(
        &api,
        &moto,
        Duration::from_secs(30),
        "a claim launched",
        false,
        |api, _| {
            api.list(CLAIMS)
                .iter()
                .any(|c| !c["status"]["providerID"].is_null())
        },
    );
    let first = api
        .list(CLAIMS)
        .into_iter()
        .find(|c| !c["status"]["providerID"].is_null())
        .unwrap();
    let claim = name(&first);
    let id = first["status"]["providerID"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    until_with(
        &api,
        &moto,
        Duration::from_secs(30),
        "the unregistered claim deleted with its instance",
        false,
        |api, ids| api.get(CLAIMS, "", &claim).is_none() && !ids.contains(&id),
    );
    let never = event(&api, "NodeNeverJoined", Some(&claim));
    assert!(
        never["note"].as_str().unwrap().contains("access entry"),
        "{never}"
    );
}

#[test]
fn a_restart_after_create_fleet_adopts_the_instance_instead_of_launching_a_second() {
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    api.put("dovetail.sh/v1/nodepools", node_pool("1h"));
    // What a controller killed right after CreateFleet leaves: the NodeClaim object (created
    // first, with its finalizer and offers) and an instance tagged with its name, but no
    // recorded launch.
    let offers = "m5.large/us-east-1a/on-demand/0.096";
    let mut cloud = dovetail::cloud::aws::AwsCloud::new(settings(&moto).aws).unwrap();
    let spec: dovetail::api::ec2nodeclass::EC2NodeClassSpec =
        serde_json::from_value(node_class()["spec"].clone()).unwrap();
    use dovetail::cloud::CloudProvider;
    cloud
        .node_class("default", &spec)
        .expect("the class resolves");
    let request = dovetail::cloud::LaunchRequest {
        claim: "default-00007".into(),
        node_pool: "default".into(),
        offers: dovetail::kubernetes::parse_offers(offers),
    };
    let before = cloud.create(&request).expect("the first launch");
    // And an instance whose claim never made it (or was deleted): an orphan.
    let orphan = cloud
        .create(&dovetail::cloud::LaunchRequest {
            claim: "default-00099".into(),
            ..request.clone()
        })
        .expect("a launch");
    api.put(
        CLAIMS,
        json!({
            "apiVersion": "dovetail.sh/v1", "kind": "NodeClaim",
            "metadata": {"name": "default-00007", "labels": {"dovetail.sh/nodepool": "default"},
                         "annotations": {"dovetail.sh/offers": offers},
                         "finalizers": ["dovetail.sh/termination"]},
            "spec": {"nodeClassRef": {"group": "aws.dovetail.sh", "kind": "EC2NodeClass", "name": "default"}},
        }),
    );
    let _controller = Running::start(&api, settings(&moto));
    until(
        &api,
        &moto,
        Duration::from_secs(60),
        "the claim's launch recorded and the orphan collected after its grace",
        |api, ids| {
            api.get(CLAIMS, "", "default-00007")
                .is_some_and(|c| !c["status"]["providerID"].is_null())
                && !ids.contains(&orphan.id)
        },
    );
    let claim = api.get(CLAIMS, "", "default-00007").unwrap();
    assert!(
        claim["status"]["providerID"]
            .as_str()
            .unwrap()
            .ends_with(&before.id),
        "the instance launched before the restart is the claim's: {}",
        claim["status"]["providerID"]
    );
    let ids = live(&moto);
    assert_eq!(
        ids,
        vec![before.id.clone()],
        "one instance for one NodeClaim"
    );
    // New claims continue after the names that exist.
    api.put(PODS, inflate_pod(0));
    api.put(PODS, inflate_pod(1));
    api.put(PODS, inflate_pod(2));
    api.put(PODS, inflate_pod(3));
    api.put(PODS, inflate_pod(4));
    until(
        &api,
        &moto,
        Duration::from_secs(60),
        "pods bound",
        |api, _| {
            api.list(PODS)
                .iter()
                .all(|p| !p["spec"]["nodeName"].is_null())
        },
    );
    for c in api.list(CLAIMS) {
        let n: u64 = name(&c).rsplit('-').next().unwrap().parse().unwrap();
        assert!(n >= 7, "{}", name(&c));
    }
}

#[test]
fn a_spot_interruption_from_sqs_creates_the_replacement_before_the_first_eviction() {
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    api.put("dovetail.sh/v1/nodepools", node_pool("1h"));
    let sqs_rt = seed::runtime();
    let sqs = sqs_rt.block_on(async { aws_sdk_sqs::Client::new(&moto.config().await) });
    let url = sqs_rt
        .block_on(sqs.create_queue().queue_name("interruptions").send())
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let mut s = settings(&moto);
    s.interruption_queue = Some(url.clone());
    let _controller = Running::start(&api, s);
    run_pods(&api, &moto, 2);
    let old = api.list(CLAIMS).remove(0);
    let old_name = name(&old);
    let id = old["status"]["providerID"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let body = dovetail::interruption::example_message(
        &dovetail::interruption::Kind::SpotInterruption,
        &id,
    );
    let mark = api.log().len();
    sqs_rt
        .block_on(sqs.send_message().queue_url(&url).message_body(body).send())
        .unwrap();
    until(
        &api,
        &moto,
        Duration::from_secs(60),
        "drained onto the replacement",
        |api, ids| {
            api.get(CLAIMS, "", &old_name).is_none()
                && !ids.contains(&id)
                && api.list(CLAIMS).len() == 1
        },
    );
    let log = api.log();
    let after: Vec<_> = log.iter().skip(mark).collect();
    let replacement = after
        .iter()
        .position(|r| r.method == "POST" && r.path.ends_with("/nodeclaims"))
        .expect("a replacement NodeClaim");
    let first_eviction = after
        .iter()
        .position(|r| r.method == "POST" && r.path.ends_with("/eviction"))
        .expect("evictions");
    assert!(
        replacement < first_eviction,
        "replacement first, then the drain"
    );
    let left = sqs_rt
        .block_on(
            sqs.receive_message()
                .queue_url(&url)
                .wait_time_seconds(0)
                .send(),
        )
        .unwrap();
    assert!(left.messages().is_empty(), "the message was deleted");
    event(&api, "Interrupted", Some(&old_name));
}

#[test]
fn refused_writes_are_retried_and_every_instance_belongs_to_exactly_one_claim() {
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    api.put("dovetail.sh/v1/nodepools", node_pool("1h"));
    let _controller = Running::start(&api, settings(&moto));
    // Wait for the controller's first write, then refuse the next ones: creates, launch
    // records, registrations, Events alike.
    let started = Instant::now();
    while !api.log().iter().any(|r| r.method != "GET") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the controller never wrote"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    api.inject(429, 4);
    api.inject(409, 4);
    for i in 0..6 {
        api.put(PODS, inflate_pod(i));
    }
    until(
        &api,
        &moto,
        Duration::from_secs(90),
        "every pod bound despite refused writes",
        |api, ids| {
            let claims = api.list(CLAIMS);
            api.list(PODS)
                .iter()
                .all(|p| !p["spec"]["nodeName"].is_null())
                && claims.iter().all(|c| !c["status"]["providerID"].is_null())
                && ids.len() == claims.len()
        },
    );
    assert_eq!(api.faults_left(), 0, "every injected fault refused a write");
    // One instance per claim, each the claim's own.
    let ids = live(&moto);
    let mut claimed: Vec<String> = api
        .list(CLAIMS)
        .iter()
        .map(|c| {
            c["status"]["providerID"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    claimed.sort();
    let mut ids = ids;
    ids.sort();
    assert_eq!(claimed, ids);
}
