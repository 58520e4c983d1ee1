//! Resource types: Karpenter guide manifests load, bad input is located, the chart's CRDs are the
//! generated ones.

use dovetail::api::manifest::{Manifest, ManifestError, parse};
use dovetail::api::nodepool::{ConsolidationPolicy, OnFailure, RequirementOperator};

#[test]
fn karpenter_getting_started_manifests_load_with_only_the_group_changed() {
    let text = include_str!("manifests/karpenter-getting-started.yaml");
    let objects = parse("karpenter-getting-started.yaml", text).unwrap();
    let [Manifest::NodePool(pool), Manifest::EC2NodeClass(class)] = objects.as_slice() else {
        panic!("{objects:?}")
    };
    let spec = &pool.spec;
    assert_eq!(spec.template.spec.requirements.len(), 5);
    assert_eq!(
        spec.template.spec.requirements[4].operator,
        RequirementOperator::Gt
    );
    assert_eq!(spec.template.spec.node_class_ref.kind, "EC2NodeClass");
    assert_eq!(spec.template.spec.expire_after, "720h");
    assert_eq!(spec.limits["cpu"].0, "1000");
    assert_eq!(
        spec.disruption.consolidation_policy,
        ConsolidationPolicy::WhenEmptyOrUnderutilized
    );
    assert_eq!(spec.disruption.consolidate_after, "1m");
    assert_eq!(
        spec.disruption.budgets[0].nodes, "10%",
        "Karpenter's default budget"
    );
    assert_eq!(
        (spec.policies.scoring.as_str(), spec.policies.on_failure),
        ("cheapest", OnFailure::Fallback)
    );
    assert_eq!(
        class.spec.role.as_deref(),
        Some("KarpenterNodeRole-${CLUSTER_NAME}")
    );
    assert_eq!(
        class.spec.subnet_selector_terms[0].tags["dovetail.sh/discovery"],
        "${CLUSTER_NAME}"
    );
}

#[test]
fn a_malformed_nodepool_names_the_field_and_the_line() {
    let text = include_str!("manifests/karpenter-getting-started.yaml")
        .replace("operator: Gt", "operator: Greater");
    let err = parse("pool.yaml", &text).unwrap_err();
    let ManifestError::Invalid {
        file,
        line,
        message,
        ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(file, "pool.yaml");
    let expected = text
        .lines()
        .position(|l| l.contains("operator: Greater"))
        .unwrap()
        + 1;
    assert_eq!(*line, expected, "{err}");
    assert!(
        message.contains("requirements[4].operator") && message.contains("Greater"),
        "{err}"
    );

    let text = include_str!("manifests/karpenter-getting-started.yaml")
        .replace("      nodeClassRef:", "      nodeClassReff:");
    let err = parse("pool.yaml", &text).unwrap_err().to_string();
    assert!(
        err.contains("nodeClassRef") && err.starts_with("pool.yaml:"),
        "{err}"
    );

    let err = parse(
        "old.yaml",
        "apiVersion: dovetail.sh/v1beta1\nkind: NodePool\nmetadata: {name: x}\n",
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("must be apiVersion dovetail.sh/v1"),
        "{err}"
    );
}

#[test]
fn other_kinds_pass_through_for_their_readers() {
    let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: inflate}\nspec: {replicas: 10}\n---\n";
    let objects = parse("deploy.yaml", text).unwrap();
    assert!(matches!(&objects[..], [Manifest::Other { kind, .. }] if kind == "Deployment"));
}

#[test]
fn the_crds_carry_their_validation_and_the_chart_ships_the_generated_ones() {
    let yaml = dovetail::api::crds_yaml();
    for needle in [
        "name: nodepools.dovetail.sh",
        "name: nodeclaims.dovetail.sh",
        "name: ec2nodeclasses.aws.dovetail.sh",
        "name: policies.dovetail.sh",
        "exactly one of role and instanceProfile",
        "exactly one of configMap, url and builtin",
        "schedule and duration go together",
        "- WhenEmptyOrUnderutilized",
        "- DoesNotExist",
    ] {
        assert!(yaml.contains(needle), "{needle} missing from the CRDs");
    }
    let chart = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/dovetail/crds/crds.yaml"))
        .expect("charts/dovetail/crds/crds.yaml: regenerate with `cargo run -p dovetail -- crds > charts/dovetail/crds/crds.yaml`");
    assert!(
        chart == yaml,
        "the chart's CRDs are stale: regenerate with `cargo run -p dovetail -- crds > charts/dovetail/crds/crds.yaml`"
    );
}
