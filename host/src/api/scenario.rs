//! `Scenario` (`sim.dovetail.sh/v1`): the simulator's timeline. Not a cluster resource — it sits
//! beside the manifests a user already has and says what happens when.
//!
//! ```yaml
//! apiVersion: sim.dovetail.sh/v1
//! kind: Scenario
//! metadata: {name: consolidation-lab}
//! spec:
//!   duration: 2h
//!   steps:
//!     - at: 10m
//!       scale: {deployment: inflate, replicas: 8}
//!     - at: 1h
//!       delete: {kind: Node, name: default-00001}
//! ```

use serde::Deserialize;

/// A simulation timeline.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: serde_json::Value,
    pub spec: ScenarioSpec,
}

/// What the scenario runs.
#[derive(Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScenarioSpec {
    /// How long to run (virtual time), e.g. `2h`. Default: 1h.
    #[serde(default)]
    pub duration: Option<String>,
    /// Zones of the simulated region.
    #[serde(default)]
    pub zones: Option<Vec<String>>,
    /// Launch to Ready, e.g. `40s`.
    #[serde(default)]
    pub launch_delay: Option<String>,
    /// A provisioning batch closes after this long without a new pod (default `1s`)…
    #[serde(default)]
    pub batch_idle: Option<String>,
    /// …or this long after its first pod (default `10s`).
    #[serde(default)]
    pub batch_max: Option<String>,
    /// Steps, in any order; each runs at its `at`.
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// One thing that happens at a point in virtual time. Exactly one action per step.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    /// Offset from the start, e.g. `90s`, `1h30m`.
    pub at: String,
    /// Sets a Deployment's replicas.
    #[serde(default)]
    pub scale: Option<Scale>,
    /// Applies (creates or replaces) an object, written as its manifest.
    #[serde(default)]
    pub apply: Option<serde_json::Value>,
    /// Deletes an object.
    #[serde(default)]
    pub delete: Option<ObjectRef>,
    /// Makes an offering refuse launches (InsufficientInstanceCapacity).
    #[serde(default)]
    pub exhaust: Option<Exhaust>,
    /// EC2 announces that a node's instance goes away (a spot interruption warning by default).
    #[serde(default)]
    pub interrupt: Option<Interrupt>,
}

/// `interrupt: {node: default-00001}`; `kind` is `spot` (default), `scheduled-change`,
/// `capacity-reservation` or `stopping`.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Interrupt {
    pub node: String,
    #[serde(default)]
    pub kind: Option<String>,
}

/// `scale: {deployment: web, namespace: default, replicas: 3}`.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scale {
    pub deployment: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub replicas: u32,
}

/// `delete: {kind: Node, name: default-00001}`; `kind` is Deployment, Pod, Node,
/// NodePool or PodDisruptionBudget.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectRef {
    pub kind: String,
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
}

/// `exhaust: {instanceType: m5.large, zone: us-east-1a, capacityType: spot}`.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Exhaust {
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: String,
}

fn default_namespace() -> String {
    "default".into()
}
