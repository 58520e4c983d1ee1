//! `dovetail bench shadow`: what a shadow candidate costs the serving decision.
//!
//! Each round is what provisioning does for one NodePool: the serving policy (`cheapest`) scores
//! the round through the registry and every claim is ranked; with a shadow, the round and the
//! serving scores are then handed to the candidate (`arm-first`) on the registry's worker
//! thread, as the controller does. The serving latency is timed with and without the shadow, in
//! alternation so both see the same machine; the worker's own pace is reported beside it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Summary, bench_round};
use crate::policy::ranking::rank;
use crate::policy::shadow::ShadowJob;
use crate::policy::{EngineConfig, PolicyEngine, PolicyError, PolicyRegistry, ScoringRound};

/// The figures of one `bench shadow` run.
#[derive(Debug, Clone)]
pub struct ShadowFigures {
    pub claims: usize,
    pub rounds: usize,
    /// The serving decision (score and rank) without a shadow.
    pub without: Summary,
    /// The same with the shadow hand-off (the round's copy and the queue) included.
    pub with: Summary,
    /// The hand-off alone.
    pub handoff: Summary,
    /// Rounds the candidate judged, and skipped because it was busy.
    pub judged: u64,
    pub skipped: u64,
    /// How long the candidate took to judge every round handed to it, after the last hand-off.
    pub drain: Duration,
}

/// A round of `claims` claims of 10 pods over `types` instance types.
fn round(types: usize, claims: usize) -> ScoringRound {
    let mut r = bench_round(types, 10);
    let claim = r.claims[0].clone();
    r.claims = vec![claim; claims];
    r
}

/// Runs `rounds` serving decisions of `claims` claims each, alternating without and with a
/// shadow candidate.
pub fn run(types: usize, claims: usize, rounds: usize) -> Result<ShadowFigures, PolicyError> {
    let registry = Arc::new(PolicyRegistry::new(PolicyEngine::new(
        EngineConfig::default(),
    )?));
    registry.judge_shadows_in_background();
    let round = round(types, claims);
    let names: Vec<String> = (0..claims).map(|i| format!("default-{i:05}")).collect();
    // Compile both once, outside the timings.
    registry.get("cheapest")?;
    registry.get("arm-first")?;
    let serve = |round: &ScoringRound| -> Result<Vec<_>, PolicyError> {
        let scores = registry.call("cheapest", "score", |p| p.score(round))?;
        for (k, s) in scores.iter().enumerate() {
            std::hint::black_box(rank(round, k, s));
        }
        Ok(scores)
    };
    let (mut without, mut with, mut handoff) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..rounds * 2 {
        let started = Instant::now();
        let scores = serve(&round)?;
        if i % 2 == 0 {
            without.push(started.elapsed());
            continue;
        }
        let handing = Instant::now();
        registry.shadow(ShadowJob::Scoring {
            candidate: "arm-first".into(),
            serving: "cheapest".into(),
            round: Arc::new(round.clone()),
            serving_scores: scores,
            claims: names.clone(),
        });
        handoff.push(handing.elapsed());
        with.push(started.elapsed());
    }
    let drained = Instant::now();
    let handed = rounds as u64;
    loop {
        let t = registry.shadow_tally("arm-first").unwrap_or_default();
        let judged = t.compared / claims.max(1) as u64 + t.failures;
        if judged + t.skipped >= handed {
            return Ok(ShadowFigures {
                claims,
                rounds,
                without: Summary::of(without),
                with: Summary::of(with),
                handoff: Summary::of(handoff),
                judged,
                skipped: t.skipped,
                drain: drained.elapsed(),
            });
        }
        if drained.elapsed() > Duration::from_secs(600) {
            return Err(PolicyError::Engine(format!(
                "the shadow worker judged {judged} of {handed} rounds in 10 minutes"
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
