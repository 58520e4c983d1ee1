//! Installation, checked with the ecosystem's own tools (`tests/install/check.py`): both charts
//! rendered and linted by the real Helm library and validated against the Kubernetes schemas;
//! checkov on the manifests, the Dockerfile and the CloudFormation template; cfn-lint and a
//! deployment of the template into moto. And coverage: the controller runs a full life cycle
//! against the API server double and moto, and every API request and AWS action it made must be
//! allowed by the chart's RBAC and the template's IAM policy, which grant nothing else.

use dovetail_test_support::harness;
use dovetail_test_support::moto;
use dovetail_test_support::seed;
use dovetail_test_support::servers;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use harness::*;
use serde_json::{Value, json};

/// Runs `check.py ARGS`; `None` (a skip, loud under CI) when its tools are not installed.
fn check(args: &[&str]) -> Option<String> {
    let tools = Command::new("python3")
        .args(["-c", "import helm_python, kubernetes_validate, yaml, boto3"])
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("checkov").arg("--version").output().is_ok()
        && Command::new("cfn-lint").arg("--version").output().is_ok();
    if !tools {
        let why = "helm-python-sdk, kubernetes-validate, checkov and cfn-lint (PyPI)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{why} are required under CI=true; run scripts/setup.sh");
        }
        eprintln!("SKIPPED: {why} are not installed; run scripts/setup.sh");
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("install/check.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "check.py {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    eprint!("{stdout}");
    Some(stdout)
}

#[test]
fn both_charts_render_lint_and_validate_with_default_and_every_value_set() {
    check(&["charts"]);
}

/// The guide's `helm` commands are the ones checked: docs/install.md is read, not copied.
#[test]
fn the_install_guides_helm_commands_render_and_validate() {
    check(&["guide"]);
}

/// A Karpenter user's flags carry over by the table in charts/README.md; what has no equivalent
/// is refused by the schema rather than ignored.
#[test]
fn karpenters_getting_started_flags_renamed_by_the_table_install() {
    check(&["karpenter"]);
}

#[test]
fn checkov_fails_nothing_in_the_charts_the_dockerfile_and_the_template() {
    check(&["checkov"]);
}

#[test]
fn the_cloudformation_template_lints_and_deploys_into_moto() {
    let Some(moto) = moto::Moto::start() else {
        return;
    };
    check(&["cfn", &moto.admin_endpoint]);
}

/// Runs a command; its stdout, or the test fails with what it printed.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The image as a user gets it: `scripts/image.sh` builds it with no Docker daemon from the binary
/// the tests run, pushes it to a real registry (the CNCF Distribution registry), and what comes
/// back from the registry is a non-root image of the binary alone that starts.
#[test]
fn the_image_builds_without_a_docker_daemon_pushes_and_runs_as_non_root() {
    let Some(registry) = servers::Registry::start() else {
        return;
    };
    let dir = servers::Temp::new("image");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let exe = dovetail_exe();
    let dest = format!("docker://{}/dovetail:test", registry.host);
    run(Command::new("bash")
        .current_dir(&root)
        .args(["scripts/image.sh", "--binary"])
        .arg(&exe)
        .args(["--tag", "test", "--out"])
        .arg(dir.path().join("layout"))
        .args(["--push", &dest, "--dest-tls-verify=false"]));

    let config: Value = serde_json::from_str(&run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--config",
        &dest,
    ])))
    .unwrap();
    let host_arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    assert_eq!(config["architecture"], host_arch, "{config:#}");
    assert_eq!(config["os"], "linux");
    assert_eq!(
        config["config"]["User"], "65532:65532",
        "not root: {config:#}"
    );
    assert_eq!(
        config["config"]["Entrypoint"],
        json!(["/usr/local/bin/dovetail"])
    );
    assert_eq!(config["config"]["Cmd"], json!(["controller"]));
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.version"],
        "0.1.0"
    );

    // Back from the registry: one layer, the binary and its libraries, no shell.
    let pulled = dir.path().join("pulled");
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &dest,
        &format!("oci:{}:test", pulled.display()),
    ]));
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(pulled.join("index.json")).unwrap()).unwrap();
    let blob = |digest: &str| {
        pulled
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest:#}");
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(blob(layers[0]["digest"].as_str().unwrap()))
        .arg("-C")
        .arg(&rootfs));
    assert!(rootfs.join("usr/local/bin/dovetail").is_file());
    assert!(
        rootfs.join("etc/ssl/certs/ca-certificates.crt").is_file(),
        "TLS to AWS needs the CA bundle"
    );
    for shell in ["bin/sh", "bin/bash", "usr/bin/sh"] {
        assert!(
            !rootfs.join(shell).exists(),
            "no shell in the image: {shell}"
        );
    }
    // It starts inside its own root, as uid 65532 (chroot; unshare maps root when we are not).
    let root_user = run(Command::new("id").arg("-u")).trim() == "0";
    let mut start = if root_user {
        Command::new("chroot")
    } else {
        let mut c = Command::new("unshare");
        c.args(["--user", "--map-root-user", "chroot"]);
        c
    };
    if root_user {
        start.arg("--userspec=65532:65532");
    }
    let version = run(start
        .arg(&rootfs)
        .args(["/usr/local/bin/dovetail", "--version"]));
    assert_eq!(version.trim(), "dovetail 0.1.0");
}

