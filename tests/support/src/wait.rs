//! Polling for a condition, with a limit that fails the test by name.

use std::time::{Duration, Instant};

/// Polls `done` every 100 ms until it holds; panics naming `what` after `limit`. Returns how
/// long it took.
pub fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}
