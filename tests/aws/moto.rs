//! A real AWS API server for the tests: `moto` (PyPI `moto[server]`, installed by
//! `scripts/setup.sh`), started on a free loopback port and stopped when dropped.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running moto server.
pub struct Moto {
    child: Child,
    pub endpoint: String,
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
                return Some(Moto {
                    child,
                    endpoint: format!("http://127.0.0.1:{port}"),
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

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
