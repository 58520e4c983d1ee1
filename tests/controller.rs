//! `dovetail controller` end to end: the controller runs unchanged against the API server
//! double (real HTTP, kube's client, reflectors and watches) and moto (real EC2 API paths);
//! the test plays kubelet (registers a Node once a NodeClaim has an instance, marks it Ready)
//! and kube-scheduler (marks pending pods Unschedulable, binds them where they fit).

use dovetail_test_support::fault_proxy;
use dovetail_test_support::harness;
use dovetail_test_support::moto;
use dovetail_test_support::seed;

use std::time::{Duration, Instant};

use dovetail_apiserver_double::ApiServer;
use harness::*;
use moto::Moto;
use serde_json::{Value, json};

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
    // The simulation tags its instances as another cluster's (the controller below must not
    // take them for orphans), judged by an IAM check for that cluster.
    let (mut check, sim_endpoint) =
        moto::iam_check(&moto.admin_endpoint, &["--iam-cluster", "simulated"]);
    let mut sim_aws = settings(&moto).aws;
    sim_aws.cluster_name = "simulated".into();
    sim_aws.endpoint = Some(sim_endpoint.clone());
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
    let refused = moto::iam_denials(&sim_endpoint);
    let _ = check.kill();
    let _ = check.wait();
    assert!(refused.is_empty(), "{refused:#?}");
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
    // What a removal costs: the taint and the finalizers are written against the informer's
    // object or the deletion's answer, so no Node or NodeClaim is read by name, and a claim
    // already deleting is not deleted again (hundreds of nodes drain on one client budget).
    let log = api.log();
    let removed: Vec<String> = claims.iter().map(name).collect();
    for claim in &removed {
        let path = format!("/nodeclaims/{claim}");
        let deletes = log
            .iter()
            .filter(|r| r.method == "DELETE" && r.path.ends_with(&path))
            .count();
        assert_eq!(deletes, 1, "{claim} deleted once");
    }
    let reads: Vec<&str> = log
        .iter()
        .filter(|r| {
            r.method == "GET"
                && r.code == 200
                && (r.path.contains("/nodes/") || r.path.contains("/nodeclaims/"))
                && !r.path.contains("watch")
        })
        .map(|r| r.path.as_str())
        .collect();
    assert!(reads.is_empty(), "read by name: {reads:?}");
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
    // A duration the CRD's pattern refuses (an object the API server let through: an old one,
    // or a CRD without validation) is refused the same way, not read as Never.
    let mut sloppy = node_pool("banana");
    sloppy["metadata"]["name"] = "sloppy".into();
    api.put("dovetail.sh/v1/nodepools", sloppy);
    // And one whose field has the wrong type does not stop the watch of every other pool.
    let mut typo = node_pool("1h");
    typo["metadata"]["name"] = "typo".into();
    typo["spec"]["weight"] = "heavy".into();
    api.put("dovetail.sh/v1/nodepools", typo);
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
    let sloppy = ready_condition(&api, "sloppy");
    assert_eq!(sloppy["status"], "False", "{sloppy}");
    assert!(
        sloppy["message"]
            .as_str()
            .unwrap()
            .contains("spec.disruption.consolidateAfter"),
        "{sloppy}"
    );
    let typo = ready_condition(&api, "typo");
    assert_eq!(typo["status"], "False", "{typo}");
    assert!(
        typo["message"].as_str().unwrap().contains("cannot be read"),
        "{typo}"
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
fn a_pod_goes_to_the_zone_of_its_volume() {
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    api.put(
        "storage.k8s.io/v1/storageclasses",
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
               "metadata": {"name": "gp3", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
               "provisioner": "ebs.csi.aws.com", "volumeBindingMode": "WaitForFirstConsumer"}),
    );
    api.put(
        "v1/persistentvolumes",
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-data"},
               "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"],
                        "csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-1"},
                        "claimRef": {"namespace": "default", "name": "data"},
                        "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                            {"key": "topology.ebs.csi.aws.com/zone", "operator": "In", "values": ["us-east-1b"]}]}]}}}}),
    );
    api.put(
        "v1/persistentvolumeclaims",
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": "data", "namespace": "default"},
               "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}},
                        "volumeName": "pv-data"}}),
    );
    api.put("dovetail.sh/v1/nodepools", node_pool("1h"));
    let _controller = Running::start(&api, settings(&moto));
    let mut pod = inflate_pod(0);
    pod["spec"]["volumes"] =
        json!([{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]);
    api.put(PODS, pod);
    until(
        &api,
        &moto,
        Duration::from_secs(60),
        "the pod bound",
        |api, _| {
            api.list(PODS)
                .iter()
                .all(|p| !p["spec"]["nodeName"].is_null())
        },
    );
    let claims = api.list(CLAIMS);
    assert_eq!(claims.len(), 1);
    assert_eq!(
        claims[0]["metadata"]["labels"]["topology.kubernetes.io/zone"], "us-east-1b",
        "{}",
        claims[0]
    );
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
    // The budget's expected pods are its ReplicaSet's scale (kube-controller-manager).
    inflate_replica_set(&api, 2);
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
fn a_failing_termination_names_the_node_the_call_and_the_error_once() {
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    api.put("dovetail.sh/v1/nodepools", node_pool("1h"));
    let proxy = fault_proxy::FaultProxy::start(&moto.endpoint, &["--fail", "TerminateInstances"]);
    let mut settings = settings(&moto);
    settings.aws.endpoint = Some(proxy.url.clone());
    let _controller = Running::start(&api, settings);
    run_pods(&api, &moto, 1);
    let node = name(&api.list(NODES)[0]);
    let claim = name(&api.list(CLAIMS)[0]);
    let instance = api.list(CLAIMS)[0]["status"]["providerID"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    api.delete(NODES, "", &node);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        play_kubelet_and_scheduler(&api, &live(&moto));
        std::thread::sleep(Duration::from_millis(300));
    }
    let e = event(&api, "FailedTerminating", Some(&claim));
    let note = e["note"].as_str().unwrap();
    assert!(
        note.contains(&format!("terminating {instance}"))
            && note.contains(&format!("instance {instance}: TerminateInstances"))
            && note.contains("InternalError"),
        "the instance, the call and the error: {note}"
    );
    assert!(!note.contains("nodeclaim :"), "no empty claim name: {note}");
    let failures: Vec<_> = api
        .list("events.k8s.io/v1/events")
        .into_iter()
        .filter(|e| e["reason"] == "FailedTerminating")
        .collect();
    assert_eq!(
        failures.len(),
        1,
        "retried every round, told once: {failures:#?}"
    );
    assert!(live(&moto).contains(&instance), "the instance still runs");
    assert!(
        api.get(NODES, "", &node).is_some(),
        "the node waits for its instance"
    );
}

#[test]
fn an_instance_whose_node_never_registers_is_cleaned_up_by_liveness() {
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    api.put("dovetail.sh/v1/nodepools", node_pool("1h"));
    let mut s = settings(&moto);
    s.core.registration_ttl = Duration::from_secs(3);
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
fn a_controller_killed_right_after_create_fleet_converges_with_one_instance_per_claim() {
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    api.put("dovetail.sh/v1/nodepools", node_pool("1h"));
    let dir = std::env::temp_dir().join(format!("dovetail-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pid_file = dir.join("pid");
    let proxy = fault_proxy::FaultProxy::start(
        &moto.endpoint,
        &["--kill-after-create-fleet", pid_file.to_str().unwrap()],
    );
    let mut first = Process::start(&api, &proxy.url, &dir);
    std::fs::write(&pid_file, first.0.id().to_string()).unwrap();
    for i in 0..5 {
        api.put(PODS, inflate_pod(i));
    }
    // kube-scheduler finds the pods unschedulable; the controller launches and is killed.
    let started = Instant::now();
    while first.0.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the controller was not killed after CreateFleet; claims {:?}",
            api.list(CLAIMS).iter().map(name).collect::<Vec<_>>()
        );
        play(&api, &[], false);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(proxy.killed(), 1);
    let launched = live(&moto);
    let claims = api.list(CLAIMS);
    assert!(
        !launched.is_empty(),
        "CreateFleet reached EC2 before the kill"
    );
    assert!(
        claims.iter().all(|c| c["status"]["providerID"].is_null()),
        "the killed controller recorded no launch: {claims:#?}"
    );
    assert!(
        claims.len() >= launched.len(),
        "every instance has its NodeClaim object, created before CreateFleet"
    );

    // Restarted: the claims' launches resume and adopt what exists; the pods land.
    let _second = Process::start(&api, &proxy.url, &dir);
    until(
        &api,
        &moto,
        Duration::from_secs(90),
        "every pod bound after the restart",
        |api, _| {
            api.list(PODS)
                .iter()
                .all(|p| !p["spec"]["nodeName"].is_null())
        },
    );
    // Past the orphan grace and a collection: what runs is exactly what the claims own.
    std::thread::sleep(Duration::from_secs(7));
    let mut owned: Vec<String> = api
        .list(CLAIMS)
        .iter()
        .filter_map(|c| c["status"]["providerID"].as_str())
        .map(|p| p.rsplit('/').next().unwrap().to_string())
        .collect();
    owned.sort();
    let mut ids = live(&moto);
    ids.sort();
    assert_eq!(ids, owned, "one instance per NodeClaim, no orphan");
    for id in &launched {
        assert!(
            ids.contains(id),
            "the instance launched before the kill was adopted, not replaced: {id}"
        );
    }
    assert_eq!(proxy.killed(), 1);
    // Started with no endpoint, CA, CIDR or version, the process learnt them from EKS and
    // bootstrapped its nodes with them.
    let (endpoint, cidr) = seed::runtime().block_on(async {
        let eks = aws_sdk_eks::Client::new(&moto.config().await);
        let c = eks
            .describe_cluster()
            .name("my-cluster")
            .send()
            .await
            .unwrap();
        let c = c.cluster().unwrap().clone();
        (
            c.endpoint().unwrap().to_string(),
            c.kubernetes_network_config()
                .and_then(|n| n.service_ipv4_cidr())
                .unwrap()
                .to_string(),
        )
    });
    let user_data = seed::runtime().block_on(async {
        use base64::Engine as _;
        let ec2 = aws_sdk_ec2::Client::new(&moto.config().await);
        let t = ec2.describe_launch_templates().send().await.unwrap();
        let id = t.launch_templates()[0]
            .launch_template_id()
            .unwrap()
            .to_string();
        let v = ec2
            .describe_launch_template_versions()
            .launch_template_id(id)
            .send()
            .await
            .unwrap();
        let data = v.launch_template_versions()[0]
            .launch_template_data()
            .unwrap()
            .clone();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(data.user_data().unwrap())
                .unwrap(),
        )
        .unwrap()
    });
    assert!(
        user_data.contains(&format!("apiServerEndpoint: {endpoint}")),
        "{user_data}"
    );
    assert!(user_data.contains(&format!("cidr: {cidr}")), "{user_data}");
}

#[test]
fn a_claim_without_a_recorded_launch_adopts_its_instance_and_an_orphan_is_collected() {
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
        node_class: "default".into(),
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
        .block_on(sqs.create_queue().queue_name("dovetail-my-cluster").send())
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

#[test]
fn the_double_refuses_what_the_crds_refuse_and_ratchets_an_old_invalid_object() {
    logs();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let api = dovetail_apiserver_double::ApiServer::start(&rt);
    api.validate_with(crd_validator());
    let client = {
        let _enter = rt.enter();
        kube::Client::try_from(api.config()).unwrap()
    };
    let pools: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(
        client,
        &kube::api::ApiResource::erase::<dovetail::api::NodePool>(&()),
    );
    let mut bad = node_pool("banana");
    bad["metadata"]["name"] = "bad".into();
    let obj: kube::api::DynamicObject = serde_json::from_value(bad.clone()).unwrap();
    let err = rt
        .block_on(pools.create(&Default::default(), &obj))
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 422);
            assert!(
                s.message.contains("spec.disruption.consolidateAfter"),
                "{}",
                s.message
            );
        }
        e => panic!("expected 422 Invalid, got {e}"),
    }
    // Stored before the schema said so (put by the test): its status still writes.
    api.put("dovetail.sh/v1/nodepools", bad);
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "InvalidSpec",
        "message": "m", "lastTransitionTime": "2026-12-02T00:00:00Z"}]}});
    rt.block_on(pools.patch_status(
        "bad",
        &Default::default(),
        &kube::api::Patch::Merge(&status),
    ))
    .expect("ratcheting lets an unchanged invalid field through");
}

