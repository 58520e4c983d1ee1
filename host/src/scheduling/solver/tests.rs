use super::*;

use crate::catalog;
use crate::scheduling::model::{
    AffinityTerm, Limits, SpreadConstraint, Taint, TaintEffect, Toleration, labels,
};
use crate::scheduling::requirements::{Operator::*, Requirement};

fn its() -> InstanceTypes {
    let entries = catalog::embedded();
    let cat = catalog::policy_catalog(&entries, &["us-east-1a", "us-east-1b", "us-east-1c"]);
    InstanceTypes::new(&entries, &cat)
}

/// The pool of the spot tests: spot c, m and r instances.
fn spot_cmr() -> NodePoolSpec {
    pool(
        "default",
        &[
            (labels::CATEGORY, In, &["c", "m", "r"]),
            (labels::CAPACITY_TYPE, In, &["spot"]),
        ],
    )
}

fn pool(name: &str, reqs: &[(&str, crate::scheduling::Operator, &[&str])]) -> NodePoolSpec {
    let list: Vec<Requirement> = reqs
        .iter()
        .map(|(k, o, v)| Requirement::new(k, *o, v))
        .collect();
    NodePoolSpec::new(name, Requirements::from_list(&list))
}

fn pods(n: usize, app: &str, cpu: u64, mem_mib: u64) -> Vec<PendingPod> {
    (0..n)
        .map(|i| {
            PendingPod::new(
                &format!("default/{app}-{i}"),
                &[("app", app)],
                cpu,
                mem_mib << 20,
            )
        })
        .collect()
}

/// No spot pool is planned for more than `cap` millicores.
fn assert_within_share(solver: &Solver, its: &InstanceTypes, cap: u64) {
    for (&(_, t, zone), &cpu) in &solver.spot.planned {
        assert!(
            cpu <= cap,
            "{} in zone {zone}: {cpu}m planned, cap {cap}m",
            its.types[t as usize].name
        );
    }
}

/// The pods the solver's claims hold.
fn pods_placed(solver: &Solver) -> usize {
    solver.claims.iter().map(|c| c.planned.pods.len()).sum()
}

/// `n` pods of `app` that want to be in one zone with each other (zone pod affinity).
fn zone_group(n: usize, app: &str, cpu: u64, mem_mib: u64) -> Vec<PendingPod> {
    let sel = crate::scheduling::model::LabelSelector::labels(&[("app", app)]);
    let mut group = pods(n, app, cpu, mem_mib);
    for p in &mut group {
        p.affinity = vec![AffinityTerm {
            key: TopologyKey::Zone,
            selector: sel.clone(),
        }];
    }
    group
}

fn zone_of(plan: &Plan, c: &PlannedClaim) -> u32 {
    assert_eq!(
        c.zones.count_ones(),
        1,
        "claim {:?} not pinned",
        plan.claims.iter().position(|x| x == c)
    );
    c.zones.trailing_zeros()
}

/// Every claim holds its pods on every instance type it offers.
fn assert_sound(plan: &Plan, pods: &[PendingPod], its: &InstanceTypes) {
    for c in &plan.claims {
        let total = c
            .pods
            .iter()
            .fold(zero(), |acc, &p| add(&acc, &pods[p].requests));
        assert!(fits(&total, &c.requests));
        assert!(!c.instance_types.is_empty() && !c.options(its).is_empty());
        for &t in &c.instance_types {
            assert!(
                fits(&c.requests, &its.types[t as usize].allocatable),
                "{}",
                its.types[t as usize].name
            );
        }
    }
}

#[test]
fn packs_every_pod_on_types_the_pool_allows() {
    let its = its();
    let np = spot_cmr();
    let pods = pods(10, "inflate", 500, 128);
    let plan = solve(&pods, &[np], &its);
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
    assert_eq!(plan.claims.iter().map(|c| c.pods.len()).sum::<usize>(), 10);
    // 5 vCPU in all: one 8-vCPU node costs more than a 4-vCPU and a 2-vCPU one, so packing,
    // being cost-driven, takes two.
    assert!(plan.claims.len() <= 2, "{}", plan.claims.len());
    let price = |c: &PlannedClaim| -> f64 {
        c.instance_types
            .iter()
            .filter_map(|&t| its.cheapest(t, c.zones, &c.requirements))
            .fold(f64::INFINITY, f64::min)
    };
    let fleet: f64 = plan.claims.iter().map(price).sum();
    let reqs = &plan.claims[0].requirements;
    let one_node = its
        .admitted_by(reqs)
        .into_iter()
        .filter(|&t| {
            let a = &its.types[t as usize].allocatable;
            a.cpu_millis >= 5000 && a.memory_bytes >= 1280 << 20 && a.pods >= 10
        })
        .filter_map(|t| its.cheapest(t, plan.claims[0].zones, reqs))
        .fold(f64::INFINITY, f64::min);
    assert!(fleet <= one_node, "{fleet} > {one_node}");
    for c in &plan.claims {
        for &t in &c.instance_types {
            assert!(["c", "m", "r"].contains(&its.label(t, labels::CATEGORY).unwrap()));
        }
        for &o in &c.options(&its) {
            let (t, oi) = crate::capacity::unpack(o);
            assert_eq!(
                its.types[t].offerings[oi].capacity_type,
                crate::capacity::CapacityType::Spot
            );
        }
    }
    assert_sound(&plan, &pods, &its);
}

