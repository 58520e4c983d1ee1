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
