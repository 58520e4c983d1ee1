//! The policies shipped inside the controller, built from `policies/` by `build.rs` and embedded,
//! so a NodePool can name `cheapest` or `balanced` without any Policy resource.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// A policy embedded in the controller.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// Name NodePools use, e.g. `cheapest`.
    pub name: &'static str,
    /// One line on what it does.
    pub summary: &'static str,
    /// The component bytes.
    pub wasm: &'static [u8],
}

/// Every built-in policy.
pub fn all() -> &'static [Builtin] {
    BUILTINS
}

/// The built-in called `name`.
pub fn find(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

/// Names of the built-ins.
pub fn names() -> Vec<&'static str> {
    BUILTINS.iter().map(|b| b.name).collect()
}

/// Path of a test fixture component (a hostile or mismatched policy from `tests/policies/`).
#[doc(hidden)]
pub fn fixture_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(GUEST_DIR)
        .join(format!("dovetail_fixture_{}.wasm", name.replace('-', "_")))
}
