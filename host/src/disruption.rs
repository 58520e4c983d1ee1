//! Disruption: which nodes to remove or replace, and whether it is safe to.
//!
//! The host finds candidates (empty, under-used, drifted, expired), computes for each the moves
//! that are possible — where its pods would go (the scheduling simulation against the rest of the
//! cluster) and, if they need one new node, the cheapest replacement — and hands them to the
//! NodePool's consolidation policy, which chooses and orders. Every safety rule is the host's:
//! candidates whose pods a PodDisruptionBudget, `dovetail.sh/do-not-disrupt` or a missing
//! controller protect are never offered; an executed move still has to pass the NodePool's
//! disruption budgets and a fresh simulation that counts every move already accepted. What the
//! host refuses is logged as overruled.

pub mod budget;
mod candidates;
mod enforce;
mod gates;

use candidates::candidates;
pub use gates::{FeatureGates, reason_label};

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::api::nodepool::{ConsolidationPolicy, OnFailure};
use crate::capacity::CapacityType;
use crate::cloud::Offer;
use crate::cluster::DisruptionReason;
use crate::cluster::Pool;
use crate::cluster::consolidation::{Action, ConsolidationRound, Move, Replacement};
use crate::cluster::{Cluster, Node, Pod, node_labels};
use crate::policy::PolicyRegistry;
use crate::policy::shadow::{ShadowJob, ShadowRole};
use crate::scheduling::model::{ExistingNode, PendingPod, capacity_type_label};
use crate::scheduling::{Admitted, InstanceTypes, NodePoolSpec, solve_excluding};

/// The consolidation policy used when a NodePool's own fails and `onFailure` is `Fallback`.
pub const FALLBACK_CONSOLIDATOR: &str = "balanced";

/// A spot node is only replaced by another spot node when at least this many cheaper spot
/// instance types could hold its pods (Karpenter's rule): a narrow set would pick the pool most
/// likely to be interrupted next.
pub const MIN_SPOT_TO_SPOT_TYPES: usize = 15;

/// What the host decided to carry out.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub node_pool: String,
    pub nodes: Vec<String>,
    pub reason: DisruptionReason,
    /// Launched, and Ready, before the nodes are drained.
    pub replacement: Option<Offer>,
    pub savings_per_hour: f64,
    /// The policy whose choice this is.
    pub policy: String,
}

/// Something decided against, and why.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// A candidate the host does not offer to the policy (PDB, do-not-disrupt, no controller).
    Blocked { node: String, why: String },
    /// A move the policy chose to keep.
    Kept { nodes: Vec<String>, why: String },
    /// A move the policy chose that the host refused.
    Overruled { nodes: Vec<String>, why: String },
    /// The policy failed; the fallback (or nothing) decided instead.
    PolicyFailed { policy: String, error: String },
}

/// One disruption pass.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    pub commands: Vec<Command>,
    pub notes: Vec<Note>,
    /// Moves offered to policies.
    pub moves_offered: usize,
    /// Candidates found (protected and held-back ones excluded).
    pub candidates: usize,
    pub timings: Timings,
    /// Rounds to put to the pools' shadow candidates once the moves are under way.
    pub shadow: Vec<ShadowJob>,
    /// NodePools with lighter nodes settling this pass ([`held_back`]): `true` where their
    /// busier nodes were held back, `false` where the hold has run its course.
    pub holding: Vec<(String, bool)>,
}

/// Where a pass spent its time.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Timings {
    /// Finding candidates and simulating their moves: until the first policy has its choices.
    pub moves: std::time::Duration,
    /// Consolidation policy calls.
    pub policy: std::time::Duration,
    /// Budget checks and re-simulation of the chosen moves.
    pub enforce: std::time::Duration,
}

/// A candidate with what makes it one.
struct Candidate<'a> {
    node: &'a Node,
    reasons: Vec<DisruptionReason>,
    pods: Vec<&'a Pod>,
    cost: f64,
}

/// Everything one pass reads, computed once.
struct Pass<'a> {
    cluster: &'a Cluster,
    its: &'a InstanceTypes,
    now: i64,
    /// The SpotToSpotConsolidation gate.
    spot_to_spot: bool,
    specs: Vec<NodePoolSpec>,
    /// What `specs` admit, for every what-if of the pass.
    admitted: Admitted,
    /// Schedulable nodes (not being deleted), then replacements accepted this pass. Pods of
    /// accepted moves are counted on the nodes they would move to.
    existing: Vec<ExistingNode>,
    /// Per `existing` node: accepted to leave in this pass.
    gone: Vec<bool>,
    index: HashMap<String, usize>,
    by_node: &'a BTreeMap<&'a str, Vec<&'a Pod>>,
}

