//! Policies as real compiled components in real wasmtime: hostile ones are contained and the
//! engine stays usable after each.

use dovetail_test_support::policies as common;

use std::time::{Duration, Instant};

use common::*;
use dovetail::cluster::consolidation::Action;
use dovetail::policy::{Limits, PolicyError};

/// After any failure, a good policy on the same engine still answers.
fn assert_engine_still_serves(engine: &dovetail::policy::PolicyEngine) {
    let good = hostile(engine, "good", Limits::default());
    let round = scoring_round(50, 4);
    let verdicts = good.score(&round).expect("a good policy still scores");
    assert_eq!(verdicts[0].scores.len(), round.claims[0].options.len());
}

#[test]
fn infinite_loop_is_stopped_within_its_deadline() {
    let engine = engine();
    let p = hostile(&engine, "spin", limits(50, 64));
    let started = Instant::now();
    let err = p.score(&scoring_round(50, 4)).unwrap_err();
    let took = started.elapsed();
    // The round's allowance: the 50 ms base and the 2 ms share of its one claim.
    assert!(
        matches!(err, PolicyError::Timeout { timeout_ms: 52, .. }),
        "{err}"
    );
    assert!(
        took >= Duration::from_millis(50),
        "stopped before its deadline: {took:?}"
    );
    assert!(
        took < Duration::from_millis(1000),
        "not stopped near its deadline: {took:?}"
    );
    assert_eq!(err.reason(), "DeadlineExceeded");
    assert!(
        err.to_string().contains("hostile-spin"),
        "names the policy: {err}"
    );
    assert_engine_still_serves(&engine);
}

#[test]
fn infinite_loop_in_init_is_stopped_too() {
    let engine = engine();
    let p = hostile(&engine, "spin-init", limits(40, 64));
    assert!(matches!(
        p.validate().unwrap_err(),
        PolicyError::Timeout { .. }
    ));
    let p = hostile(&engine, "spin", limits(40, 64));
    let err = p.consolidate(&consolidation_round()).unwrap_err();
    assert!(matches!(err, PolicyError::Timeout { .. }), "{err}");
    assert_engine_still_serves(&engine);
}

#[test]
fn memory_bomb_is_refused_by_the_cap() {
    let engine = engine();
    let p = hostile(&engine, "bomb", limits(5_000, 32));
    let err = p.score(&scoring_round(50, 4)).unwrap_err();
    assert!(
        matches!(err, PolicyError::MemoryCap { cap_mib: 32, .. }),
        "{err}"
    );
    assert_eq!(err.reason(), "MemoryCapExceeded");
    assert_engine_still_serves(&engine);
}

#[test]
fn a_trap_is_an_error_that_carries_the_panic_message() {
    let engine = engine();
    let p = hostile(&engine, "trap", Limits::default());
    let err = p.score(&scoring_round(50, 4)).unwrap_err();
    let PolicyError::Trap { detail, .. } = &err else {
        panic!("expected a trap, got {err}")
    };
    assert!(detail.contains("panicked on purpose"), "{detail}");
    assert_engine_still_serves(&engine);
}

#[test]
fn what_a_policy_writes_is_bounded_and_cannot_forge_log_lines() {
    let engine = engine();
    let round = scoring_round(5, 4);
    let err = hostile(&engine, "forge", limits(5_000, 256))
        .score(&round)
        .unwrap_err()
        .to_string();
    assert!(
        err.len() < 2048,
        "a 40 MB error is cut: {} bytes",
        err.len()
    );
    assert!(err.ends_with('…'), "the cut is marked");
    assert!(
        !err.contains('\n') && !err.contains('\r') && !err.contains('\x1b'),
        "no control characters pass: {err:?}"
    );
    assert!(
        err.contains("level=ERROR msg="),
        "the text itself is kept: {err:?}"
    );
}

#[test]
fn nan_and_wrong_length_scores_break_the_contract() {
    let engine = engine();
    let round = scoring_round(50, 4);
    for mode in ["nan", "short", "bad-veto"] {
        let err = hostile(&engine, mode, Limits::default())
            .score(&round)
            .unwrap_err();
        assert!(matches!(err, PolicyError::Contract { .. }), "{mode}: {err}");
    }
    let nan = hostile(&engine, "nan", Limits::default())
        .score(&round)
        .unwrap_err()
        .to_string();
    assert!(nan.contains("not a finite number"), "{nan}");
    let short = hostile(&engine, "short", Limits::default())
        .score(&round)
        .unwrap_err()
        .to_string();
    let n = round.claims[0].options.len();
    assert!(
        short.contains(&format!("{} scores for {n} options", n - 1)),
        "{short}"
    );
    let veto = hostile(&engine, "bad-veto", Limits::default())
        .score(&round)
        .unwrap_err()
        .to_string();
    assert!(
        veto.contains(&format!("veto of option #{}", n + 3)),
        "{veto}"
    );
    assert_engine_still_serves(&engine);
}