#[test]
fn a_deleted_node_class_takes_its_instance_profile_with_it() {
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    let iam = seed::runtime().block_on(async { aws_sdk_iam::Client::new(&moto.config().await) });
    seed::runtime()
        .block_on(
            iam.create_role()
                .role_name("DovetailNodeRole-my-cluster")
                .assume_role_policy_document("{}")
                .send(),
        )
        .unwrap();
    let mut class = node_class();
    class["metadata"]["name"] = "team".into();
    class["spec"]["role"] = "DovetailNodeRole-my-cluster".into();
    class["spec"]
        .as_object_mut()
        .unwrap()
        .remove("instanceProfile");
    api.put("aws.dovetail.sh/v1/ec2nodeclasses", class);
    let profile =
        dovetail::cloud::aws::instance_profile::profile_name("my-cluster", "us-east-1", "team");
    let exists = |name: &str| {
        seed::runtime()
            .block_on(
                iam.get_instance_profile()
                    .instance_profile_name(name)
                    .send(),
            )
            .is_ok()
    };
    let _controller = Running::start(&api, settings(&moto));
    until(
        &api,
        &moto,
        Duration::from_secs(60),
        "the class's profile made",
        |api, _| {
            api.get("aws.dovetail.sh/v1/ec2nodeclasses", "", "team")
                .is_some_and(|c| c["status"]["instanceProfile"] == profile.as_str())
        },
    );
    assert!(exists(&profile));
    api.delete("aws.dovetail.sh/v1/ec2nodeclasses", "", "team");
    until(
        &api,
        &moto,
        Duration::from_secs(60),
        "the profile removed",
        |_, _| !exists(&profile),
    );
}

