//! Scale-down scenarios on the simulator: consolidation through the policy, with every safety rule
//! enforced by the host (budgets, PDBs, do-not-disrupt, the re-check) — the cases the guides
//! teach and the failures users report.

use dovetail::sim::{EventKind, Report, SimOptions, simulate};

use dovetail_test_support::paths::example;

fn run_with(text: &str, opts: &SimOptions) -> Report {
    simulate(&[("scenario.yaml".to_string(), text.to_string())], opts).unwrap()
}

fn run(text: &str) -> Report {
    run_with(text, &SimOptions::default())
}

/// (time, nodes, reason, replacement, savings) of one disruption.
type Disruption = (i64, Vec<String>, &'static str, Option<String>, f64);

fn disruptions(r: &Report) -> Vec<Disruption> {
    r.events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Disrupting {
                nodes,
                reason,
                replacement,
                savings_per_hour,
                ..
            } => Some((
                e.at,
                nodes.clone(),
                *reason,
                replacement.clone(),
                *savings_per_hour,
            )),
            _ => None,
        })
        .collect()
}

fn ready_at(r: &Report, node: &str) -> i64 {
    r.events
        .iter()
        .find(|e| matches!(&e.kind, EventKind::Ready { node: n } if n == node))
        .unwrap_or_else(|| panic!("{node} never became ready"))
        .at
}

fn all_running(r: &Report) {
    assert!(r.still_pending.is_empty(), "{:?}", r.still_pending);
    assert!(r.pods.iter().all(|p| p.running_since.is_some()));
}

/// The lab with a different NodePool disruption block, scenario steps and extra documents.
fn lab(disruption: &str, steps: &str, extra: &str) -> String {
    let text = example("consolidation-lab.yaml");
    let text = text.replace(
        "    consolidationPolicy: WhenEmptyOrUnderutilized\n    consolidateAfter: 5m\n",
        disruption,
    );
    let text = text.replace(
        "    - at: 2m\n      scale: {deployment: inflate, replicas: 8}\n",
        steps,
    );
    format!("{text}\n---\n{extra}")
}

const LAB_DISRUPTION: &str =
    "    consolidationPolicy: WhenEmptyOrUnderutilized\n    consolidateAfter: 5m\n";
const SCALE_TO_8: &str = "    - at: 2m\n      scale: {deployment: inflate, replicas: 8}\n";

#[test]
fn the_lab_consolidates_the_light_node_after_consolidate_after_and_not_before() {
    let r = run(&example("consolidation-lab.yaml"));
    let d = disruptions(&r);
    assert_eq!(d.len(), 1, "{d:?}");
    let (at, nodes, reason, replacement, _) = &d[0];
    assert_eq!(nodes, &vec!["default-00002".to_string()]);
    assert_eq!(*reason, "underutilized");
    assert_eq!(replacement, &None);
    // Its last pod arrived when it became Ready; consolidateAfter is 5m.
    let quiet_from = ready_at(&r, "default-00002") + 300;
    assert!(
        *at >= quiet_from,
        "disrupted at {at}s, quiet only from {quiet_from}s"
    );
    assert!(*at <= quiet_from + 20, "disrupted late: {at}s");
    assert_eq!(r.nodes.len(), 1);
    assert_eq!(r.nodes[0].name, "default-00001");
    assert_eq!(r.pods.len(), 8);
    all_running(&r);
    assert!(
        r.pods
            .iter()
            .all(|p| p.node.as_deref() == Some("default-00001"))
    );
    // Both nodes became Ready together and kube-scheduler spread the nine pods over them by
    // LeastAllocated, five and four; the ReplicaSet removed the ninth from the fuller one.
    assert_eq!(r.evictions, LAB_SECOND_NODE_PODS);
}

/// The lab's pods on each of its two nodes once both are Ready: kube-scheduler's
/// LeastAllocated alternates nine pods over two equal empty nodes, the first by name first.
const LAB_FIRST_NODE_PODS: usize = 5;
const LAB_SECOND_NODE_PODS: u32 = 4;

