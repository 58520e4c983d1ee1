//! The simulator over the shipped examples: the real provisioning path with policies in WASM.

use dovetail::sim::Report;

use dovetail::capacity::CapacityType;
use dovetail::catalog;
use dovetail::scheduling::InstanceTypes;
use dovetail::scheduling::model::labels;
use dovetail::sim::{SimError, SimOptions, simulate};

fn run(files: &[(&str, String)]) -> Result<dovetail::sim::Report, SimError> {
    let files: Vec<(String, String)> = files
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    simulate(&files, &SimOptions::default())
}

/// A node at the end of the run with the CPU its pods request.
struct Placed {
    instance_type: String,
    zone: String,
    capacity_type: CapacityType,
    price: f64,
    pods: usize,
    cpu: u64,
}

fn nodes(report: &Report) -> Vec<Placed> {
    report
        .nodes
        .iter()
        .map(|n| {
            let pods: Vec<_> = report
                .pods
                .iter()
                .filter(|p| p.node.as_deref() == Some(n.name.as_str()))
                .collect();
            Placed {
                instance_type: n.instance.offer.instance_type.clone(),
                zone: n.instance.offer.zone.clone(),
                capacity_type: n.instance.offer.capacity_type,
                price: n.instance.offer.price,
                pods: pods.len(),
                cpu: pods.iter().map(|p| p.spec.requests.cpu_millis).sum(),
            }
        })
        .collect()
}

use dovetail_test_support::paths::example;

#[test]
fn inflate_on_spot_launches_the_cheapest_feasible_offering() {
    let report = run(&[("inflate-spot.yaml", example("inflate-spot.yaml"))]).unwrap();
    assert_eq!(report.pods.len(), 10);
    assert!(report.still_pending.is_empty(), "every pod scheduled");
    assert!(report.pods.iter().all(|p| p.running_since.is_some()));
    let entries = catalog::embedded();
    let zones = ["us-east-1a", "us-east-1b", "us-east-1c"];
    let its = InstanceTypes::new(&entries, &catalog::policy_catalog(&entries, &zones));
    for o in nodes(&report) {
        assert_eq!(o.capacity_type, CapacityType::Spot);
        let t = its
            .types
            .iter()
            .position(|t| t.name == o.instance_type)
            .unwrap() as u32;
        assert!(["c", "m", "r"].contains(&its.label(t, labels::CATEGORY).unwrap()));
        assert_eq!(its.label(t, labels::ARCH), Some("amd64"));
        assert!(
            its.label(t, labels::GENERATION)
                .unwrap()
                .parse::<u32>()
                .unwrap()
                > 2
        );
        // `cheapest` ranks first the lowest spot price among the feasible: nothing cheaper fits.
        let cpu = o.cpu;
        let cheaper = its.types.iter().enumerate().any(|(i, ty)| {
            let i = i as u32;
            ["c", "m", "r"].contains(&its.label(i, labels::CATEGORY).unwrap_or(""))
                && its.label(i, labels::ARCH) == Some("amd64")
                && its
                    .label(i, labels::GENERATION)
                    .and_then(|g| g.parse::<u32>().ok())
                    .is_some_and(|g| g > 2)
                && ty.allocatable.cpu_millis >= cpu
                && ty.allocatable.pods as usize >= o.pods
                && ty
                    .offerings
                    .iter()
                    .any(|x| x.capacity_type == CapacityType::Spot && x.price < o.price)
        });
        assert!(
            !cheaper,
            "a cheaper feasible spot offering than {} exists",
            o.instance_type
        );
    }
}

