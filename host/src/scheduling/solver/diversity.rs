//! Spot diversity: a round's spot claims are planned over many capacity pools (an instance type
//! in a zone), none above [`SPOT_POOL_SHARE`] of the NodePool's demanded CPU. Spot capacity is
//! reclaimed per pool, so a fleet on one pool is one reclamation away from losing everything —
//! which is why EC2 Fleet's `price-capacity-optimized` spreads a request over pools. A claim is
//! sized for the pool it will likely land in: once the cheapest pools are full, for the next
//! cheapest, which may be of another size (a claim cut for a full 2-vCPU pool strands pods on
//! whatever dearer 2-vCPU type is left).
//!
//! Zone-pinned claims (see `zone_for`) may take the room flexible claims were counted for in
//! their zone, those being counted in another zone of the type instead.
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
    /// Of those, the millicores of claims free to launch in any of the type's zones: a claim
    /// pinned to a zone may take their room there, they being counted in another zone instead.
    pub(super) flexible: HashMap<(usize, u32, u32), u64>,
    /// Per NodePool: the most millicores one pool may take (its share of the demand).
    cap: Vec<u64>,
}

impl SpotPools {
    /// Caps from each NodePool's demanded CPU (cores).
    pub(super) fn new(demand_cpu: impl Iterator<Item = f64>) -> Self {
        SpotPools {
            planned: HashMap::new(),
            flexible: HashMap::new(),
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
        match self.cap(pool) {
            u64::MAX => f64::INFINITY,
            cap => (cap / cpu.max(1)) as f64,
        }
    }

    /// Whether a node of `cpu` millicores more stays within the pool's share.
    pub(super) fn room(&self, pool: usize, t: u32, zone: u32, cpu: u64) -> bool {
        self.planned(pool, t, zone).saturating_add(cpu) <= self.cap(pool)
    }

    fn cap(&self, pool: usize) -> u64 {
        self.cap.get(pool).copied().unwrap_or(u64::MAX)
    }

    /// Millicores counted against the spot pool of type `t` in `zone`.
    fn planned(&self, pool: usize, t: u32, zone: u32) -> u64 {
        self.planned.get(&(pool, t, zone)).copied().unwrap_or(0)
    }

    /// Whole nodes of `cpu` millicores the spot pool of type `t` in `zone` still has room for.
    pub(super) fn nodes_left(&self, pool: usize, t: u32, zone: u32, cpu: u64) -> u64 {
        self.cap(pool).saturating_sub(self.planned(pool, t, zone)) / cpu.max(1)
    }

    /// Whether a claim pinned to `zone` has room there for a node of `cpu` millicores once
    /// flexible claims counted there move to `elsewhere` (the type's other zones).
    /// (With room as it is, nothing needs to move: `over` is 0.)
    fn room_pinned(&self, pool: usize, t: u32, zone: u32, cpu: u64, elsewhere: &[u32]) -> bool {
        let movable = self.flexible.get(&(pool, t, zone)).copied().unwrap_or(0) / cpu.max(1);
        let room: u64 = elsewhere
            .iter()
            .map(|&z| self.nodes_left(pool, t, z, cpu))
            .sum();
        let over = (self.planned(pool, t, zone) + cpu)
            .saturating_sub(self.cap(pool))
            .div_ceil(cpu.max(1));
        over <= movable.min(room)
    }

    /// Takes back a node counted with [`SpotPools::count`] (flexible or not).
    fn uncount(&mut self, pool: usize, t: u32, zone: u32, cpu: u64, flexible: bool) {
        let key = (pool, t, zone);
        for (map, take) in [(&mut self.planned, true), (&mut self.flexible, flexible)] {
            if take {
                let v = map.entry(key).or_default();
                debug_assert!(*v >= cpu, "taking back a node not counted");
                *v = v.saturating_sub(cpu);
            }
        }
    }

    /// Counts a node of `cpu` millicores against the spot pool of `t` in `zone`; a pinned one
    /// over the share moves flexible claims' nodes to `elsewhere` (see `room_pinned`).
    fn count(&mut self, pool: usize, t: u32, zone: u32, cpu: u64, pinned: Option<&[u32]>) {
        *self.planned.entry((pool, t, zone)).or_default() += cpu;
        let Some(elsewhere) = pinned else {
            *self.flexible.entry((pool, t, zone)).or_default() += cpu;
            return;
        };
        let planned = self.planned[&(pool, t, zone)];
        let mut over = planned.saturating_sub(self.cap(pool)).div_ceil(cpu.max(1));
        for &z in elsewhere {
            let movable = self.flexible.get(&(pool, t, zone)).copied().unwrap_or(0) / cpu.max(1);
            let k = over.min(movable).min(self.nodes_left(pool, t, z, cpu));
            if k == 0 {
                continue;
            }
            for (key, delta) in [((pool, t, zone), -(k as i64)), ((pool, t, z), k as i64)] {
                for map in [&mut self.planned, &mut self.flexible] {
                    let v = map.entry(key).or_default();
                    *v = v.saturating_add_signed(delta * cpu as i64);
                }
            }
            over -= k;
        }
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
                        || self.spot_room(pool, t, o.zone, zones))
            })
            .min_by(|a, b| a.price.total_cmp(&b.price))
            .map(|o| (o.price, o.zone, o.capacity_type == CapacityType::Spot))
    }

    /// Whether type `t`'s spot pool in `zone` has room for a claim that may launch in `zones`.
    /// A claim pinned to one zone may take the room of flexible claims there, which the type's
    /// other zones take instead: counted in visiting order, the flexible claims that came first
    /// filled the cheapest zone's pools, and the pinned ones after them were cut for dearer
    /// types although the same pool in another zone had room.
    pub(super) fn spot_room(&self, pool: usize, t: u32, zone: u32, zones: u64) -> bool {
        let cpu = self.its.types[t as usize].capacity.0;
        let room = self.spot.room(pool, t, zone, cpu);
        if room || zones.count_ones() != 1 {
            return room;
        }
        let elsewhere = self.spot_zones(pool, t, zone);
        self.spot.room_pinned(pool, t, zone, cpu, &elsewhere)
    }

    /// The zones other than `zone` where the NodePool may launch type `t` on spot.
    fn spot_zones(&self, pool: usize, t: u32, zone: u32) -> Vec<u32> {
        let mut zones: Vec<u32> = self.its.types[t as usize]
            .offerings
            .iter()
            .filter(|o| {
                o.available
                    && o.capacity_type == CapacityType::Spot
                    && o.zone != zone
                    && self.pool_zones[pool] & (1 << o.zone) != 0
            })
            .map(|o| o.zone)
            .collect();
        zones.sort_unstable();
        zones.dedup();
        zones
    }

    /// The zone of `zones` to pin a claim (sized for type `t`, if it is yet) to. In a round
    /// sized for the spot offerings the fractional optimum buys (see `favoured`), the zone
    /// where those offerings have the most room left — of type `t`'s first, then of all: the
    /// optimum's fleet is not spread evenly over zones (a type cheap in one zone puts most of
    /// it there), and pinning by price alone filled the cheap zone's pools with claims that
    /// the other zones' pools could hold. Otherwise, by `cheapest_zone`.
    pub(super) fn zone_for(
        &self,
        pool: usize,
        t: Option<u32>,
        zones: u64,
        reqs: &Requirements,
    ) -> Option<u32> {
        // As `target` weighs them: in a round large enough, once the pool's are known.
        let large = self.favour && self.demand[pool][0] >= sizing::FAVOURED_MIN_CPU;
        let favoured = self.favoured.get(pool).cloned().flatten().filter(|_| large);
        let room = |z: u32, only: Option<u32>| -> f64 {
            favoured
                .iter()
                .flat_map(|f| f.iter())
                .filter(|f| f.spot && f.zone == z && only.is_none_or(|t| f.ty == t))
                .map(|f| {
                    let cpu = self.its.types[f.ty as usize].capacity.0;
                    let planned = self
                        .spot
                        .planned
                        .get(&(pool, f.ty, z))
                        .copied()
                        .unwrap_or(0);
                    (f.nodes * cpu as f64 - planned as f64).max(0.0)
                })
                .sum()
        };
        let best = bits(zones)
            .map(|z| {
                (
                    z as u32,
                    t.map_or(0.0, |t| room(z as u32, Some(t))),
                    room(z as u32, None),
                )
            })
            .filter(|&(_, mine, all)| mine > 0.0 || all > 0.0)
            .max_by(|a, b| {
                a.1.total_cmp(&b.1)
                    .then(a.2.total_cmp(&b.2))
                    .then(b.0.cmp(&a.0))
            });
        match (best, t) {
            (Some((z, _, _)), _) => Some(z),
            (None, Some(t)) => self.cheapest_zone(pool, t, zones, reqs),
            (None, None) => None,
        }
    }

    /// The zone of `zones` to pin a claim sized for type `t` to: of those where `t` has room
    /// (on spot, see `spot_room`) within [`SIZE_TOLERANCE`] of its cheapest price there, the one
    /// whose spot pool has the most room left. Pinned to the cheapest alone, a zone spread's
    /// claims filled the cheapest zone's pool first, and the spread's later pods, bound to that
    /// zone, were cut for a dearer type while the pool had room in the other zones.
    pub(super) fn cheapest_zone(
        &self,
        pool: usize,
        t: u32,
        zones: u64,
        reqs: &Requirements,
    ) -> Option<u32> {
        let offers: Vec<(f64, u32, bool)> = bits(zones)
            .filter_map(|z| self.offer(pool, t, 1 << z, reqs, true))
            .collect();
        let best = offers.iter().map(|o| o.0).min_by(f64::total_cmp)?;
        let cpu = self.its.types[t as usize].capacity.0;
        offers
            .iter()
            .filter(|o| o.0 <= best * (1.0 + SIZE_TOLERANCE))
            .max_by(|a, b| {
                let left = |o: &(f64, u32, bool)| {
                    if o.2 {
                        self.spot.nodes_left(pool, t, o.1, cpu)
                    } else {
                        u64::MAX
                    }
                };
                left(a)
                    .cmp(&left(b))
                    .then(b.0.total_cmp(&a.0))
                    .then(b.1.cmp(&a.1))
            })
            .map(|o| o.1)
    }

    /// A claim free to launch in several zones that a pod pins to `pin` is counted there now,
    /// pinned, rather than as one of the type's flexible nodes — if the type has a spot pool
    /// with room there; else it is counted nowhere, as a claim sized for an on-demand
    /// offering is. Flexible nodes of a type are interchangeable (moves in `count` do not
    /// follow claims), so the one taken back is one in the zone it pins to if there is one.
    pub(super) fn recount(&mut self, c: usize, pin: u64, reqs: &Requirements) {
        let claim = &self.claims[c];
        let Some((t, zone)) = claim.counted else {
            return;
        };
        if claim.planned.zones.count_ones() == 1 || pin.count_ones() != 1 {
            return;
        }
        let (pool, cpu) = (
            claim.planned.node_pool,
            self.its.types[t as usize].capacity.0,
        );
        let to = pin.trailing_zeros();
        let held = |z: u32| self.spot.flexible.get(&(pool, t, z)).copied().unwrap_or(0) >= cpu;
        let from = [to, zone]
            .into_iter()
            .chain(self.spot_zones(pool, t, to))
            .find(|&z| held(z));
        if let Some(from) = from {
            self.spot.uncount(pool, t, from, cpu, true);
        }
        self.claims[c].counted = match self.offer(pool, t, pin, reqs, true) {
            Some((_, z, true)) if z == to => {
                let elsewhere = self.spot_zones(pool, t, to);
                self.spot.count(pool, t, to, cpu, Some(&elsewhere));
                Some((t, to))
            }
            _ => None,
        };
        self.refresh_prices(pool, t);
    }

    /// Counts a new claim of `pool` sized for type `t` against the spot pool it will likely
    /// land in, and returns that pool's zone; the cached prices of `t` move on to its next
    /// offering once that pool is full.
    pub(super) fn plan_spot(
        &mut self,
        pool: usize,
        t: u32,
        zones: u64,
        reqs: &Requirements,
    ) -> Option<u32> {
        let Some((_, zone, true)) = self.offer(pool, t, zones, reqs, true) else {
            return None;
        };
        let cpu = self.its.types[t as usize].capacity.0;
        let elsewhere = self.spot_zones(pool, t, zone);
        let pinned = (zones.count_ones() == 1).then_some(elsewhere.as_slice());
        self.spot.count(pool, t, zone, cpu, pinned);
        self.refresh_prices(pool, t);
        Some(zone)
    }

    /// The cached prices of type `t` for the pool's zone sets, after its spot pools' counts
    /// changed.
    fn refresh_prices(&mut self, pool: usize, t: u32) {
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
    fn a_pinned_claim_takes_a_flexible_ones_room_which_moves_to_another_zone() {
        // 100 cores demanded: a pool may take 20, two 8-vCPU nodes.
        let mut s = SpotPools::new([100.0].into_iter());
        s.count(0, 7, 1, 8_000, None);
        s.count(0, 7, 1, 8_000, None);
        assert!(!s.room(0, 7, 1, 8_000));
        // Pinned to zone 1: a flexible node there moves to zone 2.
        assert!(s.room_pinned(0, 7, 1, 8_000, &[2]));
        s.count(0, 7, 1, 8_000, Some(&[2]));
        assert_eq!(s.planned[&(0, 7, 1)], 16_000);
        assert_eq!(s.planned[&(0, 7, 2)], 8_000);
        // Zone 1 now holds a pinned node and one flexible node: one more pinned node moves it.
        assert!(s.room_pinned(0, 7, 1, 8_000, &[2]));
        s.count(0, 7, 1, 8_000, Some(&[2]));
        assert_eq!(s.planned[&(0, 7, 1)], 16_000);
        assert_eq!(s.planned[&(0, 7, 2)], 16_000);
        // Only pinned nodes are left in zone 1: nothing more moves.
        assert!(!s.room_pinned(0, 7, 1, 8_000, &[2]));
        // Nor does a flexible node without room elsewhere.
        let mut s = SpotPools::new([100.0].into_iter());
        s.count(0, 7, 1, 16_000, None);
        assert!(!s.room_pinned(0, 7, 1, 8_000, &[]));
    }

    #[test]
    fn a_round_too_small_to_spread_has_no_cap() {
        // 10 cores: a share of 2 would cut the round into 1- and 2-vCPU nodes.
        let mut s = SpotPools::new([10.0].into_iter());
        s.planned.insert((0, 7, 1), 8_000);
        assert!(s.room(0, 7, 1, 8_000));
    }
}
