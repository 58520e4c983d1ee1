//! `NodePool` (`dovetail.sh/v1`): Karpenter v1's NodePool plus the `policies` block.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Taint;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Go-style duration (`30s`, `1m`, `720h`, `1h30m`) or `Never`.
pub const DURATION_OR_NEVER: &str = r"^(([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+|Never)$";

/// Desired shape of the nodes of a pool, how they may be disrupted, and which policies decide.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dovetail.sh",
    version = "v1",
    kind = "NodePool",
    plural = "nodepools",
    shortname = "np",
    status = "NodePoolStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"NodeClass","type":"string","jsonPath":".spec.template.spec.nodeClassRef.name"}"#,
    printcolumn = r#"{"name":"Weight","type":"integer","jsonPath":".spec.weight"}"#,
    printcolumn = r#"{"name":"Scoring","type":"string","jsonPath":".spec.policies.scoring"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct NodePoolSpec {
    /// The NodeClaims this pool creates.
    pub template: NodeClaimTemplate,
    /// How nodes of this pool may be disrupted.
    #[serde(default)]
    pub disruption: Disruption,
    /// Ceilings on the total capacity of the pool's nodes (`cpu`, `memory`, `nvidia.com/gpu`…).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, Quantity>,
    /// Pools with a higher weight are tried first (1–100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub weight: Option<i32>,
    /// The policies that decide for this pool.
    #[serde(default)]
    pub policies: Policies,
}

/// Template of the pool's NodeClaims.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeClaimTemplate {
    /// Labels and annotations given to the nodes.
    #[serde(default)]
    pub metadata: TemplateMetadata,
    pub spec: NodeClaimTemplateSpec,
}

/// Labels and annotations of the nodes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct TemplateMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// What a NodeClaim of the pool asks for.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeClaimTemplateSpec {
    /// Constraints on the well-known labels (architecture, zone, capacity type, instance
    /// category…) and any label the pool's nodes carry.
    #[serde(default)]
    #[schemars(length(max = 100))]
    pub requirements: Vec<NodeSelectorRequirementWithMinValues>,
    /// The EC2NodeClass with the AWS settings.
    pub node_class_ref: NodeClassReference,
    /// Taints of every node of the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
    /// Taints present at start-up and removed by a daemon; pods need not tolerate them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub startup_taints: Vec<Taint>,
    /// Nodes older than this are replaced (`720h` by default, or `Never`).
    #[serde(default = "default_expire_after")]
    #[schemars(regex(pattern = DURATION_OR_NEVER))]
    pub expire_after: String,
    /// How long a draining node waits for its pods before they are deleted anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_OR_NEVER))]
    pub termination_grace_period: Option<String>,
}

fn default_expire_after() -> String {
    "720h".into()
}

/// A node selector requirement, optionally asking for a minimum number of distinct values among
/// the instance types a claim may launch.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "self.operator in ['In', 'NotIn'] ? size(self.values) > 0 : (self.operator in ['Gt', 'Lt'] ? size(self.values) == 1 : size(self.values) == 0)"
).message("In and NotIn need values, Gt and Lt exactly one, Exists and DoesNotExist none"))]
pub struct NodeSelectorRequirementWithMinValues {
    #[schemars(length(min = 1, max = 316))]
    pub key: String,
    pub operator: RequirementOperator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// At least this many values of `key` must remain among a claim's instance types (1–50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 50))]
    pub min_values: Option<i32>,
}

/// Requirement operators (also the scheduling simulation's).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequirementOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
}

/// Reference to the node class.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct NodeClassReference {
    /// `aws.dovetail.sh`.
    #[schemars(length(min = 1))]
    pub group: String,
    /// `EC2NodeClass`.
    #[schemars(length(min = 1))]
    pub kind: String,
    #[schemars(length(min = 1))]
    pub name: String,
}

/// How the pool's nodes may be disrupted.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Disruption {
    /// Which nodes consolidation may remove or replace.
    #[serde(default)]
    pub consolidation_policy: ConsolidationPolicy,
    /// How long a node must be a candidate before it is consolidated (`0s`, `1m`, `Never`).
    #[serde(default = "default_consolidate_after")]
    #[schemars(regex(pattern = DURATION_OR_NEVER))]
    pub consolidate_after: String,
    /// How many nodes may be disrupting at once, by schedule and reason.
    #[serde(default = "default_budgets")]
    #[schemars(length(max = 50))]
    pub budgets: Vec<Budget>,
}

