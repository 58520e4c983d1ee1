//! Sizing: the pool's LP bound over its offerings and the claim size it aims for, so claims are
//! cut for the cheapest way to hold the backlog rather than for whatever fits first.

use super::*;

/// Below this many vCPUs a round is sized from its pods alone, not for the favoured offerings:
/// its nodes hold few whole pods, which the fractional optimum does not see (ten 500m pods are
/// five "full" 1-vCPU nodes to it, and ten on them).
pub(super) const FAVOURED_MIN_CPU: f64 = 64.0;

impl<'a> Solver<'a> {
    /// The pool's LP bound over every pending pod: its unit prices value what a node holds.
    pub(super) fn bound(&mut self, pool: usize) -> Option<Bound> {
        if let Some(b) = self.bounds[pool] {
            return b;
        }
        let (_, supplies) = self.pool_supplies(pool);
        // A pool no pod calls home (it takes overflow) is priced for all of them.
        let mut amount = self.demand[pool];
        if amount.iter().all(|&a| a == 0.0) {
            amount = std::array::from_fn(|d| self.demand.iter().map(|a| a[d]).sum());
        }
        let demand = Demand {
            amount,
            nodes: 0.0,
            smallest: Some(cost::amount(&self.smallest)),
        };
        let b = cost::lower_bound(&supplies, &demand);
        self.bounds[pool] = Some(b);
        b
    }

    /// The offerings the pool's cheapest fractional fleet buys when every pod is on a type it
    /// fits and no spot pool passes its share ([`cost::fitting_mix`]), by type: what its claims
    /// are cut for while one of them has room and holds the pod. Pricing every type at its
    /// cheapest pool instead cut claims for a 2-vCPU type whose cheap pool was full, which then
    /// launched as whatever 2-vCPU type was cheapest next — twice the price per vCPU of the
    /// larger nodes the optimum turns to.
    pub(super) fn favoured(&mut self, pool: usize) -> std::rc::Rc<[Favoured]> {
        if self.favoured[pool].is_none() {
            let (offers, supplies, most) = self.pool_offerings(pool);
            let shapes = &self.shapes[pool];
            // A pod only types larger than a spot pool's share fit makes the capped optimum
            // infeasible; the solver lets such pods exceed the share, so the optimum does too.
            let mut used: Vec<Favoured> = cost::fitting_mix(&supplies, shapes, 0.0, |i, _| most[i])
                .or_else(|| cost::fitting_mix(&supplies, shapes, 0.0, |_, _| f64::INFINITY))
                .map(|(_, used)| {
                    used.into_iter()
                        .map(|(i, nodes)| Favoured { nodes, ..offers[i] })
                        .collect()
                })
                .unwrap_or_default();
            used.sort_by_key(|f| (f.ty, f.zone, f.spot));
            self.favoured[pool] = Some(used.into());
        }
        self.favoured[pool]
            .clone()
            .unwrap_or_else(|| Vec::new().into())
    }

    /// Every offering the pool allows, with what a node of it holds and the most nodes of it a
    /// round may plan (spot pools are capped by the diversity rule).
    fn pool_offerings(&self, pool: usize) -> (Vec<Favoured>, Vec<cost::Supply>, Vec<f64>) {
        let np = &self.pools[pool];
        let zones = self.pool_zones[pool];
        let capacity = np
            .requirements
            .get(crate::scheduling::model::labels::CAPACITY_TYPE);
        let (mut types, mut supplies, mut most) = (Vec::new(), Vec::new(), Vec::new());
        for &t in &self.pool_types[pool] {
            let ty = &self.its.types[t as usize];
            let alloc = np.allocatable(ty);
            for o in &ty.offerings {
                let allowed = o.available
                    && zones & (1 << o.zone) != 0
                    && capacity
                        .is_none_or(|a| a.allows(Some(capacity_type_label(o.capacity_type))));
                let Some(s) = allowed
                    .then(|| cost::supply(o.price, &alloc, &np.daemonset_overhead))
                    .flatten()
                else {
                    continue;
                };
                types.push(Favoured {
                    ty: t,
                    zone: o.zone,
                    spot: o.capacity_type == CapacityType::Spot,
                    price: o.price,
                    nodes: 0.0,
                });
                supplies.push(s);
                most.push(if o.capacity_type == CapacityType::Spot {
                    self.spot.most_nodes(pool, ty.capacity.0)
                } else {
                    f64::INFINITY
                });
            }
        }
        (types, supplies, most)
    }

