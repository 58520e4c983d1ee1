//! Walks `docs/tutorial.md` for real: scaffold with `dovetail policy new`, write the page's code,
//! run its unit tests, build the component, `dovetail policy test` it, and compare it with the
//! default in the simulator on the page's cluster — asserting the difference the page promises.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use dovetail::capacity::Arch;

use dovetail_test_support::paths::workspace;

fn dovetail() -> PathBuf {
    dovetail_test_support::paths::dovetail_exe()
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

/// A walked page: where its crate's component is and what `simulate --compare` printed.
struct Walked {
    wasm: PathBuf,
    compared: String,
    policy_lines: usize,
    size: u64,
    dir: PathBuf,
}

/// Walks a tutorial page: scaffolds `name` (with `kind_flag`), writes the page's code, runs its
/// unit tests (`unit_test` must be among them), builds the component, `policy test`s it and runs
/// the page's comparison against `baseline` in `role` with the scaffold's own `cluster.yaml`.
fn walk(
    page_path: &str,
    name: &str,
    kind_flag: Option<&str>,
    unit_test: &str,
    (role, baseline): (&str, &str),
    extra: &[&str],
) -> Walked {
    let page = std::fs::read_to_string(workspace().join(page_path)).unwrap();
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
        "{page_path} promises under 40 lines; it has {policy_lines}"
    );
    assert!(
        page.contains(&format!("{policy_lines} lines of Rust"))
            || page.contains(&format!("the first {policy_lines} lines")),
        "{page_path} states the count ({policy_lines})"
    );

    let dir = std::env::temp_dir().join(format!("dovetail-tutorial-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut new = Command::new(dovetail());
    new.args(["policy", "new", name, "--dir"]).arg(&dir);
    if let Some(flag) = kind_flag {
        new.arg(flag);
    }
    run(&mut new);
    let krate = dir.join(name);
    std::fs::write(krate.join("src/lib.rs"), code).unwrap();

    // The crate's own target dir under ours: kept between local runs, fresh in CI.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = workspace().join("target/tutorial");
    let tests = run(Command::new(&cargo)
        .arg("test")
        .current_dir(&krate)
        .env("CARGO_TARGET_DIR", &target));
    assert!(tests.contains(unit_test), "{tests}");
    run(Command::new(&cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(&krate)
        .env("CARGO_TARGET_DIR", &target));
    let wasm = target.join(format!(
        "wasm32-wasip2/release/{}.wasm",
        name.replace('-', "_")
    ));
    let size = std::fs::metadata(&wasm).unwrap().len();

    let checked = run(Command::new(dovetail()).args(["policy", "test"]).arg(&wasm));
    assert!(checked.contains("accepted"), "{checked}");

    // The scaffold's README runs its comparison on the crate's own cluster.yaml.
    let readme = std::fs::read_to_string(krate.join("README.md")).unwrap();
    assert!(readme.contains("-f cluster.yaml"), "{readme}");
    let compared = run(Command::new(dovetail())
        .arg("simulate")
        .args(extra)
        .arg("-f")
        .arg(krate.join("cluster.yaml"))
        .arg("--compare")
        .arg(format!("{role}={baseline}"))
        .arg(format!("{role}={}", wasm.display()))
        .env("RUST_LOG", "warn"));
    Walked {
        wasm,
        compared,
        policy_lines,
        size,
        dir,
    }
}

#[test]
fn the_tutorial_takes_a_new_user_from_nothing_to_a_compared_custom_scorer() {
    let started = Instant::now();
    let walked = walk(
        "docs/tutorial.md",
        "graviton-scorer",
        None,
        "graviton_wins_even_when_dearer",
        ("scoring", "cheapest"),
        &[],
    );
    // The scaffold's cluster is the page's.
    assert_eq!(
        std::fs::read_to_string(walked.dir.join("graviton-scorer/cluster.yaml")).unwrap(),
        std::fs::read_to_string(workspace().join("docs/tutorial/cluster.yaml")).unwrap()
    );
    let compared = &walked.compared;
    let arch = |t: &str| {
        dovetail::catalog::embedded()
            .into_iter()
            .find(|e| e.name == t)
            .map(|e| e.arch)
            .unwrap_or_else(|| panic!("{t} in the catalog"))
    };
    let default = fleet(compared, "== scoring=cheapest");
    let custom = fleet(compared, &format!("== scoring={}", walked.wasm.display()));
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
        "tutorial walked in {:.0} s; policy {} lines; component {} bytes",
        started.elapsed().as_secs_f64(),
        walked.policy_lines,
        walked.size
    );
    std::fs::remove_dir_all(&walked.dir).unwrap();
}

/// A `--compare` line's signed integer after `label`, e.g. "pods evicted: -12".
fn signed_after(text: &str, label: &str) -> i64 {
    let at = text
        .find(label)
        .unwrap_or_else(|| panic!("{label:?} in {text}"))
        + label.len();
    text[at..]
        .split([';', '\n'])
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{label:?} in {text}: {e}"))
}

#[test]
fn the_consolidation_tutorial_takes_a_new_user_to_a_compared_consolidator() {
    let started = Instant::now();
    let walked = walk(
        "docs/tutorial-consolidator.md",
        "settle-first",
        Some("--consolidator"),
        "young_nodes_are_kept_old_ones_consolidated",
        ("consolidation", "balanced"),
        &["--decisions"],
    );
    assert_eq!(
        std::fs::read_to_string(walked.dir.join("settle-first/cluster.yaml")).unwrap(),
        std::fs::read_to_string(workspace().join("docs/tutorial/consolidation.yaml")).unwrap()
    );
    let compared = &walked.compared;
    let custom_at = compared
        .find(&format!("== consolidation={}", walked.wasm.display()))
        .unwrap_or_else(|| panic!("the custom run's section in {compared}"));
    let (baseline, custom) = compared.split_at(custom_at);
    // --decisions shows both runs' moves: balanced executes moves on young nodes, the custom
    // policy keeps them with its reason.
    assert!(baseline.contains(" executed "), "{baseline}");
    assert!(
        custom.contains("kept by the policy")
            && custom.contains("min old; nodes settle for 60 min"),
        "{custom}"
    );
    assert!(
        custom.contains(" launched "),
        "launches are decisions too: {custom}"
    );
    // The page's promise, in the difference block: no more evictions, fewer disruptions and
    // launches. (Balanced evicts none here either: the host holds busier nodes back while the
    // ones the scale-down emptied settle, so only those go.)
    let difference = &compared[compared.find("== difference").expect("the difference")..];
    assert!(
        signed_after(difference, "pods evicted:") <= 0,
        "{difference}"
    );
    assert!(
        signed_after(difference, "nodes disrupted:") < 0,
        "{difference}"
    );
    assert!(
        signed_after(difference, "nodes launched:") < 0,
        "{difference}"
    );
    assert!(
        difference.contains("cost over the run: +"),
        "and it costs: {difference}"
    );
    eprintln!(
        "consolidation tutorial walked in {:.0} s; policy {} lines; component {} bytes",
        started.elapsed().as_secs_f64(),
        walked.policy_lines,
        walked.size
    );
    std::fs::remove_dir_all(&walked.dir).unwrap();
}
