//! Policy name → the live component that serves it.
//!
//! Applying a Policy loads and validates the new component (compile, version check, instantiate,
//! `init` with its configuration) *before* it replaces anything. A broken one is refused with a
//! reason and the last good version keeps serving. The swap is one pointer write: a round that
//! already holds the old version finishes on it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::builtin;
use super::canary::{self, Roles};
use super::engine::{Limits, LoadedPolicy, PolicyEngine};
use super::error::{PolicyError, Result};
use super::shadow::{
    self, Comparison, ShadowAnswer, ShadowJob, ShadowRole, ShadowTallies, ShadowTally,
};
use crate::bounded::bounded;

/// What the controller reports in a Policy's status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyStatus {
    /// Whether a version of the policy is serving decisions.
    pub ready: bool,
    /// CamelCase reason: `Loaded`, or the last error's reason.
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
    /// Digest of the serving version, if any.
    pub serving_digest: Option<String>,
    /// WIT version of the serving version, if any.
    pub wit_version: Option<String>,
    /// Exports of the serving version.
    pub exports: Vec<String>,
    /// Size in bytes of the serving version.
    pub size: Option<usize>,
    /// Digest of the last version refused, while that refusal is the latest news.
    pub refused_digest: Option<String>,
}

/// Longest message of a status or an Event (etcd objects are limited to ~1.5 MB; a compile
/// error can be long).
const MESSAGE_BYTES: usize = 4096;

/// A policy's failures over the registry's life (a simulated run, or the process): how often and
/// why, the first error, and what decided instead. `simulate`, `--compare` and `policy test`
/// print it, so a fallback is never silent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FailureTally {
    pub failures: u32,
    /// By the error's reason (`Trapped`, `Timeout`, `MemoryCap`, `ContractViolation`…).
    pub by_reason: BTreeMap<&'static str, u32>,
    /// The first failure's message, one clean line.
    pub first: String,
    /// Decisions the fallback made instead, by fallback.
    pub fallbacks: BTreeMap<String, u32>,
}

impl std::fmt::Display for FailureTally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reasons: Vec<String> = self
            .by_reason
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        write!(
            f,
            "failed {} time{} ({})",
            self.failures,
            if self.failures == 1 { "" } else { "s" },
            reasons.join(", ")
        )?;
        for (fallback, n) in &self.fallbacks {
            write!(
                f,
                ", fell back to {fallback} {n} time{}",
                if *n == 1 { "" } else { "s" }
            )?;
        }
        write!(f, "; first: {}", self.first)
    }
}

/// Told about every policy call made through [`PolicyRegistry::call`] (the controller's
/// metrics).
pub trait CallObserver: Send + Sync {
    /// A call ended: `failure` is the error's reason (`Timeout`, `Trapped`, …) when it failed.
    fn call(
        &self,
        policy: &str,
        digest: &str,
        call: &'static str,
        took: Duration,
        failure: Option<&'static str>,
    );
    /// A fallback decided because `policy` failed.
    fn fallback(&self, policy: &str, fallback: &str);
    /// A shadow candidate's answer was compared with the serving one's.
    fn shadow(&self, _policy: &str, _role: ShadowRole, _comparison: &Comparison) {}
    /// A round was not put to a shadow candidate: it was still busy with earlier ones.
    fn shadow_skipped(&self, _policy: &str) {}
}

/// Rounds waiting for a shadow candidate; beyond it, rounds are skipped (and counted) rather
/// than queued without bound behind a slow candidate.
const SHADOW_QUEUE: usize = 16;

/// The live policies of the controller, built-ins included.
pub struct PolicyRegistry {
    engine: PolicyEngine,
    live: RwLock<HashMap<String, Arc<LoadedPolicy>>>,
    status: RwLock<HashMap<String, PolicyStatus>>,
    observer: OnceLock<Arc<dyn CallObserver>>,
    failures: Mutex<BTreeMap<String, FailureTally>>,
    /// Names a Policy resource serves (rather than the built-in of that name).
    applied: RwLock<std::collections::HashSet<String>>,
    /// Shadow candidates' records.
    shadows: Mutex<ShadowTallies>,
    /// Where shadow rounds go when they are judged off the decision's thread.
    shadow_worker: OnceLock<std::sync::mpsc::SyncSender<ShadowJob>>,
    /// Serving calls under way: the shadow worker starts no round while one runs, so a
    /// candidate never takes a core from a decision whose deadline is wall-clock.
    serving_calls: std::sync::atomic::AtomicUsize,
}

