//! What the simulation schedules: pending pods with their constraints, NodePools, and the
//! labels an instance type offering gives a node.

use super::requirements::{Operator, Requirement, Requirements};
use crate::capacity::Resources;

pub use super::well_known::{capacity_type, capacity_type_label, labels};

/// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

/// A node taint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: TaintEffect,
}

/// A pod toleration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Toleration {
    /// `None` with `exists: true` tolerates every taint.
    pub key: Option<String>,
    /// `Exists` (any value) instead of `Equal`.
    pub exists: bool,
    pub value: String,
    /// `None` tolerates every effect.
    pub effect: Option<TaintEffect>,
}

impl Toleration {
    /// Whether this toleration tolerates `taint`.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        let key = self.key.as_deref().is_none_or(|k| k == taint.key);
        let value = self.exists || self.value == taint.value;
        let effect = self.effect.is_none_or(|e| e == taint.effect);
        key && value && effect && (self.key.is_some() || self.exists)
    }
}

/// Whether `tolerations` cover every scheduling taint of `taints`, or the first one they do not.
pub fn untolerated<'a>(tolerations: &[Toleration], taints: &'a [Taint]) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| t.effect != TaintEffect::PreferNoSchedule)
        .find(|t| !tolerations.iter().any(|tol| tol.tolerates(t)))
}

/// A label selector (`matchLabels` and `matchExpressions`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct LabelSelector {
    pub match_labels: Vec<(String, String)>,
    pub match_expressions: Vec<Requirement>,
}

impl LabelSelector {
    /// `matchLabels` only.
    pub fn labels(pairs: &[(&str, &str)]) -> Self {
        LabelSelector {
            match_labels: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            match_expressions: Vec::new(),
        }
    }

    /// Whether a pod with `labels` is selected.
    pub fn matches(&self, labels: &[(String, String)]) -> bool {
        let get = |k: &str| {
            labels
                .iter()
                .find(|(lk, _)| lk == k)
                .map(|(_, v)| v.as_str())
        };
        self.match_labels
            .iter()
            .all(|(k, v)| get(k) == Some(v.as_str()))
            && self.match_expressions.iter().all(|r| {
                let v = get(&r.key);
                match r.operator {
                    Operator::In => v.is_some_and(|v| r.values.iter().any(|x| x == v)),
                    Operator::NotIn => v.is_none_or(|v| !r.values.iter().any(|x| x == v)),
                    Operator::Exists => v.is_some(),
                    Operator::DoesNotExist => v.is_none(),
                    Operator::Gt | Operator::Lt => false,
                }
            })
    }
}

/// The topology domains the simulation knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopologyKey {
    /// `topology.kubernetes.io/zone`.
    Zone,
    /// `kubernetes.io/hostname`: every node is its own domain.
    Hostname,
}

/// A `topologySpreadConstraints` entry with `whenUnsatisfiable: DoNotSchedule`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpreadConstraint {
    pub key: TopologyKey,
    pub max_skew: u32,
    pub selector: LabelSelector,
}

/// A required pod (anti-)affinity term.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AffinityTerm {
    pub key: TopologyKey,
    pub selector: LabelSelector,
}

/// A pending pod as the simulation sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingPod {
    /// `namespace/name`.
    pub name: String,
    pub labels: Vec<(String, String)>,
    /// Effective requests (containers, init containers and overhead), `pods: 1`.
    pub requests: Resources,
    /// `nodeSelector` and required node affinity: the pod fits a node matching any one term.
    /// Empty: no constraint.
    pub node_terms: Vec<Requirements>,
    pub tolerations: Vec<Toleration>,
    pub spread: Vec<SpreadConstraint>,
    /// Preferred node affinity terms, highest weight first: honoured when some node can, dropped
    /// when none can.
    pub preferred: Vec<Requirements>,
    /// `ScheduleAnyway` spread constraints: honoured like `DoNotSchedule` when possible.
    pub soft_spread: Vec<SpreadConstraint>,
    pub affinity: Vec<AffinityTerm>,
    pub anti_affinity: Vec<AffinityTerm>,
    /// Index into the round's workloads (owner), for the policy.
    pub workload: u32,
    pub priority: i32,
    /// The workload that owns it, `Kind/name` (a ReplicaSet's pods are their Deployment's);
    /// `None` for a bare pod.
    pub owner: Option<String>,
    /// Its PersistentVolumeClaims, `namespace/name`.
    pub volume_claims: Vec<String>,
    /// Where its volumes let it run (`None`: anywhere), as the cluster resolved the claims
    /// ([`crate::cluster::Volumes`]); joined to every node term when it is placed.
    pub volume_requirements: Option<Requirements>,
    /// `terminationGracePeriodSeconds`: how long it may take to stop once asked to go (30 by
    /// default, as the API server defaults it).
    pub grace_seconds: i64,
}

/// The API server's default `terminationGracePeriodSeconds`.
pub const DEFAULT_GRACE_SECONDS: i64 = 30;

