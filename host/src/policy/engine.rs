//! The wasmtime engine that runs policies: compiled once per content digest, instantiated fresh
//! for every decision round, stopped at a deadline and a memory cap.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

use super::bindings::latest::consolidator::{Consolidator, ConsolidatorPre};
use super::bindings::latest::scorer::{Scorer, ScorerPre};
use super::bindings::types as wit;
use super::contract;
use super::error::{PolicyError, Result};
use super::inspect::{self, ComponentInfo};
use super::round::ScoringRound;
use super::sandbox::Sandbox;
use crate::capacity::claim::ClaimScores;
use crate::cluster::consolidation::{Action, ConsolidationRound};

/// Settings of the engine, the same for every policy.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Deadline of a decision round (instantiate, init and the call) when the Policy sets none:
    /// the base, before the per-item share.
    pub default_timeout: Duration,
    /// What each claim of a scoring round (each move of a consolidation round) adds to its
    /// deadline: a round's deadline follows its work, so a big batch is not failed by a deadline
    /// sized for a small one.
    pub per_item: Duration,
    /// No round runs longer than this, however many items it has (the controller's loop waits
    /// for it).
    pub max_round: Duration,
    /// Memory cap of an instance when the Policy sets none, in MiB.
    pub default_memory_mib: u64,
    /// Ceiling on any Policy's memory cap, in MiB.
    pub max_memory_mib: u64,
    /// Use the pooling allocator: instance slots are reserved once and reused, which makes
    /// instantiation several times cheaper (see `dovetail bench policy`).
    pub pooling: bool,
    /// Instances that may run at once with pooling.
    pub max_instances: u32,
    /// How often the deadline clock ticks; deadlines are precise to about one tick.
    pub epoch_tick: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            default_timeout: Duration::from_millis(250),
            per_item: Duration::from_millis(2),
            max_round: Duration::from_secs(30),
            default_memory_mib: 64,
            max_memory_mib: 512,
            pooling: true,
            max_instances: 32,
            epoch_tick: Duration::from_millis(2),
        }
    }
}

/// Bytes of linear memory kept resident per pooled slot (a round's catalog and claims fit).
const KEEP_RESIDENT: usize = 4 << 20;

/// Per-policy overrides, from the Policy resource's `spec.limits`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// Deadline of one decision round.
    pub timeout: Option<Duration>,
    /// Memory cap in MiB (clamped to the engine's ceiling).
    pub memory_mib: Option<u64>,
}

/// Where the time of one decision went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallStats {
    /// Fresh store, instantiation and `init`.
    pub instantiate: Duration,
    /// `begin-round`: handing the catalog over.
    pub begin_round: Duration,
    /// The `score` calls: each claim in, the policy's work, the scores out, the contract check.
    pub call: Duration,
}

/// Loads and runs policy components. Cheap to clone; all clones share one engine and cache.
#[derive(Clone)]
pub struct PolicyEngine {
    shared: Arc<Shared>,
}

struct Shared {
    engine: Engine,
    linker: Linker<Sandbox>,
    config: EngineConfig,
    /// Compiled components by digest. Weak: a component no policy uses any more is freed.
    cache: Mutex<HashMap<String, Weak<Compiled>>>,
    _ticker: EpochTicker,
}

/// A compiled, linked component, shared by every policy that uses the same bytes.
struct Compiled {
    info: ComponentInfo,
    scorer: Option<ScorerPre<Sandbox>>,
    consolidator: Option<ConsolidatorPre<Sandbox>>,
}

