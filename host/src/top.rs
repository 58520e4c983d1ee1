//! `dovetail top`: the fleet in a terminal, in the spirit of eks-node-viewer — one line per node
//! with its requests against allocatable as bars, totals per NodePool and for the cluster with
//! the cost and the LP bound, NodeClaims in flight and nodes being disrupted with why and by
//! which policy. It draws a [`FleetView`] and nothing else: the same figures the simulation's
//! summary prints, from a cluster ([`crate::kubernetes::fleet_watch`]) or from a simulation's
//! timeline replayed at a speed the user controls.

use std::time::{Duration, Instant};

use ratatui::Frame as Screen;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table};

use crate::fleet::{FleetView, NodeView, share};
use crate::sim::report::{Frame, clock, plain};

/// Where the fleet comes from.
pub enum Feed {
    /// A simulation's timeline, played back on a clock of its own.
    Replay(Replay),
    /// A cluster: the latest view, refreshed by [`Live::poll`].
    Live(Live),
}

/// A simulation's frames and where the playback is.
pub struct Replay {
    pub name: String,
    frames: Vec<Frame>,
    /// Virtual seconds since the start.
    t: f64,
    /// Virtual seconds per real second.
    pub speed: f64,
    pub paused: bool,
    end: i64,
}

impl Replay {
    /// Plays `frames` (in time order) from the start.
    pub fn new(name: &str, frames: Vec<Frame>, end: i64, speed: f64) -> Self {
        Replay {
            name: name.to_string(),
            frames,
            t: 0.0,
            speed,
            paused: false,
            end,
        }
    }

    /// The frame on screen: the last at or before the playback's time.
    pub fn current(&self) -> Option<&Frame> {
        let i = self.frames.partition_point(|f| f.at as f64 <= self.t);
        self.frames.get(i.saturating_sub(1))
    }

    fn advance(&mut self, real: Duration) {
        if !self.paused {
            self.t = (self.t + real.as_secs_f64() * self.speed).min(self.end as f64);
        }
    }

    /// To the next (or, with `back`, the previous) frame, paused there.
    fn step(&mut self, back: bool) {
        self.paused = true;
        let now = self.current().map_or(0, |f| f.at);
        let next = if back {
            self.frames.iter().rev().find(|f| f.at < now)
        } else {
            self.frames.iter().find(|f| f.at > now)
        };
        if let Some(f) = next {
            self.t = f.at as f64;
        }
    }

    fn seek(&mut self, t: f64) {
        self.t = t.clamp(0.0, self.end as f64);
    }
}

/// A cluster's latest fleet, and where it is from.
pub struct Live {
    pub server: String,
    pub latest: Option<(FleetView, Instant)>,
    /// Asks for the next view; `None` while there is none newer.
    pub poll: Box<dyn FnMut() -> Option<FleetView>>,
}

/// How the node table is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Name,
    NodePool,
    Cost,
    Cpu,
    Memory,
    Age,
}

impl Sort {
    fn next(self) -> Self {
        match self {
            Sort::Name => Sort::NodePool,
            Sort::NodePool => Sort::Cost,
            Sort::Cost => Sort::Cpu,
            Sort::Cpu => Sort::Memory,
            Sort::Memory => Sort::Age,
            Sort::Age => Sort::Name,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Sort::Name => "name",
            Sort::NodePool => "nodepool",
            Sort::Cost => "$/hour",
            Sort::Cpu => "cpu",
            Sort::Memory => "memory",
            Sort::Age => "age",
        }
    }
}

/// What the user chose to see.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub sort: Sort,
    /// Only this NodePool's nodes, or all.
    pub pool: Option<String>,
    /// First node row shown.
    pub scroll: usize,
}

impl Default for View {
    fn default() -> Self {
        View {
            sort: Sort::Name,
            pool: None,
            scroll: 0,
        }
    }
}

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Key {
    Quit,
    Pause,
    Faster,
    Slower,
    Next,
    Previous,
    Start,
    End,
    Sort,
    Pool,
    Up,
    Down,
}

