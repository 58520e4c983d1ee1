use super::*;

fn pod(name: &str, owner: Option<(&str, &str)>, cpu: &str) -> Pod {
    let mut labels = json!({"app": "web"});
    let owner_refs = owner.map(|(kind, n)| {
        if kind == "ReplicaSet" {
            labels["pod-template-hash"] = json!("abc12");
        }
        json!([{"apiVersion": "apps/v1", "kind": kind, "name": n, "uid": "u", "controller": true}])
    });
    serde_json::from_value(json!({
        "metadata": {
            "name": name, "namespace": "shop", "labels": labels,
            "ownerReferences": owner_refs.unwrap_or(json!([])),
            "annotations": {"dovetail.sh/do-not-disrupt": "true", "secret-token": "hunter2"},
        },
        "spec": {
            "serviceAccountName": "payments",
            "nodeSelector": {"kubernetes.io/arch": "arm64"},
            "containers": [{
                "name": "payments-api", "image": "registry.example.com/payments:1.2.3",
                "env": [{"name": "DB_PASSWORD", "value": "hunter2"}],
                "command": ["/bin/serve", "--token=hunter2"],
                "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}},
                "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
            }],
        },
    }))
    .unwrap()
}

#[test]
fn a_pod_keeps_what_decisions_read_and_nothing_else() {
    let mut r = Recorder::default();
    r.pod(&pod("batch-1", None, "500m"), false);
    let steps = r.flush(0);
    let text = serde_json::to_string(&StepOut(&steps[0])).unwrap();
    for secret in [
        "hunter2",
        "payments",
        "registry.example.com",
        "secret-token",
    ] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    for kept in [
        "\"cpu\":\"500m\"",
        "arm64",
        "dovetail.sh/do-not-disrupt",
        "\"seconds\":5",
    ] {
        assert!(text.contains(kept), "{kept} lost: {text}");
    }
    // What the controller would read from the sanitized pod is what it reads from the
    // original.
    let original = pod("batch-1", None, "500m");
    let cleaned: Pod = serde_json::from_value(steps[0].apply.clone().unwrap()).unwrap();
    let read = |p: &Pod| {
        crate::scheduling::from_kube::pending_pod(
            "Pod/x",
            "spec",
            "shop/batch-1",
            &p.metadata.labels.clone().unwrap_or_default(),
            p.spec.as_ref().unwrap(),
        )
        .unwrap()
    };
    assert_eq!(read(&cleaned), read(&original));
}

#[test]
fn a_deployments_pods_are_its_replicas_and_only_changes_are_written() {
    let mut r = Recorder::default();
    let rs = Some(("ReplicaSet", "web-abc12"));
    r.pod(&pod("web-abc12-x", rs, "1"), false);
    r.pod(&pod("web-abc12-y", rs, "1"), false);
    let first = r.flush(0);
    assert_eq!(first.len(), 1, "{first:?}");
    let d = first[0].apply.as_ref().unwrap();
    assert_eq!(d["kind"], "Deployment");
    assert_eq!(d["metadata"]["name"], "web");
    assert_eq!(d["spec"]["replicas"], 2);
    assert!(
        d["spec"]["template"]["metadata"]["labels"]
            .get("pod-template-hash")
            .is_none()
    );
    assert!(r.flush(5).is_empty(), "nothing changed");
    // An eviction and its replacement within one flush: nothing to write.
    r.pod_gone("shop/web-abc12-x");
    r.pod(&pod("web-abc12-z", rs, "1"), false);
    assert!(r.flush(10).is_empty());
    r.pod_gone("shop/web-abc12-y");
    let scaled = r.flush(20);
    assert_eq!(scaled[0].scale.as_ref().unwrap().replicas, 1, "{scaled:?}");
    assert_eq!(scaled[0].at, "20s");
}

#[test]
fn bare_pods_come_and_go_and_unmanaged_or_daemon_pods_never_count() {
    let mut r = Recorder::default();
    r.pod(&pod("job-1", Some(("Job", "job")), "1"), false);
    r.pod(&pod("ds-1", Some(("DaemonSet", "agent")), "1"), false);
    r.pod(&pod("static-1", None, "1"), true);
    let steps = r.flush(0);
    assert_eq!(steps.len(), 1, "{steps:?}");
    r.pod_gone("shop/job-1");
    let gone = r.flush(30);
    let d = gone[0].delete.as_ref().unwrap();
    assert_eq!(
        (d.kind.as_str(), d.name.as_str(), d.namespace.as_str()),
        ("Pod", "job-1", "shop")
    );
    assert!(r.flush(40).is_empty());
}

