//! The reflectors: one watch per kind the controller reads, each keeping its objects in memory
//! (trimmed of managed fields, the annotations and the Node status nothing reads) and telling
//! one [`Notify`] of every change, so the core loop wakes when anything moved.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Node as KubeNode;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::Notify;

use crate::api::{EC2NodeClass, NodeClaim, NodePool};

/// The reflector stores, and a notification whenever any of them changes.
#[derive(Clone)]
pub struct Stores {
    pub pods: super::pods::PodCache,
    pub nodes: Store<KubeNode>,
    /// Untyped, so one NodePool that does not read (a wrong type the CRD let through) is that
    /// pool's problem, not a watch that fails for every pool.
    pub node_pools: Store<kube::api::DynamicObject>,
    pub node_claims: Store<NodeClaim>,
    pub node_classes: Store<EC2NodeClass>,
    pub pdbs: Store<PodDisruptionBudget>,
    pub daemonsets: Store<DaemonSet>,
    pub policies: Store<crate::api::Policy>,
    /// Only ConfigMaps labelled [`POLICY_CONFIG_MAP_LABEL`]: a cluster's ConfigMaps are many
    /// and big, and the controller needs the few that hold components. One store per namespace
    /// Policies may name (the chart grants ConfigMap reads there and nowhere else), or one for
    /// every namespace.
    pub policy_config_maps: Vec<Store<k8s_openapi::api::core::v1::ConfigMap>>,
    /// Those namespaces (empty: every namespace).
    pub config_map_namespaces: Vec<String>,
    /// Volumes decide where their pods may run.
    pub persistent_volumes: Store<k8s_openapi::api::core::v1::PersistentVolume>,
    pub persistent_volume_claims: Store<k8s_openapi::api::core::v1::PersistentVolumeClaim>,
    pub storage_classes: Store<k8s_openapi::api::storage::v1::StorageClass>,
    /// Which volumes are attached to which node: an instance waits for its to detach.
    pub volume_attachments: Store<k8s_openapi::api::storage::v1::VolumeAttachment>,
    pub changed: Arc<Notify>,
}

pub use crate::policy::source::POLICY_CONFIG_MAP_LABEL;

/// Starts one reflector per kind on the current runtime.
/// Starts every reflector. `config_map_namespaces`: where Policy components may live (empty:
/// every namespace).
pub fn start(client: &Client, config_map_namespaces: &[String]) -> Stores {
    let changed = Arc::new(Notify::new());
    Stores {
        // Pods are the bulk of memory at 20k: converted once, as they change.
        pods: super::pods::PodCache::start(Api::all(client.clone()), changed.clone()),
        nodes: reflect(
            Api::all(client.clone()),
            changed.clone(),
            |n: &mut KubeNode| {
                trim(n);
                if let Some(s) = n.status.as_mut() {
                    s.images = None;
                    s.volumes_attached = None;
                    s.volumes_in_use = None;
                }
            },
        ),
        node_pools: reflect_untyped::<NodePool>(client, changed.clone()),
        // A claim keeps its annotations (few: ours and its pool template's), which registration
        // copies onto its Node.
        node_claims: reflect(
            Api::all(client.clone()),
            changed.clone(),
            |c: &mut NodeClaim| {
                c.meta_mut().managed_fields = None;
            },
        ),
        node_classes: reflect(Api::all(client.clone()), changed.clone(), trim),
        pdbs: reflect(Api::all(client.clone()), changed.clone(), trim),
        daemonsets: reflect(Api::all(client.clone()), changed.clone(), trim),
        policies: reflect(Api::all(client.clone()), changed.clone(), trim),
        policy_config_maps: {
            let apis = if config_map_namespaces.is_empty() {
                vec![Api::all(client.clone())]
            } else {
                config_map_namespaces
                    .iter()
                    .map(|ns| Api::namespaced(client.clone(), ns))
                    .collect()
            };
            apis.into_iter()
                .map(|api| {
                    reflect_with(
                        api,
                        watcher::Config::default()
                            .labels(&format!("{POLICY_CONFIG_MAP_LABEL}=true")),
                        changed.clone(),
                        trim,
                    )
                })
                .collect()
        },
        config_map_namespaces: config_map_namespaces.to_vec(),
        persistent_volumes: reflect(Api::all(client.clone()), changed.clone(), trim),
        persistent_volume_claims: reflect(Api::all(client.clone()), changed.clone(), trim),
        volume_attachments: reflect(Api::all(client.clone()), changed.clone(), trim),
        storage_classes: reflect(
            Api::all(client.clone()),
            changed.clone(),
            |c: &mut k8s_openapi::api::storage::v1::StorageClass| {
                // Keeps the default-class annotation `trim` would drop.
                let default = c
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(DEFAULT_CLASS).cloned());
                trim(c);
                if let Some(v) = default {
                    c.metadata
                        .annotations
                        .get_or_insert_default()
                        .insert(DEFAULT_CLASS.into(), v);
                }
            },
        ),
        changed,
    }
}

