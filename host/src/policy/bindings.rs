//! Host bindings, one module per released `dovetail:policy` version, as Zed's extension host
//! keeps one per extension API version: a component built against any released version keeps
//! loading after the interface moves on.
//!
//! The types stop at the policy engine: the rest of the host decides in its own
//! ([`crate::capacity`], [`crate::cluster::consolidation`]), which `super::convert` turns into
//! the newest version's records ([`types`]) and back. The engine reads a component's version
//! ([`super::inspect`]) and drives it through that version's module. Releasing 0.2.0 means:
//! `wit/0.2.0/`, a `v0_2` module here that becomes [`latest`], `super::convert` written for its
//! records, conversions from the new types to `v0_1`'s in `v0_1`, a variant per version where
//! the engine holds a component's bindings, and "0.2" in [`SUPPORTED`]. `tests/wit_versions.rs` keeps a component frozen at
//! each released version and checks that it still loads and decides.

pub mod v0_1;

pub use latest::types;
/// The newest version: the types decisions are made in.
pub use v0_1 as latest;

/// Every `major.minor` this host runs, oldest first.
pub const SUPPORTED: &[&str] = &[v0_1::VERSION];
