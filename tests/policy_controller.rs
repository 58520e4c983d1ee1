//! Policies in a cluster, end to end: `dovetail controller` against the API server double and
//! moto, with components in ConfigMaps, in a real OCI registry (Debian's `docker-registry`,
//! pushed with `dovetail policy push`, read back with `skopeo`) and on an HTTPS server.

use dovetail_test_support::harness;
use dovetail_test_support::moto;
use dovetail_test_support::seed;
use dovetail_test_support::servers;

use std::time::{Duration, Instant};

use dovetail_apiserver_double::ApiServer;
use harness::*;
use serde_json::{Value, json};

const POLICIES: &str = "dovetail.sh/v1/policies";
const CONFIG_MAPS: &str = "v1/configmaps";
const POOLS: &str = "dovetail.sh/v1/nodepools";

fn wasm(name: &str) -> &'static [u8] {
    dovetail::policy::builtin::find(name).unwrap().wasm
}

fn digest(bytes: &[u8]) -> String {
    dovetail::policy::inspect::digest(bytes)
}

/// A pool of two types: `c5.large` (x86-64, 2 vCPU, 4 GiB) wastes less for the test's pods and
/// `m6g.large` (arm64, 2 vCPU, 8 GiB) costs less: `dense` takes the first, `cheapest` and
/// `arm-first` the second.
fn pool(name: &str, scoring: &str, on_failure: &str) -> Value {
    json!({
        "apiVersion": "dovetail.sh/v1", "kind": "NodePool",
        "metadata": {"name": name},
        "spec": {
            "template": {"spec": {
                "requirements": [
                    {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["c5.large", "m6g.large"]},
                    {"key": "dovetail.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
                ],
                "nodeClassRef": {"group": "aws.dovetail.sh", "kind": "EC2NodeClass", "name": "default"},
            }},
            "policies": {"scoring": scoring, "onFailure": on_failure},
            "disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "Never"},
        },
    })
}

/// A pod that needs a node of its own (1.5 of a large's 2 vCPUs).
fn big_pod(i: usize) -> Value {
    let mut p = inflate_pod(i);
    p["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("1500m");
    p
}

fn config_map(bytes: &[u8]) -> Value {
    let text = dovetail::policy::source::config_map_manifests("team-scorer", "dovetail", bytes)
        .expect("the manifests");
    let config_map = text.split("---\n").next().unwrap();
    serde_norway::from_str(config_map).expect("the ConfigMap's YAML")
}

fn policy(name: &str, source: Value) -> Value {
    json!({"apiVersion": "dovetail.sh/v1", "kind": "Policy", "metadata": {"name": name},
           "spec": {"source": source}})
}

fn policy_status(api: &ApiServer, name: &str) -> Value {
    api.get(POLICIES, "", name)
        .map(|p| p["status"].clone())
        .unwrap_or(Value::Null)
}

fn condition(status: &Value, type_: &str) -> Value {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or(Value::Null)
}

/// Waits (without playing kubelet) until `done` holds.
fn wait(what: &str, limit: Duration, done: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

/// The instance type of the claim whose pods include `pod`, once it launched.
fn launched_type(api: &ApiServer) -> Vec<String> {
    let mut types: Vec<String> = api
        .list(CLAIMS)
        .iter()
        .filter_map(|c| c["metadata"]["labels"]["node.kubernetes.io/instance-type"].as_str())
        .map(str::to_string)
        .collect();
    types.sort();
    types
}

/// Tags one of moto's arm64 images for discovery, so arm64 types can launch.
fn tag_arm_image(moto: &moto::Moto) {
    seed::runtime().block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&moto.config().await);
        let images = ec2.describe_images().owners("amazon").send().await.unwrap();
        let arm = images
            .images()
            .iter()
            .find(|i| i.architecture().is_some_and(|a| a.as_str() == "arm64"))
            .and_then(|i| i.image_id())
            .expect("moto ships arm64 images")
            .to_string();
        ec2.create_tags()
            .resources(arm)
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key(seed::DISCOVERY)
                    .value("my-cluster")
                    .build(),
            )
            .send()
            .await
            .unwrap();
    });
}