/// One API request as an RBAC check sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RbacRequest {
    group: String,
    /// `plural` or `plural/subresource`.
    resource: String,
    verb: String,
    namespace: String,
    /// The object's name, when the request names one.
    name: Option<String>,
}

fn rbac_request(r: &dovetail_apiserver_double::Request) -> Option<RbacRequest> {
    let parts: Vec<&str> = r.path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => (group.to_string(), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (ns.to_string(), rest),
        rest => (String::new(), rest),
    };
    let (resource, name, sub) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
        _ => return None,
    };
    let watch = r
        .query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match (r.method.as_str(), name) {
        ("GET", Some(_)) => "get",
        ("GET", None) if watch => "watch",
        ("GET", None) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", Some(_)) => "delete",
        ("DELETE", None) => "deletecollection",
        _ => return None,
    };
    let resource = match sub {
        Some(s) => format!("{resource}/{s}"),
        None => resource.to_string(),
    };
    // A create's name (a subresource's parent aside) is not known to RBAC.
    let name = name.filter(|_| verb != "create" || sub.is_some());
    Some(RbacRequest {
        group,
        resource,
        verb: verb.to_string(),
        namespace,
        name: name.map(str::to_string),
    })
}

/// Whether a rule of `check.py rbac` allows the request, as the RBAC authorizer decides
/// (`k8s.io/kubernetes/plugin/pkg/auth/authorizer/rbac`: a Role's rules apply in its namespace
/// only; `resourceNames`, when present, must name the object).
fn rbac_allows(rule: &Value, req: &RbacRequest) -> bool {
    let has = |field: &str, v: &str| {
        rule[field]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == v))
    };
    let scope = rule["kind"] == "ClusterRole" || rule["namespace"] == req.namespace.as_str();
    let named = match rule["resourceNames"].as_array() {
        None => true,
        Some(names) => req
            .name
            .as_deref()
            .is_some_and(|n| names.iter().any(|x| x == n)),
    };
    scope
        && named
        && has("apiGroups", &req.group)
        && has("resources", &req.resource)
        && has("verbs", &req.verb)
}

/// What the chart grants but the run did not exercise, and why it stays.
const RBAC_KEPT: &[(&str, &str, &str, &str)] = &[
    (
        "",
        "nodes",
        "delete",
        "the controller deletes a Node it disrupted once drained; the run's node is deleted by hand, and one already deleting is not deleted again",
    ),
    (
        "dovetail.sh",
        "nodeclaims",
        "get",
        "finalizers are released against the informer's claim or the deletion's answer; a claim is read by name only after a 409 Conflict",
    ),
    (
        "events.k8s.io",
        "events",
        "patch",
        "kube's recorder patches an Event's count when it repeats; the run's Events did not repeat",
    ),
    (
        "coordination.k8s.io",
        "leases",
        "create",
        "kube-lease-manager creates the Lease when none exists; the run's first replica may take it by an apply patch",
    ),
    (
        "coordination.k8s.io",
        "leases",
        "update",
        "kube-lease-manager may replace the Lease on renewal",
    ),
    (
        "",
        "nodes",
        "get",
        "the disrupted taint is written against the informer's Node, read by name only after a 409 Conflict; the run's node is deleted by hand, not consolidated",
    ),
];