/// Finds candidates, asks each NodePool's consolidation policy, and keeps what is safe.
/// `holding_since`: per NodePool, since when its busier nodes have been held back ([`held_back`]).
pub fn decide(
    cluster: &Cluster,
    its: &InstanceTypes,
    registry: &PolicyRegistry,
    now: i64,
    gates: &FeatureGates,
    holding_since: &BTreeMap<String, i64>,
) -> Decision {
    let by_node = cluster.pods_by_node();
    let mut pass = Pass::new(cluster, its, now, gates, &by_node);
    let allowance = cluster.pdb_allowance();
    let mut decision = Decision::default();
    // Nodes going away: already deleting, plus those accepted this pass.
    let mut leaving: BTreeSet<String> = cluster
        .nodes
        .values()
        .filter(|n| n.deletion.is_some())
        .map(|n| n.name.clone())
        .collect();
    for pool in &cluster.pools {
        let started = std::time::Instant::now();
        let mut candidates = candidates(cluster, pool, &by_node, &allowance, now, &mut decision);
        let since = holding_since.get(&pool.spec.name).copied();
        let settling = Settling {
            by_node: &by_node,
            allowance: &allowance,
            now,
            since,
        };
        if let Some(held) = held_back(cluster, pool, &settling, &mut candidates) {
            decision.holding.push((pool.spec.name.clone(), held));
        }
        decision.candidates += candidates.len();
        if candidates.is_empty() {
            decision.timings.moves += started.elapsed();
            continue;
        }
        // Budgets shape what is offered: a move the budget cannot take now is not a choice.
        let room = Room::in_pool(cluster, pool, &leaving, now);
        let (round, replacements) = pass.moves(pool, &candidates, &room);
        decision.timings.moves += started.elapsed();
        if round.moves.is_empty() {
            continue;
        }
        decision.moves_offered += round.moves.len();
        let started = std::time::Instant::now();
        let (policy, actions, answered) = consolidate(registry, pool, &round, &mut decision);
        decision.timings.policy += started.elapsed();
        // A shadow is judged beside an answer: with none (Block, or the fallback failing too)
        // there is nothing to compare it with.
        if let Some(candidate) = pool
            .resource
            .spec
            .policies
            .shadow_of(ShadowRole::Consolidation)
            .filter(|_| answered)
        {
            decision.shadow.push(ShadowJob::Consolidation {
                candidate: candidate.to_string(),
                serving: policy.clone(),
                round: std::sync::Arc::new(round.clone()),
                serving_actions: actions.clone(),
                node_pool: pool.spec.name.clone(),
            });
        }
        let started = std::time::Instant::now();
        let answered = enforce::Answered {
            pool,
            candidates: &candidates,
            round: &round,
            replacements: &replacements,
            policy: &policy,
            actions: &actions,
        };
        pass.enforce(&answered, &mut leaving, &mut decision);
        decision.timings.enforce += started.elapsed();
    }
    decision
}

/// What [`held_back`] reads besides the cluster.
struct Settling<'s, 'p> {
    by_node: &'s BTreeMap<&'p str, Vec<&'p Pod>>,
    allowance: &'s [u32],
    now: i64,
    /// Since when the pool's busier nodes have been held back, if they have.
    since: Option<i64>,
}

