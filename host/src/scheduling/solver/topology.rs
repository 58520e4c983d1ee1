//! Topology: the zones a pod may take on a claim (spread, affinity and anti-affinity, volumes) and
//! pinning a claim to one.

use super::*;

impl<'a> Solver<'a> {
    /// Zones the pod may use on claim `c`, given its topology terms.
    pub(super) fn allowed_zones(&self, p: usize, c: usize) -> Result<u64, Reject> {
        let claim = &self.claims[c];
        let mut zones = claim.planned.zones;
        let pool_zones = claim.domain;
        let self_match = |s: u32| self.matches[p].contains(&s);
        // The other way round: pods already placed whose anti-affinity selects this one.
        for &s in &self.matches[p] {
            if self.repel_host.contains(&(s, c)) {
                return Err(Reject::Topology(
                    "the anti-affinity of a pod on the node excludes it",
                ));
            }
            zones &= !self.repel_zone[s as usize];
        }
        if zones == 0 {
            return Err(Reject::Topology(
                "the anti-affinity of pods in its zones excludes it",
            ));
        }
        for term in &self.terms[p] {
            let s = term.selector as usize;
            let here = self
                .host_counts
                .get(&(term.selector, c))
                .copied()
                .unwrap_or(0);
            match (term.kind, term.key) {
                (TermKind::Spread(skew), TopologyKey::Hostname) => {
                    // A new node is always a domain with zero pods.
                    if here + u32::from(self_match(term.selector)) > skew {
                        return Err(Reject::Topology("hostname spread"));
                    }
                }
                (TermKind::AntiAffinity, TopologyKey::Hostname) => {
                    if here > 0 {
                        return Err(Reject::Topology("hostname anti-affinity"));
                    }
                }
                (TermKind::Affinity, TopologyKey::Hostname) => {
                    if here == 0 && (self.placed[s] > 0 || !self_match(term.selector)) {
                        return Err(Reject::Topology("hostname affinity"));
                    }
                }
                (TermKind::Spread(skew), TopologyKey::Zone) => {
                    let counts = &self.zone_counts[s];
                    let eligible = bits(pool_zones).map(|z| counts[z]).min().unwrap_or(0);
                    let inc = u32::from(self_match(term.selector));
                    let ok = bits(zones)
                        .filter(|&z| counts[z] + inc <= eligible + skew)
                        .fold(0, |m, z| m | 1 << z);
                    zones &= ok;
                }
                (TermKind::Affinity, TopologyKey::Zone) => {
                    let counts = &self.zone_counts[s];
                    if self.placed[s] > 0 {
                        zones &= bits(zones)
                            .filter(|&z| counts[z] > 0)
                            .fold(0, |m, z| m | 1 << z);
                    } else if !self_match(term.selector) {
                        return Err(Reject::Topology("zone affinity to pods that do not exist"));
                    }
                }
                (TermKind::AntiAffinity, TopologyKey::Zone) => {
                    let counts = &self.zone_counts[s];
                    zones &= bits(zones)
                        .filter(|&z| counts[z] == 0)
                        .fold(0, |m, z| m | 1 << z);
                }
            }
            if zones == 0 {
                return Err(Reject::Topology(
                    "no zone satisfies its topology constraints",
                ));
            }
        }
        Ok(zones)
    }

    /// A pod with zone terms pins its claim to one zone (the least used by its first zone term's
    /// selector); others keep the claim's zones.
    pub(super) fn pin_zone(&self, p: usize, zones: u64) -> u64 {
        let Some(term) = self.terms[p].iter().find(|t| t.key == TopologyKey::Zone) else {
            return zones;
        };
        let counts = &self.zone_counts[term.selector as usize];
        let pick = match term.kind {
            TermKind::Affinity => bits(zones).max_by_key(|&z| (counts[z], std::cmp::Reverse(z))),
            _ => bits(zones).min_by_key(|&z| (counts[z], z)),
        };
        pick.map_or(zones, |z| 1 << z)
    }
}