#[test]
fn an_impossible_pod_gets_a_precise_reason() {
    let its = its();
    let np = pool("default", &[(labels::CATEGORY, In, &["p"])]);
    let mut pod = PendingPod::new("default/train", &[], 1000, 1 << 30);
    pod.node_terms = vec![Requirements::from_list(&[Requirement::new(
        labels::ARCH,
        In,
        &["arm64"],
    )])];
    let plan = solve(&[pod], &[np], &its);
    assert_eq!(
        plan.unschedulable[0].reason,
        "NodePool default: no instance type satisfies aws.dovetail.sh/instance-category In [p] and kubernetes.io/arch In [arm64]"
    );
    let np = pool("default", &[(labels::ARCH, In, &["amd64"])]);
    let mut pod = PendingPod::new("default/x", &[], 1000, 1 << 30);
    pod.node_terms = vec![Requirements::from_list(&[Requirement::new(
        labels::ARCH,
        In,
        &["arm64"],
    )])];
    let plan = solve(&[pod], &[np], &its);
    assert!(
        plan.unschedulable[0]
            .reason
            .contains("conflict with the NodePool"),
        "{:?}",
        plan.unschedulable
    );
}

#[test]
fn taints_need_tolerations_and_weights_order_pools() {
    let its = its();
    let mut gpu = pool("gpu", &[]);
    gpu.taints = vec![Taint {
        key: "nvidia.com/gpu".into(),
        value: "true".into(),
        effect: TaintEffect::NoSchedule,
    }];
    gpu.weight = 10;
    let plain = pool("default", &[]);
    let mut tolerant = PendingPod::new("default/t", &[], 500, 1 << 29);
    tolerant.tolerations = vec![Toleration {
        key: Some("nvidia.com/gpu".into()),
        exists: true,
        value: String::new(),
        effect: None,
    }];
    let intolerant = PendingPod::new("default/i", &[], 500, 1 << 29);
    let plan = solve(&[tolerant, intolerant.clone()], &[plain, gpu.clone()], &its);
    let pool_of = |p: usize| {
        plan.claims
            .iter()
            .find(|c| c.pods.contains(&p))
            .unwrap()
            .node_pool
    };
    assert_eq!(pool_of(0), 1, "heavier pool first when tolerated");
    assert_eq!(pool_of(1), 0);
    let plan = solve(&[intolerant], &[gpu], &its);
    assert!(
        plan.unschedulable[0]
            .reason
            .contains("does not tolerate taint nvidia.com/gpu=true:NoSchedule")
    );
}

#[test]
fn limits_are_never_exceeded() {
    let its = its();
    let mut np = pool("default", &[]);
    np.limits = Limits {
        cpu_millis: Some(100_000),
        memory_bytes: None,
    };
    let pods = pods(300, "big", 1000, 1024);
    let plan = solve(&pods, &[np], &its);
    let reserved: u64 = plan
        .claims
        .iter()
        .map(|c| {
            c.instance_types
                .iter()
                .map(|&t| its.types[t as usize].capacity.0)
                .max()
                .unwrap()
        })
        .sum();
    assert!(reserved <= 100_000, "{reserved}");
    assert!(!plan.unschedulable.is_empty());
    assert!(
        plan.unschedulable[0].reason.contains("limits reached"),
        "{}",
        plan.unschedulable[0].reason
    );
    let placed: usize = plan.claims.iter().map(|c| c.pods.len()).sum();
    assert!(placed >= 85, "most of the 100 cores used: {placed} pods");
    assert_sound(&plan, &pods, &its);
}