/// Holds back the busier underutilized candidates while lighter nodes of the pool settle. A
/// burst of departures (a Deployment scaled down) leaves nodes lightly used that become
/// candidates only once `consolidateAfter` has passed since their pods changed; meanwhile the
/// untouched, busier nodes are candidates, and draining them into the room the departures left
/// moves every one of their pods where removing the light ones would move few or none (a
/// simulated scale-down of 20,000 pods from ten Deployments evicted 8,000 pods from 800 full
/// nodes, where the 800 nodes it had emptied could go without an eviction). A candidate is
/// held back while a settling node of the pool — one that could itself go: not protected, not
/// a replacement a deletion waits for — holds fewer pods, within one `consolidateAfter` from
/// the pass that first held (`since`; the hold ends at the first pass after that): a pool whose
/// pods churn without pause is still consolidated, and is not held again until a pass finds no
/// lighter node settling. Empty nodes, drift and expiry are never held. Returns whether it held
/// (`false`: a window is open but held nothing, or has ended), `None` when no window is open
/// and none was needed.
fn held_back(
    cluster: &Cluster,
    pool: &Pool,
    s: &Settling,
    candidates: &mut Vec<Candidate<'_>>,
) -> Option<bool> {
    let spec = &pool.resource.spec;
    let after = crate::api::duration::parse(&spec.disruption.consolidate_after)
        .ok()
        .flatten()
        .map(|d| d.as_secs() as i64)
        .filter(|&d| d > 0)?;
    if spec.disruption.consolidation_policy != ConsolidationPolicy::WhenEmptyOrUnderutilized {
        return None;
    }
    let awaited: BTreeSet<&str> = cluster
        .nodes
        .values()
        .filter_map(|n| n.deletion.as_ref()?.replacement.as_deref())
        .collect();
    let pods_on = |n: &Node| s.by_node.get(n.name.as_str()).cloned().unwrap_or_default();
    let lightest_settling = cluster
        .nodes
        .values()
        .filter(|n| {
            n.instance.node_pool == pool.spec.name
                && n.deletion.is_none()
                && n.ready_at.is_some()
                && s.now - n.last_pod_change < after
                && !awaited.contains(n.name.as_str())
        })
        .filter_map(|n| {
            let pods = pods_on(n);
            candidates::protected(cluster, n, &pods, s.allowance)
                .is_none()
                .then_some(pods.len())
        })
        .min()?;
    let busier = |c: &Candidate| {
        c.reasons
            .iter()
            .all(|r| *r == DisruptionReason::Underutilized)
            && c.pods.len() > lightest_settling
    };
    // A window once opened runs on while lighter nodes are settling, whether or not a pass
    // finds busier candidates in it: no wave of them waits longer than its end.
    if !candidates.iter().any(busier) || s.since.is_some_and(|since| s.now - since >= after) {
        return s.since.map(|_| false);
    }
    candidates.retain(|c| !busier(c));
    Some(true)
}

impl<'a> Pass<'a> {
    /// The pass over a snapshot, with the pods of nodes already draining counted where they
    /// would go: they will need the room too.
    fn new(
        cluster: &'a Cluster,
        its: &'a InstanceTypes,
        now: i64,
        gates: &FeatureGates,
        by_node: &'a BTreeMap<&'a str, Vec<&'a Pod>>,
    ) -> Self {
        let (existing, names) = cluster.schedulable_nodes(its, |_| false);
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let specs = cluster.pool_specs(its);
        let mut pass = Pass {
            cluster,
            its,
            now,
            spot_to_spot: gates.spot_to_spot_consolidation,
            admitted: Admitted::new(&specs, its),
            specs,
            gone: vec![false; existing.len()],
            existing,
            index,
            by_node,
        };
        let draining: Vec<PendingPod> = cluster
            .nodes
            .values()
            .filter(|n| n.deletion.is_some())
            .flat_map(|n| by_node.get(n.name.as_str()).into_iter().flatten())
            .map(|p| PendingPod::clone(&p.spec))
            .collect();
        if !draining.is_empty() {
            let plan = solve_excluding(&draining, &pass.existing, &pass.gone, &[], its, None);
            pass.place(&draining, &plan.bound);
        }
        pass
    }
}

/// A move before it is offered: candidates (indices), the replacement offering (type, offering)
/// if any, and the main reason.
struct Proposal {
    nodes: Vec<usize>,
    replacement: Option<(u32, usize)>,
    reason: DisruptionReason,
}

/// How many more nodes each reason's budget lets go in this pass.
struct Room {
    empty: usize,
    underutilized: usize,
    drifted: usize,
    expired: usize,
}

impl Room {
    /// What `pool`'s budgets allow now, less its nodes already `leaving`.
    fn in_pool(cluster: &Cluster, pool: &Pool, leaving: &BTreeSet<String>, now: i64) -> Room {
        let total = cluster
            .nodes
            .values()
            .filter(|n| n.instance.node_pool == pool.spec.name)
            .count() as u32;
        let disrupting = cluster
            .nodes
            .values()
            .filter(|n| n.instance.node_pool == pool.spec.name && leaving.contains(&n.name))
            .count() as u32;
        let left = |reason| {
            budget::allowed(&pool.resource.spec.disruption.budgets, total, reason, now)
                .unwrap_or(0)
                .saturating_sub(disrupting) as usize
        };
        Room {
            empty: left(DisruptionReason::Empty),
            underutilized: left(DisruptionReason::Underutilized),
            drifted: left(DisruptionReason::Drifted),
            expired: left(DisruptionReason::Expired),
        }
    }

