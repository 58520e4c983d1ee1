//! Provisioning: pending pods → the scheduling simulation → each NodePool's scoring policy ranks
//! its claims' options (one policy round per pool) → NodeClaims to create and launch in ranked
//! order.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::api::nodepool::OnFailure;
use crate::capacity::Catalog;
use crate::capacity::claim::{Claim, ClaimScores, Pod, Workload};
use crate::cloud::{CloudProvider, LaunchRequest, Offer};
use crate::policy::ScoringRound;
use crate::policy::ranking::rank;
use crate::policy::shadow::{ShadowJob, ShadowRole};
use crate::policy::{PolicyError, PolicyRegistry};
use crate::scheduling::solver::{PlannedClaim, Unschedulable};
use crate::scheduling::{ExistingNode, InstanceTypes, NodePoolSpec, PendingPod, solve_on};

/// The scoring policy used when a NodePool's own fails and `onFailure` is `Fallback`: the
/// built-in `cheapest`'s choice, computed natively ([`crate::policy::native`]).
pub const FALLBACK_SCORER: &str = crate::policy::native::NAME;

pub use crate::cluster::Pool;

/// A NodeClaim to create and launch: its name, ranked offers and pods.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub request: LaunchRequest,
    /// Indices of the pods it is planned for.
    pub pods: Vec<usize>,
    /// What the node must hold: its pods plus daemonset overhead.
    pub requests: crate::capacity::Resources,
    /// The policy whose ranking was followed.
    pub policy: String,
    /// Its score of each of `request.offers`, in their order.
    pub scores: Vec<f64>,
}

/// A NodeClaim that could not be launched, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct NotLaunched {
    pub claim: String,
    pub pods: Vec<usize>,
    pub reason: String,
}

/// What one provisioning round decided. Nothing is created or launched here: the controller
/// creates each NodeClaim object first, then launches it (crash safety by ordering).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// Pods that fit on existing or in-flight nodes: (pod, index into the existing nodes).
    pub bound: Vec<(usize, usize)>,
    pub claims: Vec<Planned>,
    pub not_launched: Vec<NotLaunched>,
    pub unschedulable: Vec<Unschedulable>,
    /// Scoring policies that failed this round: (policy, error); the NodePool's `onFailure`
    /// decided instead.
    pub policy_failures: Vec<(String, String)>,
    /// Rounds to put to the pools' shadow candidates once the launches are under way.
    pub shadow: Vec<ShadowJob>,
}

/// What one provisioning round plans over: pending `pods` go on `existing` nodes where they
/// fit, the rest on new NodeClaims of `pools` (whose `spec.in_use` the caller has counted).
pub struct Round<'a> {
    pub now: i64,
    pub pods: &'a [PendingPod],
    pub existing: &'a [ExistingNode],
    pub pools: &'a [Pool],
    pub its: &'a InstanceTypes,
    pub catalog: &'a Catalog,
    pub registry: &'a PolicyRegistry,
}

/// Plans one provisioning round: the scheduling simulation, then each pool's claims ranked by
/// its scoring policy. Offerings the cloud reports out of capacity are left out; `name` gives
/// each new NodeClaim its name from its pool's.
pub fn plan(
    round: &Round,
    cloud: &dyn CloudProvider,
    name: &mut dyn FnMut(&str) -> String,
) -> Plan {
    let its = available(round.its, cloud);
    let specs: Vec<NodePoolSpec> = round.pools.iter().map(|p| p.spec.clone()).collect();
    let solved = solve_on(round.pods, round.existing, &specs, &its);
    let mut plan = Plan {
        bound: solved.bound.clone(),
        unschedulable: solved.unschedulable.clone(),
        ..Default::default()
    };
    for u in &solved.unschedulable {
        tracing::warn!(pod = %round.pods[u.pod].name, reason = %u.reason, "could not schedule pod");
    }
    let mut by_pool: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, c) in solved.claims.iter().enumerate() {
        by_pool.entry(c.node_pool).or_default().push(i);
    }
    for (pool, claim_ids) in by_pool {
        let pool = &round.pools[pool];
        let claims: Vec<&PlannedClaim> = claim_ids.iter().map(|&i| &solved.claims[i]).collect();
        let names = claims.iter().map(|_| name(&pool.spec.name)).collect();
        let batch = PoolBatch {
            pool,
            claims,
            names,
        };
        plan_pool(round, &its, &batch, &mut plan);
    }
    plan
}

/// The instance types with the offerings the cloud reports out of capacity marked unavailable.
fn available(its: &InstanceTypes, cloud: &dyn CloudProvider) -> InstanceTypes {
    let mut its = its.clone();
    for t in &mut its.types {
        for o in &mut t.offerings {
            if cloud.unavailable(&t.name, &its.zones[o.zone as usize], o.capacity_type) {
                o.available = false;
            }
        }
    }
    its
}

/// One pool's new claims of a round, each with the NodeClaim name it gets.
struct PoolBatch<'a> {
    pool: &'a Pool,
    claims: Vec<&'a PlannedClaim>,
    names: Vec<String>,
}