fn key(code: KeyCode, modifiers: KeyModifiers) -> Option<Key> {
    Some(match code {
        KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => Key::Quit,
        KeyCode::Char('q') | KeyCode::Esc => Key::Quit,
        KeyCode::Char(' ') => Key::Pause,
        KeyCode::Char('+' | '=') => Key::Faster,
        KeyCode::Char('-' | '_') => Key::Slower,
        KeyCode::Char('n' | '.') | KeyCode::Right => Key::Next,
        KeyCode::Char('N' | ',') | KeyCode::Left => Key::Previous,
        KeyCode::Home | KeyCode::Char('g') => Key::Start,
        KeyCode::End | KeyCode::Char('G') => Key::End,
        KeyCode::Char('s') => Key::Sort,
        KeyCode::Char('p') => Key::Pool,
        KeyCode::Up | KeyCode::Char('k') => Key::Up,
        KeyCode::Down | KeyCode::Char('j') => Key::Down,
        _ => return None,
    })
}

/// Applies a key; `false` to quit.
fn apply(k: Key, feed: &mut Feed, view: &mut View) -> bool {
    let fleet = match feed {
        Feed::Replay(r) => r.current().map(|f| f.fleet.clone()),
        Feed::Live(l) => l.latest.as_ref().map(|(f, _)| f.clone()),
    };
    match (k, feed) {
        (Key::Quit, _) => return false,
        (Key::Pause, Feed::Replay(r)) => r.paused = !r.paused,
        (Key::Faster, Feed::Replay(r)) => r.speed = (r.speed * 2.0).min(1_048_576.0),
        (Key::Slower, Feed::Replay(r)) => r.speed = (r.speed / 2.0).max(0.25),
        (Key::Next, Feed::Replay(r)) => r.step(false),
        (Key::Previous, Feed::Replay(r)) => r.step(true),
        (Key::Start, Feed::Replay(r)) => r.seek(0.0),
        (Key::End, Feed::Replay(r)) => r.seek(r.end as f64),
        (Key::Sort, _) => view.sort = view.sort.next(),
        (Key::Pool, _) => {
            let names: Vec<String> = fleet
                .map(|f| f.pools.iter().map(|p| p.name.clone()).collect())
                .unwrap_or_default();
            view.pool = match &view.pool {
                None => names.first().cloned(),
                Some(p) => names
                    .iter()
                    .position(|n| n == p)
                    .and_then(|i| names.get(i + 1).cloned()),
            };
            view.scroll = 0;
        }
        (Key::Up, _) => view.scroll = view.scroll.saturating_sub(1),
        (Key::Down, _) => view.scroll += 1,
        _ => {}
    }
    true
}

/// Runs the view until the user quits; the terminal is restored on every way out.
pub fn run(mut feed: Feed) -> std::io::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let mut view = View::default();
    let mut last = Instant::now();
    let result = (|| -> std::io::Result<()> {
        loop {
            if let Feed::Live(l) = &mut feed
                && let Some(v) = (l.poll)()
            {
                l.latest = Some((v, Instant::now()));
            }
            terminal.draw(|s| draw(s, &feed, &view))?;
            if event::poll(Duration::from_millis(100))?
                && let Event::Key(k) = event::read()?
                && k.kind != KeyEventKind::Release
                && let Some(k) = key(k.code, k.modifiers)
                && !apply(k, &mut feed, &mut view)
            {
                return Ok(());
            }
            let now = Instant::now();
            if let Feed::Replay(r) = &mut feed {
                r.advance(now - last);
            }
            last = now;
        }
    })();
    ratatui::restore();
    result
}