/// The instance id of a node.
fn instance_of(api: &ApiServer, node: &str) -> String {
    api.get(NODES, "", node).unwrap()["spec"]["providerID"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string()
}

/// Runs the actors until `node`'s instance is terminated; returns (when the last of its pods
/// was gone, when its instance was, when its first pod was asked to go), measured from now.
fn drain_timeline(
    api: &ApiServer,
    moto: &Moto,
    node: &str,
    instance: &str,
    limit: Duration,
) -> (f64, f64, f64) {
    let instance = instance.to_string();
    let started = Instant::now();
    let (mut pods_gone, mut asked) = (None, None);
    loop {
        let live = live(moto);
        play(api, &live, true);
        let on_node: Vec<Value> = api
            .list(PODS)
            .into_iter()
            .filter(|p| p["spec"]["nodeName"] == node)
            .collect();
        if asked.is_none()
            && on_node
                .iter()
                .any(|p| !p["metadata"]["deletionTimestamp"].is_null())
        {
            asked = Some(started.elapsed().as_secs_f64());
        }
        if on_node.is_empty() && pods_gone.is_none() {
            pods_gone = Some(started.elapsed().as_secs_f64());
        }
        if !live.contains(&instance) {
            let gone = started.elapsed().as_secs_f64();
            return (
                pods_gone.unwrap_or(f64::INFINITY),
                gone,
                asked.unwrap_or(gone),
            );
        }
        assert!(
            started.elapsed() < limit,
            "the instance of {node} still runs after {limit:?}; pods on it: {:?}",
            on_node.iter().map(name).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Two pods (20 s to stop each) bound on one node of a running controller; returns the node.
fn two_slow_pods(api: &ApiServer, moto: &Moto, stop_seconds: u32, pool: Value) -> String {
    api.put("dovetail.sh/v1/nodepools", pool);
    for i in 0..2 {
        let mut pod = inflate_pod(i);
        pod["metadata"]["annotations"] = json!({STOP_SECONDS: stop_seconds.to_string()});
        pod["spec"]["terminationGracePeriodSeconds"] = 30.into();
        api.put(PODS, pod);
    }
    wait_running(api, moto, Duration::from_secs(90));
    api.list(PODS)[0]["spec"]["nodeName"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The pool (consolidateAfter 1h), the controller, and one pod running on one registered node:
/// the controller (keep it), that node's name and its instance.
fn one_running_node(api: &ApiServer, moto: &Moto) -> (Running, String, String) {
    api.put("dovetail.sh/v1/nodepools", node_pool("1h"));
    let controller = Running::start(api, settings(moto));
    run_pods(api, moto, 1);
    let node = name(&api.list(NODES)[0]);
    let instance = instance_of(api, &node);
    (controller, node, instance)
}

/// Another controller's finalizer on `node` (a CSI driver, a node agent).
fn protect(api: &ApiServer, node: &str) {
    let mut n = api.get(NODES, "", node).unwrap();
    n["metadata"]["finalizers"]
        .as_array_mut()
        .unwrap()
        .push("example.com/protect".into());
    api.put(NODES, n);
}

#[test]
fn a_drain_terminates_the_instance_only_after_its_pods_have_stopped() {
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    let _controller = Running::start(&api, settings(&moto));
    let node = two_slow_pods(&api, &moto, 20, node_pool("1h"));
    let instance = instance_of(&api, &node);
    api.delete(NODES, "", &node);
    let (pods_gone, instance_gone, asked) =
        drain_timeline(&api, &moto, &node, &instance, Duration::from_secs(90));
    eprintln!(
        "asked at {asked:.1}s, pods gone at {pods_gone:.1}s, instance at {instance_gone:.1}s"
    );
    assert!(
        pods_gone <= instance_gone,
        "the instance went at {instance_gone:.1}s, before its pods ({pods_gone:.1}s)"
    );
    // The pods take 20 s (to the second the API server stamps) to stop; `asked` is when the
    // test first saw them asked, at most a few polls late on a loaded machine. Terminated in
    // the eviction's own pass, as before, the instance went within a second.
    assert!(
        instance_gone - asked >= 15.0,
        "the pods take 20 s to stop; the instance went {:.1}s after they were asked",
        instance_gone - asked
    );
}

#[test]
fn a_pdb_that_never_allows_an_eviction_yields_to_the_termination_grace_period() {
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    api.put(
        "policy/v1/poddisruptionbudgets",
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
               "metadata": {"name": "inflate", "namespace": "default"},
               "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "inflate"}}}}),
    );
    let _controller = Running::start(&api, settings(&moto));
    inflate_replica_set(&api, 2);
    let mut pool = node_pool("1h");
    pool["spec"]["template"]["spec"]["terminationGracePeriod"] = "2m".into();
    // The pods would take three minutes to stop (their grace is 30 s): the grace period cuts
    // them short.
    let node = two_slow_pods(&api, &moto, 180, pool);
    let instance = instance_of(&api, &node);
    api.delete(NODES, "", &node);
    let (_, instance_gone, _) =
        drain_timeline(&api, &moto, &node, &instance, Duration::from_secs(240));
    eprintln!("instance gone at {instance_gone:.1}s");
    assert!(
        instance_gone <= 120.0 + 30.0,
        "gone within terminationGracePeriod (2 m) + the pods' grace (30 s): gone at {instance_gone:.1}s"
    );
    assert!(
        instance_gone >= 85.0,
        "the PDB held the node until the grace period neared its end: gone at {instance_gone:.1}s"
    );
    // The budget allows no eviction: the pods were deleted directly, with their grace (30 s) or
    // what was left of the 2 m.
    let deletes: Vec<String> = api
        .log()
        .iter()
        .filter(|r| r.method == "DELETE" && r.path.contains("/pods/"))
        .map(|r| format!("{}?{} {}", r.path, r.query, r.body))
        .collect();
    assert!(
        deletes.len() >= 2 && deletes.iter().all(|d| d.contains("gracePeriodSeconds")),
        "{deletes:#?}"
    );
}

#[test]
fn another_controllers_finalizer_and_taint_on_our_node_survive_its_whole_life() {
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    let (_controller, name, instance) = one_running_node(&api, &moto);
    // Another controller (a CSI driver, a node agent) writes its own finalizer and taint.
    protect(&api, &name);
    let mut node = api.get(NODES, "", &name).unwrap();
    node["spec"]["taints"] =
        json!([{"key": "example.com/maintenance", "effect": "PreferNoSchedule"}]);
    api.put(NODES, node);
    api.delete(NODES, "", &name);
    until(
        &api,
        &moto,
        Duration::from_secs(90),
        "the instance terminated and our finalizer released",
        |api, live| {
            !live.contains(&instance)
                && api
                    .get(NODES, "", &name)
                    .is_some_and(|n| n["metadata"]["finalizers"] == json!(["example.com/protect"]))
        },
    );
    let node = api
        .get(NODES, "", &name)
        .expect("held by the other finalizer");
    let taints = node["spec"]["taints"].as_array().unwrap();
    assert!(
        taints.iter().any(|t| t["key"] == "example.com/maintenance"),
        "the other controller's taint is kept: {taints:?}"
    );
    // Never a write that clears every finalizer.
    assert!(
        !api.log()
            .iter()
            .any(|r| r.body.contains(r#""finalizers":null"#)),
        "finalizers: null was sent"
    );
}

#[test]
fn a_running_pod_that_is_not_ready_does_not_count_as_healthy_for_its_pdb() {
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    api.put("dovetail.sh/v1/nodepools", node_pool("1h"));
    api.put(
        "policy/v1/poddisruptionbudgets",
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
               "metadata": {"name": "inflate", "namespace": "default"},
               "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "inflate"}}}}),
    );
    let _controller = Running::start(&api, settings(&moto));
    for i in 0..3 {
        let mut pod = inflate_pod(i);
        if i == 2 {
            pod["metadata"]["annotations"] = json!({NOT_READY: "true"});
        }
        api.put(PODS, pod);
    }
    wait_running(&api, &moto, Duration::from_secs(90));
    let pods = api.list(PODS);
    let node = pods[0]["spec"]["nodeName"].as_str().unwrap().to_string();
    assert!(
        pods.iter().all(|p| p["spec"]["nodeName"] == node.as_str()),
        "the three pods share a node"
    );
    // kube-controller-manager counts the Ready pods only: 2 healthy, none to spare.
    until(
        &api,
        &moto,
        Duration::from_secs(10),
        "the budget's status",
        |api, _| {
            let s = &api
                .get("policy/v1/poddisruptionbudgets", "default", "inflate")
                .unwrap()["status"];
            s["currentHealthy"] == 2 && s["expectedPods"] == 3 && s["disruptionsAllowed"] == 0
        },
    );
    api.delete(NODES, "", &node);
    // The unready pod may go (the budget has its 2 healthy pods: IfHealthyBudget); the Ready
    // ones may not, and the controller does not even ask.
    until(
        &api,
        &moto,
        Duration::from_secs(30),
        "the unready pod evicted",
        |api, _| api.get(PODS, "default", "inflate-7d9f-00002").is_none(),
    );
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        play_kubelet_and_scheduler(&api, &live(&moto));
        std::thread::sleep(Duration::from_millis(300));
    }
    for ready in ["inflate-7d9f-00000", "inflate-7d9f-00001"] {
        let p = api.get(PODS, "default", ready).expect("a Ready pod stays");
        assert!(
            p["metadata"]["deletionTimestamp"].is_null(),
            "{ready} was asked to go"
        );
        assert!(
            !api.log()
                .iter()
                .any(|r| r.method == "POST" && r.path.ends_with(&format!("/{ready}/eviction"))),
            "an eviction of {ready} was attempted though its budget allows none"
        );
    }
    assert!(
        api.get(NODES, "", &node).is_some(),
        "the node waits for its pods"
    );
}

#[test]
fn a_stale_write_to_our_node_gets_409_and_is_retried_with_the_fresh_object() {
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    let (_controller, node, instance) = one_running_node(&api, &moto);
    // Another controller's finalizer keeps the Node readable after ours is released.
    protect(&api, &node);
    // It also changes the Node just before each of our next two conditional writes (labels
    // and taints: no finalizer may be added to an object being deleted).
    for n in 0..2 {
        api.race_next_write(NODES, "", &node, move |o| {
            o["metadata"]["labels"][format!("example.com/racer-{n}")] = "true".into();
            let mut taints = o["spec"]["taints"].as_array().cloned().unwrap_or_default();
            taints.push(
                json!({"key": format!("example.com/racer-{n}"), "effect": "PreferNoSchedule"}),
            );
            o["spec"]["taints"] = taints.into();
        });
    }
    api.delete(NODES, "", &node);
    until(
        &api,
        &moto,
        Duration::from_secs(90),
        "terminated and our finalizer released",
        |api, live| {
            !live.contains(&instance)
                && api
                    .get(NODES, "", &node)
                    .is_some_and(|n| n["metadata"]["finalizers"] == json!(["example.com/protect"]))
        },
    );
    let n = api.get(NODES, "", &node).unwrap();
    let taints: Vec<&str> = n["spec"]["taints"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["key"].as_str())
        .collect();
    for racer in ["example.com/racer-0", "example.com/racer-1"] {
        assert_eq!(n["metadata"]["labels"][racer], "true", "{n:#}");
        assert!(taints.contains(&racer), "{taints:?}");
    }
    let writes: Vec<u16> = api
        .log()
        .iter()
        .filter(|r| {
            matches!(r.method.as_str(), "PUT" | "PATCH")
                && r.path.ends_with(&format!("/nodes/{node}"))
        })
        .map(|r| r.code)
        .collect();
    assert!(
        writes.iter().filter(|&&c| c == 409).count() >= 2 && writes.last() == Some(&200),
        "stale writes refused with 409, then retried: {writes:?}"
    );
}

#[test]
fn a_run_of_429_answers_does_not_hold_the_controller() {
    // kube's default client retries a 429 fifteen times with a doubling backoff (minutes in
    // all); the controller answers a refusal itself, on its next pass.
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    let (_controller, node, instance) = one_running_node(&api, &moto);
    api.inject(429, 20);
    api.delete(NODES, "", &node);
    let started = Instant::now();
    until(
        &api,
        &moto,
        Duration::from_secs(60),
        "the node drained and its instance terminated",
        |_, live| !live.contains(&instance),
    );
    assert_eq!(api.faults_left(), 0, "the 429s were answered");
    eprintln!(
        "terminated {:.1}s after the delete",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_drained_nodes_instance_waits_for_its_volumes_to_detach() {
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    let (_controller, node, instance) = one_running_node(&api, &moto);
    // What the attach/detach controller records for a volume on the node (played by hand).
    const ATTACHMENTS: &str = "storage.k8s.io/v1/volumeattachments";
    api.put(
        ATTACHMENTS,
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment",
               "metadata": {"name": "csi-0123"},
               "spec": {"attacher": "ebs.csi.aws.com", "nodeName": node,
                        "source": {"persistentVolumeName": "pv-data"}},
               "status": {"attached": true}}),
    );
    // The controller's watch sees it well before the node is deleted.
    let seen = Instant::now();
    while seen.elapsed() < Duration::from_secs(2) {
        play_kubelet_and_scheduler(&api, &live(&moto));
        std::thread::sleep(Duration::from_millis(200));
    }
    api.delete(NODES, "", &node);
    until(
        &api,
        &moto,
        Duration::from_secs(30),
        "the node's pod gone",
        |api, _| api.list(PODS).is_empty(),
    );
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        play_kubelet_and_scheduler(&api, &live(&moto));
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        live(&moto).contains(&instance),
        "the instance was terminated while a volume was still attached"
    );
    api.delete(ATTACHMENTS, "", "csi-0123");
    until(
        &api,
        &moto,
        Duration::from_secs(30),
        "terminated once detached",
        |_, live| !live.contains(&instance),
    );
}

#[test]
fn a_nominated_pod_that_kube_scheduler_does_not_bind_on_the_ready_node_is_planned_again() {
    // Pods the plan did not know (created as the node registers) take the room kube-scheduler
    // would have given the nominated ones. Held for the whole nomination TTL (5 minutes), the
    // nominated pods stalled; once the node has been Ready for the nomination window they are
    // planned again.
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    api.put("dovetail.sh/v1/nodepools", node_pool("1h"));
    let _controller = Running::start(&api, settings(&moto));
    for i in 0..3 {
        api.put(PODS, inflate_pod(i));
    }
    // kube-scheduler finds no node for them; nothing registers yet.
    let started = Instant::now();
    loop {
        for mut p in api.list(PODS) {
            if p["status"]["conditions"].is_null() {
                p["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "False",
                    "reason": "Unschedulable", "message": "0/0 nodes are available"}]);
                api.put(PODS, p);
            }
        }
        let launched = api
            .list(CLAIMS)
            .iter()
            .any(|c| c["status"]["providerID"].is_string());
        if launched && !live(&moto).is_empty() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no launch");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Two big pods appear and are bound first when the node registers.
    for i in 0..2 {
        let mut p = inflate_pod(i);
        p["metadata"]["name"] = format!("a-intruder-{i}").into();
        p["metadata"]["labels"] = json!({"app": "intruder"});
        p["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("ownerReferences");
        p["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "900m".into();
        api.put(PODS, p);
    }
    let t0 = Instant::now();
    until(
        &api,
        &moto,
        Duration::from_secs(90),
        "every pod running",
        |api, _| {
            api.list(PODS)
                .iter()
                .all(|p| p["status"]["phase"] == "Running")
        },
    );
    let took = t0.elapsed().as_secs_f64();
    eprintln!("all running {took:.1}s after the intruders");
    assert!(
        api.list(CLAIMS).len() >= 2,
        "a second claim for the pods that did not fit"
    );
}

/// A NodePool template's annotations reach its claims and then their Nodes, as Karpenter's do —
/// `dovetail.sh/do-not-disrupt` among them, which the host reads from the Node (or the claim
/// before the Node has it); the controller's own bookkeeping stays on the claim.
#[test]
fn a_pool_templates_annotations_reach_its_claims_and_their_nodes() {
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    let mut pool = node_pool("1h");
    pool["spec"]["template"]["metadata"] = json!({"annotations": {
        "dovetail.sh/do-not-disrupt": "true", "example.com/team": "web"}});
    api.put("dovetail.sh/v1/nodepools", pool);
    let _controller = Running::start(&api, settings(&moto));
    run_pods(&api, &moto, 1);
    let node = api.list(NODES)[0].clone();
    let claim = api.list(CLAIMS)[0].clone();
    for object in [&claim, &node] {
        let a = &object["metadata"]["annotations"];
        assert_eq!(a["dovetail.sh/do-not-disrupt"], "true", "{object:#}");
        assert_eq!(a["example.com/team"], "web", "{object:#}");
    }
    assert!(
        claim["metadata"]["annotations"]["dovetail.sh/offers"].is_string(),
        "{claim:#}"
    );
    assert!(
        node["metadata"]["annotations"]["dovetail.sh/offers"].is_null(),
        "bookkeeping stays on the claim: {node:#}"
    );
}

/// A pod of the `inflate` Deployment as the Deployment controller labels it (its ReplicaSet is
/// named after the Deployment and the template's hash).
fn deployment_pod(i: usize) -> Value {
    let mut p = inflate_pod(i);
    p["metadata"]["labels"]["pod-template-hash"] = json!("7d9f");
    p["metadata"]["ownerReferences"][0]["name"] = json!("inflate-7d9f");
    p["spec"]["containers"][0]["env"] = json!([{"name": "API_TOKEN", "value": "s3cr3t"}]);
    p
}

#[test]
fn a_recorded_run_replays_to_the_fleet_the_controller_launched() {
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("dovetail-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let journal = dir.join("journal.jsonl");
    api.put("dovetail.sh/v1/nodepools", node_pool("Never"));
    // The pods exist before the controller starts: one provisioning batch, in the cluster as in
    // the replay.
    for i in 0..7 {
        api.put(PODS, deployment_pod(i));
    }
    // A Job's pod that finishes while the recorder runs.
    let mut job = inflate_pod(100);
    job["metadata"]["name"] = json!("report-1");
    job["metadata"]["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": "Job", "name": "report", "uid": "job-1", "controller": true}]);
    api.put(PODS, job);

    let stop = dovetail::kubernetes::Shutdown::default();
    let recording = {
        let (config, stop) = (api.config(), stop.clone());
        let opts = dovetail::kubernetes::record::RecordOptions {
            out: journal.clone(),
            interval: Duration::from_millis(500),
            max_bytes: 1 << 20,
            keep: 2,
            duration: None,
            sync_timeout: Duration::from_secs(30),
        };
        std::thread::spawn(move || dovetail::kubernetes::record::record(config, &opts, stop))
    };
    let _controller = Running::start(&api, settings(&moto));
    wait_running(&api, &moto, Duration::from_secs(90));
    let mut done = api.get(PODS, "default", "report-1").unwrap();
    done["status"]["phase"] = json!("Succeeded");
    api.put(PODS, done);
    until(
        &api,
        &moto,
        Duration::from_secs(30),
        "the Job's pod leaves the journal",
        |_, _| {
            std::fs::read_to_string(&journal)
                .is_ok_and(|t| t.contains("\"delete\":{\"kind\":\"Pod\",\"name\":\"report-1\""))
        },
    );
    stop.stop();
    let recorded = recording
        .join()
        .unwrap()
        .expect("the recording ends cleanly");
    assert_eq!(recorded.parts, 1);

    let text = std::fs::read_to_string(&journal).unwrap();
    assert!(
        !text.contains("s3cr3t") && !text.contains("pause:3.7"),
        "{text}"
    );
    let replay = dovetail::journal::read("journal.jsonl", &text).unwrap();
    let deployment = replay
        .initial
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .unwrap_or_else(|| panic!("the Deployment at the start: {text}"));
    assert_eq!(deployment["spec"]["replicas"], json!(7), "{deployment:#}");

    // Replayed with the same policies, the simulator launches what the controller launched.
    let report = dovetail::sim::simulate(
        &replay.manifests("journal.jsonl"),
        &dovetail::sim::SimOptions::default(),
    )
    .expect("the replay runs");
    let mut replayed: Vec<String> = report
        .nodes
        .iter()
        .map(|n| n.instance.offer.instance_type.clone())
        .collect();
    replayed.sort();
    let mut launched: Vec<String> = api
        .list(CLAIMS)
        .iter()
        .filter_map(|c| c["metadata"]["labels"]["node.kubernetes.io/instance-type"].as_str())
        .map(str::to_string)
        .collect();
    launched.sort();
    assert!(!launched.is_empty());
    assert_eq!(replayed, launched, "{}", report.summary());
    assert_eq!(
        report.pods.len(),
        7,
        "the Job's pod ran and left: {}",
        report.summary()
    );

    // The journal compares policies offline, as any scenario does.
    let out = std::process::Command::new(dovetail_exe())
        .args(["simulate", "--replay"])
        .arg(&journal)
        .args(["--compare", "scoring=cheapest", "scoring=dense"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("== difference (scoring=dense minus scoring=cheapest)"),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
