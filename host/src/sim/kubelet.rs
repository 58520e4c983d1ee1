//! What the simulator's kubelet reports as a node's `status.allocatable`: kubelet's own rule,
//! `allocatable = capacity − kubeReserved − systemReserved − evictionHard` (kubernetes.io "Reserve
//! Compute Resources for System Daemons"), with the EKS AMI's defaults for what the node class
//! leaves unset (awslabs/amazon-eks-ami, nodeadm's kubelet config: the CPU share per core, 11 MiB
//! per pod + 255 MiB of memory, `memory.available` 100Mi and `nodefs.available` 10 %), on the
//! machine EC2 describes. Written from those sources and the class's own fields, not from the
//! controller's model of it, so that a model that promises more room than kubelet gives shows
//! up as pods the scheduler will not bind.
//!
//! Not played: soft eviction thresholds (kubelet subtracts only hard ones), an instance store
//! under `instanceStorePolicy: RAID0` (the root volume holds ephemeral storage here), and
//! `pid` reservations.

use crate::capacity::Resources;

/// A machine as EC2 describes it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Machine {
    pub vcpus: u32,
    pub memory_mib: u64,
    pub gpus: u32,
    /// The pods its network interfaces can address: the AMI's default `maxPods`.
    pub eni_pods: u32,
}

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// The EKS AMI's CPU reservation: 6 % of the first core, 1 % of the second, 0.5 % of the next
/// two, 0.25 % of the rest, in millicores.
fn ami_reserved_cpu(cores: u64) -> u64 {
    let share = |from: u64, to: u64, tenths_percent: u64| {
        cores.clamp(from, to).saturating_sub(from) * tenths_percent
    };
    share(0, 1, 60) + share(1, 2, 10) + share(2, 4, 5) + cores.saturating_sub(4) * 25 / 10
}

/// A quantity in a map of the class's kubelet settings, if set and readable.
fn setting(kubelet: Option<&serde_json::Value>, map: &str, key: &str) -> Option<String> {
    kubelet?.get(map)?.get(key)?.as_str().map(str::to_string)
}

/// An eviction threshold of `capacity`: a percentage or a quantity.
fn threshold(value: &str, capacity: u64) -> Option<u64> {
    match value.strip_suffix('%') {
        Some(p) => p
            .trim()
            .parse::<f64>()
            .ok()
            .map(|p| (capacity as f64 * p / 100.0).ceil() as u64),
        None => crate::quantity::bytes(value).ok(),
    }
}

