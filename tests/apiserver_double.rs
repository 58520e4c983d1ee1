//! The API server double's own behaviours, each checked against the Kubernetes rule it imitates
//! (see `tests/apiserver/src/lib.rs`), through kube's client as the controller uses it.

use dovetail_apiserver_double::ApiServer;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

fn server() -> (tokio::runtime::Runtime, ApiServer, kube::Client) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let api = ApiServer::start(&rt);
    let client = {
        let _enter = rt.enter();
        kube::Client::try_from(api.config()).unwrap()
    };
    (rt, api, client)
}

#[test]
fn a_patch_naming_a_stale_resource_version_is_refused_with_409_conflict() {
    let (rt, api, client) = server();
    api.put(
        "v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}),
    );
    let nodes: Api<Node> = Api::all(client);
    let read = rt.block_on(nodes.get("n1")).unwrap();
    let stale = read.metadata.resource_version.clone().unwrap();
    // Someone else writes in between.
    rt.block_on(nodes.patch(
        "n1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
    ))
    .unwrap();
    let refused = rt
        .block_on(nodes.patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": stale, "labels": {"c": "d"}}})),
        ))
        .unwrap_err();
    match refused {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
            assert!(
                s.message.contains("the object has been modified"),
                "{}",
                s.message
            );
        }
        other => panic!("{other}"),
    }
    // With the fresh version it goes through.
    let fresh = rt
        .block_on(nodes.get("n1"))
        .unwrap()
        .metadata
        .resource_version;
    rt.block_on(nodes.patch(
        "n1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"resourceVersion": fresh, "labels": {"c": "d"}}})),
    ))
    .unwrap();
}

/// The registry's `Delete` answers the object as the deletion left it: with finalizers, its
/// deletionTimestamp and new resourceVersion, so the finalizer can be released against that
/// answer without another read; deleted at once, a Status of success
/// (`apiserver/pkg/registry/generic/registry/store.go`, `Delete` and `finalizeDelete`).
#[test]
fn a_delete_answers_the_object_it_left_with_its_new_resource_version() {
    let (rt, api, client) = server();
    api.put(
        "v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": "n1", "finalizers": ["dovetail.sh/termination"]}}),
    );
    let nodes: Api<Node> = Api::all(client);
    let before = rt.block_on(nodes.get("n1")).unwrap();
    let answer = rt
        .block_on(nodes.delete("n1", &DeleteParams::default()))
        .unwrap()
        .left()
        .expect("the object, not a Status: a finalizer holds it");
    assert!(answer.metadata.deletion_timestamp.is_some());
    assert_ne!(
        answer.metadata.resource_version,
        before.metadata.resource_version
    );
    let stored = api.get("v1/nodes", "", "n1").unwrap();
    assert_eq!(
        answer.metadata.resource_version.as_deref(),
        stored["metadata"]["resourceVersion"].as_str()
    );
    // A write against the answer's version goes through: the finalizer goes, and the Node with it.
    rt.block_on(nodes.patch(
        "n1",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"resourceVersion": answer.metadata.resource_version,
                                          "finalizers": []}}),
        ),
    ))
    .unwrap();
    assert!(api.get("v1/nodes", "", "n1").is_none());
    // With no finalizer the object goes at once, and the answer is a Status of success.
    api.put(
        "v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"}}),
    );
    let answer = rt
        .block_on(nodes.delete("n2", &DeleteParams::default()))
        .unwrap();
    assert!(answer.is_right(), "{answer:?}");
    assert!(api.get("v1/nodes", "", "n2").is_none());
}

#[test]
fn a_bound_pod_is_deleted_gracefully_and_an_unbound_one_at_once() {
    let (rt, api, client) = server();
    let pod = |name: &str, node: Option<&str>| {
        let mut p = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "i"}], "terminationGracePeriodSeconds": 45},
            "status": {"phase": "Running"}});
        if let Some(n) = node {
            p["spec"]["nodeName"] = n.into();
        }
        p
    };
    api.put("v1/pods", pod("bound", Some("n1")));
    api.put("v1/pods", pod("unbound", None));
    let pods: Api<Pod> = Api::namespaced(client, "default");
    rt.block_on(pods.delete("bound", &DeleteParams::default()))
        .unwrap();
    rt.block_on(pods.delete("unbound", &DeleteParams::default()))
        .unwrap();
    assert!(api.get("v1/pods", "default", "unbound").is_none());
    let terminating = api
        .get("v1/pods", "default", "bound")
        .expect("kept while it stops");
    assert_eq!(terminating["metadata"]["deletionGracePeriodSeconds"], 45);
    let at: k8s_openapi::jiff::Timestamp = terminating["metadata"]["deletionTimestamp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let ahead = at
        .duration_since(k8s_openapi::jiff::Timestamp::now())
        .as_secs();
    assert!(
        (40..=46).contains(&ahead),
        "deletionTimestamp is now + the grace: {ahead}s ahead"
    );
    // A shorter grace shortens it; 0 (the kubelet, done) removes it.
    rt.block_on(pods.delete(
        "bound",
        &DeleteParams {
            grace_period_seconds: Some(10),
            ..Default::default()
        },
    ))
    .unwrap();
    assert_eq!(
        api.get("v1/pods", "default", "bound").unwrap()["metadata"]["deletionGracePeriodSeconds"],
        10
    );
    rt.block_on(pods.delete(
        "bound",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    ))
    .unwrap();
    assert!(api.get("v1/pods", "default", "bound").is_none());
}

