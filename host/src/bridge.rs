//! Where the synchronous core waits on the asynchronous adapters (the AWS SDK, kube-rs, SQS).
//! Each adapter holds one [`Bridge`] and waits on every call it makes through it, so tokio's
//! rules for doing that live in one place: never wait from inside the runtime, and a
//! current-thread runtime's I/O and timers run only while its own `Runtime::block_on` waits
//! (`Handle::block_on` alone would hang on it).

use std::future::Future;
use std::sync::Arc;

use tokio::runtime::{Handle, Runtime};

/// A runtime an adapter's synchronous port waits on. Cheap to clone: clones wait on the same
/// runtime.
#[derive(Clone)]
pub struct Bridge {
    handle: Handle,
    /// A runtime of the adapter's own (kept alive here, and driven by whoever waits); `None`
    /// on a multi-thread runtime whose workers drive the I/O.
    own: Option<Arc<Runtime>>,
}

impl Bridge {
    /// A current-thread runtime of the adapter's own: nothing runs on it between calls.
    pub fn own() -> std::io::Result<Bridge> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Bridge::owning(rt))
    }

    /// Waits on `rt`, which the bridge keeps alive.
    pub fn owning(rt: Runtime) -> Bridge {
        Bridge {
            handle: rt.handle().clone(),
            own: Some(Arc::new(rt)),
        }
    }

    /// Waits on a multi-thread runtime owned elsewhere (the process's).
    pub fn on(handle: Handle) -> Bridge {
        Bridge { handle, own: None }
    }

    /// Runs `call` to its end from a thread outside the runtime.
    pub fn wait<F: Future>(&self, call: F) -> F::Output {
        match &self.own {
            Some(rt) => rt.block_on(call),
            None => self.handle.block_on(call),
        }
    }

    /// The runtime, to spawn tasks that run beside the core (watches, long polls).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A timer completes on a bridge's own current-thread runtime: the waiter drives it.
    #[test]
    fn an_own_runtime_is_driven_by_the_waiter() {
        let bridge = Bridge::own().unwrap();
        let out = bridge.wait(async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            7
        });
        assert_eq!(out, 7);
        // A clone waits on the same runtime, and a task spawned there runs while one waits.
        let clone = bridge.clone();
        let task = bridge.handle().spawn(async { 8 });
        assert_eq!(clone.wait(task).unwrap(), 8);
    }

    /// On a multi-thread runtime owned elsewhere, its workers drive the I/O while one waits.
    #[test]
    fn a_shared_runtime_is_driven_by_its_workers() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let bridge = Bridge::on(rt.handle().clone());
        let out = bridge.wait(async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            9
        });
        assert_eq!(out, 9);
    }
}
