//! The EC2 instance-type catalog: the reference data (embedded, so the binary works anywhere) and
//! the offerings the simulator derives from it.
//!
//! NB: the data has on-demand prices only. Spot prices, interruption rates and pool depths are
//! derived deterministically from a hash of (type, zone): spot at 30–70 % of on-demand, an
//! interruption rate of 2–20 % a month, a capacity score of 0.3–1.0. Stable across runs, so
//! simulations and benchmarks repeat exactly.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::capacity::claim::{Claim, Pod, Workload};
use crate::capacity::resources::{add, fits, zero};
use crate::capacity::{
    Arch, CapacityType, Catalog, CpuManufacturer, InstanceType, MAX_OFFERINGS, Offering, Resources,
    pack,
};

/// The catalog shipped with the controller (a copy of the project's reference data).
const EMBEDDED: &str = include_str!("../data/ec2-instance-types.json");

/// Catalog errors.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The JSON does not have the catalog's shape.
    #[error("instance-type catalog {source_name}: {error}")]
    Parse {
        source_name: String,
        error: serde_json::Error,
    },
}

/// One instance type of the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogEntry {
    pub name: String,
    pub arch: Arch,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// Well-known attributes (`category`, `family`, `generation`, `size`, `cpu-manufacturer`,
    /// `gpu-name`, …) as they appear in node labels.
    pub attributes: BTreeMap<String, serde_json::Value>,
    /// What pods can use on a node of this type.
    pub allocatable: Resources,
    /// Linux on-demand price in us-east-1, USD per hour; `None` when unknown (never launched).
    pub ondemand_price: Option<f64>,
}

#[derive(Deserialize)]
struct RawFile {
    instance_types: Vec<RawType>,
}

#[derive(Deserialize)]
struct RawType {
    name: String,
    arch: String,
    vcpu: u32,
    memory_mib: u64,
    #[serde(default)]
    attributes: BTreeMap<String, serde_json::Value>,
    allocatable: RawAllocatable,
    ondemand_price_usd_hr_us_east_1: Option<f64>,
}

#[derive(Deserialize)]
struct RawAllocatable {
    cpu_millis: u64,
    memory_mib: u64,
    ephemeral_storage_gib: u64,
    pods: u32,
    #[serde(default)]
    gpus: u32,
}

/// The embedded catalog.
pub fn embedded() -> Vec<CatalogEntry> {
    parse("embedded", EMBEDDED).expect("the embedded catalog parses")
}

/// Parses a catalog file in the reference data's format.
pub fn parse(source_name: &str, json: &str) -> Result<Vec<CatalogEntry>, CatalogError> {
    let json = null_non_finite(json);
    let raw: RawFile = serde_json::from_str(&json).map_err(|error| CatalogError::Parse {
        source_name: source_name.to_string(),
        error,
    })?;
    Ok(raw
        .instance_types
        .into_iter()
        .map(|t| CatalogEntry {
            arch: if t.arch == "arm64" {
                Arch::Arm64
            } else {
                Arch::Amd64
            },
            allocatable: Resources {
                cpu_millis: t.allocatable.cpu_millis,
                memory_bytes: t.allocatable.memory_mib << 20,
                ephemeral_storage_bytes: t.allocatable.ephemeral_storage_gib << 30,
                pods: t.allocatable.pods,
                gpus: t.allocatable.gpus,
            },
            name: t.name,
            vcpus: t.vcpu,
            memory_mib: t.memory_mib,
            attributes: t.attributes,
            ondemand_price: t.ondemand_price_usd_hr_us_east_1,
        })
        .collect())
}

impl CatalogEntry {
    /// A string attribute, e.g. `family`.
    pub fn attribute(&self, key: &str) -> Option<String> {
        match self.attributes.get(key)? {
            serde_json::Value::String(s) => Some(s.clone()),
            v => Some(v.to_string()),
        }
    }

    /// Instance category (`m` of `m7g`). NB: the reference data has `Infinity` for the `inf`
    /// families (a YAML/JSON round trip read "inf" as a number), so a missing or non-string
    /// category is derived from the family name.
    pub fn category(&self) -> String {
        match self.attributes.get("category") {
            Some(serde_json::Value::String(s)) => s.clone(),
            _ => self
                .attribute("family")
                .unwrap_or_else(|| self.name.clone())
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect(),
        }
    }

    /// The instance type with the given offerings.
    pub fn to_instance_type(&self, offerings: Vec<Offering>) -> InstanceType {
        let cpu_manufacturer = match self.attribute("cpu-manufacturer").as_deref() {
            Some("intel") => CpuManufacturer::Intel,
            Some("amd") => CpuManufacturer::Amd,
            Some("aws") => CpuManufacturer::Aws,
            _ => CpuManufacturer::Other,
        };
        InstanceType {
            name: self.name.clone(),
            arch: self.arch,
            cpu_manufacturer,
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            allocatable: self.allocatable,
            gpu_name: self.attribute("gpu-name"),
            offerings,
        }
    }

