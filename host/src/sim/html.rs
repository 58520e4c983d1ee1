//! A run (or two, compared) as one self-contained HTML page: charts over the scenario's time as
//! inline SVG drawn here, and the table of decisions. No script, no stylesheet or font from
//! anywhere: the file opens offline, prints, and diffs as text. Every figure comes from the
//! run's [`Report`] — its timeline of [`crate::fleet::FleetView`]s and its events — the same data
//! the summary prints.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::decisions::Decision;
use super::report::{Report, clock, plain};

/// Rows of the decisions table per run; a longer run says how many it left out.
pub const DECISIONS_SHOWN: usize = 400;

const WIDTH: f64 = 920.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;
/// Distinct on white and for the common colour blindnesses (Okabe–Ito, then Tableau).
const PALETTE: [&str; 12] = [
    "#0072b2", "#e69f00", "#009e73", "#d55e00", "#cc79a7", "#56b4e9", "#f0e442", "#000000",
    "#8c564b", "#7f7f7f", "#bcbd22", "#17becf",
];

/// One run to draw: its label (`scoring=cheapest`, or the scenario's name) and its report.
pub struct Run<'a> {
    pub label: &'a str,
    pub report: &'a Report,
}

/// A line over time: `(seconds since start, value)`, held until the next point.
struct Series {
    /// What `data-series` says: the full name.
    name: String,
    /// What the legend says (the run as A or B when two are compared).
    legend: String,
    points: Vec<(f64, f64)>,
    color: &'static str,
    dashed: bool,
}

/// The page for one run, or for two with their difference stated.
pub fn render(title: &str, runs: &[Run<'_>]) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
        esc(title),
        esc(title)
    );
    let charts = Charts::new(runs);
    charts.summaries(&mut out);
    let end = charts.end;
    for r in runs {
        let title = if charts.compare {
            format!("Nodes by instance type and capacity type — {}", r.label)
        } else {
            "Nodes by instance type and capacity type".into()
        };
        out.push_str(&stacked("nodes", &title, &node_layers(r.report), end));
    }
    out.push_str(&lines(
        "cost",
        "Cost per hour, and the LP lower bound for the running pods",
        "$/h",
        &charts.cost(),
        end,
    ));
    out.push_str(&lines(
        "pending",
        "Pending pods (waiting for a node, or for theirs to be Ready)",
        "pods",
        &charts.per_run("pending pods", 3, &|f| f.fleet.pending as f64),
        end,
    ));
    out.push_str(&lines(
        "wait",
        "Longest wait of a pending pod",
        "s",
        &charts.waits(),
        end,
    ));
    out.push_str(&lines(
        "disruptions",
        "Nodes disrupted so far, by reason",
        "nodes",
        &charts.disruptions(),
        end,
    ));
    out.push_str(&lines(
        "evictions",
        "Pods evicted so far",
        "pods",
        &charts.per_run("evictions", 8, &|f| f64::from(f.evictions)),
        end,
    ));
    for r in runs {
        shadows(&mut out, r, charts.compare);
        decisions(&mut out, r, charts.compare);
    }
    out.push_str("</body></html>\n");
    out
}

/// The runs a page charts: one, or two compared (A solid, B dashed), over a common time axis.
struct Charts<'a> {
    runs: &'a [Run<'a>],
    compare: bool,
    /// The longest run's end, seconds.
    end: f64,
}

