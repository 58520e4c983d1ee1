//! Swapping policies live: validated before use, atomic, last good version kept.

use dovetail_test_support::policies as common;

use common::*;
use dovetail::policy::{Limits, PolicyRegistry};

#[test]
fn a_broken_policy_is_refused_and_the_last_good_one_keeps_serving() {
    let registry = PolicyRegistry::new(engine());
    let good = registry
        .apply(
            "team-a",
            builtin_wasm("cheapest"),
            vec![],
            Limits::default(),
        )
        .unwrap();

    // A core module, a future WIT version, a rejected config: each refused with its reason.
    for (bytes, config, reason) in [
        (b"\0asm\x01\0\0\0".to_vec(), vec![], "NotAComponent"),
        (fixture("wit-mismatch"), vec![], "IncompatibleWitVersion"),
        (
            fixture("hostile"),
            vec![("mode".to_string(), "reject".to_string())],
            "ConfigRejected",
        ),
        (
            fixture("hostile"),
            vec![("mode".to_string(), "spin-init".to_string())],
            "DeadlineExceeded",
        ),
    ] {
        // A short deadline only where the policy spins: a loaded machine (CI runs the suite on
        // two cores) must not turn a rejected config into a timeout.
        let deadline = if reason == "DeadlineExceeded" {
            50
        } else {
            10_000
        };
        let err = registry
            .apply("team-a", &bytes, config, limits(deadline, 64))
            .unwrap_err();
        assert_eq!(err.reason(), reason);
        let status = registry.status("team-a").unwrap();
        assert_eq!(status.reason, reason);
        assert!(status.ready, "last good version still serving");
        assert_eq!(
            status.serving_digest.as_deref(),
            Some(good.info().digest.as_str())
        );
        let serving = registry.get("team-a").unwrap();
        assert_eq!(serving.info().digest, good.info().digest);
        assert!(serving.score(&scoring_round(30, 2)).is_ok());
    }
}

#[test]
fn a_swap_takes_effect_for_the_next_round_while_held_rounds_finish_on_the_old_one() {
    let registry = PolicyRegistry::new(engine());
    registry
        .apply("p", builtin_wasm("cheapest"), vec![], Limits::default())
        .unwrap();
    let in_flight = registry.get("p").unwrap();
    registry
        .apply(
            "p",
            &fixture("hostile"),
            vec![("mode".into(), "sly-nan".into())],
            Limits::default(),
        )
        .expect("it passes the canary rounds");
    let round = scoring_round(30, 2);
    assert!(
        in_flight.score(&round).is_ok(),
        "the round holding the old version finishes on it"
    );
    assert!(
        registry.get("p").unwrap().score(&round).is_err(),
        "the next round uses the new version"
    );
    assert_ne!(
        in_flight.info().digest,
        registry.get("p").unwrap().info().digest
    );
}

#[test]
fn built_ins_are_served_by_name_without_a_policy_resource() {
    let registry = PolicyRegistry::new(engine());
    let cheapest = registry.get("cheapest").unwrap();
    assert!(cheapest.info().scoring);
    let err = registry.get("no-such-policy").unwrap_err().to_string();
    assert!(
        err.contains("built-ins: ") && err.contains("cheapest"),
        "{err}"
    );
    assert!(registry.status("no-such-policy").is_none());
}

#[test]
fn a_version_that_fails_its_canary_round_is_refused_and_the_last_good_serves() {
    let registry = PolicyRegistry::new(engine());
    let good = registry
        .apply("p", builtin_wasm("cheapest"), vec![], Limits::default())
        .unwrap();
    for (mode, reason) in [
        ("nan", "ContractViolation"),
        ("error", "DecisionFailed"),
        ("spin", "DeadlineExceeded"),
    ] {
        // As above: only the spinning version is up against a short deadline.
        let deadline = if mode == "spin" { 100 } else { 10_000 };
        let err = registry
            .apply(
                "p",
                &fixture("hostile"),
                vec![("mode".into(), mode.into())],
                limits(deadline, 64),
            )
            .unwrap_err();
        assert_eq!(err.reason(), reason, "{mode}: {err}");
        assert!(err.to_string().starts_with("canary scoring ("), "{err}");
        assert_eq!(registry.get("p").unwrap().info().digest, good.info().digest);
        let status = registry.status("p").unwrap();
        assert!(status.ready, "the last good version serves");
        assert_eq!(
            status.serving_digest.as_deref(),
            Some(good.info().digest.as_str())
        );
    }
}

