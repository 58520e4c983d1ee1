//! What capacity is and how it is bought, in the host's own words: resources, instance types,
//! their offerings and the catalog of them. Every layer decides in these types; the policy engine
//! converts them to the WIT interface's records at its boundary (`policy::convert`), so a new WIT
//! version touches the engine only.
//!
//! The fields mirror `dovetail:policy@0.1.0` on purpose (a policy sees what the host sees), but
//! they are ours: a WIT release that renames or adds a field changes a conversion, not this.

pub mod claim;
pub mod resources;

pub use resources::Resources;

/// CPU architecture (the `kubernetes.io/arch` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    Amd64,
    Arm64,
}

/// How capacity is bought (the `dovetail.sh/capacity-type` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CapacityType {
    Spot,
    OnDemand,
    Reserved,
}

/// Who designed the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CpuManufacturer {
    Intel,
    Amd,
    Aws,
    Other,
}

/// One place an instance type can be bought: a zone and a capacity type, with its price.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Offering {
    /// Index into [`Catalog::zones`].
    pub zone: u32,
    pub capacity_type: CapacityType,
    /// USD per hour.
    pub price: f64,
    /// Estimated share of instances interrupted per month (0 to 1); 0 unless spot.
    pub interruption_rate: f32,
    /// Relative depth of the capacity pool, 0 (scarce) to 1 (deep); 1 unless spot.
    pub capacity_score: f32,
}

/// An EC2 instance type with what the host decides on.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceType {
    /// e.g. `m7g.large`.
    pub name: String,
    pub arch: Arch,
    pub cpu_manufacturer: CpuManufacturer,
    /// Raw vCPUs of the machine.
    pub vcpus: u32,
    /// Raw memory of the machine in MiB.
    pub memory_mib: u64,
    /// What pods can use after kubelet, system reservations and the eviction threshold.
    pub allocatable: Resources,
    /// GPU model, when the type has GPUs.
    pub gpu_name: Option<String>,
    /// Every offering of this type (at most [`MAX_OFFERINGS`]); launch options index into it.
    pub offerings: Vec<Offering>,
}

/// The instance types a pool may launch, with the zones their offerings refer to.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Catalog {
    /// Zone names, e.g. `us-east-1a`; offerings refer to them by index.
    pub zones: Vec<String>,
    pub instance_types: Vec<InstanceType>,
}

/// One way to launch: an instance type of a catalog and one of its offerings, packed in one
/// number (`type << 8 | offering`) because a round holds millions of them.
pub type LaunchOption = u32;

/// Offerings per instance type a packed option can address.
pub const MAX_OFFERINGS: usize = 256;

/// Packs (instance type index, offering index) into a launch option.
pub fn pack(instance_type: usize, offering: usize) -> LaunchOption {
    debug_assert!(offering < MAX_OFFERINGS && instance_type < (1 << 24));
    ((instance_type as u32) << 8) | offering as u32
}

/// Unpacks a launch option into (instance type index, offering index).
pub fn unpack(option: LaunchOption) -> (usize, usize) {
    ((option >> 8) as usize, (option & 0xff) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips() {
        for (t, o) in [(0, 0), (1, 255), (799, 5), ((1 << 24) - 1, 17)] {
            assert_eq!(unpack(pack(t, o)), (t, o));
        }
    }
}
