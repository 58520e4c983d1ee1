//! The output contract: what a policy's answer must look like before the controller uses it.
//! A policy that breaks it is treated as failed, never half-trusted.

use super::bindings::types::{Action, ConsolidationRound, ScoringRound, Verdict};

/// Longest veto reason kept.
const MAX_REASON: usize = 256;

/// One verdict list per claim, one verdict per option, every score finite.
pub(crate) fn check_verdicts(
    round: &ScoringRound,
    verdicts: &[Vec<Verdict>],
) -> Result<(), String> {
    if verdicts.len() != round.claims.len() {
        return Err(format!(
            "{} verdict lists for {} claims",
            verdicts.len(),
            round.claims.len()
        ));
    }
    for (ci, (claim, list)) in round.claims.iter().zip(verdicts).enumerate() {
        if list.len() != claim.options.len() {
            return Err(format!(
                "claim {ci} ({}): {} verdicts for {} options",
                claim.node_pool,
                list.len(),
                claim.options.len()
            ));
        }
        for (oi, v) in list.iter().enumerate() {
            match v {
                Verdict::Score(s) if !s.is_finite() => {
                    return Err(format!(
                        "claim {ci}, option {oi}: score {s} is not a finite number"
                    ));
                }
                Verdict::Veto(reason) if reason.len() > MAX_REASON => {
                    return Err(format!(
                        "claim {ci}, option {oi}: veto reason longer than {MAX_REASON} bytes"
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Every action names an existing move, and no move twice.
pub(crate) fn check_actions(round: &ConsolidationRound, actions: &[Action]) -> Result<(), String> {
    let mut seen = vec![false; round.moves.len()];
    for action in actions {
        let index = match action {
            Action::Execute(i) => *i,
            Action::Keep(k) => k.move_index,
        };
        match seen.get_mut(index as usize) {
            None => {
                return Err(format!(
                    "action refers to move #{index}; the round has {}",
                    round.moves.len()
                ));
            }
            Some(true) => return Err(format!("move #{index} is mentioned twice")),
            Some(s) => *s = true,
        }
        if let Action::Keep(k) = action {
            if k.reason.len() > MAX_REASON {
                return Err(format!(
                    "keep reason of move #{index} longer than {MAX_REASON} bytes"
                ));
            }
        }
    }
    Ok(())
}