impl<'a> Charts<'a> {
    fn new(runs: &'a [Run<'a>]) -> Self {
        let end = runs
            .iter()
            .map(|r| r.report.duration_secs)
            .max()
            .unwrap_or(0)
            .max(1) as f64;
        Charts {
            runs,
            compare: runs.len() == 2,
            end,
        }
    }

    fn dashed(&self, i: usize) -> bool {
        self.compare && i == 1
    }

    /// A series' name, with its run's label when two are compared.
    fn named(&self, r: &Run<'_>, what: &str) -> String {
        if self.compare {
            format!("{what} ({})", r.label)
        } else {
            what.to_string()
        }
    }

    /// A legend entry, with A or B when two are compared.
    fn tag(&self, i: usize, what: &str) -> String {
        if self.compare {
            format!("{what} ({})", if i == 0 { "A" } else { "B" })
        } else {
            what.to_string()
        }
    }

    /// The difference (when compared), each run's summary, and the key to the lines.
    fn summaries(&self, out: &mut String) {
        let runs = self.runs;
        if self.compare {
            let d = runs[0].report.difference(runs[1].report);
            let _ = write!(
                out,
                "<section id=\"difference\"><h2>{} against {}</h2><pre>{}</pre></section>",
                esc(runs[1].label),
                esc(runs[0].label),
                esc(&d.to_string())
            );
        }
        out.push_str("<section id=\"summary\">");
        for r in runs {
            let _ = write!(
                out,
                "<div class=\"run\"><h2>{}</h2><pre>{}</pre></div>",
                esc(r.label),
                esc(&r.report.summary())
            );
        }
        out.push_str("</section>\n");
        if self.compare {
            let _ = write!(
                out,
                "<p class=\"key\">A: {} (solid lines) · B: {} (dashed lines)</p>",
                esc(runs[0].label),
                esc(runs[1].label)
            );
        }
    }

    /// One series per run of a figure each frame holds.
    fn per_run(
        &self,
        what: &str,
        color: usize,
        value: &dyn Fn(&super::report::Frame) -> f64,
    ) -> Vec<Series> {
        self.runs
            .iter()
            .enumerate()
            .map(|(i, r)| Series {
                name: self.named(r, what),
                legend: self.tag(i, what),
                points: r
                    .report
                    .timeline
                    .iter()
                    .map(|f| (f.at as f64, value(f)))
                    .collect(),
                color: PALETTE[color],
                dashed: self.dashed(i),
            })
            .collect()
    }

    /// Cost per hour and the LP bound, per run.
    fn cost(&self) -> Vec<Series> {
        let mut cost = self.per_run("cost $/hour", 0, &|f| f.fleet.cost_per_hour);
        for (i, r) in self.runs.iter().enumerate() {
            cost.insert(
                2 * i + 1,
                Series {
                    name: self.named(r, "LP bound $/hour"),
                    legend: self.tag(i, "LP bound $/hour"),
                    points: r
                        .report
                        .timeline
                        .iter()
                        .filter_map(|f| Some((f.at as f64, f.fleet.bound_per_hour?)))
                        .collect(),
                    color: PALETTE[2],
                    dashed: self.dashed(i),
                },
            );
        }
        cost
    }

    /// The longest wait, per run. A frame holds until the next; a waiting pod's wait grows in
    /// between, so each frame adds the wait reached just before the next one.
    fn waits(&self) -> Vec<Series> {
        self.runs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let frames = &r.report.timeline;
                let mut points = Vec::new();
                for (k, f) in frames.iter().enumerate() {
                    points.push((f.at as f64, f.fleet.oldest_pending_secs.unwrap_or(0) as f64));
                    if let (Some(next), Some(w)) = (frames.get(k + 1), f.fleet.oldest_pending_secs)
                        && next.at - f.at > 1
                    {
                        points.push(((next.at - 1) as f64, (w + next.at - 1 - f.at) as f64));
                    }
                }
                Series {
                    name: self.named(r, "longest wait"),
                    legend: self.tag(i, "longest wait"),
                    points,
                    color: PALETTE[4],
                    dashed: self.dashed(i),
                }
            })
            .collect()
    }

    /// Nodes disrupted so far, per reason and run.
    fn disruptions(&self) -> Vec<Series> {
        let reasons: BTreeSet<&str> = self
            .runs
            .iter()
            .flat_map(|r| r.report.timeline.iter())
            .flat_map(|f| f.disruptions.keys().map(String::as_str))
            .collect();
        let mut out = Vec::new();
        for (k, reason) in reasons.iter().enumerate() {
            for (i, r) in self.runs.iter().enumerate() {
                out.push(Series {
                    name: self.named(r, reason),
                    legend: self.tag(i, reason),
                    points: r
                        .report
                        .timeline
                        .iter()
                        .map(|f| {
                            (
                                f.at as f64,
                                f64::from(f.disruptions.get(*reason).copied().unwrap_or(0)),
                            )
                        })
                        .collect(),
                    color: PALETTE[k % PALETTE.len()],
                    dashed: self.dashed(i),
                });
            }
        }
        out
    }
}

