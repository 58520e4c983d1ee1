//! Sizing: the pool's LP bound over its offerings and the claim size it aims for, so claims are
//! cut for the cheapest way to hold the backlog rather than for whatever fits first.

use super::*;

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
    /// from `p` on in visiting order, the ones first fit places next: their sum as a fluid, up to
    /// the node's room (first fit tops nodes up with later, smaller pods, so a mixed backlog
    /// fills them). When the next [`LOOKAHEAD`] are all alike (a Deployment's replicas) or are
    /// the last, they are placed one by one as they fit first — pods are whole: a 2-vCPU node
    /// holds one 1.5-vCPU pod, not 1.3 of them — and the fluid tops up only what the smallest
    /// pending pod still fits in. What it holds is valued at the pool's LP unit prices, so a node's shape, its DaemonSet overhead
    /// (small nodes pay it each) and its price all count, and the last pods get a node their size.
    /// Under a NodePool limit its pods would overrun, what a node holds is weighed against the
    /// capacity it reserves instead of its price.
    pub(super) fn target(
        &mut self,
        pool: usize,
        p: usize,
        types: &[u32],
        zones: u64,
        requirements: &Requirements,
    ) -> Option<u32> {
        let bound = self.bound(pool)?;
        // Under a limit the pool's pods would overrun, capacity is what is scarce, not dollars:
        // a node is then worth what it holds per unit of limit it takes.
        let limits = &self.pools[pool].limits;
        let (cpu_room, mem_room) = self.headroom[pool];
        let demand = self.demand[pool];
        let scarce_cpu = limits.cpu_millis.is_some() && demand[0] * 1000.0 > cpu_room as f64;
        let scarce_mem =
            limits.memory_bytes.is_some() && demand[1] * f64::from(1u32 << 30) > mem_room as f64;
        let overhead = cost::amount(&self.pools[pool].daemonset_overhead);
        let start = self.position[p];
        let window = &self.sequence[start..(start + LOOKAHEAD).min(self.sequence.len())];
        let beyond = start + window.len();
        // Few pods left, or a run of identical ones (a Deployment's replicas): count them whole.
        let whole = beyond == self.sequence.len() || window.iter().all(|a| *a == window[0]);
        let (base, total) = (self.ahead[beyond], self.ahead[self.ahead.len() - 1]);
        let rest: [f64; DIMS] = std::array::from_fn(|d| total[d] - base[d]);
        let lookahead = Lookahead {
            window,
            whole,
            rest,
            smallest: cost::amount(&self.smallest),
        };
        // Prices per type for claims on the pool's own requirements, computed once per zone set.
        let table = (*requirements == self.pools[pool].requirements).then(|| {
            let its = self.its;
            self.prices.remove(&(pool, zones)).unwrap_or_else(|| {
                (0..its.types.len() as u32)
                    .map(|t| its.cheapest(t, zones, requirements).unwrap_or(f64::NAN))
                    .collect()
            })
        });
        // (value per dollar, price, type)
        let mut scored: Vec<(f64, f64, u32)> = Vec::with_capacity(types.len());
        for &t in types {
            let price = match &table {
                Some(prices) => Some(prices[t as usize]).filter(|p| !p.is_nan()),
                None => self.its.cheapest(t, zones, requirements),
            };
            let Some(price) = price else {
                continue;
            };
            let alloc = cost::amount(&self.pools[pool].allocatable(&self.its.types[t as usize]));
            let room: [f64; DIMS] = std::array::from_fn(|d| alloc[d] - overhead[d]);
            let Some(held) = held_by(room, &lookahead) else {
                continue;
            };
            let worth = if scarce_cpu || scarce_mem {
                let cap = self.its.types[t as usize].capacity;
                let mut fill = f64::INFINITY;
                if scarce_cpu {
                    fill = fill.min(held[0] * 1000.0 / cap.0.max(1) as f64);
                }
                if scarce_mem {
                    fill = fill.min(held[1] * f64::from(1u32 << 30) / cap.1.max(1) as f64);
                }
                fill
            } else {
                bound.value(&held) / price
            };
            scored.push((worth, price, t));
        }
        if let Some(prices) = table {
            self.prices.insert((pool, zones), prices);
        }
        let best = scored.iter().map(|s| s.0).fold(0.0, f64::max);
        if best <= 0.0 {
            return None;
        }
        let r = scored
            .iter()
            .filter(|s| s.0 >= best * (1.0 - SIZE_TOLERANCE))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        r.map(|s| s.2)
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
    /// Few pods left, or a run of identical ones (a Deployment's replicas): count them whole.
    whole: bool,
    /// Requests of every pod past the window, summed.
    rest: [f64; DIMS],
    /// The smallest pod's requests.
    smallest: [f64; DIMS],
}

/// What a node with `room` would hold of the pods ahead, or `None` when the next one does not
/// fit. Counted whole, the window is first fit pod by pod and the room left is topped up in the
/// rest's own shape (identical pods use no resource apart); otherwise, the room the rest fills.
fn held_by(mut room: [f64; DIMS], ahead: &Lookahead) -> Option<[f64; DIMS]> {
    let window = ahead.window;
    if (0..DIMS).any(|d| window[0][d] > room[d] + 1e-9) {
        return None;
    }
    let mut held = [0.0; DIMS];
    if ahead.whole {
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
    } else {
        for (d, h) in held.iter_mut().enumerate() {
            *h += room[d].max(0.0).min(ahead.rest[d]);
        }
    }
    Some(held)
}