#[test]
fn swapping_cheapest_for_arm_first_changes_the_architecture() {
    let arm = run(&[("arm-and-amd.yaml", example("arm-and-amd.yaml"))]).unwrap();
    let amd = run(&[(
        "amd.yaml",
        example("arm-and-amd.yaml").replace("scoring: graviton", "scoring: cheapest"),
    )])
    .unwrap();
    let entries = catalog::embedded();
    let arch = |report: &dovetail::sim::Report| -> Vec<String> {
        nodes(report)
            .iter()
            .map(|l| {
                let e = entries.iter().find(|e| e.name == l.instance_type).unwrap();
                format!("{:?}", e.arch)
            })
            .collect()
    };
    assert!(!arm.nodes.is_empty() && !amd.nodes.is_empty());
    assert!(
        arch(&arm).iter().all(|a| a.contains("Arm64")),
        "{:?}",
        arch(&arm)
    );
    assert!(
        arch(&amd).iter().any(|a| a.contains("Amd64")),
        "{:?}",
        arch(&amd)
    );
    // Preference costs something, within the policy's tolerance.
    let cost = |r: &dovetail::sim::Report| nodes(r).iter().map(|l| l.price).sum::<f64>();
    assert!(cost(&arm) > cost(&amd) && cost(&arm) <= cost(&amd) * 1.1 * 1.1);
    let policies: Vec<_> = arm
        .events_where(|k| matches!(k, dovetail::sim::EventKind::Launched { .. }))
        .into_iter()
        .map(|e| match &e.kind {
            dovetail::sim::EventKind::Launched { policy, .. } => policy.clone(),
            _ => unreachable!(),
        })
        .collect();
    assert!(
        !policies.is_empty() && policies.iter().all(|p| p == "graviton"),
        "{policies:?}"
    );
}

#[test]
fn bad_policies_and_impossible_pods_are_reported() {
    let policy = |source: &str, config: &str| {
        format!(
            "apiVersion: dovetail.sh/v1\nkind: Policy\nmetadata: {{name: p}}\nspec:\n  source: {{{source}}}\n  config: {{{config}}}\n---\n{}",
            example("inflate-spot.yaml")
        )
    };
    let err = run(&[("p.yaml", policy("builtin: cheapets", ""))])
        .unwrap_err()
        .to_string();
    assert!(err.contains("no built-in \"cheapets\""), "{err}");
    let err = run(&[(
        "p.yaml",
        policy(
            "builtin: quiet-hours",
            "timezone: Mars/Olympus, windows: 'Mon 09:00-10:00'",
        ),
    )])
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("rejected its configuration") && err.contains("Mars/Olympus"),
        "{err}"
    );

    let gpu = example("inflate-spot.yaml")
        .replace("values: [\"c\", \"m\", \"r\"]", "values: [\"p\"]")
        .replace("values: [\"amd64\"]", "values: [\"arm64\"]");
    let report = run(&[("gpu.yaml", gpu)]).unwrap();
    assert_eq!(report.still_pending.len(), 10);
    let reason = &report.still_pending[0].1;
    assert!(
        reason.starts_with("NodePool default: no instance type satisfies"),
        "{reason}"
    );
    assert!(
        reason.contains("aws.dovetail.sh/instance-category In [p]"),
        "{reason}"
    );
    assert!(reason.contains("kubernetes.io/arch In [arm64]"), "{reason}");
}

#[test]
fn a_cpu_limit_is_never_exceeded_and_the_excess_waits_with_a_reason() {
    let report = run(&[("cpu-limit.yaml", example("cpu-limit.yaml"))]).unwrap();
    let entries = catalog::embedded();
    let launched_cpu: u64 = nodes(&report)
        .iter()
        .map(|l| {
            u64::from(
                entries
                    .iter()
                    .find(|e| e.name == l.instance_type)
                    .unwrap()
                    .vcpus,
            )
        })
        .sum();
    assert!(
        launched_cpu <= 100,
        "{launched_cpu} vCPUs launched under a 100-CPU limit"
    );
    let scheduled = report.pods.len() - report.still_pending.len();
    assert!(
        scheduled >= 80,
        "most of the limit is used: {scheduled} pods"
    );
    assert_eq!(report.still_pending.len(), 150 - scheduled);
    assert!(
        report.still_pending[0].1.contains("limits reached"),
        "{:?}",
        report.still_pending[0]
    );
}

#[test]
fn zone_spread_and_hostname_anti_affinity_are_honoured() {
    let report = run(&[("spread.yaml", example("spread.yaml"))]).unwrap();
    assert!(report.still_pending.is_empty());
    let mut per_zone = std::collections::BTreeMap::<String, usize>::new();
    for l in nodes(&report) {
        assert_eq!(l.pods, 1, "one web pod per node");
        *per_zone.entry(l.zone.clone()).or_default() += 1;
    }
    assert_eq!(
        per_zone.values().copied().collect::<Vec<_>>(),
        vec![3, 3, 3],
        "{per_zone:?}"
    );
}