const PODS: &str = "v1/pods";
const PDBS: &str = "policy/v1/poddisruptionbudgets";

/// A pod of ReplicaSet `web-rs` (uid `rs-uid`), Running on `n1`, Ready or not.
fn web_pod(name: &str, ready: bool) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                          "name": "web-rs", "uid": "rs-uid", "controller": true}]},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
        "status": {"phase": "Running",
                   "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
}

fn replica_set(replicas: u32) -> serde_json::Value {
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
           "metadata": {"name": "web-rs", "namespace": "default", "uid": "rs-uid"},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}}})
}

fn web_pdb(name: &str, rule: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({"selector": {"matchLabels": {"app": "web"}}});
    merge_into(&mut spec, rule);
    json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
           "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

fn merge_into(target: &mut serde_json::Value, more: serde_json::Value) {
    for (k, v) in more.as_object().unwrap() {
        target[k] = v.clone();
    }
}

/// Waits (a few seconds at most) for the disruption controller to have written `pdb`'s status
/// for its current generation.
fn observed(api: &ApiServer, pdb: &str) -> serde_json::Value {
    let started = std::time::Instant::now();
    loop {
        let b = api.get(PDBS, "default", pdb).unwrap();
        if b["status"]["observedGeneration"] == b["metadata"]["generation"] {
            return b["status"].clone();
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "no status for {pdb}: {b:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn the_disruption_controller_counts_ready_pods_against_the_owners_scale() {
    // kube-controller-manager, pkg/controller/disruption: healthy = Ready; expected = the
    // controller's scale (maxUnavailable) or the selected pods (an integer minAvailable).
    let (_rt, api, _client) = server();
    api.put("apps/v1/replicasets", replica_set(4));
    for (i, ready) in [true, true, false].into_iter().enumerate() {
        api.put(PODS, web_pod(&format!("web-{i}"), ready));
    }
    api.put(PDBS, web_pdb("max", json!({"maxUnavailable": 1})));
    let s = observed(&api, "max");
    assert_eq!(
        (
            s["expectedPods"].clone(),
            s["currentHealthy"].clone(),
            s["desiredHealthy"].clone()
        ),
        (json!(4), json!(2), json!(3)),
        "{s:#}"
    );
    assert_eq!(s["disruptionsAllowed"], 0);
    api.delete(PDBS, "default", "max");
    api.put(PDBS, web_pdb("min", json!({"minAvailable": 1})));
    let s = observed(&api, "min");
    assert_eq!(
        (s["expectedPods"].clone(), s["disruptionsAllowed"].clone()),
        (json!(3), json!(1))
    );
    // A pod becoming Ready updates the status; a spec change bumps the generation and is
    // observed again.
    api.put(PODS, web_pod("web-2", true));
    let started = std::time::Instant::now();
    while api.get(PDBS, "default", "min").unwrap()["status"]["currentHealthy"] != 3 {
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut b = api.get(PDBS, "default", "min").unwrap();
    b["spec"]["minAvailable"] = 3.into();
    api.put(PDBS, b);
    assert_eq!(
        api.get(PDBS, "default", "min").unwrap()["metadata"]["generation"],
        2
    );
    assert_eq!(observed(&api, "min")["disruptionsAllowed"], 0);
}

#[test]
fn a_controller_that_cannot_be_found_fails_the_budget_safe() {
    // failSafe: no disruption allowed, the reason in the DisruptionAllowed condition.
    let (_rt, api, _client) = server();
    api.put(PODS, web_pod("web-0", true));
    api.put(PDBS, web_pdb("max", json!({"maxUnavailable": 1})));
    let started = std::time::Instant::now();
    loop {
        let b = api.get(PDBS, "default", "max").unwrap();
        if b["status"]["conditions"][0]["reason"] == "SyncFailed" {
            assert_eq!(b["status"]["disruptionsAllowed"], 0);
            assert!(
                b["status"]["conditions"][0]["message"]
                    .as_str()
                    .unwrap()
                    .contains("found no controllers for pod \"web-0\"")
            );
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{b:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn the_eviction_api_decides_from_the_budget_status_as_the_registry_does() {
    // pkg/registry/core/pod/storage/eviction.go.
    let (rt, api, client) = server();
    api.put("apps/v1/replicasets", replica_set(3));
    for (i, ready) in [true, true, false].into_iter().enumerate() {
        api.put(PODS, web_pod(&format!("web-{i}"), ready));
    }
    api.put(PDBS, web_pdb("web", json!({"minAvailable": 2})));
    let s = observed(&api, "web");
    assert_eq!(
        (s["currentHealthy"].clone(), s["disruptionsAllowed"].clone()),
        (json!(2), json!(0))
    );
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let evict = |name: &str| rt.block_on(pods.evict(name, &Default::default()));
    // A Ready pod: 429 with the real message and the budget's needs as the cause.
    match evict("web-0").unwrap_err() {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (429, "TooManyRequests"));
            assert_eq!(
                s.message,
                "Cannot evict pod as it would violate the pod's disruption budget."
            );
        }
        other => panic!("{other}"),
    }
    let body = api.log().last().map(|r| r.code).unwrap();
    assert_eq!(body, 429);
    // The unready pod goes (IfHealthyBudget: the budget has its 2 healthy pods), without
    // spending the budget, marked as the Eviction API's target.
    evict("web-2").unwrap();
    let gone = api.get(PODS, "default", "web-2").unwrap();
    assert!(!gone["metadata"]["deletionTimestamp"].is_null());
    assert!(
        gone["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "DisruptionTarget" && c["reason"] == "EvictionByEvictionAPI")
    );
    // Relaxed: one disruption, spent by the next eviction (recorded in disruptedPods).
    let mut b = api.get(PDBS, "default", "web").unwrap();
    b["spec"]["minAvailable"] = 1.into();
    api.put(PDBS, b);
    assert_eq!(observed(&api, "web")["disruptionsAllowed"], 1);
    evict("web-0").unwrap();
    let s = api.get(PDBS, "default", "web").unwrap()["status"].clone();
    assert!(
        !s["disruptedPods"]["web-0"].is_null() || s["currentHealthy"] == 1,
        "{s:#}"
    );
    assert!(matches!(evict("web-1"), Err(kube::Error::Api(s)) if s.code == 429));
    // Two budgets over one pod: 500, whatever they allow.
    api.put(PDBS, web_pdb("other", json!({"maxUnavailable": "100%"})));
    match evict("web-1").unwrap_err() {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 500);
            assert!(
                s.message.contains("more than one PodDisruptionBudget"),
                "{}",
                s.message
            );
        }
        other => panic!("{other}"),
    }
}

#[test]
fn a_budget_not_yet_observed_refuses_evictions_as_still_being_processed() {
    let (rt, api, client) = server();
    api.put("apps/v1/replicasets", replica_set(1));
    api.put(PODS, web_pod("web-0", true));
    // Stored with a status older than its spec, which says a disruption is left; the spec
    // allows none. Whether the actor has caught up or not, the pod may not go: a 429, "still
    // being processed" with a Retry-After while the status is stale.
    let mut b = web_pdb("web", json!({"maxUnavailable": 0}));
    b["status"] = json!({"observedGeneration": 0, "disruptionsAllowed": 1,
                         "currentHealthy": 1, "desiredHealthy": 0});
    api.put(PDBS, b);
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let refused = rt.block_on(pods.evict("web-0", &Default::default()));
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 429),
        "{refused:?}"
    );
    assert!(api.get(PODS, "default", "web-0").unwrap()["metadata"]["deletionTimestamp"].is_null());
    assert_eq!(observed(&api, "web")["observedGeneration"], 1);
}

#[test]
fn generation_counts_spec_changes_only() {
    let (rt, api, client) = server();
    api.put(PDBS, web_pdb("web", json!({"maxUnavailable": 1})));
    let generation = || api.get(PDBS, "default", "web").unwrap()["metadata"]["generation"].clone();
    assert_eq!(generation(), 1);
    let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
        Api::namespaced(client, "default");
    rt.block_on(pdbs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})),
    ))
    .unwrap();
    assert_eq!(generation(), 1, "a label is metadata");
    rt.block_on(pdbs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"maxUnavailable": 2}})),
    ))
    .unwrap();
    assert_eq!(generation(), 2);
}

