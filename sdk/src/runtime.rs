//! Glue between the generated guest traits and the SDK traits: holds the policy built by `init`
//! for the rest of the instance's life (one decision round).

use std::any::Any;
use std::cell::RefCell;

use crate::{Config, Params, Policy};

thread_local! {
    static POLICY: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// Builds the policy from its configuration and keeps it for the decision calls.
pub fn init<P: Policy>(config: Config) -> Result<(), String> {
    let policy = P::new(&Params::from(config))?;
    POLICY.with(|slot| *slot.borrow_mut() = Some(Box::new(policy)));
    Ok(())
}

/// Runs `f` on the policy built by [`init`].
pub fn with<P: Policy, R>(f: impl FnOnce(&P) -> Result<R, String>) -> Result<R, String> {
    POLICY.with(|slot| {
        let slot = slot.borrow();
        let policy = slot
            .as_ref()
            .and_then(|p| p.downcast_ref::<P>())
            .ok_or_else(|| "policy called before init".to_string())?;
        f(policy)
    })
}