impl PolicyRegistry {
    /// An empty registry; built-in policies load on first use.
    pub fn new(engine: PolicyEngine) -> Self {
        PolicyRegistry {
            engine,
            live: RwLock::default(),
            status: RwLock::default(),
            observer: OnceLock::new(),
            failures: Mutex::default(),
            applied: RwLock::default(),
            shadows: Mutex::default(),
            shadow_worker: OnceLock::new(),
            serving_calls: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Judges shadow rounds on a worker thread from now on (the controller: a decision never
    /// waits for a candidate). Without it they are judged when submitted (the simulator, whose
    /// clock does not move meanwhile).
    pub fn judge_shadows_in_background(self: &Arc<Self>) {
        let (tx, rx) = std::sync::mpsc::sync_channel::<ShadowJob>(SHADOW_QUEUE);
        if self.shadow_worker.set(tx).is_err() {
            return;
        }
        let registry = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("shadow-policies".into())
            .spawn(move || {
                // Ends when the registry (and with it the sender) is gone.
                while let Ok(job) = rx.recv() {
                    let Some(r) = registry.upgrade() else { break };
                    // Decisions first: wait (briefly, at most a deadline's worth) for serving
                    // calls under way to end.
                    let waited = Instant::now();
                    while r.serving_calls.load(std::sync::atomic::Ordering::Acquire) > 0
                        && waited.elapsed() < Duration::from_secs(30)
                    {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    r.judge_shadow(&job);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no thread for shadow policies; they are not judged");
        }
    }

    /// Puts a round the serving policy decided to its shadow candidate: now, or on the worker.
    pub fn shadow(&self, job: ShadowJob) {
        self.shadows
            .lock()
            .unwrap()
            .entry(job.candidate().to_string())
            .or_default()
            .beside
            .insert((job.role(), job.serving().to_string()));
        let Some(worker) = self.shadow_worker.get() else {
            return self.judge_shadow(&job);
        };
        let job = match worker.try_send(job) {
            Ok(()) => return,
            Err(std::sync::mpsc::TrySendError::Full(job)) => job,
            Err(std::sync::mpsc::TrySendError::Disconnected(job)) => {
                tracing::warn!(
                    policy = job.candidate(),
                    "the shadow worker is gone; round not judged"
                );
                job
            }
        };
        let candidate = job.candidate();
        if let Some(t) = self.shadows.lock().unwrap().get_mut(candidate) {
            t.skipped += 1;
        }
        if let Some(o) = self.observer.get() {
            o.shadow_skipped(candidate);
        }
    }

    /// Runs the candidate on the job's round inside its own limits and records how its answer
    /// compares. A failure is the candidate's alone: counted, reported on its status, and
    /// nothing else changes.
    pub fn judge_shadow(&self, job: &ShadowJob) {
        let candidate = job.candidate();
        let answer = match job {
            ShadowJob::Scoring { round, .. } => self
                .call(candidate, "shadow_score", |p| p.score(round))
                .map(ShadowAnswer::Scores),
            ShadowJob::Consolidation { round, .. } => self
                .call(candidate, "shadow_consolidate", |p| p.consolidate(round))
                .map(ShadowAnswer::Actions),
        };
        let answer = match answer {
            Ok(a) => a,
            Err(err) => {
                // The candidate's alone: its status says so while a version of it serves (a
                // refused or missing one keeps the reason it was refused for), and no decision's
                // failure tally counts it.
                let message = bounded(&err.to_string(), MESSAGE_BYTES);
                tracing::warn!(policy = candidate, reason = err.reason(), error = %message, "shadow policy failed");
                if self.live.read().unwrap().contains_key(candidate) {
                    let refused = self.status(candidate).and_then(|s| s.refused_digest);
                    self.set_status(candidate, err.reason(), message, refused);
                }
                if let Some(t) = self.shadows.lock().unwrap().get_mut(candidate) {
                    t.failures += 1;
                    if t.first_failure.is_empty() {
                        t.first_failure = bounded(&err.to_string(), 400);
                    }
                }
                return;
            }
        };
        let comparisons = shadow::compare(job, &answer);
        let role = job.role();
        for c in &comparisons {
            if !c.agree {
                tracing::info!(
                    policy = candidate,
                    role = role.as_str(),
                    serving = job.serving(),
                    subject = %c.subject,
                    served = %c.serving,
                    shadow = %c.shadow,
                    cost_delta_per_hour = c.cost_delta_per_hour,
                    "shadow policy disagrees"
                );
            }
            if let Some(o) = self.observer.get() {
                o.shadow(candidate, role, c);
            }
        }
        let mut shadows = self.shadows.lock().unwrap();
        let tally = shadows.entry(candidate.to_string()).or_default();
        comparisons.into_iter().for_each(|c| tally.add(c));
    }

    /// Every shadow candidate's record so far.
    pub fn shadows(&self) -> ShadowTallies {
        self.shadows.lock().unwrap().clone()
    }

    /// One candidate's record, if it shadowed anything.
    pub fn shadow_tally(&self, name: &str) -> Option<ShadowTally> {
        self.shadows.lock().unwrap().get(name).cloned()
    }

    /// Reports every call from now on to `observer` (set once).
    pub fn observe(&self, observer: Arc<dyn CallObserver>) {
        let _ = self.observer.set(observer);
    }

    /// Runs `f` on the version serving `name`, timed and reported to the observer.
    pub fn call<T>(
        &self,
        name: &str,
        call: &'static str,
        f: impl FnOnce(&LoadedPolicy) -> Result<T>,
    ) -> Result<T> {
        let started = Instant::now();
        let serving = !call.starts_with("shadow");
        if serving {
            self.serving_calls
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        let (digest, out) = match self.get(name) {
            Ok(p) => {
                let out = f(&p);
                (p.info().digest.clone(), out)
            }
            Err(e) => (String::new(), Err(e)),
        };
        if serving {
            self.serving_calls
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
        if let Some(o) = self.observer.get() {
            let failure = out.as_ref().err().map(PolicyError::reason);
            o.call(name, &digest, call, started.elapsed(), failure);
        }
        out
    }

    /// A fallback decided for `policy`.
    pub fn report_fallback(&self, policy: &str, fallback: &str) {
        *self
            .failures
            .lock()
            .unwrap()
            .entry(policy.to_string())
            .or_default()
            .fallbacks
            .entry(fallback.to_string())
            .or_default() += 1;
        if let Some(o) = self.observer.get() {
            o.fallback(policy, fallback);
        }
    }

    /// Every policy that failed a decision so far, with how and what decided instead.
    pub fn failures(&self) -> BTreeMap<String, FailureTally> {
        self.failures.lock().unwrap().clone()
    }

    /// The engine policies run on.
    pub fn engine(&self) -> &PolicyEngine {
        &self.engine
    }

    /// Loads, validates and swaps in a new version of a Policy. On error the previous version (if
    /// any) keeps serving and the status records why the new one was refused.
    pub fn apply(
        &self,
        name: &str,
        bytes: &[u8],
        config: Vec<(String, String)>,
        limits: Limits,
    ) -> Result<Arc<LoadedPolicy>> {
        match self.prepare(name, bytes, config, limits, Roles::default()) {
            Ok(policy) => {
                self.serve(policy.clone());
                Ok(policy)
            }
            Err(err) => {
                self.refuse(name, Some(super::inspect::digest(bytes)), &err);
                Err(err)
            }
        }
    }

    /// Everything a new version must pass before it may serve, without serving it: compile,
    /// version check, `init` with its configuration, the exports `needs` names and the canary
    /// rounds ([`canary::run`]) inside its own limits. Slow (a first compile takes seconds):
    /// the controller calls it off its decision loop.
    pub fn prepare(
        &self,
        name: &str,
        bytes: &[u8],
        config: Vec<(String, String)>,
        limits: Limits,
        needs: Roles,
    ) -> Result<Arc<LoadedPolicy>> {
        let policy = self.engine.load(name, bytes, config, limits)?;
        policy.validate()?;
        canary::run(&policy, needs)?;
        Ok(Arc::new(policy))
    }

    /// Serves `policy` under its name from the next round on; a round holding the old version
    /// finishes on it.
    pub fn serve(&self, policy: Arc<LoadedPolicy>) {
        let name = policy.name().to_string();
        let before = self
            .live
            .write()
            .unwrap()
            .insert(name.clone(), policy.clone());
        self.applied.write().unwrap().insert(name.clone());
        let digest = policy.info().digest.clone();
        // Another component or configuration starts a new shadow record: the old one judged
        // another policy. The same one served again (its roles changed, say) keeps its record.
        let same = before.is_some_and(|b| {
            b.info().digest == policy.info().digest && b.config() == policy.config()
        });
        if !same && let Some(t) = self.shadows.lock().unwrap().get_mut(&name) {
            *t = ShadowTally {
                beside: std::mem::take(&mut t.beside),
                ..Default::default()
            };
        }
        tracing::info!(policy = %name, digest = %digest, "policy loaded");
        self.set_status(&name, "Loaded", format!("serving {digest}"), None);
    }

    /// Records that a new version (of `digest`, when its bytes were read) was refused; the last
    /// good version, if any, keeps serving.
    pub fn refuse(&self, name: &str, digest: Option<String>, err: &PolicyError) {
        let keeps = self.live.read().unwrap().contains_key(name);
        let message = bounded(&err.to_string(), MESSAGE_BYTES);
        tracing::warn!(policy = name, reason = err.reason(), error = %message, keeps_last_good = keeps, "policy refused");
        self.set_status(name, err.reason(), message, digest);
    }

    /// Records that a live policy failed a decision (it keeps its place: the NodePool's
    /// `onFailure` decides what to do with the round).
    pub fn report_failure(&self, name: &str, err: &PolicyError) {
        let message = bounded(&err.to_string(), MESSAGE_BYTES);
        {
            let mut failures = self.failures.lock().unwrap();
            let t = failures.entry(name.to_string()).or_default();
            t.failures += 1;
            *t.by_reason.entry(err.reason()).or_default() += 1;
            if t.first.is_empty() {
                t.first = bounded(&err.to_string(), 400);
            }
        }
        tracing::warn!(policy = name, reason = err.reason(), error = %message, "policy decision failed");
        let refused = self.status(name).and_then(|s| s.refused_digest);
        self.set_status(name, err.reason(), message, refused);
    }

    /// The version serving `name`: an applied Policy, else the built-in of that name.
    pub fn get(&self, name: &str) -> Result<Arc<LoadedPolicy>> {
        if let Some(p) = self.live.read().unwrap().get(name) {
            return Ok(p.clone());
        }
        let Some(b) = builtin::find(name) else {
            return Err(PolicyError::NotFound {
                policy: name.to_string(),
                builtins: builtin::names().join(", "),
            });
        };
        let mut live = self.live.write().unwrap();
        if let Some(p) = live.get(name) {
            return Ok(p.clone());
        }
        let policy = Arc::new(
            self.engine
                .load(name, b.wasm, Vec::new(), Limits::default())?,
        );
        live.insert(name.to_string(), policy.clone());
        Ok(policy)
    }

    /// Whether a Policy resource serves `name` (not the built-in of that name).
    pub fn applied(&self, name: &str) -> bool {
        self.applied.read().unwrap().contains(name)
    }

    /// Stops serving `name`.
    pub fn remove(&self, name: &str) {
        self.live.write().unwrap().remove(name);
        self.applied.write().unwrap().remove(name);
        self.status.write().unwrap().remove(name);
        self.shadows.lock().unwrap().remove(name);
    }

    /// Forgets the shadow records of candidates no NodePool names any more (a promoted or
    /// dropped candidate stops showing a record that no longer grows).
    pub fn retain_shadows(&self, named: &std::collections::BTreeSet<String>) {
        self.shadows
            .lock()
            .unwrap()
            .retain(|n, _| named.contains(n));
    }

    /// The status to report for `name`.
    pub fn status(&self, name: &str) -> Option<PolicyStatus> {
        self.status.read().unwrap().get(name).cloned()
    }

    fn set_status(&self, name: &str, reason: &str, message: String, refused: Option<String>) {
        let serving = self.live.read().unwrap().get(name).cloned();
        let info = serving.as_ref().map(|p| p.info());
        self.status.write().unwrap().insert(
            name.to_string(),
            PolicyStatus {
                ready: serving.is_some(),
                reason: reason.to_string(),
                message,
                serving_digest: info.map(|i| i.digest.clone()),
                wit_version: info.map(|i| i.wit_version.clone()),
                exports: info.map(|i| i.exports.clone()).unwrap_or_default(),
                size: info.map(|i| i.size),
                refused_digest: refused,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::EngineConfig;

    #[test]
    fn the_same_version_served_again_keeps_its_shadow_record_and_another_starts_afresh() {
        let r = PolicyRegistry::new(PolicyEngine::new(EngineConfig::default()).unwrap());
        let load = |config: Vec<(String, String)>| {
            let wasm = builtin::find("arm-first").unwrap().wasm;
            Arc::new(
                r.engine()
                    .load("candidate", wasm, config, Limits::default())
                    .unwrap(),
            )
        };
        r.serve(load(Vec::new()));
        r.shadows
            .lock()
            .unwrap()
            .entry("candidate".into())
            .or_default()
            .failures = 3;
        // Loaded again as it was (a NodePool gave it a new role): the record goes on.
        r.serve(load(Vec::new()));
        assert_eq!(r.shadow_tally("candidate").unwrap().failures, 3);
        // Another configuration is another policy: a new record.
        r.serve(load(vec![("tolerance".into(), "0.5".into())]));
        assert_eq!(r.shadow_tally("candidate").unwrap().failures, 0);
    }
}
