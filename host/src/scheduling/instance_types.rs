//! The instance types a round may launch, indexed for the simulation: the labels each type gives
//! a node, its allocatable and capacity, and its offerings by zone and capacity type.

use std::collections::HashMap;

use super::requirements::Requirements;
use super::well_known::{capacity_type_label, labels};
use crate::capacity::{Arch, CapacityType, Catalog, Resources};
use crate::catalog::CatalogEntry;

/// An offering as the simulation sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedOffering {
    /// Index into [`InstanceTypes::zones`] (at most 64 zones).
    pub zone: u32,
    pub capacity_type: CapacityType,
    /// USD per hour.
    pub price: f64,
    /// False while the offering is known to be out of capacity.
    pub available: bool,
}

/// One instance type.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedType {
    pub name: String,
    /// Values of [`labels::TYPE_KEYS`], in that order.
    pub labels: Vec<Option<String>>,
    pub allocatable: Resources,
    /// Raw (cpu millis, memory bytes): what counts against NodePool limits.
    pub capacity: (u64, u64),
    /// Local NVMe instance storage, bytes (0: none): ephemeral storage under
    /// `instanceStorePolicy: RAID0`.
    pub local_storage_bytes: u64,
    pub offerings: Vec<SchedOffering>,
}

/// Every instance type of a round, in the order of the policy catalog (the same indices).
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceTypes {
    pub types: Vec<SchedType>,
    pub zones: Vec<String>,
}

impl InstanceTypes {
    /// Indexes the policy catalog, taking labels from the catalog entries of the same names.
    pub fn new(entries: &[CatalogEntry], catalog: &Catalog) -> Self {
        assert!(catalog.zones.len() <= 64, "at most 64 zones");
        let by_name: HashMap<&str, &CatalogEntry> =
            entries.iter().map(|e| (e.name.as_str(), e)).collect();
        let types = catalog
            .instance_types
            .iter()
            .map(|t| {
                let e = by_name.get(t.name.as_str()).copied();
                let attr = |k: &str| e.and_then(|e| e.attribute(k));
                let labels = labels::TYPE_KEYS
                    .iter()
                    .map(|&key| match key {
                        labels::ARCH => Some(match t.arch {
                            Arch::Amd64 => "amd64".to_string(),
                            Arch::Arm64 => "arm64".to_string(),
                        }),
                        labels::OS => Some("linux".to_string()),
                        labels::INSTANCE_TYPE => Some(t.name.clone()),
                        labels::CATEGORY => e.map(|e| e.category()),
                        labels::FAMILY => attr("family"),
                        labels::GENERATION => attr("generation"),
                        labels::SIZE => attr("size"),
                        labels::CPU => Some(t.vcpus.to_string()),
                        labels::MEMORY => Some(t.memory_mib.to_string()),
                        labels::CPU_MANUFACTURER => attr("cpu-manufacturer"),
                        labels::GPU_NAME => attr("gpu-name"),
                        labels::GPU_COUNT => attr("gpu-count"),
                        _ => None,
                    })
                    .collect();
                SchedType {
                    name: t.name.clone(),
                    labels,
                    allocatable: t.allocatable,
                    capacity: (u64::from(t.vcpus) * 1000, t.memory_mib << 20),
                    // EC2 states instance storage in decimal GB (TotalSizeInGB).
                    local_storage_bytes: attr("local-nvme")
                        .and_then(|gb| gb.parse::<u64>().ok())
                        .map_or(0, |gb| gb * 1_000_000_000),
                    offerings: t
                        .offerings
                        .iter()
                        .map(|o| SchedOffering {
                            zone: o.zone,
                            capacity_type: o.capacity_type,
                            price: o.price,
                            available: true,
                        })
                        .collect(),
                }
            })
            .collect();
        InstanceTypes {
            types,
            zones: catalog.zones.clone(),
        }
    }

    /// A type's value of a well-known type label.
    pub fn label(&self, t: u32, key: &str) -> Option<&str> {
        let i = labels::TYPE_KEYS.iter().position(|&k| k == key)?;
        self.types[t as usize].labels[i].as_deref()
    }

