//! The bound with whole pods: every pod on a node of a type it fits.
//!
//! [`lower_bound`](super::lower_bound) pools each resource over the whole fleet, so it may buy
//! CPU from one type and memory from another that no pod could use together: with spot prices,
//! 2-vCPU burstables with half a GiB (t3a.micro) sell CPU at a fifth of any type a 1 GiB pod fits
//! on, and memory-rich types sell GiB cheaply, so a 40,000-pod round of 250m–2 vCPU pods was
//! "bounded" at less than half of what any placement of those pods can cost. Here pods of each
//! shape (their requests) go only on types whose room holds one of them — still fractional, so
//! still a bound no packing beats, but one a packing can approach.
//!
//! The LP: minimise Σ priceₒ·xₒ over offerings o (xₒ nodes, at most `most(o)`), with nₛₜ pods
//! of shape s on type t (only where s fits t) such that every shape's pods are placed,
//! Σₜ nₛₜ = countₛ, and a type's nodes hold what is placed on them, Σₛ reqₛ·nₛₜ ≤ amountₜ·Σₒ xₒ in
//! every dimension (offerings of a type share its nodes' room); at least `nodes` nodes in all.

use std::collections::HashMap;

use microlp::{ComparisonOp, OptimizationDirection, Problem};

use super::{DIMS, Demand, Supply};

/// Pods counted by shape: their requests in the units of [`Supply::amount`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shapes {
    counts: Vec<([f64; DIMS], f64)>,
    index: HashMap<[u64; DIMS], usize>,
}

impl Shapes {
    /// One more pod of `amount`.
    pub fn add(&mut self, amount: &[f64; DIMS]) {
        let key = amount.map(f64::to_bits);
        let i = *self.index.entry(key).or_insert_with(|| {
            self.counts.push((*amount, 0.0));
            self.counts.len() - 1
        });
        self.counts[i].1 += 1.0;
    }

    /// Whether no pod was counted.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Every shape and its count, in a stable order (a cache key: the same pods give the same).
    pub fn key(&self) -> Vec<u64> {
        let mut key: Vec<[u64; DIMS + 1]> = self
            .counts
            .iter()
            .map(|(a, n)| {
                let mut k = [0; DIMS + 1];
                k[..DIMS].copy_from_slice(&a.map(f64::to_bits));
                k[DIMS] = n.to_bits();
                k
            })
            .collect();
        key.sort_unstable();
        key.concat()
    }

    /// The same pods as one pooled demand (for [`lower_bound`](super::lower_bound)).
    pub fn demand(&self) -> Demand {
        let mut d = Demand::default();
        for (a, _) in &self.counts {
            d.add(a);
        }
        d.amount = self.total();
        d
    }

    /// What all the pods need together.
    pub fn total(&self) -> [f64; DIMS] {
        let mut total = [0.0; DIMS];
        for (a, n) in &self.counts {
            for d in 0..DIMS {
                total[d] += a[d] * n;
            }
        }
        total
    }
}

/// The cheapest fractional fleet of `supplies` (one per offering; offerings with the same room
/// are one type) in which every pod is on a node it fits, with at least `nodes` nodes and no
/// offering used for more than `most(its index, offering)` nodes. `None` when some pod fits no
/// type (or the caps leave too little room).
pub fn fitting_lower_bound(
    supplies: &[Supply],
    shapes: &Shapes,
    nodes: f64,
    most: impl Fn(usize, &Supply) -> f64,
) -> Option<f64> {
    fitting_mix(supplies, shapes, nodes, most).map(|(cost, _)| cost)
}