/// The whole screen.
pub fn draw(s: &mut Screen<'_>, feed: &Feed, view: &View) {
    let (fleet, status) = match feed {
        Feed::Replay(r) => {
            let at = r.t as i64;
            let state = if r.paused {
                "paused".to_string()
            } else if r.t >= r.end as f64 {
                "at the end".to_string()
            } else {
                "playing".to_string()
            };
            (
                r.current().map(|f| f.fleet.later(at - f.at)),
                format!(
                    "replay {} · t={} of {} · {state} · speed {}×",
                    r.name,
                    clock(at),
                    clock(r.end),
                    plain(r.speed, if r.speed < 1.0 { 2 } else { 0 })
                ),
            )
        }
        Feed::Live(l) => (
            l.latest.as_ref().map(|(f, _)| f.clone()),
            match &l.latest {
                Some((_, at)) => format!(
                    "cluster {} · read-only · updated {}s ago",
                    l.server,
                    at.elapsed().as_secs()
                ),
                None => format!("cluster {} · waiting for the first view", l.server),
            },
        ),
    };
    let fleet = fleet.unwrap_or_default();
    let fleet = &fleet;
    let pools = fleet.pools.len() as u16;
    let moving = (fleet.in_flight.len() + fleet.disrupting().count()) as u16;
    let shadows = fleet.shadows.len().min(4) as u16;
    let [head, totals, shadow_area, nodes, moving_area, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(pools + 3),
        Constraint::Length(shadows),
        Constraint::Min(4),
        Constraint::Length(moving.clamp(1, 8) + 2),
        Constraint::Length(1),
    ])
    .areas(s.area());
    s.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled("dovetail top", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(format!(" — {status}")),
        ])),
        head,
    );
    draw_totals(s, totals, fleet);
    // Shadow candidates: what a policy under trial would have done, beside the serving one.
    let lines: Vec<Line<'_>> = fleet
        .shadows
        .iter()
        .take(4)
        .map(|l| {
            Line::from(Span::styled(
                format!("shadow {l}"),
                Style::new().fg(Color::Magenta),
            ))
        })
        .collect();
    s.render_widget(Paragraph::new(lines), shadow_area);
    draw_nodes(s, nodes, fleet, view);
    draw_moving(s, moving_area, fleet);
    let keys_text = match feed {
        Feed::Replay(_) => {
            "q quit · space pause · +/- speed · n/N next/previous step · g/G start/end · s sort · p nodepool · ↑/↓ scroll"
        }
        Feed::Live(_) => "q quit · s sort · p nodepool · ↑/↓ scroll",
    };
    s.render_widget(
        Paragraph::new(keys_text).style(Style::new().fg(Color::DarkGray)),
        keys,
    );
}

/// `██████░░░░  62%`: `used` of `of` as a bar `width` cells wide.
pub fn bar(used: u64, of: u64, width: usize) -> String {
    let f = share(used, of).clamp(0.0, 1.0);
    let full = (f * width as f64).floor() as usize;
    format!(
        "{}{} {:>3}%",
        "█".repeat(full),
        "░".repeat(width - full),
        (share(used, of) * 100.0).round() as u64
    )
}

fn bar_style(used: u64, of: u64) -> Style {
    let f = share(used, of);
    Style::new().fg(if f >= 0.9 {
        Color::Red
    } else if f >= 0.6 {
        Color::Yellow
    } else {
        Color::Green
    })
}

fn bound_text(cost: f64, bound: Option<f64>) -> String {
    match bound {
        Some(b) if b > 0.0 => format!("{} ({:.2}×)", plain(b, 4), cost / b),
        Some(_) => "0.0000".into(),
        None => "-".into(),
    }
}

fn draw_totals(s: &mut Screen<'_>, area: Rect, fleet: &FleetView) {
    let header = Row::new([
        "",
        "NODES",
        "PODS",
        "CPU",
        "MEMORY",
        "$/HOUR",
        "LP BOUND $/HOUR",
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    let mut rows = Vec::new();
    for p in &fleet.pools {
        rows.push(Row::new([
            Cell::from(format!("nodepool {}", p.name)),
            Cell::from(p.nodes.to_string()),
            Cell::from(p.pods.to_string()),
            Cell::from(bar(p.requested.cpu_millis, p.allocatable.cpu_millis, 10))
                .style(bar_style(p.requested.cpu_millis, p.allocatable.cpu_millis)),
            Cell::from(bar(
                p.requested.memory_bytes,
                p.allocatable.memory_bytes,
                10,
            ))
            .style(bar_style(
                p.requested.memory_bytes,
                p.allocatable.memory_bytes,
            )),
            Cell::from(plain(p.cost_per_hour, 4)),
            Cell::from(bound_text(p.cost_per_hour, p.bound_per_hour)),
        ]));
    }
    let (cpu, cpu_of, mem, mem_of) = fleet.pools.iter().fold((0, 0, 0, 0), |a, p| {
        (
            a.0 + p.requested.cpu_millis,
            a.1 + p.allocatable.cpu_millis,
            a.2 + p.requested.memory_bytes,
            a.3 + p.allocatable.memory_bytes,
        )
    });
    rows.push(
        Row::new([
            Cell::from("cluster"),
            Cell::from(fleet.nodes.len().to_string()),
            Cell::from(format!(
                "{} ({} running, {} pending)",
                fleet.pods, fleet.running, fleet.pending
            )),
            Cell::from(bar(cpu, cpu_of, 10)).style(bar_style(cpu, cpu_of)),
            Cell::from(bar(mem, mem_of, 10)).style(bar_style(mem, mem_of)),
            Cell::from(plain(fleet.cost_per_hour, 4)),
            Cell::from(bound_text(fleet.cost_per_hour, fleet.bound_per_hour)),
        ])
        .style(Style::new().add_modifier(Modifier::BOLD)),
    );
    let widths = [
        Constraint::Length(22),
        Constraint::Length(6),
        Constraint::Length(28),
        Constraint::Length(16),
        Constraint::Length(16),
        Constraint::Length(9),
        Constraint::Length(18),
    ];
    s.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::new().borders(Borders::TOP).title(" totals ")),
        area,
    );
}