impl PendingPod {
    /// A pod with requests and labels and no constraints.
    pub fn new(name: &str, labels: &[(&str, &str)], cpu_millis: u64, memory_bytes: u64) -> Self {
        PendingPod {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            requests: Resources {
                cpu_millis,
                memory_bytes,
                ephemeral_storage_bytes: 0,
                pods: 1,
                gpus: 0,
            },
            node_terms: Vec::new(),
            tolerations: Vec::new(),
            spread: Vec::new(),
            preferred: Vec::new(),
            soft_spread: Vec::new(),
            affinity: Vec::new(),
            anti_affinity: Vec::new(),
            workload: 0,
            priority: 0,
            owner: None,
            volume_claims: Vec::new(),
            volume_requirements: None,
            grace_seconds: DEFAULT_GRACE_SECONDS,
        }
    }
}

/// A node that exists or is being launched, as the simulation sees it: pending pods go on such
/// nodes before any new NodeClaim is planned, and the pods already on it count for topology.
#[derive(Debug, Clone, PartialEq)]
pub struct ExistingNode {
    pub name: String,
    /// Index into the NodePools given to the simulation (`None`: its NodePool is gone).
    pub node_pool: Option<usize>,
    /// Its labels (instance type, zone, capacity type, NodePool, and the NodePool's labels).
    pub labels: Vec<(String, String)>,
    pub taints: Vec<Taint>,
    /// Index of its zone among the round's zones.
    pub zone: u32,
    pub allocatable: Resources,
    /// Requests already on it: bound and nominated pods plus daemonsets.
    pub requested: Resources,
    /// Pods already on it, for topology counting: `namespace/name` and labels.
    pub pods: Vec<(String, Vec<(String, String)>)>,
    /// The required anti-affinity terms of those pods, with their namespaces: a new pod one of
    /// them selects must keep out of that pod's topology domain (kube-scheduler checks
    /// anti-affinity both ways).
    pub repels: Vec<(String, AffinityTerm)>,
}

impl ExistingNode {
    /// The value of one of its labels.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Resource ceilings of a NodePool (`spec.limits`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limits {
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
}

/// A NodePool as the simulation sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePoolSpec {
    pub name: String,
    /// Higher weight is tried first.
    pub weight: i32,
    pub requirements: Requirements,
    pub taints: Vec<Taint>,
    pub limits: Limits,
    /// Capacity already used by this NodePool's nodes (counts against `limits`).
    pub in_use: Resources,
    /// Requests of the daemonsets every node of this pool runs.
    pub daemonset_overhead: Resources,
    /// `minValues`: a claim keeps at least this many distinct values of the key among its
    /// instance types, so a launch stays flexible.
    pub min_values: Vec<(String, usize)>,
    /// What the pool's EC2NodeClass changes about a node's allocatable (kubelet, root volume);
    /// `None` when it changes nothing, so the hot path reads the catalog's value directly.
    pub node: Option<super::kubelet::NodeSettings>,
}

impl NodePoolSpec {
    /// What pods can use on a node of `ty` launched by this pool.
    pub fn allocatable(&self, ty: &super::instance_types::SchedType) -> Resources {
        self.node
            .as_ref()
            .map_or(ty.allocatable, |n| n.allocatable(ty))
    }

    /// A pool with no constraints beyond `requirements`.
    pub fn new(name: &str, requirements: Requirements) -> Self {
        NodePoolSpec {
            name: name.into(),
            weight: 0,
            requirements,
            taints: Vec::new(),
            limits: Limits::default(),
            in_use: zero(),
            daemonset_overhead: zero(),
            min_values: Vec::new(),
            node: None,
        }
    }
}

pub use crate::capacity::resources::{add, fits, max, zero};

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, effect: TaintEffect) -> Taint {
        Taint {
            key: key.into(),
            value: "true".into(),
            effect,
        }
    }

    #[test]
    fn tolerations() {
        let gpu = taint("nvidia.com/gpu", TaintEffect::NoSchedule);
        let exact = Toleration {
            key: Some("nvidia.com/gpu".into()),
            exists: false,
            value: "true".into(),
            effect: None,
        };
        let any = Toleration {
            key: None,
            exists: true,
            value: String::new(),
            effect: None,
        };
        let wrong = Toleration {
            key: Some("nvidia.com/gpu".into()),
            exists: false,
            value: "no".into(),
            effect: None,
        };
        assert!(exact.tolerates(&gpu) && any.tolerates(&gpu) && !wrong.tolerates(&gpu));
        let taints = [gpu.clone(), taint("soft", TaintEffect::PreferNoSchedule)];
        assert_eq!(untolerated(&[], &taints), Some(&gpu));
        assert_eq!(
            untolerated(&[exact], &taints),
            None,
            "PreferNoSchedule does not block"
        );
    }

    #[test]
    fn selectors() {
        let labels = vec![
            ("app".to_string(), "web".to_string()),
            ("tier".to_string(), "fe".to_string()),
        ];
        assert!(LabelSelector::labels(&[("app", "web")]).matches(&labels));
        assert!(!LabelSelector::labels(&[("app", "db")]).matches(&labels));
        let expr = LabelSelector {
            match_labels: vec![],
            match_expressions: vec![
                Requirement::new("tier", Operator::In, &["fe", "be"]),
                Requirement::new("canary", Operator::DoesNotExist, &[]),
            ],
        };
        assert!(expr.matches(&labels));
    }
}
