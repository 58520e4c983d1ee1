//! What a component is before anything runs: is it a component, which `dovetail:policy` version and
//! interfaces does it export, what does it import.

use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::error::{PolicyError, Result};

/// The WIT package every policy export lives in.
pub const WIT_PACKAGE: &str = "dovetail:policy";
/// Versions of the WIT package this controller runs, as `major.minor` (0.x versions are
/// compatible within one minor, as in semver).
pub const SUPPORTED_WIT: &[&str] = super::bindings::SUPPORTED;

/// Facts about a component, shown by `dovetail policy inspect` and in the Policy's status.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ComponentInfo {
    /// `sha256:<hex>` of the component bytes.
    pub digest: String,
    /// Size in bytes.
    pub size: usize,
    /// The `dovetail:policy` version its exports target.
    pub wit_version: String,
    /// Every export, e.g. `dovetail:policy/scoring@0.1.0`.
    pub exports: Vec<String>,
    /// Every import, e.g. `dovetail:policy/log@0.1.0`, `wasi:cli/environment@0.2.3`.
    pub imports: Vec<String>,
    /// Whether it exports `scoring`.
    pub scoring: bool,
    /// Whether it exports `consolidation`.
    pub consolidation: bool,
}

/// `sha256:<hex>` of some bytes; the cache key of compiled components.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Rejects bytes that are not a component, with a reason that says what they are instead.
pub(crate) fn check_header(policy: &str, bytes: &[u8]) -> Result<()> {
    let not = |detail: String| PolicyError::NotAComponent {
        policy: policy.to_string(),
        detail,
    };
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(not(format!(
            "{} bytes that are not WebAssembly",
            bytes.len()
        )));
    }
    match &bytes[4..8] {
        // Component-model layer: version 0x0d, layer 1.
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err(not(
            "it is a core WebAssembly module; build a component with `cargo build --target wasm32-wasip2`"
                .into(),
        )),
        v => Err(not(format!("unknown WebAssembly version/layer {v:02x?}"))),
    }
}

/// Reads exports and imports and checks the `dovetail:policy` version.
pub(crate) fn inspect(
    policy: &str,
    engine: &Engine,
    component: &Component,
    bytes: &[u8],
) -> Result<ComponentInfo> {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let imports: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect();

    let ours: Vec<(&str, &str)> = exports
        .iter()
        .filter_map(|e| {
            e.strip_prefix(WIT_PACKAGE)?
                .strip_prefix('/')?
                .split_once('@')
        })
        .collect();
    let missing = |what: &str| PolicyError::MissingExport {
        policy: policy.to_string(),
        missing: what.to_string(),
        exports: if exports.is_empty() {
            "nothing".into()
        } else {
            exports.join(", ")
        },
    };
    let Some(&(_, version)) = ours.first() else {
        return Err(missing(&format!(
            "any {WIT_PACKAGE} interface: it is not a Dovetail policy"
        )));
    };
    if !is_supported(version) {
        return Err(PolicyError::IncompatibleVersion {
            policy: policy.to_string(),
            found: version.to_string(),
            supported: SUPPORTED_WIT
                .iter()
                .map(|v| format!("{v}.x"))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let has = |iface: &str| ours.iter().any(|&(i, v)| i == iface && is_supported(v));
    if !has("lifecycle") {
        return Err(missing(&format!("{WIT_PACKAGE}/lifecycle")));
    }
    let (scoring, consolidation) = (has("scoring"), has("consolidation"));
    if !scoring && !consolidation {
        return Err(missing(&format!(
            "{WIT_PACKAGE}/scoring or {WIT_PACKAGE}/consolidation"
        )));
    }
    Ok(ComponentInfo {
        digest: digest(bytes),
        size: bytes.len(),
        wit_version: version.to_string(),
        exports,
        imports,
        scoring,
        consolidation,
    })
}

fn is_supported(version: &str) -> bool {
    let mut parts = version.split('.');
    let major_minor = match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) => format!("{major}.{minor}"),
        _ => return false,
    };
    SUPPORTED_WIT.contains(&major_minor.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_tells_core_modules_and_garbage_apart() {
        let core = b"\0asm\x01\0\0\0";
        let err = check_header("p", core).unwrap_err().to_string();
        assert!(err.contains("core WebAssembly module"), "{err}");
        let err = check_header("p", b"#!/bin/sh\necho hi")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not WebAssembly"), "{err}");
        assert!(check_header("p", b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn version_compatibility_follows_semver_for_0x() {
        assert!(is_supported("0.1.0"));
        assert!(is_supported("0.1.7"));
        assert!(!is_supported("0.2.0"));
        assert!(!is_supported("9.0.0"));
        assert!(!is_supported("garbage"));
    }
}