/// The annotation that marks a cluster's default StorageClass.
const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";

/// Drops what no decision reads: managed fields and annotations other than ours.
fn trim<K: Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
    if let Some(a) = o.meta_mut().annotations.as_mut() {
        a.retain(|k, _| k.starts_with("dovetail.sh/") || k.starts_with("aws.dovetail.sh/"));
    }
}

/// Objects of `K`'s kind as they are stored, read into `K` one by one by their user.
pub(super) fn reflect_untyped<K>(
    client: &Client,
    changed: Arc<Notify>,
) -> Store<kube::api::DynamicObject>
where
    K: Resource<DynamicType = ()>,
{
    let ar = kube::api::ApiResource::erase::<K>(&());
    let writer = reflector::store::Writer::new(ar.clone());
    let reader = writer.as_reader();
    let stream = watcher(
        Api::<kube::api::DynamicObject>::all_with(client.clone(), &ar),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(trim);
    let stream = reflector::reflector(writer, stream);
    drive(stream, changed, resource_name(&ar.plural, &ar.group));
    reader
}

/// `nodes`, `nodeclaims.dovetail.sh`: a resource as RBAC rules name it.
fn resource_name(plural: &str, group: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

pub use super::watch_failure;

/// Runs a reflector's stream on the current runtime, telling `changed` of every event.
fn drive<T, E: std::fmt::Display>(
    stream: impl futures::Stream<Item = Result<T, E>> + Send + 'static,
    changed: Arc<Notify>,
    resource: String,
) {
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => changed.notify_one(),
                Err(e) => {
                    let why = watch_failure(&resource, &e);
                    tracing::warn!(resource = %resource, error = %why, "watch failed; retrying with backoff")
                }
            }
        }
    });
}

pub(super) fn reflect<K>(
    api: Api<K>,
    changed: Arc<Notify>,
    modify: impl FnMut(&mut K) + Send + 'static,
) -> Store<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    reflect_with(api, watcher::Config::default(), changed, modify)
}

fn reflect_with<K>(
    api: Api<K>,
    config: watcher::Config,
    changed: Arc<Notify>,
    modify: impl FnMut(&mut K) + Send + 'static,
) -> Store<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let resource = resource_name(
        &K::plural(&Default::default()),
        &K::group(&Default::default()),
    );
    let stream = watcher(api, config).default_backoff().modify(modify);
    let stream = reflector::reflector(writer, stream);
    drive(stream, changed, resource);
    reader
}

/// A sum over the stores' resource versions: different when any object of a kind that shapes
/// decisions (NodePools, node classes, PDBs) changed.
pub(super) fn stores_generation(stores: &Stores) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for np in stores.node_pools.state() {
        np.resource_version().hash(&mut h);
    }
    for c in stores.node_classes.state() {
        c.resource_version().hash(&mut h);
    }
    for b in stores.pdbs.state() {
        b.resource_version().hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod watch_tests {
    use super::*;

    #[test]
    fn a_forbidden_watch_names_the_rule_that_is_missing() {
        let why = watch_failure(
            "nodeclaims.dovetail.sh",
            &"ApiError: nodeclaims.dovetail.sh is forbidden: User cannot list (Forbidden): 403",
        );
        assert!(
            why.contains("resources [nodeclaims] in apiGroups [\"dovetail.sh\"]"),
            "{why}"
        );
        assert!(why.contains("[list, watch]"), "{why}");
        let core = watch_failure("pods", &"403 Forbidden");
        assert!(
            core.contains("resources [pods] in apiGroups [\"\"]"),
            "{core}"
        );
        assert_eq!(
            watch_failure("nodes", &"connection refused"),
            "watching nodes failed: connection refused"
        );
    }
}