#[test]
fn zone_spread_and_hostname_anti_affinity() {
    let its = its();
    let np = pool("default", &[]);
    let sel = crate::scheduling::model::LabelSelector::labels(&[("app", "web")]);
    let mut web = pods(9, "web", 500, 512);
    for p in &mut web {
        p.spread = vec![SpreadConstraint {
            key: TopologyKey::Zone,
            max_skew: 1,
            selector: sel.clone(),
        }];
    }
    let plan = solve(&web, std::slice::from_ref(&np), &its);
    assert!(plan.unschedulable.is_empty());
    let mut per_zone = [0; 3];
    for c in &plan.claims {
        per_zone[zone_of(&plan, c) as usize] += c.pods.len();
    }
    assert_eq!(per_zone, [3, 3, 3]);

    let sel = crate::scheduling::model::LabelSelector::labels(&[("app", "db")]);
    let mut db = pods(5, "db", 500, 512);
    for p in &mut db {
        p.anti_affinity = vec![AffinityTerm {
            key: TopologyKey::Hostname,
            selector: sel.clone(),
        }];
    }
    let mut all = db.clone();
    all.extend(pods(20, "plain", 250, 256));
    let plan = solve(&all, &[np], &its);
    assert!(plan.unschedulable.is_empty());
    for c in &plan.claims {
        assert!(
            c.pods.iter().filter(|&&p| p < 5).count() <= 1,
            "two db pods on one node"
        );
    }
    assert!(plan.claims.len() >= 5);
    assert_sound(&plan, &all, &its);
}

#[test]
fn zone_affinity_keeps_pods_together_and_overhead_counts() {
    let its = its();
    let mut np = pool("default", &[]);
    np.daemonset_overhead = Resources {
        cpu_millis: 200,
        memory_bytes: 256 << 20,
        ephemeral_storage_bytes: 0,
        pods: 2,
        gpus: 0,
    };
    let cache = zone_group(30, "cache", 1000, 2048);
    let plan = solve(&cache, &[np], &its);
    assert!(plan.unschedulable.is_empty());
    let zones: std::collections::BTreeSet<u32> =
        plan.claims.iter().map(|c| zone_of(&plan, c)).collect();
    assert_eq!(zones.len(), 1);
    for c in &plan.claims {
        assert_eq!(c.requests.cpu_millis, 200 + 1000 * c.pods.len() as u64);
        assert_eq!(c.requests.pods, 2 + c.pods.len() as u32);
    }
}

/// `pods` labelled `app=web`, spread over zones with a skew of one.
fn web_spread_by_zone(mut pods: Vec<PendingPod>) -> Vec<PendingPod> {
    for p in &mut pods {
        p.labels = vec![("app".into(), "web".into())];
        p.spread = vec![SpreadConstraint {
            key: TopologyKey::Zone,
            max_skew: 1,
            selector: crate::scheduling::model::LabelSelector::labels(&[("app", "web")]),
        }];
    }
    pods
}

fn node(its: &InstanceTypes, name: &str, ty: &str, zone: u32, on: &[PendingPod]) -> ExistingNode {
    let t = its.types.iter().position(|t| t.name == ty).unwrap();
    let requested = on.iter().fold(zero(), |r, p| add(&r, &p.requests));
    ExistingNode {
        name: name.into(),
        node_pool: Some(0),
        labels: vec![
            (labels::INSTANCE_TYPE.into(), ty.into()),
            (labels::ZONE.into(), its.zones[zone as usize].clone()),
            (
                labels::ARCH.into(),
                its.label(t as u32, labels::ARCH).unwrap().into(),
            ),
        ],
        taints: Vec::new(),
        zone,
        allocatable: its.types[t].allocatable,
        requested,
        pods: on
            .iter()
            .map(|p| (p.name.clone(), p.labels.clone()))
            .collect(),
        repels: on
            .iter()
            .flat_map(|p| {
                let ns = namespace(&p.name).to_string();
                p.anti_affinity.iter().map(move |a| (ns.clone(), a.clone()))
            })
            .collect(),
    }
}

#[test]
fn a_pod_selecting_a_label_no_pool_defines_waits_with_the_fix_and_a_pool_that_defines_it_serves() {
    use crate::scheduling::Operator::{In, NotIn};
    let its = its();
    let mut team = pods(1, "team", 500, 512);
    team[0].node_terms = vec![Requirements::from_labels([("team", "a")])];
    let plain = [pool("default", &[])];
    let plan = solve(&team, &plain, &its);
    assert!(
        plan.claims.is_empty(),
        "no node of the pool would carry team=a"
    );
    let reason = &plan.unschedulable[0].reason;
    assert!(
        reason.contains("it selects the label team, which the NodePool does not define"),
        "{reason}"
    );
    // The pool defines it (a template label becomes an In requirement).
    let defines = [pool("teams", &[("team", In, &["a"])])];
    assert_eq!(solve(&team, &defines, &its).claims.len(), 1);
    // Excluding an undefined label is satisfied by its absence; well-known labels need no
    // definition.
    let mut not_b = pods(1, "not-b", 500, 512);
    not_b[0].node_terms = vec![Requirements::from_list(&[
        Requirement::new("team", NotIn, &["b"]),
        Requirement::new(labels::ARCH, In, &["amd64"]),
    ])];
    assert_eq!(solve(&not_b, &plain, &its).claims.len(), 1);
}

