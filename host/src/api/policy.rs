//! `Policy` (`dovetail.sh/v1`): a scoring or consolidation component NodePools refer to by name.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a policy component comes from, its configuration and its limits.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dovetail.sh",
    version = "v1",
    kind = "Policy",
    plural = "policies",
    status = "PolicyStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Digest","type":"string","jsonPath":".status.digest"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Shadow Agree %","type":"integer","jsonPath":".status.shadow.agreementPercent"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpec {
    /// The component.
    pub source: PolicySource,
    /// Handed to the policy's `init`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<PolicyLimits>,
}

/// Exactly one source.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "[has(self.configMap), has(self.url), has(self.oci), has(self.builtin), has(self.file)].filter(x, x).size() == 1"
).message("exactly one of builtin, configMap, url, oci and file"))]
pub struct PolicySource {
    /// A policy shipped with the controller (`cheapest`, `arm-first`, `quiet-hours`…), to run
    /// with this Policy's `config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<UrlSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<OciSource>,
    /// A local `.wasm` file, for `dovetail simulate` and `dovetail policy test` only (relative to
    /// the manifest's directory); the controller refuses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub file: Option<String>,
}

impl PolicySource {
    /// The source in one line, for logs, statuses and the cache key of a fetch.
    pub fn describe(&self) -> String {
        if let Some(b) = &self.builtin {
            format!("builtin {b}")
        } else if let Some(c) = &self.config_map {
            format!("configMap {}/{} key {}", c.namespace, c.name, c.key)
        } else if let Some(u) = &self.url {
            format!("url {} sha256:{}", u.url, u.sha256)
        } else if let Some(o) = &self.oci {
            format!("oci {}", o.reference)
        } else if let Some(f) = &self.file {
            format!("file {f}")
        } else {
            "no source".to_string()
        }
    }
}

/// An OCI artifact: one layer of media type `application/vnd.wasm.content.layer.v1+wasm` (the
/// component) and a config of `application/vnd.wasm.config.v1+json`, as `dovetail policy push`
/// writes it. A tag is resolved to a digest and the digest recorded in status.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct OciSource {
    /// `registry/repository:tag` or `registry/repository@sha256:…`.
    #[schemars(regex(
        pattern = r"^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+(:[A-Za-z0-9._-]+|@sha256:[0-9a-f]{64})$"
    ))]
    pub reference: String,
}

/// A component stored in a ConfigMap's `binaryData`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ConfigMapSource {
    pub namespace: String,
    pub name: String,
    pub key: String,
}

/// A component fetched over HTTPS, pinned by its digest.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct UrlSource {
    #[schemars(regex(pattern = r"^https://"))]
    pub url: String,
    /// Hex SHA-256 of the component; a download that differs is refused.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: String,
}

/// Deadline and memory cap of one decision round.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyLimits {
    /// The base deadline of a round in milliseconds (default 250): each claim of a scoring
    /// round (move of a consolidation round) adds 2 ms to it, up to 30 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub timeout_millis: Option<u32>,
    /// Memory cap in MiB, at most 512: the engine's ceiling (the schema refuses more rather
    /// than the engine lowering it unseen).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "memoryMiB")]
    #[schemars(range(min = 1, max = 512))]
    pub memory_mib: Option<u32>,
}

/// What the controller found.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// `sha256:…` of the serving component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Size in bytes of the serving component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// For an `oci` source: the reference pinned by manifest digest that is serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
    /// `sha256:…` of the latest version refused while an older one keeps serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wit_version: Option<String>,
    /// `Ready` with the reason of the last load (`Loaded`, `IncompatibleWitVersion`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// How the policy does as a shadow candidate (a NodePool's `policies.shadow`), since this
    /// controller started leading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowStatus>,
}

/// A shadow candidate's record: its answers compared with the serving policy's on the same
/// rounds. Updated at most every 10 seconds.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ShadowStatus {
    /// The roles it shadows and the serving policies beside it, e.g. `scoring beside cheapest`.
    pub beside: String,
    /// Launches (scoring) and consolidation rounds with moves (consolidation) compared.
    pub decisions_compared: u64,
    /// Of those, the decisions it would have made the same way.
    pub agreed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement_percent: Option<i32>,
    /// What its choices would have added to the fleet's hourly price, in USD (signed, e.g.
    /// `+0.0420`): launches' prices, and savings consolidation would have given up.
    pub cost_delta_per_hour: String,
    /// Nodes the serving policy's moves disrupted.
    pub disruptions_serving: u64,
    /// Nodes its moves would have disrupted.
    pub disruptions_shadow: u64,
    /// Rounds it failed (trap, deadline, memory cap, contract); the serving decision never
    /// waits for it or changes.
    pub failures: u64,
    /// Rounds not put to it because it was still busy with earlier ones.
    pub skipped: u64,
    /// The latest decision it would have made differently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_disagreement: Option<String>,
}

impl ShadowStatus {
    /// One line for `top`: `arm-first — scoring beside cheapest · 12 compared · 50% agree · …`.
    pub fn line(&self, policy: &str) -> String {
        let agree = self
            .agreement_percent
            .map_or(String::new(), |p| format!(" · {p}% agree"));
        format!(
            "{policy} — {} · {} compared{agree} · cost {} $/h · disruptions {} serving vs {} shadow · failures {}",
            self.beside,
            self.decisions_compared,
            self.cost_delta_per_hour,
            self.disruptions_serving,
            self.disruptions_shadow,
            self.failures
        )
    }
}
