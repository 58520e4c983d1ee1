//! `dovetail top` in a real terminal: tmux runs it, the test types keys (`send-keys`) and reads
//! the screen (`capture-pane`) — against a simulation replayed, checking that the screen shows
//! what `dovetail simulate` prints for the same manifests.

use std::process::Command;
use std::time::{Duration, Instant};

use dovetail_test_support::policies as common;

use common::{dovetail_exe as dovetail, workspace};

/// A tmux server of the test's own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// `None` (a skip, loud under CI) when tmux is not installed.
    fn start(name: &str, width: u16, height: u16, command: &str) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("tmux is required under CI=true; run scripts/setup.sh");
            }
            eprintln!("skipped: tmux is not installed (scripts/setup.sh installs it)");
            return None;
        }
        let tmux = Tmux {
            socket: format!("dovetail-top-{}-{name}", std::process::id()),
        };
        let status = tmux
            .cmd()
            .args(["new-session", "-d", "-s", "top", "-x"])
            .arg(width.to_string())
            .arg("-y")
            .arg(height.to_string())
            .arg("-c")
            .arg(workspace())
            // The pane stays after the program ends, so the test can see how it ended.
            .arg(format!("{command}; echo EXITED $?; sleep 600"))
            .status()
            .unwrap();
        assert!(status.success(), "tmux new-session failed");
        Some(tmux)
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "top"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sends keys by their tmux names (`Space`, `n`, `G`).
    fn keys(&self, keys: &[&str]) {
        let status = self
            .cmd()
            .args(["send-keys", "-t", "top"])
            .args(keys)
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits until the screen satisfies `ok`; the screen, or a failure that shows it.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {what}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

/// The playback time in the header (`t=0h40m00s`).
fn clock(screen: &str) -> String {
    let at = screen.find("t=").expect("a clock in the header");
    screen[at + 2..at + 11].to_string()
}

/// A row of the screen that starts with `label`.
fn row<'a>(screen: &'a str, label: &str) -> &'a str {
    screen
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no row {label:?}:\n{screen}"))
}

