//! Host bindings of `dovetail:policy@0.1.0` (every 0.1.x), one module per world.
//!
//! NB: a component that exports both interfaces (the `policy` world) is driven through both
//! modules: a world's `…Pre::new` only needs its own exports to be present.

/// The `scorer` world; owns the shared `types` and `log` bindings.
pub mod scorer {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "scorer",
        additional_derives: [PartialEq],
    });
}

/// The `consolidator` world, reusing the shared bindings of [`scorer`].
pub mod consolidator {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "consolidator",
        with: {
            "dovetail:policy/types": super::scorer::dovetail::policy::types,
            "dovetail:policy/log": super::scorer::dovetail::policy::log,
        },
    });
}

pub use scorer::dovetail::policy::types;

/// The `major.minor` these bindings run.
pub const VERSION: &str = "0.1";
