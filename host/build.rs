//! Builds every policy component (`policies/*` and the test fixtures in `tests/policies/*`) for
//! `wasm32-wasip2` and embeds the built-in ones, so `cargo build -p dovetail` is all it takes.
//!
//! NB: the guests are built by a nested `cargo build` into their own target directory
//! (`<target>/guests`): the outer build holds the lock of its own, and the guests need a different
//! target triple and their own optimised profile.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
/// Cargo profile of the guests (see the workspace `Cargo.toml`).
const PROFILE: &str = "guest";

struct Guest {
    /// Directory name: the built-in's name.
    name: String,
    package: String,
    summary: String,
    builtin: bool,
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest.parent().unwrap().to_path_buf();
    for dir in ["policies", "sdk", "wit", "tests/policies", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }

    let mut guests = discover(&workspace.join("policies"), true);
    guests.extend(discover(&workspace.join("tests/policies"), false));

    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
    let target_root = out_dir.ancestors().nth(4).unwrap().to_path_buf();
    let guest_target = target_root.join("guests");

    let mut cmd = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(&workspace)
        .args([
            "build",
            "--profile",
            PROFILE,
            "--locked",
            "--target",
            TARGET,
            "--target-dir",
        ])
        .arg(&guest_target);
    for g in &guests {
        cmd.args(["-p", &g.package]);
    }
    // The outer build's flags and wrappers (clippy, coverage) are for the host, not the guests.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_TARGET_DIR",
        "RUSTDOCFLAGS",
        "CARGO_ENCODED_RUSTDOCFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("running cargo to build the policy components");
    if !status.success() {
        if !target_installed() {
            panic!(
                "the {TARGET} Rust target is not installed: run `rustup target add {TARGET}` \
                 (scripts/setup.sh does it for you)"
            );
        }
        panic!("building the policy components failed; see the cargo output above");
    }

    let wasm_dir = guest_target.join(TARGET).join(PROFILE);
    let mut code = String::from("pub(crate) static BUILTINS: &[Builtin] = &[\n");
    for g in guests.iter().filter(|g| g.builtin) {
        let file = wasm_dir.join(format!("{}.wasm", g.package.replace('-', "_")));
        assert!(file.exists(), "{} was not built", file.display());
        writeln!(
            code,
            "    Builtin {{ name: {:?}, summary: {:?}, wasm: include_bytes!({:?}) }},",
            g.name,
            g.summary,
            file.display().to_string()
        )
        .unwrap();
    }
    code.push_str("];\n");
    writeln!(
        code,
        "const GUEST_DIR: &str = {:?};",
        wasm_dir.display().to_string()
    )
    .unwrap();
    fs::write(out_dir.join("guests.rs"), code).unwrap();
}

/// Every crate directory under `dir`, with its package name and description.
fn discover(dir: &Path, builtin: bool) -> Vec<Guest> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut guests: Vec<Guest> = entries
        .filter_map(|e| {
            let path = e.ok()?.path();
            let manifest = fs::read_to_string(path.join("Cargo.toml")).ok()?;
            let field = |key: &str| {
                manifest.lines().find_map(|l| {
                    let (k, v) = l.split_once('=')?;
                    (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
                })
            };
            Some(Guest {
                name: path.file_name()?.to_str()?.to_string(),
                package: field("name")?,
                summary: field("description").unwrap_or_default(),
                builtin,
            })
        })
        .collect();
    guests.sort_by(|a, b| a.name.cmp(&b.name));
    guests
}

fn target_installed() -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == TARGET)
        })
        .unwrap_or(true)
}
