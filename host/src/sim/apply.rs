//! A scenario applied to the world: manifests (NodePools, node classes, Deployments, pods,
//! PDBs, DaemonSets, volumes, Policies) and the timeline's steps (scale, delete, interrupt,
//! exhaust).

use super::*;

impl Sim {
    // ---- objects ----

    pub(super) fn apply(&mut self, file: &str, m: Manifest) -> Result<(), SimError> {
        match m {
            Manifest::NodePool(np) => self.apply_node_pool(*np)?,
            Manifest::Policy(p) => {
                apply_policy(&self.controller.ctx.registry, file, &p)?;
                self.world.kick();
                self.world.dirty();
            }
            Manifest::EC2NodeClass(c) => {
                let name = c.metadata.name.clone().unwrap_or_default();
                crate::scheduling::from_kube::node_settings(&name, &c.spec)?;
                if let Err(e) = self.cloud.node_class(&name, &c.spec) {
                    self.world.event(EventKind::NodeClassNotReady {
                        node_class: name.clone(),
                        reason: e.to_string(),
                    });
                }
                let spec = serde_json::to_string(&c.spec).expect("a spec serializes");
                self.world.cluster.node_classes.insert(name, spec);
                self.world.cluster.apply_node_classes();
                self.world.dirty();
            }
            Manifest::Scenario(_) => {
                return Err(SimError::Input(format!(
                    "{file}: a Scenario cannot be applied by a step"
                )));
            }
            Manifest::Other { kind, document, .. } => match kind.as_str() {
                "Deployment" => self.apply_deployment(file, document)?,
                "Pod" => self.apply_pod(file, document)?,
                "DaemonSet" => {
                    let d: k8s_openapi::api::apps::v1::DaemonSet = serde_json::from_value(document)
                        .map_err(|e| SimError::Input(format!("{file}: DaemonSet: {e}")))?;
                    let (key, requests) = daemonset_requests(&d)?;
                    let requests = requests.ok_or_else(|| {
                        SimError::Input(format!("{file}: DaemonSet {key}: no pod template"))
                    })?;
                    self.world.daemonsets.insert(key, requests);
                    self.world.daemonset_overhead_changed();
                }
                "PodDisruptionBudget" => {
                    let pdb = pdb(file, document)?;
                    self.world.cluster.pdbs.retain(|p| {
                        (p.namespace.as_str(), p.name.as_str())
                            != (pdb.namespace.as_str(), pdb.name.as_str())
                    });
                    self.world.cluster.pdbs.push(pdb);
                    self.world.dirty();
                }
                "PersistentVolume" | "PersistentVolumeClaim" | "StorageClass" => {
                    let bad =
                        |e: serde_json::Error| SimError::Input(format!("{file}: {kind}: {e}"));
                    let v = &mut self.world.cluster.volumes;
                    match kind.as_str() {
                        "PersistentVolume" => {
                            v.apply_volume(&serde_json::from_value(document).map_err(bad)?)
                        }
                        "PersistentVolumeClaim" => {
                            v.apply_claim(&serde_json::from_value(document).map_err(bad)?)
                        }
                        _ => v.apply_class(&serde_json::from_value(document).map_err(bad)?),
                    }
                    self.world.resolve_volumes();
                }
                // Services, ConfigMaps and the like do not change capacity decisions.
                _ => {}
            },
        }
        Ok(())
    }

    /// A NodePool, its policies overridden as the options say and compiled now.
    fn apply_node_pool(&mut self, mut np: crate::api::NodePool) -> Result<(), SimError> {
        if let Some(s) = &self.world.opts.scoring {
            np.spec.policies.scoring = s.clone();
        }
        if let Some(c) = &self.world.opts.consolidation {
            np.spec.policies.consolidation = c.clone();
        }
        let overhead = self
            .world
            .daemonsets
            .values()
            .fold(zero(), |a, r| add(&a, r));
        let spec = node_pool(&np, overhead, zero())?;
        // Compile the pool's policies now rather than inside its first decision (an
        // unknown name is reported when it is used, with the fallback's decision).
        let shadows = np.spec.policies.shadow.iter().flat_map(|s| {
            [s.scoring.as_ref(), s.consolidation.as_ref()]
                .into_iter()
                .flatten()
        });
        for name in [&np.spec.policies.scoring, &np.spec.policies.consolidation]
            .into_iter()
            .chain(shadows)
        {
            let _ = self.controller.ctx.registry.get(name);
        }
        let pool = Pool { resource: np, spec };
        match self.world.cluster.pool_index(&pool.spec.name) {
            Some(i) => self.world.cluster.pools[i] = pool,
            None => self.world.cluster.pools.push(pool),
        }
        self.world.cluster.apply_node_classes();
        self.world.kick();
        self.world.dirty();
        Ok(())
    }

