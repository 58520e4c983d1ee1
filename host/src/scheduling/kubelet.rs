//! What an EC2NodeClass changes about the room a node gives pods: `kubelet` (maxPods,
//! podsPerCore, kubeReserved, systemReserved, evictionHard/Soft) and the root volume's size.
//!
//! The catalog's allocatable is the AL2023 default (see [`crate::cloud::aws::discovery::allocatable`]):
//! capacity less the hypervisor's share, kubelet's default reservation (a CPU share per core;
//! memory 11 MiB per pod + 255 MiB; 1 GiB of disk), the 100 MiB `memory.available` and 10 %
//! `nodefs.available` hard-eviction thresholds, on a 20 GiB root volume. A class's settings replace
//! those terms, as kubelet computes `allocatable = capacity − kubeReserved − systemReserved −
//! evictionHard` (kubernetes.io "Reserve Compute Resources for System Daemons"), and as Karpenter
//! sizes nodes from the same settings — so the simulation never plans a pod onto room the node
//! will not have.

use crate::capacity::Resources;

use super::instance_types::SchedType;

/// kubelet's default CPU reservation of the EKS AMIs: 6 % of the first core, 1 % of the second,
/// 0.5 % of the next two and 0.25 % of the rest, in millicores.
pub fn default_kube_reserved_cpu(vcpus: u64) -> u64 {
    let first = 60 * vcpus.min(1);
    let second = 10 * vcpus.saturating_sub(1).min(1);
    let next_two = 5 * vcpus.saturating_sub(2).min(2);
    first + second + next_two + vcpus.saturating_sub(4) * 25 / 10
}

/// kubelet's default memory reservation of the EKS AMIs for `pods` pods, in MiB.
pub fn default_kube_reserved_memory_mib(pods: u64) -> u64 {
    11 * pods + 255
}

const DEFAULT_EVICTION_MEMORY: u64 = 100 << 20;
const DEFAULT_ROOT_VOLUME: u64 = 20 << 30;
const DEFAULT_KUBE_RESERVED_STORAGE: u64 = 1 << 30;
const DEFAULT_EVICTION_NODEFS_PERCENT: f64 = 10.0;

/// An eviction threshold: an amount, or a share of the node's capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    Bytes(u64),
    Percent(f64),
}

impl Threshold {
    fn of(self, capacity: u64) -> u64 {
        match self {
            Threshold::Bytes(b) => b,
            Threshold::Percent(p) => (capacity as f64 * p / 100.0).ceil() as u64,
        }
    }
}

/// Reserved resources (`kubeReserved` / `systemReserved`); `None` leaves kubelet's default.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Reserved {
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub ephemeral_storage_bytes: Option<u64>,
}

/// A node class's settings that change allocatable. `Default` is the AMI's own behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct NodeSettings {
    pub max_pods: Option<u32>,
    pub pods_per_core: Option<u32>,
    pub kube_reserved: Reserved,
    pub system_reserved: Reserved,
    /// evictionHard's and evictionSoft's `memory.available`: the larger binds.
    pub eviction_memory: [Option<Threshold>; 2],
    /// evictionHard's and evictionSoft's `nodefs.available`: the larger binds.
    pub eviction_nodefs: [Option<Threshold>; 2],
    /// The root volume's size (blockDeviceMappings' `rootVolume`, or the AMI's first device).
    pub root_volume_bytes: Option<u64>,
    /// `instanceStorePolicy: RAID0`: the instance's NVMe disks, striped, hold pods' ephemeral
    /// storage instead of the root volume (on types that have them).
    pub instance_store_raid0: bool,
}

impl NodeSettings {
    /// What pods can use on a node of `ty` with these settings.
    pub fn allocatable(&self, ty: &SchedType) -> Resources {
        if *self == NodeSettings::default() {
            return ty.allocatable;
        }
        let base = ty.allocatable;
        let (cpu_capacity, memory_capacity) = ty.capacity;
        let vcpus = cpu_capacity / 1000;
        let default_pods = u64::from(base.pods);
        let mut pods = self.max_pods.map_or(default_pods, u64::from);
        if let Some(per_core) = self.pods_per_core.filter(|&p| p > 0) {
            pods = pods.min(u64::from(per_core) * vcpus.max(1));
        }
        // Back out the default terms, then take the class's.
        let cpu_before_reservation = base.cpu_millis + default_kube_reserved_cpu(vcpus);
        let cpu = cpu_before_reservation
            .saturating_sub(
                self.kube_reserved
                    .cpu_millis
                    .unwrap_or_else(|| default_kube_reserved_cpu(vcpus)),
            )
            .saturating_sub(self.system_reserved.cpu_millis.unwrap_or(0));
        let memory_before_reservation = base.memory_bytes
            + (default_kube_reserved_memory_mib(default_pods) << 20)
            + DEFAULT_EVICTION_MEMORY;
        let memory = memory_before_reservation
            .saturating_sub(
                self.kube_reserved
                    .memory_bytes
                    .unwrap_or(default_kube_reserved_memory_mib(pods) << 20),
            )
            .saturating_sub(self.system_reserved.memory_bytes.unwrap_or(0))
            .saturating_sub(binding(
                &self.eviction_memory,
                memory_capacity,
                Threshold::Bytes(DEFAULT_EVICTION_MEMORY),
            ));
        let root = match ty.local_storage_bytes {
            local if self.instance_store_raid0 && local > 0 => local,
            _ => self.root_volume_bytes.unwrap_or(DEFAULT_ROOT_VOLUME),
        };
        let storage = root
            .saturating_sub(
                self.kube_reserved
                    .ephemeral_storage_bytes
                    .unwrap_or(DEFAULT_KUBE_RESERVED_STORAGE),
            )
            .saturating_sub(self.system_reserved.ephemeral_storage_bytes.unwrap_or(0))
            .saturating_sub(binding(
                &self.eviction_nodefs,
                root,
                Threshold::Percent(DEFAULT_EVICTION_NODEFS_PERCENT),
            ));
        Resources {
            cpu_millis: cpu,
            memory_bytes: memory,
            ephemeral_storage_bytes: storage,
            pods: pods as u32,
            gpus: base.gpus,
        }
    }
}

