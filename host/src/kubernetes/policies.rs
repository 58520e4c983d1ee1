//! The Policy controller: reads each Policy's component from its source, validates it off the
//! decision loop (compile, WIT version, the exports its NodePools need, `init`, canary rounds),
//! then swaps it in between two rounds. A refused version leaves the last good one serving; the
//! Policy's status and an Event say which digest serves and which was refused, and why.
//!
//! Every replica loads Policies (a new leader starts with warm components); only the leader
//! writes statuses and Events.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;

use super::Kube;
use super::act::condition;
use super::stores::{POLICY_CONFIG_MAP_LABEL, Stores};
use crate::api::Policy;
use crate::policy::canary::Roles;
use crate::policy::source::{self, FetchSettings, Fetched};
use crate::policy::{Limits, LoadedPolicy, PolicyError, PolicyRegistry, builtin};

/// How long decisions wait at start for Policies still loading, before NodePools that name
/// them fall back (a registry that never answers must not stop the cluster from scaling).
const FIRST_LOAD_WAIT: Duration = Duration::from_secs(60);

/// First wait before fetching again from a server that failed, and the longest.
const RETRY_FIRST: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// Whether the source is a server that may answer later (`url`, `oci`).
fn fetched_remotely(p: &Policy) -> bool {
    p.spec.source.url.is_some() || p.spec.source.oci.is_some()
}

/// One attempt to load a version of a Policy, and its outcome.
struct Outcome {
    name: String,
    key: String,
    result: Result<Serving, Refused>,
}

/// A loaded version, with its pinned OCI reference.
type Serving = (Arc<LoadedPolicy>, Option<String>);
/// A refusal, with the digest of the refused bytes when they were read.
type Refused = (PolicyError, Option<String>);

/// The Policy controller's memory: what was attempted, what serves, what was written.
pub struct PolicyLoader {
    settings: FetchSettings,
    /// Per Policy: the key of the version last attempted, and whether its outcome is in.
    attempts: HashMap<String, (String, bool)>,
    /// Per Policy: the pinned OCI reference of the serving version.
    pinned: HashMap<String, String>,
    /// When each Policy's first attempt started (cleared once it has an outcome).
    first: HashMap<String, std::time::Instant>,
    /// Policies whose fetch failed (the registry or server may come back): when to try again,
    /// and the backoff after that.
    retry: HashMap<String, (std::time::Instant, Duration)>,
    written: HashMap<String, serde_json::Value>,
    /// Per Policy: the shadow record last shown in its status, and when (it changes with every
    /// judged round; the status follows at most every [`SHADOW_STATUS_EVERY`] seconds).
    shadow_shown: HashMap<String, (i64, serde_json::Value)>,
    tx: mpsc::UnboundedSender<Outcome>,
    rx: mpsc::UnboundedReceiver<Outcome>,
}