/// IAM actions the policy grants that no call makes by that name, and why.
const IAM_KEPT: &[(&str, &str)] = &[
    (
        "iam:GetInstanceProfile",
        "an EC2NodeClass with spec.role finds its instance profile; the run's class names an instanceProfile",
    ),
    (
        "iam:PassRole",
        "CreateFleet passes the node role of the instance profile (the run's profile is not in moto; tests/aws.rs passes it)",
    ),
    (
        "iam:CreateInstanceProfile",
        "made once per EC2NodeClass with spec.role (tests/aws.rs); the run's class names an instanceProfile",
    ),
    ("iam:AddRoleToInstanceProfile", "with CreateInstanceProfile"),
    (
        "iam:RemoveRoleFromInstanceProfile",
        "when a class's role changes or the class is deleted (tests/aws.rs)",
    ),
    (
        "iam:DeleteInstanceProfile",
        "when a class is deleted (tests/aws.rs)",
    ),
    (
        "eks:DescribeCluster",
        "the cluster's endpoint, CA, CIDR and version when not set; the run sets them (tests/aws.rs learns them)",
    ),
    (
        "ec2:DeleteLaunchTemplate",
        "garbage collection of launch templates no NodeClass uses any more",
    ),
    (
        "ssm:GetParameter",
        "an EC2NodeClass with an AMI alias (al2023@latest); the run's class selects by tag",
    ),
    (
        "ec2:DescribeSpotPriceHistory",
        "spot prices, read with the catalog when spot is offered",
    ),
];