#[test]
fn scale_to_zero_removes_empty_nodes_after_consolidate_after() {
    let r = run(&lab(
        LAB_DISRUPTION,
        "    - at: 2m\n      scale: {deployment: inflate, replicas: 0}\n",
        "",
    ));
    assert!(r.nodes.is_empty(), "{:?}", r.nodes);
    let d = disruptions(&r);
    assert!(!d.is_empty());
    for (at, _, reason, replacement, _) in &d {
        assert_eq!(*reason, "empty");
        assert!(replacement.is_none());
        assert!(
            *at >= 120 + 300,
            "removed at {at}s, before consolidateAfter"
        );
    }
    assert_eq!(r.evictions, 0);
}

#[test]
fn when_empty_keeps_an_underused_node() {
    let r = run(&lab(
        "    consolidationPolicy: WhenEmpty\n    consolidateAfter: 5m\n",
        SCALE_TO_8,
        "",
    ));
    assert!(disruptions(&r).is_empty(), "{:?}", disruptions(&r));
    assert_eq!(r.nodes.len(), 2);
    all_running(&r);
}

#[test]
fn a_pdb_with_max_unavailable_zero_is_never_drained() {
    let pdb = "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: inflate}\nspec:\n  maxUnavailable: 0\n  selector: {matchLabels: {app: inflate}}\n";
    let r = run(&lab(LAB_DISRUPTION, SCALE_TO_8, pdb));
    assert!(disruptions(&r).is_empty(), "{:?}", disruptions(&r));
    assert_eq!(r.evictions, 0);
    assert_eq!(r.nodes.len(), 2);
    let blocked = r.events_where(|k| matches!(k, EventKind::Blocked { why, .. } if why.contains("PodDisruptionBudget default/inflate")));
    assert!(!blocked.is_empty(), "the block is reported");
}

#[test]
fn do_not_disrupt_holds() {
    let text = lab(LAB_DISRUPTION, SCALE_TO_8, "").replace(
        "      labels:\n        app: inflate\n    spec:",
        "      labels:\n        app: inflate\n      annotations:\n        dovetail.sh/do-not-disrupt: \"true\"\n    spec:",
    );
    assert!(text.contains("do-not-disrupt"));
    let r = run(&text);
    assert!(disruptions(&r).is_empty());
    assert_eq!(r.nodes.len(), 2);
    assert!(
        !r.events_where(
            |k| matches!(k, EventKind::Blocked { why, .. } if why.contains("do-not-disrupt"))
        )
        .is_empty()
    );
}

/// 20 single-pod nodes (1.5 CPU pods on c5.large), scaled to zero.
fn twenty_nodes(budgets: &str, steps: &str) -> String {
    lab(
        &format!(
            "    consolidationPolicy: WhenEmptyOrUnderutilized\n    consolidateAfter: 1m\n{budgets}"
        ),
        steps,
        "",
    )
    .replace("replicas: 9", "replicas: 20")
    .replace("cpu: 220m", "cpu: 1500m")
}

#[test]
fn a_ten_percent_budget_never_has_more_than_that_share_disrupting() {
    let r = run(&twenty_nodes(
        "    budgets:\n      - nodes: \"10%\"\n",
        "    - at: 5m\n      scale: {deployment: inflate, replicas: 0}\n",
    ));
    let (peak, size) = r.peak_disrupting["default"];
    assert!(peak >= 1, "something was disrupted");
    assert!(
        peak * 10 <= size.max(20),
        "{peak} of {size} nodes disrupting at once under a 10% budget"
    );
    assert!(peak <= 2);
    assert!(r.nodes.is_empty(), "{} nodes left", r.nodes.len());
    assert_eq!(r.disruptions.values().sum::<u32>(), 20);
}

