//! The `dovetail:policy` WIT interface as the host sees it: the bindings of every released
//! version, the newest version's types (which decisions are made in), and a scoring round with
//! its packed launch options. Below everything else: the policy engine, the scheduling model
//! and the catalog all speak it, and it depends on nothing of ours.

pub mod bindings;
pub mod resources;
pub mod round;

pub use bindings::types;
pub use round::ScoringRound;