/// Adds pod `i` and plays kubelet and scheduler until `n` claims have launched; returns their
/// instance types.
fn launch(api: &ApiServer, moto: &moto::Moto, i: usize, n: usize) -> Vec<String> {
    api.put(PODS, big_pod(i));
    until(
        api,
        moto,
        Duration::from_secs(60),
        "the pod's claim launched",
        |api, _| launched_type(api).len() >= n,
    );
    launched_type(api)
}

/// The type launched for the newest claim: the one not in `before`.
fn newest(before: &[String], after: &[String]) -> String {
    let mut left = after.to_vec();
    for b in before {
        if let Some(i) = left.iter().position(|x| x == b) {
            left.remove(i);
        }
    }
    assert_eq!(
        left.len(),
        1,
        "one new claim: before {before:?}, after {after:?}"
    );
    left.remove(0)
}

#[test]
fn a_configmap_policy_steers_launches_swaps_live_keeps_the_last_good_and_falls_back_when_deleted() {
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    tag_arm_image(&moto);
    api.put(CONFIG_MAPS, config_map(wasm("dense")));
    api.put(
        POLICIES,
        policy(
            "team",
            json!({"configMap": {"namespace": "dovetail", "name": "team-scorer", "key": "policy.wasm"}}),
        ),
    );
    api.put(POOLS, pool("default", "team", "Fallback"));
    let _controller = Running::start(&api, settings(&moto));

    // The ConfigMap's component serves: Ready, its digest in the Policy's and the pool's status.
    wait("the Policy is Ready", Duration::from_secs(60), || {
        policy_status(&api, "team")["digest"] == json!(digest(wasm("dense")))
    });
    let status = policy_status(&api, "team");
    assert_eq!(condition(&status, "Ready")["status"], "True", "{status:#}");
    assert_eq!(status["witVersion"], "0.1.0");
    assert_eq!(status["size"], json!(wasm("dense").len()));
    assert_eq!(status["observedGeneration"], json!(1));
    let accepted = event(&api, "Accepted", Some("team"));
    assert!(
        accepted["note"]
            .as_str()
            .unwrap()
            .contains(&digest(wasm("dense"))),
        "{accepted:#}"
    );
    let first = launch(&api, &moto, 0, 1);
    assert_eq!(
        first,
        ["c5.large"],
        "dense takes the x86-64 type that wastes less"
    );
    let pool_status = api.get(POOLS, "", "default").unwrap()["status"].clone();
    assert_eq!(
        pool_status["policies"]["scoring"],
        json!({"name": "team", "digest": digest(wasm("dense"))}),
        "{pool_status:#}"
    );

    // A new component in the ConfigMap serves the next decision, without a restart.
    let updated = Instant::now();
    api.put(CONFIG_MAPS, config_map(wasm("arm-first")));
    let swapped = wait(
        "the arm-first version serves",
        Duration::from_secs(30),
        || policy_status(&api, "team")["digest"] == json!(digest(wasm("arm-first"))),
    );
    eprintln!(
        "ConfigMap update → new version serving (status written): {:.2} s",
        swapped.as_secs_f64()
    );
    let second = launch(&api, &moto, 1, 2);
    eprintln!(
        "ConfigMap update → a launch decided by it: {:.2} s (incl. the batch window)",
        updated.elapsed().as_secs_f64()
    );
    assert_eq!(
        newest(&first, &second),
        "m6g.large",
        "arm-first takes arm64"
    );

    // A broken update is refused with its reason; the last good version keeps deciding.
    let broken = std::fs::read(dovetail::policy::builtin::fixture_path("wit-mismatch")).unwrap();
    api.put(CONFIG_MAPS, config_map(&broken));
    wait(
        "the broken version is refused",
        Duration::from_secs(30),
        || policy_status(&api, "team")["refusedDigest"] == json!(digest(&broken)),
    );
    let status = policy_status(&api, "team");
    assert_eq!(
        status["digest"],
        json!(digest(wasm("arm-first"))),
        "{status:#}"
    );
    let ready = condition(&status, "Ready");
    assert_eq!(ready["reason"], "IncompatibleWitVersion", "{status:#}");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("dovetail:policy@"),
        "{status:#}"
    );
    let refused = event(&api, "IncompatibleWitVersion", Some("team"));
    assert!(
        refused["note"].as_str().unwrap().contains("keeps serving"),
        "{refused:#}"
    );
    let third = launch(&api, &moto, 2, 3);
    assert_eq!(
        newest(&second, &third),
        "m6g.large",
        "the last good version decides"
    );
    let pool_status = api.get(POOLS, "", "default").unwrap()["status"].clone();
    assert_eq!(
        pool_status["policies"]["scoring"]["digest"],
        json!(digest(wasm("arm-first"))),
        "{pool_status:#}"
    );

    // The Policy deleted: the pool says so and falls back to the built-in default.
    api.delete(POLICIES, "", "team");
    wait(
        "the pool names the missing policy",
        Duration::from_secs(30),
        || {
            let status = api.get(POOLS, "", "default").unwrap()["status"].clone();
            let c = condition(&status, "PoliciesReady");
            c["status"] == "False" && c["message"].as_str().unwrap_or_default().contains("team")
        },
    );
    let status = api.get(POOLS, "", "default").unwrap()["status"].clone();
    assert!(
        condition(&status, "PoliciesReady")["message"]
            .as_str()
            .unwrap()
            .contains("onFailure Fallback"),
        "{status:#}"
    );
    assert!(
        status["policies"]["scoring"]["digest"].is_null(),
        "{status:#}"
    );
    let fourth = launch(&api, &moto, 3, 4);
    assert_eq!(
        newest(&third, &fourth),
        "m6g.large",
        "the fallback (cheapest) decides"
    );
    event(&api, "PolicyNotServing", Some("default"));
}