    /// Whether a type's own labels satisfy `reqs` (keys a type does not answer are ignored).
    pub fn type_matches(&self, t: u32, reqs: &Requirements) -> bool {
        reqs.keys().all(
            |key| match labels::TYPE_KEYS.iter().position(|&k| k == key) {
                None => true,
                Some(i) => reqs
                    .get(key)
                    .is_none_or(|a| a.allows(self.types[t as usize].labels[i].as_deref())),
            },
        )
    }

    /// Types whose labels satisfy `reqs` and that have an offering in an admitted zone and
    /// capacity type.
    pub fn admitted_by(&self, reqs: &Requirements) -> Vec<u32> {
        let zones = self.zones_admitted_by(reqs);
        let capacity = reqs.get(labels::CAPACITY_TYPE);
        (0..self.types.len() as u32)
            .filter(|&t| {
                self.type_matches(t, reqs)
                    && self.types[t as usize].offerings.iter().any(|o| {
                        zones & (1 << o.zone) != 0
                            && capacity.is_none_or(|a| {
                                a.allows(Some(capacity_type_label(o.capacity_type)))
                            })
                    })
            })
            .collect()
    }

    /// Per type: whether its capacity is priced no more than `tolerance` above the value of the
    /// 10th-percentile type of `types` (price of its cheapest offering `reqs` allow, over its vCPUs
    /// and GiB valued at the cheapest rates). A low percentile, not the best: one type with a
    /// lucky spot price must not make every other type look premium; not the median: dear GPU and
    /// storage families must not make premium types look normal. Types with no allowed offering
    /// are not efficient.
    pub fn efficient(&self, types: &[u32], reqs: &Requirements, tolerance: f64) -> Vec<bool> {
        let zones = self.zones_admitted_by(reqs);
        let price = |t: u32| self.cheapest(t, zones, reqs).unwrap_or(f64::INFINITY);
        let units = |t: u32| {
            let (cpu, mem) = self.types[t as usize].capacity;
            (cpu as f64 / 1000.0, mem as f64 / f64::from(1u32 << 30))
        };
        let (mut per_cpu, mut per_gib) = (f64::INFINITY, f64::INFINITY);
        for &t in types {
            let (c, g) = units(t);
            per_cpu = per_cpu.min(price(t) / c.max(1e-9));
            per_gib = per_gib.min(price(t) / g.max(1e-9));
        }
        let ratio = |t: u32| {
            let (c, g) = units(t);
            price(t) / (c * per_cpu + g * per_gib)
        };
        let mut ratios: Vec<f64> = types
            .iter()
            .map(|&t| ratio(t))
            .filter(|r| r.is_finite())
            .collect();
        let mut out = vec![false; self.types.len()];
        if ratios.is_empty() {
            return out;
        }
        let nth = ratios.len() / 10;
        let baseline = *ratios.select_nth_unstable_by(nth, f64::total_cmp).1;
        for &t in types {
            out[t as usize] = ratio(t) <= baseline * (1.0 + tolerance);
        }
        out
    }

    /// The price of type `t`'s cheapest available offering in `zones` with a capacity type `reqs`
    /// allow.
    pub fn cheapest(&self, t: u32, zones: u64, reqs: &Requirements) -> Option<f64> {
        let capacity = reqs.get(labels::CAPACITY_TYPE);
        self.types[t as usize]
            .offerings
            .iter()
            .filter(|o| {
                o.available
                    && zones & (1 << o.zone) != 0
                    && capacity.is_none_or(|a| a.allows(Some(capacity_type_label(o.capacity_type))))
            })
            .map(|o| o.price)
            .min_by(f64::total_cmp)
    }

    /// Zones `reqs` admit, as a bit mask.
    pub fn zones_admitted_by(&self, reqs: &Requirements) -> u64 {
        let zone = reqs.get(labels::ZONE);
        self.zones
            .iter()
            .enumerate()
            .filter(|(_, z)| zone.is_none_or(|a| a.allows(Some(z))))
            .fold(0, |m, (i, _)| m | 1 << i)
    }
}
