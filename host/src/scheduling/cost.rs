//! The cost model: what the cheapest *fractional* fleet for some requests would cost — the LP
//! relaxation on allocatable, the lower bound no packing can beat — and what one unit of each
//! resource is worth at that optimum (the LP's dual prices), which packing uses to value what a
//! node would hold.
//!
//! The LP: minimise Σ priceₜ·xₜ over instance types (xₜ ≥ 0) such that Σ supplyₜ·xₜ ≥ demand in
//! every dimension (CPU, memory, pods, GPUs, and optionally a node count that hostname topology
//! forces), where a type's supply is its allocatable less the DaemonSet overhead every node pays.
//! It is solved as its dual — maximise demand·y subject to supplyₜ·y ≤ priceₜ for every type —
//! because the dual's solution *is* the unit prices, and its value equals the bound.
//!
//! Dual feasibility is what makes the prices useful: no node can hold more value than it costs,
//! so `value(what it holds) / price` is an efficiency ≤ 1 for every type, and equal to 1 only for
//! a full node of a type the optimum uses.
//!
//! Pooled over the fleet, the bound may buy CPU and memory from types no pod could use together;
//! [`fitting`] is the tighter bound with every pod on a type it fits, which the figures compare
//! against.

mod fitting;

use microlp::{ComparisonOp, OptimizationDirection, Problem};

use super::instance_types::InstanceTypes;
use super::kubelet::NodeSettings;
use super::model::{capacity_type_label, labels};
use super::requirements::Requirements;
use crate::capacity::Resources;

pub use fitting::{Shapes, fitting_lower_bound, fitting_mix};

/// CPU (vCPUs), memory (GiB), pods, GPUs.
pub const DIMS: usize = 4;

/// What one node of a type offers, and for how much.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Supply {
    /// USD per hour of its cheapest allowed offering.
    pub price: f64,
    /// vCPUs, GiB, pods, GPUs a node of it holds for pods (allocatable less DaemonSet overhead).
    pub amount: [f64; DIMS],
}

/// What a set of pods needs, in the units of [`Supply::amount`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Demand {
    pub amount: [f64; DIMS],
    /// Nodes the fleet must have at least (hostname anti-affinity and spread force them); 0 for
    /// none.
    pub nodes: f64,
    /// The least of every dimension over the pods (`None`: not known). A type whose room lacks
    /// it holds no pod at all and supplies nothing: without this rule the LP would buy CPU from
    /// 2-vCPU nodes with 15 MiB of memory for pods and memory from elsewhere.
    pub smallest: Option<[f64; DIMS]>,
}

/// The LP optimum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound {
    /// USD per hour: no fleet holding the demand costs less.
    pub cost: f64,
    /// USD per hour each unit of a dimension is worth at the optimum (dual prices).
    pub unit_prices: [f64; DIMS],
    /// USD per hour one node is worth when the node count binds.
    pub node_price: f64,
}

impl Bound {
    /// What `amount` is worth at the optimum's unit prices.
    pub fn value(&self, amount: &[f64; DIMS]) -> f64 {
        amount
            .iter()
            .zip(&self.unit_prices)
            .map(|(a, p)| a * p)
            .sum()
    }
}

/// Requests in the units of [`Supply::amount`].
pub fn amount(r: &Resources) -> [f64; DIMS] {
    [
        r.cpu_millis as f64 / 1000.0,
        r.memory_bytes as f64 / f64::from(1u32 << 30),
        f64::from(r.pods),
        f64::from(r.gpus),
    ]
}

/// What a node with `allocatable` holds for pods once every node's `overhead` is paid; `None`
/// when the overhead alone does not fit.
pub fn supply(price: f64, allocatable: &Resources, overhead: &Resources) -> Option<Supply> {
    let (a, o) = (amount(allocatable), amount(overhead));
    if (0..DIMS).any(|d| o[d] > a[d]) {
        return None;
    }
    Some(Supply {
        price,
        amount: std::array::from_fn(|d| a[d] - o[d]),
    })
}

impl Demand {
    /// One more pod.
    pub fn add(&mut self, amount: &[f64; DIMS]) {
        for (d, a) in self.amount.iter_mut().zip(amount) {
            *d += a;
        }
        let s = self.smallest.get_or_insert(*amount);
        for (s, a) in s.iter_mut().zip(amount) {
            *s = s.min(*a);
        }
    }

    /// Whether a node with `supply` can hold any of the pods.
    fn usable(&self, supply: &Supply) -> bool {
        self.smallest
            .is_none_or(|m| (0..DIMS).all(|d| m[d] <= supply.amount[d] + 1e-9))
    }
}