#[test]
fn a_pool_whose_policy_is_missing_blocks_until_the_policy_is_applied() {
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    api.put(POOLS, pool("default", "not-yet", "Block"));
    let _controller = Running::start(&api, settings(&moto));
    api.put(PODS, big_pod(0));
    wait(
        "the pool names the missing policy",
        Duration::from_secs(30),
        || {
            let status = api.get(POOLS, "", "default").unwrap()["status"].clone();
            let c = condition(&status, "PoliciesReady");
            c["status"] == "False"
                && c["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("onFailure Block")
        },
    );
    // Blocked: several batch windows pass without a claim.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        play_kubelet_and_scheduler(&api, &live(&moto));
        assert!(api.list(CLAIMS).is_empty(), "a blocked pool launched");
        std::thread::sleep(Duration::from_millis(250));
    }
    api.put(POLICIES, policy("not-yet", json!({"builtin": "cheapest"})));
    until(
        &api,
        &moto,
        Duration::from_secs(60),
        "a claim once the policy serves",
        |api, _| !launched_type(api).is_empty(),
    );
}

#[test]
fn oci_and_url_sources_pin_digests_and_a_wrong_sha256_is_refused_before_compiling() {
    let (Some(registry), Some(https)) = (servers::Registry::start(), servers::Https::start())
    else {
        return;
    };
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    let dir = servers::Temp::new("push");
    let file = dir.path().join("arm_first.wasm");
    std::fs::write(&file, wasm("arm-first")).unwrap();

    // Publish with the CLI, as a user does.
    let exe = dovetail_exe();
    let target = format!("oci://{}/policies/arm-first:v1", registry.host);
    let out = std::process::Command::new(&exe)
        .args(["policy", "push"])
        .arg(&file)
        .arg(&target)
        .arg("--plain-http")
        .output()
        .expect("dovetail runs");
    assert!(
        out.status.success(),
        "push: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pinned = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        pinned.starts_with(&format!("{}/policies/arm-first@sha256:", registry.host)),
        "{pinned}"
    );

    // Another client reads it as a well-formed artifact with our media types.
    let raw = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/policies/arm-first:v1", registry.host))
        .output();
    let raw = match raw {
        Ok(o) if o.status.success() => o.stdout,
        Ok(o) => panic!("skopeo: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("skopeo is required under CI=true ({e}); run scripts/setup.sh")
        }
        Err(e) => {
            eprintln!("SKIPPED: skopeo is not available ({e})");
            return;
        }
    };
    let manifest: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v1+json"
    );
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.wasm.content.layer.v1+wasm"
    );
    assert_eq!(
        manifest["layers"][0]["digest"],
        json!(digest(wasm("arm-first")))
    );
    assert_eq!(
        manifest["annotations"]["sh.dovetail.policy.wit-version"],
        "0.1.0"
    );

    // The controller trusts the HTTPS server's certificate and speaks HTTP to the registry.
    let mut settings = settings(&moto);
    settings.policy_fetch.extra_roots = vec![https.cert.clone()];
    settings.policy_fetch.plain_http = vec![registry.host.clone()];
    let _controller = Running::start(&api, settings);

    api.put(
        POLICIES,
        policy(
            "from-oci",
            json!({"oci": {"reference": format!("{}/policies/arm-first:v1", registry.host)}}),
        ),
    );
    let good = https.serve("cheapest.wasm", wasm("cheapest"));
    api.put(
        POLICIES,
        policy(
            "from-url",
            json!({"url": {"url": good, "sha256": digest(wasm("cheapest")).trim_start_matches("sha256:")}}),
        ),
    );
    // The right bytes, pinned to the digest of other bytes.
    let tampered = https.serve("tampered.wasm", wasm("cheapest"));
    api.put(
        POLICIES,
        policy(
            "tampered",
            json!({"url": {"url": tampered, "sha256": digest(b"what the Policy pins").trim_start_matches("sha256:")}}),
        ),
    );
    wait(
        "all three Policies have a status",
        Duration::from_secs(60),
        || {
            ["from-oci", "from-url", "tampered"]
                .iter()
                .all(|p| !condition(&policy_status(&api, p), "Ready").is_null())
        },
    );
    let oci = policy_status(&api, "from-oci");
    assert_eq!(condition(&oci, "Ready")["status"], "True", "{oci:#}");
    assert_eq!(oci["digest"], json!(digest(wasm("arm-first"))));
    assert_eq!(
        oci["pinned"],
        json!(pinned),
        "the tag resolved to the pushed manifest"
    );
    let url = policy_status(&api, "from-url");
    assert_eq!(condition(&url, "Ready")["status"], "True", "{url:#}");
    assert_eq!(url["digest"], json!(digest(wasm("cheapest"))));
    let bad = policy_status(&api, "tampered");
    let ready = condition(&bad, "Ready");
    assert_eq!(ready["status"], "False", "{bad:#}");
    assert_eq!(ready["reason"], "DigestMismatch", "{bad:#}");
    assert!(bad["digest"].is_null(), "nothing serves: {bad:#}");
    event(&api, "DigestMismatch", Some("tampered"));
}

