//! A scoring round as the host holds it: the catalog once, the claims to score, and the packed
//! launch options that refer into the catalog.

use super::types::{Catalog, Claim, InstanceType, LaunchOption, Offering};

/// Offerings per instance type a packed option can address.
pub const MAX_OFFERINGS: usize = 256;

/// What one scoring round hands a policy: `begin-round(now, catalog)`, then `score` per claim.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoringRound {
    /// The decision's time, seconds since the Unix epoch.
    pub now: i64,
    /// The instance types the claims may launch.
    pub catalog: Catalog,
    /// The claims to rank.
    pub claims: Vec<Claim>,
}

/// Packs (instance type index, offering index) into a launch option.
pub fn pack(instance_type: usize, offering: usize) -> LaunchOption {
    debug_assert!(offering < MAX_OFFERINGS && instance_type < (1 << 24));
    ((instance_type as u32) << 8) | offering as u32
}

/// Unpacks a launch option into (instance type index, offering index).
pub fn unpack(option: LaunchOption) -> (usize, usize) {
    ((option >> 8) as usize, (option & 0xff) as usize)
}

impl ScoringRound {
    /// The round for `claims` whose options index into `catalog`: its catalog holds only the
    /// instance types some option names (what the claims may launch, as the WIT contract says),
    /// in the catalog's order, and the options are renumbered to it. Handing the policy the
    /// whole region's catalog every round cost most of a round's time in `begin-round`; a pool
    /// that allows a few families now hands over those.
    pub fn pruned(now: i64, catalog: &Catalog, mut claims: Vec<Claim>) -> ScoringRound {
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
                instance_types.push(t.clone());
            }
        }
        for claim in &mut claims {
            for o in &mut claim.options {
                let (t, offering) = unpack(*o);
                *o = pack(renumbered[t] as usize, offering);
            }
        }
        ScoringRound {
            now,
            catalog: Catalog {
                zones: catalog.zones.clone(),
                instance_types,
            },
            claims,
        }
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
        let full = crate::policy::canary::scoring_round();
        let mut claims = full.claims.clone();
        // Keep every third option of each claim, so some types are named by none.
        for c in &mut claims {
            c.options = c.options.iter().copied().step_by(3).collect();
        }
        let named: std::collections::BTreeSet<usize> = claims
            .iter()
            .flat_map(|c| c.options.iter().map(|&o| unpack(o).0))
            .collect();
        assert!(
            named.len() < full.catalog.instance_types.len(),
            "the test prunes something"
        );
        let before = ScoringRound {
            claims: claims.clone(),
            ..full.clone()
        };
        let pruned = ScoringRound::pruned(full.now, &full.catalog, claims);
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

    #[test]
    fn packing_round_trips() {
        for (t, o) in [(0, 0), (1, 255), (799, 5), ((1 << 24) - 1, 17)] {
            assert_eq!(unpack(pack(t, o)), (t, o));
        }
    }
}