/// The larger of the thresholds set, at `capacity`; `default` when none is.
fn binding(thresholds: &[Option<Threshold>; 2], capacity: u64, default: Threshold) -> u64 {
    thresholds
        .iter()
        .flatten()
        .map(|t| t.of(capacity))
        .max()
        .unwrap_or_else(|| default.of(capacity))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::aws::discovery;

    fn ty(vcpus: u32, memory_mib: u64, pods: u32) -> SchedType {
        SchedType {
            name: "t".into(),
            labels: Vec::new(),
            allocatable: discovery::allocatable(vcpus, memory_mib, pods),
            capacity: (u64::from(vcpus) * 1000, memory_mib << 20),
            local_storage_bytes: 0,
            offerings: Vec::new(),
        }
    }

    #[test]
    fn raid0_puts_ephemeral_storage_on_the_instance_store_where_there_is_one() {
        let mut t = ty(2, 8192, 29);
        let raid0 = NodeSettings {
            instance_store_raid0: true,
            ..Default::default()
        };
        assert_eq!(
            raid0.allocatable(&t).ephemeral_storage_bytes,
            17 << 30,
            "no NVMe: the root volume"
        );
        t.local_storage_bytes = 75_000_000_000;
        let on_nvme = raid0.allocatable(&t).ephemeral_storage_bytes;
        let expected = 75_000_000_000u64 - (1 << 30) - (7_500_000_000u64);
        assert_eq!(on_nvme, expected);
    }

    #[test]
    fn the_default_settings_leave_the_catalog_allocatable_as_it_is() {
        let t = ty(4, 16384, 58);
        assert_eq!(NodeSettings::default().allocatable(&t), t.allocatable);
    }

    #[test]
    fn max_pods_caps_pods_and_gives_back_the_memory_kubelet_reserved_for_them() {
        let t = ty(4, 16384, 58);
        let a = NodeSettings {
            max_pods: Some(20),
            ..Default::default()
        }
        .allocatable(&t);
        assert_eq!(a.pods, 20);
        assert_eq!(
            a.memory_bytes,
            t.allocatable.memory_bytes + ((11 * 38) << 20)
        );
        assert_eq!(a.cpu_millis, t.allocatable.cpu_millis);
        assert_eq!(a, discovery::allocatable(4, 16384, 20));
    }

    #[test]
    fn pods_per_core_caps_pods_by_vcpus() {
        let t = ty(2, 8192, 29);
        let s = NodeSettings {
            pods_per_core: Some(5),
            ..Default::default()
        };
        assert_eq!(s.allocatable(&t).pods, 10);
    }

    #[test]
    fn reservations_and_thresholds_replace_the_defaults() {
        let t = ty(2, 8192, 29);
        let a = NodeSettings {
            kube_reserved: Reserved {
                cpu_millis: Some(200),
                memory_bytes: Some(1 << 30),
                ephemeral_storage_bytes: None,
            },
            system_reserved: Reserved {
                cpu_millis: Some(100),
                memory_bytes: Some(100 << 20),
                ephemeral_storage_bytes: None,
            },
            eviction_memory: [
                Some(Threshold::Bytes(200 << 20)),
                Some(Threshold::Percent(10.0)),
            ],
            root_volume_bytes: Some(100 << 30),
            ..Default::default()
        }
        .allocatable(&t);
        assert_eq!(a.cpu_millis, 2000 - 200 - 100);
        let vm = (8192u64 * 75).div_ceil(1000) << 20;
        let evict = ((8192u64 << 20) as f64 * 0.1).ceil() as u64;
        assert_eq!(
            a.memory_bytes,
            (8192u64 << 20) - vm - (1 << 30) - (100 << 20) - evict
        );
        // 100 GiB less 1 GiB reserved and the 10 % nodefs threshold.
        assert_eq!(
            a.ephemeral_storage_bytes,
            (100u64 << 30) - (1 << 30) - (10 << 30)
        );
        assert_eq!(a.pods, 29);
    }

    #[test]
    fn the_default_model_gives_the_catalogs_17_gib_of_disk() {
        let t = ty(2, 8192, 29);
        let a = NodeSettings {
            max_pods: Some(29),
            ..Default::default()
        }
        .allocatable(&t);
        assert_eq!(a.ephemeral_storage_bytes, 17 << 30);
    }
}
