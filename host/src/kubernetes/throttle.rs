//! Client-side rate limiting of the Kubernetes API (`KUBE_CLIENT_QPS`, `KUBE_CLIENT_BURST`), as
//! client-go's token bucket: a burst of requests goes at once, then `qps` per second. Watches
//! count once, when they start. A tower layer on kube's client stack, so every request —
//! reflectors, writes, Events, the Lease — shares one budget.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::Request;
use tower::{Layer, Service, ServiceExt};

/// The bucket every clone of the layer's service draws from.
pub struct Bucket {
    qps: f64,
    burst: f64,
    state: tokio::sync::Mutex<(f64, Instant)>,
}

impl Bucket {
    pub fn new(qps: f32, burst: u32) -> Arc<Bucket> {
        let burst = f64::from(burst.max(1));
        Arc::new(Bucket {
            qps: f64::from(qps).max(0.001),
            burst,
            state: tokio::sync::Mutex::new((burst, Instant::now())),
        })
    }

    /// Waits for a token.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut s = self.state.lock().await;
                let now = Instant::now();
                s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.qps).min(self.burst);
                s.1 = now;
                if s.0 >= 1.0 {
                    s.0 -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - s.0) / self.qps)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// The layer: put it over a cloneable service (kube's stack behind a `Buffer`).
#[derive(Clone)]
pub struct Throttle(pub Arc<Bucket>);

impl<S> Layer<S> for Throttle {
    type Service = Throttled<S>;
    fn layer(&self, inner: S) -> Throttled<S> {
        Throttled {
            inner,
            bucket: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Throttled<S> {
    inner: S,
    bucket: Arc<Bucket>,
}

impl<S, B> Service<Request<B>> for Throttled<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is the inner service's, checked after the token (oneshot below).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        let bucket = self.bucket.clone();
        Box::pin(async move {
            bucket.acquire().await;
            inner.oneshot(req).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Bucket;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn after_the_burst_requests_are_paced_at_qps() {
        let b = Bucket::new(100.0, 5);
        for _ in 0..5 {
            b.acquire().await;
        }
        let paced = Instant::now();
        for _ in 0..10 {
            b.acquire().await;
        }
        // Ten more at 100 per second cannot take less than about 0.1 s.
        assert!(
            paced.elapsed() >= Duration::from_millis(90),
            "{:?}",
            paced.elapsed()
        );
    }
}