#[test]
fn changed_requirements_drift_and_nodes_are_replaced_within_the_budget() {
    let pool_v2 = example("consolidation-lab.yaml")
        .split("---")
        .next()
        .unwrap()
        .replace("values: [\"c5.large\"]", "values: [\"m5.large\"]")
        .replace(
            "    consolidateAfter: 5m\n",
            "    consolidateAfter: 5m\n    budgets:\n      - nodes: \"1\"\n",
        );
    let apply: String = pool_v2
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| format!("        {l}\n"))
        .collect();
    let steps = format!("    - at: 10m\n      apply:\n{apply}");
    let text = lab(
        "    consolidationPolicy: WhenEmpty\n    consolidateAfter: 5m\n    budgets:\n      - nodes: \"1\"\n",
        &steps,
        "",
    );
    let r = run(&text);
    let d = disruptions(&r);
    assert!(d.iter().all(|x| x.2 == "drifted"), "{d:?}");
    assert_eq!(d.iter().map(|x| x.1.len()).sum::<usize>(), 2, "{d:?}");
    assert!(d.iter().all(|x| x.0 >= 600));
    assert!(r.peak_disrupting["default"].0 <= 1);
    assert!(!r.nodes.is_empty());
    assert!(
        r.nodes
            .iter()
            .all(|n| n.instance.offer.instance_type == "m5.large"),
        "{:?}",
        r.nodes
            .iter()
            .map(|n| &n.instance.offer.instance_type)
            .collect::<Vec<_>>()
    );
    all_running(&r);
}

#[test]
fn expire_after_replaces_nodes_at_about_one_hour() {
    let text = lab(
        "    consolidationPolicy: WhenEmpty\n    consolidateAfter: 5m\n",
        "",
        "",
    )
    .replace("duration: 30m", "duration: 2h")
    .replace(
        "      nodeClassRef:",
        "      expireAfter: 1h\n      nodeClassRef:",
    );
    let r = run(&text);
    let d = disruptions(&r);
    assert!(!d.is_empty());
    for (at, _, reason, ..) in &d {
        assert_eq!(*reason, "expired");
        // Launched at 1s: expiry at 3601s, noticed within a disruption interval.
        assert!((3601..=3601 + 60).contains(at), "expired at {at}s");
    }
    for e in r.events_where(|k| matches!(k, EventKind::Terminated { .. })) {
        let EventKind::Terminated { lived_seconds, .. } = e.kind else {
            unreachable!()
        };
        assert!((3600..3700).contains(&lived_seconds), "{lived_seconds}");
    }
    assert_eq!(r.nodes.len(), 2, "replaced, not just removed");
    assert!(
        r.nodes
            .iter()
            .all(|n| n.launched_at - SimOptions::default().start >= 3600)
    );
    all_running(&r);
}

#[test]
fn quiet_hours_blocks_disruption_inside_its_window_and_allows_it_outside() {
    // The simulation starts Monday 00:00 UTC.
    let policy = "apiVersion: dovetail.sh/v1\nkind: Policy\nmetadata: {name: night-freeze}\nspec:\n  source: {builtin: quiet-hours}\n  config: {timezone: UTC, windows: 'Mon 00:00-01:00'}\n";
    let text = lab(LAB_DISRUPTION, SCALE_TO_8, policy)
        .replace("consolidation: balanced", "consolidation: night-freeze")
        .replace("duration: 30m", "duration: 2h");
    let r = run(&text);
    let d = disruptions(&r);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].0 >= 3600, "disrupted inside the window at {}s", d[0].0);
    assert!(
        d[0].0 <= 3600 + 310,
        "allowed outside the window, late at {}s",
        d[0].0
    );
    assert!(
        !r.events_where(
            |k| matches!(k, EventKind::Kept { why, .. } if why.contains("Mon 00:00-01:00"))
        )
        .is_empty(),
        "the policy said why it kept the node"
    );
    assert_eq!(r.nodes.len(), 1);
}

