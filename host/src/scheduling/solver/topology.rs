//! Topology: the zones a pod may take on a claim (spread, affinity and anti-affinity, volumes) and
//! pinning a claim to one.

use super::*;

impl<'a> Solver<'a> {
    /// Zones the pod may use on claim `c`, given its topology terms.
    pub(super) fn allowed_zones(&self, p: usize, c: usize) -> Result<u64, Reject> {
        let claim = &self.claims[c];
        self.zones_on(p, Some(c), claim.planned.zones, claim.domain)
    }

    /// Zones of `zones` the pod may use on claim `c`, or on a claim not yet opened (`None`: a
    /// host with no pods), whose topology domains are `pool_zones`.
    pub(super) fn zones_on(
        &self,
        p: usize,
        c: Option<usize>,
        mut zones: u64,
        pool_zones: u64,
    ) -> Result<u64, Reject> {
        let self_match = |s: u32| self.matches[p].contains(&s);
        // The other way round: pods already placed whose anti-affinity selects this one.
        for &s in &self.matches[p] {
            if c.is_some_and(|c| self.repel_host.contains(&(s, c))) {
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
            let here = c
                .and_then(|c| self.host_counts.get(&(term.selector, c)).copied())
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

    /// The zones of `zones` a pod with zone terms may pin its claim to: the most used by its
    /// first zone term's selector for affinity (a group stays together), the least used
    /// otherwise (a spread evens out). Without zone terms, all of them.
    pub(super) fn pin_choices(&self, p: usize, zones: u64) -> u64 {
        let Some(term) = self.terms[p].iter().find(|t| t.key == TopologyKey::Zone) else {
            return zones;
        };
        let counts = &self.zone_counts[term.selector as usize];
        let best = match term.kind {
            TermKind::Affinity => bits(zones).map(|z| counts[z]).max(),
            _ => bits(zones).map(|z| counts[z]).min(),
        };
        bits(zones)
            .filter(|&z| Some(counts[z]) == best)
            .fold(0, |m, z| m | 1 << z)
    }

    /// A pod with zone terms pins its claim to one zone of its `choices` (see
    /// [`Solver::pin_choices`]): the `prefer`red one (see `Solver::zone_for`) when it may, else
    /// the first. Choosing the first alone put every zone-affinity group, and the spread's ties,
    /// in the first zone, whose spot pools then filled with claims sized for a type that is
    /// cheap in another zone.
    pub(super) fn pin_zone(&self, choices: u64, zones: u64, prefer: Option<u32>) -> u64 {
        match prefer {
            Some(z) if choices & (1 << z) != 0 => 1 << z,
            _ if choices != 0 => 1 << choices.trailing_zeros(),
            _ => zones,
        }
    }
}