/// The optimum of [`fitting_lower_bound`] and the nodes it uses: `(index into supplies,
/// count)` of every offering it buys.
pub fn fitting_mix(
    supplies: &[Supply],
    shapes: &Shapes,
    nodes: f64,
    most: impl Fn(usize, &Supply) -> f64,
) -> Option<(f64, Vec<(usize, f64)>)> {
    if shapes.is_empty() && nodes <= 0.0 {
        return Some((0.0, Vec::new()));
    }
    let types = types(supplies, shapes);
    let capped = supplies
        .iter()
        .enumerate()
        .any(|(i, s)| most(i, s).is_finite());
    let types = if capped {
        types
    } else {
        undominated(supplies, types, nodes > 0.0)
    };
    let mut lp = Problem::new(OptimizationDirection::Minimize);
    // Per type: its offerings' node counts, and (shape, pods of it placed there).
    let mut placed: Vec<Vec<(microlp::Variable, f64)>> = vec![Vec::new(); shapes.counts.len()];
    let mut all_nodes = Vec::new();
    let mut bought = Vec::new();
    for t in &types {
        let xs: Vec<_> = t
            .offerings
            .iter()
            .map(|&o| lp.add_var(supplies[o].price, (0.0, most(o, &supplies[o]))))
            .collect();
        bought.extend(t.offerings.iter().copied().zip(xs.iter().copied()));
        all_nodes.extend(xs.iter().map(|&x| (x, 1.0)));
        let ns: Vec<_> = t
            .fits
            .iter()
            .map(|&s| (s, lp.add_var(0.0, (0.0, f64::INFINITY))))
            .collect();
        for d in 0..DIMS {
            let mut row: Vec<_> = ns
                .iter()
                .filter(|(s, _)| shapes.counts[*s].0[d] > 0.0)
                .map(|&(s, n)| (n, shapes.counts[s].0[d]))
                .collect();
            if row.is_empty() {
                continue;
            }
            row.extend(xs.iter().map(|&x| (x, -t.amount[d])));
            lp.add_constraint(row.as_slice(), ComparisonOp::Le, 0.0);
        }
        for (s, n) in ns {
            placed[s].push((n, 1.0));
        }
    }
    for (s, row) in placed.iter().enumerate() {
        if row.is_empty() {
            return None;
        }
        lp.add_constraint(row.as_slice(), ComparisonOp::Eq, shapes.counts[s].1);
    }
    if nodes > 0.0 {
        lp.add_constraint(all_nodes.as_slice(), ComparisonOp::Ge, nodes);
    }
    let solution = lp.solve().ok()?.into_solution().ok()?;
    let cost = solution.objective();
    let used = bought
        .into_iter()
        .map(|(o, x)| (o, solution.var_value(x)))
        .filter(|&(_, n)| n > 1e-9)
        .collect();
    cost.is_finite().then_some((cost.max(0.0), used))
}

/// One instance type: the room its nodes have, its offerings and the shapes that fit.
struct Type {
    amount: [f64; DIMS],
    offerings: Vec<usize>,
    fits: Vec<usize>,
}

/// `supplies` grouped by room (offerings of one type have the same), those that fit some shape.
fn types(supplies: &[Supply], shapes: &Shapes) -> Vec<Type> {
    let mut by_room: HashMap<[u64; DIMS], usize> = HashMap::new();
    let mut out: Vec<Type> = Vec::new();
    for (o, s) in supplies.iter().enumerate() {
        if !(s.price > 0.0 && s.price.is_finite()) {
            continue;
        }
        let i = *by_room
            .entry(s.amount.map(f64::to_bits))
            .or_insert_with(|| {
                out.push(Type {
                    amount: s.amount,
                    offerings: Vec::new(),
                    fits: (0..shapes.counts.len())
                        .filter(|&k| (0..DIMS).all(|d| shapes.counts[k].0[d] <= s.amount[d] + 1e-9))
                        .collect(),
                });
                out.len() - 1
            });
        out[i].offerings.push(o);
    }
    out.retain(|t| !t.fits.is_empty());
    out
}

/// Without caps: each type at its cheapest offering, and only the types no other beats — one
/// that fits every shape this one fits and gives at least as much of every dimension per dollar
/// (and, with a node count to meet, as many nodes per dollar). Keeps the LP a few dozen types.
fn undominated(supplies: &[Supply], types: Vec<Type>, nodes: bool) -> Vec<Type> {
    let mut types: Vec<(Vec<f64>, Type)> = types
        .into_iter()
        .map(|mut t| {
            let cheapest = *t
                .offerings
                .iter()
                .min_by(|&&a, &&b| supplies[a].price.total_cmp(&supplies[b].price))
                .expect("a type has an offering");
            t.offerings = vec![cheapest];
            let price = supplies[cheapest].price;
            let mut v: Vec<f64> = t.amount.iter().map(|a| a / price).collect();
            if nodes {
                v.push(1.0 / price);
            }
            (v, t)
        })
        .collect();
    types.sort_by(|a, b| {
        let (sa, sb): (f64, f64) = (a.0.iter().sum(), b.0.iter().sum());
        sb.total_cmp(&sa).then(b.1.fits.len().cmp(&a.1.fits.len()))
    });
    let mut kept: Vec<(Vec<f64>, Type)> = Vec::new();
    for (v, t) in types {
        let dominated = kept
            .iter()
            .any(|(kv, k)| kv.iter().zip(&v).all(|(a, b)| a >= b) && subset(&t.fits, &k.fits));
        if !dominated {
            kept.push((v, t));
        }
    }
    kept.into_iter().map(|(_, t)| t).collect()
}

/// Whether every element of sorted `a` is in sorted `b`.
fn subset(a: &[usize], b: &[usize]) -> bool {
    let mut b = b.iter();
    a.iter().all(|x| b.any(|y| y == x))
}

#[cfg(test)]
mod tests {
    use super::super::tests::supply;
    use super::super::{Bound, lower_bound};
    use super::*;

    fn shapes(pods: &[(f64, f64, usize)]) -> Shapes {
        let mut s = Shapes::default();
        for &(cpu, mem, n) in pods {
            for _ in 0..n {
                s.add(&[cpu, mem, 1.0, 0.0]);
            }
        }
        s
    }