/// Per (instance type, capacity type), the node count over time.
fn node_layers(report: &Report) -> Vec<(String, Vec<(f64, f64)>)> {
    let keys: BTreeSet<String> = report
        .timeline
        .iter()
        .flat_map(|f| {
            f.fleet
                .by_type()
                .into_keys()
                .map(|(t, c)| format!("{t} {c}"))
        })
        .collect();
    let mut layers: BTreeMap<String, Vec<(f64, f64)>> =
        keys.into_iter().map(|k| (k, Vec::new())).collect();
    for f in &report.timeline {
        let counts: BTreeMap<String, usize> = f
            .fleet
            .by_type()
            .into_iter()
            .map(|((t, c), n)| (format!("{t} {c}"), n.nodes))
            .collect();
        for (k, points) in &mut layers {
            points.push((f.at as f64, counts.get(k).copied().unwrap_or(0) as f64));
        }
    }
    layers.into_iter().collect()
}

/// The decisions of a run: launches with the policy's best options, disruptions executed,
/// moves the policy kept and moves the host overruled.
fn decisions(out: &mut String, run: &Run<'_>, compare: bool) {
    let rows: Vec<Decision<'_>> = run.report.decisions().collect();
    let heading = if compare {
        format!("Decisions — {}", run.label)
    } else {
        "Decisions".to_string()
    };
    let _ = write!(
        out,
        "<section class=\"decisions\"><h2>{}</h2><table><thead><tr><th>time</th><th>decision</th>\
         <th>nodes</th><th>what</th><th>policy</th><th>why / the policy's best options</th>\
         </tr></thead><tbody>",
        esc(&heading)
    );
    for d in rows.iter().take(DECISIONS_SHOWN) {
        let _ = writeln!(
            out,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td></tr>",
            d.class,
            clock(d.at),
            d.verb,
            esc(&d.nodes),
            esc(&d.what),
            esc(&d.policy),
            last_cell(d),
        );
    }
    out.push_str("</tbody></table>");
    if rows.len() > DECISIONS_SHOWN {
        let _ = write!(
            out,
            "<p>{} more decisions not shown (the summary counts them all).</p>",
            rows.len() - DECISIONS_SHOWN
        );
    }
    out.push_str("</section>\n");
}

/// The run's shadow candidates: how their answers compared with the serving policies', and
/// their latest disagreements.
fn shadows(out: &mut String, run: &Run<'_>, compare: bool) {
    if run.report.shadows.is_empty() {
        return;
    }
    let heading = if compare {
        format!("Shadow policies — {}", run.label)
    } else {
        "Shadow policies".to_string()
    };
    let _ = write!(
        out,
        "<section class=\"shadows\"><h2>{}</h2><table><thead><tr><th>policy</th><th>beside</th>\
         <th>compared</th><th>agreed</th><th>cost Δ $/h</th><th>disruptions serving / shadow</th>\
         <th>failures</th></tr></thead><tbody>",
        esc(&heading)
    );
    for (policy, t) in &run.report.shadows {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td><td>{:+.4}</td><td>{} / {}</td>\
             <td>{}</td></tr>",
            esc(policy),
            esc(&t.beside_text()),
            t.compared,
            t.agreed,
            t.agreement_percent()
                .map_or(String::new(), |p| format!(" ({p:.0}%)")),
            t.cost_delta_per_hour,
            t.disruptions_serving,
            t.disruptions_shadow,
            t.failures
        );
    }
    out.push_str("</tbody></table>");
    for (policy, t) in run
        .report
        .shadows
        .iter()
        .filter(|(_, t)| !t.recent.is_empty())
    {
        let _ = write!(
            out,
            "<h3>{} — latest disagreements</h3><table><thead><tr><th>time</th><th>for</th>\
             <th>serving</th><th>shadow</th><th>cost Δ $/h</th></tr></thead><tbody>",
            esc(policy)
        );
        for c in &t.recent {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:+.4}</td></tr>",
                clock(c.at),
                esc(&c.subject),
                esc(&c.serving),
                esc(&c.shadow),
                c.cost_delta_per_hour
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>\n");
}

