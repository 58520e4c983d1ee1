//! `dovetail record`: a cluster's history written as a journal ([`crate::journal`]), read-only.
//!
//! It lists and watches what the decisions read (pods, nodes, NodePools, EC2NodeClasses,
//! PodDisruptionBudgets, DaemonSets) — a read-only kubeconfig is enough, as for `dovetail top`
//! — and every interval writes what changed. Pods are stripped to what decisions read as they
//! arrive, so neither memory nor the journal holds their environment. A journal that reaches its
//! size limit is rotated (`FILE` → `FILE.1` → …) and the new part starts with a snapshot, so
//! every part replays on its own.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node as KubeNode, Pod};
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};

use super::stores::{reflect, reflect_untyped};
use super::{Error, Shutdown, unix_now};
use crate::api::{EC2NodeClass, NodePool};
use crate::journal::{self, Header, Recorder, StepOut, Trailer};
use crate::scheduling::model::labels;

/// What `dovetail record` is asked to do.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// The journal's path; rotated parts go beside it.
    pub out: PathBuf,
    /// How often changes are written.
    pub interval: Duration,
    /// A part's size at which it is rotated.
    pub max_bytes: u64,
    /// Rotated parts kept besides the current one.
    pub keep: u32,
    /// Stop after this long; `None`: until stopped.
    pub duration: Option<Duration>,
    /// How long the caches may take to sync.
    pub sync_timeout: Duration,
}

/// What a recording wrote.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Recorded {
    /// Parts written (1 without rotation).
    pub parts: u32,
    /// Bytes written over every part.
    pub bytes: u64,
    /// Steps written.
    pub steps: u64,
    /// Seconds recorded.
    pub seconds: i64,
}

/// The watches a recording reads.
struct Watches {
    pods: Store<Pod>,
    nodes: Store<KubeNode>,
    node_pools: Store<kube::api::DynamicObject>,
    node_classes: Store<EC2NodeClass>,
    pdbs: Store<k8s_openapi::api::policy::v1::PodDisruptionBudget>,
    daemonsets: Store<k8s_openapi::api::apps::v1::DaemonSet>,
    policies: Store<crate::api::Policy>,
}

/// One part of the journal being written.
struct Part {
    file: std::io::BufWriter<std::fs::File>,
    /// Seconds into the part come from a monotonic clock: a wall clock stepped back would
    /// write steps before the part's start.
    clock: std::time::Instant,
    bytes: u64,
    /// Bytes of its header and snapshot: a part holds at least those.
    base: u64,
}

impl Part {
    fn open(path: &Path, source: &str, started: i64, part: u32) -> Result<Part, Error> {
        let file = std::fs::File::create(path)
            .map_err(|e| Error::Runtime(format!("{}: {e}", path.display())))?;
        let mut p = Part {
            file: std::io::BufWriter::new(file),
            clock: std::time::Instant::now(),
            bytes: 0,
            base: 0,
        };
        let header = Header {
            journal: journal::FORMAT.into(),
            started,
            source: source.to_string(),
            part,
        };
        p.line(path, &serde_json::to_string(&header).unwrap_or_default())?;
        Ok(p)
    }

    fn line(&mut self, path: &Path, line: &str) -> Result<(), Error> {
        writeln!(self.file, "{line}")
            .and_then(|()| self.file.flush())
            .map_err(|e| Error::Runtime(format!("{}: {e}", path.display())))?;
        self.bytes += line.len() as u64 + 1;
        Ok(())
    }
}

