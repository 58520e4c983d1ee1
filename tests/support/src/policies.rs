//! Shared helpers of the integration tests: an engine, real catalog rounds, fixture components.

use std::time::Duration;

use dovetail::capacity::claim::{Pod, Workload};
use dovetail::capacity::{CapacityType, Resources};
use dovetail::catalog;
use dovetail::cluster::DisruptionReason;
use dovetail::cluster::consolidation::{Candidate, ConsolidationRound, Move};
use dovetail::policy::ScoringRound;
use dovetail::policy::{EngineConfig, Limits, LoadedPolicy, PolicyEngine, builtin};

pub const ZONES: &[&str] = &["us-east-1a", "us-east-1b", "us-east-1c"];

pub fn engine() -> PolicyEngine {
    PolicyEngine::new(EngineConfig::default()).expect("engine")
}

/// The bytes of a fixture component from `tests/policies/`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = builtin::fixture_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The bytes of a built-in policy.
pub fn builtin_wasm(name: &str) -> &'static [u8] {
    builtin::find(name)
        .unwrap_or_else(|| panic!("no built-in {name}"))
        .wasm
}

/// The hostile fixture in one mode.
pub fn hostile(engine: &PolicyEngine, mode: &str, limits: Limits) -> LoadedPolicy {
    engine
        .load(
            &format!("hostile-{mode}"),
            &fixture("hostile"),
            vec![("mode".into(), mode.into())],
            limits,
        )
        .expect("hostile fixture loads")
}

pub fn limits(timeout_ms: u64, memory_mib: u64) -> Limits {
    Limits {
        timeout: Some(Duration::from_millis(timeout_ms)),
        memory_mib: Some(memory_mib),
    }
}

/// A round over the first `types` priced catalog entries (3 zones, spot and on-demand) with one
/// claim of `pods` pods of 250m / 512Mi, offered every option that fits.
pub fn scoring_round(types: usize, pods: usize) -> ScoringRound {
    let mut policy_catalog = catalog::policy_catalog(&catalog::embedded(), ZONES);
    policy_catalog.instance_types.truncate(types);
    let pods = vec![pod(250, 512 << 20); pods];
    ScoringRound::one_claim(
        1_790_000_000,
        &policy_catalog,
        "default",
        vec![workload("inflate")],
        pods,
    )
}

pub fn workload(name: &str) -> Workload {
    Workload {
        namespace: "default".into(),
        owner: format!("Deployment/{name}"),
        labels: vec![("app".into(), name.into())],
    }
}

pub fn pod(cpu_millis: u64, memory_bytes: u64) -> Pod {
    Pod {
        workload: 0,
        requests: Resources {
            cpu_millis,
            memory_bytes,
            ephemeral_storage_bytes: 0,
            pods: 1,
            gpus: 0,
        },
        priority: 0,
    }
}

/// Two under-used nodes, one empty node, and a move for each.
pub fn consolidation_round() -> ConsolidationRound {
    let node = |name: &str, reason| Candidate {
        name: name.into(),
        node_pool: "default".into(),
        instance_type: "m5.large".into(),
        capacity_type: CapacityType::OnDemand,
        zone: "us-east-1a".into(),
        price: 0.096,
        age_seconds: 7200,
        allocatable: Resources {
            cpu_millis: 1930,
            memory_bytes: 7 << 30,
            ephemeral_storage_bytes: 0,
            pods: 29,
            gpus: 0,
        },
        requested: Resources {
            cpu_millis: 500,
            memory_bytes: 1 << 30,
            ephemeral_storage_bytes: 0,
            pods: 2,
            gpus: 0,
        },
        pods: 2,
        reasons: vec![reason],
    };
    let mv = |nodes: Vec<u32>, reason| Move {
        nodes,
        replacement: None,
        savings_per_hour: 0.096,
        disruption_cost: 1.0,
        reason,
    };
    ConsolidationRound {
        now: 1_790_000_000,
        candidates: vec![
            node("a", DisruptionReason::Underutilized),
            node("b", DisruptionReason::Underutilized),
            node("c", DisruptionReason::Empty),
        ],
        moves: vec![
            mv(vec![0], DisruptionReason::Underutilized),
            mv(vec![1], DisruptionReason::Underutilized),
            mv(vec![2], DisruptionReason::Empty),
        ],
    }
}

pub use crate::paths::{dovetail_exe, workspace};