/// A decision's last cell, escaped: its reason, or a launch's ranked options.
fn last_cell(d: &Decision<'_>) -> String {
    if d.ranked.is_empty() {
        return esc(&d.why);
    }
    let options = d
        .ranked
        .iter()
        .map(|r| {
            format!(
                "<li>{} {} {} — {} $/h — score {}</li>",
                esc(&r.instance_type),
                esc(r.capacity_type),
                esc(&r.zone),
                plain(r.price, 4),
                esc(&format!("{:.4}", r.score))
            )
        })
        .collect::<String>();
    format!("<ol>{options}</ol>")
}

/// The axes, grid and legend of a chart whose values reach `top`, and its plot's scale.
struct Plot {
    end: f64,
    top: f64,
}

impl Plot {
    fn x(&self, t: f64) -> f64 {
        LEFT + (WIDTH - LEFT - RIGHT) * (t / self.end)
    }

    fn y(&self, v: f64) -> f64 {
        HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * (v / self.top)
    }

    /// Gridlines with their labels, and the time axis.
    fn axes(&self, out: &mut String, unit: &str) {
        let step = nice_step(self.top);
        let mut v = 0.0;
        while v <= self.top + step * 1e-9 {
            let y = self.y(v);
            let _ = write!(
                out,
                "<line class=\"grid\" x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\"/>\
                 <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                WIDTH - RIGHT,
                LEFT - 6.0,
                y + 4.0,
                tick_label(v, step)
            );
            v += step;
        }
        let _ = write!(
            out,
            "<text class=\"unit\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"start\">{}</text>",
            4.0,
            TOP + 4.0,
            esc(unit)
        );
        let tstep = time_step(self.end);
        let mut t = 0.0;
        while t <= self.end + 1e-9 {
            let x = self.x(t);
            let _ = write!(
                out,
                "<line class=\"axis\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/>\
                 <text class=\"tick\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                HEIGHT - BOTTOM,
                HEIGHT - BOTTOM + 4.0,
                HEIGHT - 8.0,
                short_clock(t as i64)
            );
            t += tstep;
        }
    }
}

/// A line chart of step series; each series' `<g>` carries `data-series` with its name.
fn lines(id: &str, title: &str, unit: &str, series: &[Series], end: f64) -> String {
    let top = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max);
    let frame = Plot {
        end,
        top: nice_top(top),
    };
    let mut out = chart_open(id, title);
    frame.axes(&mut out, unit);
    for (k, s) in series.iter().enumerate() {
        let path = step_path(&frame, &s.points);
        let last = s.points.last().map_or(0.0, |p| p.1);
        let _ = write!(
            out,
            "<g class=\"series\" data-series=\"{}\" data-last=\"{}\"><title>{}: {} at the end</title>\
             <path d=\"{path}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{}/></g>",
            esc(&s.name),
            last,
            esc(&s.name),
            last,
            s.color,
            if s.dashed {
                " stroke-dasharray=\"6 4\""
            } else {
                ""
            }
        );
        legend(&mut out, k, &s.legend, s.color, s.dashed);
    }
    out.push_str("</svg></figure>\n");
    out
}

