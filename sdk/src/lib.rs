//! Write [Dovetail](https://github.com/dovetail-sh/dovetail) scoring and consolidation policies in
//! Rust.
//!
//! A policy is a WebAssembly component. The controller works out what is feasible and safe; the
//! policy only says what it prefers. This crate hides the component-model plumbing: implement
//! [`Policy`] plus [`Scorer`] and/or [`Consolidator`], call one export macro, build with
//! `cargo build --release --target wasm32-wasip2`, and unit-test natively with [`testing`].
//!
//! # A complete scorer
//!
//! ```
//! use dovetail_policy_sdk::{Claim, LaunchCandidate, Params, Policy, Scorer, Verdict};
//!
//! /// Cheapest option, but never a burstable `t` type for claims of more than 4 pods.
//! pub struct NoBurstable {
//!     max_pods: usize,
//! }
//!
//! impl Policy for NoBurstable {
//!     fn new(params: &Params) -> Result<Self, String> {
//!         params.only(&["max-pods"])?;
//!         Ok(Self { max_pods: params.parse_or("max-pods", 4)? })
//!     }
//! }
//!
//! impl Scorer for NoBurstable {
//!     fn score_option(&self, claim: &Claim, option: LaunchCandidate<'_>) -> Verdict {
//!         if option.instance_type.category() == "t" && claim.pods.len() > self.max_pods {
//!             return Verdict::Veto("burstable type for a large claim".into());
//!         }
//!         Verdict::Score(-option.offering.price)
//!     }
//! }
//!
//! // In the policy crate (crate-type = ["cdylib"]):
//! // dovetail_policy_sdk::export_scorer!(NoBurstable);
//!
//! // A native unit test through the harness:
//! use dovetail_policy_sdk::testing::{catalog_type, ScoringRoundBuilder};
//! use dovetail_policy_sdk::{Arch, CapacityType, Resources};
//!
//! let test = ScoringRoundBuilder::new()
//!     .instance_type(catalog_type("t3.large", Arch::Amd64, 2, 8).on_demand("us-east-1a", 0.0832))
//!     .instance_type(catalog_type("m5.large", Arch::Amd64, 2, 8).on_demand("us-east-1a", 0.096))
//!     .claim_for_pods(6, Resources::cpu_mem(1200, 3 << 30))
//!     .build();
//! let mut policy = NoBurstable::new(&Params::default()).unwrap();
//! let ranked = dovetail_policy_sdk::testing::rank(&mut policy, &test).unwrap();
//! assert_eq!(ranked[0][0].instance_type, "m5.large");
//! assert_eq!(ranked[0].len(), 1); // t3.large was vetoed
//! ```
//!
//! # A consolidator
//!
//! Implement [`Consolidator::consolidate`]: the controller hands over the candidate nodes and the
//! moves it found feasible; return the moves to carry out, in order. [`select::balanced`] is the
//! Karpenter-like default that most consolidators start from.

mod config;
mod instance;
pub mod resources;
#[doc(hidden)]
pub mod runtime;
pub mod select;
pub mod testing;

pub use config::Params;

/// The shared WIT bindings: every type of `dovetail:policy/types` and the `log` import.
pub mod wit {
    #![allow(missing_docs, clippy::all)]
    wit_bindgen::generate!({
        path: "../wit/0.1.0",
        world: "policy-imports",
        generate_unused_types: true,
        additional_derives: [PartialEq],
    });
    pub use self::dovetail::policy::{log, types};
}

pub use wit::types::{
    Action, Arch, Candidate, CapacityType, Catalog, Claim, ClaimScores, Config, ConsolidationRound,
    CpuManufacturer, DisruptionReason, InstanceType, Kept, LaunchOption, LogLevel, Move, Offering,
    Pod, Replacement, Resources, Veto, Workload,
};

/// The WIT package version this SDK builds components for.
pub const WIT_VERSION: &str = "0.1.0";

/// Every policy is built from the Policy resource's `spec.config`.
///
/// `new` runs once per decision round (each round gets a fresh instance), so keep it cheap.
/// Returning an error rejects the configuration: the controller marks the Policy not Ready with
/// your message as the reason and keeps using the last good policy.
pub trait Policy: Sized + 'static {
    /// Builds the policy from its configuration.
    fn new(params: &Params) -> Result<Self, String>;
}

/// What a policy says of one launch option.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A preference: higher is better. Must be finite.
    Score(f64),
    /// Never launch this option for this claim; the reason is reported.
    Veto(String),
}

/// A scoring round: its time and the catalog every claim of the round refers to.
#[derive(Debug, Clone, PartialEq)]
pub struct Round {
    /// The decision's time in seconds since the Unix epoch.
    pub now: i64,
    /// The instance types the round's claims may launch.
    pub catalog: Catalog,
}

/// One launch option resolved against the round's catalog.
#[derive(Debug, Clone, Copy)]
pub struct LaunchCandidate<'a> {
    /// The instance type to launch.
    pub instance_type: &'a InstanceType,
    /// Where and how to buy it.
    pub offering: &'a Offering,
    /// Name of the offering's zone.
    pub zone: &'a str,
}

