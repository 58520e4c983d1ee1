//! What the controller tells the world it did: one vocabulary for the simulator's report, the
//! controller's log lines and, in a cluster, Kubernetes Events.

/// How many of a launch's ranked options its event keeps: enough to see why the first won.
pub const RANKED_SHOWN: usize = 3;

/// One option a scoring policy ranked, with its score.
#[derive(Debug, Clone, PartialEq)]
pub struct RankedOffer {
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: &'static str,
    /// USD per hour.
    pub price: f64,
    pub score: f64,
}

/// Something the controller did or decided against (or, in the simulator, the world did).
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    Scaled {
        deployment: String,
        replicas: u32,
    },
    Launched {
        node: String,
        instance_type: String,
        zone: String,
        capacity_type: &'static str,
        price: f64,
        pods: usize,
        policy: String,
        /// The policy's best options for the claim, best first (at most [`RANKED_SHOWN`]).
        ranked: Vec<RankedOffer>,
    },
    NotLaunched {
        claim: String,
        reason: String,
    },
    Ready {
        node: String,
    },
    Unschedulable {
        pod: String,
        reason: String,
    },
    Disrupting {
        nodes: Vec<String>,
        reason: &'static str,
        replacement: Option<String>,
        savings_per_hour: f64,
        policy: String,
    },
    Blocked {
        node: String,
        why: String,
    },
    Kept {
        nodes: Vec<String>,
        why: String,
    },
    Overruled {
        nodes: Vec<String>,
        why: String,
    },
    PolicyFailed {
        policy: String,
        error: String,
    },
    /// A node deleted by hand.
    Deleting {
        node: String,
    },
    /// An EC2NodeClass that did not resolve: its `Ready=False` reason.
    NodeClassNotReady {
        node_class: String,
        reason: String,
    },
    /// The node's instance was terminated outside the controller; the node is removed.
    InstanceGone {
        node: String,
    },
    /// The claim's Node did not register within the TTL: its instance is terminated and the
    /// claim deleted.
    NeverJoined {
        node: String,
        instance: String,
        waited_seconds: i64,
    },
    /// EC2 announced the node's instance goes away.
    Interrupted {
        node: String,
        kind: &'static str,
    },
    Evicted {
        pod: String,
        node: String,
    },
    Terminated {
        node: String,
        lived_seconds: i64,
    },
    /// The instance of a draining node could not be terminated (retried on the next drain).
    TerminationFailed {
        node: String,
        instance: String,
        error: String,
    },
}

impl EventKind {
    /// Writes the event as a controller's structured log line (the simulator's span carries
    /// the virtual time).
    pub fn log(&self) {
        match self {
            EventKind::Scaled {
                deployment,
                replicas,
            } => tracing::info!(deployment, replicas, "scaled deployment"),
            EventKind::Launched {
                node,
                instance_type,
                zone,
                capacity_type,
                price,
                pods,
                policy,
                ranked: _,
            } => tracing::info!(
                nodeclaim = node,
                instance_type,
                zone,
                capacity_type,
                price,
                pods,
                policy,
                "launched nodeclaim"
            ),
            EventKind::NotLaunched { claim, reason } => {
                tracing::warn!(nodeclaim = claim, reason, "launch failed")
            }
            EventKind::Ready { node } => tracing::info!(node, "node ready"),
            EventKind::Unschedulable { pod, reason } => {
                tracing::warn!(pod, reason, "could not schedule pod")
            }
            EventKind::Disrupting {
                nodes,
                reason,
                replacement,
                savings_per_hour,
                policy,
            } => {
                tracing::info!(nodes = ?nodes, reason, replacement = ?replacement, savings_per_hour, policy, "disrupting node(s)")
            }
            EventKind::Blocked { node, why } => {
                tracing::info!(node, why, "disruption blocked")
            }
            EventKind::Kept { nodes, why } => {
                tracing::debug!(nodes = ?nodes, why, "policy kept node(s)")
            }
            EventKind::Overruled { nodes, why } => {
                tracing::warn!(nodes = ?nodes, why, "overruled policy action")
            }
            EventKind::PolicyFailed { policy, error } => {
                tracing::warn!(policy, error, "policy failed")
            }
            EventKind::Deleting { node } => tracing::info!(node, "deleting node"),
            EventKind::NodeClassNotReady { node_class, reason } => {
                tracing::warn!(node_class, reason, "EC2NodeClass not ready")
            }
            EventKind::InstanceGone { node } => {
                tracing::warn!(node, "instance is gone; removing the node")
            }
            EventKind::NeverJoined {
                node,
                instance,
                waited_seconds,
            } => tracing::warn!(
                nodeclaim = node,
                instance,
                waited_seconds,
                "node never registered; deleting the claim and its instance"
            ),
            EventKind::Interrupted { node, kind } => {
                tracing::warn!(node, kind, "instance interruption")
            }
            EventKind::Evicted { pod, node } => tracing::info!(pod, node, "evicted pod"),
            EventKind::Terminated {
                node,
                lived_seconds,
            } => tracing::info!(node, lived_seconds, "terminated node"),
            EventKind::TerminationFailed {
                node,
                instance,
                error,
            } => tracing::warn!(
                node,
                instance,
                call = "terminate",
                error,
                "could not terminate the instance"
            ),
        }
    }
}

/// One disruption pass with candidates: its size and where its time went (wall clock).
#[derive(Debug, Clone, PartialEq)]
pub struct DisruptionRound {
    pub at: i64,
    pub nodes: usize,
    pub pods: usize,
    pub candidates: usize,
    pub moves: usize,
    pub commands: usize,
    pub timings: crate::disruption::Timings,
}