/// A stacked step-area chart of `layers`; each layer's `<g>` carries `data-series`.
fn stacked(id: &str, title: &str, layers: &[(String, Vec<(f64, f64)>)], end: f64) -> String {
    let n = layers.first().map_or(0, |l| l.1.len());
    let mut below = vec![0.0; n];
    let top = (0..n)
        .map(|i| layers.iter().map(|l| l.1[i].1).sum::<f64>())
        .fold(0.0_f64, f64::max);
    let frame = Plot {
        end,
        top: nice_top(top),
    };
    let mut out = chart_open(id, title);
    frame.axes(&mut out, "nodes");
    for (k, (name, points)) in layers.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        let upper: Vec<(f64, f64)> = points
            .iter()
            .zip(&below)
            .map(|(p, b)| (p.0, p.1 + b))
            .collect();
        let lower: Vec<(f64, f64)> = points.iter().zip(&below).map(|(p, b)| (p.0, *b)).collect();
        let mut d = step_path(&frame, &upper);
        // Back along the layer below, so the polygon is the band between them.
        let back = step_points(&frame, &lower);
        for (x, y) in back.iter().rev() {
            let _ = write!(d, " L{x:.1},{y:.1}");
        }
        d.push_str(" Z");
        let peak = points.iter().map(|p| p.1).fold(0.0_f64, f64::max);
        let _ = write!(
            out,
            "<g class=\"series\" data-series=\"{}\" data-peak=\"{peak}\"><title>{}: at most {peak} nodes</title>\
             <path d=\"{d}\" fill=\"{color}\" fill-opacity=\"0.75\" stroke=\"{color}\"/></g>",
            esc(name),
            esc(name)
        );
        legend(&mut out, k, name, color, false);
        below = upper.iter().map(|p| p.1).collect();
    }
    if layers.is_empty() {
        let _ = write!(
            out,
            "<text class=\"empty\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">no nodes</text>",
            (LEFT + WIDTH - RIGHT) / 2.0,
            HEIGHT / 2.0
        );
    }
    out.push_str("</svg></figure>\n");
    out
}

fn chart_open(id: &str, title: &str) -> String {
    format!(
        "<figure class=\"chart\" id=\"{}\"><figcaption>{}</figcaption>\
         <svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\" aria-label=\"{}\">",
        esc(id),
        esc(title),
        esc(title)
    )
}

/// A legend entry right of the plot; past what fits, entries are left to the tooltips.
fn legend(out: &mut String, k: usize, name: &str, color: &str, dashed: bool) {
    let y = TOP + 6.0 + 15.0 * k as f64;
    if y > HEIGHT - BOTTOM {
        return;
    }
    let x = WIDTH - RIGHT + 12.0;
    let _ = write!(
        out,
        "<line x1=\"{x}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{color}\" stroke-width=\"3\"{}/>\
         <text class=\"legend\" x=\"{}\" y=\"{}\">{}</text>",
        x + 18.0,
        if dashed {
            " stroke-dasharray=\"4 3\""
        } else {
            ""
        },
        x + 24.0,
        y + 4.0,
        esc(&truncate(name, 26))
    );
}

/// The screen points of a step line: each value held until the next point, the last held to
/// the end.
fn step_points(frame: &Plot, points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len() * 2 + 1);
    let mut last: Option<f64> = None;
    for &(t, v) in points {
        let x = frame.x(t);
        let y = frame.y(v);
        if let Some(prev) = last {
            if (prev - y).abs() < 0.05 {
                continue;
            }
            out.push((x, prev));
        }
        out.push((x, y));
        last = Some(y);
    }
    if let Some(prev) = last {
        out.push((frame.x(frame.end), prev));
    }
    out
}