#[test]
fn existing_nodes_are_filled_first_and_their_pods_count_for_topology() {
    let its = its();
    let pools = [pool("default", &[])];
    // m5.xlarge: 4 vCPU; 1 CPU already used.
    let running = pods(1, "web", 1000, 1024);
    let mut nodes = vec![node(&its, "n1", "m5.xlarge", 0, &running)];
    let plan = solve_on(&pods(2, "api", 1000, 1024), &nodes, &pools, &its);
    assert_eq!(plan.bound, vec![(0, 0), (1, 0)]);
    assert!(plan.claims.is_empty());

    // A taint the pods do not tolerate sends them to a new claim.
    nodes[0].taints.push(Taint {
        key: "dedicated".into(),
        value: "x".into(),
        effect: TaintEffect::NoSchedule,
    });
    let plan = solve_on(&pods(2, "api", 1000, 1024), &nodes, &pools, &its);
    assert!(plan.bound.is_empty());
    assert_eq!(plan.claims.iter().map(|c| c.pods.len()).sum::<usize>(), 2);
    nodes[0].taints.clear();

    // A nodeSelector the node's labels do not satisfy.
    let mut arm = pods(1, "arm", 100, 128);
    arm[0].node_terms = vec![Requirements::from_labels([(labels::ARCH, "arm64")])];
    assert!(solve_on(&arm, &nodes, &pools, &its).bound.is_empty());

    // Hostname anti-affinity sees the pod already running there.
    let mut web = pods(1, "web-2", 100, 128);
    web[0].labels = vec![("app".into(), "web".into())];
    web[0].anti_affinity = vec![AffinityTerm {
        key: TopologyKey::Hostname,
        selector: crate::scheduling::model::LabelSelector::labels(&[("app", "web")]),
    }];
    let plan = solve_on(&web, &nodes, &pools, &its);
    assert!(
        plan.bound.is_empty(),
        "anti-affinity to the running web pod"
    );
    assert_eq!(plan.claims.len(), 1);

    // Zone spread counts the running pods: with web in zone 0, the next two go elsewhere.
    let spread = web_spread_by_zone(pods(2, "web-3", 100, 128));
    let plan = solve_on(&spread, &nodes, &pools, &its);
    assert!(plan.bound.is_empty());
    let zones: std::collections::BTreeSet<u32> =
        plan.claims.iter().map(|c| zone_of(&plan, c)).collect();
    assert_eq!(zones, [1, 2].into());
}

#[test]
fn min_values_keep_claims_flexible() {
    let its = its();
    let mut np = pool("default", &[]);
    np.min_values = vec![(labels::INSTANCE_TYPE.into(), 20)];
    let plan = solve(
        &pods(50, "web", 1000, 1024),
        std::slice::from_ref(&np),
        &its,
    );
    assert!(plan.unschedulable.is_empty());
    for c in &plan.claims {
        assert!(
            c.instance_types.len() >= 20,
            "{} types",
            c.instance_types.len()
        );
    }
    // One more distinct type than can hold 150 vCPUs.
    let holding = its
        .types
        .iter()
        .filter(|t| t.allocatable.cpu_millis >= 150_000)
        .count();
    assert!(holding > 0);
    np.min_values = vec![(labels::INSTANCE_TYPE.into(), holding + 1)];
    let plan = solve(&pods(1, "huge", 150_000, 1024), &[np], &its);
    assert_eq!(plan.unschedulable.len(), 1);
    assert!(
        plan.unschedulable[0].reason.contains("minValues"),
        "{}",
        plan.unschedulable[0].reason
    );
}

#[test]
fn preferences_are_honoured_when_possible_and_dropped_when_not() {
    let its = its();
    let pools = [pool("default", &[])];
    let mut arm = pods(4, "arm", 500, 512);
    for p in &mut arm {
        p.preferred = vec![Requirements::from_labels([(labels::ARCH, "arm64")])];
    }
    let plan = solve(&arm, &pools, &its);
    assert!(plan.unschedulable.is_empty());
    for c in &plan.claims {
        assert!(
            c.instance_types
                .iter()
                .all(|&t| its.label(t, labels::ARCH) == Some("arm64"))
        );
    }
    let mut impossible = pods(2, "x", 500, 512);
    for p in &mut impossible {
        p.preferred = vec![Requirements::from_labels([(labels::CATEGORY, "zz")])];
    }
    let plan = solve(&impossible, &pools, &its);
    assert!(plan.unschedulable.is_empty(), "a preference never blocks");

    // ScheduleAnyway zone spread spreads when it can…
    let soft = |n: usize| {
        let mut v = pods(n, "soft", 100, 128);
        for p in &mut v {
            p.soft_spread = vec![SpreadConstraint {
                key: TopologyKey::Zone,
                max_skew: 1,
                selector: crate::scheduling::model::LabelSelector::labels(&[("app", "soft")]),
            }];
        }
        v
    };
    let plan = solve(&soft(3), &pools, &its);
    let zones: std::collections::BTreeSet<u32> =
        plan.claims.iter().map(|c| zone_of(&plan, c)).collect();
    assert_eq!(zones.len(), 3);
    // …and schedules anyway when it cannot.
    let one_zone = [pool("one", &[(labels::ZONE, In, &["us-east-1a"])])];
    let plan = solve(&soft(3), &one_zone, &its);
    assert!(plan.unschedulable.is_empty());
}