#[test]
fn the_chart_rbac_and_the_iam_policy_allow_every_call_of_a_full_life_cycle_and_nothing_more() {
    // Installed in the test's system namespace, where the Lease and the Policy ConfigMap live.
    let Some(rules) = check(&["rbac", "kube-system"]) else {
        return;
    };
    let iam = check(&["iam"]).unwrap();
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    // A life cycle that touches every kind the controller reads and writes: a Policy from a
    // ConfigMap, a NodePool using it, pods that need nodes, a node deleted and drained, the
    // leader Lease, an interruption queue.
    let queue_url = seed::runtime().block_on(async {
        let sqs = aws_sdk_sqs::Client::new(&moto.config().await);
        let url = sqs
            .create_queue()
            .queue_name("dovetail-my-cluster")
            .send()
            .await
            .unwrap()
            .queue_url()
            .unwrap()
            .to_string();
        // Something the controller does not understand: it deletes it.
        sqs.send_message()
            .queue_url(&url)
            .message_body("not an EventBridge event")
            .send()
            .await
            .unwrap();
        url
    });
    let text = dovetail::policy::source::config_map_manifests(
        "team",
        "kube-system",
        dovetail::policy::builtin::find("cheapest").unwrap().wasm,
    )
    .unwrap();
    let mut docs = text.split("---\n");
    api.put(
        "v1/configmaps",
        serde_norway::from_str(docs.next().unwrap()).unwrap(),
    );
    api.put(
        "dovetail.sh/v1/policies",
        serde_norway::from_str(docs.next().unwrap()).unwrap(),
    );
    let mut pool = node_pool("1h");
    pool["spec"]["policies"] = json!({"scoring": "team"});
    api.put("dovetail.sh/v1/nodepools", pool);
    api.put(
        "policy/v1/poddisruptionbudgets",
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
               "metadata": {"name": "inflate", "namespace": "default"},
               "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "inflate"}}}}),
    );
    let mut settings = settings(&moto);
    // By name, as the chart's settings.interruptionQueue takes it (sqs:GetQueueUrl finds it).
    assert!(queue_url.ends_with("/dovetail-my-cluster"), "{queue_url}");
    settings.interruption_queue = Some("dovetail-my-cluster".into());
    // Policy ConfigMaps in the release's namespace only, as the chart sets it.
    settings.policy_config_map_namespaces = vec!["kube-system".into()];
    settings.operation.leader_election = Some(dovetail::kubernetes::leader::LeaderElection {
        namespace: "kube-system".into(),
        duration: Duration::from_secs(6),
        ..Default::default()
    });
    let mut controller = Running::start(&api, settings);
    // The budget's expected pods are its ReplicaSet's scale; the ReplicaSet replaces each pod
    // the drain evicts, and the next goes once its replacement is Ready.
    inflate_replica_set(&api, 3);
    run_pods(&api, &moto, 3);
    let node = name(&api.list(NODES)[0]);
    api.delete(NODES, "", &node);
    until(
        &api,
        &moto,
        Duration::from_secs(180),
        "the deleted node drained and gone",
        |api, _| api.get(NODES, "", &node).is_none(),
    );
    controller.stop();

    // Every request against the rules.
    let rules: Vec<Value> = serde_json::from_str(&rules).unwrap();
    let used: BTreeSet<RbacRequest> = api.log().iter().filter_map(rbac_request).collect();
    let denied: Vec<String> = used
        .iter()
        .filter(|req| !rules.iter().any(|r| rbac_allows(r, req)))
        .map(|req| format!("{req:?}"))
        .collect();
    assert!(
        denied.is_empty(),
        "the chart's RBAC does not allow: {denied:#?}"
    );
    // Least privilege where it can be shown: the Lease and the CRDs by name, ConfigMaps in the
    // release's namespace only.
    for (group, resource, verb) in [
        ("coordination.k8s.io", "leases", "get"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "get"),
    ] {
        let other = RbacRequest {
            group: group.into(),
            resource: resource.into(),
            verb: verb.into(),
            namespace: if resource == "leases" {
                "kube-system".into()
            } else {
                String::new()
            },
            name: Some("someone-elses".into()),
        };
        assert!(
            !rules.iter().any(|r| rbac_allows(r, &other)),
            "the chart lets the controller {verb} any {resource}, not only its own"
        );
    }
    let elsewhere = RbacRequest {
        group: String::new(),
        resource: "configmaps".into(),
        verb: "list".into(),
        namespace: "default".into(),
        name: None,
    };
    assert!(
        !rules.iter().any(|r| rbac_allows(r, &elsewhere)),
        "ConfigMaps outside the release's namespace are readable"
    );
    let used_rules: BTreeSet<(String, String, String)> = used
        .iter()
        .map(|r| (r.group.clone(), r.resource.clone(), r.verb.clone()))
        .collect();
    let mut unused = Vec::new();
    for r in &rules {
        for g in r["apiGroups"].as_array().unwrap() {
            for res in r["resources"].as_array().unwrap() {
                for v in r["verbs"].as_array().unwrap() {
                    let key = (
                        g.as_str().unwrap().to_string(),
                        res.as_str().unwrap().to_string(),
                        v.as_str().unwrap().to_string(),
                    );
                    let kept = RBAC_KEPT.iter().any(|(kg, kr, kv, _)| {
                        (*kg, *kr, *kv) == (key.0.as_str(), key.1.as_str(), key.2.as_str())
                    });
                    if !used_rules.contains(&key) && !kept {
                        unused.push(format!("{} {}/{}", key.2, key.0, key.1));
                    }
                }
            }
        }
    }
    assert!(
        unused.is_empty(),
        "the chart grants what the controller never did (use it, or keep it in RBAC_KEPT with the reason): {unused:#?}"
    );

    // Every AWS action against the policy.
    let granted: BTreeSet<String> = serde_json::from_str(&iam).unwrap();
    assert!(
        granted.iter().all(|a| !a.contains('*')),
        "no wildcard action: {granted:?}"
    );
    // What the IAM check authorized for the controller (a batch delete is sqs:DeleteMessage;
    // CreateFleet is also ec2:RunInstances, ec2:CreateTags…); the test's own set-up went to moto
    // directly.
    let called: BTreeSet<String> = moto.iam_allowed();
    assert!(
        called.contains("ec2:CreateFleet") && called.contains("sqs:ReceiveMessage"),
        "{called:?}"
    );
    let missing: Vec<&String> = called.iter().filter(|a| !granted.contains(*a)).collect();
    assert!(
        missing.is_empty(),
        "the IAM policy does not grant: {missing:?}"
    );
    let idle: Vec<&String> = granted
        .iter()
        .filter(|a| !called.contains(*a) && !IAM_KEPT.iter().any(|(k, _)| k == a))
        .collect();
    assert!(
        idle.is_empty(),
        "the IAM policy grants what the controller never called (use it, or keep it in IAM_KEPT with the reason): {idle:?}"
    );
    eprintln!(
        "{} (verb, resource) pairs and {} AWS actions used; all allowed, nothing else granted",
        used_rules.len(),
        called.len()
    );
}