#[test]
fn a_timeline_scales_up_and_down_with_bounded_pending_times() {
    let text = format!(
        "{}\n---\napiVersion: sim.dovetail.sh/v1\nkind: Scenario\nmetadata: {{name: day}}\nspec:\n  duration: 2h\n  steps:\n    - at: 10m\n      scale: {{deployment: inflate, replicas: 40}}\n    - at: 10m30s\n      scale: {{deployment: inflate, replicas: 60}}\n    - at: 1h\n      scale: {{deployment: inflate, replicas: 5}}\n",
        example("inflate-spot.yaml")
    );
    let report = run(&[("day.yaml", text)]).unwrap();
    assert_eq!(report.pods.len(), 5);
    assert!(report.still_pending.is_empty());
    // Every pod waited for at most one batch window and one launch.
    let opts = SimOptions::default();
    let bound = (opts.batch_max + opts.launch_delay).as_secs_f64() + 1.0;
    let p99 = report.pending_quantile(0.99).unwrap();
    assert!(p99 <= bound, "pending p99 {p99}s > {bound}s");
    assert!(report.pending_quantile(0.5).unwrap() <= p99);
    assert_eq!(
        report.pending_seconds.len(),
        60 + report.evictions as usize,
        "one wait per pod created, evicted pods' replacements included"
    );
    // Capacity followed the load up and back down.
    let peak: usize = {
        let mut live = 0i64;
        let mut peak = 0i64;
        for e in &report.events {
            match e.kind {
                dovetail::sim::EventKind::Launched { .. } => live += 1,
                dovetail::sim::EventKind::Terminated { .. } => live -= 1,
                _ => {}
            }
            peak = peak.max(live);
        }
        peak as usize
    };
    assert!(
        peak > report.nodes.len(),
        "peak {peak} nodes, {} at the end",
        report.nodes.len()
    );
    let total_cpu: u64 = report.pods.iter().map(|p| p.spec.requests.cpu_millis).sum();
    assert_eq!(total_cpu, 2500);
    assert!(report.cost_usd > 0.0);
}

#[test]
fn a_malformed_scenario_names_the_file_line_and_field() {
    let base = example("inflate-spot.yaml");
    let bad_field = format!(
        "{base}\n---\napiVersion: sim.dovetail.sh/v1\nkind: Scenario\nmetadata: {{name: x}}\nspec:\n  steps:\n    - at: 1m\n      scael: {{deployment: inflate, replicas: 2}}\n"
    );
    let line = bad_field.lines().position(|l| l.contains("scael")).unwrap() + 1;
    let err = run(&[("s.yaml", bad_field)]).unwrap_err().to_string();
    assert!(err.starts_with(&format!("s.yaml:{line}:")), "{err}");
    assert!(err.contains("scael"), "{err}");

    let two = format!(
        "{base}\n---\napiVersion: sim.dovetail.sh/v1\nkind: Scenario\nmetadata: {{name: x}}\nspec:\n  steps:\n    - at: 1m\n      scale: {{deployment: inflate, replicas: 2}}\n      delete: {{kind: Node, name: n}}\n"
    );
    let err = run(&[("s.yaml", two)]).unwrap_err().to_string();
    assert!(
        err.contains("spec.steps[0]") && err.contains("exactly one"),
        "{err}"
    );

    let at = format!(
        "{base}\n---\napiVersion: sim.dovetail.sh/v1\nkind: Scenario\nmetadata: {{name: x}}\nspec:\n  steps:\n    - at: soon\n      scale: {{deployment: inflate, replicas: 2}}\n"
    );
    let err = run(&[("s.yaml", at)]).unwrap_err().to_string();
    assert!(
        err.contains("spec.steps[0].at") && err.contains("soon"),
        "{err}"
    );

    let missing = format!(
        "{base}\n---\napiVersion: sim.dovetail.sh/v1\nkind: Scenario\nmetadata: {{name: x}}\nspec:\n  steps:\n    - at: 1m\n      scale: {{deployment: deflate, replicas: 2}}\n"
    );
    let err = run(&[("s.yaml", missing)]).unwrap_err().to_string();
    assert!(err.contains("no Deployment default/deflate"), "{err}");
}