    /// Simulated offerings in `zones` (offerings refer to them by index): on-demand at the
    /// catalog price and spot at a derived one.
    /// Empty when the catalog has no price for the type.
    pub fn simulated_offerings(&self, zones: &[&str]) -> Vec<Offering> {
        let Some(od) = self.ondemand_price else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(zones.len() * 2);
        for (zi, zone) in zones.iter().enumerate() {
            let h = fnv(&[self.name.as_bytes(), b"/", zone.as_bytes()]);
            let unit = |shift: u32| ((h >> shift) & 0xffff) as f64 / 65535.0;
            out.push(Offering {
                zone: zi as u32,
                capacity_type: CapacityType::Spot,
                price: round4(od * (0.30 + 0.40 * unit(0))),
                interruption_rate: (0.02 + 0.18 * unit(16)) as f32,
                capacity_score: (0.30 + 0.70 * unit(32)) as f32,
            });
            out.push(Offering {
                zone: zi as u32,
                capacity_type: CapacityType::OnDemand,
                price: od,
                interruption_rate: 0.0,
                capacity_score: 1.0,
            });
        }
        out
    }
}

/// Replaces the bare `Infinity`, `-Infinity` and `NaN` tokens Python's `json` writes (invalid
/// JSON) with `null`, leaving strings untouched.
fn null_non_finite(json: &str) -> std::borrow::Cow<'_, str> {
    if !json.contains("Infinity") && !json.contains("NaN") {
        return json.into();
    }
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = json;
    while let Some(c) = rest.chars().next() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some(token) = ["-Infinity", "Infinity", "NaN"]
            .iter()
            .find(|t| rest.starts_with(**t))
        {
            out.push_str("null");
            rest = &rest[token.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out.into()
}

/// The priced entries of a catalog, with simulated offerings in `zones`.
pub fn policy_catalog(entries: &[CatalogEntry], zones: &[&str]) -> Catalog {
    assert!(
        zones.len() * 2 <= MAX_OFFERINGS,
        "too many zones for packed launch options"
    );
    Catalog {
        zones: zones.iter().map(|z| z.to_string()).collect(),
        instance_types: entries
            .iter()
            .filter(|e| e.ondemand_price.is_some())
            .map(|e| e.to_instance_type(e.simulated_offerings(zones)))
            .collect(),
    }
}

/// Sums pod requests into what a node must hold (pods counted).
pub fn total_requests(pods: &[Pod]) -> Resources {
    pods.iter().fold(zero(), |acc, p| {
        add(
            &acc,
            &Resources {
                pods: 1,
                ..p.requests
            },
        )
    })
}

/// A claim for `pods` (of `workloads`) offered every (type, offering) of `catalog` that holds them.
pub fn claim_for(
    catalog: &Catalog,
    node_pool: &str,
    workloads: Vec<Workload>,
    pods: Vec<Pod>,
) -> Claim {
    let requests = total_requests(&pods);
    let options = catalog
        .instance_types
        .iter()
        .enumerate()
        .filter(|(_, t)| fits(&requests, &t.allocatable))
        .flat_map(|(ti, t)| (0..t.offerings.len()).map(move |oi| pack(ti, oi)))
        .collect();
    Claim {
        node_pool: node_pool.to_string(),
        workloads,
        pods,
        requests,
        options,
    }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// FNV-1a: a stable hash (std's hasher is randomly seeded per process).
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalog_has_the_reference_types() {
        let cat = embedded();
        assert_eq!(cat.len(), 1363);
        let m5 = cat.iter().find(|t| t.name == "m5.large").unwrap();
        assert_eq!((m5.vcpus, m5.memory_mib, m5.arch), (2, 8192, Arch::Amd64));
        assert!(m5.allocatable.cpu_millis < 2000 && m5.allocatable.pods > 0);
        let g = cat.iter().find(|t| t.name == "g4dn.xlarge").unwrap();
        assert_eq!(g.allocatable.gpus, 1);
        assert_eq!(g.to_instance_type(vec![]).gpu_name.as_deref(), Some("t4"));
    }

    #[test]
    fn non_finite_tokens_become_null_and_category_comes_from_the_family() {
        let cat = embedded();
        let inf = cat.iter().find(|t| t.name == "inf1.xlarge").unwrap();
        assert_eq!(inf.category(), "inf");
        assert_eq!(
            null_non_finite(r#"{"a": Infinity, "b": "NaN Infinity", "c": -Infinity}"#),
            r#"{"a": null, "b": "NaN Infinity", "c": null}"#
        );
    }

    #[test]
    fn simulated_offerings_are_stable_and_cheaper_on_spot() {
        let cat = embedded();
        let m5 = cat.iter().find(|t| t.name == "m5.large").unwrap();
        let a = m5.simulated_offerings(&["us-east-1a", "us-east-1b"]);
        assert_eq!(a, m5.simulated_offerings(&["us-east-1a", "us-east-1b"]));
        assert_eq!(a.len(), 4);
        let od = m5.ondemand_price.unwrap();
        for o in a.iter().filter(|o| o.capacity_type == CapacityType::Spot) {
            assert!(o.price >= od * 0.29 && o.price <= od * 0.71, "{o:?}");
        }
        assert_ne!(a[0].price, a[2].price, "zones differ");
    }
}