    /// The pooled LP bound of `pods`, the smallest of which is `smallest` vCPU and GiB.
    fn pooled_bound(types: &[Supply], pods: &Shapes, smallest: f64) -> Bound {
        lower_bound(
            types,
            &Demand {
                amount: pods.total(),
                nodes: 0.0,
                smallest: Some([smallest, smallest, 1.0, 0.0]),
            },
        )
        .unwrap()
    }

    #[test]
    fn cpu_from_a_type_no_pod_fits_is_not_counted() {
        // A 2-vCPU node with half a GiB for 0.1, a memory-rich node for 1, a balanced one for 1.
        let types = [
            supply(0.1, 2.0, 0.5),
            supply(1.0, 2.0, 16.0),
            supply(1.0, 4.0, 8.0),
        ];
        // Eight 1-vCPU/1-GiB pods: none fits the first type.
        let pods = shapes(&[(1.0, 1.0, 8)]);
        let pooled = pooled_bound(&types, &pods, 1.0);
        // No pod fits the first type, so even pooled it supplies nothing (the smallest-pod rule).
        let fitting = fitting_lower_bound(&types, &pods, 0.0, |_, _| f64::INFINITY).unwrap();
        assert!(
            (fitting - 2.0).abs() < 1e-6,
            "two balanced nodes: {fitting}"
        );
        assert!((pooled.cost - fitting).abs() < 1e-6, "{pooled:?}");
        // One 0.25-vCPU pod fits it: pooled, every pod's CPU now comes from it.
        let mut mixed = pods.clone();
        mixed.add(&[0.25, 0.25, 1.0, 0.0]);
        let pooled_mixed = pooled_bound(&types, &mixed, 0.25);
        let fitting_mixed = fitting_lower_bound(&types, &mixed, 0.0, |_, _| f64::INFINITY).unwrap();
        assert!(
            pooled_mixed.cost < 1.5,
            "pooled, CPU comes from the small type: {pooled_mixed:?}"
        );
        assert!(
            fitting_mixed > 2.0 && fitting_mixed < 2.1,
            "only the small pod may use it: {fitting_mixed}"
        );
    }

    #[test]
    fn each_shape_goes_where_it_is_cheapest_to_hold() {
        // CPU-heavy pods on the c type, memory-heavy ones on the r type: the same as pooled.
        let types = [supply(1.0, 4.0, 8.0), supply(1.0, 2.0, 16.0)];
        let pods = shapes(&[(1.0, 2.0, 8), (0.5, 4.0, 8)]);
        let fitting = fitting_lower_bound(&types, &pods, 0.0, |_, _| f64::INFINITY).unwrap();
        let pooled = lower_bound(
            &types,
            &Demand {
                amount: pods.total(),
                ..Demand::default()
            },
        )
        .unwrap();
        assert!((fitting - pooled.cost).abs() < 1e-6, "{fitting} {pooled:?}");
        assert!((fitting - 4.0).abs() < 1e-6, "{fitting}");
    }

    #[test]
    fn a_pod_no_type_fits_has_no_bound_and_no_pods_cost_nothing() {
        let types = [supply(1.0, 4.0, 8.0)];
        assert_eq!(
            fitting_lower_bound(&types, &shapes(&[(8.0, 1.0, 1)]), 0.0, |_, _| f64::INFINITY),
            None
        );
        assert_eq!(
            fitting_lower_bound(&types, &Shapes::default(), 0.0, |_, _| f64::INFINITY),
            Some(0.0)
        );
    }

    #[test]
    fn caps_and_node_counts_hold() {
        // Two offerings of one type (two zones), the cheaper capped at two nodes.
        let offers = [supply(1.0, 4.0, 8.0), supply(2.0, 4.0, 8.0)];
        let pods = shapes(&[(1.0, 2.0, 16)]);
        let capped = fitting_lower_bound(&offers, &pods, 0.0, |_, s| {
            if s.price < 1.5 { 2.0 } else { f64::INFINITY }
        })
        .unwrap();
        assert!((capped - 6.0).abs() < 1e-6, "2 × 1 + 2 × 2: {capped}");
        let spread = fitting_lower_bound(&offers, &pods, 6.0, |_, _| f64::INFINITY).unwrap();
        assert!((spread - 6.0).abs() < 1e-6, "six nodes at 1: {spread}");
    }

    #[test]
    fn the_same_pods_give_the_same_key() {
        let mut a = shapes(&[(1.0, 2.0, 2)]);
        a.add(&[0.5, 1.0, 1.0, 0.0]);
        let mut b = shapes(&[(0.5, 1.0, 1)]);
        b.add(&[1.0, 2.0, 1.0, 0.0]);
        b.add(&[1.0, 2.0, 1.0, 0.0]);
        assert_eq!(a.key(), b.key());
        b.add(&[1.0, 2.0, 1.0, 0.0]);
        assert_ne!(a.key(), b.key());
    }
}