/// The nodes shown, in the chosen order.
pub fn shown<'a>(fleet: &'a FleetView, view: &View) -> Vec<&'a NodeView> {
    let mut nodes: Vec<&NodeView> = fleet
        .nodes
        .iter()
        .filter(|n| view.pool.as_ref().is_none_or(|p| &n.node_pool == p))
        .collect();
    let cpu = |n: &NodeView| share(n.requested.cpu_millis, n.allocatable.cpu_millis);
    let mem = |n: &NodeView| share(n.requested.memory_bytes, n.allocatable.memory_bytes);
    match view.sort {
        Sort::Name => nodes.sort_by(|a, b| a.name.cmp(&b.name)),
        Sort::NodePool => {
            nodes.sort_by(|a, b| (&a.node_pool, &a.name).cmp(&(&b.node_pool, &b.name)))
        }
        Sort::Cost => nodes.sort_by(|a, b| b.price.total_cmp(&a.price).then(a.name.cmp(&b.name))),
        Sort::Cpu => nodes.sort_by(|a, b| cpu(b).total_cmp(&cpu(a)).then(a.name.cmp(&b.name))),
        Sort::Memory => nodes.sort_by(|a, b| mem(b).total_cmp(&mem(a)).then(a.name.cmp(&b.name))),
        Sort::Age => nodes.sort_by(|a, b| b.age_secs.cmp(&a.age_secs).then(a.name.cmp(&b.name))),
    }
    nodes
}

fn age(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, (s / 60) % 60),
        s => format!("{}d{:02}h", s / 86400, (s / 3600) % 24),
    }
}

fn draw_nodes(s: &mut Screen<'_>, area: Rect, fleet: &FleetView, view: &View) {
    let nodes = shown(fleet, view);
    let title = format!(
        " nodes: {} of {} · sort {} · nodepool {} ",
        nodes.len(),
        fleet.nodes.len(),
        view.sort.label(),
        view.pool.as_deref().unwrap_or("all")
    );
    let header = Row::new([
        "NODE", "NODEPOOL", "TYPE", "CAPACITY", "ZONE", "AGE", "CPU", "MEMORY", "PODS", "$/HOUR",
        "STATE",
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    let rows = nodes.iter().skip(view.scroll).map(|n| {
        let state = match &n.disrupting {
            Some(d) => match &d.policy {
                Some(p) => format!("disrupting: {} ({p})", d.reason),
                None => format!("disrupting: {}", d.reason),
            },
            None if !n.ready => "launching".to_string(),
            None => "ready".to_string(),
        };
        let state_style = if n.disrupting.is_some() {
            Style::new().fg(Color::Magenta)
        } else if !n.ready {
            Style::new().fg(Color::Cyan)
        } else {
            Style::new()
        };
        Row::new([
            Cell::from(n.name.clone()),
            Cell::from(n.node_pool.clone()),
            Cell::from(n.instance_type.clone()),
            Cell::from(n.capacity_type),
            Cell::from(n.zone.clone()),
            Cell::from(age(n.age_secs)),
            Cell::from(bar(n.requested.cpu_millis, n.allocatable.cpu_millis, 8))
                .style(bar_style(n.requested.cpu_millis, n.allocatable.cpu_millis)),
            Cell::from(bar(n.requested.memory_bytes, n.allocatable.memory_bytes, 8)).style(
                bar_style(n.requested.memory_bytes, n.allocatable.memory_bytes),
            ),
            Cell::from(n.pods.to_string()),
            Cell::from(plain(n.price, 4)),
            Cell::from(state).style(state_style),
        ])
    });
    let widths = [
        Constraint::Length(16),
        Constraint::Length(10),
        Constraint::Length(13),
        Constraint::Length(9),
        Constraint::Length(11),
        Constraint::Length(7),
        Constraint::Length(14),
        Constraint::Length(14),
        Constraint::Length(5),
        Constraint::Length(7),
        Constraint::Min(12),
    ];
    s.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::new().borders(Borders::TOP).title(title)),
        area,
    );
}