#[test]
fn the_controller_refuses_to_start_on_older_or_missing_crds_and_says_what_to_run() {
    logs();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let api = dovetail_apiserver_double::ApiServer::start(&rt);
    let mut crds: Vec<Value> = dovetail::api::crds()
        .into_iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .collect();
    crds[0]["metadata"]["annotations"][dovetail::api::CRD_VERSION_ANNOTATION] = json!("0.0.1");
    for crd in &crds[..3] {
        api.put(
            "apiextensions.k8s.io/v1/customresourcedefinitions",
            crd.clone(),
        );
    }
    let dir = std::env::temp_dir().join(format!("dovetail-crd-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let exe = dovetail_exe();
    let out = Command::new(exe)
        .args(["controller", "--log-format", "text"])
        .env("KUBECONFIG", &kubeconfig)
        .env("CLUSTER_NAME", "my-cluster")
        .env("AWS_REGION", "us-east-1")
        .env("CLOUD", "sim")
        .env("LEADER_ELECT", "false")
        .env("METRICS_PORT", "0")
        .env("HEALTH_PROBE_PORT", "0")
        .output()
        .expect("the controller runs");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!out.status.success(), "it refused to start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nodepools.dovetail.sh is version 0.0.1, older than this controller")
            && stderr.contains("policies.dovetail.sh is not installed")
            && stderr.contains("helm upgrade --install dovetail-crd"),
        "{stderr}"
    );
    assert!(
        stderr.lines().count() < 5,
        "a few clear lines, not a dump: {stderr}"
    );
}

/// The doctor's line that names `start`, or the test fails showing everything it said.
fn line_with(out: &str, start: &str) -> String {
    out.lines()
        .find(|l| l.contains(start))
        .unwrap_or_else(|| panic!("no line with {start:?}: {out}"))
        .to_string()
}

