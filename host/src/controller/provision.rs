//! Provisioning: pending pods batched, planned by the scheduling simulation and each NodePool's
//! scoring policy, then NodeClaims created and launched (and launches a restart left undone
//! resumed).

use super::*;

/// A planned batch as its launches need it.
#[derive(Clone, Copy)]
struct Batch<'a> {
    plan: &'a provisioning::Plan,
    pools: &'a [Pool],
    /// The pods planned for, by the plan's pod indices.
    pending: &'a [String],
    /// Nominate the pods to their claims (not for an interrupted node's pods, which stay put).
    bind: bool,
}

impl Controller {
    pub(super) fn provision(
        &mut self,
        now: i64,
        port: &mut dyn ClusterPort,
        cloud: &mut dyn CloudProvider,
    ) {
        self.batch = None;
        let pending: Vec<String> = port
            .cluster()
            .pods
            .values()
            .filter(|p| p.node.is_none())
            .map(|p| p.spec.name.clone())
            .collect();
        self.provision_pods(now, pending, true, port, cloud);
    }

    /// Provisions for `pending` (pod names). With `bind`, the pods are nominated to where they
    /// go; without, only the capacity they need is launched (a replacement launched in
    /// parallel with an interrupted node's drain).
    pub(super) fn provision_pods(
        &mut self,
        now: i64,
        pending: Vec<String>,
        bind: bool,
        port: &mut dyn ClusterPort,
        cloud: &mut dyn CloudProvider,
    ) {
        if pending.is_empty() {
            return;
        }
        let cluster = port.cluster();
        let specs: Vec<PendingPod> = pending
            .iter()
            .map(|n| PendingPod::clone(&cluster.pods[n].spec))
            .collect();
        let (existing, names) = cluster.schedulable_nodes(&self.ctx.its, |_| false);
        let pool_specs = cluster.pool_specs(&self.ctx.its);
        let pools: Vec<Pool> = cluster
            .pools
            .iter()
            .zip(pool_specs)
            .map(|(p, spec)| Pool {
                resource: p.resource.clone(),
                spec,
            })
            .collect();
        let next_claim = &mut self.next_claim;
        let started = std::time::Instant::now();
        let round = provisioning::Round {
            now,
            pods: &specs,
            existing: &existing,
            pools: &pools,
            its: &self.ctx.its,
            catalog: &self.ctx.catalog,
            registry: &self.ctx.registry,
        };
        let plan = provisioning::plan(&round, cloud, &mut |pool| {
            *next_claim += 1;
            format!("{pool}-{:05}", *next_claim)
        });
        port.provisioned(specs.len(), started.elapsed());
        for &(p, n) in plan.bound.iter().filter(|_| bind) {
            port.nominate(&pending[p], &names[n]);
            self.unschedulable.remove(&pending[p]);
        }
        let batch = Batch {
            plan: &plan,
            pools: &pools,
            pending: &pending,
            bind,
        };
        let (mut failed, refused) = self.launch_planned(now, &batch, port, cloud);
        failed |= self.report_plan(&plan, &pending, port);
        if failed {
            let wait = if refused {
                self.settings.refused_retry
            } else {
                self.settings.launch_retry
            };
            self.retry_provisioning = Some(now + wait.as_secs() as i64);
        }
        // The launches are under way: now the shadow candidates may have the same rounds.
        plan.shadow
            .into_iter()
            .for_each(|job| self.ctx.registry.shadow(job));
        self.changed(now);
    }

    /// Creates and launches the batch's claims (nominating their pods when it binds); returns
    /// whether any failed, and whether the API server only refused for now (429, 409).
    fn launch_planned(
        &mut self,
        now: i64,
        batch: &Batch<'_>,
        port: &mut dyn ClusterPort,
        cloud: &mut dyn CloudProvider,
    ) -> (bool, bool) {
        let Batch {
            plan,
            pools,
            pending,
            bind,
        } = *batch;
        let mut failed = false;
        let claims: Vec<NewClaim> = plan
            .claims
            .iter()
            .map(|c| NewClaim {
                name: c.request.claim.clone(),
                node_pool: c.request.node_pool.clone(),
                offers: c.request.offers.clone(),
                requests: c.requests,
                purpose: if bind { "provisioning" } else { "interruption" },
            })
            .collect();
        let created = port.create_claims(&claims);
        let mut refused = false;
        for ((c, claim), created) in plan.claims.iter().zip(&claims).zip(created) {
            let pool = pools
                .iter()
                .find(|p| p.spec.name == c.request.node_pool)
                .expect("planned from a pool");
            let how = Launch {
                pool,
                pods: c.pods.len(),
                policy: &c.policy,
                ranked: c
                    .request
                    .offers
                    .iter()
                    .zip(&c.scores)
                    .take(RANKED_SHOWN)
                    .map(|(o, &score)| RankedOffer {
                        instance_type: o.instance_type.clone(),
                        zone: o.zone.clone(),
                        capacity_type: capacity_type_label(o.capacity_type),
                        price: o.price,
                        score,
                    })
                    .collect(),
                log: false,
                create: false,
            };
            // The API server said "not now" (429, 409): a short wait, not a failed launch's.
            if matches!(created, Err(PortError::Refused(_))) {
                refused = true;
            }
            let launched = created
                .map_err(|e| format!("creating the NodeClaim: {e}"))
                .and_then(|()| self.launch(now, claim, how, port, cloud));
            match launched {
                Ok(name) => {
                    for &p in c.pods.iter().filter(|_| bind) {
                        port.nominate(&pending[p], &name);
                        self.unschedulable.remove(&pending[p]);
                    }
                }
                Err(reason) => {
                    failed = true;
                    self.emit(
                        port,
                        EventKind::NotLaunched {
                            claim: claim.name.clone(),
                            reason,
                        },
                    );
                }
            }
        }
        (failed, refused)
    }

