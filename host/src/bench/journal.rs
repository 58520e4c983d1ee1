//! `dovetail bench journal`: how big a recorded hour is, and how fast it replays.
//!
//! A cluster of `pods` pods churns for `hours` virtual hours — 40 Deployments scaled up and down
//! every few minutes with their pods replaced as rollouts and evictions replace them, and a tenth
//! of the pods as Jobs' pods that come and go — fed to the recorder's core as the watch would
//! feed it every 10 seconds. The journal it writes is then replayed in the simulator with the
//! default policies.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use crate::journal::{self, Header, Recorder, StepOut, Trailer};

/// What one run measured.
#[derive(Debug, Clone)]
pub struct JournalFigures {
    pub pods: usize,
    pub hours: u32,
    pub bytes: u64,
    pub steps: u64,
    /// Wall clock of the replay.
    pub replay: Duration,
    /// Nodes launched in the replay.
    pub launched: u32,
}

fn pod(name: &str, deployment: Option<&str>, cpu_millis: u64) -> Pod {
    let (owner, labels) = match deployment {
        Some(d) => (
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{d}-5f7c9"), "uid": d, "controller": true}]),
            json!({"app": d, "pod-template-hash": "5f7c9"}),
        ),
        None => (
            json!([{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": name, "controller": true}]),
            json!({"app": "batch"}),
        ),
    };
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "bench", "labels": labels, "ownerReferences": owner},
        "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1",
            "resources": {"requests": {"cpu": format!("{cpu_millis}m"), "memory": "512Mi"}}}]},
    }))
    .expect("a pod")
}

/// Records `hours` of churn of `pods` pods and replays the journal.
pub fn run(pods: usize, hours: u32) -> Result<JournalFigures, crate::sim::SimError> {
    const DEPLOYMENTS: usize = 40;
    let jobs = pods / 10;
    let per_deployment = (pods - jobs) / DEPLOYMENTS;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n.max(1)
    };
    let mut recorder = Recorder::default();
    recorder.object(
        "NodePool",
        "",
        "default",
        Some(json!({"apiVersion": "dovetail.sh/v1", "kind": "NodePool", "metadata": {"name": "default"},
            "spec": {"template": {"spec": {"requirements": [
                {"key": "dovetail.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
                {"key": "aws.dovetail.sh/instance-family", "operator": "In", "values": ["m5", "c5", "r5"]}],
                "nodeClassRef": {"group": "aws.dovetail.sh", "kind": "EC2NodeClass", "name": "default"}}}}})),
    );
    // Live pods per Deployment (names), and the Jobs' pods.
    let mut live: Vec<Vec<String>> = vec![Vec::new(); DEPLOYMENTS];
    let mut serial = 0u64;
    let mut name = |prefix: &str| {
        serial += 1;
        format!("{prefix}-{serial:07}")
    };
    let cpu = |d: usize| 100 + (d as u64 % 8) * 150;
    let mut job_pods: Vec<String> = Vec::new();
    let mut lines = vec![
        serde_json::to_string(&Header {
            journal: journal::FORMAT.into(),
            started: 1_795_392_000,
            source: "bench".into(),
            part: 0,
        })
        .unwrap_or_default(),
    ];
    let mut steps = 0u64;
    let end = i64::from(hours) * 3600;
    for t in (0..=end).step_by(10) {
        if t == 0 {
            for (d, pods) in live.iter_mut().enumerate() {
                for _ in 0..per_deployment {
                    let n = name(&format!("web{d}"));
                    recorder.pod(&pod(&n, Some(&format!("web{d}")), cpu(d)), false);
                    pods.push(n);
                }
            }
            for _ in 0..jobs {
                let n = name("job");
                recorder.pod(&pod(&n, None, 250), false);
                job_pods.push(n);
            }
        } else {
            // Every 10 s: one Deployment's pod replaced (an eviction or a rollout step), a Job's
            // pod done and a new one started; every 5 minutes a Deployment scales by ±20%.
            let d = next(DEPLOYMENTS as u64) as usize;
            if let Some(old) = live[d].pop() {
                recorder.pod_gone(&format!("bench/{old}"));
                let n = name(&format!("web{d}"));
                recorder.pod(&pod(&n, Some(&format!("web{d}")), cpu(d)), false);
                live[d].insert(0, n);
            }
            let j = next(job_pods.len() as u64) as usize;
            if j < job_pods.len() {
                let done = job_pods.swap_remove(j);
                recorder.pod_gone(&format!("bench/{done}"));
                let n = name("job");
                recorder.pod(&pod(&n, None, 250), false);
                job_pods.push(n);
            }
            if t % 300 == 0 {
                let d = next(DEPLOYMENTS as u64) as usize;
                let target = per_deployment * (8 + next(5) as usize) / 10;
                while live[d].len() > target {
                    let old = live[d].pop().unwrap_or_default();
                    recorder.pod_gone(&format!("bench/{old}"));
                }
                while live[d].len() < target {
                    let n = name(&format!("web{d}"));
                    recorder.pod(&pod(&n, Some(&format!("web{d}")), cpu(d)), false);
                    live[d].push(n);
                }
            }
        }
        for s in recorder.flush(t) {
            lines.push(serde_json::to_string(&StepOut(&s)).unwrap_or_default());
            steps += 1;
        }
    }
    lines.push(serde_json::to_string(&Trailer { ended: end }).unwrap_or_default());
    let text = lines.join("\n") + "\n";
    let replay = journal::read("bench.jsonl", &text)
        .map_err(|e| crate::sim::SimError::Input(e.to_string()))?;
    let started = Instant::now();
    let report = crate::sim::simulate(
        &replay.manifests("bench.jsonl"),
        &crate::sim::SimOptions::default(),
    )?;
    Ok(JournalFigures {
        pods,
        hours,
        bytes: text.len() as u64,
        steps,
        replay: started.elapsed(),
        launched: report.launched,
    })
}