#[test]
fn preferences_are_relaxed_one_at_a_time_lowest_weight_first() {
    let its = its();
    let pools = [pool("default", &[])];
    // Heavy: amd64; light: a category no type has. Dropping only the light one keeps amd64
    // (all at once would leave the cheapest, arm64).
    let mut two = pods(2, "two", 500, 512);
    for p in &mut two {
        p.preferred = vec![
            Requirements::from_labels([(labels::ARCH, "amd64")]),
            Requirements::from_labels([(labels::CATEGORY, "zz")]),
        ];
    }
    let plan = solve(&two, &pools, &its);
    assert!(plan.unschedulable.is_empty());
    for c in &plan.claims {
        assert!(
            c.instance_types
                .iter()
                .all(|&t| its.label(t, labels::ARCH) == Some("amd64"))
        );
    }
    // Preferred node affinity goes before ScheduleAnyway spread: a preferred zone holds the
    // first pod, then the spread sends the next two to the other zones.
    let mut zoned = pods(3, "zoned", 100, 128);
    for p in &mut zoned {
        p.preferred = vec![Requirements::from_labels([(labels::ZONE, "us-east-1a")])];
        p.soft_spread = vec![SpreadConstraint {
            key: TopologyKey::Zone,
            max_skew: 1,
            selector: crate::scheduling::model::LabelSelector::labels(&[("app", "zoned")]),
        }];
    }
    let plan = solve(&zoned, &pools, &its);
    assert!(plan.unschedulable.is_empty());
    let zones: std::collections::BTreeSet<u32> =
        plan.claims.iter().map(|c| zone_of(&plan, c)).collect();
    assert_eq!(zones.len(), 3, "spread kept, zone preference dropped");
}

#[test]
fn a_running_pods_anti_affinity_keeps_the_pods_it_selects_away() {
    let its = its();
    let pools = [pool("default", &[])];
    // A running pod that wants no `web` pod beside it, on a node with room for many.
    let mut loner = pods(1, "loner", 100, 128);
    loner[0].anti_affinity = vec![AffinityTerm {
        key: TopologyKey::Hostname,
        selector: crate::scheduling::model::LabelSelector::labels(&[("app", "web")]),
    }];
    let nodes = vec![node(&its, "n1", "m5.xlarge", 0, &loner)];
    let web = pods(2, "web", 100, 128);
    let plan = solve_on(&web, &nodes, &pools, &its);
    assert!(plan.bound.is_empty(), "kept off the loner's node");
    assert_eq!(plan.claims.iter().map(|c| c.pods.len()).sum::<usize>(), 2);
    // Pods it does not select still fill it.
    let plan = solve_on(&pods(2, "api", 100, 128), &nodes, &pools, &its);
    assert_eq!(plan.bound.len(), 2);

    // By zone: no `web` pod in the loner's zone, new claims included.
    loner[0].anti_affinity[0].key = TopologyKey::Zone;
    let nodes = vec![node(&its, "n1", "m5.xlarge", 0, &loner)];
    let plan = solve_on(&web, &nodes, &pools, &its);
    assert!(plan.bound.is_empty());
    for c in &plan.claims {
        assert_eq!(c.zones & 1, 0, "zone 0 excluded: {:b}", c.zones);
    }

    // Within one round too: a pending pod's anti-affinity keeps later pods it selects away,
    // even when they carry no term of their own.
    let mut round = pods(1, "loner", 100, 128);
    round[0].anti_affinity = vec![AffinityTerm {
        key: TopologyKey::Hostname,
        selector: crate::scheduling::model::LabelSelector::labels(&[("app", "web")]),
    }];
    round.extend(pods(3, "web", 100, 128));
    let plan = solve(&round, &pools, &its);
    assert!(plan.unschedulable.is_empty());
    let with_loner = plan.claims.iter().find(|c| c.pods.contains(&0)).unwrap();
    assert_eq!(with_loner.pods, vec![0], "{:?}", plan.claims);
}

