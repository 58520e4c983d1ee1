//! A run's decisions in words: what `simulate --decisions` prints and the HTML report tabulates.
//! One reading of the events, so the page and the terminal never tell two stories.

use std::fmt::Write as _;

use super::report::{Event, EventKind, RankedOffer, Report, clock, plain};

/// One decision of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision<'a> {
    /// Seconds since the start.
    pub at: i64,
    /// A stable class name (`launched`, `executed`, `kept`, …).
    pub class: &'static str,
    /// What was decided, for a reader.
    pub verb: &'static str,
    /// The nodes (or claim) it concerns.
    pub nodes: String,
    /// What it does: the launch, or the move and its savings.
    pub what: String,
    /// The policy that decided, where one did.
    pub policy: String,
    /// Why: the reason given, where one was.
    pub why: String,
    /// A launch's best options as the policy ranked them.
    pub ranked: &'a [RankedOffer],
}

impl Report {
    /// Every decision of the run, in order: launches and launches refused, moves executed, kept by
    /// the policy or overruled by the host, and policy failures.
    pub fn decisions(&self) -> impl Iterator<Item = Decision<'_>> {
        self.events.iter().filter_map(decision)
    }

    /// The decisions, one line each (a launch's ranked options indented below it).
    pub fn decisions_text(&self) -> String {
        let mut out = String::new();
        for d in self.decisions() {
            let mut line = format!("{} {:<20} {}", clock(d.at), d.verb, d.nodes);
            for part in [&d.what, &d.why] {
                if !part.is_empty() {
                    let _ = write!(line, " — {part}");
                }
            }
            if !d.policy.is_empty() {
                let _ = write!(line, " [{}]", d.policy);
            }
            let _ = writeln!(out, "{}", line.trim_end());
            for (i, r) in d.ranked.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "          {}. {} {} {} {} $/h score {:.4}",
                    i + 1,
                    r.instance_type,
                    r.capacity_type,
                    r.zone,
                    plain(r.price, 4),
                    r.score
                );
            }
        }
        for (policy, tally) in &self.shadows {
            let _ = writeln!(
                out,
                "shadow {policy}: its latest {} disagreement{} of {} decision{} compared",
                tally.recent.len(),
                if tally.recent.len() == 1 { "" } else { "s" },
                tally.compared,
                if tally.compared == 1 { "" } else { "s" },
            );
            for c in &tally.recent {
                let _ = writeln!(
                    out,
                    "{} {:<20} {} — serving: {}; shadow: {} ({:+.4} $/h)",
                    clock(c.at),
                    "shadow disagrees",
                    c.subject,
                    c.serving,
                    c.shadow,
                    c.cost_delta_per_hour
                );
            }
        }
        out
    }
}

/// The decision an event records, if it records one.
fn decision(e: &Event) -> Option<Decision<'_>> {
    let d = |class, verb, nodes: String, what: String, policy: &str, why: &str| Decision {
        at: e.at,
        class,
        verb,
        nodes,
        what,
        policy: policy.to_string(),
        why: why.to_string(),
        ranked: &[],
    };
    Some(match &e.kind {
        EventKind::Launched {
            node,
            instance_type,
            zone,
            capacity_type,
            price,
            pods,
            policy,
            ranked,
        } => Decision {
            ranked,
            ..d(
                "launched",
                "launched",
                node.clone(),
                format!(
                    "{instance_type} {capacity_type} in {zone}, {} $/h, {pods} pod{}",
                    plain(*price, 4),
                    if *pods == 1 { "" } else { "s" }
                ),
                policy,
                "",
            )
        },
        EventKind::NotLaunched { claim, reason } => d(
            "not-launched",
            "not launched",
            claim.clone(),
            String::new(),
            "",
            reason,
        ),
        EventKind::Disrupting {
            nodes,
            reason,
            replacement,
            savings_per_hour,
            policy,
        } => d(
            "executed",
            "executed",
            nodes.join(", "),
            match replacement {
                Some(r) => format!(
                    "{reason}: replaced by {r}, saves {} $/h",
                    plain(*savings_per_hour, 4)
                ),
                None => format!(
                    "{reason}: deleted, saves {} $/h",
                    plain(*savings_per_hour, 4)
                ),
            },
            policy,
            "",
        ),
        EventKind::Kept { nodes, why } => d(
            "kept",
            "kept by the policy",
            nodes.join(", "),
            String::new(),
            "",
            why,
        ),
        EventKind::Overruled { nodes, why } => d(
            "overruled",
            "overruled by the host",
            nodes.join(", "),
            String::new(),
            "",
            why,
        ),
        EventKind::PolicyFailed { policy, error } => d(
            "policy-failed",
            "policy failed",
            String::new(),
            String::new(),
            policy,
            error,
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(events: Vec<EventKind>) -> Report {
        Report {
            events: events
                .into_iter()
                .enumerate()
                .map(|(i, kind)| Event {
                    at: 60 * i as i64,
                    kind,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn launches_moves_and_keeps_read_as_one_line_each() {
        let r = report(vec![
            EventKind::Ready { node: "n1".into() },
            EventKind::Launched {
                node: "n1".into(),
                instance_type: "c6g.large".into(),
                zone: "us-east-1a".into(),
                capacity_type: "spot",
                price: 0.034,
                pods: 3,
                policy: "graviton".into(),
                ranked: vec![RankedOffer {
                    instance_type: "c6g.large".into(),
                    zone: "us-east-1a".into(),
                    capacity_type: "spot",
                    price: 0.034,
                    score: 999.966,
                }],
            },
            EventKind::Kept {
                nodes: vec!["n1".into()],
                why: "n1 is 10 min old".into(),
            },
        ]);
        let text = r.decisions_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("0h01m00s launched")
                && lines[0].contains("c6g.large spot in us-east-1a, 0.0340 $/h, 3 pods")
                && lines[0].ends_with("[graviton]"),
            "{text}"
        );
        assert!(lines[1].contains("1. c6g.large spot us-east-1a 0.0340 $/h score 999.9660"));
        assert!(
            lines[2].starts_with("0h02m00s kept by the policy")
                && lines[2].ends_with("n1 — n1 is 10 min old"),
            "{text}"
        );
    }
}
