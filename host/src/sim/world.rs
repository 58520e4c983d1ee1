//! The world's side of the simulation: the cluster the controller acts on through its port, and
//! what kubelet, kube-scheduler, the ReplicaSet controller and the Eviction API do in it. It
//! decides nothing an autoscaler decides.

use super::*;

impl World {
    pub(super) fn now(&self) -> i64 {
        self.opts.start + self.t
    }

    /// Every pool's DaemonSet overhead, after a DaemonSet came or went.
    pub(super) fn daemonset_overhead_changed(&mut self) {
        let overhead = self.daemonsets.values().fold(zero(), |a, r| add(&a, r));
        for p in &mut self.cluster.pools {
            p.spec.daemonset_overhead = overhead;
        }
    }

    pub(super) fn event(&mut self, kind: EventKind) {
        kind.log();
        self.report.events.push(Event { at: self.t, kind });
    }

    /// Something changed that disruption should look at.
    pub(super) fn dirty(&mut self) {
        self.signals.push(Signal::Changed(self.now()));
    }

    /// Pending pods get another provisioning batch.
    pub(super) fn kick(&mut self) {
        self.signals.push(Signal::Kick(self.now()));
    }

    /// Nodes whose kubelet reports Ready now.
    pub(super) fn become_ready(&mut self) {
        let due: Vec<String> = self
            .ready_due
            .iter()
            .filter(|&(_, &t)| t <= self.t)
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            self.ready_due.remove(&name);
            let t = self.now();
            let Some(node) = self.cluster.nodes.get_mut(&name) else {
                continue;
            };
            node.ready_at = Some(t);
            // kubelet registers the Node and reports it Ready at once; the Node is named as
            // its claim is (the simulator keeps one name for both).
            node.lifecycle.joined = Some(crate::cluster::Joined {
                node: name.clone(),
                ready: true,
                startup_taints_left: false,
                deleting: false,
            });
            self.event(EventKind::Ready { node: name });
            self.dirty();
        }
    }

    /// Nominations that no longer hold ([`crate::snapshot::nomination_holds`]): their pods show
    /// as pending again, and provisioning looks at them anew.
    pub(super) fn lapse_nominations(&mut self) {
        let now = self.now();
        let lapsed: Vec<String> = self
            .nominations
            .iter()
            .filter(|&(pod, &until)| {
                let Some(node) = self.cluster.pods.get(pod).and_then(|p| {
                    p.running_since
                        .is_none()
                        .then_some(p.node.as_deref())
                        .flatten()
                }) else {
                    return true;
                };
                let n = self.cluster.nodes.get(node);
                let exists = n.is_some() || self.cluster.unlaunched.iter().any(|u| u.name == node);
                !crate::snapshot::nomination_holds(until, n, exists, now)
            })
            .map(|(pod, _)| pod.clone())
            .collect();
        for pod in lapsed {
            self.nominations.remove(&pod);
            if let Some(p) = self.cluster.pods.get_mut(&pod)
                && p.running_since.is_none()
                && p.node.take().is_some()
            {
                self.kick();
            }
        }
    }

    /// When the next nomination lapses, if one may: at its expiry, or once its Ready node has
    /// not taken the pod for the window.
    pub(super) fn next_lapse(&self) -> Option<i64> {
        self.nominations
            .iter()
            .filter_map(|(pod, &until)| {
                let node = self.cluster.pods.get(pod)?.node.as_deref()?;
                let ready = self.cluster.nodes.get(node).and_then(|n| n.ready_at);
                let nominated = until - crate::snapshot::NOMINATION_TTL;
                Some(ready.map_or(until, |r| {
                    until.min(r.max(nominated) + crate::snapshot::NOMINATION_READY_WINDOW)
                }))
            })
            .min()
    }

    /// A restarted controller remembers no nomination: its snapshot shows their pods pending.
    pub(super) fn forget_nominations(&mut self) {
        for pod in std::mem::take(&mut self.nominations).into_keys() {
            if let Some(p) = self.cluster.pods.get_mut(&pod)
                && p.running_since.is_none()
            {
                p.node = None;
            }
        }
    }

    /// Pods on a node that is gone are gone too; their controllers recreate them.
    pub(super) fn drop_pods_of(&mut self, node: &str) {
        let pods: Vec<Pod> = self
            .cluster
            .pods
            .values()
            .filter(|p| p.node.as_deref() == Some(node))
            .cloned()
            .collect();
        for p in pods {
            // Only nominated (its node never became Ready, so kube-scheduler could not bind
            // it): pending again, as a pod whose nominated node is gone is.
            if p.running_since.is_none() {
                if let Some(pod) = self.cluster.pods.get_mut(&p.spec.name) {
                    pod.node = None;
                }
                self.nominations.remove(&p.spec.name);
                continue;
            }
            self.cluster.pods.remove(&p.spec.name);
            if let Some(owner) = p.owner {
                self.reconcile(&owner);
            }
        }
    }
}