/// One supply per type of `types`, at its cheapest offering `reqs` allow, `overhead` paid per
/// node (types it does not fit on are left out).
pub fn supplies(
    its: &InstanceTypes,
    types: &[u32],
    reqs: &Requirements,
    overhead: &Resources,
    node: Option<&NodeSettings>,
) -> Vec<Supply> {
    let zones = its.zones_admitted_by(reqs);
    types
        .iter()
        .filter_map(|&t| {
            let price = its.cheapest(t, zones, reqs)?;
            let ty = &its.types[t as usize];
            supply(
                price,
                &node.map_or(ty.allocatable, |n| n.allocatable(ty)),
                overhead,
            )
        })
        .collect()
}

/// One supply per available offering (type, zone and capacity type) `reqs` allow: the pools a
/// capacity-diversity rule counts.
pub fn offering_supplies(
    its: &InstanceTypes,
    types: &[u32],
    reqs: &Requirements,
    overhead: &Resources,
    node: Option<&NodeSettings>,
) -> Vec<Supply> {
    let zones = its.zones_admitted_by(reqs);
    let capacity = reqs.get(labels::CAPACITY_TYPE);
    let mut out = Vec::new();
    for &t in types {
        let ty = &its.types[t as usize];
        for o in &ty.offerings {
            let allowed = o.available
                && zones & (1 << o.zone) != 0
                && capacity.is_none_or(|a| a.allows(Some(capacity_type_label(o.capacity_type))));
            if let Some(s) = allowed
                .then(|| {
                    supply(
                        o.price,
                        &node.map_or(ty.allocatable, |n| n.allocatable(ty)),
                        overhead,
                    )
                })
                .flatten()
            {
                out.push(s);
            }
        }
    }
    out
}

/// The LP bound of `demand` over `supplies`; `None` when no mix of them can hold it (a dimension
/// nothing supplies) or the solver fails.
pub fn lower_bound(supplies: &[Supply], demand: &Demand) -> Option<Bound> {
    let dims: Vec<usize> = (0..DIMS).filter(|&d| demand.amount[d] > 0.0).collect();
    let nodes = demand.nodes > 0.0;
    if dims.is_empty() && !nodes {
        return Some(Bound {
            cost: 0.0,
            unit_prices: [0.0; DIMS],
            node_price: 0.0,
        });
    }
    for &d in &dims {
        if !supplies.iter().any(|s| s.amount[d] > 0.0) {
            return None;
        }
    }
    let frontier: Vec<Supply> = frontier(supplies, demand, &dims, nodes)
        .into_iter()
        .map(|i| supplies[i])
        .collect();
    if frontier.is_empty() {
        return None;
    }
    let mut lp = Problem::new(OptimizationDirection::Maximize);
    let y: Vec<_> = dims
        .iter()
        .map(|&d| lp.add_var(demand.amount[d], (0.0, f64::INFINITY)))
        .collect();
    let y_nodes = nodes.then(|| lp.add_var(demand.nodes, (0.0, f64::INFINITY)));
    for s in &frontier {
        let mut row: Vec<_> = dims
            .iter()
            .zip(&y)
            .map(|(&d, &v)| (v, s.amount[d]))
            .collect();
        if let Some(v) = y_nodes {
            row.push((v, 1.0));
        }
        lp.add_constraint(row.as_slice(), ComparisonOp::Le, s.price);
    }
    let solution = lp.solve().ok()?.into_solution().ok()?;
    let mut unit_prices = [0.0; DIMS];
    for (&d, &v) in dims.iter().zip(&y) {
        unit_prices[d] = solution.var_value(v).max(0.0);
    }
    let node_price = y_nodes.map_or(0.0, |v| solution.var_value(v).max(0.0));
    let cost = solution.objective();
    cost.is_finite().then_some(Bound {
        cost: cost.max(0.0),
        unit_prices,
        node_price,
    })
}

/// The LP bound when no single offering may supply more than `share` of the demanded CPU: a
/// capacity-diversity rule (spot capacity is reclaimed per pool, so a fleet on one pool is one
/// reclamation away from losing everything). `offerings` are one [`Supply`] per pool (type and
/// zone); without the rule the optimum would put everything on the cheapest.
pub fn diverse_lower_bound(offerings: &[Supply], demand: &Demand, share: f64) -> Option<f64> {
    let cpu_cap = demand.amount[0] * share;
    let all: Vec<usize> = (0..offerings.len()).collect();
    let most = |s: &Supply| {
        if !demand.usable(s) {
            0.0
        } else if s.amount[0] > 0.0 {
            cpu_cap / s.amount[0]
        } else {
            f64::INFINITY
        }
    };
    primal(offerings, &all, demand, most).map(|(cost, _)| cost)
}