impl Default for Disruption {
    fn default() -> Self {
        Disruption {
            consolidation_policy: ConsolidationPolicy::default(),
            consolidate_after: default_consolidate_after(),
            budgets: default_budgets(),
        }
    }
}

fn default_consolidate_after() -> String {
    "0s".into()
}

fn default_budgets() -> Vec<Budget> {
    vec![Budget {
        nodes: "10%".into(),
        schedule: None,
        duration: None,
        reasons: None,
    }]
}

/// Karpenter's consolidation policies.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConsolidationPolicy {
    WhenEmpty,
    #[default]
    WhenEmptyOrUnderutilized,
}

/// A disruption budget: at most `nodes` nodes disrupting at once, during `schedule` + `duration`
/// if given, for `reasons` if given.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = kube::core::Rule::new("has(self.schedule) == has(self.duration)")
    .message("schedule and duration go together"))]
pub struct Budget {
    /// A count (`5`) or a percentage of the pool's nodes (`10%`).
    #[schemars(regex(pattern = r"^((100|[0-9]{1,2})%|[0-9]+)$"))]
    pub nodes: String,
    /// Cron schedule (UTC) of when the budget applies, e.g. `0 9 * * mon-fri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^(@(annually|yearly|monthly|weekly|daily|midnight|hourly))|((.+)\s(.+)\s(.+)\s(.+)\s(.+))$"
    ))]
    pub schedule: Option<String>,
    /// How long the budget applies after each schedule hit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(s|m|h))+$"))]
    pub duration: Option<String>,
    /// The disruption reasons the budget limits; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasons: Option<Vec<DisruptionReason>>,
}

/// Why a node is disrupted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisruptionReason {
    Underutilized,
    Empty,
    Drifted,
}

/// The policies that decide for a pool, by Policy name (or built-in name).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Policies {
    /// Ranks launch options; `cheapest` by default.
    #[serde(default = "default_scoring")]
    pub scoring: String,
    /// Chooses consolidation moves; `balanced` by default.
    #[serde(default = "default_consolidation")]
    pub consolidation: String,
    /// What happens when a policy fails a decision.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Candidates judged beside the serving policies on the same rounds, recorded and never
    /// acted on (shadow mode). Promoting one is moving its name to `scoring` or
    /// `consolidation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowPolicies>,
}

impl Default for Policies {
    fn default() -> Self {
        Policies {
            scoring: default_scoring(),
            consolidation: default_consolidation(),
            on_failure: OnFailure::default(),
            shadow: None,
        }
    }
}

/// Shadow candidates, by Policy name (or built-in name). A failing candidate is reported on its
/// own Policy and never affects the serving decision.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ShadowPolicies {
    /// Scores every scoring round beside `scoring`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scoring: Option<String>,
    /// Answers every consolidation round beside `consolidation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consolidation: Option<String>,
}

/// The role a candidate shadows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ShadowRole {
    Scoring,
    Consolidation,
}

impl ShadowRole {
    /// The role's name, as the NodePool spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ShadowRole::Scoring => "scoring",
            ShadowRole::Consolidation => "consolidation",
        }
    }
}

impl Policies {
    /// The candidate shadowing `role`, unless it is the serving policy itself.
    pub fn shadow_of(&self, role: ShadowRole) -> Option<&str> {
        let shadow = self.shadow.as_ref()?;
        let (candidate, serving) = match role {
            ShadowRole::Scoring => (shadow.scoring.as_deref()?, &self.scoring),
            ShadowRole::Consolidation => (shadow.consolidation.as_deref()?, &self.consolidation),
        };
        (candidate != serving).then_some(candidate)
    }
}

fn default_scoring() -> String {
    "cheapest".into()
}

fn default_consolidation() -> String {
    "balanced".into()
}

/// `Fallback`: decide with the built-in default (`cheapest` / `balanced`) and report the failure.
/// `Block`: make no decision for the pool until the policy works again.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnFailure {
    #[default]
    Fallback,
    Block,
}

/// Observed state of a NodePool.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct NodePoolStatus {
    /// `Ready`, `NodeClassReady`, `PoliciesReady`, `ValidationSucceeded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Capacity of the pool's nodes, counted against `limits`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, Quantity>,
    /// The policy serving each role (`scoring`, `consolidation`), with its digest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub policies: BTreeMap<String, PolicyInUse>,
}

/// A policy a NodePool uses; no digest while it is not serving.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct PolicyInUse {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}
