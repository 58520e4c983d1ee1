//! What Dovetail's integration tests share, once: where the workspace, the examples and the
//! `dovetail` binary are; polling for a condition (never sleeping and hoping); moto on loopback
//! and the fault proxy in front of it; the controller harness over the API server double; the
//! HTTPS and OCI servers policies are fetched from; and the policy fixtures.

pub mod fault_proxy;
pub mod harness;
pub mod moto;
pub mod paths;
pub mod policies;
pub mod seed;
pub mod servers;
pub mod wait;