impl PolicyEngine {
    /// Builds the engine and starts its deadline clock.
    pub fn new(config: EngineConfig) -> Result<Self> {
        let engine_err = |e: wasmtime::Error| PolicyError::Engine(format!("{e:#}"));
        let mut wasm = Config::new();
        wasm.epoch_interruption(true);
        wasm.wasm_component_model(true);
        // For profiling policies with `perf` (README, bench policy): names the JIT code.
        if std::env::var_os("DOVETAIL_PERFMAP").is_some() {
            wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        if config.pooling {
            let mut pool = PoolingAllocationConfig::default();
            let max_bytes = usize::try_from(config.max_memory_mib << 20).unwrap_or(usize::MAX);
            pool.total_component_instances(config.max_instances)
                .total_core_instances(config.max_instances * 8)
                .total_memories(config.max_instances * 2)
                .total_tables(config.max_instances * 8)
                .total_stacks(config.max_instances)
                .max_memories_per_component(4)
                .max_tables_per_component(16)
                .max_core_instances_per_component(32)
                .max_memory_size(max_bytes)
                .max_unused_warm_slots(config.max_instances)
                // Zero reused memory with memset instead of madvise: a fresh instance per round
                // then reuses resident pages instead of faulting them in again.
                .linear_memory_keep_resident(KEEP_RESIDENT);
            wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&wasm).map_err(engine_err)?;

        let mut linker = Linker::<Sandbox>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(engine_err)?;
        super::bindings::latest::scorer::dovetail::policy::log::add_to_linker::<
            Sandbox,
            wasmtime::component::HasSelf<Sandbox>,
        >(&mut linker, |s| s)
        .map_err(engine_err)?;

        let ticker = EpochTicker::start(engine.clone(), config.epoch_tick);
        Ok(PolicyEngine {
            shared: Arc::new(Shared {
                engine,
                linker,
                config,
                cache: Mutex::new(HashMap::new()),
                _ticker: ticker,
            }),
        })
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// Compiles (or reuses, by digest) a component and checks that it is a policy this
    /// controller can run. Nothing of the policy runs yet; see [`LoadedPolicy::validate`].
    pub fn load(
        &self,
        name: &str,
        bytes: &[u8],
        config: Vec<(String, String)>,
        limits: Limits,
    ) -> Result<LoadedPolicy> {
        inspect::check_header(name, bytes)?;
        let digest = inspect::digest(bytes);
        let cached = self
            .shared
            .cache
            .lock()
            .unwrap()
            .get(&digest)
            .and_then(Weak::upgrade);
        let compiled = match cached {
            Some(c) => c,
            None => {
                let c = Arc::new(self.compile(name, bytes)?);
                let mut cache = self.shared.cache.lock().unwrap();
                cache.retain(|_, w| w.strong_count() > 0);
                cache.insert(digest, Arc::downgrade(&c));
                c
            }
        };
        let cfg = &self.shared.config;
        let memory_mib = limits
            .memory_mib
            .unwrap_or(cfg.default_memory_mib)
            .min(cfg.max_memory_mib);
        Ok(LoadedPolicy {
            name: Arc::from(name),
            compiled,
            config,
            timeout: limits.timeout.unwrap_or(cfg.default_timeout),
            per_item: cfg.per_item,
            max_round: cfg.max_round.max(limits.timeout.unwrap_or_default()),
            memory_cap_bytes: usize::try_from(memory_mib << 20).unwrap_or(usize::MAX),
            shared: self.shared.clone(),
        })
    }

    /// How many distinct components are compiled and in use.
    pub fn compiled_components(&self) -> usize {
        let mut cache = self.shared.cache.lock().unwrap();
        cache.retain(|_, w| w.strong_count() > 0);
        cache.len()
    }

    /// Reads a component's facts without keeping it.
    pub fn inspect(&self, name: &str, bytes: &[u8]) -> Result<ComponentInfo> {
        Ok(self
            .load(name, bytes, Vec::new(), Limits::default())?
            .compiled
            .info
            .clone())
    }

    fn compile(&self, name: &str, bytes: &[u8]) -> Result<Compiled> {
        let engine = &self.shared.engine;
        let component = Component::new(engine, bytes).map_err(|e| PolicyError::Compile {
            policy: name.to_string(),
            detail: format!("{e:#}"),
        })?;
        let info = inspect::inspect(name, engine, &component, bytes)?;
        let instance_pre = self
            .shared
            .linker
            .instantiate_pre(&component)
            .map_err(|e| PolicyError::Link {
                policy: name.to_string(),
                detail: format!("{e:#}"),
            })?;
        let bind = |e: wasmtime::Error| PolicyError::Link {
            policy: name.to_string(),
            detail: format!("{e:#}"),
        };
        let scorer = if info.scoring {
            Some(ScorerPre::new(instance_pre.clone()).map_err(bind)?)
        } else {
            None
        };
        let consolidator = if info.consolidation {
            Some(ConsolidatorPre::new(instance_pre.clone()).map_err(bind)?)
        } else {
            None
        };
        Ok(Compiled {
            info,
            scorer,
            consolidator,
        })
    }
}

/// A policy ready to run: compiled component, its configuration and its limits.
///
/// Every call gets a fresh instance in a fresh `Store`, so no state leaks between rounds and a
/// policy cannot accumulate memory. Cheap to share behind an `Arc`; calls may run concurrently.
pub struct LoadedPolicy {
    name: Arc<str>,
    compiled: Arc<Compiled>,
    config: Vec<(String, String)>,
    /// The base deadline of a round.
    timeout: Duration,
    /// What each claim (move) adds to it.
    per_item: Duration,
    /// The cap on a round's deadline.
    max_round: Duration,
    memory_cap_bytes: usize,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LoadedPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPolicy")
            .field("name", &self.name)
            .field("digest", &self.compiled.info.digest)
            .field("timeout", &self.timeout)
            .field("memory_cap_bytes", &self.memory_cap_bytes)
            .finish()
    }
}

impl LoadedPolicy {
    /// The Policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configuration `init` was given.
    pub fn config(&self) -> &[(String, String)] {
        &self.config
    }

