//! Components built against every released `dovetail:policy` version keep loading and deciding:
//! the frozen components of `tests/fixtures/wit-<version>/` (never rebuilt) through the same
//! checks the controller runs before a component serves, then a real decision.

use std::path::Path;

use dovetail::policy::canary::{self, Roles};
use dovetail::policy::{EngineConfig, Limits, PolicyEngine, PolicyRegistry};

fn frozen(version: &str, name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(format!("wit-{version}"))
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn registry() -> PolicyRegistry {
    PolicyRegistry::new(PolicyEngine::new(EngineConfig::default()).unwrap())
}

#[test]
fn a_scorer_built_against_0_1_0_loads_passes_the_canary_and_ranks_the_cheapest_first() {
    let registry = registry();
    let policy = registry
        .prepare(
            "frozen-cheapest",
            &frozen("0.1.0", "cheapest"),
            Vec::new(),
            Limits::default(),
            Roles {
                scoring: true,
                consolidation: false,
            },
        )
        .expect("a 0.1.0 scorer is accepted");
    assert_eq!(policy.info().wit_version, "0.1.0");
    let round = canary::scoring_round();
    let scores = policy.score(&round).unwrap();
    let claim = &round.claims[0];
    let best = (0..claim.options.len())
        .max_by(|&a, &b| scores[0].scores[a].total_cmp(&scores[0].scores[b]))
        .unwrap();
    let price = |i: usize| round.resolve(claim.options[i]).1.price;
    let cheapest = (0..claim.options.len())
        .map(price)
        .fold(f64::INFINITY, f64::min);
    assert_eq!(price(best), cheapest, "it still ranks by price");
}

#[test]
fn a_consolidator_built_against_0_1_0_loads_and_takes_the_empty_node_first() {
    let registry = registry();
    let policy = registry
        .prepare(
            "frozen-balanced",
            &frozen("0.1.0", "balanced"),
            Vec::new(),
            Limits::default(),
            Roles {
                scoring: false,
                consolidation: true,
            },
        )
        .expect("a 0.1.0 consolidator is accepted");
    let actions = policy.consolidate(&canary::consolidation_round()).unwrap();
    assert!(
        matches!(
            actions.first(),
            Some(dovetail::cluster::consolidation::Action::Execute(0))
        ),
        "the empty node's move first: {actions:?}"
    );
}
