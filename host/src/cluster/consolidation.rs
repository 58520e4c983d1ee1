//! What a consolidation round asks a policy and what it answers, in the host's types: the
//! candidates the host found, the moves it checked to be feasible, and the policy's actions.
//! The policy engine converts them to and from the WIT records at its boundary.

use super::DisruptionReason;
use crate::capacity::{CapacityType, Resources};

/// A node the host may disrupt, with the facts it computed.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Node name.
    pub name: String,
    pub node_pool: String,
    pub instance_type: String,
    pub capacity_type: CapacityType,
    pub zone: String,
    /// USD per hour.
    pub price: f64,
    /// Seconds since the node was launched.
    pub age_seconds: u64,
    pub allocatable: Resources,
    /// Sum of requests of the pods on the node (daemonsets included).
    pub requested: Resources,
    /// Pods that would be evicted (daemonset and mirror pods excluded).
    pub pods: u32,
    /// Every reason that makes the node a candidate.
    pub reasons: Vec<DisruptionReason>,
}

/// A launch that replaces one or more candidates.
#[derive(Debug, Clone, PartialEq)]
pub struct Replacement {
    pub instance_type: String,
    pub capacity_type: CapacityType,
    pub zone: String,
    /// USD per hour.
    pub price: f64,
}

/// A disruption the host checked to be feasible now: the pods of `nodes` fit on the rest of the
/// cluster, plus `replacement` when there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    /// Indices into [`ConsolidationRound::candidates`].
    pub nodes: Vec<u32>,
    pub replacement: Option<Replacement>,
    /// Price of the nodes minus price of the replacement, USD per hour.
    pub savings_per_hour: f64,
    /// The host's estimate of the harm of evicting the pods: higher hurts more.
    pub disruption_cost: f64,
    /// The main reason for the move.
    pub reason: DisruptionReason,
}

/// Everything one consolidation round asks.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsolidationRound {
    /// The decision's time in seconds since the Unix epoch.
    pub now: i64,
    pub candidates: Vec<Candidate>,
    pub moves: Vec<Move>,
}

/// A move the policy chooses not to take, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    /// Index into [`ConsolidationRound::moves`].
    pub move_index: u32,
    pub reason: String,
}

/// What the policy wants done with one move.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Carry out the move (index into [`ConsolidationRound::moves`]); the host still checks.
    Execute(u32),
    /// Keep the move's nodes, with a reason for the record.
    Keep(Kept),
}
