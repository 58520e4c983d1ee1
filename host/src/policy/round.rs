//! A scoring round as the engine hands it to a policy: the catalog once, the claims to score,
//! and the packed launch options that refer into the catalog, already in the interface's
//! records. It is built from the host's types ([`crate::capacity`]) once per round, so a score
//! call copies nothing more than the guest's own lowering.

use super::types::{Catalog, Claim, InstanceType, Offering};
use crate::capacity::{self, Arch, CapacityType, LaunchOption, claim, pack, unpack};

/// What one scoring round hands a policy: `begin-round(now, catalog)`, then `score` per claim.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoringRound {
    /// The decision's time, seconds since the Unix epoch.
    pub now: i64,
    /// The instance types the claims may launch.
    pub catalog: Catalog,
    /// The claims to rank.
    pub claims: Vec<Claim>,
    /// Per instance type of `catalog`: its place in name order, and per zone the same, so the
    /// launch order's tie-breaks compare numbers, not strings, a million times a round.
    name_order: (Vec<u32>, Vec<u32>),
}

/// Each item's place when `names` are sorted.
fn places<'n>(names: impl ExactSizeIterator<Item = &'n str>) -> Vec<u32> {
    let mut sorted: Vec<(&str, usize)> = names.enumerate().map(|(i, n)| (n, i)).collect();
    sorted.sort_unstable();
    let mut out = vec![0; sorted.len()];
    for (place, (_, i)) in sorted.into_iter().enumerate() {
        out[i] = place as u32;
    }
    out
}

fn name_order(catalog: &Catalog) -> (Vec<u32>, Vec<u32>) {
    (
        places(catalog.instance_types.iter().map(|t| t.name.as_str())),
        places(catalog.zones.iter().map(String::as_str)),
    )
}

/// What one launch option of a round buys.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Launch<'a> {
    pub instance_type: &'a str,
    pub arch: Arch,
    pub vcpus: u32,
    pub zone: &'a str,
    pub capacity_type: CapacityType,
    /// USD per hour.
    pub price: f64,
}

impl ScoringRound {
    /// The round for `claims` whose options index into `catalog`: its catalog holds only the
    /// instance types some option names (what the claims may launch, as the WIT contract says),
    /// in the catalog's order, and the options are renumbered to it. Handing the policy the
    /// whole region's catalog every round cost most of a round's time in `begin-round`; a pool
    /// that allows a few families now hands over those.
    ///
    /// The catalog is converted to the interface's records here, once per round.
    pub fn pruned(
        now: i64,
        catalog: &capacity::Catalog,
        claims: Vec<claim::Claim>,
    ) -> ScoringRound {
        let mut claims: Vec<Claim> = claims.into_iter().map(Into::into).collect();
        let mut used = vec![false; catalog.instance_types.len()];
        for claim in &claims {
            for &o in &claim.options {
                used[unpack(o).0] = true;
            }
        }
        let mut renumbered = vec![u32::MAX; used.len()];
        let mut instance_types = Vec::with_capacity(used.iter().filter(|&&u| u).count());
        for (i, t) in catalog.instance_types.iter().enumerate() {
            if used[i] {
                renumbered[i] = instance_types.len() as u32;
                instance_types.push(t.into());
            }
        }
        for claim in &mut claims {
            for o in &mut claim.options {
                let (t, offering) = unpack(*o);
                *o = pack(renumbered[t] as usize, offering);
            }
        }
        let catalog = Catalog {
            zones: catalog.zones.clone(),
            instance_types,
        };
        ScoringRound {
            now,
            name_order: name_order(&catalog),
            catalog,
            claims,
        }
    }

    /// The round for `claims` over the whole of `catalog` (a policy's test round).
    pub fn new(now: i64, catalog: &capacity::Catalog, claims: Vec<claim::Claim>) -> ScoringRound {
        let catalog: Catalog = catalog.into();
        ScoringRound {
            now,
            name_order: name_order(&catalog),
            catalog,
            claims: claims.into_iter().map(Into::into).collect(),
        }
    }