    /// The pool's types with what a node of each holds after DaemonSet overhead, at its
    /// cheapest offering the pool allows.
    pub(super) fn pool_supplies(&self, pool: usize) -> (Vec<u32>, Vec<cost::Supply>) {
        let np = &self.pools[pool];
        let zones = self.pool_zones[pool];
        self.pool_types[pool]
            .iter()
            .filter_map(|&t| {
                let price = self.its.cheapest(t, zones, &np.requirements)?;
                let ty = &self.its.types[t as usize];
                Some((
                    t,
                    cost::supply(price, &np.allocatable(ty), &np.daemonset_overhead)?,
                ))
            })
            .unzip()
    }

    /// The type a new claim for pod `p` grows to: of `types`, the cheapest whose value per dollar
    /// is within [`SIZE_TOLERANCE`] of the best. What a type would hold is estimated from the pods
    /// from `p` on in visiting order: the next [`LOOKAHEAD`] placed one by one as they fit first —
    /// pods are whole: a 2-vCPU node holds one 1.5-vCPU pod, not 1.3 of them — then the room left
    /// topped up in the shape of the pods past them. In their shape, not dimension by dimension: a
    /// node with ten GiB per vCPU holds the backlog's memory only as far as its CPU goes (counted
    /// per dimension, a spot round's first claims were cut for memory-rich types that the large
    /// pods then filled on CPU alone, leaving half a c6g.12xlarge idle). What it holds is valued
    /// at the pool's LP unit prices, so a node's shape, its DaemonSet overhead (small nodes pay it
    /// each) and its price all count, and the last pods get a node their size. Prices are the
    /// spot pools' with room (see `diversity`). In a round of [`FAVOURED_MIN_CPU`] or more, only
    /// the offerings the whole-pod optimum buys are weighed first (see `favoured`), the rest
    /// only when none of them has room and holds the pod. Under a NodePool limit its pods would
    /// overrun, what a node holds is weighed against the capacity it reserves instead of its
    /// price.
    pub(super) fn target(
        &mut self,
        pool: usize,
        p: usize,
        types: &[u32],
        zones: u64,
        requirements: &Requirements,
    ) -> Option<u32> {
        let worth = self.worth(pool)?;
        // Prices per type for claims on the pool's own requirements, computed once per zone set
        // (and moved on as spot pools fill, see `plan_spot`).
        let own = *requirements == self.pools[pool].requirements;
        let large = self.favour && self.demand[pool][0] >= FAVOURED_MIN_CPU;
        let favoured = if own && large && !worth.scarce_cpu && !worth.scarce_mem {
            self.favoured(pool)
        } else {
            Vec::new().into()
        };
        let favoured_types: Vec<u32> = types
            .iter()
            .copied()
            .filter(|&t| {
                let at = favoured.partition_point(|f| f.ty < t);
                favoured.get(at).is_some_and(|f| f.ty == t)
            })
            .collect();
        let table = own.then(|| self.price_table(pool, zones, requirements));
        let mut sizing = Sizing {
            pool,
            zones,
            requirements,
            types: &favoured_types,
            favoured: Some(&favoured),
            table: table.as_deref(),
            worth,
            ahead: self.lookahead(p),
        };
        // Of the favoured offerings with room; else of every type on the pools with room; when
        // every pool is full (see `diversity`), on every pool.
        let mut scored = self.score(&sizing, true);
        if !scored.iter().any(|s| s.0 > 0.0) {
            sizing.types = types;
            sizing.favoured = None;
            scored = [true, false]
                .into_iter()
                .map(|capped| self.score(&sizing, capped))
                .find(|scored| scored.iter().any(|s| s.0 > 0.0))
                .unwrap_or_default();
        }
        if let Some(prices) = table {
            self.prices.insert((pool, zones), prices);
        }
        let best = scored.iter().map(|s| s.0).fold(0.0, f64::max);
        scored
            .iter()
            .filter(|s| s.0 >= best * (1.0 - SIZE_TOLERANCE))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|s| s.2)
    }

    /// How the pool values a node: at its LP unit prices per dollar, or — under a limit its
    /// pods would overrun, where capacity is scarce, not dollars — per unit of limit it takes.
    fn worth(&mut self, pool: usize) -> Option<Worth> {
        let bound = self.bound(pool)?;
        let limits = &self.pools[pool].limits;
        let (cpu_room, mem_room) = self.headroom[pool];
        let demand = self.demand[pool];
        Some(Worth {
            bound,
            scarce_cpu: limits.cpu_millis.is_some() && demand[0] * 1000.0 > cpu_room as f64,
            scarce_mem: limits.memory_bytes.is_some()
                && demand[1] * f64::from(1u32 << 30) > mem_room as f64,
        })
    }

    /// The pods from `p` on in visiting order: the next [`LOOKAHEAD`] one by one, the rest summed.
    fn lookahead(&self, p: usize) -> Lookahead<'_> {
        let start = self.position[p];
        let window = &self.sequence[start..(start + LOOKAHEAD).min(self.sequence.len())];
        let (base, total) = (
            self.ahead[start + window.len()],
            self.ahead[self.ahead.len() - 1],
        );
        Lookahead {
            window,
            rest: std::array::from_fn(|d| total[d] - base[d]),
            smallest: cost::amount(&self.smallest),
        }
    }

    /// The price of every type on the pool's own requirements in `zones` (NaN: not offered
    /// there), from the cache when it holds them.
    fn price_table(&mut self, pool: usize, zones: u64, requirements: &Requirements) -> Vec<f64> {
        if let Some(cached) = self.prices.remove(&(pool, zones)) {
            return cached;
        }
        (0..self.its.types.len() as u32)
            .map(|t| {
                self.offer(pool, t, zones, requirements, true)
                    .map_or(f64::NAN, |o| o.0)
            })
            .collect()
    }

    /// (worth, price, type) of the types that may come within the size rule of the best. What
    /// the window and the rest bring, per dimension, bounds what a node holds from above, so
    /// the exact estimate is made only for those types (a round of 10,000 claims asks for it
    /// 10,000 × 400 times).
    fn score(&self, s: &Sizing, capped: bool) -> Vec<(f64, f64, u32)> {
        let ahead = &s.ahead;
        let first = ahead.window[0];
        let brought: [f64; DIMS] =
            std::array::from_fn(|d| ahead.rest[d] + ahead.window.iter().map(|a| a[d]).sum::<f64>());
        let overhead = cost::amount(&self.pools[s.pool].daemonset_overhead);
        let mut candidates: Vec<(f64, f64, u32, [f64; DIMS])> = s
            .types
            .iter()
            .filter_map(|&t| {
                let price = match (s.favoured, s.table, capped) {
                    (Some(f), _, _) => self.favoured_price(s, f, t),
                    (None, Some(prices), true) => Some(prices[t as usize]).filter(|p| !p.is_nan()),
                    _ => self
                        .offer(s.pool, t, s.zones, s.requirements, capped)
                        .map(|o| o.0),
                }?;
                let ty = &self.its.types[t as usize];
                let alloc = cost::amount(&self.pools[s.pool].allocatable(ty));
                let room: [f64; DIMS] = std::array::from_fn(|d| alloc[d] - overhead[d]);
                if (0..DIMS).any(|d| first[d] > room[d] + 1e-9) {
                    return None;
                }
                let most = std::array::from_fn(|d| room[d].max(0.0).min(brought[d]));
                Some((s.worth.of(&most, ty.capacity, price), price, t, room))
            })
            .collect();
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut best = 0.0f64;
        let mut scored = Vec::new();
        for (most, price, t, room) in candidates {
            if most < best * (1.0 - SIZE_TOLERANCE) {
                break;
            }
            let held = held_by(room, ahead);
            let w = s
                .worth
                .of(&held, self.its.types[t as usize].capacity, price);
            best = best.max(w);
            scored.push((w, price, t));
        }
        scored
    }

    /// Type `t`'s cheapest favoured offering in the claim's zones whose spot pool has room.
    fn favoured_price(&self, s: &Sizing, favoured: &[Favoured], t: u32) -> Option<f64> {
        favoured[favoured.partition_point(|f| f.ty < t)..]
            .iter()
            .take_while(|f| f.ty == t)
            .filter(|f| {
                s.zones & (1 << f.zone) != 0
                    && (!f.spot || self.spot_room(s.pool, t, f.zone, s.zones))
            })
            .map(|f| f.price)
            .min_by(f64::total_cmp)
    }

    /// Where first fit starts for pod `p` in `pool`: past the closed prefix, and past the claims
    /// that already hold a pod of a selector the pod wants a host of its own from.
    pub(super) fn scan_start(&mut self, p: usize, pool: usize) -> usize {
        let order = &self.order[pool];
        let claims = &self.claims;
        let mut start = self.first_open[pool];
        while start < order.len() && !claims[order[start]].open {
            start += 1;
        }
        self.first_open[pool] = start;
        for term in &self.terms[p] {
            let exclusive = term.key == TopologyKey::Hostname
                && match term.kind {
                    TermKind::AntiAffinity => true,
                    TermKind::Spread(skew) => skew == 1 && self.matches[p].contains(&term.selector),
                    TermKind::Affinity => false,
                };
            if !exclusive {
                continue;
            }
            let ptr = self.skip.entry((term.selector, pool)).or_insert(0);
            while *ptr < order.len()
                && (!claims[order[*ptr]].open
                    || self
                        .host_counts
                        .get(&(term.selector, order[*ptr]))
                        .is_some_and(|&n| n > 0))
            {
                *ptr += 1;
            }
            start = start.max(*ptr);
        }
        start
    }
}