    /// A Deployment: its pod template and scale, reconciled by its ReplicaSet at once.
    fn apply_deployment(
        &mut self,
        file: &str,
        document: serde_json::Value,
    ) -> Result<(), SimError> {
        let d: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(document)
            .map_err(|e| SimError::Input(format!("{file}: Deployment: {e}")))?;
        let ns = d.metadata.namespace.clone().unwrap_or("default".into());
        let key = format!("{ns}/{}", d.metadata.name.clone().unwrap_or_default());
        let replicas = d.spec.replicas.unwrap_or(1).max(0);
        let mut one = d.clone();
        one.spec.replicas = Some(1);
        let template = deployment_pods(&one)?
            .pop()
            .ok_or_else(|| SimError::Input(format!("{file}: Deployment {key}: no pod")))?;
        let do_not_disrupt = d
            .spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .is_some_and(|a| a.get(DO_NOT_DISRUPT).is_some_and(|v| v == "true"));
        let next = self.world.workloads.get(&key).map_or(0, |w| w.next);
        let stop = d.spec.template.spec.as_ref().map_or(0, pre_stop_seconds);
        self.world.stop_seconds.insert(key.clone(), stop);
        self.world.workloads.insert(
            key.clone(),
            Workload {
                template,
                replicas: replicas as u32,
                next,
                do_not_disrupt,
            },
        );
        self.world.reconcile(&key);
        Ok(())
    }