    /// A one-claim round over the whole of `catalog`: `pods` of `workloads`, offered every
    /// option that holds them.
    pub fn one_claim(
        now: i64,
        catalog: &capacity::Catalog,
        node_pool: &str,
        workloads: Vec<claim::Workload>,
        pods: Vec<claim::Pod>,
    ) -> ScoringRound {
        let claim = crate::catalog::claim_for(catalog, node_pool, workloads, pods);
        ScoringRound::new(now, catalog, vec![claim])
    }

    /// What an option launches, in the host's types: what provisioning asks the cloud for.
    pub fn launch(&self, option: LaunchOption) -> Launch<'_> {
        let (t, o, zone) = self.resolve(option);
        Launch {
            instance_type: &t.name,
            arch: t.arch.into(),
            vcpus: t.vcpus,
            zone,
            capacity_type: o.capacity_type.into(),
            price: o.price,
        }
    }

    /// An option's launch order after its score: lower price first, then instance-type name,
    /// then zone name.
    pub fn tie_break(&self, option: LaunchOption) -> (f64, u32, u32) {
        let (ti, oi) = unpack(option);
        let o = &self.catalog.instance_types[ti].offerings[oi];
        (
            o.price,
            self.name_order.0[ti],
            self.name_order.1[o.zone as usize],
        )
    }

    /// The instance type, offering and zone name of an option. Options come from the host, so
    /// they always resolve.
    pub fn resolve(&self, option: LaunchOption) -> (&InstanceType, &Offering, &str) {
        let (ti, oi) = unpack(option);
        let t = &self.catalog.instance_types[ti];
        let o = &t.offerings[oi];
        (t, o, &self.catalog.zones[o.zone as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pruned_round_holds_the_types_its_options_name_and_resolves_them_as_before() {
        let catalog =
            crate::catalog::policy_catalog(&crate::catalog::embedded()[..80], &["a", "b"]);
        let requests = capacity::Resources {
            cpu_millis: 250,
            memory_bytes: 512 << 20,
            ..Default::default()
        };
        let pod = claim::Pod {
            workload: 0,
            requests,
            priority: 0,
        };
        let workload = claim::Workload {
            namespace: "default".into(),
            owner: "Deployment/web".into(),
            labels: Vec::new(),
        };
        let mut c = crate::catalog::claim_for(&catalog, "default", vec![workload], vec![pod; 3]);
        // Keep every third option, so some types are named by none.
        c.options = c.options.iter().copied().step_by(3).collect();
        let named: std::collections::BTreeSet<usize> =
            c.options.iter().map(|&o| unpack(o).0).collect();
        assert!(
            named.len() < catalog.instance_types.len(),
            "the test prunes something"
        );
        let full = ScoringRound::new(1_790_000_000, &catalog, vec![c.clone()]);
        let before = full.clone();
        let pruned = ScoringRound::pruned(full.now, &catalog, vec![c]);
        assert_eq!(pruned.catalog.instance_types.len(), named.len());
        assert_eq!(pruned.catalog.zones, full.catalog.zones);
        let names: Vec<&str> = pruned
            .catalog
            .instance_types
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        let in_order: Vec<&str> = named
            .iter()
            .map(|&t| full.catalog.instance_types[t].name.as_str())
            .collect();
        assert_eq!(names, in_order, "the catalog's order is kept");
        for (a, b) in before.claims.iter().zip(&pruned.claims) {
            assert_eq!(a.options.len(), b.options.len());
            for (&x, &y) in a.options.iter().zip(&b.options) {
                let ((ta, oa, za), (tb, ob, zb)) = (before.resolve(x), pruned.resolve(y));
                assert_eq!((&ta.name, oa, za), (&tb.name, ob, zb));
            }
        }
    }
}