    /// Facts about the component.
    pub fn info(&self) -> &ComponentInfo {
        &self.compiled.info
    }

    /// Instantiates the policy and runs `init` with its configuration, so a broken component or a
    /// rejected configuration is found before the policy serves a decision.
    pub fn validate(&self) -> Result<()> {
        let mut store = self.store(0);
        if let Some(pre) = &self.compiled.scorer {
            self.instantiate_scorer(&mut store, pre)?;
        } else if let Some(pre) = &self.compiled.consolidator {
            self.instantiate_consolidator(&mut store, pre)?;
        }
        Ok(())
    }

    /// Scores the options of every claim of a provisioning round, in one instance: the catalog
    /// is handed over once, then each claim. Every answer is checked against the output contract.
    pub fn score(&self, round: &ScoringRound) -> Result<Vec<ClaimScores>> {
        self.score_timed(round).map(|(scores, _)| scores)
    }

    /// [`LoadedPolicy::score`], also returning where the time went.
    pub fn score_timed(&self, round: &ScoringRound) -> Result<(Vec<ClaimScores>, CallStats)> {
        let pre = self
            .compiled
            .scorer
            .as_ref()
            .ok_or_else(|| self.missing("scoring"))?;
        let started = Instant::now();
        let mut store = self.store(round.now);
        let scorer = self.instantiate_scorer(&mut store, pre)?;
        let instantiated = Instant::now();
        let scoring = scorer.dovetail_policy_scoring();
        scoring
            .call_begin_round(&mut store, round.now, &round.catalog)
            .map_err(|e| self.runtime_error(&store, e))?
            .map_err(|message| PolicyError::Failed {
                policy: self.name.to_string(),
                message: guest_text(&message),
            })?;
        let began = Instant::now();
        let mut out = Vec::with_capacity(round.claims.len());
        for (i, claim) in round.claims.iter().enumerate() {
            // The deadline so far: the base and a share per claim handed in, capped.
            let allowed = self.allowance(i + 1);
            let Some(left) = allowed.checked_sub(started.elapsed()) else {
                return Err(self.timeout_error(allowed));
            };
            self.set_deadline(&mut store, left);
            let scores = scoring
                .call_score(&mut store, claim)
                .map_err(|e| self.runtime_error_within(&store, e, allowed))?
                .map_err(|message| PolicyError::Failed {
                    policy: self.name.to_string(),
                    message: format!(
                        "claim {i} of NodePool {}: {}",
                        claim.node_pool,
                        guest_text(&message)
                    ),
                })?;
            contract::check_scores(claim, &scores).map_err(|detail| {
                self.contract(format!(
                    "claim {i} of NodePool {}: {detail}",
                    claim.node_pool
                ))
            })?;
            out.push(scores.into());
        }
        let stats = CallStats {
            instantiate: instantiated - started,
            begin_round: began - instantiated,
            call: began.elapsed(),
        };
        Ok((out, stats))
    }

