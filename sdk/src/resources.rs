//! Helpers policies rank with: fit, waste, price per vCPU and per GiB.

use crate::{InstanceType, Offering, Resources};

const GIB: f64 = (1u64 << 30) as f64;

impl Resources {
    /// Only CPU and memory; everything else zero.
    pub fn cpu_mem(cpu_millis: u64, memory_bytes: u64) -> Self {
        Resources {
            cpu_millis,
            memory_bytes,
            ephemeral_storage_bytes: 0,
            pods: 0,
            gpus: 0,
        }
    }

    /// Whether `self` fits inside `capacity` on every dimension.
    pub fn fits_in(&self, capacity: &Resources) -> bool {
        self.cpu_millis <= capacity.cpu_millis
            && self.memory_bytes <= capacity.memory_bytes
            && self.ephemeral_storage_bytes <= capacity.ephemeral_storage_bytes
            && self.pods <= capacity.pods
            && self.gpus <= capacity.gpus
    }

    /// Memory in GiB.
    pub fn memory_gib(&self) -> f64 {
        self.memory_bytes as f64 / GIB
    }
}

/// Share of a node's CPU and memory the requests leave unused, 0.0 (full) to 1.0 (empty): the mean
/// of the CPU and memory fractions. A dimension the node does not offer counts as fully wasted.
pub fn waste(requests: &Resources, allocatable: &Resources) -> f64 {
    let frac = |used: u64, cap: u64| {
        if cap == 0 {
            1.0
        } else {
            1.0 - (used as f64 / cap as f64).min(1.0)
        }
    };
    (frac(requests.cpu_millis, allocatable.cpu_millis)
        + frac(requests.memory_bytes, allocatable.memory_bytes))
        / 2.0
}

/// Price per hour of one vCPU of this offering.
pub fn price_per_vcpu(instance_type: &InstanceType, offering: &Offering) -> f64 {
    offering.price / f64::from(instance_type.vcpus.max(1))
}

/// Price per hour of one GiB of memory of this offering.
pub fn price_per_gib(instance_type: &InstanceType, offering: &Offering) -> f64 {
    offering.price / (instance_type.memory_mib.max(1) as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Arch;
    use crate::testing::catalog_type;

    #[test]
    fn fit_checks_every_dimension() {
        let cap = Resources {
            cpu_millis: 2000,
            memory_bytes: 4 << 30,
            ephemeral_storage_bytes: 10,
            pods: 3,
            gpus: 0,
        };
        assert!(Resources::cpu_mem(2000, 4 << 30).fits_in(&cap));
        assert!(!Resources::cpu_mem(2001, 1).fits_in(&cap));
        assert!(
            !Resources {
                gpus: 1,
                ..Resources::cpu_mem(1, 1)
            }
            .fits_in(&cap)
        );
        assert!(
            !Resources {
                pods: 4,
                ..Resources::cpu_mem(1, 1)
            }
            .fits_in(&cap)
        );
    }

    #[test]
    fn waste_is_mean_unused_share() {
        let cap = Resources::cpu_mem(2000, 8 << 30);
        assert_eq!(waste(&Resources::cpu_mem(2000, 8 << 30), &cap), 0.0);
        assert_eq!(waste(&Resources::cpu_mem(0, 0), &cap), 1.0);
        assert!((waste(&Resources::cpu_mem(1000, 2 << 30), &cap) - 0.625).abs() < 1e-9);
    }

    #[test]
    fn unit_prices() {
        let t = catalog_type("m5.xlarge", Arch::Amd64, 4, 16)
            .on_demand("z", 0.192)
            .build();
        assert!((price_per_vcpu(&t, &t.offerings[0]) - 0.048).abs() < 1e-12);
        assert!((price_per_gib(&t, &t.offerings[0]) - 0.012).abs() < 1e-12);
    }
}