impl ClusterPort for World {
    fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The virtual clock moves in whole seconds.
    fn clock_ms(&self) -> i64 {
        self.now() * 1000
    }

    /// A NodeClaim object exists from here until its node does (what a restart resumes).
    fn create_claims(&mut self, claims: &[NewClaim]) -> Vec<Result<(), PortError>> {
        claims
            .iter()
            .map(|c| {
                self.effect()?;
                self.cluster
                    .unlaunched
                    .push(crate::cluster::UnlaunchedClaim {
                        name: c.name.clone(),
                        node_pool: c.node_pool.clone(),
                        offers: c.offers.clone(),
                    });
                Ok(())
            })
            .collect()
    }

    fn launched(&mut self, claim: &NewClaim, node: Node) -> Result<(), PortError> {
        self.effect()?;
        self.cluster.unlaunched.retain(|u| u.name != claim.name);
        let name = node.name.clone();
        self.cluster.nodes.insert(name.clone(), node);
        self.report.launched += 1;
        // An instance told never to join boots, but its kubelet never registers.
        if !self.opts.never_join.contains(&self.report.launched) {
            self.ready_due
                .insert(name, self.t + self.opts.launch_delay.as_secs() as i64);
        }
        Ok(())
    }

    fn abandon_claim(&mut self, claim: &str, _reason: &str) {
        if self.effect().is_ok() {
            self.cluster.unlaunched.retain(|u| u.name != claim);
        }
    }

    /// The snapshot shows the pod on its node until the nomination lapses
    /// ([`crate::snapshot::nomination_holds`]); kube-scheduler never sees it (`scheduler.rs`).
    fn nominate(&mut self, pod: &str, node: &str) {
        if self.effect().is_err() {
            return;
        }
        let t = self.now();
        if self
            .cluster
            .pods
            .get(pod)
            .is_none_or(|p| p.running_since.is_some())
        {
            return;
        }
        self.cluster.nominate(pod, node, t);
        self.nominations
            .insert(pod.to_string(), t + crate::snapshot::NOMINATION_TTL);
    }

    fn mark_deleting(&mut self, node: &str, deletion: Deletion) -> Result<(), PortError> {
        self.effect()?;
        let n = self
            .cluster
            .nodes
            .get_mut(node)
            .ok_or_else(|| PortError::Failed(format!("no node {node}")))?;
        n.taints.push(disrupted_taint());
        n.deletion = Some(deletion);
        Ok(())
    }

    /// A direct deletion: no budget is consulted; the pod stops within `grace_seconds`.
    fn delete_pod(&mut self, pod: &str, node: &str, grace_seconds: i64) -> Result<(), PortError> {
        self.effect()?;
        let mut fact = self.eviction_fact(pod, node)?;
        fact.direct = true;
        self.evictions.push(fact);
        self.ask_to_stop(pod, node, Some(grace_seconds));
        Ok(())
    }

    /// The Eviction API (see `sim/pdb.rs`): the pod stops within its own grace, or the call is
    /// refused as the API server refuses it.
    fn evict(&mut self, pod: &str, node: &str) -> Result<(), PortError> {
        self.effect()?;
        let p = self
            .cluster
            .pods
            .get(pod)
            .ok_or_else(|| PortError::Failed(format!("no pod {pod}")))?;
        let answer = pdb::evict(
            &self.cluster.pdbs,
            pod,
            &p.spec.labels,
            p.running_since.is_some(),
            p.ready,
        );
        match answer {
            pdb::Answer::Delete(spent) => {
                let fact = self.eviction_fact(pod, node)?;
                self.evictions.push(fact);
                if let Some(s) = spent.and_then(|i| self.cluster.pdbs[i].status.as_mut()) {
                    s.disruptions_allowed -= 1;
                }
                self.ask_to_stop(pod, node, None);
                Ok(())
            }
            pdb::Answer::TooManyRequests(m) => {
                self.refused.push((self.t, pod.to_string(), m.clone()));
                Err(PortError::Refused(m))
            }
            pdb::Answer::InternalError(m) => {
                self.refused.push((self.t, pod.to_string(), m.clone()));
                Err(PortError::Failed(m))
            }
        }
    }

