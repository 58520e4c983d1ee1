//! What a simulation did: its events (the log a controller would write), the cluster at the end,
//! and the figures of the summary table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::cluster::{Node, Pod};
pub use crate::controller::events::{DisruptionRound, EventKind, RankedOffer};
use crate::fleet::FleetView;

/// Something the controllers did, at a virtual time.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Seconds since the start.
    pub at: i64,
    pub kind: EventKind,
}

/// `1h02m03s`-style virtual time.
pub fn clock(at: i64) -> String {
    format!("{}h{:02}m{:02}s", at / 3600, (at / 60) % 60, at % 60)
}

/// The end state and figures of a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub events: Vec<Event>,
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
    /// Pods pending at the end, with the last reason given.
    pub still_pending: Vec<(String, String)>,
    /// Seconds from creation to running, per pod that started.
    pub pending_seconds: Vec<f64>,
    /// USD spent over the run (every node billed from launch to termination).
    pub cost_usd: f64,
    /// The fleet at the end: what the summary's table and cost line print.
    pub end: FleetView,
    /// The bound of the pods running at the end with each resource pooled over the fleet
    /// ([`crate::cluster::Cluster::pooled_running_bound`]): printed beside the other.
    pub pooled_bound_per_hour: Option<f64>,
    /// The fleet after every step (with [`super::SimOptions::timeline`]): what the HTML report
    /// charts and `dovetail top` replays. Its last frame is `end`.
    pub timeline: Vec<Frame>,
    pub duration_secs: i64,
    pub launched: u32,
    /// Pods kube-scheduler bound while the controller's nomination held, and how many of them
    /// it bound elsewhere than nominated (it never reads nominations).
    pub nominated_binds: u32,
    pub off_plan_binds: u32,
    /// Nodes disrupted, by reason.
    pub disruptions: BTreeMap<String, u32>,
    pub evictions: u32,
    /// Per NodePool: the most nodes disrupting at once, and the pool's size at that moment.
    pub peak_disrupting: BTreeMap<String, (u32, u32)>,
    /// Disruption passes that had candidates.
    pub disruption_rounds: Vec<DisruptionRound>,
    /// The interruption queue's counters (with `--cloud aws` and a queue).
    pub interruption: crate::interruption::Metrics,
    /// Times the controller was stopped and started afresh (`SimOptions::crash_after`).
    pub restarts: u32,
    /// Every policy that failed a decision, with how often, why, and what decided instead.
    pub policy_failures: BTreeMap<String, crate::policy::FailureTally>,
    /// Every shadow candidate's record: its answers compared with the serving policies' (the
    /// disagreements' times count from the start).
    pub shadows: crate::policy::shadow::ShadowTallies,
}

/// The fleet at one moment of a run, with the run's counters so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Seconds since the start.
    pub at: i64,
    pub fleet: FleetView,
    /// Nodes disrupted so far, by reason.
    pub disruptions: BTreeMap<String, u32>,
    /// Pods evicted so far.
    pub evictions: u32,
}

impl Report {
    /// USD per hour of the nodes at the end.
    pub fn cost_per_hour(&self) -> f64 {
        self.end.cost_per_hour
    }

    /// The LP lower bound of the pods running at the end, USD per hour
    /// ([`crate::cluster::Cluster::running_bound`]).
    pub fn bound_per_hour(&self) -> Option<f64> {
        self.end.bound_per_hour
    }

    /// The `q` quantile of pending times, seconds.
    pub fn pending_quantile(&self, q: f64) -> Option<f64> {
        let mut waits = self.pending_seconds.clone();
        if waits.is_empty() {
            return None;
        }
        waits.sort_by(f64::total_cmp);
        Some(waits[((waits.len() as f64 * q).ceil() as usize).clamp(1, waits.len()) - 1])
    }

    /// Events of one kind, by a predicate.
    pub fn events_where(&self, f: impl Fn(&EventKind) -> bool) -> Vec<&Event> {
        self.events.iter().filter(|e| f(&e.kind)).collect()
    }

    /// How `other` differs from this run (other minus this): what `--compare` prints.
    pub fn difference(&self, other: &Report) -> Difference {
        let disrupted = |r: &Report| i64::from(r.disruptions.values().sum::<u32>());
        Difference {
            cost_usd: other.cost_usd - self.cost_usd,
            cost_ratio: if self.cost_usd > 0.0 {
                other.cost_usd / self.cost_usd
            } else {
                1.0
            },
            cost_per_hour: other.cost_per_hour() - self.cost_per_hour(),
            disrupted: disrupted(other) - disrupted(self),
            evicted: i64::from(other.evictions) - i64::from(self.evictions),
            launched: i64::from(other.launched) - i64::from(self.launched),
            pending_p50: other
                .pending_quantile(0.5)
                .zip(self.pending_quantile(0.5))
                .map(|(b, a)| b - a),
        }
    }