/// Puts one pool's claims to its scoring policy (one round) and plans each as ranked.
fn plan_pool(round: &Round, its: &InstanceTypes, batch: &PoolBatch, plan: &mut Plan) {
    let (pool, resource) = (batch.pool, &batch.pool.resource);
    let pool_name = &pool.spec.name;
    let claims: Vec<Claim> = batch
        .claims
        .iter()
        .map(|c| {
            policy_claim(
                pool_name,
                c.pods.iter().map(|&p| &round.pods[p]),
                c.requests,
                c.options(its),
            )
        })
        .collect();
    tracing::info!(
        nodepool = %pool_name,
        nodeclaims = claims.len(),
        pods = claims.iter().map(|c| c.pods.len()).sum::<usize>(),
        "computed new nodeclaim(s) to fit pod(s)"
    );
    let scoring = ScoringRound::pruned(round.now, round.catalog, claims);
    let policies = &resource.spec.policies;
    let (policy, scores) = match score(
        round.registry,
        &policies.scoring,
        policies.on_failure,
        &scoring,
    ) {
        Ok((policy, scores, failure)) => {
            if let Some(error) = failure {
                plan.policy_failures.push((policies.scoring.clone(), error));
            }
            if let Some(candidate) = policies.shadow_of(ShadowRole::Scoring) {
                plan.shadow.push(ShadowJob::Scoring {
                    candidate: candidate.to_string(),
                    serving: policy.clone(),
                    round: Arc::new(scoring.clone()),
                    serving_scores: scores.clone(),
                    claims: batch.names.clone(),
                });
            }
            (policy, scores)
        }
        Err(reason) => {
            plan.policy_failures
                .push((policies.scoring.clone(), reason.clone()));
            for (claim, c) in batch.names.iter().zip(&batch.claims) {
                plan.not_launched.push(NotLaunched {
                    claim: claim.clone(),
                    pods: c.pods.clone(),
                    reason: reason.clone(),
                });
            }
            return;
        }
    };
    for (k, c) in batch.claims.iter().enumerate() {
        let ranking = rank(&scoring, k, &scores[k]);
        let offers = ranking
            .ranked
            .iter()
            .map(|r| {
                let launch = scoring.launch(r.option);
                Offer {
                    instance_type: launch.instance_type.to_string(),
                    zone: launch.zone.to_string(),
                    capacity_type: launch.capacity_type,
                    price: launch.price,
                }
            })
            .collect();
        plan.claims.push(Planned {
            request: LaunchRequest {
                claim: batch.names[k].clone(),
                node_pool: pool_name.clone(),
                node_class: resource.spec.template.spec.node_class_ref.name.clone(),
                offers,
            },
            pods: c.pods.clone(),
            requests: c.requests,
            policy: policy.clone(),
            scores: ranking.ranked.iter().map(|r| r.score).collect(),
        });
    }
}

/// What scored a round: the policy followed, its scores, and the pool's own policy's error
/// when a fallback scored instead.
type Scored = (String, Vec<ClaimScores>, Option<String>);

/// Scores with the pool's policy; on failure, reports it and falls back or blocks.
fn score(
    registry: &PolicyRegistry,
    name: &str,
    on_failure: OnFailure,
    round: &ScoringRound,
) -> Result<Scored, String> {
    let attempt = |policy: &str| -> Result<_, PolicyError> {
        registry.call(policy, "score", |p| p.score(round))
    };
    match attempt(name) {
        Ok(scores) => Ok((name.to_string(), scores, None)),
        Err(err) => {
            registry.report_failure(name, &err);
            match on_failure {
                OnFailure::Block => Err(format!(
                    "scoring policy failed and onFailure is Block: {err}"
                )),
                OnFailure::Fallback => {
                    tracing::warn!(policy = name, fallback = FALLBACK_SCORER, error = %err, "scoring policy failed; falling back");
                    registry.report_fallback(name, FALLBACK_SCORER);
                    // A Policy resource named like the fallback (its own configuration) decides
                    // as it always has; else, or when it fails too, the host's own code, which
                    // cannot time out or trap with the policy that just did.
                    if name != FALLBACK_SCORER && registry.applied(FALLBACK_SCORER) {
                        match attempt(FALLBACK_SCORER) {
                            Ok(s) => {
                                return Ok((FALLBACK_SCORER.to_string(), s, Some(err.to_string())));
                            }
                            Err(e) => registry.report_failure(FALLBACK_SCORER, &e),
                        }
                    }
                    Ok((
                        FALLBACK_SCORER.to_string(),
                        crate::policy::native::cheapest(round),
                        Some(err.to_string()),
                    ))
                }
            }
        }
    }
}

/// A claim as the policy sees it: pods grouped by the workload that owns them (a bare pod is
/// its own).
fn policy_claim<'a>(
    node_pool: &str,
    pods: impl Iterator<Item = &'a PendingPod>,
    requests: crate::capacity::Resources,
    options: Vec<u32>,
) -> Claim {
    let mut workloads: Vec<Workload> = Vec::new();
    let mut index: BTreeMap<String, u32> = BTreeMap::new();
    let pods = pods
        .map(|p| {
            let (namespace, pod) = p.name.split_once('/').unwrap_or(("default", &p.name));
            let owner = p.owner.clone().unwrap_or_else(|| format!("Pod/{pod}"));
            let key = format!("{namespace}/{owner}");
            let w = *index.entry(key).or_insert_with(|| {
                workloads.push(Workload {
                    namespace: namespace.to_string(),
                    owner,
                    labels: p.labels.clone(),
                });
                (workloads.len() - 1) as u32
            });
            Pod {
                workload: w,
                requests: p.requests,
                priority: p.priority,
            }
        })
        .collect();
    Claim {
        node_pool: node_pool.to_string(),
        workloads,
        pods,
        requests,
        options,
    }
}