    /// A bare pod: pending until kube-scheduler binds it; nothing recreates it.
    fn apply_pod(&mut self, file: &str, document: serde_json::Value) -> Result<(), SimError> {
        let p: k8s_openapi::api::core::v1::Pod = serde_json::from_value(document)
            .map_err(|e| SimError::Input(format!("{file}: Pod: {e}")))?;
        let meta = &p.metadata;
        let id = format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or("default"),
            meta.name.as_deref().unwrap_or("pod")
        );
        let spec = p
            .spec
            .as_ref()
            .ok_or_else(|| SimError::Input(format!("{file}: Pod {id}: no spec")))?;
        let pod = pending_pod(
            &format!("Pod/{id}"),
            "spec",
            &id,
            &meta.labels.clone().unwrap_or_default(),
            spec,
        )?;
        let dnd = meta
            .annotations
            .as_ref()
            .is_some_and(|a| a.get(DO_NOT_DISRUPT).is_some_and(|v| v == "true"));
        self.world
            .stop_seconds
            .insert(id.clone(), pre_stop_seconds(spec));
        self.world.create_pod(pod, None, dnd);
        Ok(())
    }

    pub(super) fn step(
        &mut self,
        i: usize,
        step: &Step,
        applied: Vec<Manifest>,
    ) -> Result<(), SimError> {
        let label = format!("Scenario spec.steps[{i}] (at {})", step.at);
        if let Some(s) = &step.scale {
            let key = format!("{}/{}", s.namespace, s.deployment);
            let w =
                self.world.workloads.get_mut(&key).ok_or_else(|| {
                    SimError::Input(format!("{label}: scale: no Deployment {key}"))
                })?;
            w.replicas = s.replicas;
            self.world.event(EventKind::Scaled {
                deployment: key.clone(),
                replicas: s.replicas,
            });
            self.world.reconcile(&key);
        }
        for m in applied {
            self.apply(&label, m)?;
        }
        if let Some(d) = &step.delete {
            self.delete_step(&label, d)?;
        }
        if let Some(x) = &step.interrupt {
            self.interrupt_step(&label, x)?;
        }
        if let Some(x) = &step.exhaust {
            let capacity = capacity_type(&x.capacity_type).ok_or_else(|| {
                SimError::Input(format!(
                    "{label}: exhaust.capacityType {:?} (spot, on-demand, reserved)",
                    x.capacity_type
                ))
            })?;
            self.cloud
                .exhaust(&x.instance_type, &x.zone, capacity)
                .map_err(|e| SimError::Input(format!("{label}: exhaust: {e}")))?;
        }
        Ok(())
    }

    /// A step's `delete`: what a user's `kubectl delete` (or the console's terminate) does.
    fn delete_step(
        &mut self,
        label: &str,
        d: &crate::api::scenario::ObjectRef,
    ) -> Result<(), SimError> {
        let key = format!("{}/{}", d.namespace, d.name);
        match d.kind.as_str() {
            "Deployment" => {
                if self
                    .world
                    .workloads
                    .get_mut(&key)
                    .map(|w| w.replicas = 0)
                    .is_none()
                {
                    return Err(SimError::Input(format!(
                        "{label}: delete: no Deployment {key}"
                    )));
                }
                self.world.reconcile(&key);
                self.world.workloads.remove(&key);
            }
            "Pod" => {
                if let Some(owner) = self.world.cluster.pods.get(&key).map(|p| p.owner.clone()) {
                    self.world.delete_pod(&key);
                    // Its ReplicaSet makes a new one, as in a cluster.
                    if let Some(owner) = owner {
                        self.world.reconcile(&owner);
                    }
                }
            }
            "Node" => {
                let t = self.now();
                let n = self.world.cluster.nodes.get_mut(&d.name).ok_or_else(|| {
                    SimError::Input(format!("{label}: delete: no Node {}", d.name))
                })?;
                deleting_by_hand(n, t);
                self.world.event(EventKind::Deleting {
                    node: d.name.clone(),
                });
            }
            "NodePool" => {
                let t = self.now();
                self.world.cluster.pools.retain(|p| p.spec.name != d.name);
                for n in self.world.cluster.nodes.values_mut() {
                    if n.instance.node_pool == d.name {
                        deleting_by_hand(n, t);
                    }
                }
            }
            "PodDisruptionBudget" => {
                self.world
                    .cluster
                    .pdbs
                    .retain(|p| p.namespace != d.namespace || p.name != d.name);
                self.world.dirty();
            }
            // Its pods leave every node: the pools' overhead shrinks.
            "DaemonSet" => {
                self.world.daemonsets.remove(&key);
                self.world.daemonset_overhead_changed();
                self.world.dirty();
            }
            // The instance behind a node, terminated outside the controller.
            "Instance" => {
                let id = self
                    .world
                    .cluster
                    .nodes
                    .get(&d.name)
                    .map(|n| n.instance.id.clone())
                    .ok_or_else(|| {
                        SimError::Input(format!("{label}: delete: no Node {}", d.name))
                    })?;
                self.cloud
                    .delete(&id)
                    .map_err(|e| SimError::Input(format!("{label}: delete: {e}")))?;
            }
            other => {
                return Err(SimError::Input(format!(
                    "{label}: delete: kind {other:?} (Deployment, Pod, Node, NodePool, PodDisruptionBudget, DaemonSet, Instance)"
                )));
            }
        }
        Ok(())
    }

    /// A step's `interrupt`: EC2's message through the real queue, or straight to the
    /// controller without one.
    fn interrupt_step(
        &mut self,
        label: &str,
        x: &crate::api::scenario::Interrupt,
    ) -> Result<(), SimError> {
        let kind = match x.kind.as_deref().unwrap_or("spot") {
            "spot" => crate::interruption::Kind::SpotInterruption,
            "scheduled-change" => crate::interruption::Kind::ScheduledChange,
            "capacity-reservation" => crate::interruption::Kind::CapacityReservationInterruption,
            "stopping" => crate::interruption::Kind::StateChange("stopping".into()),
            other => {
                return Err(SimError::Input(format!(
                    "{label}: interrupt.kind {other:?} (spot, scheduled-change, capacity-reservation, stopping)"
                )));
            }
        };
        let Some(node) = self.world.cluster.nodes.get(&x.node) else {
            return Err(SimError::Input(format!(
                "{label}: interrupt: no Node {}",
                x.node
            )));
        };
        match &mut self.queue {
            // Through the real queue: EC2's message, as AWS documents it.
            Some(q) => {
                let id = node.instance.id.clone();
                q.send(&kind, &id)
                    .map_err(|e| SimError::Input(format!("{label}: interrupt: {e}")))?;
            }
            None => {
                let now = self.now();
                self.controller.interrupt(
                    now,
                    &x.node,
                    &kind,
                    &mut self.world,
                    self.cloud.as_mut(),
                );
            }
        }
        Ok(())
    }
}

