//! Everything that can go wrong with a policy, named so an operator can act on it.

use thiserror::Error;

/// An error of one policy. Every variant names the policy; [`PolicyError::reason`] is the
/// CamelCase reason written to the Policy's Ready condition and [`PolicyError::metric_label`] the
/// label of the error counter.
#[derive(Debug, Error)]
pub enum PolicyError {
    /// The bytes are not a WebAssembly component (a core module, or not WebAssembly at all).
    #[error("policy {policy}: not a WebAssembly component: {detail}")]
    NotAComponent { policy: String, detail: String },
    /// Wasmtime refused to compile the component.
    #[error("policy {policy}: the component does not compile: {detail}")]
    Compile { policy: String, detail: String },
    /// The component targets a WIT package version this controller does not support.
    #[error(
        "policy {policy} targets dovetail:policy@{found}; this controller supports dovetail:policy@{supported}"
    )]
    IncompatibleVersion {
        policy: String,
        found: String,
        supported: String,
    },
    /// The component is not a Dovetail policy, or lacks an interface it needs.
    #[error("policy {policy} does not export {missing} (it exports: {exports})")]
    MissingExport {
        policy: String,
        missing: String,
        exports: String,
    },
    /// The component imports something the sandbox does not provide.
    #[error("policy {policy} cannot be linked: {detail}")]
    Link { policy: String, detail: String },
    /// The policy ran past its deadline and was stopped.
    #[error("policy {policy} exceeded its {timeout_ms} ms deadline and was stopped")]
    Timeout { policy: String, timeout_ms: u64 },
    /// The policy tried to grow its memory past its cap and was stopped.
    #[error("policy {policy} tried to use more than its {cap_mib} MiB memory cap and was stopped")]
    MemoryCap { policy: String, cap_mib: u64 },
    /// The policy trapped (a panic, an out-of-bounds access, `unreachable`…).
    #[error("policy {policy} trapped: {detail}")]
    Trap { policy: String, detail: String },
    /// `init` rejected the Policy's configuration.
    #[error("policy {policy} rejected its configuration: {message}")]
    ConfigRejected { policy: String, message: String },
    /// The policy returned an error for a decision.
    #[error("policy {policy} failed the decision: {message}")]
    Failed { policy: String, message: String },
    /// The policy's answer breaks the output contract (wrong length, NaN, index out of range).
    #[error("policy {policy} broke the output contract: {detail}")]
    Contract { policy: String, detail: String },
    /// The engine could not create an instance (e.g. every pooled instance slot is busy).
    #[error("policy {policy} could not be instantiated: {detail}")]
    Instantiate { policy: String, detail: String },
    /// No Policy of that name is applied and no built-in has it.
    #[error(
        "no policy {policy}: no Policy of that name is applied and no built-in has it (built-ins: {builtins})"
    )]
    NotFound { policy: String, builtins: String },
    /// A canary round (see [`crate::policy::canary`]) failed: the component is refused.
    #[error("canary {round} round: {inner}")]
    Canary {
        round: &'static str,
        inner: Box<PolicyError>,
    },
    /// The component could not be fetched from its source.
    #[error("policy {policy}: cannot fetch {source_ref}: {detail}")]
    Fetch {
        policy: String,
        source_ref: String,
        detail: String,
    },
    /// The fetched bytes are not the ones the Policy pins.
    #[error("policy {policy}: {source_ref} has digest {found}, the Policy pins {expected}")]
    DigestMismatch {
        policy: String,
        source_ref: String,
        expected: String,
        found: String,
    },
    /// A component could not be published.
    #[error("cannot push to {target}: {detail}")]
    Publish { target: String, detail: String },
    /// A source this program does not read (a local file in the controller).
    #[error("policy {policy}: {detail}")]
    SourceNotAllowed { policy: String, detail: String },
    /// The engine itself could not be set up.
    #[error("policy engine: {0}")]
    Engine(String),
}

impl PolicyError {
    /// CamelCase reason for the Policy's Ready condition and Kubernetes Events.
    pub fn reason(&self) -> &'static str {
        match self {
            PolicyError::NotAComponent { .. } => "NotAComponent",
            PolicyError::Compile { .. } => "CompileFailed",
            PolicyError::IncompatibleVersion { .. } => "IncompatibleWitVersion",
            PolicyError::MissingExport { .. } => "MissingExport",
            PolicyError::Link { .. } => "LinkFailed",
            PolicyError::Timeout { .. } => "DeadlineExceeded",
            PolicyError::MemoryCap { .. } => "MemoryCapExceeded",
            PolicyError::Trap { .. } => "Trapped",
            PolicyError::ConfigRejected { .. } => "ConfigRejected",
            PolicyError::Failed { .. } => "DecisionFailed",
            PolicyError::Contract { .. } => "ContractViolation",
            PolicyError::Instantiate { .. } => "InstantiateFailed",
            PolicyError::NotFound { .. } => "PolicyNotFound",
            PolicyError::Canary { inner, .. } => inner.reason(),
            PolicyError::Fetch { .. } => "FetchFailed",
            PolicyError::DigestMismatch { .. } => "DigestMismatch",
            PolicyError::SourceNotAllowed { .. } => "SourceNotAllowed",
            PolicyError::Publish { .. } => "PublishFailed",
            PolicyError::Engine(_) => "EngineError",
        }
    }

    /// snake_case label for the `dovetail_policy_errors_total` counter.
    pub fn metric_label(&self) -> &'static str {
        match self {
            PolicyError::NotAComponent { .. } => "not_a_component",
            PolicyError::Compile { .. } => "compile",
            PolicyError::IncompatibleVersion { .. } => "incompatible_version",
            PolicyError::MissingExport { .. } => "missing_export",
            PolicyError::Link { .. } => "link",
            PolicyError::Timeout { .. } => "timeout",
            PolicyError::MemoryCap { .. } => "memory_cap",
            PolicyError::Trap { .. } => "trap",
            PolicyError::ConfigRejected { .. } => "config_rejected",
            PolicyError::Failed { .. } => "failed",
            PolicyError::Contract { .. } => "contract",
            PolicyError::Instantiate { .. } => "instantiate",
            PolicyError::NotFound { .. } => "not_found",
            PolicyError::Canary { inner, .. } => inner.metric_label(),
            PolicyError::Fetch { .. } => "fetch",
            PolicyError::DigestMismatch { .. } => "digest_mismatch",
            PolicyError::SourceNotAllowed { .. } => "source_not_allowed",
            PolicyError::Publish { .. } => "publish",
            PolicyError::Engine(_) => "engine",
        }
    }
}

/// Result of policy operations.
pub type Result<T, E = PolicyError> = std::result::Result<T, E>;