fn draw_moving(s: &mut Screen<'_>, area: Rect, fleet: &FleetView) {
    let mut lines: Vec<Line> = fleet
        .in_flight
        .iter()
        .map(|c| {
            Line::from(if c.launched {
                format!(
                    "in flight   {:<16} {:<10} {} launched {} ago",
                    c.name,
                    c.node_pool,
                    c.instance_type,
                    age(c.age_secs)
                )
            } else {
                format!(
                    "in flight   {:<16} {:<10} {} created, not launched",
                    c.name, c.node_pool, c.instance_type
                )
            })
            .style(Style::new().fg(Color::Cyan))
        })
        .collect();
    for (n, d) in fleet.disrupting() {
        lines.push(
            Line::from(format!(
                "disrupting  {:<16} {:<10} {} for {} — {}{}",
                n.name,
                n.node_pool,
                d.reason,
                age(d.since_secs),
                d.policy
                    .as_ref()
                    .map_or("not a policy's move".to_string(), |p| format!(
                        "chosen by {p}"
                    )),
                if n.pods > 0 {
                    format!(", {} pods to move", n.pods)
                } else {
                    String::new()
                }
            ))
            .style(Style::new().fg(Color::Magenta)),
        );
    }
    if lines.is_empty() {
        lines.push(Line::from("nothing in flight, nothing being disrupted"));
    }
    s.render_widget(
        Paragraph::new(lines).block(
            Block::new()
                .borders(Borders::TOP)
                .title(" nodeclaims in flight · nodes being disrupted "),
        ),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{ClaimView, Disrupting, PoolView};
    use crate::scheduling::model::zero;
    use ratatui::backend::TestBackend;

    fn node(name: &str, pool: &str, cpu: u64, price: f64, age: i64) -> NodeView {
        let mut allocatable = zero();
        allocatable.cpu_millis = 2000;
        allocatable.memory_bytes = 4 << 30;
        let mut requested = zero();
        requested.cpu_millis = cpu;
        requested.memory_bytes = 1 << 30;
        NodeView {
            name: name.into(),
            node_pool: pool.into(),
            instance_type: "c6g.large".into(),
            capacity_type: "spot",
            zone: "us-east-1a".into(),
            age_secs: age,
            ready: true,
            requested,
            allocatable,
            pods: 3,
            price,
            disrupting: None,
        }
    }

    fn fleet() -> FleetView {
        let mut b = node("batch-00002", "batch", 500, 0.03, 50);
        b.disrupting = Some(Disrupting {
            reason: "underutilized",
            policy: Some("balanced".into()),
            since_secs: 12,
        });
        let nodes = vec![
            node("batch-00001", "batch", 1900, 0.05, 600),
            b,
            node("web-00001", "web", 1000, 0.08, 300),
        ];
        let pool = |name: &str, cost: f64| PoolView {
            name: name.into(),
            nodes: 1,
            pods: 3,
            requested: nodes[0].requested,
            allocatable: nodes[0].allocatable,
            cost_per_hour: cost,
            bound_per_hour: Some(cost / 2.0),
        };
        FleetView {
            now: 0,
            pools: vec![pool("batch", 0.08), pool("web", 0.08)],
            nodes,
            in_flight: vec![ClaimView {
                name: "web-00002".into(),
                node_pool: "web".into(),
                instance_type: "m7g.large".into(),
                launched: true,
                age_secs: 9,
            }],
            pods: 9,
            running: 9,
            pending: 0,
            unplaced: 0,
            oldest_pending_secs: None,
            cost_per_hour: 0.16,
            bound_per_hour: Some(0.08),
            shadows: vec![
                "arm-first — scoring beside cheapest · 4 compared · 50% agree · cost +0.0200 $/h"
                    .into(),
            ],
        }
    }

    fn screen(feed: &Feed, view: &View) -> String {
        let mut t = ratatui::Terminal::new(TestBackend::new(170, 30)).unwrap();
        t.draw(|s| draw(s, feed, view)).unwrap();
        let buf = t.backend().buffer().clone();
        let mut out = String::new();
        for y in 0..buf.area.height {
            for x in 0..buf.area.width {
                out.push_str(buf[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    fn live(f: FleetView) -> Feed {
        Feed::Live(Live {
            server: "https://k8s".into(),
            latest: Some((f, Instant::now())),
            poll: Box::new(|| None),
        })
    }

    #[test]
    fn the_screen_shows_nodes_totals_and_what_is_moving() {
        let feed = live(fleet());
        let text = screen(&feed, &View::default());
        assert!(text.contains("cluster https://k8s · read-only"), "{text}");
        assert!(
            text.contains("█████████░  95%"),
            "batch-00001's CPU bar\n{text}"
        );
        assert!(
            text.contains("disrupting: underutilized (balanced)"),
            "{text}"
        );
        assert!(text.contains("in flight   web-00002"), "{text}");
        assert!(text.contains("chosen by balanced"), "{text}");
        assert!(
            text.contains("0.0800 (2.00×)"),
            "the cluster's bound\n{text}"
        );
        assert!(
            text.contains("shadow arm-first — scoring beside cheapest · 4 compared · 50% agree"),
            "the shadow candidate's line\n{text}"
        );
    }

    #[test]
    fn sorting_and_the_nodepool_filter_reorder_and_narrow_the_nodes() {
        let mut feed = live(fleet());
        let mut view = View::default();
        let f = fleet();
        let names =
            |v: &View| -> Vec<String> { shown(&f, v).iter().map(|n| n.name.clone()).collect() };
        assert_eq!(names(&view), ["batch-00001", "batch-00002", "web-00001"]);
        apply(Key::Sort, &mut feed, &mut view);
        apply(Key::Sort, &mut feed, &mut view);
        assert_eq!(view.sort, Sort::Cost);
        assert_eq!(names(&view), ["web-00001", "batch-00001", "batch-00002"]);
        apply(Key::Pool, &mut feed, &mut view);
        assert_eq!(view.pool.as_deref(), Some("batch"));
        apply(Key::Pool, &mut feed, &mut view);
        assert_eq!(names(&view), ["web-00001"]);
        let text = screen(&feed, &view);
        assert!(
            text.contains("nodes: 1 of 3 · sort $/hour · nodepool web"),
            "{text}"
        );
        apply(Key::Pool, &mut feed, &mut view);
        assert_eq!(view.pool, None, "after the last pool, all again");
    }

    #[test]
    fn a_replay_follows_its_clock_and_steps_frame_by_frame() {
        let frame = |at: i64, nodes: usize| Frame {
            at,
            fleet: FleetView {
                nodes: fleet().nodes.into_iter().take(nodes).collect(),
                ..FleetView::default()
            },
            disruptions: Default::default(),
            evictions: 0,
        };
        let mut r = Replay::new(
            "s.yaml",
            vec![frame(0, 0), frame(60, 1), frame(600, 3)],
            900,
            10.0,
        );
        assert_eq!(r.current().unwrap().at, 0);
        r.advance(Duration::from_secs(7));
        assert_eq!(r.current().unwrap().at, 60, "70 virtual seconds in");
        r.step(false);
        assert!(r.paused);
        assert_eq!(r.current().unwrap().at, 600);
        r.advance(Duration::from_secs(100));
        assert_eq!(r.current().unwrap().at, 600, "paused");
        r.step(true);
        assert_eq!(r.current().unwrap().at, 60);
        let mut feed = Feed::Replay(r);
        let mut view = View::default();
        apply(Key::Faster, &mut feed, &mut view);
        apply(Key::End, &mut feed, &mut view);
        let text = screen(&feed, &view);
        assert!(
            text.contains("replay s.yaml · t=0h15m00s of 0h15m00s · paused · speed 20×"),
            "{text}"
        );
        assert!(text.contains("nodes: 3 of 3"), "{text}");
        assert!(!apply(Key::Quit, &mut feed, &mut view));
    }
}