    /// Chooses consolidation moves, checked against the output contract.
    pub fn consolidate(&self, round: &ConsolidationRound) -> Result<Vec<Action>> {
        let pre = self
            .compiled
            .consolidator
            .as_ref()
            .ok_or_else(|| self.missing("consolidation"))?;
        // Converted before the clock starts: the copy is the host's, not the policy's time.
        let round = wit::ConsolidationRound::from(round);
        let started = Instant::now();
        let mut store = self.store(round.now);
        let consolidator = self.instantiate_consolidator(&mut store, pre)?;
        let allowed = self.allowance(round.moves.len());
        let Some(left) = allowed.checked_sub(started.elapsed()) else {
            return Err(self.timeout_error(allowed));
        };
        self.set_deadline(&mut store, left);
        let actions = consolidator
            .dovetail_policy_consolidation()
            .call_consolidate(&mut store, &round)
            .map_err(|e| self.runtime_error_within(&store, e, allowed))?
            .map_err(|message| PolicyError::Failed {
                policy: self.name.to_string(),
                message: guest_text(&message),
            })?;
        contract::check_actions(&round, &actions).map_err(|detail| self.contract(detail))?;
        Ok(actions.into_iter().map(Into::into).collect())
    }

    fn store(&self, now: i64) -> Store<Sandbox> {
        let mut store = Store::new(
            &self.shared.engine,
            Sandbox::new(self.name.clone(), self.memory_cap_bytes, now),
        );
        store.limiter(|s| &mut s.limiter);
        self.set_deadline(&mut store, self.timeout);
        store.epoch_deadline_trap();
        store
    }

    /// A round's deadline once `items` claims (moves) are handed in: the base and a share per
    /// item, at most the cap.
    fn allowance(&self, items: usize) -> Duration {
        let items = u32::try_from(items).unwrap_or(u32::MAX);
        self.timeout
            .saturating_add(self.per_item.saturating_mul(items))
            .min(self.max_round)
    }

    /// The store traps `left` from now.
    fn set_deadline(&self, store: &mut Store<Sandbox>, left: Duration) {
        let tick = self.shared.config.epoch_tick.as_nanos().max(1);
        // One extra tick: the deadline may start just before a tick.
        store.set_epoch_deadline((left.as_nanos().div_ceil(tick) + 1) as u64);
    }

    fn timeout_error(&self, allowed: Duration) -> PolicyError {
        PolicyError::Timeout {
            policy: self.name.to_string(),
            timeout_ms: allowed.as_millis() as u64,
        }
    }

    /// [`LoadedPolicy::runtime_error`], a deadline reported as the round's `allowed`.
    fn runtime_error_within(
        &self,
        store: &Store<Sandbox>,
        err: wasmtime::Error,
        allowed: Duration,
    ) -> PolicyError {
        match self.runtime_error(store, err) {
            PolicyError::Timeout { .. } => self.timeout_error(allowed),
            other => other,
        }
    }

    fn instantiate_scorer(
        &self,
        store: &mut Store<Sandbox>,
        pre: &ScorerPre<Sandbox>,
    ) -> Result<Scorer> {
        let scorer = pre
            .instantiate(&mut *store)
            .map_err(|e| self.runtime_error(store, e))?;
        let init = scorer
            .dovetail_policy_lifecycle()
            .call_init(&mut *store, &self.config);
        self.check_init(store, init)?;
        Ok(scorer)
    }

    fn instantiate_consolidator(
        &self,
        store: &mut Store<Sandbox>,
        pre: &ConsolidatorPre<Sandbox>,
    ) -> Result<Consolidator> {
        let consolidator = pre
            .instantiate(&mut *store)
            .map_err(|e| self.runtime_error(store, e))?;
        let init = consolidator
            .dovetail_policy_lifecycle()
            .call_init(&mut *store, &self.config);
        self.check_init(store, init)?;
        Ok(consolidator)
    }