/// Records until `stop` (or the duration) and returns what was written.
pub fn record(
    config: kube::Config,
    opts: &RecordOptions,
    stop: Shutdown,
) -> Result<Recorded, Error> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Error::Runtime(e.to_string()))?;
    let rt = crate::bridge::Bridge::owning(rt);
    let source = config.cluster_url.to_string();
    let client = {
        let _enter = rt.handle().enter();
        kube::Client::try_from(config)?
    };
    rt.wait(super::check_crds(&client))?;
    let changed = std::sync::Arc::new(tokio::sync::Notify::new());
    let w = {
        let _enter = rt.handle().enter();
        Watches {
            // Stripped as they arrive: the journal never needs the rest.
            pods: reflect(Api::all(client.clone()), changed.clone(), strip_pod),
            nodes: reflect(
                Api::all(client.clone()),
                changed.clone(),
                |n: &mut KubeNode| {
                    n.status = None;
                    n.meta_mut().managed_fields = None;
                },
            ),
            node_pools: reflect_untyped::<NodePool>(&client, changed.clone()),
            node_classes: reflect(Api::all(client.clone()), changed.clone(), |_| {}),
            pdbs: reflect(Api::all(client.clone()), changed.clone(), |_| {}),
            daemonsets: reflect(Api::all(client.clone()), changed.clone(), |_| {}),
            policies: reflect(Api::all(client.clone()), changed.clone(), |_| {}),
        }
    };
    let synced = rt.wait(async {
        tokio::time::timeout(opts.sync_timeout, async {
            let _ = w.pods.wait_until_ready().await;
            let _ = w.nodes.wait_until_ready().await;
            let _ = w.node_pools.wait_until_ready().await;
            let _ = w.node_classes.wait_until_ready().await;
            let _ = w.pdbs.wait_until_ready().await;
            let _ = w.daemonsets.wait_until_ready().await;
            let _ = w.policies.wait_until_ready().await;
        })
        .await
    });
    if synced.is_err() {
        return Err(Error::NotSynced(opts.sync_timeout));
    }

    let started = unix_now();
    let recording = std::time::Instant::now();
    let mut recorder = Recorder::default();
    let mut part = Part::open(&opts.out, &source, started, 0)?;
    let mut out = Recorded {
        parts: 1,
        ..Default::default()
    };
    loop {
        let at = |part: &Part| part.clock.elapsed().as_secs() as i64;
        observe(&w, &mut recorder);
        let done = stop.stopped() || opts.duration.is_some_and(|d| recording.elapsed() >= d);
        for step in recorder.flush(at(&part)) {
            part.line(
                &opts.out,
                &serde_json::to_string(&StepOut(&step)).unwrap_or_default(),
            )?;
            out.steps += 1;
        }
        if done {
            part.line(
                &opts.out,
                &serde_json::to_string(&Trailer { ended: at(&part) }).unwrap_or_default(),
            )?;
            out.bytes += part.bytes;
            out.seconds = recording.elapsed().as_secs() as i64;
            return Ok(out);
        }
        // Full: rotate — unless its snapshot alone fills it (a cluster bigger than the limit),
        // where a part then holds its snapshot and half a limit of changes.
        if part.bytes >= opts.max_bytes && part.bytes >= part.base + opts.max_bytes / 2 {
            part.line(
                &opts.out,
                &serde_json::to_string(&Trailer { ended: at(&part) }).unwrap_or_default(),
            )?;
            out.bytes += part.bytes;
            rotate(&opts.out, opts.keep)?;
            part = Part::open(&opts.out, &source, unix_now(), out.parts)?;
            out.parts += 1;
            for step in recorder.snapshot(0) {
                part.line(
                    &opts.out,
                    &serde_json::to_string(&StepOut(&step)).unwrap_or_default(),
                )?;
                out.steps += 1;
            }
            part.base = part.bytes;
        }
        // Changes within an interval are written together: a Deployment's replacement pod and
        // the pod it replaces cancel out.
        let until = std::time::Instant::now() + opts.interval;
        while std::time::Instant::now() < until && !stop.stopped() {
            std::thread::sleep(Duration::from_millis(50).min(opts.interval));
        }
    }
}

