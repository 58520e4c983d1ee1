//! Generates the `export_*!` macros with the WIT package inlined.
//!
//! NB: the export bindings must be generated in the policy author's crate (so the component
//! exports exactly its world: a scorer does not also claim to consolidate), and
//! `wit_bindgen::generate!` resolves `path` against the *caller's* manifest. Inlining the WIT text
//! into the macros makes them work from any crate with no WIT files to copy.

use std::{env, fs, path::PathBuf};

/// The WIT package version this SDK targets.
const WIT_VERSION: &str = "0.1.0";

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let wit_file = manifest.join("../wit").join(WIT_VERSION).join("policy.wit");
    println!("cargo:rerun-if-changed={}", wit_file.display());
    let wit = fs::read_to_string(&wit_file)
        .unwrap_or_else(|e| panic!("reading {}: {e}", wit_file.display()));

    let mut out = String::new();
    for (macro_name, world, guests) in [
        ("export_scorer", "scorer", "scorer"),
        ("export_consolidator", "consolidator", "consolidator"),
        ("export_policy", "policy", "policy"),
    ] {
        out.push_str(&format!(
            r####"
/// Exports a type as a `{world}` component. See the crate documentation.
#[macro_export]
macro_rules! {macro_name} {{
    ($policy:ty) => {{
        #[doc(hidden)]
        #[allow(clippy::all, unused)]
        mod __dovetail_export {{
            use super::*;
            $crate::__wit_bindgen::generate!({{
                inline: r###"{wit}"###,
                world: "{world}",
                runtime_path: "::dovetail_policy_sdk::__wit_bindgen::rt",
                with: {{
                    "dovetail:policy/types@{WIT_VERSION}": ::dovetail_policy_sdk::wit::types,
                    "dovetail:policy/log@{WIT_VERSION}": ::dovetail_policy_sdk::wit::log,
                }},
            }});
            $crate::__guest_impls!({guests}, $policy);
            #[cfg(target_arch = "wasm32")]
            export!(Adapter);
        }}
    }};
}}
"####
        ));
    }
    let out_path = PathBuf::from(env::var("OUT_DIR").unwrap()).join("export_macros.rs");
    fs::write(out_path, out).unwrap();
}