#[test]
fn no_churn_replacements_are_other_types_and_cheaper_by_the_margin_then_nothing_for_a_day() {
    // c and m families on demand; 7 × 500m on one node, then scale to 3: the node is replaced
    // by a smaller one; after that a steady day disrupts nothing. (With 10 the pods took two
    // nodes, and the scale-down emptied the larger: it went, and no replacement was needed.)
    let text = lab(
        "    consolidationPolicy: WhenEmptyOrUnderutilized\n    consolidateAfter: 1m\n",
        "    - at: 10m\n      scale: {deployment: inflate, replicas: 3}\n",
        "",
    )
    .replace(
        "        - key: node.kubernetes.io/instance-type\n          operator: In\n          values: [\"c5.large\"]\n",
        "        - key: aws.dovetail.sh/instance-category\n          operator: In\n          values: [\"c\", \"m\"]\n        - key: kubernetes.io/arch\n          operator: In\n          values: [\"amd64\"]\n",
    )
    .replace("replicas: 9", "replicas: 7")
    .replace("cpu: 220m", "cpu: 500m")
    .replace("duration: 30m", "duration: 24h");
    let r = run(&text);
    let d = disruptions(&r);
    assert!(!d.is_empty(), "the under-used node is replaced");
    let launched: std::collections::BTreeMap<String, (String, f64)> = r
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Launched {
                node,
                instance_type,
                price,
                ..
            } => Some((node.clone(), (instance_type.clone(), *price))),
            _ => None,
        })
        .collect();
    assert!(
        d.iter()
            .any(|(_, _, _, replacement, _)| replacement.is_some()),
        "at least one move is a replacement (else the checks below check nothing): {d:?}"
    );
    for (_, nodes, _, replacement, savings) in &d {
        let Some(rep) = replacement else { continue };
        let old_price: f64 = nodes.iter().map(|n| launched[n].1).sum();
        for n in nodes {
            assert_ne!(launched[n].0, launched[rep].0, "replaced by its own type");
        }
        assert!(
            *savings >= 0.05 * old_price - 1e-9,
            "saves {savings} of {old_price}: under the 5% margin"
        );
    }
    let settled = d.last().unwrap().0;
    assert!(
        settled < 3600,
        "settled within the hour (last at {settled}s)"
    );
    assert_eq!(
        r.evictions as usize,
        d.iter().filter(|x| x.3.is_some() || x.2 != "empty").count() * 3
    );
    all_running(&r);
}

#[test]
fn a_steady_workload_is_not_disrupted_for_24_hours() {
    let text = format!(
        "{}\n---\napiVersion: sim.dovetail.sh/v1\nkind: Scenario\nmetadata: {{name: steady}}\nspec: {{duration: 24h}}\n",
        example("inflate-spot.yaml")
    );
    let r = run(&text);
    assert!(disruptions(&r).is_empty(), "{:?}", disruptions(&r));
    assert_eq!(r.evictions, 0);
    // Every node launched at the start is still there: no churn.
    assert_eq!(r.launched as usize, r.nodes.len());
    all_running(&r);
}

#[test]
fn an_unsafe_action_is_overruled_and_logged() {
    // `hostile` in mode `good` executes every move it is offered, including moves that only work
    // alone: node A's pods fit on B and B's on A, but not both.
    let hostile = std::fs::read(dovetail::policy::builtin::fixture_path("hostile")).unwrap();
    let opts = SimOptions {
        policies: vec![(
            "yes-to-all".into(),
            hostile,
            vec![("mode".into(), "good".into())],
        )],
        ..SimOptions::default()
    };
    let text = lab(
        "    consolidationPolicy: WhenEmptyOrUnderutilized\n    consolidateAfter: 0s\n    budgets:\n      - nodes: \"100%\"\n",
        "    - at: 2m\n      scale: {deployment: inflate, replicas: 5}\n",
        "",
    )
    .replace("consolidation: balanced", "consolidation: yes-to-all");
    let r = run_with(&text, &opts);
    let overruled = r.events_where(
        |k| matches!(k, EventKind::Overruled { why, .. } if why.contains("nowhere to go")),
    );
    assert!(!overruled.is_empty(), "{:#?}", r.events);
    assert_eq!(r.nodes.len(), 1, "one of the two goes, not both");
    assert_eq!(r.pods.len(), 5);
    all_running(&r);
}