/// The pods a claim's size is chosen for: the next ones in visiting order, and the rest.
struct Lookahead<'w> {
    /// Requests of the next pods in visiting order.
    window: &'w [[f64; DIMS]],
    /// Requests of every pod past the window, summed.
    rest: [f64; DIMS],
    /// The smallest pod's requests.
    smallest: [f64; DIMS],
}

/// How a pool values what a node holds (see `Solver::worth`).
struct Worth {
    bound: Bound,
    scarce_cpu: bool,
    scarce_mem: bool,
}

impl Worth {
    /// What holding `held` on a node of `capacity` at `price` is worth.
    fn of(&self, held: &[f64; DIMS], capacity: (u64, u64), price: f64) -> f64 {
        if !(self.scarce_cpu || self.scarce_mem) {
            return self.bound.value(held) / price;
        }
        let mut fill = f64::INFINITY;
        if self.scarce_cpu {
            fill = fill.min(held[0] * 1000.0 / capacity.0.max(1) as f64);
        }
        if self.scarce_mem {
            fill = fill.min(held[1] * f64::from(1u32 << 30) / capacity.1.max(1) as f64);
        }
        fill
    }
}

/// One claim's sizing question: the types to weigh for `pool` in `zones`, priced from `table`
/// when it is the pool's own requirements, against the pods `ahead`.
struct Sizing<'s> {
    pool: usize,
    zones: u64,
    requirements: &'s Requirements,
    types: &'s [u32],
    /// When set, types are priced at these offerings only (see `Solver::favoured`).
    favoured: Option<&'s [Favoured]>,
    table: Option<&'s [f64]>,
    worth: Worth,
    ahead: Lookahead<'s>,
}

/// What a node with `room` (which fits the next pod) would hold of the pods ahead: the window
/// first fit pod by pod, and the room left topped up in the rest's own shape (nothing once the
/// smallest pod no longer fits).
fn held_by(mut room: [f64; DIMS], ahead: &Lookahead) -> [f64; DIMS] {
    let window = ahead.window;
    let mut held = [0.0; DIMS];
    for a in window {
        if (0..DIMS).all(|d| a[d] <= room[d] + 1e-9) {
            for d in 0..DIMS {
                room[d] -= a[d];
                held[d] += a[d];
            }
        }
    }
    if (0..DIMS).any(|d| ahead.smallest[d] > room[d] + 1e-9) {
        room = [0.0; DIMS];
    }
    let scale = (0..DIMS)
        .filter(|&d| ahead.rest[d] > 0.0)
        .map(|d| room[d].max(0.0) / ahead.rest[d])
        .fold(1.0, f64::min);
    for (h, r) in held.iter_mut().zip(ahead.rest) {
        *h += r * scale;
    }
    held
}
