//! The host's re-check of a policy's moves: each is carried out only if budgets, PDBs,
//! do-not-disrupt and the simulation of where the pods go still allow it — a policy only
//! expresses preference.

use super::*;

/// A NodePool's consolidation round and the policy's answer to it.
pub(super) struct Answered<'r> {
    pub pool: &'r Pool,
    pub candidates: &'r [Candidate<'r>],
    pub round: &'r ConsolidationRound,
    /// Per move of the round: the replacement it needs (type, offering), if any.
    pub replacements: &'r [Option<(u32, usize)>],
    pub policy: &'r str,
    pub actions: &'r [Action],
}

/// A move the re-check accepted: where its pods go.
struct Fit {
    gone: Vec<bool>,
    moving: Vec<PendingPod>,
    plan: crate::scheduling::Plan,
    /// The replacement's name among the existing nodes, if it has one.
    replacement: Option<String>,
}

impl Pass<'_> {
    /// Carries out the policy's choice as far as safety allows: moves that pass every check go
    /// into `decision` as commands (their nodes into `leaving`), the others as notes saying why.
    pub(super) fn enforce(
        &mut self,
        answered: &Answered<'_>,
        leaving: &mut BTreeSet<String>,
        decision: &mut Decision,
    ) {
        let Answered {
            pool,
            candidates,
            round,
            replacements,
            policy,
            actions,
        } = answered;
        let names = |m: &Move| -> Vec<String> {
            m.nodes
                .iter()
                .map(|&i| candidates[i as usize].node.name.clone())
                .collect()
        };
        let pool_nodes: Vec<&Node> = self
            .cluster
            .nodes
            .values()
            .filter(|n| n.instance.node_pool == pool.spec.name)
            .collect();
        // Capacity against the NodePool's limits: every node it has (leaving ones too, until
        // they are gone) plus the replacements accepted this round.
        let mut in_use = pool_nodes.iter().fold((0u64, 0u64), |(c, m), n| {
            let cap = self.its.types[n.type_index as usize].capacity;
            (c + cap.0, m + cap.1)
        });
        // The pool's nodes disrupting, counted once and kept up as moves are accepted: a
        // count per move over every node of the pool made a pass quadratic.
        let mut disrupting = pool_nodes
            .iter()
            .filter(|n| leaving.contains(&n.name))
            .count() as u32;
        for action in actions.iter() {
            let i = match action {
                Action::Execute(i) => *i as usize,
                Action::Keep(k) => {
                    decision.notes.push(Note::Kept {
                        nodes: names(&round.moves[k.move_index as usize]),
                        why: crate::policy::engine::guest_text(&k.reason),
                    });
                    continue;
                }
            };
            let m = &round.moves[i];
            let nodes = names(m);
            let refused = if nodes.iter().any(|n| leaving.contains(n)) {
                Err("a node of the move is already being disrupted".to_string())
            } else {
                self.within_limits(pool, in_use, replacements[i])
                    .and_then(|()| {
                        self.within_budget(pool, pool_nodes.len() as u32, disrupting, m, &nodes)
                    })
                    .and_then(|()| self.fits_elsewhere(pool, &nodes, replacements[i]))
            };
            let fit = match refused {
                Ok(fit) => fit,
                Err(why) => {
                    tracing::debug!(nodepool = %pool.spec.name, nodes = ?nodes, policy, %why, "overruled consolidation action");
                    decision.notes.push(Note::Overruled { nodes, why });
                    continue;
                }
            };
            // Accepted.
            for n in &nodes {
                if leaving.insert(n.clone()) {
                    disrupting += 1;
                }
            }
            if let Some((t, _)) = replacements[i] {
                let cap = self.its.types[t as usize].capacity;
                in_use = (in_use.0 + cap.0, in_use.1 + cap.1);
            }
            if let Some(name) = fit.replacement {
                self.index.insert(name, self.existing.len() - 1);
            }
            self.gone = fit.gone;
            self.place(&fit.moving, &fit.plan.bound);
            let replacement = replacements[i].map(|(t, o)| {
                let ty = &self.its.types[t as usize];
                let off = &ty.offerings[o];
                Offer {
                    instance_type: ty.name.clone(),
                    zone: self.its.zones[off.zone as usize].clone(),
                    capacity_type: off.capacity_type,
                    price: off.price,
                }
            });
            decision.commands.push(Command {
                node_pool: pool.spec.name.clone(),
                nodes,
                reason: m.reason,
                replacement,
                savings_per_hour: m.savings_per_hour,
                policy: policy.to_string(),
            });
        }
    }

    /// The NodePool's limits leave room for the replacement beside the nodes it replaces.
    fn within_limits(
        &self,
        pool: &Pool,
        in_use: (u64, u64),
        replacement: Option<(u32, usize)>,
    ) -> Result<(), String> {
        let Some((t, _)) = replacement else {
            return Ok(());
        };
        let cap = self.its.types[t as usize].capacity;
        let limits = &pool.spec.limits;
        let over = limits.cpu_millis.is_some_and(|l| in_use.0 + cap.0 > l)
            || limits.memory_bytes.is_some_and(|l| in_use.1 + cap.1 > l);
        if over {
            return Err(format!(
                "the NodePool's limits leave no room for the replacement {} beside the nodes it replaces",
                self.its.types[t as usize].name
            ));
        }
        Ok(())
    }

    /// The NodePool's disruption budget for the move's reason allows its nodes beside those
    /// already disrupting.
    fn within_budget(
        &self,
        pool: &Pool,
        total: u32,
        disrupting: u32,
        m: &Move,
        nodes: &[String],
    ) -> Result<(), String> {
        let allowed = budget::allowed(
            &pool.resource.spec.disruption.budgets,
            total,
            m.reason,
            self.now,
        )
        .map_err(|e| format!("disruption budget unreadable: {e}"))?;
        if disrupting + nodes.len() as u32 > allowed {
            return Err(format!(
                "disruption budget allows {allowed} of {total} nodes for {:?}, {disrupting} already disrupting",
                m.reason
            ));
        }
        Ok(())
    }

    /// Re-checked against everything accepted so far (their pods already counted where they
    /// go): the move's pods fit on what stays plus its replacement, with no other new node.
    /// The replacement stays among the existing nodes only if the move fits.
    fn fits_elsewhere(
        &mut self,
        pool: &Pool,
        nodes: &[String],
        replacement: Option<(u32, usize)>,
    ) -> Result<Fit, String> {
        let mut gone = self.gone.clone();
        for n in nodes {
            if let Some(&k) = self.index.get(n) {
                gone[k] = true;
            }
        }
        let name = format!("replacement-{}", self.existing.len());
        if let Some(r) = replacement {
            self.existing.push(self.replacement_node(pool, r, &name));
            gone.push(false);
        }
        let moving: Vec<PendingPod> = nodes
            .iter()
            .flat_map(|n| self.by_node.get(n.as_str()).into_iter().flatten())
            .map(|p| PendingPod::clone(&p.spec))
            .collect();
        let plan = solve_excluding(&moving, &self.existing, &gone, &[], self.its, None);
        if !plan.unschedulable.is_empty() {
            if replacement.is_some() {
                self.existing.pop();
            }
            return Err(format!(
                "{} pod(s) would have nowhere to go: they do not fit on the nodes that stay{} (e.g. {})",
                plan.unschedulable.len(),
                if replacement.is_some() {
                    " and the replacement"
                } else {
                    ""
                },
                moving[plan.unschedulable[0].pod].name,
            ));
        }
        Ok(Fit {
            gone,
            moving,
            plan,
            replacement: replacement.map(|_| name),
        })
    }

    /// A replacement as a node the simulation can place pods on.
    pub(super) fn replacement_node(
        &self,
        pool: &Pool,
        (t, o): (u32, usize),
        name: &str,
    ) -> ExistingNode {
        let off = &self.its.types[t as usize].offerings[o];
        let zone = &self.its.zones[off.zone as usize];
        ExistingNode {
            name: name.to_string(),
            node_pool: self.cluster.pool_index(&pool.spec.name),
            labels: node_labels(
                self.its,
                t,
                zone,
                capacity_type_label(off.capacity_type),
                pool,
                name,
            ),
            taints: pool.spec.taints.clone(),
            zone: off.zone,
            allocatable: pool.spec.allocatable(&self.its.types[t as usize]),
            requested: pool.spec.daemonset_overhead,
            pods: Vec::new(),
            repels: Vec::new(),
        }
    }
}
