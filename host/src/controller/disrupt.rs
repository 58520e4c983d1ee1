//! Disruption: consolidation, drift and expiry decided by [`crate::disruption`] (with the
//! NodePool's consolidation policy), executed replacement first.

use super::*;

impl Controller {
    /// One disruption pass: decide on the snapshot, tell what was decided against, carry out
    /// the commands, and schedule the next pass for when time alone can make more candidates.
    pub(super) fn disrupt(
        &mut self,
        now: i64,
        port: &mut dyn ClusterPort,
        cloud: &mut dyn CloudProvider,
    ) {
        self.next_disruption = None;
        let interval = self.settings.disruption_interval.as_secs().max(1) as i64;
        let cluster = port.cluster();
        // Let the cluster settle first: a batch is open or nodes are on their way.
        if self.batch.is_some() || launching(cluster) {
            self.next_disruption = Some(now + interval);
            return;
        }
        let decision = disruption::decide(
            cluster,
            &self.ctx.its,
            &self.ctx.registry,
            now,
            &self.settings.feature_gates,
            &self.holding_since,
        );
        // A pool's hold lasts while lighter nodes are settling; once it has run its course it
        // is not taken up again until a pass finds none (see `disruption::held_back`).
        self.holding_since
            .retain(|pool, _| decision.holding.iter().any(|(p, _)| p == pool));
        for (pool, held) in &decision.holding {
            if *held {
                self.holding_since.entry(pool.clone()).or_insert(now);
                tracing::debug!(nodepool = %pool, "busier nodes held back while lighter ones settle");
            }
        }
        if decision.candidates > 0 {
            let round = DisruptionRound {
                at: now,
                nodes: cluster.nodes.len(),
                pods: cluster.pods.len(),
                candidates: decision.candidates,
                moves: decision.moves_offered,
                commands: decision.commands.len(),
                timings: decision.timings,
            };
            port.disruption_round(round);
        }
        let revisit = !decision.notes.is_empty();
        self.report_notes(&decision.notes, port)
            .log(decision.candidates, decision.commands.len());
        for c in decision.commands {
            self.execute(now, c, port, cloud);
        }
        // The moves are under way: now the shadow candidates may have the same rounds.
        decision
            .shadow
            .into_iter()
            .for_each(|job| self.ctx.registry.shadow(job));
        let mut next = if revisit { Some(now + 300) } else { None };
        if let Some(t) = self.next_candidate(port.cluster(), now, interval) {
            next = Some(next.map_or(t, |x: i64| x.min(t)));
        }
        if let Some(n) = next {
            self.next_disruption = Some(self.next_disruption.map_or(n, |x| x.min(n)));
        }
    }

    /// Each note once as a debug line and an Event: repeats of the same note every pass say
    /// nothing new. Returns the pass's tally for its one summary line.
    fn report_notes(&mut self, notes: &[Note], port: &mut dyn ClusterPort) -> PassSummary {
        let mut pass = PassSummary::default();
        for note in notes {
            pass.count(note);
            let kind = note_event(note);
            if !self.recent.iter().any(|e| *e == kind) {
                tracing::debug!(note = ?kind, "disruption note");
                self.remember(port, kind);
            }
        }
        pass
    }

    /// Time alone can make more nodes candidates: consolidateAfter and expireAfter passing. The
    /// earliest such time after `now`, aligned to the pass interval. (A policy or a budget
    /// schedule changing its mind is met by the revisit that follows a pass with notes.)
    fn next_candidate(&self, cluster: &Cluster, now: i64, interval: i64) -> Option<i64> {
        let after = |d: &str| {
            duration::parse(d)
                .ok()
                .flatten()
                .map(|d| d.as_secs() as i64)
        };
        let mut next: Option<i64> = None;
        for n in cluster.nodes.values() {
            let Some(i) = cluster.pool_index(&n.instance.node_pool) else {
                continue;
            };
            let spec = &cluster.pools[i].resource.spec;
            let consolidate =
                after(&spec.disruption.consolidate_after).map(|d| n.last_pod_change + d);
            let expire = after(&spec.template.spec.expire_after).map(|d| n.launched_at + d);
            for t in [consolidate, expire]
                .into_iter()
                .flatten()
                .filter(|&t| t > now)
            {
                let aligned = self.align(t, interval);
                next = Some(next.map_or(aligned, |x| x.min(aligned)));
            }
        }
        next
    }

    pub(super) fn execute(
        &mut self,
        now: i64,
        c: disruption::Command,
        port: &mut dyn ClusterPort,
        cloud: &mut dyn CloudProvider,
    ) {
        let mut replacement = None;
        if let Some(offer) = &c.replacement {
            let Some(pool) = port
                .cluster()
                .pool_index(&c.node_pool)
                .map(|i| port.cluster().pools[i].clone())
            else {
                tracing::info!(nodepool = %c.node_pool, nodes = ?c.nodes, "NodePool gone; the disruption is not carried out");
                return;
            };
            self.next_claim += 1;
            let claim = NewClaim {
                name: format!("{}-{:05}", c.node_pool, self.next_claim),
                node_pool: c.node_pool.clone(),
                offers: vec![offer.clone()],
                requests: crate::scheduling::model::zero(),
                purpose: "replacement",
            };
            let how = Launch {
                pool: &pool,
                pods: 0,
                policy: &c.policy,
                ranked: Vec::new(),
                log: true,
                create: true,
            };
            match self.launch(now, &claim, how, port, cloud) {
                Ok(name) => replacement = Some(name),
                Err(reason) => {
                    self.emit(
                        port,
                        EventKind::NotLaunched {
                            claim: claim.name.clone(),
                            reason: format!("replacement for {:?}: {reason}", c.nodes),
                        },
                    );
                    return;
                }
            }
        }
        for name in &c.nodes {
            let deletion = Deletion {
                reason: Some(c.reason),
                since: now,
                replacement: replacement.clone(),
                policy: Some(c.policy.clone()),
            };
            if let Err(e) = port.mark_deleting(name, deletion) {
                tracing::warn!(node = %name, error = %e, "could not mark the node for disruption");
            }
        }
        self.emit(
            port,
            EventKind::Disrupting {
                nodes: c.nodes.clone(),
                reason: reason_label(c.reason),
                replacement,
                savings_per_hour: c.savings_per_hour,
                policy: c.policy.clone(),
            },
        );
    }
}

/// Nodes are on their way: launched, not Ready, and not a replacement some deletion waits for.
fn launching(cluster: &Cluster) -> bool {
    cluster.nodes.values().any(|n| {
        n.ready_at.is_none()
            && n.deletion.is_none()
            && !cluster.nodes.values().any(|d| {
                d.deletion.as_ref().and_then(|x| x.replacement.as_deref()) == Some(n.name.as_str())
            })
    })
}

/// The Event that tells a note.
fn note_event(note: &Note) -> EventKind {
    match note {
        Note::Blocked { node, why } => EventKind::Blocked {
            node: node.clone(),
            why: why.clone(),
        },
        Note::Kept { nodes, why } => EventKind::Kept {
            nodes: nodes.clone(),
            why: why.clone(),
        },
        Note::Overruled { nodes, why } => EventKind::Overruled {
            nodes: nodes.clone(),
            why: why.clone(),
        },
        Note::PolicyFailed { policy, error } => EventKind::PolicyFailed {
            policy: policy.clone(),
            error: error.clone(),
        },
    }
}