/// Runs the `dovetail` binary; (exit success, stdout, stderr).
fn dovetail(args: &[&str], env: &[(&str, &str)], unset: &[&str]) -> (bool, String, String) {
    let exe = dovetail_exe();
    let mut cmd = Command::new(exe);
    cmd.args(args).envs(env.iter().copied());
    for k in unset {
        cmd.env_remove(k);
    }
    let out = cmd.output().expect("dovetail runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn doctor_names_each_problem_in_words_and_what_works() {
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    // The stack of the CloudFormation template: the queue and its rules.
    if check(&["cfn", &moto.admin_endpoint]).is_none() {
        return;
    }
    let mut broken = node_class();
    broken["metadata"]["name"] = "broken".into();
    broken["spec"] = json!({
        "role": "DovetailNodeRole-nope",
        "amiSelectorTerms": [{"tags": {seed::DISCOVERY: "my-cluster"}}],
        "subnetSelectorTerms": [{"tags": {"team": "nobody-tagged-this"}}],
        "securityGroupSelectorTerms": [{"tags": {seed::DISCOVERY: "my-cluster"}}],
    });
    api.put("aws.dovetail.sh/v1/ec2nodeclasses", broken);
    api.put("dovetail.sh/v1/nodepools", node_pool("1h"));
    let mut pod = inflate_pod(0);
    pod["spec"]["nodeSelector"] = json!({"kubernetes.io/arch": "s390x"});
    api.put(PODS, pod);
    let dir = std::env::temp_dir().join(format!("dovetail-doctor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let queue = "https://sqs.us-east-1.amazonaws.com/123456789012/dovetail-my-cluster";
    let (ok, out, err) = dovetail(
        &["doctor"],
        &[
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("CLUSTER_NAME", "my-cluster"),
            ("AWS_REGION", "us-east-1"),
            // The doctor runs with the operator's credentials, not under the controller policy.
            ("AWS_ENDPOINT_URL", &moto.admin_endpoint),
            ("INTERRUPTION_QUEUE", queue),
        ],
        &[],
    );
    std::fs::remove_dir_all(&dir).unwrap();
    eprintln!("{out}{err}");
    assert!(!ok, "problems exit non-zero");
    let line = |start: &str| line_with(&out, start);
    assert!(line("AWS credentials").starts_with("ok"), "{out}");
    assert!(line("CRDs").starts_with("ok"), "{out}");
    assert!(line("EC2NodeClass default").starts_with("ok"), "{out}");
    let b = line("EC2NodeClass broken");
    assert!(
        b.starts_with("PROBLEM") && b.contains("nobody-tagged-this"),
        "names the tag it looked for: {b}"
    );
    let role = line("node role DovetailNodeRole-nope");
    assert!(
        role.starts_with("PROBLEM") && role.contains("no IAM role"),
        "{role}"
    );
    assert!(line("interruption queue").starts_with("ok"), "{out}");
    assert!(line("EventBridge rules").starts_with("ok"), "{out}");
    let p = line("pending pods");
    assert!(
        p.starts_with("PROBLEM") && p.contains("default/inflate-7d9f-00000") && p.contains("s390x"),
        "the pod and the requirement that keeps it out: {p}"
    );
}

#[test]
fn missing_aws_credentials_are_one_line_that_says_where_it_looked_and_what_to_set() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/inflate-spot.yaml");
    let no_credentials: &[(&str, &str)] = &[
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/nonexistent/config"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials"),
    ];
    let unset = [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    ];
    let (ok, _, err) = dovetail(
        &[
            "simulate",
            "-f",
            examples.to_str().unwrap(),
            "--cloud",
            "aws",
            "--aws-endpoint",
            "http://127.0.0.1:9",
        ],
        no_credentials,
        &unset,
    );
    assert!(!ok);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() <= 2, "one line, not an SDK dump: {err}");
    assert!(
        err.contains("no AWS credentials found")
            && err.contains("AWS_PROFILE")
            && err.contains("IRSA")
            && err.contains("eks.amazonaws.com/role-arn"),
        "{err}"
    );
    assert!(!err.contains("nodeclaim :"), "{err}");
}

