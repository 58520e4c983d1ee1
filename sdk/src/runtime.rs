//! Glue between the generated guest traits and the SDK traits: holds the policy built by `init`
//! for the rest of the instance's life (one decision round).

use std::any::Any;
use std::cell::RefCell;

use crate::{Catalog, Claim, ClaimScores, Config, Params, Policy, Round, Scorer};

thread_local! {
    static POLICY: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    static ROUND: RefCell<Option<Round>> = const { RefCell::new(None) };
}

/// Builds the policy from its configuration and keeps it for the decision calls.
pub fn init<P: Policy>(config: Config) -> Result<(), String> {
    let policy = P::new(&Params::from(config))?;
    POLICY.with(|slot| *slot.borrow_mut() = Some(Box::new(policy)));
    Ok(())
}

/// Runs `f` on the policy built by [`init`].
pub fn with<P: Policy, R>(f: impl FnOnce(&mut P) -> Result<R, String>) -> Result<R, String> {
    POLICY.with(|slot| {
        let mut slot = slot.borrow_mut();
        let policy = slot
            .as_mut()
            .and_then(|p| p.downcast_mut::<P>())
            .ok_or_else(|| "policy called before init".to_string())?;
        f(policy)
    })
}

/// Keeps the round's catalog for the `score` calls that follow.
pub fn begin_round<P: Scorer>(now: i64, catalog: Catalog) -> Result<(), String> {
    let round = Round { now, catalog };
    with::<P, _>(|p| p.begin_round(&round))?;
    ROUND.with(|slot| *slot.borrow_mut() = Some(round));
    Ok(())
}

/// Scores one claim against the round's catalog.
pub fn score<P: Scorer>(claim: &Claim) -> Result<ClaimScores, String> {
    ROUND.with(|slot| {
        let slot = slot.borrow();
        let round = slot.as_ref().ok_or("score called before begin-round")?;
        with::<P, _>(|p| p.score_claim(round, claim))
    })
}
