//! Where things are: the workspace, the shipped examples, the tests' own files and the
//! `dovetail` binary the tests run.

use std::path::{Path, PathBuf};

/// The workspace root (the examples' paths are relative to it).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The integration tests' folder (`tests/`): fixtures, scripts, manifests.
pub fn tests_dir() -> PathBuf {
    workspace().join("tests")
}

/// A shipped example's text (`examples/<name>`).
pub fn example(name: &str) -> String {
    let path = workspace().join("examples").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `dovetail` binary, built beside the test binaries (scripts/test.sh builds it first).
pub fn dovetail_exe() -> PathBuf {
    let exe = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|deps| deps.parent())
        .map(|d| d.join("dovetail"))
        .unwrap();
    assert!(
        exe.exists(),
        "the dovetail binary is built beside the tests ({}): `cargo build -p dovetail --bin dovetail` (scripts/test.sh does)",
        exe.display()
    );
    exe
}
