//! `dovetail top` in a real terminal: tmux runs it, the test types keys (`send-keys`) and reads
//! the screen (`capture-pane`) — against a simulation replayed, checking that the screen shows
//! what `dovetail simulate` prints for the same manifests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn dovetail() -> PathBuf {
    let exe = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|deps| deps.parent())
        .map(|d| d.join("dovetail"))
        .unwrap();
    assert!(
        exe.exists(),
        "the dovetail binary is built beside the tests ({}): `cargo build -p dovetail --bin dovetail` (scripts/test.sh does)",
        exe.display()
    );
    exe
}

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
        .split("LP bound for the running pods ")
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
