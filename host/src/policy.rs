//! Policies: sandboxed WebAssembly components that rank launch options and choose consolidation
//! moves.
//!
//! - [`engine`]: one wasmtime `Engine`, components compiled once per digest, a fresh `Store` per
//!   decision round, deadline and memory cap, output contract checks.
//! - [`registry`]: Policy name → live component, swapped atomically, last good version kept.
//! - [`builtin`]: the policies shipped inside the controller.
//! - [`inspect`]: what a component is and which WIT version it targets.
//! - [`crate::wit`] (re-exported here as `bindings`, `types`, `round`): the interface itself.
//! - [`ranking`]: scores → launch order.
//! - [`canary`]: the rounds a component must pass before it serves.
//! - [`scaffold`]: `dovetail policy new`'s crate.
//! - [`source`]: fetching components (HTTPS, OCI) and publishing them.
//! - [`shadow`]: candidate policies judged on the serving policy's rounds, never acted on.

pub mod builtin;
pub mod canary;
mod contract;
pub mod engine;
pub mod error;
pub mod inspect;
pub mod native;
pub mod ranking;
pub mod registry;
mod sandbox;
pub mod scaffold;
pub mod shadow;
pub mod source;

pub use crate::wit::{bindings, round, types};
pub use engine::{CallStats, EngineConfig, Limits, LoadedPolicy, PolicyEngine};
pub use error::PolicyError;
pub use inspect::ComponentInfo;
pub use registry::{FailureTally, PolicyRegistry};
pub use round::ScoringRound;
