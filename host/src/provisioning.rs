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
use crate::scheduling::solver::Unschedulable;
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

/// Plans one provisioning round: pending `pods` go on `existing` nodes where they fit, the rest
/// on new NodeClaims of `pools` (whose `spec.in_use` the caller has counted), each ranked by its
/// pool's scoring policy. Offerings the cloud reports out of capacity are left out; `name`
/// gives each new NodeClaim its name from its pool's.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    now: i64,
    pods: &[PendingPod],
    existing: &[ExistingNode],
    pools: &[Pool],
    its: &InstanceTypes,
    catalog: &Catalog,
    registry: &PolicyRegistry,
    cloud: &dyn CloudProvider,
    name: &mut dyn FnMut(&str) -> String,
) -> Plan {
    let mut its = its.clone();
    for t in &mut its.types {
        for o in &mut t.offerings {
            if cloud.unavailable(&t.name, &its.zones[o.zone as usize], o.capacity_type) {
                o.available = false;
            }
        }
    }
    let specs: Vec<NodePoolSpec> = pools.iter().map(|p| p.spec.clone()).collect();
    let solved = solve_on(pods, existing, &specs, &its);
    let mut plan = Plan {
        bound: solved.bound.clone(),
        unschedulable: solved.unschedulable.clone(),
        ..Default::default()
    };
    for u in &solved.unschedulable {
        tracing::warn!(pod = %pods[u.pod].name, reason = %u.reason, "could not schedule pod");
    }

    let mut by_pool: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, c) in solved.claims.iter().enumerate() {
        by_pool.entry(c.node_pool).or_default().push(i);
    }
    for (pool, claim_ids) in by_pool {
        let resource = &pools[pool].resource;
        let pool_name = &pools[pool].spec.name;
        let claims: Vec<Claim> = claim_ids
            .iter()
            .map(|&i| {
                let c = &solved.claims[i];
                policy_claim(
                    pool_name,
                    c.pods.iter().map(|&p| &pods[p]),
                    c.requests,
                    c.options(&its),
                )
            })
            .collect();
        tracing::info!(
            nodepool = %pool_name,
            nodeclaims = claims.len(),
            pods = claims.iter().map(|c| c.pods.len()).sum::<usize>(),
            "computed new nodeclaim(s) to fit pod(s)"
        );
        let round = ScoringRound::pruned(now, catalog, claims);
        let names = claim_ids
            .iter()
            .map(|_| name(pool_name))
            .collect::<Vec<_>>();
        let scored = score(
            registry,
            &resource.spec.policies.scoring,
            resource.spec.policies.on_failure,
            &round,
        );
        let (policy, scores) = match scored {
            Ok((policy, scores, failure)) => {
                if let Some(error) = failure {
                    plan.policy_failures
                        .push((resource.spec.policies.scoring.clone(), error));
                }
                if let Some(candidate) = resource.spec.policies.shadow_of(ShadowRole::Scoring) {
                    plan.shadow.push(ShadowJob::Scoring {
                        candidate: candidate.to_string(),
                        serving: policy.clone(),
                        round: Arc::new(round.clone()),
                        serving_scores: scores.clone(),
                        claims: names.clone(),
                    });
                }
                (policy, scores)
            }
            Err(reason) => {
                plan.policy_failures
                    .push((resource.spec.policies.scoring.clone(), reason.clone()));
                for (k, &i) in claim_ids.iter().enumerate() {
                    plan.not_launched.push(NotLaunched {
                        claim: names[k].clone(),
                        pods: solved.claims[i].pods.clone(),
                        reason: reason.clone(),
                    });
                }
                continue;
            }
        };
        for (k, &i) in claim_ids.iter().enumerate() {
            let ranking = rank(&round, k, &scores[k]);
            let offers = ranking
                .ranked
                .iter()
                .map(|r| {
                    let launch = round.launch(r.option);
                    Offer {
                        instance_type: launch.instance_type.to_string(),
                        zone: launch.zone.to_string(),
                        capacity_type: launch.capacity_type,
                        price: launch.price,
                    }
                })
                .collect();
            let scores = ranking.ranked.iter().map(|r| r.score).collect();
            plan.claims.push(Planned {
                request: LaunchRequest {
                    claim: names[k].clone(),
                    node_pool: pool_name.clone(),
                    node_class: resource.spec.template.spec.node_class_ref.name.clone(),
                    offers,
                },
                pods: solved.claims[i].pods.clone(),
                requests: solved.claims[i].requests,
                policy: policy.clone(),
                scores,
            });
        }
    }
    plan
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
