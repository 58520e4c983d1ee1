//! Instance types from the account: DescribeInstanceTypes for capacity, DescribeInstanceTypeOfferings
//! for the zones each is offered in, DescribeSpotPriceHistory for spot prices; on-demand prices
//! from the embedded table (the Pricing API would be a refresh, not a requirement). All of it is
//! cached for a TTL and never fetched per decision.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::LocationType;

use super::{AwsCloud, api_error, sdk_message};
use crate::capacity::Resources;
use crate::cloud::CloudError;

/// How long discovered instance types and prices are reused.
pub const TTL: Duration = Duration::from_secs(3600);

/// An instance type as the account offers it.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveredType {
    pub name: String,
    /// `x86_64` or `arm64`.
    pub arch: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// ENI-limited: `enis × (IPv4 per ENI − 1) + 2`.
    pub max_pods: u32,
    pub allocatable: Resources,
    /// Zones it is offered in.
    pub zones: Vec<String>,
    pub on_demand_price: Option<f64>,
    /// Latest spot price per zone.
    pub spot_prices: BTreeMap<String, f64>,
}

/// The ENI-limited pod count of the AWS VPC CNI.
pub fn max_pods(enis: u32, ipv4_per_eni: u32) -> u32 {
    enis * ipv4_per_eni.saturating_sub(1) + 2
}

/// What pods can use on a node: capacity less the hypervisor's share of memory (7.5%),
/// kubelet's reservation (CPU 6% of the first core, 1% of the second, 0.5% of the next two,
/// 0.25% of the rest; memory 11 MiB per pod + 255 MiB), the 100 MiB hard eviction threshold, and
/// for storage a 20 GiB root volume less 1 GiB reserved and the 10% nodefs threshold. The same
/// model as the embedded catalog.
pub fn allocatable(vcpus: u32, memory_mib: u64, max_pods: u32) -> Resources {
    use crate::scheduling::kubelet::{default_kube_reserved_cpu, default_kube_reserved_memory_mib};
    let cores = u64::from(vcpus);
    let reserved_cpu = default_kube_reserved_cpu(cores);
    let vm = (memory_mib * 75).div_ceil(1000);
    let reserved_mem = default_kube_reserved_memory_mib(u64::from(max_pods)) + 100;
    Resources {
        cpu_millis: cores * 1000 - reserved_cpu,
        memory_bytes: memory_mib.saturating_sub(vm).saturating_sub(reserved_mem) << 20,
        ephemeral_storage_bytes: 17 << 30,
        pods: max_pods,
        gpus: 0,
    }
}