/// Packs an (instance type, offering) pair into a [`LaunchOption`].
pub fn launch_option(instance_type: usize, offering: usize) -> LaunchOption {
    ((instance_type as u32) << 8) | (offering as u32 & 0xff)
}

impl Round {
    /// Resolves a packed option against the catalog.
    ///
    /// Inlined, with its error paths out of line: it runs once per option of every claim, the
    /// hot loop of a scoring policy.
    #[inline]
    pub fn resolve(&self, option: LaunchOption) -> Result<LaunchCandidate<'_>, String> {
        let (ti, oi) = ((option >> 8) as usize, (option & 0xff) as usize);
        let Some(instance_type) = self.catalog.instance_types.get(ti) else {
            return Err(no_type(ti));
        };
        let Some(offering) = instance_type.offerings.get(oi) else {
            return Err(no_offering(instance_type, oi));
        };
        let Some(zone) = self.catalog.zones.get(offering.zone as usize) else {
            return Err(no_zone(instance_type, offering));
        };
        Ok(LaunchCandidate {
            instance_type,
            offering,
            zone,
        })
    }
}

#[cold]
#[inline(never)]
fn no_type(ti: usize) -> String {
    format!("option refers to instance type #{ti}")
}

#[cold]
#[inline(never)]
fn no_offering(instance_type: &InstanceType, oi: usize) -> String {
    format!("option refers to offering #{oi} of {}", instance_type.name)
}

#[cold]
#[inline(never)]
fn no_zone(instance_type: &InstanceType, offering: &Offering) -> String {
    format!(
        "offering of {} refers to zone #{}",
        instance_type.name, offering.zone
    )
}

/// Ranks launch options. Higher scores win; `Verdict::Veto` removes an option.
///
/// Implement [`Scorer::score_option`] for independent per-option scores, or only
/// [`Scorer::score_claim`] when an option's score depends on the others (e.g. "cheapest arm64
/// versus cheapest amd64"). [`Scorer::begin_round`] sees the catalog once per round, before any
/// claim: the place to precompute per-type figures.
pub trait Scorer: Policy {
    /// Called once per round with the catalog, before any claim is scored.
    fn begin_round(&mut self, _round: &Round) -> Result<(), String> {
        Ok(())
    }

    /// Scores one option of a claim. Unless overridden, the cheaper the better (what the
    /// built-in `cheapest` says), so a scorer that overrides [`Scorer::score_claim`] need not
    /// write it.
    fn score_option(&self, _claim: &Claim, option: LaunchCandidate<'_>) -> Verdict {
        Verdict::Score(-option.offering.price)
    }

    /// Scores every option of one claim, in `claim.options` order.
    ///
    /// The default fills the scores in one pass of known length (no capacity check per option):
    /// this loop is most of a scoring call's time.
    fn score_claim(&self, round: &Round, claim: &Claim) -> Result<ClaimScores, String> {
        let mut vetoes = Vec::new();
        let mut unresolved = None;
        let scores = claim
            .options
            .iter()
            .enumerate()
            .map(|(i, &o)| match round.resolve(o) {
                // Once an option fails to resolve the claim fails: score no more.
                Ok(_) if unresolved.is_some() => 0.0,
                Ok(option) => match self.score_option(claim, option) {
                    Verdict::Score(s) => s,
                    Verdict::Veto(reason) => {
                        vetoes.push(Veto {
                            option_index: i as u32,
                            reason,
                        });
                        0.0
                    }
                },
                Err(e) => {
                    unresolved.get_or_insert(e);
                    0.0
                }
            })
            .collect();
        match unresolved {
            Some(e) => Err(e),
            None => Ok(ClaimScores { scores, vetoes }),
        }
    }
}

impl ClaimScores {
    /// Empty, with room for `options` entries.
    pub fn with_capacity(options: usize) -> Self {
        ClaimScores {
            scores: Vec::with_capacity(options),
            vetoes: Vec::new(),
        }
    }

    /// Appends the verdict on the next option. Inlined: it runs once per option.
    #[inline]
    pub fn push(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Score(s) => self.scores.push(s),
            Verdict::Veto(reason) => self.push_veto(reason),
        }
    }

    /// A veto is the rare case: kept out of the loop that scores.
    #[cold]
    #[inline(never)]
    fn push_veto(&mut self, reason: String) {
        self.vetoes.push(Veto {
            option_index: self.scores.len() as u32,
            reason,
        });
        self.scores.push(0.0);
    }

    /// The verdict on option `i`.
    pub fn verdict(&self, i: usize) -> Option<Verdict> {
        let score = *self.scores.get(i)?;
        Some(
            match self.vetoes.iter().find(|v| v.option_index as usize == i) {
                Some(v) => Verdict::Veto(v.reason.clone()),
                None => Verdict::Score(score),
            },
        )
    }
}

impl FromIterator<Verdict> for ClaimScores {
    fn from_iter<I: IntoIterator<Item = Verdict>>(iter: I) -> Self {
        let iter = iter.into_iter();
        let mut scores = ClaimScores::with_capacity(iter.size_hint().0);
        iter.for_each(|v| scores.push(v));
        scores
    }
}