#[test]
fn a_pods_volumes_keep_it_in_their_zone() {
    let its = its();
    let pools = [pool("default", &[])];
    let mut pinned = pods(2, "db", 500, 512);
    pinned[0].volume_requirements = Some(Requirements::from_list(&[Requirement::new(
        labels::ZONE,
        In,
        &["us-east-1c"],
    )]));
    let plan = solve(&pinned, &pools, &its);
    assert!(plan.unschedulable.is_empty());
    let c = plan.claims.iter().find(|c| c.pods.contains(&0)).unwrap();
    assert_eq!(its.zones[zone_of(&plan, c) as usize], "us-east-1c");
    // Also when it joins a claim an unpinned pod opened.
    pinned.swap(0, 1);
    let plan = solve(&pinned, &pools, &its);
    for c in &plan.claims {
        if c.pods.contains(&1) {
            assert_eq!(c.zones.count_ones(), 1, "{:b}", c.zones);
            assert_eq!(its.zones[zone_of(&plan, c) as usize], "us-east-1c");
        }
    }
    // A pool without that zone cannot take it, and says why.
    let elsewhere = [pool(
        "ab",
        &[(labels::ZONE, In, &["us-east-1a", "us-east-1b"])],
    )];
    let plan = solve(&pinned, &elsewhere, &its);
    assert_eq!(plan.unschedulable.len(), 1);
    assert_eq!(plan.unschedulable[0].pod, 1);
    assert!(
        plan.unschedulable[0].reason.contains("us-east-1c"),
        "{}",
        plan.unschedulable[0].reason
    );
}

#[test]
fn a_large_mixed_backlog_is_worked_through_completely() {
    let its = its();
    let np = pool("default", &[]);
    let mut all = pods(3000, "big", 1500, 4096);
    all.extend(pods(3000, "tiny", 100, 100));
    let plan = solve(&all, &[np], &its);
    assert!(
        plan.unschedulable.is_empty(),
        "{} unschedulable",
        plan.unschedulable.len()
    );
    assert_eq!(
        plan.claims.iter().map(|c| c.pods.len()).sum::<usize>(),
        6000
    );
    assert_sound(&plan, &all, &its);
}

#[test]
fn cursors_change_no_plan_only_how_fast_it_is_found() {
    // Karpenter's benchmark mix: zone and hostname spread, zone affinity, hostname anti-affinity
    // and plain replicas, on-demand and spot, over three pools with different requirements.
    // Types not offered in every zone, so the zone a pod is pinned to decides which fit.
    let mut its = its();
    for (i, t) in its.types.iter_mut().enumerate() {
        for o in &mut t.offerings {
            if (i + o.zone as usize).is_multiple_of(3) {
                o.available = false;
            }
        }
    }
    let pools = [
        pool("arm", &[(labels::ARCH, In, &["arm64"])]),
        pool("default", &[]),
        pool("od", &[(labels::CAPACITY_TYPE, In, &["on-demand"])]),
    ];
    let mut pods = crate::bench::karpenter_mix(3000, 7);
    // Replicas kept out of the zones where a cache runs, and caches spread over zones.
    for (i, p) in pods.iter_mut().enumerate().filter(|(i, _)| i % 7 == 0) {
        let cache = i % 2 == 0;
        let app = if cache { "cache" } else { "db" };
        p.labels = vec![("app".into(), app.into())];
        p.spread.clear();
        p.affinity.clear();
        p.anti_affinity = if cache {
            Vec::new()
        } else {
            vec![AffinityTerm {
                key: TopologyKey::Zone,
                selector: crate::scheduling::model::LabelSelector::labels(&[("app", "cache")]),
            }]
        };
        p.requests.cpu_millis = if cache { 3500 } else { 7000 };
    }
    let plan = |cursors: bool| {
        let mut solver = Solver::new(&pods, &[], &[], &pools, &its, None);
        solver.use_cursors = cursors;
        solver.run()
    };
    let (with, without) = (plan(true), plan(false));
    assert_eq!(with.unschedulable.len(), without.unschedulable.len());
    assert_eq!(with.claims.len(), without.claims.len());
    for (a, b) in with.claims.iter().zip(&without.claims) {
        assert_eq!(
            (a.node_pool, &a.pods, &a.instance_types, a.zones),
            (b.node_pool, &b.pods, &b.instance_types, b.zones)
        );
    }
    assert_sound(&with, &pods, &its);
}

#[test]
fn a_large_spot_round_is_sized_over_many_pools_none_above_its_share() {
    let its = its();
    let np = spot_cmr();
    let pools = [np];
    // 600 vCPUs demanded: a pool may take 120.
    let pods = pods(600, "web", 1000, 2048);
    let mut solver = Solver::new(&pods, &[], &[], &pools, &its, None);
    for p in solver.visiting_order() {
        solver.place(p).unwrap();
    }
    let cap = (600.0 * SPOT_POOL_SHARE * 1000.0) as u64;
    let planned = &solver.spot.planned;
    assert!(planned.len() >= 5, "{} pools", planned.len());
    assert_within_share(&solver, &its, cap);
    // Every pod is placed.
    assert_eq!(pods_placed(&solver), 600);
}