impl AwsCloud {
    /// The account's instance types with their zones and prices (cached for [`TTL`]).
    pub fn instance_types(&mut self) -> Result<Vec<DiscoveredType>, CloudError> {
        if let Some((at, types)) = &self.discovered
            && at.elapsed() < TTL
        {
            return Ok(types.clone());
        }
        let on_demand: BTreeMap<String, Option<f64>> = crate::catalog::embedded()
            .into_iter()
            .map(|e| (e.name, e.ondemand_price))
            .collect();
        let mut types: BTreeMap<String, DiscoveredType> = BTreeMap::new();
        let mut token: Option<String> = None;
        loop {
            self.count("DescribeInstanceTypes");
            let out = self
                .bridge
                .wait(
                    self.ec2
                        .describe_instance_types()
                        .set_next_token(token.clone())
                        .send(),
                )
                .map_err(|e| api_error("", "DescribeInstanceTypes", sdk_message(&e)))?;
            for t in out.instance_types() {
                let Some(name) = t.instance_type().map(|n| n.as_str().to_string()) else {
                    continue;
                };
                let vcpus = t
                    .v_cpu_info()
                    .and_then(|v| v.default_v_cpus())
                    .unwrap_or(0)
                    .max(0) as u32;
                let memory_mib = t
                    .memory_info()
                    .and_then(|m| m.size_in_mib())
                    .unwrap_or(0)
                    .max(0) as u64;
                let arch = t
                    .processor_info()
                    .map(|p| p.supported_architectures())
                    .and_then(|a| {
                        a.iter()
                            .map(|x| x.as_str())
                            .find(|x| *x == "x86_64" || *x == "arm64")
                    })
                    .unwrap_or("x86_64")
                    .to_string();
                let net = t.network_info();
                let pods = max_pods(
                    net.and_then(|n| n.maximum_network_interfaces())
                        .unwrap_or(1)
                        .max(1) as u32,
                    net.and_then(|n| n.ipv4_addresses_per_interface())
                        .unwrap_or(1)
                        .max(1) as u32,
                );
                if vcpus == 0 || memory_mib == 0 {
                    continue;
                }
                types.insert(
                    name.clone(),
                    DiscoveredType {
                        allocatable: allocatable(vcpus, memory_mib, pods),
                        on_demand_price: on_demand.get(&name).copied().flatten(),
                        name,
                        arch,
                        vcpus,
                        memory_mib,
                        max_pods: pods,
                        zones: Vec::new(),
                        spot_prices: BTreeMap::new(),
                    },
                );
            }
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        let mut token: Option<String> = None;
        loop {
            self.count("DescribeInstanceTypeOfferings");
            let out = self
                .bridge
                .wait(
                    self.ec2
                        .describe_instance_type_offerings()
                        .location_type(LocationType::AvailabilityZone)
                        .set_next_token(token.clone())
                        .send(),
                )
                .map_err(|e| api_error("", "DescribeInstanceTypeOfferings", sdk_message(&e)))?;
            for o in out.instance_type_offerings() {
                if let (Some(t), Some(zone)) = (o.instance_type(), o.location())
                    && let Some(d) = types.get_mut(t.as_str())
                    && !d.zones.iter().any(|z| z == zone)
                {
                    d.zones.push(zone.to_string());
                }
            }
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        let mut token: Option<String> = None;
        loop {
            self.count("DescribeSpotPriceHistory");
            let out = self
                .bridge
                .wait(
                    self.ec2
                        .describe_spot_price_history()
                        .product_descriptions("Linux/UNIX")
                        .set_next_token(token.clone())
                        .send(),
                )
                .map_err(|e| api_error("", "DescribeSpotPriceHistory", sdk_message(&e)))?;
            for p in out.spot_price_history() {
                let (Some(t), Some(zone), Some(price)) = (
                    p.instance_type(),
                    p.availability_zone(),
                    p.spot_price().and_then(|s| s.parse::<f64>().ok()),
                ) else {
                    continue;
                };
                if let Some(d) = types.get_mut(t.as_str()) {
                    // The history comes newest first: keep the first price per zone.
                    d.spot_prices.entry(zone.to_string()).or_insert(price);
                }
            }
            token = out
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        let list: Vec<DiscoveredType> = types.into_values().collect();
        self.discovered = Some((Instant::now(), list.clone()));
        Ok(list)
    }
}

/// The policy catalog of what the account offers in `zones`: the discovered types that the
/// embedded table prices and describes (their labels come from it), on-demand at the table's
/// price, spot at the latest price in each zone. Interruption rates and pool depth have no API
/// here and keep the simulator's derived values.
pub fn catalog(
    discovered: &[DiscoveredType],
    zones: &[&str],
) -> (Vec<crate::catalog::CatalogEntry>, crate::capacity::Catalog) {
    let embedded: BTreeMap<String, crate::catalog::CatalogEntry> = crate::catalog::embedded()
        .into_iter()
        .map(|e| (e.name.clone(), e))
        .collect();
    let mut entries = Vec::new();
    let mut types = Vec::new();
    for d in discovered {
        let (Some(od), Some(e)) = (d.on_demand_price, embedded.get(&d.name)) else {
            continue;
        };
        let mut entry = e.clone();
        entry.allocatable = d.allocatable;
        let derived = entry.simulated_offerings(zones);
        let offerings: Vec<_> = derived
            .into_iter()
            .filter(|o| d.zones.iter().any(|z| z == zones[o.zone as usize]))
            .filter_map(|mut o| {
                match o.capacity_type {
                    crate::capacity::CapacityType::Spot => {
                        o.price = *d.spot_prices.get(zones[o.zone as usize])?;
                    }
                    _ => o.price = od,
                }
                Some(o)
            })
            .collect();
        if offerings.is_empty() {
            continue;
        }
        types.push(entry.to_instance_type(offerings));
        entries.push(entry);
    }
    (
        entries,
        crate::capacity::Catalog {
            zones: zones.iter().map(|z| z.to_string()).collect(),
            instance_types: types,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocatable_matches_the_embedded_catalog_model() {
        let entries = crate::catalog::embedded();
        for name in [
            "m5.large",
            "c5.large",
            "m5.xlarge",
            "c5.4xlarge",
            "r5.2xlarge",
        ] {
            let e = entries.iter().find(|e| e.name == name).unwrap();
            let a = allocatable(e.vcpus, e.memory_mib, e.allocatable.pods);
            assert_eq!(a.cpu_millis, e.allocatable.cpu_millis, "{name} cpu");
            assert_eq!(a.memory_bytes, e.allocatable.memory_bytes, "{name} memory");
        }
        assert_eq!(max_pods(3, 10), 29, "m5.large");
    }
}
