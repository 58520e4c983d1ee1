//! Real servers that hold policy components in the tests: the CNCF Distribution registry
//! (Debian's `docker-registry`) and an HTTPS file server (Python's `http.server` behind `ssl`,
//! with a certificate `openssl` makes for 127.0.0.1). Both on free loopback ports, stopped when
//! dropped. Missing under `CI=true` fails the test; elsewhere the caller skips, saying so.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn missing<T>(what: &str, why: String) -> Option<T> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} is required under CI=true ({why}); run scripts/setup.sh");
    }
    eprintln!("SKIPPED: {what} is not available ({why}); run scripts/setup.sh");
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_listening(child: &mut Child, port: u16, what: &str) -> Result<(), String> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited with {status}"));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    Err(format!("{what} did not listen within 20 s"))
}

/// A registry on loopback, plain HTTP (as `docker-registry` serves without TLS).
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`
    pub host: String,
    _dir: Temp,
}

impl Registry {
    pub fn start() -> Option<Registry> {
        let dir = Temp::new("registry");
        let port = free_port();
        let config = dir.0.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.0.join("data").display()
            ),
        )
        .unwrap();
        let spawned = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => return missing("docker-registry", e.to_string()),
        };
        if let Err(why) = wait_listening(&mut child, port, "docker-registry") {
            return missing("docker-registry", why);
        }
        Some(Registry {
            child,
            host: format!("127.0.0.1:{port}"),
            _dir: dir,
        })
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTPS server for the files of its directory, with its own certificate.
pub struct Https {
    child: Child,
    pub dir: PathBuf,
    /// PEM of the CA that signed the server's certificate (the client's extra root).
    pub cert: Vec<u8>,
    pub base: String,
    _dir: Temp,
}

impl Https {
    pub fn start() -> Option<Https> {
        let dir = Temp::new("https");
        // A CA and a leaf it signs for 127.0.0.1 (rustls refuses a CA certificate as the
        // server's own).
        let p = |f: &str| dir.0.join(f);
        std::fs::write(
            p("leaf.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        let steps: [Vec<std::ffi::OsString>; 3] = [
            args(&[
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .chain(args(&["-subj", "/CN=dovetail-test-ca", "-keyout"]))
            .chain([p("ca.key").into(), "-out".into(), p("ca.pem").into()])
            .collect(),
            args(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
            ])
            .chain(["-keyout".into(), p("key.pem").into()])
            .chain(["-out".into(), p("leaf.csr").into()])
            .collect(),
            args(&["x509", "-req", "-days", "1", "-CAcreateserial"])
                .chain(["-in".into(), p("leaf.csr").into()])
                .chain(["-CA".into(), p("ca.pem").into()])
                .chain(["-CAkey".into(), p("ca.key").into()])
                .chain(["-extfile".into(), p("leaf.ext").into()])
                .chain(["-out".into(), p("cert.pem").into()])
                .collect(),
        ];
        for step in steps {
            match Command::new("openssl")
                .args(&step)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
            {
                Ok(s) if s.success() => {}
                Ok(s) => return missing("openssl", format!("openssl {step:?} exited with {s}")),
                Err(e) => return missing("openssl", e.to_string()),
            }
        }
        let (cert, key) = (p("cert.pem"), p("key.pem"));
        let files = dir.0.join("files");
        std::fs::create_dir_all(&files).unwrap();
        let port = free_port();
        let script = "import http.server, ssl, sys, functools\n\
            handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])\n\
            server = http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[2])), handler)\n\
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
            ctx.load_cert_chain(sys.argv[3], sys.argv[4])\n\
            server.socket = ctx.wrap_socket(server.socket, server_side=True)\n\
            server.serve_forever()\n";
        let spawned = Command::new("python3")
            .args(["-c", script])
            .arg(&files)
            .arg(port.to_string())
            .arg(&cert)
            .arg(&key)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => return missing("python3", e.to_string()),
        };
        if let Err(why) = wait_listening(&mut child, port, "the HTTPS server") {
            return missing("an HTTPS server", why);
        }
        Some(Https {
            child,
            cert: std::fs::read(p("ca.pem")).unwrap(),
            base: format!("https://127.0.0.1:{port}"),
            dir: files,
            _dir: dir,
        })
    }

    /// Serves `bytes` at `/name`; returns its URL.
    pub fn serve(&self, name: &str, bytes: &[u8]) -> String {
        std::fs::write(self.dir.join(name), bytes).unwrap();
        format!("{}/{name}", self.base)
    }
}

impl Drop for Https {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn args(a: &[&str]) -> impl Iterator<Item = std::ffi::OsString> {
    a.iter()
        .map(std::ffi::OsString::from)
        .collect::<Vec<_>>()
        .into_iter()
}

/// A directory removed when dropped.
pub struct Temp(pub PathBuf);

impl Temp {
    pub fn new(what: &str) -> Temp {
        let dir = std::env::temp_dir().join(format!(
            "dovetail-{what}-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos() ^ (free_port() as u128)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Temp(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