/// `doctor --role-arn` runs the controller's own calls as the controller's role, behind the IAM
/// check (which judges every request by deploy/cloudformation.yaml's policy, as AWS would, but
/// the operator's own): the first launch is dry-run for each class, and a class whose instance
/// profile holds a role the policy may not pass (Karpenter's node role) is found before any
/// launch. It also finds the controller not ready, its warnings, a KUBECONFIG on another cluster
/// than EKS describes, and the node role's way in (aws-auth; moto has no access entries).
#[test]
fn doctor_as_the_controller_dry_runs_the_first_launch_and_names_what_its_policy_refuses() {
    // (Second half: the same in the controller's pod, as `helm test` runs it.)
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    if check(&["cfn", &moto.admin_endpoint]).is_none() {
        return;
    }
    let account = "123456789012";
    seed::runtime().block_on(async {
        let iam = aws_sdk_iam::Client::new(&moto.config().await);
        iam.create_role()
            .role_name("KarpenterNodeRole-my-cluster")
            .assume_role_policy_document("{}")
            .send()
            .await
            .unwrap();
        for (profile, role) in [
            ("dovetail-node", "DovetailNodeRole-my-cluster"),
            ("karpenter-node", "KarpenterNodeRole-my-cluster"),
        ] {
            iam.create_instance_profile()
                .instance_profile_name(profile)
                .send()
                .await
                .unwrap();
            iam.add_role_to_instance_profile()
                .instance_profile_name(profile)
                .role_name(role)
                .send()
                .await
                .unwrap();
        }
    });
    let mut legacy = node_class();
    legacy["metadata"]["name"] = "legacy".into();
    legacy["spec"]["instanceProfile"] = "karpenter-node".into();
    api.put("aws.dovetail.sh/v1/ec2nodeclasses", legacy);
    let mut by_role = node_class();
    by_role["metadata"]["name"] = "by-role".into();
    by_role["spec"]
        .as_object_mut()
        .unwrap()
        .remove("instanceProfile");
    by_role["spec"]["role"] = "DovetailNodeRole-my-cluster".into();
    api.put("aws.dovetail.sh/v1/ec2nodeclasses", by_role);
    api.put(
        "v1/configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "aws-auth", "namespace": "kube-system"},
               "data": {"mapRoles": format!(
                   "- rolearn: arn:aws:iam::{account}:role/DovetailNodeRole-my-cluster\n  username: system:node:{{{{EC2PrivateDNSName}}}}\n  groups:\n    - system:bootstrappers\n    - system:nodes\n")}}),
    );
    api.put(
        "apps/v1/deployments",
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "dovetail", "namespace": "dovetail",
                            "labels": {"app.kubernetes.io/name": "dovetail"}},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app.kubernetes.io/name": "dovetail"}},
                        "template": {"metadata": {"labels": {"app.kubernetes.io/name": "dovetail"}},
                                     "spec": {"containers": [{"name": "controller", "image": "dovetail"}]}}},
               "status": {"replicas": 2, "readyReplicas": 1}}),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // RFC 3339 with microseconds, as a MicroTime is written.
    let stamp = |s: u64| {
        run(Command::new("date").args(["-u", "-d", &format!("@{s}"), "+%Y-%m-%dT%H:%M:%S.000000Z"]))
            .trim()
            .to_string()
    };
    api.put(
        "events.k8s.io/v1/events",
        json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
               "metadata": {"name": "default-00001.1", "namespace": "default"},
               "eventTime": stamp(now - 60), "reportingController": "dovetail",
               "reportingInstance": "dovetail-0", "action": "Launch", "type": "Warning",
               "reason": "FailedLaunch", "note": "CreateFleet: UnfulfillableCapacity",
               "regarding": {"kind": "NodeClaim", "name": "default-00001"}}),
    );
    // Behind the IAM check: the controller's role is judged by the template's policy.
    let (mut judge, judged) = moto::iam_check(&moto.admin_endpoint, &[]);
    let dir = servers::Temp::new("doctor-role");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let role = format!("arn:aws:iam::{account}:role/DovetailControllerRole-my-cluster");
    let (ok, out, err) = dovetail(
        &["doctor", "--role-arn", &role, "--namespace", "dovetail"],
        &[
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("CLUSTER_NAME", "my-cluster"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", &judged),
            // The operator: an administrator the IAM check does not judge.
            ("AWS_ACCESS_KEY_ID", "ADMINEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "admin"),
            ("INTERRUPTION_QUEUE", "dovetail-my-cluster"),
        ],
        &[],
    );
    let denials = moto::iam_denials(&judged);
    let _ = judge.kill();
    let _ = judge.wait();
    eprintln!("{out}{err}");
    assert!(!ok, "problems exit non-zero");
    let line = |start: &str| line_with(&out, start);
    let who = line("controller identity");
    assert!(
        who.starts_with("ok") && who.contains("assumed-role/DovetailControllerRole-my-cluster"),
        "{who}"
    );
    let good = line("launch as the controller (EC2NodeClass default)");
    assert!(
        good.starts_with("ok") && good.contains("CreateLaunchTemplate, RunInstances would succeed"),
        "{good}"
    );
    let bad = line("launch as the controller (EC2NodeClass legacy)");
    assert!(
        bad.starts_with("PROBLEM")
            && bad.contains("RunInstances would be refused")
            && bad.contains("iam:PassRole")
            && bad.contains("KarpenterNodeRole-my-cluster"),
        "the role the policy will not pass, named: {bad}"
    );
    assert!(line("EC2NodeClass by-role").starts_with("ok"), "{out}");
    let join = line("node role DovetailNodeRole-my-cluster may join");
    assert!(
        join.starts_with("ok") && join.contains("aws-auth"),
        "{join}"
    );
    let endpoint = line("cluster endpoint");
    assert!(
        endpoint.starts_with("PROBLEM") && endpoint.contains("KUBECONFIG reaches"),
        "the double is not the cluster moto's EKS describes: {endpoint}"
    );
    assert!(line("cluster version").starts_with("ok"), "{out}");
    let deployment = line("controller:");
    assert!(
        deployment.starts_with("PROBLEM") && deployment.contains("1 of 2 replicas ready"),
        "{deployment}"
    );
    let warned = line("controller warnings");
    assert!(
        warned.starts_with("PROBLEM") && warned.contains("FailedLaunch ×1"),
        "{warned}"
    );
    assert!(
        line("interruption queue").starts_with("ok"),
        "by name: {out}"
    );
    // The controller's calls were judged, and only the legacy class's launch was refused.
    assert!(
        denials.len() == 1 && denials[0].contains("iam:PassRole"),
        "{denials:#?}"
    );

    // In the controller's pod (`helm test`): its own identity, no --role-arn. What its policy
    // does not grant (reading roles, queue attributes, rules, access entries) is skipped with
    // how to check it, not reported as a problem of the installation.
    let (mut judge, judged) = moto::iam_check(&moto.admin_endpoint, &[]);
    let (_, out, err) = dovetail(
        &["doctor", "--namespace", "dovetail"],
        &[
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            // As in a pod: the API server's Service address is where it is reached.
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
            ("CLUSTER_NAME", "my-cluster"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", &judged),
            ("INTERRUPTION_QUEUE", "dovetail-my-cluster"),
        ],
        &["DOCTOR_ROLE_ARN"],
    );
    let denials = moto::iam_denials(&judged);
    let _ = judge.kill();
    let _ = judge.wait();
    eprintln!("{out}{err}");
    let line = |start: &str| line_with(&out, start);
    assert!(line("controller identity").starts_with("skipped"), "{out}");
    assert!(
        line("cluster endpoint").starts_with("skipped"),
        "in a pod the Service address is not compared with the nodes' endpoint: {out}"
    );
    assert!(
        line("launch as the controller (EC2NodeClass default)").starts_with("ok"),
        "{out}"
    );
    for skipped in [
        "node role DovetailNodeRole-my-cluster:",
        "EventBridge rules",
    ] {
        let l = line(skipped);
        assert!(
            l.starts_with("skipped") && l.contains("this identity may not"),
            "{l}"
        );
    }
    assert!(line("interruption queue").starts_with("ok"), "{out}");
    assert!(
        !denials
            .iter()
            .any(|d| d.contains("ec2:") && !d.contains("PassRole")),
        "the launch itself was allowed: {denials:#?}"
    );
}

/// The production binary (what the image ships) is built without the API server double; only the
/// `bench-cluster` feature the tests turn on brings it in.
#[test]
fn the_production_binary_does_not_depend_on_the_api_server_double() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tree = |features: &[&str]| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(&root)
            .args([
                "tree",
                "-p",
                "dovetail",
                "-e",
                "normal",
                "--locked",
                "--offline",
            ])
            .args(["--prefix", "none"])
            .args(features);
        run(&mut cmd)
    };
    let production = tree(&[]);
    assert!(
        production.contains("wasmtime") && !production.contains("dovetail-apiserver-double"),
        "{production}"
    );
    let bench = tree(&["--features", "bench-cluster"]);
    assert!(bench.contains("dovetail-apiserver-double"), "{bench}");
}