#[test]
fn top_replays_a_simulation_and_shows_what_the_summary_prints() {
    let files = "examples/two-pools.yaml";
    let exe = dovetail();
    let Some(tmux) = Tmux::start(
        "replay",
        200,
        50,
        &format!("{} top -f {files} --speed 30", exe.display()),
    ) else {
        return;
    };
    let summary = String::from_utf8(
        Command::new(&exe)
            .args(["simulate", "-f", files])
            .current_dir(workspace())
            .env("RUST_LOG", "off")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();

    let s = tmux.wait_for("the replay playing", |s| {
        s.contains("· playing · speed 30×")
    });
    assert!(
        s.contains("nodepool web") && s.contains("nodepool batch"),
        "{s}"
    );

    // Speed control: doubled twice, then paused.
    tmux.keys(&["+", "+"]);
    tmux.wait_for("speed 120×", |s| s.contains("speed 120×"));
    tmux.keys(&["Space"]);
    let paused = tmux.wait_for("paused", |s| s.contains("· paused ·"));
    let t = clock(&paused);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(clock(&tmux.screen()), t, "a paused replay's clock stands");

    // The end: the cluster's totals are the summary's figures.
    tmux.keys(&["G"]);
    let end = tmux.wait_for("the end", |s| s.contains("t=2h00m00s of 2h00m00s"));
    let cost_line = summary
        .lines()
        .find_map(|l| l.strip_prefix("cost: "))
        .expect("a cost line");
    let cost = cost_line.split(' ').next().unwrap();
    let bound = cost_line
        .split("LP bound for the running pods, each on a type it fits, ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let cluster = row(&end, "cluster");
    assert!(
        cluster.contains(cost) && cluster.contains(bound),
        "summary: {cost} $/h, bound {bound}; screen: {cluster}"
    );
    // Every instance type of the summary's table, with as many node rows.
    for line in summary
        .lines()
        .skip_while(|l| !l.starts_with("instance type"))
        .skip(1)
        .take_while(|l| !l.starts_with("pods:"))
    {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (ty, cap, n) = (cols[0], cols[1], cols[2].parse::<usize>().unwrap());
        let rows = end
            .lines()
            .filter(|l| {
                let c: Vec<&str> = l.split_whitespace().collect();
                c.len() > 4 && c[2] == ty && c[3] == cap
            })
            .count();
        assert_eq!(
            rows, n,
            "{ty} {cap}: summary {n} nodes, screen {rows}\n{end}"
        );
    }

    // Sorting and the NodePool filter.
    tmux.keys(&["p"]);
    let web = tmux.wait_for("the web pool alone", |s| s.contains("nodepool web ─"));
    let node_rows: Vec<&str> = web
        .lines()
        .filter(|l| l.starts_with("web-") || l.starts_with("batch-"))
        .collect();
    assert!(
        !node_rows.is_empty() && node_rows.iter().all(|l| l.starts_with("web-")),
        "{web}"
    );
    tmux.keys(&["p", "s", "s"]);
    let by_cost = tmux.wait_for("sorted by cost", |s| {
        s.contains("sort $/hour · nodepool batch")
    });
    let prices: Vec<f64> = by_cost
        .lines()
        .filter(|l| l.starts_with("batch-"))
        .map(|l| l.split_whitespace().nth(10).unwrap().parse().unwrap())
        .collect();
    assert!(!prices.is_empty(), "{by_cost}");
    assert!(prices.windows(2).all(|w| w[0] >= w[1]), "{prices:?}");
    tmux.keys(&["p", "s", "s", "s", "s"]);
    tmux.wait_for("all pools by name", |s| {
        s.contains("sort name · nodepool all")
    });

    // Step from the start until a consolidation move is under way: the node and the panel name
    // the reason and the policy.
    tmux.keys(&["g"]);
    let mut s = tmux.wait_for("the start", |s| s.contains("t=0h00m00s"));
    let mut seen_in_flight = false;
    let mut steps = 0;
    while !s.contains("chosen by balanced") {
        seen_in_flight |= s.contains("in flight   ");
        let before = clock(&s);
        tmux.keys(&["n"]);
        s = tmux.wait_for("the next step", |s| clock(s) != before);
        steps += 1;
        assert!(steps < 400, "no consolidation move in 400 steps:\n{s}");
    }
    assert!(seen_in_flight, "NodeClaims in flight were never shown");
    assert!(
        s.contains("disrupting: underutilized (balanced)")
            || s.contains("disrupting: empty (balanced)"),
        "{s}"
    );

    tmux.keys(&["q"]);
    let gone = tmux.wait_for("the program to end", |s| s.contains("EXITED "));
    assert!(gone.contains("EXITED 0"), "{gone}");
    eprintln!("{steps} steps to the first consolidation move");
}

mod cluster {
    //! `dovetail top` against a cluster: the API server double on loopback (real HTTP, so kube's
    //! client, reflectors and watches run unchanged) holding NodePools, NodeClaims, Nodes and
    //! pods as a running controller leaves them.

    use super::*;
    use dovetail_apiserver_double::ApiServer;
    use serde_json::{Value, json};

    fn claim(name: &str, pool: &str, ty: &str, zone: &str, cap: &str, launched: bool) -> Value {
        let mut c = json!({
            "apiVersion": "dovetail.sh/v1", "kind": "NodeClaim",
            "metadata": {"name": name, "labels": {
                "dovetail.sh/nodepool": pool,
                "node.kubernetes.io/instance-type": ty,
                "topology.kubernetes.io/zone": zone,
                "dovetail.sh/capacity-type": cap,
            }},
            "spec": {"nodeClassRef": {"group": "aws.dovetail.sh", "kind": "EC2NodeClass", "name": "default"}},
        });
        if launched {
            c["status"] = json!({
                "providerID": format!("aws:///{zone}/i-{name}"),
                "capacity": {"cpu": "2", "memory": "4Gi", "pods": "29"},
                "allocatable": {"cpu": "1930m", "memory": "3Gi", "pods": "29"},
            });
        }
        c
    }

    fn pod(name: &str, node: Option<&str>, cpu: &str) -> Value {
        let mut p = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "pause",
                "resources": {"requests": {"cpu": cpu, "memory": "512Mi"}}}]},
            // As kube-scheduler leaves a pod it found no room for.
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]},
        });
        if let Some(n) = node {
            p["status"] = json!({"phase": "Running"});
            p["spec"]["nodeName"] = n.into();
        }
        p
    }

    #[test]
    fn top_watches_a_cluster_read_only_and_follows_its_changes() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let api = ApiServer::start(&rt);
        for crd in dovetail::api::crds() {
            api.put(
                "apiextensions.k8s.io/v1/customresourcedefinitions",
                serde_json::to_value(crd).unwrap(),
            );
        }
        for pool in ["web", "batch"] {
            api.put(
                "dovetail.sh/v1/nodepools",
                json!({
                    "apiVersion": "dovetail.sh/v1", "kind": "NodePool", "metadata": {"name": pool},
                    "spec": {"template": {"spec": {"requirements": [],
                        "nodeClassRef": {"group": "aws.dovetail.sh", "kind": "EC2NodeClass", "name": "default"}}}},
                }),
            );
        }
        let web = claim(
            "web-00001",
            "web",
            "m7g.large",
            "us-east-1a",
            "on-demand",
            true,
        );
        api.put("dovetail.sh/v1/nodeclaims", web.clone());
        api.register_node(&web, "ip-10-0-1-1.ec2.internal");
        let mut batch = claim(
            "batch-00001",
            "batch",
            "c6g.large",
            "us-east-1b",
            "spot",
            true,
        );
        batch["metadata"]["annotations"] = json!({
            "dovetail.sh/disruption-reason": "underutilized",
            "dovetail.sh/disruption-policy": "balanced",
        });
        batch["metadata"]["deletionTimestamp"] = "2026-12-03T08:00:00Z".into();
        batch["metadata"]["finalizers"] = json!(["dovetail.sh/termination"]);
        api.put("dovetail.sh/v1/nodeclaims", batch.clone());
        api.register_node(&batch, "ip-10-0-2-1.ec2.internal");
        api.put(
            "dovetail.sh/v1/nodeclaims",
            claim(
                "web-00002",
                "web",
                "m7g.large",
                "us-east-1c",
                "on-demand",
                false,
            ),
        );
        api.put(
            "v1/pods",
            pod("web-1", Some("ip-10-0-1-1.ec2.internal"), "1"),
        );
        api.put(
            "v1/pods",
            pod("web-2", Some("ip-10-0-1-1.ec2.internal"), "500m"),
        );
        api.put(
            "v1/pods",
            pod("batch-1", Some("ip-10-0-2-1.ec2.internal"), "250m"),
        );
        api.put("v1/pods", pod("web-3", None, "1"));

        let dir = std::env::temp_dir().join(format!("dovetail-top-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
        let Some(tmux) = Tmux::start(
            "cluster",
            200,
            40,
            &format!(
                "KUBECONFIG={} {} top",
                kubeconfig.display(),
                dovetail().display()
            ),
        ) else {
            return;
        };
        // The caches fill by list and watch: what the screen shows settles within the wait.
        let s = tmux.wait_for("the cluster's nodes and pods", |s| {
            s.contains("web-00001 ")
                && s.contains("batch-00001 ")
                && s.contains("in flight   web-00002")
                && s.contains("4 (3 running, 1 pending)")
        });
        assert!(s.contains("· read-only · updated"), "{s}");
        let web_row = row(&s, "web-00001");
        for want in ["m7g.large", "on-demand", "us-east-1a", "ready"] {
            assert!(web_row.contains(want), "{want}: {web_row}");
        }
        // 1500m requested of 1930m allocatable.
        assert!(web_row.contains(" 78%"), "{web_row}");
        let batch_row = row(&s, "batch-00001");
        assert!(
            batch_row.contains("disrupting: underutilized (balanced)"),
            "{batch_row}"
        );
        assert!(s.contains("in flight   web-00002"), "{s}");
        assert!(
            row(&s, "cluster").contains("4 (3 running, 1 pending)"),
            "{s}"
        );

        // A new node appears without a key pressed: the watch delivers it.
        let more = claim(
            "batch-00002",
            "batch",
            "c6g.large",
            "us-east-1b",
            "spot",
            true,
        );
        api.put("dovetail.sh/v1/nodeclaims", more.clone());
        api.register_node(&more, "ip-10-0-2-2.ec2.internal");
        tmux.wait_for("the new node", |s| s.contains("batch-00002 "));
        tmux.keys(&["p"]);
        let one = tmux.wait_for("one pool", |s| {
            s.contains("of 3 · sort name · nodepool ") && !s.contains("nodepool all")
        });
        let (shown, hidden) = if one.contains("nodepool batch ─") {
            ("batch-00002 ", "web-00001 ")
        } else {
            ("web-00001 ", "batch-00002 ")
        };
        assert!(one.contains(shown) && !one.contains(hidden), "{one}");
        tmux.keys(&["q"]);
        let gone = tmux.wait_for("the program to end", |s| s.contains("EXITED "));
        assert!(gone.contains("EXITED 0"), "{gone}");

        // It only read (the log holds HTTP requests: the test's own puts go straight in).
        let writes: Vec<String> = api
            .log()
            .iter()
            .filter(|r| r.method != "GET")
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert!(writes.is_empty(), "top wrote: {writes:?}");
        assert!(
            api.log().iter().any(|r| r.query.contains("watch=true")),
            "top watches"
        );
    }
}
