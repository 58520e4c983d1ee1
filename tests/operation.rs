//! Running the controller in production, end to end against the API server double and moto:
//! two replicas and the leader Lease (one acts; a killed leader is replaced within the lease
//! duration; SIGTERM hands over at once), `/metrics` parsed by Prometheus' own parser, the
//! health probes flipping, and an Event storm aggregated.

use dovetail_test_support::harness;
use dovetail_test_support::moto;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use dovetail_apiserver_double::ApiServer;
use harness::*;
use serde_json::Value;

const LEASES: &str = "coordination.k8s.io/v1/leases";
const LEASE: &str = "dovetail-leader-election";

fn holder(api: &ApiServer) -> Option<String> {
    api.get(LEASES, "kube-system", LEASE)?["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_string)
}

use dovetail_test_support::wait::wait_for;

/// The replicas (by User-Agent) that wrote anything but the Lease.
fn writers(api: &ApiServer) -> BTreeSet<String> {
    api.log()
        .iter()
        .filter(|r| r.method != "GET" && !r.path.contains("/leases"))
        .map(|r| r.user_agent.clone())
        .collect()
}

fn replica(name: &str, lease: &str) -> Vec<(&'static str, String)> {
    vec![
        ("POD_NAME", name.to_string()),
        ("LEADER_ELECT", "true".to_string()),
        ("LEADER_ELECTION_LEASE_DURATION", lease.to_string()),
    ]
}

fn start(
    api: &ApiServer,
    moto: &moto::Moto,
    dir: &std::path::Path,
    env: &[(&'static str, String)],
) -> Process {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Process::start_with(api, &moto.endpoint, dir, &env)
}

fn temp_dir(what: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("dovetail-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn of_two_replicas_only_the_leader_acts_and_the_other_takes_over_when_it_dies() {
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    api.put("dovetail.sh/v1/nodepools", node_pool("1h"));
    let dir = temp_dir("replicas");
    let mut a = start(&api, &moto, &dir, &replica("replica-a", "6s"));
    wait_for("replica-a holds the lease", Duration::from_secs(30), || {
        holder(&api).as_deref() == Some("replica-a")
    });
    let _b = start(&api, &moto, &dir, &replica("replica-b", "6s"));
    // replica-b is up (its caches list) before there is work.
    wait_for("replica-b lists", Duration::from_secs(30), || {
        api.log().iter().any(|r| r.user_agent.contains("replica-b"))
    });
    for i in 0..5 {
        api.put(PODS, inflate_pod(i));
    }
    until(
        &api,
        &moto,
        Duration::from_secs(90),
        "pods bound by the leader",
        |api, _| {
            api.list(PODS)
                .iter()
                .all(|p| !p["spec"]["nodeName"].is_null())
        },
    );
    let w = writers(&api);
    assert!(
        !w.is_empty() && w.iter().all(|ua| ua.contains("replica-a")),
        "only the leader wrote: {w:?}"
    );

    // The leader dies without a word: the follower takes over once its lease expires.
    a.0.kill().unwrap();
    a.0.wait().unwrap();
    let killed = Instant::now();
    for i in 5..10 {
        api.put(PODS, inflate_pod(i));
    }
    until(
        &api,
        &moto,
        Duration::from_secs(90),
        "pods bound by the new leader",
        |api, _| {
            api.list(PODS)
                .iter()
                .all(|p| !p["spec"]["nodeName"].is_null())
        },
    );
    assert_eq!(holder(&api).as_deref(), Some("replica-b"));
    // Timed by when the double received each request, not by this test's polling (which a
    // loaded two-core machine delays by seconds).
    let log = api.log();
    let after_kill = |r: &&dovetail_apiserver_double::Request| {
        r.at >= killed && r.user_agent.contains("replica-b") && r.method != "GET"
    };
    let took_lease = log
        .iter()
        .filter(after_kill)
        // kube-lease-manager first clears an expired holder, then takes the Lease: the write
        // that names replica-b.
        .find(|r| {
            r.path.contains("/leases")
                && (200..300).contains(&r.code)
                && r.body.contains(r#""holderIdentity":"replica-b""#)
        })
        .map(|r| r.at - killed)
        .expect("replica-b wrote the Lease");
    let first_write = log
        .iter()
        .filter(after_kill)
        .find(|r| !r.path.contains("/leases"))
        .map(|r| r.at - killed)
        .expect("replica-b wrote");
    eprintln!("leader killed → the follower leads: {took_lease:?}, first write: {first_write:?}");
    // At most the Lease duration (6 s) after the last renewal, plus the manager's wait between
    // clearing the expired holder and taking the Lease (up to 1 s), and a second of slack.
    assert!(
        took_lease < Duration::from_secs(8),
        "took the lease in {took_lease:?}"
    );
    // Then one batch window (1 s) and a tick of the loop's own pace.
    assert!(
        first_write < took_lease + Duration::from_secs(3),
        "first write {first_write:?} after taking the lease at {took_lease:?}"
    );
}

#[test]
fn sigterm_releases_the_lease_so_the_follower_takes_over_before_it_expires() {
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    let dir = temp_dir("sigterm");
    // A long lease: only a release lets the follower in early.
    let mut a = start(&api, &moto, &dir, &replica("replica-a", "60s"));
    wait_for("replica-a holds the lease", Duration::from_secs(30), || {
        holder(&api).as_deref() == Some("replica-a")
    });
    let _b = start(&api, &moto, &dir, &replica("replica-b", "60s"));
    wait_for("replica-b lists", Duration::from_secs(30), || {
        api.log().iter().any(|r| r.user_agent.contains("replica-b"))
    });
    std::thread::sleep(Duration::from_secs(2));
    a.terminate();
    let status = a.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "a clean exit on SIGTERM: {status}");
    let took = wait_for("replica-b holds the lease", Duration::from_secs(20), || {
        holder(&api).as_deref() == Some("replica-b")
    });
    eprintln!("SIGTERM → follower leads: {took:?} (lease 60 s)");
}

/// Samples of the exposition, parsed by the Prometheus client library's OpenMetrics parser.
fn parse_metrics(text: &str) -> Vec<Value> {
    use std::io::Write;
    let script = format!("{}/operation/parse_metrics.py", env!("CARGO_MANIFEST_DIR"));
    let mut child = std::process::Command::new("python3")
        .arg(&script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs the parser");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the exposition parses: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn sample(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .map(|s| s["value"].as_f64().unwrap())
        .sum()
}

#[test]
fn metrics_are_served_in_the_prometheus_format_and_health_probes_flip() {
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    api.put("dovetail.sh/v1/nodepools", node_pool("1h"));
    let (metrics_port, health_port) = (free_port(), free_port());
    let mut settings = settings(&moto);
    settings.operation.metrics_addr = Some(([127, 0, 0, 1], metrics_port).into());
    settings.operation.health_addr = Some(([127, 0, 0, 1], health_port).into());
    let _controller = Running::start(&api, settings);
    wait_for("ready", Duration::from_secs(30), || {
        http_get(health_port, "/readyz").is_some_and(|(code, _)| code == 200)
    });
    assert_eq!(http_get(health_port, "/healthz").unwrap().0, 200);
    for i in 0..5 {
        api.put(PODS, inflate_pod(i));
    }
    until(
        &api,
        &moto,
        Duration::from_secs(90),
        "pods bound",
        |api, _| {
            api.list(PODS)
                .iter()
                .all(|p| !p["spec"]["nodeName"].is_null())
        },
    );
    // One more round so the gauges see the bound pods.
    std::thread::sleep(Duration::from_secs(2));
    let (code, text) = http_get(metrics_port, "/metrics").expect("/metrics answers");
    assert_eq!(code, 200);
    let samples = parse_metrics(&text);
    let claims = api.list(CLAIMS).len() as f64;
    assert!(claims >= 1.0);
    assert_eq!(
        sample(
            &samples,
            "dovetail_nodeclaims_created_total",
            &[("nodepool", "default"), ("reason", "provisioning")]
        ),
        claims,
        "one count per NodeClaim"
    );
    assert_eq!(
        sample(
            &samples,
            "dovetail_pods_startup_duration_seconds_count",
            &[]
        ),
        5.0
    );
    assert!(sample(&samples, "dovetail_provisioner_batch_size_count", &[]) >= 1.0);
    assert!(
        sample(
            &samples,
            "dovetail_cloudprovider_duration_seconds_count",
            &[("call", "create")]
        ) >= claims
    );
    assert!(
        sample(
            &samples,
            "dovetail_policy_calls_total",
            &[("call", "score"), ("outcome", "ok")]
        ) >= 1.0
    );
    assert_eq!(
        sample(&samples, "dovetail_pods_pending", &[]),
        0.0,
        "nothing waits"
    );
    assert_eq!(
        sample(
            &samples,
            "dovetail_nodepool_usage",
            &[("nodepool", "default"), ("resource", "nodes")]
        ),
        claims
    );
    assert!(
        sample(
            &samples,
            "dovetail_cluster_cost_per_hour",
            &[("nodepool", "default")]
        ) > 0.0
    );
    assert_eq!(sample(&samples, "dovetail_leader", &[]), 1.0);

    // The cloud goes away: not ready (after the next collection), still alive.
    drop(moto);
    let took = wait_for(
        "not ready without the cloud",
        Duration::from_secs(30),
        || {
            http_get(health_port, "/readyz").is_some_and(|(code, body)| {
                code == 503 && body.contains("cloud provider not reachable")
            })
        },
    );
    eprintln!("cloud gone → /readyz 503 after {took:?}");
    assert_eq!(http_get(health_port, "/healthz").unwrap().0, 200);
}

#[test]
fn an_event_storm_becomes_a_handful_of_events_with_counts() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let api = ApiServer::start(&rt);
    let client = {
        let _enter = rt.enter();
        kube::Client::try_from(api.config()).unwrap()
    };
    let metrics = std::sync::Arc::new(dovetail::metrics::Metrics::new());
    let events = dovetail::kubernetes::Events::start(
        rt.handle(),
        kube::runtime::events::Recorder::new(
            client,
            kube::runtime::events::Reporter {
                controller: "dovetail".into(),
                instance: Some("test".into()),
            },
        ),
        metrics.clone(),
    );
    let claim = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("dovetail.sh/v1".into()),
        kind: Some("NodeClaim".into()),
        name: Some("default-00001".into()),
        ..Default::default()
    };
    for i in 0..1000 {
        events.publish(
            claim.clone(),
            kube::runtime::events::EventType::Warning,
            "FailedDraining",
            format!("evicting default/web-{i}: Cannot evict pod as it would violate the pod's disruption budget."),
        );
    }
    let published = dovetail::kubernetes::EVENT_BURST as usize;
    wait_for(
        "the admitted Events written",
        Duration::from_secs(20),
        || {
            api.log()
                .iter()
                .filter(|r| r.path.contains("/events"))
                .count()
                >= published
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    let objects = api.list("events.k8s.io/v1/events");
    let writes = api
        .log()
        .iter()
        .filter(|r| r.path.contains("/events"))
        .count();
    eprintln!(
        "1000 identical Events → {} object(s), {writes} write(s)",
        objects.len()
    );
    assert!(
        objects.len() <= 3,
        "a handful of Event objects: {}",
        objects.len()
    );
    assert_eq!(writes, published, "the storm is cut to the burst");
    let count = objects[0]["series"]["count"].as_u64().unwrap_or(1);
    assert_eq!(
        count as usize, published,
        "the repeats are counted: {:#}",
        objects[0]
    );
    let suppressed = metrics.encode();
    assert!(
        suppressed.contains(r#"dovetail_events_not_published_total{why="suppressed"} 990"#),
        "{suppressed}"
    );
}

#[test]
fn a_node_pool_at_its_limits_and_a_failing_policy_say_so_on_the_node_pool() {
    let Some((moto, _rt, api)) = world() else {
        return;
    };
    let mut pool = node_pool("1h");
    // Room for one m5.large (2 vCPU): five pods of 500m need more.
    pool["spec"]["limits"] = serde_json::json!({"cpu": "2"});
    // A scoring policy that does not exist fails every round; the fallback scores.
    pool["spec"]["policies"] =
        serde_json::json!({"scoring": "no-such-policy", "onFailure": "Fallback"});
    api.put("dovetail.sh/v1/nodepools", pool);
    let _controller = Running::start(&api, settings(&moto));
    for i in 0..5 {
        api.put(PODS, inflate_pod(i));
    }
    until(
        &api,
        &moto,
        Duration::from_secs(60),
        "a node launched",
        |api, _| !api.list(CLAIMS).is_empty(),
    );
    let limits = event(&api, "LimitsReached", Some("default"));
    assert_eq!(limits["regarding"]["kind"], "NodePool");
    assert!(
        limits["note"].as_str().unwrap().contains("limits reached"),
        "{limits}"
    );
    let failed = event(&api, "PolicyFailed", Some("default"));
    assert!(
        failed["note"].as_str().unwrap().contains("no-such-policy"),
        "{failed}"
    );
}