fn step_path(frame: &Plot, points: &[(f64, f64)]) -> String {
    let mut d = String::new();
    for (i, (x, y)) in step_points(frame, points).iter().enumerate() {
        let _ = write!(d, "{}{x:.1},{y:.1}", if i == 0 { "M" } else { " L" });
    }
    d
}

/// The axis' top: the maximum rounded up to a whole step (1 for an all-zero chart).
fn nice_top(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let step = nice_step(max);
    (max / step).ceil() * step
}

/// A step of 1, 2 or 5 times a power of ten giving 3 to 6 gridlines.
fn nice_step(max: f64) -> f64 {
    let raw = (max / 4.0).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    mag * if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    }
}

fn tick_label(v: f64, step: f64) -> String {
    let places = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    plain(v, places)
}

/// A time step of whole minutes or hours giving at most 8 ticks.
fn time_step(end: f64) -> f64 {
    [
        60.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 10800.0, 21600.0, 43200.0, 86400.0,
    ]
    .into_iter()
    .find(|s| end / s <= 8.0)
    .unwrap_or(86400.0 * (end / 86400.0 / 8.0).ceil())
}

/// `1h30m` / `45m` / `0m`.
fn short_clock(t: i64) -> String {
    match (t / 3600, (t / 60) % 60) {
        (0, m) => format!("{m}m"),
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h{m:02}m"),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// Text made safe inside HTML elements and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fff}\
h1{font-size:22px}h2{font-size:17px;margin:18px 0 6px}\
pre{background:#f6f6f6;padding:8px;white-space:pre-wrap;font-size:12px}\
#summary{display:flex;gap:16px;flex-wrap:wrap}.run{flex:1;min-width:420px}\
figure.chart{margin:14px 0}figcaption{font-weight:600;margin-bottom:4px}\
svg{max-width:100%;height:auto;background:#fff}\
.grid{stroke:#e4e4e4}.axis{stroke:#999}.tick,.legend,.unit,.empty{font-size:11px;fill:#444}\
table{border-collapse:collapse;font-size:12px;width:100%}\
th,td{border-bottom:1px solid #e4e4e4;padding:3px 6px;text-align:left;vertical-align:top}\
td ol{margin:0;padding-left:18px}tr.overruled td:nth-child(2){color:#b00}\
tr.kept td:nth-child(2){color:#a60}tr.executed td:nth-child(2){color:#070}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_a_policy_cannot_open_an_element() {
        assert_eq!(
            esc("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
        let d = Decision {
            at: 0,
            class: "kept",
            verb: "kept by the policy",
            nodes: "n1".into(),
            what: String::new(),
            policy: String::new(),
            why: "<img src=x onerror=alert(1)>".into(),
            ranked: &[],
        };
        let why = last_cell(&d);
        assert!(!why.contains('<'), "{why}");
    }

    #[test]
    fn axes_end_on_a_round_number_above_the_data() {
        assert_eq!(nice_top(0.0), 1.0);
        assert_eq!(nice_top(7.0), 8.0);
        assert_eq!(nice_top(0.93), 1.0);
        assert_eq!(nice_top(123.0), 150.0);
        assert_eq!(time_step(3600.0), 600.0);
        assert_eq!(time_step(86400.0), 10800.0);
        assert_eq!(short_clock(5400), "1h30m");
    }

    #[test]
    fn a_step_line_holds_each_value_until_the_next_and_to_the_end() {
        let frame = Plot {
            end: 100.0,
            top: 10.0,
        };
        let pts = step_points(&frame, &[(0.0, 0.0), (50.0, 0.0), (60.0, 10.0)]);
        let xs: Vec<f64> = pts.iter().map(|p| p.0).collect();
        assert_eq!(
            xs,
            vec![frame.x(0.0), frame.x(60.0), frame.x(60.0), frame.x(100.0)]
        );
        assert_eq!(pts[1].1, frame.y(0.0));
        assert_eq!(pts[2].1, frame.y(10.0));
    }
}
