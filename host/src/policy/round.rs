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
    fn packing_round_trips() {
        for (t, o) in [(0, 0), (1, 255), (799, 5), ((1 << 24) - 1, 17)] {
            assert_eq!(unpack(pack(t, o)), (t, o));
        }
    }
}
