//! Resource quantities and their arithmetic: what a node must hold and what it has.

/// Resource quantities in integer base units, so no decision parses a Kubernetes quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Resources {
    /// CPU in millicores: 1000 is one vCPU.
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Ephemeral (node-local) storage in bytes.
    pub ephemeral_storage_bytes: u64,
    /// Pod slots: a node's max-pods, or a count of pods requested.
    pub pods: u32,
    /// Accelerators (NVIDIA GPUs).
    pub gpus: u32,
}

/// No resources.
pub fn zero() -> Resources {
    Resources {
        cpu_millis: 0,
        memory_bytes: 0,
        ephemeral_storage_bytes: 0,
        pods: 0,
        gpus: 0,
    }
}

/// Component-wise sum.
pub fn add(a: &Resources, b: &Resources) -> Resources {
    Resources {
        cpu_millis: a.cpu_millis + b.cpu_millis,
        memory_bytes: a.memory_bytes + b.memory_bytes,
        ephemeral_storage_bytes: a.ephemeral_storage_bytes + b.ephemeral_storage_bytes,
        pods: a.pods + b.pods,
        gpus: a.gpus + b.gpus,
    }
}

/// Component-wise maximum.
pub fn max(a: &Resources, b: &Resources) -> Resources {
    Resources {
        cpu_millis: a.cpu_millis.max(b.cpu_millis),
        memory_bytes: a.memory_bytes.max(b.memory_bytes),
        ephemeral_storage_bytes: a.ephemeral_storage_bytes.max(b.ephemeral_storage_bytes),
        pods: a.pods.max(b.pods),
        gpus: a.gpus.max(b.gpus),
    }
}

/// Whether `requests` fit in `allocatable` on every dimension.
pub fn fits(requests: &Resources, allocatable: &Resources) -> bool {
    requests.cpu_millis <= allocatable.cpu_millis
        && requests.memory_bytes <= allocatable.memory_bytes
        && requests.ephemeral_storage_bytes <= allocatable.ephemeral_storage_bytes
        && requests.pods <= allocatable.pods
        && requests.gpus <= allocatable.gpus
}
