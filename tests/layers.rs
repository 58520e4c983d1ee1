//! The host's modules form layers: no module imports one that imports it back, however far
//! round (`scripts/module_cycles.py`, which reads the `crate::`/`super::` paths of each module's
//! non-test code and finds strongly connected components).

use std::process::Command;

use dovetail_test_support::paths::workspace;

fn check(src: &std::path::Path) -> (bool, String) {
    let out = Command::new("python3")
        .arg(workspace().join("scripts/module_cycles.py"))
        .arg(src)
        .output()
        .expect("python3 runs the cycle check");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_host_modules_import_no_cycle() {
    let (ok, out) = check(&workspace().join("host/src"));
    assert!(ok, "{out}");
    assert!(out.contains(" 0 cycles"), "{out}");
}

#[test]
fn the_check_finds_a_cycle_through_a_third_module_and_names_its_edges() {
    let dir = std::env::temp_dir().join(format!("dovetail-cycles-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("core")).unwrap();
    let write = |p: &str, s: &str| std::fs::write(dir.join(p), s).unwrap();
    write(
        "lib.rs",
        "pub mod core;\npub mod extra;\npub mod model;\npub mod world;\n",
    );
    write("core.rs", "pub mod plan;\npub struct Thing;\n");
    // A child reading its parent is no edge; core::plan → world → model → core::plan is a cycle.
    write(
        "core/plan.rs",
        "use super::Thing;\nuse crate::world::Port;\n",
    );
    write(
        "world.rs",
        "// crate::core::Thing in a comment is no edge\nuse crate::model::Pod;\n",
    );
    write(
        "model.rs",
        "use crate::core::plan::Step;\n#[cfg(test)]\nmod tests { use crate::extra::X; }\n",
    );
    write("extra.rs", "use crate::model::Pod;\n");
    let (ok, out) = check(&dir);
    assert!(!ok, "{out}");
    assert!(out.contains("cycle: core::plan, model, world"), "{out}");
    for edge in [
        "core::plan -> world",
        "world -> model",
        "model -> core::plan",
    ] {
        assert!(out.contains(edge), "{edge}: {out}");
    }
    assert!(!out.contains("extra"), "test code is not an edge: {out}");
    assert!(
        !out.contains("world -> core\n"),
        "a comment is not an edge: {out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