/// Feeds the recorder what the watches hold now.
fn observe(w: &Watches, recorder: &mut Recorder) {
    let managed: BTreeSet<String> = w
        .nodes
        .state()
        .iter()
        .filter(|n| n.labels().contains_key(labels::NODEPOOL))
        .map(|n| n.name_any())
        .collect();
    let mut live = BTreeSet::new();
    for pod in w.pods.state() {
        let on_unmanaged = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some_and(|n| !managed.contains(n));
        live.insert(journal::pod_id(&pod));
        recorder.pod(&pod, on_unmanaged);
    }
    recorder.retain_pods(&live);

    let mut objects = |kind: &str, items: Vec<(String, String, Option<serde_json::Value>)>| {
        let names: BTreeSet<String> = items.iter().map(|(ns, n, _)| format!("{ns}/{n}")).collect();
        for (ns, name, v) in items {
            recorder.object(kind, &ns, &name, v);
        }
        recorder.retain_objects(kind, &names);
    };
    objects(
        "NodePool",
        w.node_pools
            .state()
            .iter()
            .map(|p| {
                let v = serde_json::to_value(p.as_ref()).unwrap_or_default();
                (String::new(), p.name_any(), Some(journal::node_pool(&v)))
            })
            .collect(),
    );
    objects(
        "EC2NodeClass",
        w.node_classes
            .state()
            .iter()
            .map(|c| {
                let v = serde_json::to_value(c.as_ref()).unwrap_or_default();
                (String::new(), c.name_any(), Some(journal::node_class(&v)))
            })
            .collect(),
    );
    objects(
        "PodDisruptionBudget",
        w.pdbs
            .state()
            .iter()
            .map(|b| {
                (
                    b.namespace().unwrap_or_default(),
                    b.name_any(),
                    Some(journal::pdb(b)),
                )
            })
            .collect(),
    );
    objects(
        "DaemonSet",
        w.daemonsets
            .state()
            .iter()
            .map(|d| {
                let ns = d.namespace().unwrap_or_else(|| "default".into());
                let name = journal::daemon_set_name(&ns, &d.name_any());
                (ns, name, journal::daemon_set(d))
            })
            .collect(),
    );
    // Policies served by built-ins; a component in the cluster cannot travel in a journal
    // (`simulate --replay` names what is missing).
    objects(
        "Policy",
        w.policies
            .state()
            .iter()
            .filter_map(|p| Some((String::new(), p.name_any(), Some(journal::policy(p)?))))
            .collect(),
    );
}

/// Keeps of a pod only what the journal reads.
fn strip_pod(p: &mut Pod) {
    p.meta_mut().managed_fields = None;
    if let Some(a) = p.meta_mut().annotations.as_mut() {
        a.retain(|k, _| k == crate::cluster::DO_NOT_DISRUPT || k == "kubernetes.io/config.mirror");
    }
    if let Some(spec) = p.spec.as_mut() {
        let node_name = spec.node_name.take();
        *spec = journal::spec(spec);
        spec.node_name = node_name;
    }
    if let Some(s) = p.status.as_mut() {
        *s = k8s_openapi::api::core::v1::PodStatus {
            phase: s.phase.take(),
            ..Default::default()
        };
    }
}

/// `FILE` → `FILE.1` → … → `FILE.keep` (the oldest dropped).
fn rotate(path: &Path, keep: u32) -> Result<(), Error> {
    let numbered = |i: u32| PathBuf::from(format!("{}.{i}", path.display()));
    let io = |e: std::io::Error| Error::Runtime(format!("rotating {}: {e}", path.display()));
    if keep == 0 {
        return std::fs::remove_file(path).map_err(io);
    }
    let _ = std::fs::remove_file(numbered(keep));
    for i in (1..keep).rev() {
        if numbered(i).exists() {
            std::fs::rename(numbered(i), numbered(i + 1)).map_err(io)?;
        }
    }
    std::fs::rename(path, numbered(1)).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_shifts_parts_and_drops_the_oldest_beyond_keep() {
        let dir = std::env::temp_dir().join(format!("dovetail-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("journal.jsonl");
        let read = |p: &Path| std::fs::read_to_string(p).ok();
        for part in 0..4 {
            std::fs::write(&path, format!("part {part}")).unwrap();
            rotate(&path, 2).unwrap();
        }
        assert_eq!(read(&path), None, "the current part moved away");
        let numbered = |i: u32| PathBuf::from(format!("{}.{i}", path.display()));
        assert_eq!(
            read(&numbered(1)).as_deref(),
            Some("part 3"),
            "newest first"
        );
        assert_eq!(read(&numbered(2)).as_deref(), Some("part 2"));
        assert_eq!(read(&numbered(3)), None, "beyond keep: dropped");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
