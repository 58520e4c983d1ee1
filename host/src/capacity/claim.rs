//! A claim on capacity: the pods packed for one new node, who owns them, and the ways it can be
//! launched. What provisioning asks a scoring policy to rank.

use super::{LaunchOption, Resources};

/// The owner a group of pods shares: a Deployment, StatefulSet, Job… or a bare pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub namespace: String,
    /// `Kind/name` of the owner, e.g. `Deployment/web`, or `Pod/name` for a bare pod.
    pub owner: String,
    /// Labels of the pods.
    pub labels: Vec<(String, String)>,
}

/// A pod packed onto the claim.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pod {
    /// Index into [`Claim::workloads`].
    pub workload: u32,
    /// Requests of the pod (init containers and pod overhead included).
    pub requests: Resources,
    /// Resolved pod priority.
    pub priority: i32,
}

/// A node to launch: the pods packed together, what it must hold and its feasible options.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// Name of the NodePool the claim belongs to.
    pub node_pool: String,
    pub workloads: Vec<Workload>,
    pub pods: Vec<Pod>,
    /// What the node must hold: the pods' requests plus daemonset overhead.
    pub requests: Resources,
    /// Indices into the catalog the claim was planned against.
    pub options: Vec<LaunchOption>,
}

/// An option a scoring policy refuses for a claim.
#[derive(Debug, Clone, PartialEq)]
pub struct Veto {
    /// Index into [`Claim::options`].
    pub option_index: u32,
    pub reason: String,
}

/// A scoring policy's view of one claim's options.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClaimScores {
    /// One finite score per option, in [`Claim::options`] order: higher is better.
    pub scores: Vec<f64>,
    /// Options never to launch for this claim; their scores are ignored.
    pub vetoes: Vec<Veto>,
}