#[test]
fn batch_windows_are_configurable_per_scenario() {
    // Pods arriving every 3 s keep a batch with a 5 s idle window open until its 20 s maximum.
    let mut steps = String::new();
    for i in 1..=10 {
        // The last three arrivals are big (80 more pods): the first batch's nodes cannot hold
        // them, so the second batch has to launch.
        let replicas = if i <= 7 { 10 + i } else { 80 + i };
        steps.push_str(&format!(
            "    - at: {}s\n      scale: {{deployment: inflate, replicas: {replicas}}}\n",
            60 + 3 * i,
        ));
    }
    let text = format!(
        "{}\n---\napiVersion: sim.dovetail.sh/v1\nkind: Scenario\nmetadata: {{name: b}}\nspec:\n  duration: 10m\n  batchIdle: 5s\n  batchMax: 20s\n  steps:\n{steps}",
        example("inflate-spot.yaml")
    );
    let report = run(&[("b.yaml", text)]).unwrap();
    let rounds: Vec<i64> = report
        .events
        .iter()
        .filter(|e| matches!(e.kind, dovetail::sim::EventKind::Launched { .. }) && e.at > 60)
        .map(|e| e.at)
        .collect();
    // Arrivals at 63…81 s: the batch closes at its 20 s maximum (83 s), not 5 s after each
    // pod. Arrivals at 84, 87, 90 s: a new batch closing 5 s after the last (95 s).
    assert_eq!(rounds.first(), Some(&83), "{rounds:?}");
    assert_eq!(
        rounds.last(),
        Some(&95),
        "the second batch launched: {rounds:?}"
    );
    assert!(rounds.iter().all(|&t| t == 83 || t == 95), "{rounds:?}");
}

