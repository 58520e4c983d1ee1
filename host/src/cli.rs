//! One module per group of commands; `main.rs` holds the command line and dispatches.

pub mod bench;
pub mod controller;
pub mod policy;
pub mod simulate;
