//! Dovetail: a Kubernetes node autoscaler for AWS whose scoring and consolidation decisions are
//! sandboxed WebAssembly policies.

pub mod api;
pub mod bench;
pub mod bounded;
pub mod bridge;
pub mod capacity;
pub mod catalog;
pub mod cloud;
pub mod cluster;
pub mod controller;
pub mod disruption;
pub mod doctor;
pub mod fleet;
pub mod interruption;
pub mod journal;
pub mod kubernetes;
pub mod lifecycle;
pub mod metrics;
pub mod policy;
pub mod provisioning;
pub mod quantity;
pub mod scheduling;
pub mod sim;
pub mod snapshot;
pub mod termination;
pub mod top;
