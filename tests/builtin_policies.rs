//! The built-in policies as the controller runs them: real components on the real catalog.

use dovetail_test_support::policies as common;

use common::*;
use dovetail::catalog;
use dovetail::cluster::consolidation::Action;
use dovetail::policy::ranking::rank;
use dovetail::policy::types::{Arch, CapacityType};
use dovetail::policy::{Limits, PolicyError, ScoringRound, builtin};

fn top(
    engine: &dovetail::policy::PolicyEngine,
    name: &str,
    config: &[(&str, &str)],
    round: &ScoringRound,
) -> (String, Arch, CapacityType, f64) {
    let config = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let p = engine
        .load(name, builtin_wasm(name), config, Limits::default())
        .unwrap();
    let scores = p.score(round).unwrap();
    let best = rank(round, 0, &scores[0]).ranked[0].option;
    let (t, o, _) = round.resolve(best);
    (t.name.clone(), t.arch, o.capacity_type, o.price)
}

/// 10 pods × 2 CPU / 2 GiB on the full catalog.
fn two_cpu_round() -> ScoringRound {
    let cat = catalog::policy_catalog(&catalog::embedded(), ZONES);
    let pods = vec![pod(2000, 2 << 30); 10];
    ScoringRound::one_claim(1_790_000_000, &cat, "default", vec![workload("big")], pods)
}

#[test]
fn every_builtin_loads_and_exports_what_it_claims() {
    let engine = engine();
    for b in builtin::all() {
        let p = engine
            .load(b.name, b.wasm, vec![], Limits::default())
            .unwrap();
        let info = p.info();
        assert_eq!(info.wit_version, "0.1.0", "{}", b.name);
        assert_eq!(info.scoring, b.summary.starts_with("Scorer"), "{}", b.name);
        assert_eq!(
            info.consolidation,
            b.summary.starts_with("Consolidator"),
            "{}",
            b.name
        );
        if b.name != "quiet-hours" {
            p.validate().unwrap_or_else(|e| panic!("{}: {e}", b.name));
        }
    }
}

#[test]
fn cheapest_picks_the_lowest_spot_price_that_fits() {
    let round = two_cpu_round();
    let min_spot = round.claims[0]
        .options
        .iter()
        .map(|&o| round.resolve(o).1)
        .filter(|o| o.capacity_type == CapacityType::Spot)
        .map(|o| o.price)
        .fold(f64::INFINITY, f64::min);
    let (_, _, capacity, price) = top(&engine(), "cheapest", &[], &round);
    assert_eq!((capacity, price), (CapacityType::Spot, min_spot));
    let (_, _, capacity, _) = top(&engine(), "cheapest", &[("spot-first", "false")], &round);
    assert_eq!(
        capacity,
        CapacityType::Spot,
        "spot is also the cheapest outright"
    );
}

#[test]
fn arm_first_changes_the_architecture_when_arm_is_close_enough() {
    let engine = engine();
    let round = two_cpu_round();
    let (amd_name, amd_arch, _, amd_price) = top(&engine, "cheapest", &[], &round);
    assert_eq!(
        amd_arch,
        Arch::Amd64,
        "{amd_name}: on this catalog the cheapest node is amd64"
    );
    let (arm_name, arm_arch, _, arm_price) =
        top(&engine, "arm-first", &[("tolerance", "0.1")], &round);
    assert_eq!(arm_arch, Arch::Arm64, "{arm_name}");
    assert!(arm_price <= amd_price * 1.1 && arm_price > amd_price);
    let (_, strict_arch, _, _) = top(&engine, "arm-first", &[], &round);
    assert_eq!(
        strict_arch,
        Arch::Amd64,
        "no tolerance: arm64 costs more here, so amd64"
    );
}

#[test]
fn dense_and_price_capacity_rank_real_catalogs() {
    let engine = engine();
    let round = two_cpu_round();
    let (name, ..) = top(&engine, "dense", &[], &round);
    let t = round
        .catalog
        .instance_types
        .iter()
        .find(|t| t.name == name)
        .unwrap();
    let waste = |a: &dovetail::policy::types::Resources| {
        let r = &round.claims[0].requests;
        (1.0 - r.cpu_millis as f64 / a.cpu_millis as f64 + 1.0
            - r.memory_bytes as f64 / a.memory_bytes as f64)
            / 2.0
    };
    let best = round.claims[0]
        .options
        .iter()
        .map(|&o| waste(&round.resolve(o).0.allocatable))
        .fold(f64::INFINITY, f64::min);
    assert!(
        waste(&t.allocatable) < best + 0.01,
        "dense picked {name}, within 1% of the least waste"
    );

    let (_, _, capacity, _) = top(
        &engine,
        "price-capacity",
        &[("max-interruption-rate", "0")],
        &round,
    );
    assert_eq!(
        capacity,
        CapacityType::OnDemand,
        "every spot offering vetoed"
    );
}