/// With ConfigMap reads limited to the namespaces Policies may use (as the chart grants them),
/// a ConfigMap elsewhere is not watched: the Policy is refused with where the controller looks
/// and the setting that widens it, and one in a listed namespace serves.
#[test]
fn a_configmap_outside_the_policy_namespaces_is_refused_with_where_the_controller_looks() {
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    // `config_map` makes it in the namespace "dovetail".
    api.put("v1/configmaps", config_map(wasm("cheapest")));
    api.put(
        POLICIES,
        policy(
            "elsewhere",
            json!({"configMap": {"namespace": "dovetail", "name": "team-scorer", "key": "policy.wasm"}}),
        ),
    );
    let mut s = settings(&moto);
    s.policy_config_map_namespaces = vec!["kube-system".into()];
    let mut controller = Running::start(&api, s);
    wait("the Policy refused", Duration::from_secs(30), || {
        let c = condition(&policy_status(&api, "elsewhere"), "Ready");
        c["status"] == "False"
            && c["message"]
                .as_str()
                .unwrap_or_default()
                .contains("reads Policy ConfigMaps only in kube-system")
    });
    let c = condition(&policy_status(&api, "elsewhere"), "Ready");
    assert!(
        c["message"]
            .as_str()
            .unwrap_or_default()
            .contains("settings.policy.configMapNamespaces"),
        "{c}"
    );
    controller.stop();
    // Listed: it serves.
    let mut s = settings(&moto);
    s.policy_config_map_namespaces = vec!["kube-system".into(), "dovetail".into()];
    let _controller = Running::start(&api, s);
    wait("the Policy serves", Duration::from_secs(30), || {
        condition(&policy_status(&api, "elsewhere"), "Ready")["status"] == "True"
    });
}