#[test]
fn a_failed_decision_is_reported_while_the_policy_keeps_its_place() {
    let registry = PolicyRegistry::new(engine());
    let policy = registry
        .apply(
            "p",
            &fixture("hostile"),
            vec![("mode".into(), "sly-nan".into())],
            Limits::default(),
        )
        .unwrap();
    assert_eq!(registry.status("p").unwrap().reason, "Loaded");
    let err = policy.score(&scoring_round(20, 1)).unwrap_err();
    registry.report_failure("p", &err);
    let status = registry.status("p").unwrap();
    assert_eq!(status.reason, "ContractViolation");
    assert!(
        status.ready && status.message.contains("not a finite number"),
        "{status:?}"
    );
    assert_eq!(
        registry.get("p").unwrap().info().digest,
        policy.info().digest
    );
}

#[test]
fn a_forty_megabyte_init_error_reaches_the_status_bounded_and_without_control_characters() {
    let registry = PolicyRegistry::new(engine());
    let err = registry
        .apply(
            "hostile",
            &fixture("hostile"),
            vec![("mode".to_string(), "forge-init".to_string())],
            // Room for the 40 MB string in the guest.
            limits(5_000, 256),
        )
        .unwrap_err();
    assert_eq!(err.reason(), "ConfigRejected");
    let status = registry.status("hostile").expect("a status");
    assert!(!status.ready);
    assert!(
        status.message.len() <= 4096,
        "status message of {} bytes",
        status.message.len()
    );
    assert!(
        !status.message.chars().any(|c| c.is_control()),
        "no raw newline, CR or ESC: {:?}",
        &status.message[..200.min(status.message.len())]
    );
    assert!(status.message.contains("forged line"), "{}", status.message);
    assert_eq!(
        status.refused_digest,
        Some(dovetail::policy::inspect::digest(&fixture("hostile")))
    );
}

#[test]
fn a_component_that_lacks_the_interface_a_node_pool_needs_is_refused_with_which() {
    use dovetail::policy::canary::Roles;
    let registry = PolicyRegistry::new(engine());
    let err = registry
        .prepare(
            "consolidator-only",
            builtin_wasm("balanced"),
            vec![],
            Limits::default(),
            Roles {
                scoring: true,
                consolidation: true,
            },
        )
        .unwrap_err();
    assert_eq!(err.reason(), "MissingExport");
    assert!(
        err.to_string()
            .contains("dovetail:policy/scoring (a NodePool names it for scoring)"),
        "{err}"
    );
    // Named only for what it exports, it is accepted.
    registry
        .prepare(
            "consolidator-only",
            builtin_wasm("balanced"),
            vec![],
            Limits::default(),
            Roles {
                scoring: false,
                consolidation: true,
            },
        )
        .expect("a consolidator serves consolidation");
}

/// A Policy resource named like a built-in is told apart from the built-in itself: the scoring
/// fallback runs such a Policy (with its configuration) and the host's own `cheapest` otherwise.
#[test]
fn a_policy_named_like_a_builtin_is_known_as_applied_until_removed() {
    let registry = PolicyRegistry::new(engine());
    registry.get("cheapest").unwrap();
    assert!(
        !registry.applied("cheapest"),
        "the built-in is not a Policy"
    );
    registry
        .apply(
            "cheapest",
            builtin_wasm("cheapest"),
            vec![("spot-first".into(), "false".into())],
            Limits::default(),
        )
        .unwrap();
    assert!(registry.applied("cheapest"));
    registry.remove("cheapest");
    assert!(!registry.applied("cheapest"));
}
