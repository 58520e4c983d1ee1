//! Walks `docs/tutorial.md` for real: scaffold with `dovetail policy new`, write the page's code,
//! run its unit tests, build the component, `dovetail policy test` it, and compare it with the
//! default in the simulator on the page's cluster — asserting the difference the page promises.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use dovetail::policy::types::Arch;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn dovetail() -> PathBuf {
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

/// Runs a command; its stdout, or a failure with everything it printed.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The fenced block of the page opened with "```rust file=src/lib.rs".
fn code(page: &str) -> &str {
    let start = page
        .find("```rust file=src/lib.rs\n")
        .expect("the page's code block")
        + "```rust file=src/lib.rs\n".len();
    let len = page[start..].find("```").expect("the block's end");
    &page[start..start + len]
}

/// The instance types of one `== …` section of `simulate --compare`.
fn fleet<'a>(output: &'a str, section: &str) -> Vec<&'a str> {
    let at = output
        .find(section)
        .unwrap_or_else(|| panic!("{section} in {output}"));
    output[at..]
        .lines()
        .skip(2) // the section line and the table header
        .take_while(|l| !l.starts_with("pods:"))
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

#[test]
fn the_tutorial_takes_a_new_user_from_nothing_to_a_compared_custom_scorer() {
    let started = Instant::now();
    let page = std::fs::read_to_string(workspace().join("docs/tutorial.md")).unwrap();
    let code = code(&page);
    let policy_lines = code
        .split("#[cfg(test)]")
        .next()
        .unwrap()
        .trim()
        .lines()
        .count();
    assert!(
        policy_lines < 40,
        "the page promises under 40 lines; it has {policy_lines}"
    );
    assert!(
        page.contains(&format!("{policy_lines} lines of Rust")),
        "the page states the count"
    );

    let dir = std::env::temp_dir().join(format!("dovetail-tutorial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    run(Command::new(dovetail())
        .args(["policy", "new", "graviton-scorer", "--dir"])
        .arg(&dir));
    let krate = dir.join("graviton-scorer");
    std::fs::write(krate.join("src/lib.rs"), code).unwrap();

    // The crate's own target dir under ours: kept between local runs, fresh in CI.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = workspace().join("target/tutorial");
    let tests = run(Command::new(&cargo)
        .arg("test")
        .current_dir(&krate)
        .env("CARGO_TARGET_DIR", &target));
    assert!(tests.contains("graviton_wins_even_when_dearer"), "{tests}");
    run(Command::new(&cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(&krate)
        .env("CARGO_TARGET_DIR", &target));
    let wasm = target.join("wasm32-wasip2/release/graviton_scorer.wasm");
    let size = std::fs::metadata(&wasm).unwrap().len();

    let checked = run(Command::new(dovetail()).args(["policy", "test"]).arg(&wasm));
    assert!(checked.contains("accepted"), "{checked}");

    let cluster = workspace().join("docs/tutorial/cluster.yaml");
    let compared = run(Command::new(dovetail())
        .args(["simulate", "-f"])
        .arg(&cluster)
        .arg("--compare")
        .arg("scoring=cheapest")
        .arg(format!("scoring={}", wasm.display()))
        .env("RUST_LOG", "warn"));
    let arch = |t: &str| {
        dovetail::catalog::embedded()
            .into_iter()
            .find(|e| e.name == t)
            .map(|e| e.arch)
            .unwrap_or_else(|| panic!("{t} in the catalog"))
    };
    let default = fleet(&compared, "== scoring=cheapest");
    let custom = fleet(&compared, &format!("== scoring={}", wasm.display()));
    assert!(!default.is_empty() && !custom.is_empty(), "{compared}");
    assert!(
        default.iter().any(|t| arch(t) != Arch::Arm64),
        "the default takes amd64 somewhere: {default:?}"
    );
    assert!(
        custom
            .iter()
            .all(|t| arch(t) == Arch::Arm64 && !t.starts_with('t')),
        "the custom scorer takes Graviton, not burstable: {custom:?}"
    );
    assert!(
        compared.contains("cost over the run: +"),
        "the preference costs something, and the comparison says so: {compared}"
    );
    eprintln!(
        "tutorial walked in {:.0} s; policy {policy_lines} lines; component {size} bytes",
        started.elapsed().as_secs_f64()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