impl PolicyLoader {
    pub fn new(settings: FetchSettings) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        PolicyLoader {
            settings,
            attempts: HashMap::new(),
            pinned: HashMap::new(),
            first: HashMap::new(),
            retry: HashMap::new(),
            written: HashMap::new(),
            shadow_shown: HashMap::new(),
            tx,
            rx,
        }
    }

    /// A new term of leadership: every status is written again.
    pub fn forget_written(&mut self) {
        self.written.clear();
    }

    /// A Policy some NodePool names whose first version is still loading (within
    /// [`FIRST_LOAD_WAIT`]): decisions wait for it rather than fall back at start.
    pub fn loading(&self) -> Option<&str> {
        // (Policies no NodePool names are loaded too; waiting on them costs little at start.)
        self.first
            .iter()
            .find(|(_, t)| t.elapsed() < FIRST_LOAD_WAIT)
            .map(|(n, _)| n.as_str())
    }

    /// Starts loading every Policy whose version changed, takes in the loads that finished
    /// (serving or refusing them), and stops serving deleted Policies. Writes statuses and
    /// Events when `leading`. Returns whether a serving version changed.
    pub fn reconcile(
        &mut self,
        stores: &Stores,
        registry: &Arc<PolicyRegistry>,
        kube: &Kube,
        leading: bool,
        now: i64,
    ) -> bool {
        let roles = roles(stores);
        let policies = stores.policies.state();
        for p in &policies {
            let name = p.name_any();
            let needs = roles.get(&name).copied().unwrap_or_default();
            let key = version(p, needs, stores);
            let retry_due = self
                .retry
                .get(&name)
                .is_some_and(|(at, _)| *at <= std::time::Instant::now());
            if self.attempts.get(&name).map(|(k, _)| k) == Some(&key) && !retry_due {
                continue;
            }
            tracing::info!(policy = %name, source = %p.spec.source.describe(), "loading policy");
            if !self.attempts.contains_key(&name) {
                self.first.insert(name.clone(), std::time::Instant::now());
            }
            self.attempts.insert(name.clone(), (key.clone(), false));
            if let Some((at, _)) = self.retry.get_mut(&name) {
                // In flight: its outcome sets the next try.
                *at = std::time::Instant::now() + RETRY_MAX * 12;
            }
            let load = Load {
                name,
                key,
                input: input(p, stores),
                needs,
                config: p
                    .spec
                    .config
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                limits: limits(p),
            };
            self.start(kube, registry, stores, load);
        }
        let mut changed = false;
        while let Ok(outcome) = self.rx.try_recv() {
            let Some((key, done)) = self.attempts.get_mut(&outcome.name) else {
                continue;
            };
            if *key != outcome.key {
                continue; // superseded by a newer version while it loaded
            }
            *done = true;
            self.first.remove(&outcome.name);
            let Some(policy) = policies.iter().find(|p| p.name_any() == outcome.name) else {
                continue;
            };
            let accepted = match outcome.result {
                Ok((loaded, pinned)) => {
                    self.retry.remove(&outcome.name);
                    registry.serve(loaded);
                    match pinned {
                        Some(p) => self.pinned.insert(outcome.name.clone(), p),
                        None => self.pinned.remove(&outcome.name),
                    };
                    changed = true;
                    true
                }
                Err((err, digest)) => {
                    if matches!(err, PolicyError::Fetch { .. }) && fetched_remotely(policy) {
                        let backoff = self
                            .retry
                            .get(&outcome.name)
                            .map_or(RETRY_FIRST, |(_, b)| (*b * 2).min(RETRY_MAX));
                        self.retry.insert(
                            outcome.name.clone(),
                            (std::time::Instant::now() + backoff, backoff),
                        );
                    } else {
                        self.retry.remove(&outcome.name);
                    }
                    registry.refuse(&outcome.name, digest, &err);
                    false
                }
            };
            if leading {
                self.event(kube, policy, registry, accepted);
            }
        }
        let gone: Vec<String> = self
            .attempts
            .keys()
            .filter(|n| !policies.iter().any(|p| p.name_any() == **n))
            .cloned()
            .collect();
        for name in gone {
            tracing::info!(policy = %name, "Policy deleted; it no longer serves");
            registry.remove(&name);
            self.attempts.remove(&name);
            self.first.remove(&name);
            self.pinned.remove(&name);
            self.retry.remove(&name);
            self.written.remove(&name);
            changed = true;
        }
        if leading {
            for p in &policies {
                self.write_status(kube, p, registry, now);
            }
        }
        changed
    }

    /// Fetches and compiles one version of a Policy in the background; its outcome comes back
    /// on the channel [`Self::reconcile`] takes in.
    fn start(&self, kube: &Kube, registry: &Arc<PolicyRegistry>, stores: &Stores, load: Load) {
        let Load {
            name,
            key,
            input,
            needs,
            config,
            limits,
        } = load;
        let (registry, settings, tx, changed) = (
            registry.clone(),
            self.settings.clone(),
            self.tx.clone(),
            stores.changed.clone(),
        );
        kube.rt.handle().spawn(async move {
            let fetched = match input {
                Input::Bytes(bytes) => Ok(Fetched {
                    digest: crate::policy::inspect::digest(&bytes),
                    bytes,
                    pinned: None,
                }),
                Input::Url { url, sha256 } => {
                    source::fetch_url(&name, &settings, &url, &sha256).await
                }
                Input::Oci(reference) => source::fetch_oci(&name, &settings, &reference).await,
                Input::Refused(err) => Err(err),
            };
            let result = match fetched {
                Err(e) => Err((e, None)),
                Ok(f) => {
                    let (digest, pinned) = (f.digest.clone(), f.pinned.clone());
                    let n = name.clone();
                    match tokio::task::spawn_blocking(move || {
                        registry.prepare(&n, &f.bytes, config, limits, needs)
                    })
                    .await
                    {
                        Ok(Ok(loaded)) => Ok((loaded, pinned)),
                        Ok(Err(e)) => Err((e, Some(digest))),
                        Err(join) => Err((PolicyError::Engine(join.to_string()), Some(digest))),
                    }
                }
            };
            let _ = tx.send(Outcome { name, key, result });
            changed.notify_one();
        });
    }

    fn event(&self, kube: &Kube, p: &Policy, registry: &PolicyRegistry, accepted: bool) {
        let name = p.name_any();
        let Some(s) = registry.status(&name) else {
            return;
        };
        let reference = p.object_ref(&());
        if accepted {
            kube.events.publish(
                reference,
                EventType::Normal,
                "Accepted",
                format!(
                    "serving {} (dovetail:policy@{}, {} bytes, exports {})",
                    s.serving_digest.unwrap_or_default(),
                    s.wit_version.unwrap_or_default(),
                    s.size.unwrap_or_default(),
                    s.exports.join(", ")
                ),
            );
        } else {
            let serving = match &s.serving_digest {
                Some(d) => format!("; {d} keeps serving"),
                None => "; no version serves".to_string(),
            };
            kube.events.publish(
                reference,
                EventType::Warning,
                s.reason.as_str(),
                format!("refused: {}{serving}", s.message),
            );
        }
    }

    fn write_status(&mut self, kube: &Kube, p: &Policy, registry: &PolicyRegistry, now: i64) {
        let name = p.name_any();
        let Some(s) = registry.status(&name) else {
            return; // still loading its first version
        };
        let shadow = match (registry.shadow_tally(&name), self.shadow_shown.get(&name)) {
            (None, _) => serde_json::Value::Null,
            (Some(_), Some((at, shown))) if now - at < SHADOW_STATUS_EVERY => shown.clone(),
            (Some(t), _) => {
                let v = serde_json::to_value(crate::api::policy::ShadowStatus::from(&t))
                    .unwrap_or_default();
                self.shadow_shown.insert(name.clone(), (now, v.clone()));
                v
            }
        };
        let key = json!({
            "generation": p.metadata.generation,
            "ready": s.ready,
            "reason": s.reason,
            "message": s.message,
            "digest": s.serving_digest,
            "refused": s.refused_digest,
            "pinned": self.pinned.get(&name),
            "shadow": shadow,
        });
        if self.written.get(&name) == Some(&key) {
            return;
        }
        let status = json!({"status": {
            "digest": s.serving_digest,
            "size": s.size,
            "witVersion": s.wit_version,
            "exports": s.exports,
            "pinned": self.pinned.get(&name),
            "refusedDigest": s.refused_digest,
            "observedGeneration": p.metadata.generation,
            "conditions": [condition("Ready", s.ready, &s.reason, &s.message, now)],
            "shadow": shadow,
        }});
        let api: Api<Policy> = Api::all(kube.client.clone());
        match kube
            .rt
            .wait(api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)))
        {
            Ok(_) => {
                self.written.insert(name, key);
            }
            Err(e) => {
                tracing::warn!(policy = %name, error = %e, "could not write the Policy status")
            }
        }
    }
}