#[test]
fn a_large_round_of_mixed_shapes_is_cut_for_the_types_its_pods_fit_cheapest() {
    // Spot burstables sell CPU far below any type a 1-GiB pod fits on, so unit prices pooled
    // over the fleet value CPU at next to nothing and cut claims for the wrong types (the
    // simulator's 40,000-pod round came to 1.24× its fitting bound). Cut for the offerings the
    // fitting optimum buys, the round comes within 15 % of it (1.08× at the simulator's 4,000 pods).
    let its = its();
    let np = pool(
        "default",
        &[
            (labels::CATEGORY, In, &["c", "m", "r", "t"]),
            (labels::GENERATION, Gt, &["2"]),
            (labels::CAPACITY_TYPE, In, &["spot"]),
            ("kubernetes.io/arch", In, &["amd64"]),
        ],
    );
    let shapes = [
        (250, 256),
        (500, 512),
        (1000, 1024),
        (1500, 2048),
        (250, 1024),
        (500, 2048),
        (2000, 1024),
        (100, 128),
    ];
    let mut all = Vec::new();
    for (i, &(cpu, mem)) in shapes.iter().enumerate() {
        all.extend(pods(100, &format!("app-{i}"), cpu, mem));
    }
    let plan = solve(&all, std::slice::from_ref(&np), &its);
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
    assert_sound(&plan, &all, &its);
    let fleet: f64 = plan
        .claims
        .iter()
        .map(|c| {
            c.instance_types
                .iter()
                .filter_map(|&t| its.cheapest(t, c.zones, &c.requirements))
                .fold(f64::INFINITY, f64::min)
        })
        .sum();
    // The bound over every spot pool, none above its share of the CPU, as the round is planned.
    let offerings = cost::offering_supplies(
        &its,
        &its.admitted_by(&np.requirements),
        &np.requirements,
        &zero(),
        None,
    );
    let mut shapes = cost::Shapes::default();
    for p in &all {
        shapes.add(&cost::amount(&p.requests));
    }
    let cap = shapes.total()[0] * SPOT_POOL_SHARE;
    let bound =
        cost::fitting_lower_bound(&offerings, &shapes, 0.0, |_, s| cap / s.amount[0]).unwrap();
    assert!(
        fleet <= bound * 1.15,
        "{fleet:.4} $/h against a bound of {bound:.4} $/h: {:.2}×",
        fleet / bound
    );
}

#[test]
fn a_pod_only_a_type_above_a_spot_pools_share_fits_leaves_the_rest_favoured() {
    let its = its();
    let np = spot_cmr();
    let pools = [np];
    // 140 vCPUs: a pool's share is 28, and the 40-vCPU pod fits only types larger than that.
    let mut all = pods(100, "web", 1000, 1024);
    all.extend(pods(1, "batch", 40_000, 8192));
    let mut solver = Solver::new(&all, &[], &[], &pools, &its, None);
    let order = solver.visiting_order();
    assert!(!solver.favoured(0).is_empty(), "no favoured offering");
    for p in order {
        solver.place(p).unwrap();
    }
    let placed: usize = solver.claims.iter().map(|c| c.planned.pods.len()).sum();
    assert_eq!(placed, 101);
}

#[test]
fn a_zone_affinity_group_starts_where_its_type_is_cheapest_not_in_the_first_zone() {
    let its = its();
    // A spot type cheaper in a later zone than in the first: the pool allows only it.
    let spot_by_zone = |t: &crate::scheduling::instance_types::SchedType| {
        let mut by_zone = [f64::INFINITY; 3];
        for o in t
            .offerings
            .iter()
            .filter(|o| o.capacity_type == CapacityType::Spot)
        {
            by_zone[o.zone as usize] = by_zone[o.zone as usize].min(o.price);
        }
        by_zone
    };
    let ty = its
        .types
        .iter()
        .find(|t| {
            let p = spot_by_zone(t);
            t.capacity.0 >= 4000 && p.iter().all(|x| x.is_finite()) && p[1].min(p[2]) < p[0]
        })
        .expect("the catalog has such a type");
    let prices = spot_by_zone(ty);
    let cheapest = (0..3)
        .min_by(|&a, &b| prices[a].total_cmp(&prices[b]))
        .unwrap() as u32;
    let np = pool(
        "default",
        &[
            (labels::INSTANCE_TYPE, In, &[ty.name.as_str()]),
            (labels::CAPACITY_TYPE, In, &["spot"]),
        ],
    );
    let cache = zone_group(12, "cache", 500, 512);
    let plan = solve(&cache, &[np], &its);
    assert!(plan.unschedulable.is_empty());
    for c in &plan.claims {
        assert_eq!(
            zone_of(&plan, c),
            cheapest,
            "{} costs {prices:?} by zone",
            ty.name
        );
    }
}