/// Three nodes of a steady Deployment and three of a burst that is then scaled down: the
/// scale-down's lightly used nodes become candidates only consolidateAfter later, and the
/// steady nodes, full and settled long ago, are candidates at once. Draining a full node into
/// the room the burst left would move ten pods that need not move; consolidation holds the
/// busier nodes back until the lighter ones have settled, and removes those.
#[test]
fn a_scale_down_removes_the_nodes_it_emptied_not_the_full_ones_beside_them() {
    let deployment = |name: &str, replicas: u32| {
        format!(
            "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      containers:\n        - name: app\n          image: pause\n          resources:\n            requests:\n              cpu: 180m\n"
        )
    };
    let text = format!(
        "apiVersion: dovetail.sh/v1\nkind: NodePool\nmetadata:\n  name: default\nspec:\n  template:\n    spec:\n      requirements:\n        - key: node.kubernetes.io/instance-type\n          operator: In\n          values: [\"m5.large\"]\n        - key: dovetail.sh/capacity-type\n          operator: In\n          values: [\"on-demand\"]\n      nodeClassRef:\n        group: aws.dovetail.sh\n        kind: EC2NodeClass\n        name: default\n  disruption:\n    consolidationPolicy: WhenEmptyOrUnderutilized\n    consolidateAfter: 1m\n{}{}---\napiVersion: sim.dovetail.sh/v1\nkind: Scenario\nmetadata:\n  name: burst\nspec:\n  duration: 30m\n  steps:\n    - at: 2m\n      scale: {{deployment: burst, replicas: 30}}\n    - at: 10m\n      scale: {{deployment: burst, replicas: 12}}\n",
        deployment("steady", 30),
        deployment("burst", 0),
    );
    let r = run(&text);
    all_running(&r);
    assert_eq!(
        r.launched, 6,
        "ten pods a node: three nodes, then three more"
    );
    assert_eq!(r.nodes.len(), 5, "42 pods on five nodes: {:?}", r.nodes);
    let d = disruptions(&r);
    assert!(
        d.iter().all(|(at, ..)| *at >= 600 + 60),
        "nothing moves before the burst's nodes have settled: {d:?}"
    );
    assert!(
        r.evictions < 10,
        "no full node drained: {} evictions ({:?})",
        r.evictions,
        evictions(&r)
    );
}