/// One version of a Policy to load: what [`PolicyLoader::start`] needs of it.
struct Load {
    name: String,
    /// Its [`version`]: an outcome for an older key is dropped.
    key: String,
    input: Input,
    needs: Roles,
    config: Vec<(String, String)>,
    limits: Limits,
}

/// What a Policy's component is read from, once its bytes are not yet at hand.
enum Input {
    Bytes(Vec<u8>),
    Url { url: String, sha256: String },
    Oci(String),
    Refused(PolicyError),
}

/// The version of a Policy to load, as a key that changes when anything that goes into the
/// load changes (spec, the ConfigMap's bytes, the roles NodePools give it). Cheap: it runs for
/// every Policy on every pass of the loop, and copies nothing.
fn version(p: &Policy, needs: Roles, stores: &Stores) -> String {
    let mut key = format!(
        "{}|scoring={} consolidation={}",
        serde_json::to_string(&p.spec).unwrap_or_default(),
        needs.scoring,
        needs.consolidation
    );
    if let Some(c) = &p.spec.source.config_map
        && let Some(m) = config_map(stores, c)
    {
        match config_map_bytes(&m, &c.key) {
            Ok(bytes) => key.push_str(&format!("|{}", crate::policy::inspect::digest(bytes))),
            Err(detail) => key.push_str(&format!("|{detail}")),
        }
    }
    key
}

fn config_map(
    stores: &Stores,
    c: &crate::api::policy::ConfigMapSource,
) -> Option<std::sync::Arc<ConfigMap>> {
    stores
        .policy_config_maps
        .iter()
        .flat_map(|s| s.state())
        .find(|m| {
            m.metadata.namespace.as_deref() == Some(c.namespace.as_str())
                && m.metadata.name.as_deref() == Some(c.name.as_str())
        })
}

