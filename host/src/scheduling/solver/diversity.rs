//! Spot diversity: a round's spot claims are planned over many capacity pools (an instance type
//! in a zone), none above [`SPOT_POOL_SHARE`] of the NodePool's demanded CPU. Spot capacity is
//! reclaimed per pool, so a fleet on one pool is one reclamation away from losing everything —
//! which is why EC2 Fleet's `price-capacity-optimized` spreads a request over pools. A claim is
//! sized for the pool it will likely land in: once the cheapest pools are full, for the next
//! cheapest, which may be of another size (a claim cut for a full 2-vCPU pool strands pods on
//! whatever dearer 2-vCPU type is left).
//!
//! A round too small to spread is planned without the rule, and when no type with room holds the
//! next pod — every pool full (a NodePool with few types), or only full pools' types big enough —
//! the rule cannot hold and types are priced as without it.

use super::*;

/// The most of a NodePool's demanded CPU a round plans on one spot pool: one reclamation takes
/// at most this share of the new capacity.
pub const SPOT_POOL_SHARE: f64 = 0.2;

/// Below this share (16 vCPUs, a round of under 80) the rule is off: it could hold only by
/// cutting the round into nodes smaller than its pods want (ten pods on ten 1-vCPU nodes).
const MIN_SHARE_MILLIS: u64 = 16_000;

/// CPU planned per spot pool in this round.
#[derive(Default)]
pub(super) struct SpotPools {
    /// Millicores of new claims planned per (NodePool, instance type, zone) on spot: each
    /// NodePool's share is of its own demand.
    pub(super) planned: HashMap<(usize, u32, u32), u64>,
    /// Per NodePool: the most millicores one pool may take (its share of the demand).
    cap: Vec<u64>,
}

impl SpotPools {
    /// Caps from each NodePool's demanded CPU (cores).
    pub(super) fn new(demand_cpu: impl Iterator<Item = f64>) -> Self {
        SpotPools {
            planned: HashMap::new(),
            cap: demand_cpu
                .map(|cores| (cores * 1000.0 * SPOT_POOL_SHARE) as u64)
                .map(|cap| {
                    if cap < MIN_SHARE_MILLIS {
                        u64::MAX
                    } else {
                        cap
                    }
                })
                .collect(),
        }
    }

    /// The most nodes of `cpu` millicores one spot pool of NodePool `pool` may take in a round:
    /// whole nodes, as [`SpotPools::room`] counts them (a node larger than the share has none).
    pub(super) fn most_nodes(&self, pool: usize, cpu: u64) -> f64 {
        match self.cap.get(pool).copied().unwrap_or(u64::MAX) {
            u64::MAX => f64::INFINITY,
            cap => (cap / cpu.max(1)) as f64,
        }
    }

    /// Whether a node of `cpu` millicores more stays within the pool's share.
    pub(super) fn room(&self, pool: usize, t: u32, zone: u32, cpu: u64) -> bool {
        let cap = self.cap.get(pool).copied().unwrap_or(u64::MAX);
        let planned = self.planned.get(&(pool, t, zone)).copied().unwrap_or(0);
        planned.saturating_add(cpu) <= cap
    }
}

impl<'a> Solver<'a> {
    /// Type `t`'s cheapest available offering in `zones` on `reqs`'s capacity types whose pool
    /// has room (on-demand always has): its price, zone and whether it is spot. With `capped`
    /// off, the cheapest regardless of room.
    pub(super) fn offer(
        &self,
        pool: usize,
        t: u32,
        zones: u64,
        reqs: &Requirements,
        capped: bool,
    ) -> Option<(f64, u32, bool)> {
        let capacity = reqs.get(crate::scheduling::model::labels::CAPACITY_TYPE);
        let ty = &self.its.types[t as usize];
        ty.offerings
            .iter()
            .filter(|o| {
                o.available
                    && zones & (1 << o.zone) != 0
                    && capacity.is_none_or(|a| a.allows(Some(capacity_type_label(o.capacity_type))))
                    && (!capped
                        || o.capacity_type != CapacityType::Spot
                        || self.spot.room(pool, t, o.zone, ty.capacity.0))
            })
            .min_by(|a, b| a.price.total_cmp(&b.price))
            .map(|o| (o.price, o.zone, o.capacity_type == CapacityType::Spot))
    }

    /// Counts a new claim of `pool` sized for type `t` against the spot pool it will likely
    /// land in; the cached prices of `t` move on to its next offering once that pool is full.
    pub(super) fn plan_spot(&mut self, pool: usize, t: u32, zones: u64, reqs: &Requirements) {
        let Some((_, zone, true)) = self.offer(pool, t, zones, reqs, true) else {
            return;
        };
        let cpu = self.its.types[t as usize].capacity.0;
        *self.spot.planned.entry((pool, t, zone)).or_default() += cpu;
        let mut prices = std::mem::take(&mut self.prices);
        for (&(pl, zs), table) in prices.iter_mut().filter(|((pl, _), _)| *pl == pool) {
            let reqs = &self.pools[pl].requirements;
            table[t as usize] = self.offer(pl, t, zs, reqs, true).map_or(f64::NAN, |o| o.0);
        }
        self.prices = prices;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_is_full_once_another_node_would_pass_its_share() {
        // 100 cores demanded: a pool may take 20.
        let mut s = SpotPools::new([100.0].into_iter());
        assert!(s.room(0, 7, 1, 16_000));
        assert!(!s.room(0, 7, 1, 24_000));
        s.planned.insert((0, 7, 1), 16_000);
        assert!(s.room(0, 7, 1, 4_000));
        assert!(!s.room(0, 7, 1, 8_000));
        // Another zone of the same type is another pool.
        assert!(s.room(0, 7, 2, 16_000));
        // Another NodePool's share is its own.
        let s = SpotPools {
            cap: vec![20_000, 20_000],
            ..s
        };
        assert!(s.room(1, 7, 1, 16_000));
    }

    #[test]
    fn a_round_too_small_to_spread_has_no_cap() {
        // 10 cores: a share of 2 would cut the round into 1- and 2-vCPU nodes.
        let mut s = SpotPools::new([10.0].into_iter());
        s.planned.insert((0, 7, 1), 8_000);
        assert!(s.room(0, 7, 1, 8_000));
    }
}