    fn remove_node(&mut self, node: &str) -> Result<(), PortError> {
        self.effect()?;
        self.cluster.nodes.remove(node);
        self.ready_due.remove(node);
        self.stopping.retain(|_, s| s.node != node);
        self.drop_pods_of(node);
        self.update_pdb_status();
        Ok(())
    }

    fn register(&mut self, claim: &str, _node: &str, initialized: bool) -> Result<(), PortError> {
        self.effect()?;
        if let Some(n) = self.cluster.nodes.get_mut(claim) {
            n.lifecycle.registered = true;
            n.lifecycle.initialized |= initialized;
        }
        Ok(())
    }

    fn initialized(&mut self, claim: &str) -> Result<(), PortError> {
        self.effect()?;
        if let Some(n) = self.cluster.nodes.get_mut(claim) {
            n.lifecycle.initialized = true;
        }
        Ok(())
    }

    fn record(&mut self, kind: EventKind) {
        if let EventKind::Disrupting { nodes, reason, .. } = &kind {
            *self
                .report
                .disruptions
                .entry(reason.to_string())
                .or_default() += nodes.len() as u32;
        }
        self.report.events.push(Event { at: self.t, kind });
    }

    fn disruption_round(&mut self, mut round: DisruptionRound) {
        round.at -= self.opts.start;
        self.report.disruption_rounds.push(round);
    }

    fn take_signals(&mut self) -> Vec<Signal> {
        std::mem::take(&mut self.signals)
    }
}

impl World {
    /// The fleet now, with the run's counters so far.
    pub(super) fn frame(&self, fleet: FleetView) -> report::Frame {
        report::Frame {
            at: self.t,
            fleet,
            disruptions: self.report.disruptions.clone(),
            evictions: self.report.evictions,
        }
    }

    /// Adds a frame to the timeline when something changed since the last one (not only the
    /// clock), or when `last`: a frame at the same time as the last replaces it.
    pub(super) fn record_frame(&mut self, frame: report::Frame, last: bool) {
        let timeline = &mut self.report.timeline;
        if let Some(prev) = timeline.last() {
            let same = prev.disruptions == frame.disruptions
                && prev.evictions == frame.evictions
                && prev.fleet.later(frame.at - prev.at) == frame.fleet;
            if same && !last {
                return;
            }
            if prev.at == frame.at {
                timeline.pop();
            }
        }
        timeline.push(frame);
    }

    /// Records per-pool disruption concurrency.
    pub(super) fn observe(&mut self) {
        for pool in &self.cluster.pools {
            let nodes: Vec<&Node> = self
                .cluster
                .nodes
                .values()
                .filter(|n| n.instance.node_pool == pool.spec.name)
                .collect();
            let disrupting = nodes
                .iter()
                .filter(|n| n.deletion.as_ref().is_some_and(|d| d.reason.is_some()))
                .count() as u32;
            let e = self
                .report
                .peak_disrupting
                .entry(pool.spec.name.clone())
                .or_insert((0, 0));
            if disrupting > e.0 {
                *e = (disrupting, nodes.len() as u32);
            }
        }
    }
}

impl World {
    /// Counts one effect of the controller; refuses it once the controller has stopped.
    pub(super) fn effect(&mut self) -> Result<(), PortError> {
        if self.crashed {
            return Err(PortError::Failed("the controller stopped".into()));
        }
        self.effects += 1;
        if self.crash_after.contains(&self.effects) {
            self.crashed = true;
        }
        Ok(())
    }

