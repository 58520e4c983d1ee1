//! The output contract: what a policy's answer must look like before the controller uses it.
//! A policy that breaks it is treated as failed, never half-trusted.

use super::bindings::types::{Action, Claim, ClaimScores, ConsolidationRound};

/// Longest veto or keep reason kept.
const MAX_REASON: usize = 256;

/// One finite score per option; vetoes name existing options, once each.
pub(crate) fn check_scores(claim: &Claim, scores: &ClaimScores) -> Result<(), String> {
    let n = claim.options.len();
    if scores.scores.len() != n {
        return Err(format!("{} scores for {n} options", scores.scores.len()));
    }
    // One branch-free pass (it vectorises); the index is looked for only when one is bad.
    if !scores.scores.iter().fold(true, |ok, s| ok & s.is_finite()) {
        let (i, s) = scores
            .scores
            .iter()
            .enumerate()
            .find(|(_, s)| !s.is_finite())
            .expect("a score is not finite");
        return Err(format!("score of option {i} is {s}, not a finite number"));
    }
    if scores.vetoes.is_empty() {
        return Ok(());
    }
    let mut vetoed = vec![false; n];
    for veto in &scores.vetoes {
        match vetoed.get_mut(veto.option_index as usize) {
            None => {
                return Err(format!(
                    "veto of option #{}; the claim has {n}",
                    veto.option_index
                ));
            }
            Some(true) => return Err(format!("option #{} vetoed twice", veto.option_index)),
            Some(v) => *v = true,
        }
        if veto.reason.len() > MAX_REASON {
            return Err(format!("veto reason longer than {MAX_REASON} bytes"));
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
        if let Action::Keep(k) = action
            && k.reason.len() > MAX_REASON
        {
            return Err(format!(
                "keep reason of move #{index} longer than {MAX_REASON} bytes"
            ));
        }
    }
    Ok(())
}