    fn of(&self, reason: DisruptionReason) -> usize {
        match reason {
            DisruptionReason::Empty => self.empty,
            DisruptionReason::Underutilized => self.underutilized,
            DisruptionReason::Drifted => self.drifted,
            DisruptionReason::Expired => self.expired,
        }
    }
}

/// Where a set of nodes' pods would go.
enum Relocation {
    /// Onto the remaining nodes.
    Fits,
    /// Onto the remaining nodes plus one new node: its feasible (type, offering), cheapest first.
    Replace(Vec<(u32, usize)>),
    /// Not without more than one new node, or not at all.
    No,
}

impl Pass<'_> {
    fn relocate(&self, pods: &[PendingPod], excluded: &[bool]) -> Relocation {
        // Nodes leaving free their share of the NodePools' limits.
        let mut specs = self.specs.clone();
        for (i, gone) in excluded.iter().enumerate() {
            if let (true, Some(n)) = (*gone, self.existing.get(i))
                && let Some(p) = n.node_pool
                && let Some(node) = self.cluster.nodes.get(&n.name)
            {
                let (cpu, mem) = self.its.types[node.type_index as usize].capacity;
                specs[p].in_use.cpu_millis = specs[p].in_use.cpu_millis.saturating_sub(cpu);
                specs[p].in_use.memory_bytes = specs[p].in_use.memory_bytes.saturating_sub(mem);
            }
        }
        let plan = solve_excluding(
            pods,
            &self.existing,
            excluded,
            &specs,
            self.its,
            Some(&self.admitted),
        );
        if !plan.unschedulable.is_empty() || plan.claims.len() > 1 {
            return Relocation::No;
        }
        let Some(claim) = plan.claims.first() else {
            return Relocation::Fits;
        };
        let mut options: Vec<(u32, usize)> = claim
            .options(self.its)
            .into_iter()
            .map(|o| {
                let (t, off) = crate::capacity::unpack(o);
                (t as u32, off)
            })
            .collect();
        options.sort_by(|a, b| self.price(*a).total_cmp(&self.price(*b)));
        Relocation::Replace(options)
    }

    fn price(&self, (t, o): (u32, usize)) -> f64 {
        self.its.types[t as usize].offerings[o].price
    }

    /// Counts pods on the nodes the simulation bound them to.
    fn place(&mut self, pods: &[PendingPod], bound: &[(usize, usize)]) {
        for &(p, n) in bound {
            let node = &mut self.existing[n];
            node.requested = crate::scheduling::model::add(&node.requested, &pods[p].requests);
            node.pods
                .push((pods[p].name.clone(), pods[p].labels.clone()));
        }
    }

    fn mask(&self, nodes: &[&Node]) -> Vec<bool> {
        let mut m = self.gone.clone();
        for n in nodes {
            if let Some(&i) = self.index.get(&n.name) {
                m[i] = true;
            }
        }
        m
    }

    /// The moves of a pool's candidates, and each move's replacement offering.
    fn moves(
        &self,
        pool: &Pool,
        candidates: &[Candidate],
        room: &Room,
    ) -> (ConsolidationRound, Vec<Option<(u32, usize)>>) {
        let mut moves = Vec::new();
        let mut chosen = Vec::new();
        let mut push = |nodes: &[usize], replacement: Option<(u32, usize)>, reason| {
            if nodes.len() > room.of(reason) {
                return;
            }
            let price: f64 = nodes
                .iter()
                .map(|&i| candidates[i].node.instance.offer.price)
                .sum();
            let new_price = replacement.map_or(0.0, |r| self.price(r));
            moves.push(Move {
                nodes: nodes.iter().map(|&i| i as u32).collect(),
                replacement: replacement.map(|r| self.replacement(r)),
                savings_per_hour: price - new_price,
                disruption_cost: nodes.iter().map(|&i| candidates[i].cost).sum(),
                reason,
            });
            chosen.push(replacement);
        };
        for (i, c) in candidates.iter().enumerate() {
            if let Some((replacement, reason)) = self.single_move(c) {
                push(&[i], replacement, reason);
            }
        }
        if let Some(p) = self.multi_move(candidates, room) {
            push(&p.nodes, p.replacement, p.reason);
        }
        let round = ConsolidationRound {
            now: self.now,
            candidates: candidates.iter().map(|c| self.candidate(pool, c)).collect(),
            moves,
        };
        (round, chosen)
    }

    /// A candidate alone: deleted when its pods fit elsewhere (or it is empty), else replaced
    /// when a cheaper node holds them — or, drifted or expired, by whatever holds them.
    fn single_move(&self, c: &Candidate) -> Option<(Option<(u32, usize)>, DisruptionReason)> {
        let required = c
            .reasons
            .iter()
            .copied()
            .find(|r| matches!(r, DisruptionReason::Drifted | DisruptionReason::Expired));
        if c.pods.is_empty() {
            return Some((None, required.unwrap_or(DisruptionReason::Empty)));
        }
        if required.is_none() && !c.reasons.contains(&DisruptionReason::Underutilized) {
            return None;
        }
        let pods: Vec<PendingPod> = c.pods.iter().map(|p| PendingPod::clone(&p.spec)).collect();
        let relocation = self.relocate(&pods, &self.mask(&[c.node]));
        match (relocation, required) {
            (Relocation::Fits, Some(reason)) => Some((None, reason)),
            // A required replacement may be of the same type: it is the same node, new.
            (Relocation::Replace(options), Some(reason)) => {
                Some((options.first().copied(), reason))
            }
            (Relocation::Fits, None) => Some((None, DisruptionReason::Underutilized)),
            (Relocation::Replace(options), None) => self
                .cheaper(&[c.node], &options)
                .map(|r| (Some(r), DisruptionReason::Underutilized)),
            (Relocation::No, _) => None,
        }
    }

    /// Several nodes into zero or one: the longest prefix, by disruption cost, that works (a
    /// binary search over its length, within the budgets' room).
    fn multi_move(&self, candidates: &[Candidate], room: &Room) -> Option<Proposal> {
        let mut order: Vec<usize> = (0..candidates.len())
            .filter(|&i| {
                let r = &candidates[i].reasons;
                r.contains(&DisruptionReason::Underutilized) || r.contains(&DisruptionReason::Empty)
            })
            .collect();
        order.sort_by(|&a, &b| {
            candidates[a]
                .cost
                .total_cmp(&candidates[b].cost)
                .then(candidates[a].node.name.cmp(&candidates[b].node.name))
        });
        let cap = order.len().min(room.empty.max(room.underutilized));
        if cap < 2 {
            return None;
        }
        let (mut lo, mut hi) = (2, cap);
        let mut best = None;
        while lo <= hi {
            let mid = (lo + hi) / 2;
            let nodes: Vec<&Node> = order[..mid].iter().map(|&i| candidates[i].node).collect();
            let pods: Vec<PendingPod> = order[..mid]
                .iter()
                .flat_map(|&i| {
                    candidates[i]
                        .pods
                        .iter()
                        .map(|p| PendingPod::clone(&p.spec))
                })
                .collect();
            let ok = match self.relocate(&pods, &self.mask(&nodes)) {
                Relocation::Fits => Some(None),
                Relocation::Replace(options) => self.cheaper(&nodes, &options).map(Some),
                Relocation::No => None,
            };
            match ok {
                Some(r) => {
                    best = Some((mid, r));
                    lo = mid + 1;
                }
                None => hi = mid - 1,
            }
        }
        let (k, r) = best?;
        let all_empty = order[..k].iter().all(|&i| candidates[i].pods.is_empty());
        let reason = if all_empty && r.is_none() {
            DisruptionReason::Empty
        } else {
            DisruptionReason::Underutilized
        };
        order.truncate(k);
        Some(Proposal {
            nodes: order,
            replacement: r,
            reason,
        })
    }

    /// The cheapest replacement worth making: another instance type than the nodes', cheaper than
    /// them together, and spot-to-spot only with a wide enough set of cheaper spot types.
    fn cheaper(&self, nodes: &[&Node], options: &[(u32, usize)]) -> Option<(u32, usize)> {
        let price: f64 = nodes.iter().map(|n| n.instance.offer.price).sum();
        let types: BTreeSet<&str> = nodes
            .iter()
            .map(|n| n.instance.offer.instance_type.as_str())
            .collect();
        let all_spot = nodes
            .iter()
            .all(|n| n.instance.offer.capacity_type == CapacityType::Spot);
        let cheaper_spot_types: BTreeSet<u32> = options
            .iter()
            .filter(|&&o| {
                self.price(o) < price
                    && self.its.types[o.0 as usize].offerings[o.1].capacity_type
                        == CapacityType::Spot
            })
            .map(|o| o.0)
            .collect();
        options.iter().copied().find(|&o| {
            let t = &self.its.types[o.0 as usize];
            let spot = t.offerings[o.1].capacity_type == CapacityType::Spot;
            self.price(o) < price
                && !types.contains(t.name.as_str())
                && !(all_spot
                    && spot
                    && (!self.spot_to_spot || cheaper_spot_types.len() < MIN_SPOT_TO_SPOT_TYPES))
        })
    }

    fn replacement(&self, (t, o): (u32, usize)) -> Replacement {
        let ty = &self.its.types[t as usize];
        let off = &ty.offerings[o];
        Replacement {
            instance_type: ty.name.clone(),
            capacity_type: off.capacity_type,
            zone: self.its.zones[off.zone as usize].clone(),
            price: off.price,
        }
    }

    fn candidate(&self, pool: &Pool, c: &Candidate) -> crate::cluster::consolidation::Candidate {
        let n = c.node;
        crate::cluster::consolidation::Candidate {
            name: n.name.clone(),
            node_pool: pool.spec.name.clone(),
            instance_type: n.instance.offer.instance_type.clone(),
            capacity_type: n.instance.offer.capacity_type,
            zone: n.instance.offer.zone.clone(),
            price: n.instance.offer.price,
            age_seconds: (self.now - n.launched_at).max(0) as u64,
            allocatable: pool
                .spec
                .allocatable(&self.its.types[n.type_index as usize]),
            // The candidate's pods are at hand: no scan of every pod in the cluster.
            requested: c.pods.iter().fold(pool.spec.daemonset_overhead, |r, p| {
                crate::scheduling::model::add(&r, &p.spec.requests)
            }),
            pods: c.pods.len() as u32,
            reasons: c.reasons.clone(),
        }
    }
}

