//! A policy tried offline fails loudly: `policy test -f` and `simulate --compare` count every
//! failure of every policy (what, how often, the first message as one clean line, what decided
//! instead), print it in the summary and exit non-zero; `--compare` checks every component for
//! its role before the first run.

use dovetail_test_support::policies as common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{dovetail_exe, workspace};

/// Runs `dovetail ARGS`: (success, stdout, stderr).
fn dovetail(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(dovetail_exe())
        .args(args)
        .current_dir(workspace())
        .output()
        .expect("dovetail runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn hostile() -> PathBuf {
    dovetail::policy::builtin::fixture_path("hostile")
}

/// A scenario directory with the `inflate-spot` example and a Policy of the hostile fixture in
/// `mode` (a component a Policy names by file, with its configuration).
fn scenario_with(mode: &str) -> (tempdir::Dir, String, String) {
    let dir = tempdir::Dir::new("policy-offline");
    let policy = dir.0.join("trappy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: dovetail.sh/v1\nkind: Policy\nmetadata: {{name: trappy}}\nspec:\n  source: {{file: {}}}\n  config: {{mode: {mode}}}\n",
            hostile().display()
        ),
    )
    .unwrap();
    let example = workspace().join("examples/inflate-spot.yaml");
    (
        dir,
        example.display().to_string(),
        policy.display().to_string(),
    )
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new(what: &str) -> Dir {
            let d = std::env::temp_dir().join(format!(
                "dovetail-{what}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn failure_line<'a>(out: &'a str, policy: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("POLICY FAILED: {policy} ")))
        .unwrap_or_else(|| panic!("no failure line for {policy}: {out}"))
}

#[test]
fn the_canaries_reach_a_claim_big_enough_to_make_a_careless_policy_panic() {
    // Good on claims under 5 pods: one canary round of 5 pods finds it, before any scenario.
    let (ok, out, err) = dovetail(&[
        "policy",
        "test",
        hostile().to_str().unwrap(),
        "--config",
        "mode=big-trap",
    ]);
    assert!(!ok, "{out}{err}");
    assert!(
        err.contains("refused (Trapped)")
            && err.contains("scoring (claim of 5 pods)")
            && err.contains("panicked at")
            && err.contains("claim of 5 pods: index out of range"),
        "{err}"
    );
    assert!(
        !err.contains("RUST_BACKTRACE") && !err.contains('\u{fffd}'),
        "one clean line: {err}"
    );
    // A good one says what the canaries covered.
    let (ok, out, err) = dovetail(&["policy", "test", hostile().to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("13 scoring (claims of 1 to ")
            && out.contains("3 consolidation (empty to 60 candidates)"),
        "{out}"
    );
}

#[test]
fn policy_test_fails_a_policy_that_fails_in_the_scenario_and_says_how_often_and_why() {
    // Good in the canary rounds (it can tell them apart), NaN scores in the scenario's.
    let example = workspace().join("examples/inflate-spot.yaml");
    let (ok, out, err) = dovetail(&[
        "policy",
        "test",
        hostile().to_str().unwrap(),
        "--config",
        "mode=sly-nan",
        "-f",
        example.to_str().unwrap(),
    ]);
    assert!(!ok, "a policy that failed is not accepted: {out}{err}");
    // Named after the file, as `policy test` loads it.
    let line = failure_line(&out, "dovetail-fixture-hostile");
    assert!(
        line.contains("(ContractViolation ") && line.contains("fell back to cheapest"),
        "{line}"
    );
    assert!(err.contains("dovetail-fixture-hostile failed"), "{err}");
    assert!(!out.contains("\naccepted"), "{out}");

    // The same component in a mode that works on the scenario passes.
    let (ok, out, err) = dovetail(&[
        "policy",
        "test",
        hostile().to_str().unwrap(),
        "-f",
        example.to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    assert!(!out.contains("POLICY FAILED"), "{out}");
    assert!(
        out.contains("accepted: no failure in the scenario"),
        "{out}"
    );
}

#[test]
fn compare_fails_when_a_compared_policy_failed_and_names_it() {
    let (_dir, example, policy) = scenario_with("sly-nan");
    let (ok, out, err) = dovetail(&[
        "simulate",
        "-f",
        &example,
        "-f",
        &policy,
        "--compare",
        "scoring=cheapest",
        "scoring=trappy",
    ]);
    assert!(!ok, "{out}{err}");
    assert!(
        out.contains("== difference"),
        "both runs still print: {out}"
    );
    let line = failure_line(&out, "trappy");
    assert!(line.contains("fell back to cheapest"), "{line}");
    assert!(
        err.contains("scoring=trappy: trappy failed") && err.contains("not theirs"),
        "{err}"
    );
}

#[test]
fn compare_refuses_a_component_in_the_wrong_role_or_not_a_component_before_any_run() {
    let example = workspace().join("examples/inflate-spot.yaml");
    let example = example.to_str().unwrap();
    // A consolidator given as a scorer.
    let (ok, out, err) = dovetail(&[
        "simulate",
        "-f",
        example,
        "--compare",
        "scoring=cheapest",
        "scoring=balanced",
    ]);
    assert!(!ok);
    assert!(out.trim().is_empty(), "nothing ran: {out}");
    assert!(
        err.contains("balanced cannot do scoring") && err.contains("consolidation="),
        "{err}"
    );
    // A scorer given as a consolidator, in the second set.
    let (ok, out, err) = dovetail(&[
        "simulate",
        "-f",
        example,
        "--compare",
        "consolidation=balanced",
        "consolidation=cheapest",
    ]);
    assert!(!ok && out.trim().is_empty(), "{out}");
    assert!(err.contains("cheapest cannot do consolidation"), "{err}");
    // Not WebAssembly at all.
    let readme = Path::new("README.md");
    let (ok, out, err) = dovetail(&[
        "simulate",
        "-f",
        example,
        "--compare",
        "scoring=cheapest",
        &format!("scoring=./{}", readme.display()),
    ]);
    assert!(!ok && out.trim().is_empty(), "{out}");
    assert!(err.contains("README"), "{err}");
}

#[test]
fn a_scenario_policy_named_like_a_built_in_is_judged_as_itself() {
    // The scenario's own `balanced` is a scorer (arm-first, configured): comparing it as a
    // scorer is right, whatever the built-in of that name does.
    let dir = tempdir::Dir::new("named-like-builtin");
    let policy = dir.0.join("balanced.yaml");
    std::fs::write(
        &policy,
        "apiVersion: dovetail.sh/v1\nkind: Policy\nmetadata: {name: balanced}\nspec:\n  source: {builtin: arm-first}\n  config: {tolerance: \"0.2\"}\n",
    )
    .unwrap();
    let example = workspace().join("examples/inflate-spot.yaml");
    let (ok, out, err) = dovetail(&[
        "simulate",
        "-f",
        example.to_str().unwrap(),
        "-f",
        policy.to_str().unwrap(),
        "--compare",
        "scoring=cheapest",
        "scoring=balanced",
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("== difference (scoring=balanced minus scoring=cheapest)"),
        "{out}"
    );
}
