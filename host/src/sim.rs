//! The simulator: the real provisioning code over manifests, an in-memory cloud and a virtual
//! clock. `dovetail simulate -f nodepool.yaml -f deploy.yaml` runs the manifests a user has.

use std::time::Duration;

use crate::api::manifest::{self, Manifest, ManifestError};
use crate::catalog;
use crate::cloud::sim::SimCloud;
use crate::policy::{EngineConfig, PolicyEngine, PolicyError, PolicyRegistry};
use crate::provisioning::{Outcome, Pool, provision};
use crate::scheduling::from_kube::{ConvertError, deployment_pods, node_pool, pending_pod};
use crate::scheduling::model::zero;
use crate::scheduling::{InstanceTypes, PendingPod};

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Zones of the simulated region.
    pub zones: Vec<String>,
    /// A batch closes after this long without a new pod…
    pub batch_idle: Duration,
    /// …or this long after its first pod.
    pub batch_max: Duration,
    /// From launch to a Ready node.
    pub launch_delay: Duration,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            zones: vec![
                "us-east-1a".into(),
                "us-east-1b".into(),
                "us-east-1c".into(),
            ],
            batch_idle: Duration::from_secs(1),
            batch_max: Duration::from_secs(10),
            launch_delay: Duration::from_secs(40),
        }
    }
}

/// Simulator errors.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Convert(#[from] ConvertError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("{0}")]
    Input(String),
}

/// What a simulation ended with.
#[derive(Debug, Clone)]
pub struct Report {
    pub pods: Vec<PendingPod>,
    pub outcome: Outcome,
    /// Seconds each scheduled pod waited, in pod order (`None`: never scheduled).
    pub pending: Vec<Option<f64>>,
}

impl Report {
    /// Cost of the launched nodes, USD per hour.
    pub fn cost_per_hour(&self) -> f64 {
        self.outcome
            .launched
            .iter()
            .map(|l| l.instance.offer.price)
            .sum()
    }

    /// The `q` quantile of pending times of scheduled pods, seconds.
    pub fn pending_quantile(&self, q: f64) -> Option<f64> {
        let mut waits: Vec<f64> = self.pending.iter().flatten().copied().collect();
        if waits.is_empty() {
            return None;
        }
        waits.sort_by(f64::total_cmp);
        Some(waits[((waits.len() as f64 * q).ceil() as usize).clamp(1, waits.len()) - 1])
    }
}

/// Runs manifests (name, text) through one provisioning pass: every pod pending at time zero.
pub fn simulate(files: &[(String, String)], opts: &SimOptions) -> Result<Report, SimError> {
    let mut pools = Vec::new();
    let mut pods = Vec::new();
    let registry = PolicyRegistry::new(PolicyEngine::new(EngineConfig::default())?);
    for (name, text) in files {
        for m in manifest::parse(name, text)? {
            match m {
                Manifest::NodePool(np) => {
                    let spec = node_pool(&np, zero(), zero())?;
                    pools.push(Pool {
                        resource: *np,
                        spec,
                    });
                }
                Manifest::Other { kind, document, .. } if kind == "Deployment" => {
                    let d = serde_json::from_value(document)
                        .map_err(|e| SimError::Input(format!("{name}: Deployment: {e}")))?;
                    pods.extend(deployment_pods(&d)?);
                }
                Manifest::Other { kind, document, .. } if kind == "Pod" => {
                    let p: k8s_openapi::api::core::v1::Pod = serde_json::from_value(document)
                        .map_err(|e| SimError::Input(format!("{name}: Pod: {e}")))?;
                    let meta = &p.metadata;
                    let id = format!(
                        "{}/{}",
                        meta.namespace.as_deref().unwrap_or("default"),
                        meta.name.as_deref().unwrap_or("pod")
                    );
                    let spec = p
                        .spec
                        .as_ref()
                        .ok_or_else(|| SimError::Input(format!("{name}: Pod {id}: no spec")))?;
                    pods.push(pending_pod(
                        &format!("Pod/{id}"),
                        "spec",
                        &id,
                        &meta.labels.clone().unwrap_or_default(),
                        spec,
                    )?);
                }
                Manifest::Policy(p) => apply_policy(&registry, name, &p)?,
                // EC2NodeClass and other kinds do not change a simulated round yet.
                _ => {}
            }
        }
    }
    if pools.is_empty() {
        return Err(SimError::Input("no NodePool in the given manifests".into()));
    }
    let entries = catalog::embedded();
    let zones: Vec<&str> = opts.zones.iter().map(String::as_str).collect();
    let cat = catalog::policy_catalog(&entries, &zones);
    let its = InstanceTypes::new(&entries, &cat);
    let mut cloud = SimCloud::new();
    let mut next = 0;
    // All pods arrive at once: the batch closes when the idle window passes.
    let decided_at = opts.batch_idle.min(opts.batch_max);
    let outcome = provision(
        1_790_000_000,
        &pods,
        &pools,
        &its,
        &cat,
        &registry,
        &mut cloud,
        &mut next,
    );
    let ready = (decided_at + opts.launch_delay).as_secs_f64();
    let mut pending = vec![None; pods.len()];
    for l in &outcome.launched {
        for &p in &l.pods {
            pending[p] = Some(ready);
        }
    }
    Ok(Report {
        pods,
        outcome,
        pending,
    })
}

/// Loads a Policy manifest into the registry (built-in sources; the simulator has no cluster to
/// read ConfigMaps from and fetches nothing).
fn apply_policy(
    registry: &PolicyRegistry,
    file: &str,
    p: &crate::api::Policy,
) -> Result<(), SimError> {
    let name = p.metadata.name.clone().unwrap_or_default();
    let Some(builtin) = &p.spec.source.builtin else {
        return Err(SimError::Input(format!(
            "{file}: Policy {name}: the simulator runs built-in sources only (spec.source.builtin)"
        )));
    };
    let b = crate::policy::builtin::find(builtin).ok_or_else(|| {
        SimError::Input(format!(
            "{file}: Policy {name}: spec.source.builtin: no built-in {builtin:?} (built-ins: {})",
            crate::policy::builtin::names().join(", ")
        ))
    })?;
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
    registry.apply(&name, b.wasm, config, limits)?;
    Ok(())
}