#[test]
fn a_snapshot_rewrites_everything_live_and_a_journal_reads_back() {
    let mut r = Recorder::default();
    r.object(
        "NodePool",
        "",
        "default",
        Some(json!({"apiVersion": "dovetail.sh/v1", "kind": "NodePool", "metadata": {"name": "default"}, "spec": {}})),
    );
    r.pod(
        &pod("web-abc12-x", Some(("ReplicaSet", "web-abc12")), "1"),
        false,
    );
    let mut lines = vec![
        serde_json::to_string(&Header {
            journal: FORMAT.into(),
            started: 1000,
            source: "https://cluster".into(),
            part: 0,
        })
        .unwrap(),
    ];
    for s in r.flush(0) {
        lines.push(serde_json::to_string(&StepOut(&s)).unwrap());
    }
    r.pod(
        &pod("web-abc12-y", Some(("ReplicaSet", "web-abc12")), "1"),
        false,
    );
    for s in r.flush(90) {
        lines.push(serde_json::to_string(&StepOut(&s)).unwrap());
    }
    lines.push(serde_json::to_string(&Trailer { ended: 600 }).unwrap());
    let replay = read("j.jsonl", &lines.join("\n")).unwrap();
    assert_eq!(replay.initial.len(), 2, "the pool and the Deployment");
    assert_eq!(replay.steps.len(), 1);
    assert_eq!(replay.duration, 600);
    let snap = r.snapshot(700);
    assert_eq!(snap.len(), 2, "{snap:?}");
    assert!(snap.iter().all(|s| s.at == "700s" && s.apply.is_some()));

    let bad = read(
        "j.jsonl",
        "{\"journal\": \"other/v9\", \"started\": 0, \"source\": \"x\", \"part\": 0}",
    );
    assert!(
        matches!(bad, Err(JournalError::Line { line: 1, .. })),
        "{bad:?}"
    );
    let bad = read(
        "j.jsonl",
        &format!("{}\n{{\"at\": \"5s\", \"bogus\": 1}}", lines[0]),
    );
    assert!(
        matches!(bad, Err(JournalError::Line { line: 2, .. })),
        "{bad:?}"
    );
}

#[test]
fn account_identifiers_stay_out_and_a_changed_bare_pod_is_written_again() {
    let class = node_class(&json!({
        "apiVersion": "aws.dovetail.sh/v1", "kind": "EC2NodeClass", "metadata": {"name": "default"},
        "spec": {
            "role": "KarpenterNodeRole-prod", "userData": "TOKEN=hunter2", "tags": {"team": "payments"},
            "kubelet": {"maxPods": 58},
            "amiSelectorTerms": [{"alias": "al2023@latest"}, {"owner": "123456789012"}],
            "subnetSelectorTerms": [{"tags": {"karpenter.sh/discovery": "prod"}}],
            "securityGroupSelectorTerms": [{"id": "sg-0123"}],
            "blockDeviceMappings": [{"deviceName": "/dev/xvda", "rootVolume": true,
                "ebs": {"volumeSize": "100Gi", "volumeType": "gp3", "kmsKeyID": "arn:aws:kms:key/abc", "snapshotID": "snap-1"}}],
        },
    }));
    let text = class.to_string();
    for secret in [
        "KarpenterNodeRole-prod",
        "hunter2",
        "payments",
        "123456789012",
        "prod",
        "sg-0123",
        "kms",
        "snap-1",
    ] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    for kept in [
        "\"maxPods\":58",
        "al2023@latest",
        "100Gi",
        "recorded-node-role",
    ] {
        assert!(text.contains(kept), "{kept} lost: {text}");
    }
    assert_eq!(
        daemon_set_name("kube-system", "datadog-agent"),
        daemon_set_name("kube-system", "datadog-agent")
    );
    assert!(!daemon_set_name("kube-system", "datadog-agent").contains("datadog"));

    let mut r = Recorder::default();
    r.pod(&pod("job-1", Some(("Job", "job")), "1"), false);
    assert_eq!(r.flush(0).len(), 1);
    let mut changed = pod("job-1", Some(("Job", "job")), "1");
    changed
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("tier".into(), "batch".into());
    r.pod(&changed, false);
    let again = r.flush(10);
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(
        again[0].apply.as_ref().unwrap()["metadata"]["labels"]["tier"],
        "batch"
    );
}
