//! Building blocks for consolidators: choosing a consistent, ordered set of moves.

use crate::{Action, ConsolidationRound, DisruptionReason, Kept, Move, Params};

/// Settings of [`balanced`].
#[derive(Debug, Clone, PartialEq)]
pub struct BalancedOptions {
    /// A consolidation move must save at least this many USD per hour.
    pub min_savings_per_hour: f64,
    /// A replacement must cost at most `(1 - replace_margin)` of the nodes it replaces, so a
    /// node is not churned for a cent.
    pub replace_margin: f64,
    /// Whether under-used nodes are consolidated (Karpenter's `WhenEmptyOrUnderutilized`), or only
    /// empty ones (`WhenEmpty`).
    pub underutilized: bool,
}

impl Default for BalancedOptions {
    fn default() -> Self {
        Self {
            min_savings_per_hour: 0.0,
            replace_margin: 0.05,
            underutilized: true,
        }
    }
}

impl BalancedOptions {
    /// Config keys [`BalancedOptions::from_params`] reads.
    pub const KEYS: &'static [&'static str] = &["min-savings-per-hour", "replace-margin"];

    /// Reads `min-savings-per-hour` and `replace-margin` (a fraction, e.g. `0.1`), defaults
    /// otherwise.
    pub fn from_params(params: &Params, underutilized: bool) -> Result<Self, String> {
        let d = BalancedOptions::default();
        let opts = BalancedOptions {
            min_savings_per_hour: params
                .parse_or("min-savings-per-hour", d.min_savings_per_hour)?,
            replace_margin: params.parse_or("replace-margin", d.replace_margin)?,
            underutilized,
        };
        if !(opts.min_savings_per_hour.is_finite() && opts.min_savings_per_hour >= 0.0) {
            return Err(format!(
                "config min-savings-per-hour={}: must be ≥ 0",
                opts.min_savings_per_hour
            ));
        }
        if !(0.0..1.0).contains(&opts.replace_margin) {
            return Err(format!(
                "config replace-margin={}: must be in [0, 1)",
                opts.replace_margin
            ));
        }
        Ok(opts)
    }
}

/// Karpenter-like selection: empty nodes first, then drifted and expired nodes (least disruptive
/// first), then consolidation moves by savings per unit of disruption. Moves that touch a node an
/// earlier chosen move already disrupts are skipped; moves that do not pay are kept with a reason.
pub fn balanced(round: &ConsolidationRound, opts: &BalancedOptions) -> Vec<Action> {
    balanced_keeping(round, opts, |_| None)
}

/// [`balanced`], but first asks `keep` of every move: a move it gives a reason for is kept with
/// that reason and frees its nodes for the other moves. The place for a consolidator's own rule
/// ("not before a node is an hour old", "never in business hours") without rewriting the ordering.
pub fn balanced_keeping(
    round: &ConsolidationRound,
    opts: &BalancedOptions,
    keep: impl Fn(&Move) -> Option<String>,
) -> Vec<Action> {
    let mut order: Vec<usize> = (0..round.moves.len()).collect();
    order.sort_by(|&a, &b| {
        let (ma, mb) = (&round.moves[a], &round.moves[b]);
        class(ma)
            .cmp(&class(mb))
            .then_with(|| match class(ma) {
                Class::Empty => mb.nodes.len().cmp(&ma.nodes.len()),
                Class::Required => ma.disruption_cost.total_cmp(&mb.disruption_cost),
                Class::Consolidate => value(mb).total_cmp(&value(ma)),
            })
            .then_with(|| a.cmp(&b))
    });

    let mut taken = vec![false; round.candidates.len()];
    let mut actions = Vec::new();
    for i in order {
        let m = &round.moves[i];
        let refused = keep(m).or_else(|| {
            (class(m) == Class::Consolidate)
                .then(|| refuse(round, m, opts))
                .flatten()
        });
        if let Some(reason) = refused {
            actions.push(Action::Keep(Kept {
                move_index: i as u32,
                reason,
            }));
            continue;
        }
        let nodes = m.nodes.iter().map(|&n| n as usize);
        if nodes.clone().any(|n| taken.get(n).copied().unwrap_or(true)) {
            continue;
        }
        nodes.for_each(|n| taken[n] = true);
        actions.push(Action::Execute(i as u32));
    }
    actions
}

