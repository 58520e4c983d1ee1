//! The controller's HTTP endpoints: `/metrics` (Prometheus text format) on the metrics port,
//! `/healthz` and `/readyz` on the health probe port, as a Deployment's probes expect.
//!
//! - `/healthz`: the process is alive and its loop is not stuck (a tick finished within
//!   [`Health::stuck_after`]); 500 otherwise, so the kubelet restarts it.
//! - `/readyz`: the caches synced and the cloud answered its last call; 503 with what is
//!   missing otherwise.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

use super::{Error, unix_now};
use crate::metrics::Metrics;

/// What the probes report, set by the run loop.
pub struct Health {
    /// When the loop last finished a round (Unix seconds).
    heartbeat: AtomicI64,
    synced: AtomicBool,
    cloud: AtomicBool,
    /// A loop that has not come round for this long is stuck.
    pub stuck_after: Duration,
}

impl Health {
    pub fn new(stuck_after: Duration) -> Health {
        Health {
            heartbeat: AtomicI64::new(unix_now()),
            synced: AtomicBool::new(false),
            cloud: AtomicBool::new(false),
            stuck_after,
        }
    }

    /// The loop came round.
    pub fn beat(&self, now: i64) {
        self.heartbeat.store(now, Ordering::Relaxed);
    }

    pub fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::Relaxed);
    }

    /// The cloud's last call succeeded (or not).
    pub fn set_cloud(&self, reachable: bool) {
        self.cloud.store(reachable, Ordering::Relaxed);
    }

    fn live(&self, now: i64) -> Result<(), String> {
        let since = now - self.heartbeat.load(Ordering::Relaxed);
        if since > self.stuck_after.as_secs() as i64 {
            return Err(format!("the control loop has not come round for {since} s"));
        }
        Ok(())
    }

    fn ready(&self) -> Result<(), String> {
        let mut missing = Vec::new();
        if !self.synced.load(Ordering::Relaxed) {
            missing.push("caches not synced");
        }
        if !self.cloud.load(Ordering::Relaxed) {
            missing.push("cloud provider not reachable");
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing.join("; "))
        }
    }
}

/// Binds both ports now (a port in use is an error at start) and serves on `rt`.
pub fn start(
    rt: &tokio::runtime::Handle,
    metrics_addr: Option<SocketAddr>,
    health_addr: Option<SocketAddr>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> Result<(), Error> {
    let bind = |addr: SocketAddr, what: &str| {
        let std = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| Error::Runtime(format!("serving {what} on {addr}: {e}")))?;
        let _enter = rt.enter();
        tokio::net::TcpListener::from_std(std)
            .map_err(|e| Error::Runtime(format!("serving {what} on {addr}: {e}")))
    };
    if let Some(addr) = metrics_addr {
        let listener = bind(addr, "metrics")?;
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(
                            "content-type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.encode(),
                    )
                }
            }),
        );
        rt.spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the metrics server stopped");
            }
        });
    }
    if let Some(addr) = health_addr {
        let listener = bind(addr, "health probes")?;
        let live = health.clone();
        let app = Router::new()
            .route(
                "/healthz",
                get(move || {
                    let h = live.clone();
                    async move { answer(h.live(unix_now()), StatusCode::INTERNAL_SERVER_ERROR) }
                }),
            )
            .route(
                "/readyz",
                get(move || {
                    let h = health.clone();
                    async move { answer(h.ready(), StatusCode::SERVICE_UNAVAILABLE) }
                }),
            );
        rt.spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the health probe server stopped");
            }
        });
    }
    Ok(())
}

fn answer(r: Result<(), String>, failing: StatusCode) -> (StatusCode, String) {
    match r {
        Ok(()) => (StatusCode::OK, "ok\n".into()),
        Err(why) => (failing, format!("{why}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_names_what_is_missing_and_liveness_notices_a_stuck_loop() {
        let h = Health::new(Duration::from_secs(60));
        assert_eq!(
            h.ready().unwrap_err(),
            "caches not synced; cloud provider not reachable"
        );
        h.set_synced(true);
        h.set_cloud(true);
        assert!(h.ready().is_ok());
        h.beat(1_000);
        assert!(h.live(1_030).is_ok());
        assert!(h.live(1_061).unwrap_err().contains("61 s"));
    }
}
