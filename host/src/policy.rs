//! Policies: sandboxed WebAssembly components that rank launch options and choose consolidation
//! moves.
//!
//! - [`engine`]: one wasmtime `Engine`, components compiled once per digest, a fresh `Store` per
//!   decision round, deadline and memory cap, output contract checks.
//! - [`registry`]: Policy name → live component, swapped atomically, last good version kept.
//! - [`builtin`]: the policies shipped inside the controller.
//! - [`inspect`]: what a component is and which WIT version it targets.
//! - [`bindings`]: the WIT interface, one module per released version; its types stop here.
//! - `convert`: the host's types ([`crate::capacity`]) into the interface's records and back.
//! - [`round`]: a scoring round as the engine hands it to a policy.
//! - [`ranking`]: scores → launch order.
//! - [`canary`]: the rounds a component must pass before it serves.
//! - [`scaffold`]: `dovetail policy new`'s crate.
//! - [`source`]: fetching components (HTTPS, OCI) and publishing them.
//! - [`shadow`]: candidate policies judged on the serving policy's rounds, never acted on.

pub mod bindings;
pub mod builtin;
pub mod canary;
mod contract;
mod convert;
pub mod engine;
pub mod error;
pub mod inspect;
pub mod native;
pub mod ranking;
pub mod registry;
pub mod round;
mod sandbox;
pub mod scaffold;
pub mod shadow;
pub mod source;

pub use bindings::types;
pub use engine::{CallStats, EngineConfig, Limits, LoadedPolicy, PolicyEngine};
pub use error::PolicyError;
pub use inspect::ComponentInfo;
pub use registry::{FailureTally, PolicyRegistry};
pub use round::ScoringRound;