/// How long a pod takes to stop once asked: the longest `preStop` sleep of its containers (a
/// process is taken to exit on SIGTERM at once otherwise; the grace period bounds it either way).
pub(super) fn pre_stop_seconds(spec: &k8s_openapi::api::core::v1::PodSpec) -> i64 {
    spec.containers
        .iter()
        .filter_map(|c| c.lifecycle.as_ref()?.pre_stop.as_ref()?.sleep.as_ref())
        .map(|s| s.seconds.max(0))
        .max()
        .unwrap_or(0)
}

/// A policy/v1 PodDisruptionBudget from a manifest.
pub(super) fn pdb(file: &str, document: serde_json::Value) -> Result<Pdb, SimError> {
    let b: k8s_openapi::api::policy::v1::PodDisruptionBudget = serde_json::from_value(document)
        .map_err(|e| SimError::Input(format!("{file}: PodDisruptionBudget: {e}")))?;
    crate::cluster::pdb::from_kube(&b).map_err(|e| SimError::Input(format!("{file}: {e}")))
}

/// Loads a Policy manifest into the registry: a built-in, or a local component (`file`, relative
/// to the manifest's directory). The simulator has no cluster to read ConfigMaps from and
/// fetches nothing, so other sources are refused with what to use instead.
pub(super) fn apply_policy(
    registry: &PolicyRegistry,
    file: &str,
    p: &crate::api::Policy,
) -> Result<(), SimError> {
    let name = p.metadata.name.clone().unwrap_or_default();
    let src = &p.spec.source;
    let wasm: std::borrow::Cow<'static, [u8]> = if let Some(builtin) = &src.builtin {
        let b = crate::policy::builtin::find(builtin).ok_or_else(|| {
            SimError::Input(format!(
                "{file}: Policy {name}: spec.source.builtin: no built-in {builtin:?} (built-ins: {})",
                crate::policy::builtin::names().join(", ")
            ))
        })?;
        b.wasm.into()
    } else if let Some(path) = &src.file {
        // A step's label is "FILE spec.steps[i].apply": paths are relative to FILE's directory.
        let manifest = file.split(" spec.steps[").next().unwrap_or(file);
        let dir = std::path::Path::new(manifest)
            .parent()
            .unwrap_or(std::path::Path::new(""));
        let at = dir.join(path);
        std::fs::read(&at)
            .map_err(|e| {
                SimError::Input(format!(
                    "{file}: Policy {name}: spec.source.file: cannot read {}: {e}",
                    at.display()
                ))
            })?
            .into()
    } else {
        return Err(SimError::Input(format!(
            "{file}: Policy {name}: the simulator reads builtin and file sources; {} is read by the controller in a cluster (use spec.source.file to try the component here)",
            src.describe()
        )));
    };
    let config = p
        .spec
        .config
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let limits = crate::policy::Limits {
        timeout: p
            .spec
            .limits
            .as_ref()
            .and_then(|l| l.timeout_millis)
            .map(|ms| Duration::from_millis(ms.into())),
        memory_mib: p
            .spec
            .limits
            .as_ref()
            .and_then(|l| l.memory_mib)
            .map(u64::from),
    };
    registry.apply(&name, &wasm, config, limits)?;
    Ok(())
}

/// A Node (or its NodePool) deleted by hand: tainted and deleting, unless it is already.
fn deleting_by_hand(n: &mut Node, t: i64) {
    if n.deletion.is_none() {
        n.taints.push(disrupted_taint());
        n.deletion = Some(Deletion::by_hand(t));
    }
}