    /// Graceful deletion (kubernetes.io "Pod Lifecycle: Termination of Pods"): the pod gets a
    /// deletionTimestamp and leaves its node once stopped — after its preStop sleep, at the
    /// latest at the end of its grace (`grace`, else its own) — while its ReplicaSet replaces it
    /// at once (a ReplicaSet counts only pods not being deleted). A pod not yet running goes at
    /// once.
    pub(super) fn ask_to_stop(&mut self, pod: &str, node: &str, grace: Option<i64>) {
        let Some(p) = self.cluster.pods.remove(pod) else {
            return;
        };
        self.report.evictions += 1;
        let key = p.owner.clone().unwrap_or_else(|| pod.to_string());
        let stop = self.stop_seconds.get(&key).copied().unwrap_or(0);
        let within = stop.min(grace.unwrap_or(p.spec.grace_seconds)).max(0);
        let owner = p.owner.clone();
        match self.cluster.nodes.get_mut(node) {
            Some(n) if p.running_since.is_some() && within > 0 => {
                n.terminating.insert(pod.to_string());
                self.stopping.insert(
                    pod.to_string(),
                    Stopping {
                        pod: p,
                        node: node.to_string(),
                        gone_at: self.t + within,
                    },
                );
            }
            _ => self.pod_left(),
        }
        if let Some(owner) = owner {
            self.reconcile(&owner);
        }
    }