#[test]
fn quiet_hours_runs_its_time_zone_database_inside_the_sandbox() {
    let engine = engine();
    let config = vec![
        ("timezone".to_string(), "Europe/Berlin".to_string()),
        ("windows".to_string(), "Mon-Fri 08:00-18:00".to_string()),
    ];
    let p = engine
        .load(
            "quiet",
            builtin_wasm("quiet-hours"),
            config,
            Limits::default(),
        )
        .unwrap();
    let mut round = consolidation_round();
    round.now = 1_795_392_000 + 9 * 3600; // Monday 2026-11-23 09:00 UTC = 10:00 in Berlin
    let inside = p.consolidate(&round).unwrap();
    assert!(
        inside
            .iter()
            .all(|a| matches!(a, Action::Keep(k) if k.reason.contains("Europe/Berlin"))),
        "{inside:?}"
    );
    round.now = 1_795_392_000 + 20 * 3600; // 21:00 in Berlin
    let outside = p.consolidate(&round).unwrap();
    assert_eq!(
        outside.first(),
        Some(&Action::Execute(2)),
        "the empty node first: {outside:?}"
    );

    let bad = engine
        .load(
            "quiet",
            builtin_wasm("quiet-hours"),
            vec![
                ("timezone".into(), "Mars/Olympus".into()),
                ("windows".into(), "Mon 09:00-10:00".into()),
            ],
            Limits::default(),
        )
        .unwrap();
    let err = bad.validate().unwrap_err();
    assert!(
        matches!(&err, PolicyError::ConfigRejected { message, .. } if message.contains("Mars/Olympus")),
        "{err}"
    );
}

#[test]
fn balanced_and_empty_only_differ_on_underused_nodes() {
    let engine = engine();
    let round = consolidation_round();
    let balanced = engine
        .load("b", builtin_wasm("balanced"), vec![], Limits::default())
        .unwrap();
    let empty_only = engine
        .load("e", builtin_wasm("empty-only"), vec![], Limits::default())
        .unwrap();
    let executed = |actions: Vec<Action>| -> Vec<u32> {
        actions
            .into_iter()
            .filter_map(|a| {
                if let Action::Execute(i) = a {
                    Some(i)
                } else {
                    None
                }
            })
            .collect()
    };
    assert_eq!(
        executed(balanced.consolidate(&round).unwrap()),
        vec![2, 0, 1]
    );
    assert_eq!(executed(empty_only.consolidate(&round).unwrap()), vec![2]);
}

#[test]
fn every_built_in_loads_and_passes_the_checks_before_a_swap_as_bench_load_measures() {
    let figures = dovetail::bench::load().expect("every built-in passes, with its configuration");
    let names: Vec<&str> = figures.iter().map(|f| f.policy).collect();
    assert_eq!(names, dovetail::policy::builtin::names());
}

/// The built-in `cheapest` with its defaults, on `engine`.
fn cheapest_on(engine: &dovetail::policy::PolicyEngine) -> dovetail::policy::LoadedPolicy {
    engine
        .load(
            "cheapest",
            builtin_wasm("cheapest"),
            Vec::new(),
            Limits::default(),
        )
        .unwrap()
}

/// The native fallback is the built-in `cheapest` with its defaults: the same scores, bit for
/// bit, on every canary scoring round (claims of 1 pod to the largest, GPU, spot only, zero
/// prices, a batch).
#[test]
fn the_native_fallback_scores_exactly_as_the_cheapest_component() {
    let component = cheapest_on(&engine());
    for (shape, round) in dovetail::policy::canary::scoring_rounds() {
        let wasm = component.score(round).unwrap();
        let native = dovetail::policy::native::cheapest(round);
        assert_eq!(wasm, native, "{shape}");
    }
}

/// A scoring round of 10,000 claims (40,000 pods on 400 types): its deadline grows with its
/// claims, so the component scores it within its own limits (the 250 ms base alone failed it).
#[test]
fn a_round_of_ten_thousand_claims_is_scored_within_its_deadline() {
    let mut cat = catalog::policy_catalog(&catalog::embedded(), &ZONES[..2]);
    cat.instance_types.truncate(400);
    let claims: Vec<_> = (0..10_000)
        .map(|i| {
            let cpu = 250 * (1 + (i % 8) as u64);
            catalog::claim_for(
                &cat,
                "default",
                vec![workload(&format!("app-{}", i % 50))],
                vec![pod(cpu, cpu << 21); 4],
            )
        })
        .collect();
    let round = ScoringRound::new(1_790_000_000, &cat, claims);
    let p = cheapest_on(&engine());
    let started = std::time::Instant::now();
    let scores = p.score(&round).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("10,000 claims scored in {:?}", started.elapsed());
    assert_eq!(scores.len(), 10_000);
    // And the allowance is what a timeout reports: with no share per claim the base alone is
    // the deadline, which a round this big overruns.
    let tight = cheapest_on(
        &dovetail::policy::PolicyEngine::new(dovetail::policy::EngineConfig {
            per_item: std::time::Duration::ZERO,
            ..Default::default()
        })
        .unwrap(),
    );
    match tight.score(&round) {
        Err(PolicyError::Timeout { timeout_ms, .. }) => assert_eq!(timeout_ms, 250),
        other => panic!("expected the base deadline to be overrun: {other:?}"),
    }
}