#[test]
fn generate_name_gives_a_create_a_unique_name() {
    let (rt, _api, client) = server();
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client, "default");
    let make = || {
        let cm: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "report-"}}))
        .unwrap();
        rt.block_on(cms.create(&Default::default(), &cm)).unwrap()
    };
    let (a, b) = (make(), make());
    let (a, b) = (a.metadata.name.unwrap(), b.metadata.name.unwrap());
    assert!(
        a.starts_with("report-") && a.len() == "report-".len() + 5,
        "{a}"
    );
    assert_ne!(a, b);
}

#[test]
fn deleting_an_owner_collects_its_dependents_in_the_background() {
    let (_rt, api, _client) = server();
    api.put("apps/v1/replicasets", replica_set(1));
    api.put(PODS, web_pod("web-0", true));
    let mut shared = web_pod("web-1", true);
    shared["metadata"]["ownerReferences"]
        .as_array_mut()
        .unwrap()
        .push(json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "keep", "uid": "cm-uid"}));
    api.put(PODS, shared);
    api.put(
        "v1/configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keep", "namespace": "default", "uid": "cm-uid"}}),
    );
    api.delete("apps/v1/replicasets", "default", "web-rs");
    let dependent = api.get(PODS, "default", "web-0").unwrap();
    assert!(
        !dependent["metadata"]["deletionTimestamp"].is_null(),
        "the running dependent is deleted gracefully"
    );
    assert!(
        api.get(PODS, "default", "web-1").unwrap()["metadata"]["deletionTimestamp"].is_null(),
        "a dependent with another live owner stays"
    );
    api.delete("v1/configmaps", "default", "keep");
    assert!(
        !api.get(PODS, "default", "web-1").unwrap()["metadata"]["deletionTimestamp"].is_null(),
        "its last owner gone, it is collected too"
    );
}

