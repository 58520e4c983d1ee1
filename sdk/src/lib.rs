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
//!         if option.instance_type.category == "t" && claim.pods.len() > self.max_pods {
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
//! let round = ScoringRoundBuilder::new()
//!     .instance_type(catalog_type("t3.large", Arch::Amd64, 2, 8).on_demand("us-east-1a", 0.0832))
//!     .instance_type(catalog_type("m5.large", Arch::Amd64, 2, 8).on_demand("us-east-1a", 0.096))
//!     .claim_for_pods(6, Resources::cpu_mem(1200, 3 << 30))
//!     .build();
//! let policy = NoBurstable::new(&Params::default()).unwrap();
//! let ranked = dovetail_policy_sdk::testing::rank(&policy, &round).unwrap();
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
    Action, Arch, Candidate, CapacityType, Claim, Config, ConsolidationRound, DisruptionReason,
    InstanceType, Kept, LaunchOption, LogLevel, Move, Offering, Pod, Replacement, Resources,
    ScoringRound, Verdict,
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

/// One launch option resolved against the round's catalog.
#[derive(Debug, Clone, Copy)]
pub struct LaunchCandidate<'a> {
    /// The instance type to launch.
    pub instance_type: &'a InstanceType,
    /// Where and how to buy it.
    pub offering: &'a Offering,
}

/// Ranks launch options. Higher scores win; `Verdict::Veto` removes an option.
///
/// Implement [`Scorer::score_option`] for independent per-option scores, or override
/// [`Scorer::score_claim`] when an option's score depends on the others (e.g. "cheapest arm64
/// versus cheapest amd64").
pub trait Scorer: Policy {
    /// Scores one option of a claim.
    fn score_option(&self, claim: &Claim, option: LaunchCandidate<'_>) -> Verdict;

    /// Scores every option of one claim, in `claim.options` order.
    fn score_claim(&self, round: &ScoringRound, claim: &Claim) -> Result<Vec<Verdict>, String> {
        claim
            .options
            .iter()
            .map(|o| Ok(self.score_option(claim, round.resolve(o)?)))
            .collect()
    }

    /// Scores every claim of a round, in `round.claims` order.
    fn score(&self, round: &ScoringRound) -> Result<Vec<Vec<Verdict>>, String> {
        round
            .claims
            .iter()
            .map(|c| self.score_claim(round, c))
            .collect()
    }
}

/// Chooses consolidation moves among those the controller found feasible.
pub trait Consolidator: Policy {
    /// Returns the moves to carry out, in order. Moves not mentioned are kept.
    fn consolidate(&self, round: &ConsolidationRound) -> Result<Vec<Action>, String>;
}

impl ScoringRound {
    /// Resolves an option's indices against the catalog.
    pub fn resolve(&self, option: &LaunchOption) -> Result<LaunchCandidate<'_>, String> {
        let instance_type = self
            .catalog
            .get(option.instance_type as usize)
            .ok_or_else(|| format!("option refers to instance type #{}", option.instance_type))?;
        let offering = instance_type
            .offerings
            .get(option.offering as usize)
            .ok_or_else(|| {
                format!(
                    "option refers to offering #{} of {}",
                    option.offering, instance_type.name
                )
            })?;
        Ok(LaunchCandidate {
            instance_type,
            offering,
        })
    }
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
            fn score(
                round: $crate::ScoringRound,
            ) -> ::core::result::Result<::std::vec::Vec<::std::vec::Vec<$crate::Verdict>>, ::std::string::String> {
                $crate::__rt::with::<$p, _>(|p| $crate::Scorer::score(p, &round))
            }
        }
    };
    (@consolidation $p:ty) => {
        impl exports::dovetail::policy::consolidation::Guest for Adapter {
            fn consolidate(
                round: $crate::ConsolidationRound,
            ) -> ::core::result::Result<::std::vec::Vec<$crate::Action>, ::std::string::String> {
                $crate::__rt::with::<$p, _>(|p| $crate::Consolidator::consolidate(p, &round))
            }
        }
    };
}

include!(concat!(env!("OUT_DIR"), "/export_macros.rs"));
