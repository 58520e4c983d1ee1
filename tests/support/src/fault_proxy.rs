//! The fault-injecting proxy in front of moto (`fault_proxy.py` beside this file), started
//! as its own process on a free loopback port.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

pub struct FaultProxy {
    child: std::process::Child,
    pub url: String,
}

impl FaultProxy {
    /// `faults` are the script's flags (`--ice TYPE:ZONE`, `--kill-after-create-fleet FILE`).
    pub fn start(upstream: &str, faults: &[&str]) -> FaultProxy {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script = crate::paths::tests_dir()
            .join("aws/fault_proxy.py")
            .display()
            .to_string();
        let child = std::process::Command::new("python3")
            .args([
                script.as_str(),
                "--port",
                &port.to_string(),
                "--upstream",
                upstream,
            ])
            .args(faults)
            .spawn()
            .expect("python3 runs the proxy");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the fault proxy did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        FaultProxy {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    fn count(&self, path: &str) -> u32 {
        let mut s = std::net::TcpStream::connect(self.url.trim_start_matches("http://")).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.rsplit("\r\n\r\n")
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// InsufficientInstanceCapacity errors injected so far.
    pub fn injected(&self) -> u32 {
        self.count("/ice-count")
    }

    /// Processes killed after CreateFleet so far.
    pub fn killed(&self) -> u32 {
        self.count("/killed")
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