#[test]
fn zone_pinned_claims_moving_flexible_ones_keep_every_spot_pool_within_its_share() {
    let its = its();
    let pools = [spot_cmr()];
    // 600 vCPUs: plain pods, a zone spread and two zone-affinity groups, interleaved.
    let mut all = Vec::new();
    for (i, app) in ["web", "spread", "cache-a", "cache-b"].iter().enumerate() {
        let mut group = pods(150, app, 1000, 2048);
        let sel = crate::scheduling::model::LabelSelector::labels(&[("app", app)]);
        for p in &mut group {
            match i {
                1 => {
                    p.spread = vec![SpreadConstraint {
                        key: TopologyKey::Zone,
                        max_skew: 1,
                        selector: sel.clone(),
                    }]
                }
                2 | 3 => {
                    p.affinity = vec![AffinityTerm {
                        key: TopologyKey::Zone,
                        selector: sel.clone(),
                    }]
                }
                _ => {}
            }
        }
        all.extend(group);
    }
    let mut solver = Solver::new(&all, &[], &[], &pools, &its, None);
    for p in solver.visiting_order() {
        solver.place(p).unwrap();
    }
    let cap = (600.0 * SPOT_POOL_SHARE * 1000.0) as u64;
    assert_within_share(&solver, &its, cap);
    // What is counted is what the claims are: per pool, its pinned claims' nodes and flexible
    // nodes; per type, as many flexible nodes as flexible claims.
    let mut pinned: HashMap<(usize, u32, u32), u64> = HashMap::new();
    let mut flexible: HashMap<u32, u64> = HashMap::new();
    for c in &solver.claims {
        let Some((t, zone)) = c.counted else {
            continue;
        };
        let cpu = its.types[t as usize].capacity.0;
        if c.planned.zones.count_ones() == 1 {
            assert_eq!(c.planned.zones, 1 << zone, "counted where it is pinned");
            *pinned.entry((0, t, zone)).or_default() += cpu;
        } else {
            *flexible.entry(t).or_default() += cpu;
        }
    }
    for (&key, &cpu) in &solver.spot.planned {
        let flex = solver.spot.flexible.get(&key).copied().unwrap_or(0);
        assert_eq!(
            cpu,
            pinned.get(&key).copied().unwrap_or(0) + flex,
            "{key:?}"
        );
    }
    for (&t, &cpu) in &flexible {
        let counted: u64 = solver
            .spot
            .flexible
            .iter()
            .filter(|((_, u, _), _)| *u == t)
            .map(|(_, v)| v)
            .sum();
        assert_eq!(
            counted, cpu,
            "flexible nodes of {}",
            its.types[t as usize].name
        );
    }
    assert_eq!(pods_placed(&solver), 600);
}

#[test]
fn a_pod_is_in_its_namespace_and_a_bare_name_in_default() {
    assert!(in_namespace("shop/web-1", "shop"));
    assert!(!in_namespace("shopping/web-1", "shop"));
    assert!(!in_namespace("shop/web-1", "default"));
    assert!(in_namespace("web-1", "default"));
    assert!(!in_namespace("web-1", "web-1"));
    assert!(in_namespace("default/web-1", "default"));
}

#[test]
fn full_running_nodes_take_no_pod_yet_their_pods_count_by_zone_and_binds_name_the_right_node() {
    let its = its();
    let pools = [pool("default", &[])];
    // m5.xlarge: 4 vCPU. n0 and n2 full, n1 with room, n3 excluded (leaving).
    let mut full = pods(1, "full", 3900, 1024);
    full[0].labels = vec![("app".into(), "web".into())];
    let nodes = vec![
        node(&its, "n0", "m5.xlarge", 0, &full),
        node(&its, "n1", "m5.xlarge", 1, &[]),
        node(&its, "n2", "m5.xlarge", 2, &full),
        node(&its, "n3", "m5.xlarge", 0, &[]),
    ];
    let excluded = [false, false, false, true];
    let plan = solve_excluding(
        &pods(2, "api", 1000, 1024),
        &nodes,
        &excluded,
        &pools,
        &its,
        None,
    );
    assert_eq!(plan.bound, vec![(0, 1), (1, 1)], "both on n1, by its index");
    assert!(plan.claims.is_empty());

    // Zone spread still counts the web pods on the full nodes (zones 0 and 2): the first new
    // one must go to zone 1 (n1), the second may (all zones level at one).
    let web = web_spread_by_zone(pods(3, "web-new", 1000, 1024));
    let plan = solve_excluding(&web, &nodes, &excluded, &pools, &its, None);
    let on_n1 = plan.bound.iter().filter(|(_, n)| *n == 1).count();
    assert_eq!(on_n1, 2, "{plan:?}");
    assert!(plan.bound.iter().all(|(_, n)| *n == 1));
    // The third would put zone 1 two ahead of zones 0 and 2: a new claim, in zone 0 or 2.
    assert_eq!(plan.claims.len(), 1);
    assert_eq!(plan.claims[0].zones & 0b010, 0, "not zone 1");
}