#[test]
fn bad_consolidation_actions_break_the_contract() {
    let engine = engine();
    let round = consolidation_round();
    let err = hostile(&engine, "bad-index", Limits::default())
        .consolidate(&round)
        .unwrap_err();
    assert!(err.to_string().contains("move #10"), "{err}");
    let err = hostile(&engine, "twice", Limits::default())
        .consolidate(&round)
        .unwrap_err();
    assert!(err.to_string().contains("mentioned twice"), "{err}");
    let ok = hostile(&engine, "good", Limits::default())
        .consolidate(&round)
        .unwrap();
    assert_eq!(
        ok,
        vec![Action::Execute(0), Action::Execute(1), Action::Execute(2)]
    );
}

#[test]
fn policy_errors_and_rejected_config_are_reported() {
    let engine = engine();
    let err = hostile(&engine, "error", Limits::default())
        .score(&scoring_round(10, 1))
        .unwrap_err();
    assert!(
        matches!(&err, PolicyError::Failed { message, .. } if message.contains("no ranking today")),
        "{err}"
    );
    let err = hostile(&engine, "reject", Limits::default())
        .validate()
        .unwrap_err();
    assert!(
        matches!(&err, PolicyError::ConfigRejected { message, .. } if message.contains("refused on purpose")),
        "{err}"
    );
}

#[test]
fn the_sandbox_grants_no_capability_and_only_the_rounds_clock() {
    let engine = engine();
    let round = scoring_round(20, 1);
    let verdicts = hostile(&engine, "probe", Limits::default())
        .score(&round)
        .unwrap();
    let report = &verdicts[0].vetoes[0].reason;
    assert_eq!(
        report,
        &format!("now={} env=0 fs=denied net=denied", round.now)
    );
}

#[test]
fn incompatible_wit_version_is_rejected_at_load() {
    let err = engine()
        .load(
            "future",
            &fixture("wit-mismatch"),
            vec![],
            Limits::default(),
        )
        .unwrap_err();
    assert!(
        matches!(&err, PolicyError::IncompatibleVersion { found, .. } if found == "9.0.0"),
        "{err}"
    );
    assert!(
        err.to_string().contains("supports dovetail:policy@0.1.x"),
        "{err}"
    );
}

#[test]
fn something_that_is_not_a_component_is_rejected_at_load() {
    let engine = engine();
    // A real core module: the smallest valid one.
    let core = b"\0asm\x01\0\0\0";
    let err = engine
        .load("core", core, vec![], Limits::default())
        .unwrap_err();
    assert_eq!(err.reason(), "NotAComponent");
    assert!(err.to_string().contains("wasm32-wasip2"), "{err}");
    let err = engine
        .load(
            "text",
            b"apiVersion: v1\nkind: ConfigMap\n",
            vec![],
            Limits::default(),
        )
        .unwrap_err();
    assert_eq!(err.reason(), "NotAComponent");
    // A component header with garbage behind it.
    let err = engine
        .load(
            "torn",
            b"\0asm\x0d\0\x01\0\xff\xff\xff",
            vec![],
            Limits::default(),
        )
        .unwrap_err();
    assert_eq!(err.reason(), "CompileFailed", "{err}");
    assert_engine_still_serves(&engine);
}

#[test]
fn components_are_compiled_once_per_digest_and_freed_when_unused() {
    let engine = engine();
    let bytes = builtin_wasm("cheapest");
    let a = engine.load("a", bytes, vec![], Limits::default()).unwrap();
    let b = engine
        .load(
            "b",
            bytes,
            vec![("spot-first".into(), "false".into())],
            Limits::default(),
        )
        .unwrap();
    assert_eq!(a.info().digest, b.info().digest);
    assert_eq!(
        engine.compiled_components(),
        1,
        "same bytes, one compilation"
    );
    let c = engine
        .load("c", &fixture("hostile"), vec![], Limits::default())
        .unwrap();
    assert_eq!(engine.compiled_components(), 2);
    drop((a, b));
    assert_eq!(engine.compiled_components(), 1, "unused component freed");
    assert!(c.info().scoring && c.info().consolidation);
    let a = engine.load("a", bytes, vec![], Limits::default()).unwrap();
    assert!(a.info().scoring && !a.info().consolidation);
    assert_eq!(a.info().wit_version, "0.1.0");
}
