//! The scheduling simulation: given pending pods, NodePools and the instance types a round may
//! launch, which new NodeClaims are needed — each with the *set* of instance types and offerings
//! that hold its pods — and which pods no NodePool can take, with a reason.
//!
//! Pure over its inputs: no clock, no I/O. Provisioning feeds it a snapshot and hands the claims'
//! options to the NodePool's scoring policy.

pub mod cost;
pub mod from_kube;
pub mod instance_types;
pub mod kubelet;
pub mod model;
pub mod requirements;
pub mod solver;
pub mod well_known;

pub use instance_types::InstanceTypes;
pub use model::ExistingNode;
pub use model::{NodePoolSpec, PendingPod};
pub use requirements::{Operator, Requirement, Requirements};
pub use solver::{Admitted, Plan, PlannedClaim, solve, solve_excluding, solve_on};