/// Chooses consolidation moves among those the controller found feasible.
pub trait Consolidator: Policy {
    /// Returns the moves to carry out, in order. Moves not mentioned are kept.
    fn consolidate(&self, round: &ConsolidationRound) -> Result<Vec<Action>, String>;
}

impl CapacityType {
    /// The order Karpenter buys in: reserved (already paid for), then spot, then on-demand.
    /// Higher is preferred.
    pub fn preference(self) -> u8 {
        match self {
            CapacityType::Reserved => 2,
            CapacityType::Spot => 1,
            CapacityType::OnDemand => 0,
        }
    }
}

/// Writes a diagnostic to the controller's log, tagged with the policy's name.
///
/// Natively (unit tests) it prints to stderr instead.
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    wit::log::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

#[doc(hidden)]
pub use runtime as __rt;
#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// Implements the generated guest traits for an export macro. Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __guest_impls {
    (scorer, $p:ty) => {
        pub struct Adapter;
        $crate::__guest_impls!(@lifecycle $p);
        $crate::__guest_impls!(@scoring $p);
    };
    (consolidator, $p:ty) => {
        pub struct Adapter;
        $crate::__guest_impls!(@lifecycle $p);
        $crate::__guest_impls!(@consolidation $p);
    };
    (policy, $p:ty) => {
        pub struct Adapter;
        $crate::__guest_impls!(@lifecycle $p);
        $crate::__guest_impls!(@scoring $p);
        $crate::__guest_impls!(@consolidation $p);
    };
    (@lifecycle $p:ty) => {
        impl exports::dovetail::policy::lifecycle::Guest for Adapter {
            fn init(config: $crate::Config) -> ::core::result::Result<(), ::std::string::String> {
                $crate::__rt::init::<$p>(config)
            }
        }
    };
    (@scoring $p:ty) => {
        impl exports::dovetail::policy::scoring::Guest for Adapter {
            fn begin_round(now: i64, catalog: $crate::Catalog) -> ::core::result::Result<(), ::std::string::String> {
                $crate::__rt::begin_round::<$p>(now, catalog)
            }
            fn score(claim: $crate::Claim) -> ::core::result::Result<$crate::ClaimScores, ::std::string::String> {
                $crate::__rt::score::<$p>(&claim)
            }
        }
    };
    (@consolidation $p:ty) => {
        impl exports::dovetail::policy::consolidation::Guest for Adapter {
            fn consolidate(
                round: $crate::ConsolidationRound,
            ) -> ::core::result::Result<::std::vec::Vec<$crate::Action>, ::std::string::String> {
                $crate::__rt::with::<$p, _>(|p| $crate::Consolidator::consolidate(&*p, &round))
            }
        }
    };
}

include!(concat!(env!("OUT_DIR"), "/export_macros.rs"));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{ScoringRoundBuilder, catalog_type};

    /// Vetoes every option on spot.
    struct NoSpot;

    impl Policy for NoSpot {
        fn new(_: &Params) -> Result<Self, String> {
            Ok(NoSpot)
        }
    }

    impl Scorer for NoSpot {
        fn score_option(&self, _: &Claim, option: LaunchCandidate<'_>) -> Verdict {
            match option.offering.capacity_type {
                CapacityType::Spot => Verdict::Veto(format!("spot in {}", option.zone)),
                _ => Verdict::Score(-option.offering.price),
            }
        }
    }

    fn test_round() -> testing::TestRound {
        ScoringRoundBuilder::new()
            .instance_type(
                catalog_type("m5.large", Arch::Amd64, 2, 8)
                    .on_demand("a", 0.096)
                    .spot("b", 0.045),
            )
            .instance_type(catalog_type("c5.large", Arch::Amd64, 2, 4).spot("a", 0.038))
            .claim_for_pods(1, Resources::cpu_mem(500, 1 << 30))
            .build()
    }

    #[test]
    fn the_default_score_claim_puts_each_veto_at_its_option() {
        let test = test_round();
        let claim = &test.claims[0];
        let scores = NoSpot.score_claim(&test.round, claim).unwrap();
        assert_eq!(scores.scores.len(), claim.options.len());
        for (i, &o) in claim.options.iter().enumerate() {
            let option = test.round.resolve(o).unwrap();
            let vetoed = scores.vetoes.iter().find(|v| v.option_index as usize == i);
            match option.offering.capacity_type {
                CapacityType::Spot => {
                    assert_eq!(vetoed.unwrap().reason, format!("spot in {}", option.zone))
                }
                _ => assert!(vetoed.is_none() && scores.scores[i] == -option.offering.price),
            }
        }
        assert_eq!(scores.vetoes.len(), 2, "both spot offerings");
    }

    #[test]
    fn an_option_outside_the_catalog_fails_the_claim_naming_it() {
        let test = test_round();
        let mut claim = test.claims[0].clone();
        claim.options.push(launch_option(7, 0));
        let err = NoSpot.score_claim(&test.round, &claim).unwrap_err();
        assert_eq!(err, "option refers to instance type #7");
    }
}