/// Keeps every move with the same reason.
pub fn keep_all(round: &ConsolidationRound, reason: &str) -> Vec<Action> {
    (0..round.moves.len())
        .map(|i| {
            Action::Keep(Kept {
                move_index: i as u32,
                reason: reason.to_string(),
            })
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Empty,
    Required,
    Consolidate,
}

fn class(m: &Move) -> Class {
    match m.reason {
        DisruptionReason::Empty if m.replacement.is_none() => Class::Empty,
        DisruptionReason::Drifted | DisruptionReason::Expired => Class::Required,
        _ => Class::Consolidate,
    }
}

/// Savings per unit of disruption.
fn value(m: &Move) -> f64 {
    m.savings_per_hour / (1.0 + m.disruption_cost.max(0.0))
}

fn refuse(round: &ConsolidationRound, m: &Move, opts: &BalancedOptions) -> Option<String> {
    if !opts.underutilized {
        return Some("consolidation of under-used nodes is disabled (WhenEmpty)".into());
    }
    if !(m.savings_per_hour > 0.0 && m.savings_per_hour >= opts.min_savings_per_hour) {
        return Some(format!(
            "saves ${:.4}/h, less than the ${:.4}/h minimum",
            m.savings_per_hour, opts.min_savings_per_hour
        ));
    }
    if let Some(r) = &m.replacement {
        let replaced: f64 = m
            .nodes
            .iter()
            .filter_map(|&n| round.candidates.get(n as usize))
            .map(|c| c.price)
            .sum();
        if r.price > replaced * (1.0 - opts.replace_margin) {
            return Some(format!(
                "replacement {} at ${:.4}/h is not {:.0}% cheaper than ${:.4}/h",
                r.instance_type,
                r.price,
                opts.replace_margin * 100.0,
                replaced
            ));
        }
        let same_type = m
            .nodes
            .iter()
            .filter_map(|&n| round.candidates.get(n as usize))
            .any(|c| c.instance_type == r.instance_type);
        if same_type {
            return Some(format!(
                "replacement is the same instance type {}",
                r.instance_type
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DisruptionReason::*;
    use crate::testing::{ConsolidationRoundBuilder, executed};

    #[test]
    fn orders_empty_then_required_then_value_and_skips_overlaps() {
        let round = ConsolidationRoundBuilder::new()
            .node("a", "m5.large", 0.096, Underutilized)
            .node("b", "m5.large", 0.096, Underutilized)
            .node("c", "m5.large", 0.096, Empty)
            .node("d", "m5.large", 0.096, Drifted)
            .delete(&[0], 0.096, 3.0) // 0: low value
            .delete(&[0, 1], 0.192, 1.0) // 1: best value, overlaps 0
            .delete(&[2], 0.096, 0.0) // 2: empty
            .replace(&[3], "m6g.large", 0.077, 2.0) // 3: drift
            .build();
        let actions = balanced(&round, &BalancedOptions::default());
        assert_eq!(executed(&actions), vec![2, 3, 1]);
    }

    #[test]
    fn keeps_moves_that_do_not_pay() {
        let round = ConsolidationRoundBuilder::new()
            .node("a", "m5.large", 0.096, Underutilized)
            .node("b", "m5.large", 0.096, Underutilized)
            .replace(&[0], "m5a.large", 0.094, 1.0) // 2% cheaper: below 5% margin
            .replace(&[1], "m5.large", 0.05, 1.0) // same type
            .build();
        let actions = balanced(&round, &BalancedOptions::default());
        assert!(executed(&actions).is_empty());
        let reason = |i: u32| {
            actions
                .iter()
                .find_map(|a| match a {
                    Action::Keep(k) if k.move_index == i => Some(k.reason.clone()),
                    _ => None,
                })
                .unwrap()
        };
        assert!(reason(0).contains("not 5% cheaper"), "{}", reason(0));
        assert!(reason(1).contains("same instance type"), "{}", reason(1));
    }

    #[test]
    fn a_move_the_caller_keeps_frees_its_nodes_for_the_next_best() {
        let round = ConsolidationRoundBuilder::new()
            .node("old", "m5.large", 0.096, Underutilized)
            .age_seconds(7200)
            .node("young", "m5.large", 0.096, Underutilized)
            .age_seconds(600)
            .delete(&[0, 1], 0.192, 1.0) // the best value, but touches the young node
            .delete(&[0], 0.096, 1.0)
            .build();
        let actions = balanced_keeping(&round, &BalancedOptions::default(), |m| {
            m.nodes
                .iter()
                .any(|&n| round.candidates[n as usize].age_seconds < 3600)
                .then(|| "too young".to_string())
        });
        assert_eq!(executed(&actions), vec![1]);
        assert!(actions.contains(&Action::Keep(Kept {
            move_index: 0,
            reason: "too young".into()
        })));
    }

    #[test]
    fn when_empty_keeps_underutilized() {
        let round = ConsolidationRoundBuilder::new()
            .node("a", "m5.large", 0.096, Underutilized)
            .node("b", "m5.large", 0.096, Empty)
            .delete(&[0], 0.096, 1.0)
            .delete(&[1], 0.096, 0.0)
            .build();
        let opts = BalancedOptions {
            underutilized: false,
            ..Default::default()
        };
        assert_eq!(executed(&balanced(&round, &opts)), vec![1]);
    }
}