    fn check_init(
        &self,
        store: &Store<Sandbox>,
        init: wasmtime::Result<std::result::Result<(), String>>,
    ) -> Result<()> {
        init.map_err(|e| self.runtime_error(store, e))?
            .map_err(|message| PolicyError::ConfigRejected {
                policy: self.name.to_string(),
                message: guest_text(&message),
            })
    }

    /// Names what stopped a call: the memory cap, the deadline, or a trap (with the guest's own
    /// panic message when it wrote one).
    fn runtime_error(&self, store: &Store<Sandbox>, err: wasmtime::Error) -> PolicyError {
        let policy = self.name.to_string();
        if store.data().limiter.exceeded {
            return PolicyError::MemoryCap {
                policy,
                cap_mib: (self.memory_cap_bytes >> 20) as u64,
            };
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => PolicyError::Timeout {
                policy,
                timeout_ms: self.timeout.as_millis() as u64,
            },
            Some(trap) => {
                let said = panic_line(&store.data().stderr());
                let detail = if said.is_empty() {
                    trap.to_string()
                } else if said.starts_with("panicked at") {
                    // A panic is what the `unreachable` trap is; the guest's words say which.
                    said
                } else {
                    format!("{trap}: {said}")
                };
                PolicyError::Trap { policy, detail }
            }
            None => PolicyError::Instantiate {
                policy,
                detail: format!("{err:#}"),
            },
        }
    }

    fn missing(&self, iface: &str) -> PolicyError {
        PolicyError::MissingExport {
            policy: self.name.to_string(),
            missing: format!("{}/{iface}", inspect::WIT_PACKAGE),
            exports: self.compiled.info.exports.join(", "),
        }
    }

    fn contract(&self, detail: String) -> PolicyError {
        PolicyError::Contract {
            policy: self.name.to_string(),
            detail,
        }
    }
}

/// Advances the engine's epoch every tick on a background thread; stops when dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine, tick: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("policy-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the policy deadline thread");
        EpochTicker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a policy wrote (an error, a reason, its stderr) as the host passes it on: bounded to
/// [`MAX_GUEST_TEXT`] bytes and stripped of control characters, once, here at the boundary.
pub fn guest_text(s: &str) -> String {
    crate::bounded::bounded(s, MAX_GUEST_TEXT)
}

/// What a guest wrote to stderr before it trapped, as one clean line: Rust's panic report
/// (`thread '<unnamed>' panicked at src/lib.rs:12:9:` and the message on the next line) joined,
/// without the `RUST_BACKTRACE` hint (a sandbox has no backtrace to give) and without the
/// replacement characters of a write cut mid-character.
pub fn panic_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    let joined = lines.join(" ").replace(['\u{fffd}'], "");
    // The last panic report, without what the policy printed before it; and without
    // `thread '<unnamed>' (1)`: the thread says nothing in a sandbox.
    let joined = match joined.rfind("panicked at") {
        Some(at) => &joined[at..],
        None => joined.as_str(),
    };
    guest_text(joined.trim())
}

/// Bytes of policy-supplied text kept.
pub const MAX_GUEST_TEXT: usize = 1024;

#[cfg(test)]
mod tests {
    use super::panic_line;

    #[test]
    fn a_guest_panic_reads_as_one_clean_line() {
        let stderr = "thread '<unnamed>' (1) panicked at src/lib.rs:12:9:\nclaim too big: 5 pods\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            panic_line(stderr),
            "panicked at src/lib.rs:12:9: claim too big: 5 pods"
        );
        assert_eq!(panic_line("cut mid-char \u{fffd}"), "cut mid-char");
        // Whatever the policy printed before its panic does not crowd the panic out.
        let chatty = format!(
            "{}\nthread '<unnamed>' (1) panicked at src/lib.rs:3:5:\nboom\n",
            "debugging output\n".repeat(500)
        );
        assert_eq!(panic_line(&chatty), "panicked at src/lib.rs:3:5: boom");
        assert_eq!(panic_line(""), "");
    }
}
