//! `dovetail simulate --report` in a real browser: Debian's headless Chromium renders the page;
//! the tests read the DOM Chromium built (`--dump-dom`), its console, and a screenshot.

use std::path::{Path, PathBuf};
use std::process::Command;

use dovetail_test_support::policies as common;

use common::{dovetail_exe as dovetail, workspace};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dovetail-report-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Debian's chromium, or `None` (a skip, loud under CI) when it is not installed.
fn chromium() -> Option<PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("chromium is required under CI=true; run scripts/setup.sh");
        }
        eprintln!("skipped: chromium is not installed (scripts/setup.sh installs it)");
    }
    found
}

/// What Chromium made of a page: the DOM after load and the console messages it logged.
struct Rendered {
    dom: String,
    console: Vec<String>,
}

/// Headless, offline and with a fresh profile (the flags this machine's closed network needs).
fn headless(chromium: &Path, profile: &Path) -> Command {
    let mut cmd = Command::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

fn render(chromium: &Path, page: &Path, dir: &Path) -> Rendered {
    let out = headless(chromium, &dir.join("profile-dom"))
        .args(["--enable-logging=stderr", "--v=0", "--dump-dom"])
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium --dump-dom failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    Rendered {
        dom: String::from_utf8(out.stdout).unwrap(),
        console,
    }
}

fn screenshot(chromium: &Path, page: &Path, dir: &Path) -> PathBuf {
    let png = dir.join("shot.png");
    let out = headless(chromium, &dir.join("profile-shot"))
        .arg(format!("--screenshot={}", png.display()))
        .arg("--window-size=1000,1400")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success() && png.exists(),
        "chromium --screenshot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    png
}

/// `data-X` of the chart series named `series` in the DOM.
fn series_attr(dom: &str, series: &str, attr: &str) -> Option<f64> {
    let at = dom.find(&format!("data-series=\"{series}\""))?;
    let rest = &dom[at..];
    let key = format!("data-{attr}=\"");
    let v = &rest[rest.find(&key)? + key.len()..];
    v[..v.find('"')?].parse().ok()
}

/// Runs dovetail; stdout.
fn run(args: &[&str]) -> String {
    let out = Command::new(dovetail())
        .args(args)
        .current_dir(workspace())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dovetail {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The `$/hour at the end` figures of the summaries in `stdout`, in order.
fn end_costs(stdout: &str) -> Vec<f64> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("cost: "))
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn a_compared_run_renders_in_chromium_with_both_runs_overlaid_and_the_difference_stated() {
    let Some(chromium) = chromium() else { return };
    let dir = scratch("compare");
    let page = dir.join("report.html");
    let stdout = run(&[
        "simulate",
        "-f",
        "examples/consolidation-lab.yaml",
        "--compare",
        "consolidation=balanced",
        "consolidation=empty-only",
        "--report",
        page.to_str().unwrap(),
    ]);
    let r = render(&chromium, &page, &dir);
    assert!(r.console.is_empty(), "console messages: {:#?}", r.console);
    let (a, b) = ("consolidation=balanced", "consolidation=empty-only");
    // Both runs in one cost chart, each with its bound.
    for run in [a, b] {
        for what in [
            "cost $/hour",
            "LP bound $/hour",
            "pending pods",
            "evictions",
        ] {
            assert!(
                r.dom.contains(&format!("data-series=\"{what} ({run})\"")),
                "no series {what} ({run}) in the DOM"
            );
        }
    }
    // One source: the charts end where the summaries the command printed end.
    let printed = end_costs(&stdout);
    assert_eq!(printed.len(), 2, "{stdout}");
    for (run, cost) in [a, b].iter().zip(&printed) {
        let charted = series_attr(&r.dom, &format!("cost $/hour ({run})"), "last").unwrap();
        assert!(
            (charted - cost).abs() < 5e-5,
            "{run}: chart ends at {charted}, summary says {cost}"
        );
    }
    // The consolidator that removes under-used nodes disrupted one; the other kept it.
    assert_eq!(
        series_attr(&r.dom, &format!("underutilized ({a})"), "last"),
        Some(1.0)
    );
    assert_eq!(
        series_attr(&r.dom, &format!("underutilized ({b})"), "last"),
        Some(0.0)
    );
    assert!(r.dom.contains("<td>executed</td>"));
    assert!(r.dom.contains("<td>kept by the policy</td>"));
    assert!(
        r.dom
            .contains("consolidation of under-used nodes is disabled")
    );
    // The difference, as the command printed it.
    let difference = stdout
        .split_once("minus consolidation=balanced)\n")
        .unwrap()
        .1
        .lines()
        .next()
        .unwrap();
    assert!(
        difference.starts_with("cost over the run: +"),
        "{difference}"
    );
    assert!(
        r.dom.contains(difference),
        "the page does not state {difference:?}"
    );
    // Launches name the policy's best options with their scores.
    assert!(r.dom.contains("— score "), "no ranked options");
    assert!(r.dom.contains("data-series=\"c5.large on-demand\""));
    // Self-contained: nothing to fetch, nothing to run.
    for needle in ["<script", "<link", " src=", "https://", "url("] {
        assert!(!r.dom.contains(needle), "the page refers out: {needle}");
    }
}

#[test]
fn the_page_draws_a_screenshot_with_charts_on_it() {
    let Some(chromium) = chromium() else { return };
    let dir = scratch("shot");
    let page = dir.join("report.html");
    run(&[
        "simulate",
        "-f",
        "examples/inflate-spot.yaml",
        "--report",
        page.to_str().unwrap(),
    ]);
    let png = screenshot(&chromium, &page, &dir);
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let bytes = &buf[..info.buffer_size()];
    let channels = info.color_type.samples();
    let pixels: Vec<&[u8]> = bytes.chunks(channels).collect();
    let white = pixels
        .iter()
        .filter(|p| p[..3].iter().all(|&c| c >= 250))
        .count();
    let inked = 1.0 - white as f64 / pixels.len() as f64;
    // The charts' palette blue (#0072b2) is drawn, not only text.
    let blue = pixels
        .iter()
        .filter(|p| {
            i32::from(p[0]) < 40
                && (i32::from(p[1]) - 0x72).abs() < 40
                && (i32::from(p[2]) - 0xb2).abs() < 40
        })
        .count();
    assert!(
        inked > 0.03,
        "the screenshot is nearly blank: {:.1}% inked",
        inked * 100.0
    );
    assert!(blue > 500, "no chart colour on the page: {blue} pixels");
}

/// The console check can fail: a page that logs an error is caught.
#[test]
fn a_page_that_logs_to_the_console_is_caught() {
    let Some(chromium) = chromium() else { return };
    let dir = scratch("console");
    let page = dir.join("bad.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><body><script>console.error('boom'); missing();</script></body></html>",
    )
    .unwrap();
    let r = render(&chromium, &page, &dir);
    assert_eq!(r.console.len(), 2, "{:#?}", r.console);
    assert!(r.console[1].contains("missing is not defined"));
}
