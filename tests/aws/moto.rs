//! A real AWS API server for the tests: `moto` (PyPI `moto[server]`, installed by
//! `scripts/setup.sh`), started on a free loopback port and stopped when dropped.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running moto server.
pub struct Moto {
    child: Child,
    pub endpoint: String,
    /// Where moto writes its request recording, once [`Moto::record`] turned it on.
    recording: std::path::PathBuf,
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
        let recording = std::env::temp_dir().join(format!("dovetail-moto-{port}.jsonl"));
        let _ = std::fs::remove_file(&recording);
        let spawned = Command::new("python3")
            .env("MOTO_RECORDER_FILEPATH", &recording)
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
                return Some(Moto {
                    child,
                    endpoint: format!("http://127.0.0.1:{port}"),
                    recording,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        missing("moto.server did not listen within 30 s".into())
    }

    /// An SDK config pointed at this server.
    pub async fn config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .load()
            .await
    }
}

impl Moto {
    /// Records every request from now on (moto's recorder).
    #[allow(dead_code)]
    pub fn record(&self) {
        let url = format!("{}/moto-api/recorder/start-recording", self.endpoint);
        let ok = Command::new("python3")
            .args(["-c", "import sys, urllib.request; urllib.request.urlopen(urllib.request.Request(sys.argv[1], data=b'', method='POST'))", &url])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "moto's recorder starts");
    }

    /// The IAM actions (`ec2:CreateFleet`, `sqs:ReceiveMessage`…) of the requests recorded so
    /// far, from each request's signing scope and its Action or X-Amz-Target.
    #[allow(dead_code)]
    pub fn recorded_actions(&self) -> std::collections::BTreeSet<String> {
        let text = std::fs::read_to_string(&self.recording).unwrap_or_default();
        let mut out = std::collections::BTreeSet::new();
        for line in text.lines() {
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let headers = &entry["headers"];
            let header = |k: &str| {
                headers
                    .as_object()
                    .and_then(|h| h.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)))
                    .and_then(|(_, v)| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            // Credential=AKID/20261202/us-east-1/ec2/aws4_request
            let auth = header("Authorization");
            let Some(service) = auth
                .split("Credential=")
                .nth(1)
                .and_then(|c| c.split('/').nth(3))
            else {
                continue;
            };
            let body = if entry["body_encoded"] == true {
                use base64::Engine as _;
                let b = entry["body"].as_str().unwrap_or_default();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .unwrap_or_default();
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                entry["body"].as_str().unwrap_or_default().to_string()
            };
            let target = header("X-Amz-Target");
            let action = match target.split_once('.') {
                Some((_, a)) => a.to_string(),
                None => body
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("Action="))
                    .unwrap_or_default()
                    .to_string(),
            };
            if !action.is_empty() {
                out.insert(format!("{service}:{action}"));
            }
        }
        out
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.recording);
    }
}