/// The LP in its primal form over `candidates` (indices into `supplies`), each used for at most
/// `most(supply)` nodes: its cost and how many nodes of each candidate it uses. `None` when a
/// demanded dimension has no candidate that supplies it, or the solver fails.
fn primal(
    supplies: &[Supply],
    candidates: &[usize],
    demand: &Demand,
    most: impl Fn(&Supply) -> f64,
) -> Option<(f64, Vec<(usize, f64)>)> {
    let mut lp = Problem::new(OptimizationDirection::Minimize);
    let x: Vec<_> = candidates
        .iter()
        .map(|&i| lp.add_var(supplies[i].price, (0.0, most(&supplies[i]))))
        .collect();
    for d in (0..DIMS).filter(|&d| demand.amount[d] > 0.0) {
        let row: Vec<_> = x
            .iter()
            .zip(candidates)
            .filter(|(_, i)| supplies[**i].amount[d] > 0.0)
            .map(|(&v, &i)| (v, supplies[i].amount[d]))
            .collect();
        if row.is_empty() {
            return None;
        }
        lp.add_constraint(row.as_slice(), ComparisonOp::Ge, demand.amount[d]);
    }
    if demand.nodes > 0.0 {
        let row: Vec<_> = x.iter().map(|&v| (v, 1.0)).collect();
        lp.add_constraint(row.as_slice(), ComparisonOp::Ge, demand.nodes);
    }
    let solution = lp.solve().ok()?.into_solution().ok()?;
    let used = candidates
        .iter()
        .zip(&x)
        .map(|(&i, &v)| (i, solution.var_value(v)))
        .filter(|&(_, n)| n > 1e-9)
        .collect();
    Some((solution.objective(), used))
}

/// The supplies not dominated per dollar, as indices into `supplies`: a type that gives no more
/// of every demanded dimension per dollar than another can never be in the optimum, and its dual
/// constraint is implied by the other's. Keeps the LP a few dozen rows whatever the catalog's size.
fn frontier(supplies: &[Supply], demand: &Demand, dims: &[usize], nodes: bool) -> Vec<usize> {
    let per_dollar = |s: &Supply| -> Vec<f64> {
        let mut v: Vec<f64> = dims.iter().map(|&d| s.amount[d] / s.price).collect();
        if nodes {
            v.push(1.0 / s.price);
        }
        v
    };
    let mut candidates: Vec<(Vec<f64>, usize)> = supplies
        .iter()
        .enumerate()
        .filter(|(_, s)| s.price > 0.0 && s.price.is_finite() && demand.usable(s))
        .map(|(i, s)| (per_dollar(s), i))
        .collect();
    // Sorted by the sum of per-dollar values, descending: nothing later can dominate something
    // earlier, so one pass against what is kept suffices.
    candidates.sort_by(|a, b| {
        let (sa, sb): (f64, f64) = (a.0.iter().sum(), b.0.iter().sum());
        sb.total_cmp(&sa).then(a.1.cmp(&b.1))
    });
    let mut kept: Vec<(Vec<f64>, usize)> = Vec::new();
    for (v, i) in candidates {
        let dominated = kept
            .iter()
            .any(|(k, _)| k.iter().zip(&v).all(|(a, b)| a >= b));
        if !dominated {
            kept.push((v, i));
        }
    }
    kept.into_iter().map(|(_, i)| i).collect()
}