    /// The summary table.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<20} {:<10} {:>6} {:>6} {:>10}",
            "instance type", "capacity", "nodes", "pods", "$/hour"
        );
        for ((t, cap), n) in self.end.by_type() {
            let _ = writeln!(
                out,
                "{t:<20} {cap:<10} {:>6} {:>6} {:>10.4}",
                n.nodes, n.pods, n.cost_per_hour
            );
        }
        let running = self.end.running;
        let q = |q: f64| {
            self.pending_quantile(q)
                .map_or("-".into(), |s| format!("{s:.0}s"))
        };
        let _ = writeln!(
            out,
            "pods: {running} running of {}; pending p50 {} / p99 {}",
            self.end.pods,
            q(0.5),
            q(0.99)
        );
        let hours = self.duration_secs as f64 / 3600.0;
        let now = self.cost_per_hour();
        let pooled = match self.pooled_bound_per_hour {
            Some(p) if p > 0.0 => format!(
                "; with each resource pooled over the fleet {} $/hour: {:.2}×",
                plain(p, 4),
                now / p
            ),
            _ => String::new(),
        };
        let bound = match self.bound_per_hour() {
            Some(b) if b > 0.0 => format!(
                " (LP bound for the running pods, each on a type it fits, {} $/hour: {:.2}×{pooled})",
                plain(b, 4),
                now / b
            ),
            Some(_) => " (LP bound for the running pods 0.0000 $/hour)".into(),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "cost: {} $/hour at the end{bound}; {} $ over {} ({} $/hour on average)",
            plain(now, 4),
            plain(self.cost_usd, 4),
            clock(self.duration_secs),
            plain(
                if hours > 0.0 {
                    self.cost_usd / hours
                } else {
                    0.0
                },
                4
            )
        );
        let disruptions = if self.disruptions.is_empty() {
            "none".to_string()
        } else {
            self.disruptions
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "nodes launched: {}; disrupted: {disruptions}; pods evicted: {}",
            self.launched, self.evictions
        );
        if self.nominated_binds > 0 {
            let _ = writeln!(
                out,
                "kube-scheduler bound {} of {} nominated pods elsewhere than planned",
                self.off_plan_binds, self.nominated_binds
            );
        }
        for (pod, reason) in &self.still_pending {
            let _ = writeln!(out, "pending {pod}: {reason}");
        }
        for (policy, tally) in &self.policy_failures {
            let _ = writeln!(out, "POLICY FAILED: {policy} {tally}");
        }
        for (policy, tally) in &self.shadows {
            let _ = writeln!(out, "shadow {policy} ({tally})");
        }
        out
    }
}

/// The difference of two runs of one scenario (second minus first).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Difference {
    /// USD over the run.
    pub cost_usd: f64,
    /// Second run's cost over the first's.
    pub cost_ratio: f64,
    /// USD per hour at the end.
    pub cost_per_hour: f64,
    pub disrupted: i64,
    pub evicted: i64,
    pub launched: i64,
    /// Seconds, the median pending time's change (when both runs had pending pods).
    pub pending_p50: Option<f64>,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "cost over the run: {} $ ({}%)",
            signed(self.cost_usd, 4),
            signed((self.cost_ratio - 1.0) * 100.0, 1)
        )?;
        writeln!(
            f,
            "cost at the end: {} $/hour",
            signed(self.cost_per_hour, 4)
        )?;
        writeln!(
            f,
            "nodes disrupted: {:+}; pods evicted: {:+}",
            self.disrupted, self.evicted
        )?;
        write!(f, "nodes launched: {:+}", self.launched)?;
        if let Some(p) = self.pending_p50 {
            write!(f, "; pending p50: {} s", signed(p, 0))?;
        }
        writeln!(f)
    }
}

/// `x` with its sign and `places` decimals, and no sign at all when it rounds to zero (a
/// difference of `-0.0000` says nothing but looks like a loss).
pub fn signed(x: f64, places: usize) -> String {
    let s = format!("{x:+.places$}");
    if s[1..].chars().all(|c| c == '0' || c == '.') {
        s[1..].to_string()
    } else {
        s
    }
}

/// `x` with `places` decimals, `-0` shown as `0`.
pub fn plain(x: f64, places: usize) -> String {
    let s = format!("{x:.places$}");
    match s.strip_prefix('-') {
        Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => rest.to_string(),
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_cluster_costs_zero_without_a_sign() {
        let r = Report {
            end: FleetView {
                bound_per_hour: Some(-0.0),
                ..FleetView::default()
            },
            cost_usd: -0.0,
            duration_secs: 60,
            ..Report::default()
        };
        let text = r.summary();
        assert!(!text.contains("-0"), "{text}");
        assert!(
            text.contains(
                "cost: 0.0000 $/hour at the end (LP bound for the running pods 0.0000 $/hour); 0.0000 $ over 0h01m00s (0.0000 $/hour on average)"
            ),
            "{text}"
        );
    }

    #[test]
    fn differences_that_round_to_zero_carry_no_sign() {
        let d = Difference {
            cost_usd: -0.00001,
            cost_ratio: 0.9999999,
            cost_per_hour: 0.0,
            disrupted: 0,
            evicted: -2,
            launched: 0,
            pending_p50: Some(-0.2),
        };
        let text = d.to_string();
        assert_eq!(
            text,
            "cost over the run: 0.0000 $ (0.0%)\ncost at the end: 0.0000 $/hour\nnodes disrupted: +0; pods evicted: -2\nnodes launched: +0; pending p50: 0 s\n"
        );
        assert_eq!(signed(-1.23456, 4), "-1.2346");
        assert_eq!(signed(0.5, 1), "+0.5");
        assert_eq!(plain(-0.00001, 4), "0.0000");
        assert_eq!(plain(-1.5, 1), "-1.5");
    }
}