fn evictions(r: &Report) -> Vec<(i64, String)> {
    r.events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Evicted { pod, .. } => Some((e.at, pod.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_deleted_pod_of_a_deployment_is_recreated_by_its_replicaset() {
    let r = run(&lab(
        LAB_DISRUPTION,
        &format!(
            "{SCALE_TO_8}    - at: 4m\n      delete: {{kind: Pod, namespace: default, name: inflate-00000}}\n"
        ),
        "",
    ));
    let names: Vec<&str> = r.pods.iter().map(|p| p.spec.name.as_str()).collect();
    assert_eq!(
        names.len(),
        8,
        "the Deployment keeps its replicas: {names:?}"
    );
    assert!(!names.contains(&"default/inflate-00000"), "{names:?}");
    all_running(&r);
}

#[test]
fn a_node_deleted_by_hand_drains_one_pdb_allowance_at_a_time() {
    let pdb = "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: inflate}\nspec:\n  maxUnavailable: 1\n  selector: {matchLabels: {app: inflate}}\n";
    let r = run(&lab(
        "    consolidationPolicy: WhenEmpty\n    consolidateAfter: 5m\n",
        "    - at: 5m\n      delete: {kind: Node, name: default-00001}\n",
        pdb,
    ));
    let ev = evictions(&r);
    assert_eq!(ev.len(), LAB_FIRST_NODE_PODS, "{ev:?}");
    assert!(ev.iter().all(|(at, _)| *at >= 300));
    for w in ev.windows(2) {
        assert!(
            w[1].0 > w[0].0,
            "two pods of a maxUnavailable: 1 budget evicted at once: {ev:?}"
        );
    }
    assert!(
        r.nodes.iter().all(|n| n.name != "default-00001"),
        "the node is gone"
    );
    let terminated = r.events_where(
        |k| matches!(k, EventKind::Terminated { node, .. } if node == "default-00001"),
    );
    assert_eq!(terminated.len(), 1);
    assert!(
        terminated[0].at >= ev.last().unwrap().0,
        "terminated after its drain"
    );
    all_running(&r);
}

#[test]
fn a_drain_ends_only_after_its_pods_have_stopped() {
    // Each pod sleeps 20 s in its preStop hook (within its 30 s grace): the simulated kubelet
    // keeps it on its node until then, and the instance goes only after the last one.
    let text = lab(
        "    consolidationPolicy: WhenEmpty\n    consolidateAfter: 5m\n",
        "    - at: 5m\n      delete: {kind: Node, name: default-00001}\n",
        "",
    )
    .replace(
        "          image: public.ecr.aws/eks-distro/kubernetes/pause:3.7\n",
        "          image: public.ecr.aws/eks-distro/kubernetes/pause:3.7\n          lifecycle: {preStop: {sleep: {seconds: 20}}}\n",
    );
    let r = run(&text);
    let ev = evictions(&r);
    assert_eq!(ev.len(), LAB_FIRST_NODE_PODS, "{ev:?}");
    let last = ev.iter().map(|e| e.0).max().unwrap();
    let terminated = r.events_where(
        |k| matches!(k, EventKind::Terminated { node, .. } if node == "default-00001"),
    );
    assert_eq!(terminated.len(), 1);
    assert!(
        terminated[0].at >= last + 20,
        "terminated at {}s, before the pods evicted at {last}s had stopped",
        terminated[0].at
    );
    all_running(&r);
}

#[test]
fn a_pod_two_pdbs_cover_is_not_evicted_until_the_grace_period_forces_it() {
    // The Eviction API refuses a pod more than one budget covers (500), whatever both allow.
    let pdbs = "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: a}\nspec:\n  maxUnavailable: 5\n  selector: {matchLabels: {app: inflate}}\n---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: b}\nspec:\n  minAvailable: 1\n  selector: {matchLabels: {app: inflate}}\n";
    let text = lab(
        "    consolidationPolicy: WhenEmpty\n    consolidateAfter: 5m\n",
        "    - at: 5m\n      delete: {kind: Node, name: default-00002}\n",
        pdbs,
    )
    .replace(
        "      nodeClassRef:",
        "      terminationGracePeriod: 3m\n      nodeClassRef:",
    );
    let r = run(&text);
    let ev = evictions(&r);
    assert_eq!(ev.len(), LAB_SECOND_NODE_PODS as usize, "{ev:?}");
    for (at, pod) in &ev {
        assert!(
            *at >= 300 + 180 - 30,
            "{pod} evicted at {at}s, before the grace period forced it"
        );
    }
    assert!(r.nodes.iter().all(|n| n.name != "default-00002"));
}

#[test]
fn termination_grace_period_forces_a_drain_a_pdb_blocks() {
    let pdb = "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: inflate}\nspec:\n  maxUnavailable: 0\n  selector: {matchLabels: {app: inflate}}\n";
    let text = lab(
        "    consolidationPolicy: WhenEmpty\n    consolidateAfter: 5m\n",
        "    - at: 5m\n      delete: {kind: Node, name: default-00002}\n",
        pdb,
    )
    .replace(
        "      nodeClassRef:",
        "      terminationGracePeriod: 2m\n      nodeClassRef:",
    );
    let r = run(&text);
    let ev = evictions(&r);
    assert_eq!(ev.len(), LAB_SECOND_NODE_PODS as usize, "{ev:?}");
    // Deleted at 7m (5m + the 2m grace period) less their own 30 s, so that they end by then.
    for (at, pod) in &ev {
        assert!(
            (390..=400).contains(at),
            "{pod} deleted at {at}s: not held until its grace no longer fit before the 2m deadline, or held past it"
        );
    }
    assert!(r.nodes.iter().all(|n| n.name != "default-00002"));
}

#[test]
fn compare_runs_two_policy_sets_and_reports_the_difference() {
    let text = example("consolidation-lab.yaml");
    let a = run_with(
        &text,
        &SimOptions {
            consolidation: Some("balanced".into()),
            ..SimOptions::default()
        },
    );
    let b = run_with(
        &text,
        &SimOptions {
            consolidation: Some("empty-only".into()),
            ..SimOptions::default()
        },
    );
    let d = a.difference(&b);
    assert!(d.cost_usd > 0.0, "keeping the light node costs more: {d:?}");
    assert_eq!(d.disrupted, -1);
    assert_eq!(d.evicted, -i64::from(LAB_SECOND_NODE_PODS));
    assert!(
        (d.cost_per_hour - 0.085).abs() < 1e-9,
        "one c5.large more at the end"
    );
}

#[test]
fn a_changed_node_class_drifts_its_nodes() {
    let class = |alias: &str| {
        format!(
            "apiVersion: aws.dovetail.sh/v1\nkind: EC2NodeClass\nmetadata: {{name: default}}\nspec:\n  role: KarpenterNodeRole-lab\n  amiSelectorTerms: [{{alias: \"{alias}\"}}]\n  subnetSelectorTerms: [{{tags: {{dovetail.sh/discovery: lab}}}}]\n  securityGroupSelectorTerms: [{{tags: {{dovetail.sh/discovery: lab}}}}]\n"
        )
    };
    let apply: String = class("al2023@v20261101")
        .lines()
        .map(|l| format!("        {l}\n"))
        .collect();
    let text = lab(
        "    consolidationPolicy: WhenEmpty\n    consolidateAfter: 5m\n    budgets: [{nodes: \"1\"}]\n",
        &format!("    - at: 10m\n      apply:\n{apply}"),
        &class("al2023@latest"),
    );
    let r = run(&text);
    let d = disruptions(&r);
    assert_eq!(d.iter().map(|x| x.1.len()).sum::<usize>(), 2, "{d:?}");
    assert!(d.iter().all(|x| x.2 == "drifted" && x.0 >= 600));
    assert!(
        r.nodes
            .iter()
            .all(|n| n.launched_at - SimOptions::default().start >= 600)
    );
    assert!(r.peak_disrupting["default"].0 <= 1);
    all_running(&r);

    // Re-applying the same class changes nothing.
    let same: String = class("al2023@latest")
        .lines()
        .map(|l| format!("        {l}\n"))
        .collect();
    let r = run(&lab(
        "    consolidationPolicy: WhenEmpty\n    consolidateAfter: 5m\n",
        &format!("    - at: 10m\n      apply:\n{same}"),
        &class("al2023@latest"),
    ));
    assert!(disruptions(&r).is_empty());
}

#[test]
fn spot_is_replaced_by_spot_only_with_a_wide_set_of_cheaper_types() {
    // 3 × 1200m fill a 4-vCPU spot node (three 2-vCPU nodes, one pod each, cost more); scaled
    // to 1 it fits a 2-vCPU one.
    let scenario = |types: &str| {
        lab(
            "    consolidationPolicy: WhenEmptyOrUnderutilized\n    consolidateAfter: 1m\n",
            "    - at: 5m\n      scale: {deployment: inflate, replicas: 1}\n",
            "",
        )
        .replace(
            "        - key: node.kubernetes.io/instance-type\n          operator: In\n          values: [\"c5.large\"]\n",
            types,
        )
        .replace("values: [\"on-demand\"]", "values: [\"spot\"]")
        .replace("replicas: 9", "replicas: 3")
        .replace("cpu: 220m", "cpu: 1200m")
    };
    let narrow = run(&scenario(
        "        - key: node.kubernetes.io/instance-type\n          operator: In\n          values: [\"c5.large\", \"c5.xlarge\"]\n",
    ));
    assert_eq!(narrow.nodes.len(), 1);
    assert!(
        disruptions(&narrow).iter().all(|d| d.3.is_none()),
        "no spot-to-spot replacement from two types: {:?}",
        disruptions(&narrow)
    );
    assert_eq!(narrow.nodes[0].instance.offer.instance_type, "c5.xlarge");

    let wide = run(&scenario(
        "        - key: aws.dovetail.sh/instance-category\n          operator: In\n          values: [\"c\", \"m\", \"r\"]\n        - key: kubernetes.io/arch\n          operator: In\n          values: [\"amd64\"]\n",
    ));
    let d = disruptions(&wide);
    assert!(
        d.iter().any(|x| x.3.is_some()),
        "a wide spot pool replaces the half-empty node: {d:?}"
    );
    all_running(&wide);
}

#[test]
fn a_spot_interruption_launches_the_replacement_before_the_drain_and_pods_move_to_it() {
    let text = example("inflate-spot.yaml").replace(
        "limits:\n    cpu: 1000\n",
        "limits:\n    cpu: 1000\n  disruption:\n    consolidationPolicy: WhenEmpty\n",
    ) + "---\napiVersion: sim.dovetail.sh/v1\nkind: Scenario\nmetadata: {name: spot}\nspec:\n  duration: 30m\n  steps:\n    - at: 5m\n      interrupt: {node: default-00001}\n";
    let r = run(&text);
    let at = |pred: &dyn Fn(&EventKind) -> bool| r.events.iter().position(|e| pred(&e.kind));
    let interrupted =
        at(&|k| matches!(k, EventKind::Interrupted { node, .. } if node == "default-00001"))
            .expect("interrupted");
    let replacement = interrupted
        + r.events[interrupted..]
            .iter()
            .position(|e| matches!(&e.kind, EventKind::Launched { .. }))
            .expect("a replacement");
    let first_eviction =
        at(&|k| matches!(k, EventKind::Evicted { node, .. } if node == "default-00001"))
            .expect("drained");
    assert!(
        interrupted < replacement && replacement < first_eviction,
        "replacement launched before the drain"
    );
    assert_eq!(
        r.events[replacement].at, 300,
        "launched at once, not after a batch window"
    );
    // The interrupted offering is not chosen again.
    let EventKind::Launched {
        instance_type: old_type,
        zone: old_zone,
        ..
    } = &r
        .events
        .iter()
        .find(|e| matches!(&e.kind, EventKind::Launched { node, .. } if node == "default-00001"))
        .unwrap()
        .kind
    else {
        unreachable!()
    };
    let EventKind::Launched {
        instance_type,
        zone,
        ..
    } = &r.events[replacement].kind
    else {
        unreachable!()
    };
    assert!(
        (instance_type, zone) != (old_type, old_zone),
        "the reclaimed spot pool is left out"
    );
    assert!(r.nodes.iter().all(|n| n.name != "default-00001"));
    let initial = r.events[..interrupted]
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Launched { .. }))
        .count();
    assert_eq!(
        r.launched as usize,
        initial + 1,
        "one replacement, no extra capacity"
    );
    all_running(&r);
}

#[test]
fn a_node_whose_instance_vanished_is_removed_and_its_pods_rescheduled() {
    let r = run(&lab(
        "    consolidationPolicy: WhenEmpty\n    consolidateAfter: 5m\n",
        "    - at: 5m\n      delete: {kind: Instance, name: default-00001}\n",
        "",
    ));
    let gone: Vec<i64> = r
        .events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::InstanceGone { node } if node == "default-00001"))
        .map(|e| e.at)
        .collect();
    assert_eq!(gone.len(), 1);
    assert!((300..=360).contains(&gone[0]), "noticed at {}s", gone[0]);
    assert!(r.nodes.iter().all(|n| n.name != "default-00001"));
    assert_eq!(r.pods.len(), 9);
    all_running(&r);
    assert_eq!(r.launched, 3, "one node launched for the lost pods");
}