#[test]
fn the_summary_prints_what_the_report_holds_and_a_comparison_its_difference() {
    let spot = run(&[("a.yaml", example("inflate-spot.yaml"))]).unwrap();
    let text = spot.summary();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("instance type"), "{text}");
    // One row per (type, capacity) that ends the run, with its node count.
    let rows: Vec<&str> = lines[1..]
        .iter()
        .take_while(|l| !l.starts_with("pods:"))
        .copied()
        .collect();
    let nodes: usize = rows
        .iter()
        .map(|r| {
            r.split_whitespace()
                .nth(2)
                .unwrap()
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert_eq!(nodes, spot.nodes.len(), "{text}");
    let running = spot
        .pods
        .iter()
        .filter(|p| p.running_since.is_some())
        .count();
    assert!(
        text.contains(&format!("pods: {running} running of {}", spot.pods.len())),
        "{text}"
    );
    assert!(
        text.contains(&format!("nodes launched: {};", spot.launched)),
        "{text}"
    );
    assert!(
        text.contains(&format!("{:.4} $/hour at the end", spot.cost_per_hour())),
        "{text}"
    );
    // Beside it, the LP bound of the running pods: below what runs, and above nothing; and
    // the looser one that pools each resource over the fleet, below it.
    let bound = spot.bound_per_hour().expect("a bound");
    assert!(bound > 0.0 && bound <= spot.cost_per_hour(), "{bound}");
    let pooled = spot.pooled_bound_per_hour.expect("a pooled bound");
    assert!(pooled > 0.0 && pooled <= bound + 1e-9, "{pooled} {bound}");
    assert!(
        text.contains(&format!(
            "(LP bound for the running pods, each on a type it fits, {bound:.4} $/hour: {:.2}×; with each resource pooled over the fleet {pooled:.4} $/hour: {:.2}×)",
            spot.cost_per_hour() / bound,
            spot.cost_per_hour() / pooled
        )),
        "{text}"
    );
    // The same run against itself differs by nothing, and says so without a sign.
    let same = spot.difference(&spot).to_string();
    assert_eq!(
        same.lines().next(),
        Some("cost over the run: 0.0000 $ (0.0%)"),
        "{same}"
    );
    // On demand costs more than spot: the difference is positive and matches the runs.
    let od = run(&[(
        "b.yaml",
        example("inflate-spot.yaml").replace("[\"spot\"]", "[\"on-demand\"]"),
    )])
    .unwrap();
    let d = spot.difference(&od);
    assert!(d.cost_usd > 0.0, "{d:?}");
    assert!(
        d.to_string().starts_with(&format!(
            "cost over the run: +{:.4} $",
            od.cost_usd - spot.cost_usd
        )),
        "{d}"
    );
}

/// Budgets and timelines the API server (or the simulator) would refuse are refused, each with
/// its own message — never read as something wider or silently skipped.
#[test]
fn invalid_budgets_and_scenarios_are_refused_with_their_own_message() {
    let base = example("inflate-spot.yaml");
    let pdb = |spec: &str| {
        format!(
            "{base}\n---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {{name: web}}\nspec:\n{spec}"
        )
    };
    let scenario = |steps: &str| {
        format!(
            "{base}\n---\napiVersion: sim.dovetail.sh/v1\nkind: Scenario\nmetadata: {{name: s}}\nspec:\n  steps:\n{steps}"
        )
    };
    let rows: Vec<(&str, String, &str)> = vec![
        (
            "an unknown selector operator",
            pdb(
                "  maxUnavailable: 1\n  selector:\n    matchExpressions: [{key: app, operator: Matches, values: [web]}]\n",
            ),
            "spec.selector.matchExpressions[0].operator",
        ),
        (
            "minAvailable and maxUnavailable together",
            pdb("  minAvailable: 1\n  maxUnavailable: 1\n  selector: {matchLabels: {app: web}}\n"),
            "cannot both be set",
        ),
        (
            "a percentage that is not one",
            pdb("  maxUnavailable: \"ten%\"\n  selector: {matchLabels: {app: web}}\n"),
            "spec.maxUnavailable",
        ),
        (
            "a step at no time",
            scenario("    - at: soon\n      scale: {deployment: inflate, replicas: 2}\n"),
            "soon",
        ),
        (
            "a step scaling a Deployment that does not exist",
            scenario("    - at: 1m\n      scale: {deployment: nowhere, replicas: 2}\n"),
            "nowhere",
        ),
    ];
    let mut messages = std::collections::BTreeSet::new();
    for (what, text, needle) in &rows {
        let err = run(&[("x.yaml", text.clone())])
            .expect_err(what)
            .to_string();
        assert!(err.contains(needle), "{what}: names {needle}: {err}");
        messages.insert(err);
    }
    assert_eq!(messages.len(), rows.len(), "{messages:#?}");
}

#[test]
fn karpenter_v1_manifests_convert_and_the_result_runs_in_the_simulator() {
    let text = include_str!("manifests/karpenter-v1.yaml");
    let converted = dovetail::api::convert::convert("karpenter-v1.yaml", text).unwrap();
    assert_eq!(converted.changed, 3, "NodePool, EC2NodeClass, Deployment");
    assert!(
        !converted.yaml.contains("karpenter.sh/capacity-type")
            && !converted.yaml.contains("karpenter.k8s.aws/")
            && !converted.yaml.contains("karpenter.sh/do-not-disrupt"),
        "{}",
        converted.yaml
    );
    assert!(converted.yaml.contains("dovetail.sh/do-not-disrupt"));
    let notes = converted.notes.join("\n");
    assert!(
        notes.contains("EC2NodeClass/default: spec.capacityReservationSelectorTerms has no Dovetail equivalent; dropped"),
        "{notes}"
    );
    assert!(
        notes.contains("karpenter.sh/discovery"),
        "the discovery tag is pointed out: {notes}"
    );
    assert!(
        notes.contains("spec.role KarpenterNodeRole-my-cluster") && notes.contains("iam:PassRole"),
        "the role our policy will not pass is pointed out: {notes}"
    );
    let report = run(&[("converted.yaml", converted.yaml)]).unwrap();
    assert_eq!(report.pods.len(), 5);
    assert!(
        report.pods.iter().all(|p| p.node.is_some()),
        "every inflate pod runs"
    );
    for n in nodes(&report) {
        assert_eq!(
            n.capacity_type,
            CapacityType::OnDemand,
            "the converted nodeSelector holds"
        );
        assert!(
            !n.instance_type.starts_with("c5."),
            "the converted affinity holds: {}",
            n.instance_type
        );
        assert!(
            ["c", "m", "r"]
                .iter()
                .any(|c| n.instance_type.starts_with(c)),
            "the converted requirements hold: {}",
            n.instance_type
        );
    }
}

#[test]
fn pods_follow_their_volumes_zones_and_return_to_them() {
    let r = run(&[("zonal-volumes.yaml", example("zonal-volumes.yaml"))]).unwrap();
    assert!(r.still_pending.is_empty(), "{:?}", r.still_pending);
    let zone_of = |app: &str| -> String {
        let pod = r
            .pods
            .iter()
            .find(|p| p.spec.name.starts_with(&format!("default/{app}-")))
            .unwrap();
        let node = r
            .nodes
            .iter()
            .find(|n| Some(&n.name) == pod.node.as_ref())
            .unwrap();
        node.instance.offer.zone.clone()
    };
    // A bound volume's zone, and a class's allowed topology.
    assert_eq!(zone_of("postgres"), "us-east-1b");
    assert_eq!(zone_of("cache"), "us-east-1c");
    // The default class made queue's volume where its first pod landed; the pod's successor,
    // after that node was deleted, went back to that zone on a new node.
    let first = r.events_where(
        |k| matches!(k, dovetail::sim::EventKind::Launched { node, .. } if node == "default-00001"),
    );
    let dovetail::sim::EventKind::Launched { zone, .. } = &first[0].kind else {
        unreachable!()
    };
    assert!(r.nodes.iter().all(|n| n.name != "default-00001"));
    assert_eq!(&zone_of("queue"), zone);
    assert!(r.pods.iter().all(|p| p.running_since.is_some()));
}

/// The report's charts and `top`'s replay read the timeline; the summary reads `end`: the same
/// fleet, so what they show at the end cannot differ from what the summary prints.
#[test]
fn the_timeline_follows_the_run_and_ends_at_the_summarys_fleet() {
    let files = vec![(
        "consolidation-lab.yaml".to_string(),
        example("consolidation-lab.yaml"),
    )];
    let plain = simulate(&files, &SimOptions::default()).unwrap();
    assert!(plain.timeline.is_empty(), "no timeline unless asked");
    let opts = SimOptions {
        timeline: true,
        ..SimOptions::default()
    };
    let report = simulate(&files, &opts).unwrap();
    let last = report.timeline.last().expect("frames");
    assert_eq!(last.fleet, report.end);
    assert_eq!(last.at, report.duration_secs);
    assert_eq!(report.end.cost_per_hour, plain.end.cost_per_hour);
    assert!(
        report.timeline.windows(2).all(|w| w[0].at < w[1].at),
        "one frame per moment, in order"
    );
    // The fleet grew to two nodes, then consolidation took one away; the counters follow.
    let peak = report.timeline.iter().map(|f| f.fleet.nodes.len()).max();
    assert_eq!(peak, Some(2));
    assert_eq!(report.end.nodes.len(), 1);
    assert_eq!(last.disruptions, report.disruptions);
    assert_eq!(last.evictions, report.evictions);
    // A frame holds until the next one; a pending pod's wait grows in between.
    let waited = report
        .timeline
        .windows(2)
        .filter_map(|w| w[0].fleet.later(w[1].at - w[0].at).oldest_pending_secs)
        .max()
        .unwrap();
    assert!(
        waited >= 40,
        "pods wait at least for their node's boot, {waited}s"
    );
}

#[test]
fn a_node_class_with_max_pods_gets_no_node_with_more_pods_than_that() {
    let tiny = |class_extra: &str| {
        example("inflate-spot.yaml")
            .replace("replicas: 10", "replicas: 120")
            .replace("cpu: 500m", "cpu: 10m")
            .replace(
                "  role: \"KarpenterNodeRole-my-cluster\"",
                &format!("  role: \"KarpenterNodeRole-my-cluster\"{class_extra}"),
            )
    };
    let most = |report: &Report| nodes(report).iter().map(|n| n.pods).max().unwrap();
    let free = run(&[("tiny.yaml", tiny(""))]).unwrap();
    assert!(free.still_pending.is_empty());
    assert!(
        most(&free) > 20,
        "without the setting a node holds {}",
        most(&free)
    );
    let capped = run(&[("tiny.yaml", tiny("\n  kubelet:\n    maxPods: 20"))]).unwrap();
    assert!(capped.still_pending.is_empty());
    assert!(most(&capped) <= 20, "a node holds {} pods", most(&capped));
    // A value kubelet would refuse is refused at its field.
    let bad = run(&[("tiny.yaml", tiny("\n  kubelet:\n    maxPods: -1"))]).unwrap_err();
    assert!(bad.to_string().contains("spec.kubelet.maxPods"), "{bad}");
}

fn tutorial(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../docs/tutorial/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// The fleet as (instance type, zone, capacity type) per node, sorted.
fn fleet(report: &Report) -> Vec<(String, String, CapacityType)> {
    let mut f: Vec<_> = nodes(report)
        .into_iter()
        .map(|n| (n.instance_type, n.zone, n.capacity_type))
        .collect();
    f.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    f
}

/// The manifests with `shadow` set under the first NodePool's `spec.policies`.
fn with_shadow(manifests: &str, shadow: &str) -> String {
    let at = manifests.find("kind: NodePool").expect("a NodePool");
    let spec = at + manifests[at..].find("\nspec:\n").expect("its spec") + "\nspec:\n".len();
    let mut out = manifests.to_string();
    match manifests[at..].find("\n  policies:\n") {
        Some(p) => out.insert_str(
            at + p + "\n  policies:\n".len(),
            &format!("    shadow: {shadow}\n"),
        ),
        None => out.insert_str(spec, &format!("  policies:\n    shadow: {shadow}\n")),
    }
    out
}

#[test]
fn a_shadow_scorer_is_judged_on_every_launch_and_changes_none() {
    let cluster = tutorial("cluster.yaml");
    let serving = run(&[("cluster.yaml", cluster.clone())]).unwrap();
    // arm-first taking arm64 up to twice the price of amd64: it disagrees with cheapest.
    let candidate = "apiVersion: dovetail.sh/v1\nkind: Policy\nmetadata: {name: graviton}\n\
                     spec:\n  source: {builtin: arm-first}\n  config: {tolerance: \"1.0\"}\n";
    let shadowed = run(&[
        ("candidate.yaml", candidate.to_string()),
        ("cluster.yaml", with_shadow(&cluster, "{scoring: graviton}")),
    ])
    .unwrap();
    assert_eq!(
        fleet(&shadowed),
        fleet(&serving),
        "cheapest decides every launch"
    );
    assert_eq!(shadowed.cost_usd, serving.cost_usd);
    let t = &shadowed.shadows["graviton"];
    assert_eq!(
        t.compared,
        u64::from(serving.launched),
        "one comparison per launch"
    );
    assert!(
        t.agreed < t.compared,
        "arm-first disagrees on the amd64 launches: {t:?}"
    );
    assert!(t.cost_delta_per_hour > 0.0, "{t:?}");
    assert_eq!(t.failures, 0);
    let c = t.recent.back().expect("a disagreement kept");
    assert!(c.shadow.starts_with("c6g."), "{c:?}");
    let summary = shadowed.summary();
    assert!(
        summary.contains("shadow graviton (scoring beside cheapest: "),
        "{summary}"
    );
    assert!(shadowed.decisions_text().contains("shadow disagrees"));
    assert!(serving.shadows.is_empty());
}

#[test]
fn a_shadow_consolidator_is_judged_on_every_round_with_moves_and_changes_none() {
    let cluster = tutorial("consolidation.yaml");
    let serving = run(&[("consolidation.yaml", cluster.clone())]).unwrap();
    let shadowed = run(&[(
        "consolidation.yaml",
        with_shadow(&cluster, "{consolidation: empty-only}"),
    )])
    .unwrap();
    assert_eq!(fleet(&shadowed), fleet(&serving));
    assert_eq!(shadowed.disruptions, serving.disruptions);
    assert_eq!(shadowed.evictions, serving.evictions);
    let t = &shadowed.shadows["empty-only"];
    assert!(t.compared > 0, "{t:?}");
    // The record's serving side is what balanced chose; the host may have overruled some.
    assert!(
        t.disruptions_serving >= u64::from(serving.disruptions.values().sum::<u32>()),
        "{t:?} {:?}",
        serving.disruptions
    );
    assert!(
        t.disruptions_shadow < t.disruptions_serving,
        "empty-only would leave the under-used nodes: {t:?}"
    );
}

#[test]
fn a_panicking_shadow_fails_alone() {
    let cluster = tutorial("cluster.yaml");
    let serving = run(&[("cluster.yaml", cluster.clone())]).unwrap();
    let sly = format!(
        "apiVersion: dovetail.sh/v1\nkind: Policy\nmetadata: {{name: sly}}\nspec:\n  source: {{file: {}}}\n  config: {{mode: sly-trap}}\n",
        dovetail::policy::builtin::fixture_path("hostile").display()
    );
    let shadowed = run(&[
        ("sly.yaml", sly),
        ("cluster.yaml", with_shadow(&cluster, "{scoring: sly}")),
    ])
    .unwrap();
    assert_eq!(fleet(&shadowed), fleet(&serving));
    let t = &shadowed.shadows["sly"];
    assert_eq!(t.compared, 0, "{t:?}");
    assert!(t.failures > 0, "{t:?}");
    assert!(
        !shadowed.policy_failures.contains_key("cheapest"),
        "the serving policy never failed"
    );
}

#[test]
fn a_claim_whose_node_never_registers_is_deleted_with_its_instance_after_the_ttl() {
    use dovetail::controller::EventKind;
    let opts = SimOptions {
        never_join: vec![1],
        ..SimOptions::default()
    };
    let files = vec![(
        "inflate-spot.yaml".to_string(),
        example("inflate-spot.yaml"),
    )];
    // The first claim's instance, and the last moment's instances.
    let mut first: Option<(String, String, i64)> = None;
    let mut last_instances: Vec<String> = Vec::new();
    let report = dovetail::sim::simulate_watched(&files, &opts, &mut |m| {
        if first.is_none()
            && let Some(n) = m.cluster.nodes.values().next()
        {
            first = Some((
                n.name.clone(),
                n.instance.id.clone(),
                n.launched_at - m.now + m.t,
            ));
        }
        last_instances = m.instances.iter().map(|i| i.id.clone()).collect();
        Ok(())
    })
    .unwrap();
    let (claim, instance, launched) = first.expect("a claim was launched");
    let never = report
        .events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::NeverJoined {
                node,
                instance: i,
                waited_seconds,
            } if *node == claim => Some((e.at, i.clone(), *waited_seconds)),
            _ => None,
        })
        .expect("the claim is reported as never joined");
    let ttl = dovetail::lifecycle::REGISTRATION_TTL.as_secs() as i64;
    assert_eq!(never.1, instance);
    assert!(never.2 > ttl, "not before the TTL: waited {}s", never.2);
    assert!(
        never.0 - launched <= ttl + 2,
        "deleted {}s after launch",
        never.0 - launched
    );
    assert!(
        report.nodes.iter().all(|n| n.name != claim),
        "the claim is gone"
    );
    assert!(
        !last_instances.contains(&instance),
        "its instance is terminated"
    );
    // Its pods were provisioned again: everything runs, on registered, initialized nodes.
    assert!(report.still_pending.is_empty());
    assert!(report.pods.iter().all(|p| p.running_since.is_some()));
    assert!(report.launched >= 2);
    assert!(
        report
            .nodes
            .iter()
            .all(|n| n.lifecycle.registered && n.lifecycle.initialized),
        "{:?}",
        report
            .nodes
            .iter()
            .map(|n| &n.lifecycle)
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_launch_delay_past_the_registration_ttl_is_refused_with_why() {
    let scenario = format!(
        "{}\n---\napiVersion: sim.dovetail.sh/v1\nkind: Scenario\nmetadata: {{name: slow}}\nspec: {{launchDelay: 20m}}\n",
        example("inflate-spot.yaml")
    );
    let e = run(&[("slow.yaml", scenario)]).unwrap_err().to_string();
    assert!(
        e.contains("spec.launchDelay") && e.contains("registration TTL (15m)"),
        "{e}"
    );
}