/// Asks the pool's consolidation policy; on failure, the fallback (or nothing, with `Block`).
/// Returns who decided, the actions, and whether a policy answered at all.
fn consolidate(
    registry: &PolicyRegistry,
    pool: &Pool,
    round: &ConsolidationRound,
    decision: &mut Decision,
) -> (String, Vec<Action>, bool) {
    let policies = &pool.resource.spec.policies;
    let name = &policies.consolidation;
    let attempt = |n: &str| registry.call(n, "consolidate", |p| p.consolidate(round));
    match attempt(name) {
        Ok(actions) => (name.clone(), actions, true),
        Err(err) => {
            registry.report_failure(name, &err);
            decision.notes.push(Note::PolicyFailed {
                policy: name.clone(),
                error: err.to_string(),
            });
            tracing::warn!(policy = %name, error = %err, on_failure = ?policies.on_failure, "consolidation policy failed");
            match policies.on_failure {
                OnFailure::Block => (name.clone(), Vec::new(), false),
                OnFailure::Fallback => {
                    registry.report_fallback(name, FALLBACK_CONSOLIDATOR);
                    match attempt(FALLBACK_CONSOLIDATOR) {
                        Ok(actions) => (FALLBACK_CONSOLIDATOR.to_string(), actions, true),
                        Err(e) => {
                            registry.report_failure(FALLBACK_CONSOLIDATOR, &e);
                            decision.notes.push(Note::PolicyFailed {
                                policy: FALLBACK_CONSOLIDATOR.into(),
                                error: e.to_string(),
                            });
                            (FALLBACK_CONSOLIDATOR.to_string(), Vec::new(), false)
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Deletion;

    fn pool(consolidate_after: &str) -> Pool {
        let resource: crate::api::NodePool = serde_json::from_value(serde_json::json!({
            "apiVersion": "dovetail.sh/v1", "kind": "NodePool", "metadata": {"name": "default"},
            "spec": {"template": {"spec": {"requirements": [],
                         "nodeClassRef": {"group": "aws.dovetail.sh", "kind": "EC2NodeClass", "name": "default"}}},
                     "disruption": {"consolidationPolicy": "WhenEmptyOrUnderutilized",
                                    "consolidateAfter": consolidate_after}}
        }))
        .unwrap();
        Pool {
            resource,
            spec: NodePoolSpec::new("default", Default::default()),
        }
    }

    /// Node `full` (settled long ago) with ten pods, node `light` with two, whose pods changed
    /// at 100.
    fn cluster() -> Cluster {
        let mut c = Cluster::default();
        for (node, pods, changed) in [("full", 10, 0), ("light", 2, 100)] {
            let mut n = Node::example(node);
            n.last_pod_change = changed;
            c.nodes.insert(node.into(), n);
            for i in 0..pods {
                let name = format!("{node}-{i}");
                c.pods.insert(
                    name.clone(),
                    Pod {
                        spec: PendingPod::new(&name, &[("app", "web")], 180, 128 << 20).into(),
                        owner: Some("default/web".into()),
                        created_at: 0,
                        node: Some(node.into()),
                        running_since: Some(0),
                        ready: true,
                        do_not_disrupt: false,
                    },
                );
            }
        }
        c
    }

    /// What `held_back` answers at `now` for a pool of `consolidate_after`, holding since
    /// `since`, and the candidates it leaves of `full` (underutilized).
    fn hold(
        c: &Cluster,
        consolidate_after: &str,
        now: i64,
        since: Option<i64>,
    ) -> (Option<bool>, usize) {
        let by_node = c.pods_by_node();
        let full = &c.nodes["full"];
        let mut candidates = vec![Candidate {
            node: full,
            reasons: vec![DisruptionReason::Underutilized],
            pods: by_node["full"].clone(),
            cost: 10.0,
        }];
        let settling = Settling {
            by_node: &by_node,
            allowance: &[],
            now,
            since,
        };
        let held = held_back(c, &pool(consolidate_after), &settling, &mut candidates);
        (held, candidates.len())
    }

    #[test]
    fn a_busier_node_waits_while_a_lighter_one_settles_for_one_consolidate_after_at_most() {
        let c = cluster();
        // `light` changed at 100: settling until 160.
        assert_eq!(hold(&c, "60s", 130, None), (Some(true), 0));
        assert_eq!(hold(&c, "60s", 150, Some(130)), (Some(true), 0));
        // Held since 90 (a lighter node settled before `light`): the hold has run its course
        // at 150, though `light` is still settling — a pool whose pods never stop changing is
        // consolidated.
        assert_eq!(hold(&c, "60s", 155, Some(90)), (Some(false), 1));
        // `light` has settled: nothing to wait for, and the window closes.
        assert_eq!(hold(&c, "60s", 200, Some(130)), (None, 1));
        // A window open while no candidate is busier stays open (and is not restarted), so a
        // busier node that comes and goes as a candidate waits no longer than its end.
        let mut lighter = cluster();
        lighter
            .pods
            .retain(|name, _| !name.starts_with("full-") || name.as_str() < "full-2");
        assert_eq!(hold(&lighter, "60s", 130, Some(120)), (Some(false), 1));
        assert_eq!(hold(&lighter, "60s", 130, None), (None, 1));
    }

    #[test]
    fn nothing_is_held_without_a_consolidate_after_or_a_lighter_node_that_could_go() {
        let c = cluster();
        assert_eq!(hold(&c, "Never", 130, None), (None, 1));
        assert_eq!(hold(&c, "0s", 130, None), (None, 1));
        // A lighter node that will not go is nothing to wait for: do-not-disrupt…
        let mut protected = cluster();
        protected.nodes.get_mut("light").unwrap().do_not_disrupt = true;
        assert_eq!(hold(&protected, "60s", 130, None), (None, 1));
        // …or the replacement a deletion waits for.
        let mut awaited = cluster();
        let mut old = Node::example("old");
        old.deletion = Some(Deletion {
            reason: Some(DisruptionReason::Drifted),
            since: 90,
            replacement: Some("light".into()),
            policy: None,
        });
        awaited.nodes.insert("old".into(), old);
        assert_eq!(hold(&awaited, "60s", 130, None), (None, 1));
        // A candidate no busier than the lightest settling node is not held.
        let mut even = cluster();
        even.nodes.get_mut("full").unwrap().last_pod_change = 0;
        even.pods
            .retain(|name, _| !name.starts_with("full-") || name.as_str() < "full-2");
        assert_eq!(hold(&even, "60s", 130, None), (None, 1));
    }
}