    /// Tells what the plan could not do: pods that cannot be placed (once per reason), policies
    /// that failed (once while they repeat), claims not launched. Returns whether any claim was
    /// not launched.
    fn report_plan(
        &mut self,
        plan: &provisioning::Plan,
        pending: &[String],
        port: &mut dyn ClusterPort,
    ) -> bool {
        let mut failed = false;
        for u in &plan.unschedulable {
            let pod = pending[u.pod].clone();
            if self.unschedulable.get(&pod) != Some(&u.reason) {
                self.unschedulable.insert(pod.clone(), u.reason.clone());
                // Provisioning logged it already.
                self.remember(
                    port,
                    EventKind::Unschedulable {
                        pod,
                        reason: u.reason.clone(),
                    },
                );
            }
        }
        for (policy, error) in &plan.policy_failures {
            let kind = EventKind::PolicyFailed {
                policy: policy.clone(),
                error: error.clone(),
            };
            // Every batch until it is fixed: told once while it repeats (logged by the call).
            if !self.recent.contains(&kind) {
                self.remember(port, kind);
            }
        }
        for n in &plan.not_launched {
            failed = true;
            self.emit(
                port,
                EventKind::NotLaunched {
                    claim: n.claim.clone(),
                    reason: n.reason.clone(),
                },
            );
        }
        failed
    }

    /// Creates the NodeClaim, launches its instance, and makes it an in-flight node; returns its
    /// name, or why not (the claim is then abandoned).
    pub(super) fn launch(
        &mut self,
        now: i64,
        claim: &NewClaim,
        how: Launch<'_>,
        port: &mut dyn ClusterPort,
        cloud: &mut dyn CloudProvider,
    ) -> Result<String, String> {
        let Launch {
            pool,
            pods,
            policy,
            ranked,
            log,
            create,
        } = how;
        if create {
            port.create_claims(std::slice::from_ref(claim))
                .pop()
                .unwrap_or(Ok(()))
                .map_err(|e| format!("creating the NodeClaim: {e}"))?;
        }
        let request = LaunchRequest {
            claim: claim.name.clone(),
            node_pool: claim.node_pool.clone(),
            node_class: pool.resource.spec.template.spec.node_class_ref.name.clone(),
            offers: claim.offers.clone(),
        };
        let instance = match cloud.create(&request) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(nodeclaim = %claim.name, error = %e, "launch failed");
                port.abandon_claim(&claim.name, &e.to_string());
                return Err(e.to_string());
            }
        };
        if !log {
            tracing::info!(
                nodeclaim = %instance.claim,
                nodepool = %claim.node_pool,
                instance_type = %instance.offer.instance_type,
                zone = %instance.offer.zone,
                capacity_type = capacity_type_label(instance.offer.capacity_type),
                price = instance.offer.price,
                pods,
                policy = %policy,
                "launched nodeclaim"
            );
        }
        let kind = EventKind::Launched {
            node: instance.claim.clone(),
            instance_type: instance.offer.instance_type.clone(),
            zone: instance.offer.zone.clone(),
            capacity_type: capacity_type_label(instance.offer.capacity_type),
            price: instance.offer.price,
            pods,
            policy: policy.to_string(),
            ranked,
        };
        let node = self.ctx.node(instance, pool, port.cluster(), now);
        let name = node.name.clone();
        // The instance exists and carries the claim's tag: if recording it fails, the next
        // launch of this claim finds it by that tag, and GC keeps it as the claim's.
        if let Err(e) = port.launched(claim, node) {
            tracing::warn!(nodeclaim = %name, error = %e, "recording the launch failed");
        }
        if log {
            self.emit(port, kind);
        } else {
            self.remember(port, kind);
        }
        Ok(name)
    }

    /// Claims that exist without an instance (a restart between creating and launching) are
    /// launched now; the provider finds an instance already tagged with the claim first.
    pub(super) fn resume_launches(
        &mut self,
        now: i64,
        port: &mut dyn ClusterPort,
        cloud: &mut dyn CloudProvider,
    ) {
        let unlaunched = port.cluster().unlaunched.clone();
        for u in unlaunched {
            let Some(pool) = port
                .cluster()
                .pool_index(&u.node_pool)
                .map(|i| port.cluster().pools[i].clone())
            else {
                continue;
            };
            let claim = NewClaim {
                name: u.name.clone(),
                node_pool: u.node_pool.clone(),
                offers: u.offers.clone(),
                requests: crate::scheduling::model::zero(),
                purpose: "resumed",
            };
            if let Err(reason) = self.launch(now, &claim, Launch::resumed(&pool), port, cloud) {
                self.emit(
                    port,
                    EventKind::NotLaunched {
                        claim: u.name.clone(),
                        reason,
                    },
                );
            }
        }
    }
}