/// The node's allocatable, for an EC2NodeClass `spec` (as JSON; `None`: the AMI's defaults).
pub(super) fn allocatable(m: Machine, spec: Option<&serde_json::Value>) -> Resources {
    let kubelet = spec.and_then(|s| s.get("kubelet"));
    let int = |key: &str| kubelet.and_then(|k| k.get(key)).and_then(|v| v.as_u64());
    let cores = u64::from(m.vcpus);
    let mut pods = int("maxPods").unwrap_or(u64::from(m.eni_pods));
    if let Some(per_core) = int("podsPerCore").filter(|&p| p > 0) {
        pods = pods.min(per_core * cores.max(1));
    }
    let reserved = |what: &str, parse: fn(&str) -> Option<u64>| {
        let get = |map| setting(kubelet, map, what).and_then(|v| parse(&v));
        (get("kubeReserved"), get("systemReserved").unwrap_or(0))
    };
    let cpu_of = |v: &str| crate::quantity::cpu_millis(v).ok();
    let bytes_of = |v: &str| crate::quantity::bytes(v).ok();

    let (kube_cpu, system_cpu) = reserved("cpu", cpu_of);
    let cpu = (cores * 1000)
        .saturating_sub(kube_cpu.unwrap_or_else(|| ami_reserved_cpu(cores)))
        .saturating_sub(system_cpu);

    // The guest sees the machine's memory less the hypervisor's share (7.5 %).
    let memory_capacity = (m.memory_mib - (m.memory_mib * 75).div_ceil(1000)) * MIB;
    let (kube_memory, system_memory) = reserved("memory", bytes_of);
    let hard_memory = setting(kubelet, "evictionHard", "memory.available")
        .and_then(|v| threshold(&v, memory_capacity))
        .unwrap_or(100 * MIB);
    let memory = memory_capacity
        .saturating_sub(kube_memory.unwrap_or((255 + 11 * pods) * MIB))
        .saturating_sub(system_memory)
        .saturating_sub(hard_memory);

    let root = spec
        .and_then(|s| s.get("blockDeviceMappings"))
        .and_then(|b| b.as_array())
        .and_then(|list| {
            let root = list
                .iter()
                .find(|d| d.get("rootVolume").and_then(|r| r.as_bool()) == Some(true));
            root.or(list.first())
        })
        .and_then(|d| d.pointer("/ebs/volumeSize"))
        .and_then(|v| v.as_str())
        .and_then(|v| crate::quantity::bytes(v).ok())
        .unwrap_or(20 * GIB);
    let (kube_storage, system_storage) = reserved("ephemeral-storage", bytes_of);
    let hard_nodefs = setting(kubelet, "evictionHard", "nodefs.available")
        .and_then(|v| threshold(&v, root))
        .unwrap_or_else(|| threshold("10%", root).unwrap_or(0));
    let storage = root
        .saturating_sub(kube_storage.unwrap_or(GIB))
        .saturating_sub(system_storage)
        .saturating_sub(hard_nodefs);

    Resources {
        cpu_millis: cpu,
        memory_bytes: memory,
        ephemeral_storage_bytes: storage,
        pods: pods as u32,
        gpus: m.gpus,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m5_large() -> Machine {
        Machine {
            vcpus: 2,
            memory_mib: 8192,
            gpus: 0,
            eni_pods: 29,
        }
    }

    #[test]
    fn with_the_amis_defaults_an_m5_large_gives_pods_what_the_eks_ami_leaves() {
        let a = allocatable(m5_large(), None);
        // 2,000m less 60m + 10m; 8,192 MiB less 615 MiB (7.5 %), 255 + 11 × 29 MiB and 100 MiB.
        assert_eq!(a.cpu_millis, 1930);
        assert_eq!(a.memory_bytes, (8192 - 615 - 574 - 100) * MIB);
        assert_eq!(a.ephemeral_storage_bytes, 17 * GIB);
        assert_eq!(a.pods, 29);
        assert_eq!(ami_reserved_cpu(96), 60 + 10 + 10 + 92 * 25 / 10);
    }

    #[test]
    fn a_node_classs_kubelet_settings_change_what_kubelet_reports() {
        let spec = serde_json::json!({
            "kubelet": {"maxPods": 10, "kubeReserved": {"cpu": "200m"},
                        "systemReserved": {"memory": "1Gi"},
                        "evictionHard": {"memory.available": "5%", "nodefs.available": "1Gi"}},
            "blockDeviceMappings": [{"deviceName": "/dev/xvdb", "ebs": {"volumeSize": "50Gi"}},
                                    {"deviceName": "/dev/xvda", "rootVolume": true,
                                     "ebs": {"volumeSize": "100Gi"}}],
        });
        let a = allocatable(m5_large(), Some(&spec));
        assert_eq!(a.pods, 10);
        assert_eq!(a.cpu_millis, 1800);
        let capacity = (8192 - 615) * MIB;
        let five_percent = (capacity as f64 * 0.05).ceil() as u64;
        assert_eq!(
            a.memory_bytes,
            capacity - (255 + 110) * MIB - GIB - five_percent,
            "the default memory reservation follows maxPods"
        );
        assert_eq!(a.ephemeral_storage_bytes, 100 * GIB - GIB - GIB);
        // podsPerCore caps maxPods at that many per vCPU.
        let per_core = serde_json::json!({"kubelet": {"podsPerCore": 3}});
        assert_eq!(allocatable(m5_large(), Some(&per_core)).pods, 6);
    }
}