/// A pool whose cheapest type is x86-64 (`c5.large`) and whose arm64 type is dearer
/// (`m6g.xlarge`): `cheapest` and `arm-first` disagree on every launch.
fn shadowed_pool(scoring: &str, shadow: Value) -> Value {
    let mut p = pool("default", scoring, "Fallback");
    p["spec"]["template"]["spec"]["requirements"][0]["values"] = json!(["c5.large", "m6g.xlarge"]);
    p["spec"]["policies"]["shadow"] = shadow;
    p
}

#[test]
fn a_shadow_policy_is_judged_on_every_launch_and_never_decides_one() {
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    tag_arm_image(&moto);
    // The candidate is a Policy, so its record has a status to go to; so is a policy that
    // passes the canaries and then panics on every real round.
    // arm-first, taking arm64 up to twice the price of amd64.
    let mut candidate = policy("candidate", json!({"builtin": "arm-first"}));
    candidate["spec"]["config"] = json!({"tolerance": "1.0"});
    api.put(POLICIES, candidate);
    let hostile = std::fs::read(dovetail::policy::builtin::fixture_path("hostile")).unwrap();
    api.put(CONFIG_MAPS, config_map(&hostile));
    let mut sly = policy(
        "sly",
        json!({"configMap": {"namespace": "dovetail", "name": "team-scorer", "key": "policy.wasm"}}),
    );
    sly["spec"]["config"] = json!({"mode": "sly-trap"});
    api.put(POLICIES, sly);
    api.put(
        POOLS,
        shadowed_pool("cheapest", json!({"scoring": "candidate"})),
    );
    // A tainted pool no test pod goes to names `sly` as its shadow from the start, so `sly` is
    // loaded for scoring once and not again when `default` names it later.
    let mut spare = shadowed_pool("cheapest", json!({"scoring": "sly"}));
    spare["metadata"]["name"] = json!("spare");
    spare["spec"]["template"]["spec"]["taints"] =
        json!([{"key": "spare", "value": "true", "effect": "NoSchedule"}]);
    api.put(POOLS, spare);
    let metrics_port = free_port();
    let mut settings = settings(&moto);
    settings.operation.metrics_addr = Some(([127, 0, 0, 1], metrics_port).into());
    let _controller = Running::start(&api, settings);
    wait("the pool names its shadow", Duration::from_secs(60), || {
        api.get(POOLS, "", "default").unwrap()["status"]["policies"]["shadowScoring"]
            == json!({"name": "candidate", "digest": digest(wasm("arm-first"))})
    });
    wait("both Policies are Ready", Duration::from_secs(60), || {
        ["candidate", "sly"]
            .iter()
            .all(|p| condition(&policy_status(&api, p), "Ready")["status"] == "True")
    });

    // Every launch follows the serving policy; the candidate's answer is only recorded.
    let first = launch(&api, &moto, 0, 1);
    let second = launch(&api, &moto, 1, 2);
    assert_eq!(
        second,
        ["c5.large", "c5.large"],
        "cheapest decides: {first:?}"
    );
    wait(
        "the candidate's record reaches its status",
        Duration::from_secs(60),
        || policy_status(&api, "candidate")["shadow"]["decisionsCompared"].as_u64() >= Some(2),
    );
    let shadow = policy_status(&api, "candidate")["shadow"].clone();
    assert_eq!(shadow["beside"], "scoring beside cheapest", "{shadow:#}");
    assert_eq!(shadow["agreed"], json!(0), "{shadow:#}");
    assert_eq!(shadow["agreementPercent"], json!(0), "{shadow:#}");
    assert_eq!(shadow["failures"], json!(0), "{shadow:#}");
    let delta: f64 = shadow["costDeltaPerHour"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        delta > 0.0,
        "m6g.xlarge costs more than c5.large: {shadow:#}"
    );
    assert!(
        shadow["lastDisagreement"]
            .as_str()
            .unwrap()
            .contains("serving c5.large on-demand"),
        "{shadow:#}"
    );
    assert!(
        shadow["lastDisagreement"]
            .as_str()
            .unwrap()
            .contains("shadow m6g.xlarge"),
        "{shadow:#}"
    );
    let (_, text) = http_get(metrics_port, "/metrics").expect("/metrics answers");
    assert!(
        text.lines().any(|l| l.starts_with(
            "dovetail_policy_shadow_decisions_total{policy=\"candidate\",role=\"scoring\",agree=\"false\"}"
        )),
        "{text}"
    );

    // A candidate that panics on every round changes nothing: the launch is cheapest's, and the
    // failure is the candidate's own.
    let mut pool = api.get(POOLS, "", "default").unwrap();
    pool["spec"]["policies"]["shadow"] = json!({"scoring": "sly"});
    api.put(POOLS, pool);
    wait(
        "the pool names its new shadow",
        Duration::from_secs(30),
        || {
            api.get(POOLS, "", "default").unwrap()["status"]["policies"]["shadowScoring"]["name"]
                == "sly"
        },
    );
    let third = launch(&api, &moto, 2, 3);
    assert_eq!(newest(&second, &third), "c5.large");
    wait(
        "the panicking candidate's failures reach its status",
        Duration::from_secs(60),
        || policy_status(&api, "sly")["shadow"]["failures"].as_u64() >= Some(1),
    );
    let sly = policy_status(&api, "sly");
    assert_eq!(sly["shadow"]["decisionsCompared"], json!(0), "{sly:#}");
    assert_eq!(condition(&sly, "Ready")["reason"], "Trapped", "{sly:#}");
    assert!(
        api.list("events.k8s.io/v1/events")
            .iter()
            .all(|e| e["reason"] != "PolicyFailed"),
        "no NodePool's decision failed"
    );

    // Promotion is one field: the candidate serves.
    let mut pool = api.get(POOLS, "", "default").unwrap();
    pool["spec"]["policies"] = json!({"scoring": "candidate", "onFailure": "Fallback"});
    api.put(POOLS, pool);
    wait(
        "the pool serves the candidate",
        Duration::from_secs(30),
        || {
            let status = api.get(POOLS, "", "default").unwrap()["status"]["policies"].clone();
            status["scoring"]["name"] == "candidate" && status.get("shadowScoring").is_none()
        },
    );
    let fourth = launch(&api, &moto, 3, 4);
    assert_eq!(
        newest(&third, &fourth),
        "m6g.xlarge",
        "the promoted candidate decides"
    );
}