    /// kubelet: pods whose stop time has come leave their nodes.
    pub(super) fn stop_pods(&mut self) {
        let t = self.t;
        let gone: Vec<String> = self
            .stopping
            .iter()
            .filter(|(_, s)| s.gone_at <= t)
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            let s = self.stopping.remove(&name).expect("listed");
            if let Some(n) = self.cluster.nodes.get_mut(&s.node) {
                n.terminating.remove(&name);
            }
            self.pod_left();
        }
    }

    /// A pod left its node: disruption looks again, and waiting pods may fit there now.
    pub(super) fn pod_left(&mut self) {
        self.dirty();
        if self.cluster.pods.values().any(|p| p.node.is_none()) {
            self.kick();
        }
    }

    /// The pods as the disruption controller lists them: live and stopping.
    pub(super) fn listed(&self) -> Vec<pdb::Listed<'_>> {
        let live = self.cluster.pods.values().map(|p| (p, false));
        let stopping = self.stopping.values().map(|s| (&s.pod, true));
        live.chain(stopping)
            .map(|(p, terminating)| pdb::Listed {
                name: &p.spec.name,
                labels: &p.spec.labels,
                owner: p.owner.as_deref(),
                ready: p.ready,
                terminating,
            })
            .collect()
    }

    /// kube-controller-manager's disruption controller: every budget's status, from the pods
    /// and the workloads' scale now (see `sim/pdb.rs`).
    pub(super) fn update_pdb_status(&mut self) {
        if self.cluster.pdbs.is_empty() {
            return;
        }
        let statuses: Vec<crate::cluster::PdbStatus> = {
            let listed = self.listed();
            let scale = |o: &str| self.workloads.get(o).map(|w| w.replicas);
            self.cluster
                .pdbs
                .iter()
                .map(|b| pdb::status(b, &listed, scale))
                .collect()
        };
        for (b, s) in self.cluster.pdbs.iter_mut().zip(statuses) {
            b.status = Some(s);
        }
    }

    /// What the cluster holds for the budgets that select `pod`, just before it goes.
    pub(super) fn eviction_fact(&self, pod: &str, node: &str) -> Result<EvictionFact, PortError> {
        let p = self
            .cluster
            .pods
            .get(pod)
            .ok_or_else(|| PortError::Failed(format!("no pod {pod}")))?;
        let covering: Vec<&Pdb> = self
            .cluster
            .pdbs
            .iter()
            .filter(|b| pdb::selected(b, pod, &p.spec.labels))
            .collect();
        // Every pod is listed only when a budget covers this one (a drain evicts many).
        let listed = if covering.is_empty() {
            Vec::new()
        } else {
            self.listed()
        };
        let selects = |b: &Pdb, q: &pdb::Listed<'_>| pdb::selected(b, q.name, q.labels);
        let pdbs = covering
            .into_iter()
            .map(|b| {
                let mine: Vec<&pdb::Listed<'_>> = listed.iter().filter(|q| selects(b, q)).collect();
                let mut owners: Vec<&str> = mine.iter().filter_map(|q| q.owner).collect();
                owners.sort_unstable();
                owners.dedup();
                BudgetFact {
                    pdb: format!("{}/{}", b.namespace, b.name),
                    healthy: mine.iter().filter(|q| q.ready && !q.terminating).count() as u32,
                    selected: mine.len() as u32,
                    scale: owners
                        .iter()
                        .filter_map(|o| self.workloads.get(*o).map(|w| w.replicas))
                        .sum(),
                }
            })
            .collect();
        let n = self.cluster.nodes.get(node);
        Ok(EvictionFact {
            t: self.t,
            pod: pod.to_string(),
            node: node.to_string(),
            node_pool: n.map(|n| n.instance.node_pool.clone()),
            deletion: n.and_then(|n| n.deletion.clone()),
            pdbs,
            ready: p.ready,
            do_not_disrupt: p.do_not_disrupt,
            node_do_not_disrupt: n.is_some_and(|n| n.do_not_disrupt),
            direct: false,
            grace_seconds: p.spec.grace_seconds,
        })
    }

    pub(super) fn create_pod(
        &mut self,
        mut spec: PendingPod,
        owner: Option<String>,
        do_not_disrupt: bool,
    ) {
        spec.volume_requirements = self.cluster.volumes.requirements(&spec.volume_claims);
        let pod = Pod {
            spec: spec.into(),
            owner,
            created_at: self.now(),
            node: None,
            running_since: None,
            ready: false,
            do_not_disrupt,
        };
        self.cluster.pods.insert(pod.spec.name.clone(), pod);
        self.signals.push(Signal::PodPending(self.now() * 1000));
    }

    /// Resolves again where each waiting pod's volumes let it run (volumes or claims changed).
    pub(super) fn resolve_volumes(&mut self) {
        let volumes = &self.cluster.volumes;
        for p in self.cluster.pods.values_mut() {
            if p.running_since.is_none() && !p.spec.volume_claims.is_empty() {
                let requirements = volumes.requirements(&p.spec.volume_claims);
                std::sync::Arc::make_mut(&mut p.spec).volume_requirements = requirements;
            }
        }
        self.dirty();
    }

    pub(super) fn delete_pod(&mut self, name: &str) {
        if let Some(p) = self.cluster.pods.remove(name)
            && p.node.is_some()
        {
            self.dirty();
            // Room on a node: kube-scheduler would bind pods that wait and now fit there, so
            // they are looked at again.
            if self.cluster.pods.values().any(|p| p.node.is_none()) {
                self.kick();
            }
        }
    }

    /// The ReplicaSet controller: creates missing replicas, removes extra ones (pending first,
    /// then those on the nodes with the most replicas, newest first — Kubernetes' ranking).
    pub(super) fn reconcile(&mut self, key: &str) {
        let Some(w) = self.workloads.get(key).cloned() else {
            return;
        };
        let mine: Vec<&Pod> = self
            .cluster
            .pods
            .values()
            .filter(|p| p.owner.as_deref() == Some(key))
            .collect();
        let have = mine.len() as u32;
        if have < w.replicas {
            let mut next = w.next;
            for _ in have..w.replicas {
                let name = format!("{key}-{next:05}");
                next += 1;
                self.create_pod(
                    PendingPod {
                        name,
                        ..w.template.clone()
                    },
                    Some(key.to_string()),
                    w.do_not_disrupt,
                );
            }
            self.workloads.get_mut(key).expect("present").next = next;
        } else if have > w.replicas {
            let mut per_node: HashMap<&str, usize> = HashMap::new();
            // Assigned means bound (`spec.nodeName`); a nomination is not an assignment.
            fn bound(p: &Pod) -> Option<&str> {
                p.node.as_deref().filter(|_| p.running_since.is_some())
            }
            for p in &mine {
                if let Some(n) = bound(p) {
                    *per_node.entry(n).or_default() += 1;
                }
            }
            let mut ranked: Vec<(
                bool,
                std::cmp::Reverse<usize>,
                std::cmp::Reverse<i64>,
                String,
            )> = mine
                .iter()
                .map(|p| {
                    (
                        bound(p).is_some(),
                        std::cmp::Reverse(bound(p).map_or(0, |n| per_node[n])),
                        std::cmp::Reverse(p.created_at),
                        p.spec.name.clone(),
                    )
                })
                .collect();
            ranked.sort();
            for (.., name) in ranked.into_iter().take((have - w.replicas) as usize) {
                self.delete_pod(&name);
            }
        }
    }
}
