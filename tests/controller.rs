//! `dovetail controller` end to end: the controller runs unchanged against the API server
//! double (real HTTP, kube's client, reflectors and watches) and moto (real EC2 API paths);
//! the test plays kubelet (registers a Node once a NodeClaim has an instance, marks it Ready)
//! and kube-scheduler (marks pending pods Unschedulable, binds them where they fit).

#[path = "apiserver/mod.rs"]
mod apiserver;
#[path = "aws/moto.rs"]
mod moto;
#[path = "aws/seed.rs"]
mod seed;

use std::time::{Duration, Instant};

use apiserver::ApiServer;
use dovetail::cloud::aws::{AwsSettings, tags};
use dovetail::kubernetes::{Settings, Shutdown};
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
        aws,
        interruption_queue: None,
        zones: vec![
            "us-east-1a".into(),
            "us-east-1b".into(),
            "us-east-1c".into(),
        ],
        core: Default::default(),
        registration_ttl: Duration::from_secs(900),
        sync_timeout: Duration::from_secs(20),
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
    // kubelet: an instance that runs registers its Node, Ready at once.
    let nodes = api.list(NODES);
    for c in api.list(CLAIMS) {
        let Some(pid) = c["status"]["providerID"].as_str() else {
            continue;
        };
        let id = pid.rsplit('/').next().unwrap_or_default();
        if !live.iter().any(|l| l == id) || nodes.iter().any(|n| n["spec"]["providerID"] == pid) {
            continue;
        }
        let node_name = format!("ip-{}.ec2.internal", id.trim_start_matches("i-"));
        let mut labels = c["metadata"]["labels"].clone();
        labels["kubernetes.io/hostname"] = node_name.clone().into();
        api.put(
            NODES,
            json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": node_name, "labels": labels},
                "spec": {"providerID": pid},
                "status": {
                    "allocatable": c["status"]["allocatable"],
                    "capacity": c["status"]["capacity"],
                    "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-02T00:00:00Z", "reason": "KubeletReady", "message": ""}],
                },
            }),
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
    let started = Instant::now();
    loop {
        let ids = live(moto);
        play_kubelet_and_scheduler(api, &ids);
        if done(api, &ids) {
            eprintln!("{what}: {:.1} s", started.elapsed().as_secs_f64());
            return;
        }
        assert!(
            started.elapsed() < limit,
            "{what}: not within {limit:?}; claims {:#?}; pods {:#?}",
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
    logs();
    let Some(moto) = Moto::start() else { return };
    seed::seed(&moto, true);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let api = ApiServer::start(&rt);
    api.put("aws.dovetail.sh/v1/ec2nodeclasses", node_class());
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
    assert!(
        api.list("events.k8s.io/v1/events")
            .iter()
            .any(|e| e["reason"] == "Nominated")
    );

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
