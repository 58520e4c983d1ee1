//! The labels an instance type offering gives a node, and the capacity type's label value.

use crate::capacity::CapacityType;

/// Well-known node label keys.
pub mod labels {
    pub const ARCH: &str = "kubernetes.io/arch";
    pub const OS: &str = "kubernetes.io/os";
    pub const HOSTNAME: &str = "kubernetes.io/hostname";
    pub const ZONE: &str = "topology.kubernetes.io/zone";
    pub const INSTANCE_TYPE: &str = "node.kubernetes.io/instance-type";
    pub const CAPACITY_TYPE: &str = "dovetail.sh/capacity-type";
    pub const NODEPOOL: &str = "dovetail.sh/nodepool";
    pub const CATEGORY: &str = "aws.dovetail.sh/instance-category";
    pub const FAMILY: &str = "aws.dovetail.sh/instance-family";
    pub const GENERATION: &str = "aws.dovetail.sh/instance-generation";
    pub const SIZE: &str = "aws.dovetail.sh/instance-size";
    pub const CPU: &str = "aws.dovetail.sh/instance-cpu";
    pub const MEMORY: &str = "aws.dovetail.sh/instance-memory";
    pub const CPU_MANUFACTURER: &str = "aws.dovetail.sh/instance-cpu-manufacturer";
    pub const GPU_NAME: &str = "aws.dovetail.sh/instance-gpu-name";
    pub const GPU_COUNT: &str = "aws.dovetail.sh/instance-gpu-count";

    /// Keys an instance type itself answers (zone and capacity type come from the offering).
    /// Labels every node the controller launches carries, whatever its NodePool defines.
    pub fn well_known(key: &str) -> bool {
        TYPE_KEYS.contains(&key) || [ZONE, CAPACITY_TYPE, NODEPOOL, HOSTNAME, REGION].contains(&key)
    }

    pub const REGION: &str = "topology.kubernetes.io/region";

    pub const TYPE_KEYS: [&str; 12] = [
        ARCH,
        OS,
        INSTANCE_TYPE,
        CATEGORY,
        FAMILY,
        GENERATION,
        SIZE,
        CPU,
        MEMORY,
        CPU_MANUFACTURER,
        GPU_NAME,
        GPU_COUNT,
    ];
}

/// The capacity-type label value.
pub fn capacity_type_label(c: CapacityType) -> &'static str {
    match c {
        CapacityType::Spot => "spot",
        CapacityType::OnDemand => "on-demand",
        CapacityType::Reserved => "reserved",
    }
}

/// A capacity type from its label value.
pub fn capacity_type(label: &str) -> Option<CapacityType> {
    [
        CapacityType::Spot,
        CapacityType::OnDemand,
        CapacityType::Reserved,
    ]
    .into_iter()
    .find(|&c| capacity_type_label(c) == label)
}