/// What a version is read from: its bytes when they are at hand, else where to fetch them.
fn input(p: &Policy, stores: &Stores) -> Input {
    let name = p.name_any();
    let src = &p.spec.source;
    let refused = |detail: String| {
        Input::Refused(PolicyError::SourceNotAllowed {
            policy: name.clone(),
            detail,
        })
    };
    if let Some(b) = &src.builtin {
        match builtin::find(b) {
            Some(b) => Input::Bytes(b.wasm.to_vec()),
            None => refused(format!(
                "spec.source.builtin: no built-in {b:?} (built-ins: {})",
                builtin::names().join(", ")
            )),
        }
    } else if let Some(c) = &src.config_map {
        let fetch = |detail: String| {
            Input::Refused(PolicyError::Fetch {
                policy: name.clone(),
                source_ref: src.describe(),
                detail,
            })
        };
        match config_map(stores, c) {
            Some(m) => match config_map_bytes(&m, &c.key) {
                Ok(bytes) => Input::Bytes(bytes.to_vec()),
                Err(detail) => fetch(detail),
            },
            None if !stores.config_map_namespaces.is_empty()
                && !stores.config_map_namespaces.contains(&c.namespace) =>
            {
                fetch(format!(
                    "the controller reads Policy ConfigMaps only in {} (settings.policy.configMapNamespaces / POLICY_CONFIGMAP_NAMESPACES), not in {}",
                    stores.config_map_namespaces.join(", "),
                    c.namespace
                ))
            }
            None => fetch(format!(
                "no ConfigMap {}/{} labelled {POLICY_CONFIG_MAP_LABEL}=true (the controller watches only labelled ConfigMaps; `dovetail policy configmap` writes the label)",
                c.namespace, c.name
            )),
        }
    } else if let Some(u) = &src.url {
        Input::Url {
            url: u.url.clone(),
            sha256: u.sha256.clone(),
        }
    } else if let Some(o) = &src.oci {
        Input::Oci(o.reference.clone())
    } else if src.file.is_some() {
        refused(
            "spec.source.file is read by `dovetail simulate` and `dovetail policy test` only; in a cluster use configMap, url or oci".into(),
        )
    } else {
        refused("spec.source names no source".into())
    }
}

fn config_map_bytes<'a>(m: &'a ConfigMap, key: &str) -> Result<&'a [u8], String> {
    if let Some(b) = m.binary_data.as_ref().and_then(|d| d.get(key)) {
        return Ok(&b.0);
    }
    let keys: Vec<&String> = m
        .binary_data
        .iter()
        .flat_map(|d| d.keys())
        .chain(m.data.iter().flat_map(|d| d.keys()))
        .collect();
    if m.data.as_ref().is_some_and(|d| d.contains_key(key)) {
        return Err(format!(
            "key {key:?} is in data, not binaryData: a component is binary (`dovetail policy configmap` writes binaryData)"
        ));
    }
    Err(format!("no key {key:?} in binaryData (keys: {keys:?})"))
}

fn limits(p: &Policy) -> Limits {
    let l = p.spec.limits.as_ref();
    Limits {
        timeout: l
            .and_then(|l| l.timeout_millis)
            .map(|ms| Duration::from_millis(ms.into())),
        memory_mib: l.and_then(|l| l.memory_mib).map(u64::from),
    }
}

/// Seconds between two writes of a shadow candidate's record to its status.
const SHADOW_STATUS_EVERY: i64 = 10;

/// The roles each policy name has in the NodePools that name it.
fn roles(stores: &Stores) -> BTreeMap<String, Roles> {
    let mut out: BTreeMap<String, Roles> = BTreeMap::new();
    for np in stores.node_pools.state() {
        let policies = &np.data["spec"]["policies"];
        let scoring = policies["scoring"].as_str().unwrap_or("cheapest");
        let consolidation = policies["consolidation"].as_str().unwrap_or("balanced");
        out.entry(scoring.to_string()).or_default().scoring = true;
        out.entry(consolidation.to_string())
            .or_default()
            .consolidation = true;
        // A shadow candidate must be able to do the role it shadows before it is judged.
        let shadow = &policies["shadow"];
        if let Some(s) = shadow["scoring"].as_str() {
            out.entry(s.to_string()).or_default().scoring = true;
        }
        if let Some(c) = shadow["consolidation"].as_str() {
            out.entry(c.to_string()).or_default().consolidation = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn a_component_in_data_instead_of_binary_data_is_refused_with_the_fix() {
        let mut m = ConfigMap {
            data: Some(BTreeMap::from([("policy.wasm".into(), "AGFzbQ".into())])),
            ..Default::default()
        };
        let err = config_map_bytes(&m, "policy.wasm").unwrap_err();
        assert!(err.contains("binaryData"), "{err}");
        m.binary_data = Some(BTreeMap::from([(
            "other.wasm".into(),
            ByteString(vec![0, 97]),
        )]));
        let err = config_map_bytes(&m, "x.wasm").unwrap_err();
        assert!(err.contains("other.wasm"), "{err}");
        assert_eq!(config_map_bytes(&m, "other.wasm").unwrap(), [0, 97]);
    }
}