#[test]
fn unknown_fields_are_refused_under_strict_and_dropped_with_a_warning_otherwise() {
    let (_rt, api, _client) = server();
    let body = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"},"data":{"k":"v"},"dta":{"typo":"x"}}"#;
    let post = |query: &str, body: &str| {
        raw(
            &api,
            "POST",
            &format!("/api/v1/namespaces/default/configmaps{query}"),
            "application/json",
            body,
        )
    };
    let strict = post("?fieldValidation=Strict", body);
    assert!(strict.starts_with("HTTP/1.1 400"), "{strict}");
    assert!(
        strict.contains(r#"strict decoding error: unknown field \"dta\""#),
        "{strict}"
    );
    assert!(
        api.get("v1/configmaps", "default", "a").is_none(),
        "nothing stored"
    );
    let warned = post("", body);
    assert!(warned.starts_with("HTTP/1.1 201"), "{warned}");
    assert!(
        warned
            .to_lowercase()
            .contains("warning: 299 - \"unknown field \\\"dta\\\"\""),
        "{warned}"
    );
    let stored = api.get("v1/configmaps", "default", "a").unwrap();
    assert!(
        stored.get("dta").is_none() && stored["data"]["k"] == "v",
        "{stored}"
    );
}

#[test]
fn a_json_patch_whose_test_fails_is_refused_whole_with_422() {
    let (_rt, api, _client) = server();
    api.put(
        "v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "finalizers": ["a"]}}),
    );
    let refused = raw(
        &api,
        "PATCH",
        "/api/v1/nodes/n1",
        "application/json-patch+json",
        r#"[{"op": "test", "path": "/metadata/finalizers/0", "value": "b"},
            {"op": "remove", "path": "/metadata/finalizers/0"}]"#,
    );
    assert!(refused.starts_with("HTTP/1.1 422"), "{refused}");
    assert_eq!(
        api.get("v1/nodes", "", "n1").unwrap()["metadata"]["finalizers"],
        json!(["a"])
    );
}

#[test]
fn a_staged_race_makes_the_next_conditional_write_stale() {
    let (rt, api, client) = server();
    api.put(
        "v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}),
    );
    api.race_next_write("v1/nodes", "", "n1", |n| {
        n["metadata"]["labels"] = json!({"other": "writer"});
    });
    let nodes: Api<Node> = Api::all(client);
    let read = rt.block_on(nodes.get("n1")).unwrap();
    let refused = rt.block_on(nodes.patch(
        "n1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"resourceVersion": read.metadata.resource_version, "annotations": {"a": "b"}}})),
    ));
    assert!(matches!(refused, Err(kube::Error::Api(s)) if s.code == 409));
    assert_eq!(
        api.get("v1/nodes", "", "n1").unwrap()["metadata"]["labels"]["other"],
        "writer"
    );
}

/// One raw HTTP/1.1 request to the double: the whole response, status line and headers first.
fn raw(api: &ApiServer, method: &str, path: &str, content_type: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(api.addr).unwrap();
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn version_is_served_at_slash_version_as_kube_apiserver_reports_its_build() {
    let (rt, api, client) = server();
    let info = rt.block_on(client.apiserver_version()).unwrap();
    assert_eq!((info.major.as_str(), info.minor.as_str()), ("1", "33"));
    api.set_version("1", "34");
    let info = rt.block_on(client.apiserver_version()).unwrap();
    assert_eq!(
        (
            info.major.as_str(),
            info.minor.as_str(),
            info.git_version.as_str()
        ),
        ("1", "34", "v1.34.0")
    );
}