/// The LP optimum itself: how many nodes (fractional) of which supplies the cheapest fractional
/// fleet uses, as `(index into supplies, count)` — at most one type per binding dimension:
/// what a bound is made of, when one wants to read it.
pub fn mix(supplies: &[Supply], demand: &Demand) -> Option<Vec<(usize, f64)>> {
    let dims: Vec<usize> = (0..DIMS).filter(|&d| demand.amount[d] > 0.0).collect();
    let nodes = demand.nodes > 0.0;
    if dims.is_empty() && !nodes {
        return Some(Vec::new());
    }
    let frontier = frontier(supplies, demand, &dims, nodes);
    primal(supplies, &frontier, demand, |_| f64::INFINITY).map(|(_, used)| used)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A type of `cpu` vCPUs and `mem` GiB for `price`, with room for 100 pods.
    pub(super) fn supply(price: f64, cpu: f64, mem: f64) -> Supply {
        Supply {
            price,
            amount: [cpu, mem, 100.0, 0.0],
        }
    }

    fn demand(cpu: f64, mem: f64) -> Demand {
        Demand {
            amount: [cpu, mem, 0.0, 0.0],
            ..Demand::default()
        }
    }

    #[test]
    fn one_type_costs_its_binding_dimension() {
        // 4 vCPU / 8 GiB for 1 $/h; 10 vCPU and 40 GiB need 5 nodes by memory.
        let b = lower_bound(&[supply(1.0, 4.0, 8.0)], &demand(10.0, 40.0)).unwrap();
        assert!((b.cost - 5.0).abs() < 1e-6, "{b:?}");
        assert!(b.unit_prices[0].abs() < 1e-9);
        assert!((b.unit_prices[1] - 0.125).abs() < 1e-6);
    }

    #[test]
    fn mixes_a_cpu_type_and_a_memory_type_when_cheaper() {
        // c: 4 vCPU/8 GiB for 1; r: 2 vCPU/16 GiB for 1; m: 4 vCPU/16 GiB for 1.6.
        let types = [
            supply(1.0, 4.0, 8.0),
            supply(1.0, 2.0, 16.0),
            supply(1.6, 4.0, 16.0),
        ];
        // 12 vCPU, 48 GiB: 2c + 2r = 12 vCPU, 48 GiB for 4; 3m = 4.8.
        let b = lower_bound(&types, &demand(12.0, 48.0)).unwrap();
        assert!((b.cost - 4.0).abs() < 1e-6, "{b:?}");
        // Dual feasibility: no type is worth more than its price.
        for t in &types {
            assert!(b.value(&t.amount) <= t.price + 1e-9);
        }
        assert!((b.value(&[12.0, 48.0, 0.0, 0.0]) - b.cost).abs() < 1e-6);
        // The optimum itself: two of each cheap type, none of the dear balanced one.
        let mut m = mix(&types, &demand(12.0, 48.0)).unwrap();
        m.sort_by_key(|e| e.0);
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!((m[0].0, m[1].0), (0, 1));
        assert!(
            (m[0].1 - 2.0).abs() < 1e-6 && (m[1].1 - 2.0).abs() < 1e-6,
            "{m:?}"
        );
    }

    #[test]
    fn a_node_count_raises_the_bound() {
        let types = [supply(1.0, 4.0, 8.0), supply(4.0, 16.0, 32.0)];
        let mut d = demand(16.0, 32.0);
        assert!((lower_bound(&types, &d).unwrap().cost - 4.0).abs() < 1e-6);
        d.nodes = 6.0;
        let b = lower_bound(&types, &d).unwrap();
        assert!((b.cost - 6.0).abs() < 1e-6, "{b:?}");
        assert!(b.node_price > 0.0);
    }

    #[test]
    fn no_supply_of_a_demanded_dimension_has_no_bound() {
        let mut d = demand(1.0, 1.0);
        d.amount[3] = 1.0;
        assert_eq!(lower_bound(&[supply(1.0, 4.0, 8.0)], &d), None);
        assert_eq!(
            lower_bound(&[supply(1.0, 4.0, 8.0)], &Demand::default())
                .unwrap()
                .cost,
            0.0
        );
    }

    #[test]
    fn a_type_that_holds_no_pod_supplies_nothing() {
        // Cheap CPU with no memory to speak of, and cheap memory: the relaxation would mix them.
        let types = [
            supply(0.1, 2.0, 0.01),
            supply(4.0, 4.0, 700.0),
            supply(1.0, 4.0, 8.0),
        ];
        let mut d = Demand::default();
        for _ in 0..16 {
            d.add(&[0.5, 1.0, 1.0, 0.0]);
        }
        let loose = lower_bound(
            &types,
            &Demand {
                smallest: None,
                ..d
            },
        )
        .unwrap();
        let tight = lower_bound(&types, &d).unwrap();
        assert!(loose.cost < 1.0, "{loose:?}");
        // 8 vCPU and 16 GiB: two of the 4/8 type, not the nano.
        assert!((tight.cost - 2.0).abs() < 1e-6, "{tight:?}");
        assert_eq!(d.smallest, Some([0.5, 1.0, 1.0, 0.0]));
    }

    #[test]
    fn dominated_types_leave_the_lp() {
        let types = [
            supply(1.0, 4.0, 8.0),
            supply(1.1, 4.0, 8.0),
            supply(2.0, 4.0, 8.0),
            supply(1.0, 2.0, 16.0),
        ];
        assert_eq!(
            frontier(&types, &Demand::default(), &[0, 1], false).len(),
            2
        );
    }

    #[test]
    fn diversity_spreads_over_dearer_pools() {
        // The cheapest pool may supply at most half the CPU: the rest comes from the dearer.
        let pools = [supply(1.0, 4.0, 8.0), supply(2.0, 4.0, 8.0)];
        let d = demand(16.0, 32.0);
        assert!((lower_bound(&pools, &d).unwrap().cost - 4.0).abs() < 1e-6);
        let diverse = diverse_lower_bound(&pools, &d, 0.5).unwrap();
        assert!((diverse - 6.0).abs() < 1e-6, "{diverse}");
    }
}
