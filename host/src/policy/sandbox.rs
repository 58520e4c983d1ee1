//! The state of one policy instance: a WASI context with no capabilities, the memory cap, and the
//! `log` import.
//!
//! NB: components built for `wasm32-wasip2` import WASI interfaces through the standard library
//! even when the policy never touches a file. They are linked against an *empty* context: no
//! preopened directories, no environment, no arguments, stdin closed, stdout/stderr discarded,
//! sockets and name lookup refused, and both clocks frozen at the round's `now` — the only time
//! a policy sees is the one the controller passes.

use std::time::Duration;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::clocks::{HostMonotonicClock, HostWallClock};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::types::LogLevel;

/// Longest diagnostic line kept from a policy.
const MAX_LOG_BYTES: usize = 2048;
/// Bytes of a policy's stderr kept to explain a trap (Rust writes its panic message there, after
/// whatever the policy printed before): allocated only as written, and enough that a chatty
/// policy's panic still fits behind its output.
const STDERR_BYTES: usize = 64 * 1024;
/// Diagnostic lines kept per instance (one decision round).
const MAX_LOG_LINES: u32 = 64;

/// Store data of one policy instance. A fresh one per decision round: nothing leaks between
/// rounds, and a policy that leaks memory loses it with the store.
pub(crate) struct Sandbox {
    wasi: WasiCtx,
    stderr: MemoryOutputPipe,
    table: ResourceTable,
    pub(crate) limiter: MemoryCap,
    policy: std::sync::Arc<str>,
    log_lines: u32,
}

impl Sandbox {
    pub(crate) fn new(policy: std::sync::Arc<str>, memory_cap_bytes: usize, now_unix: i64) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_BYTES);
        let wasi = WasiCtx::builder()
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .wall_clock(FrozenClock(now_unix))
            .monotonic_clock(FrozenClock(now_unix))
            .build();
        Sandbox {
            wasi,
            stderr,
            table: ResourceTable::new(),
            limiter: MemoryCap {
                cap: memory_cap_bytes,
                exceeded: false,
            },
            policy,
            log_lines: 0,
        }
    }
}

impl Sandbox {
    /// What the policy wrote to stderr (its panic message, typically), trimmed.
    pub(crate) fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents())
            .trim()
            .to_string()
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl super::bindings::latest::scorer::dovetail::policy::log::Host for Sandbox {
    fn log(&mut self, level: LogLevel, message: String) {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES {
            if self.log_lines == MAX_LOG_LINES + 1 {
                tracing::warn!(policy = %self.policy, "policy log limit reached; further lines dropped this round");
            }
            return;
        }
        let message = crate::bounded::bounded(&message, MAX_LOG_BYTES);
        let policy = &*self.policy;
        match level {
            LogLevel::Debug => tracing::debug!(policy, "{message}"),
            LogLevel::Info => tracing::info!(policy, "{message}"),
            LogLevel::Warn => tracing::warn!(policy, "{message}"),
            LogLevel::Error => tracing::error!(policy, "{message}"),
        }
    }
}

/// Caps linear memory. Remembers that it refused a growth, so the trap that follows (Rust's
/// allocator aborts when memory cannot grow) is reported as the cap, not as a generic trap.
pub(crate) struct MemoryCap {
    cap: usize,
    pub(crate) exceeded: bool,
}

/// Table elements allowed per table: generous for Rust's function tables, small enough that a
/// table bomb is refused.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// A clock that always reads the round's time.
struct FrozenClock(i64);

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::from_secs(self.0.max(0) as u64)
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        (self.0.max(0) as u64).saturating_mul(1_000_000_000)
    }
}
