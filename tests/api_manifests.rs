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
        "exactly one of builtin, configMap, url, oci and file",
        "schedule and duration go together",
        "- WhenEmptyOrUnderutilized",
        "- DoesNotExist",
    ] {
        assert!(yaml.contains(needle), "{needle} missing from the CRDs");
    }
    let chart = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/dovetail-crd/templates/crds.yaml"))
        .expect("charts/dovetail-crd/templates/crds.yaml: regenerate with `cargo run -p dovetail -- crds > charts/dovetail-crd/templates/crds.yaml`");
    assert!(
        chart == yaml,
        "the chart's CRDs are stale: regenerate with `cargo run -p dovetail -- crds > charts/dovetail-crd/templates/crds.yaml`"
    );
}

/// One row per rule: a change to a valid manifest, and the field its refusal must name.
#[test]
fn every_invalid_field_is_refused_with_its_own_message() {
    let base = include_str!("manifests/karpenter-getting-started.yaml");
    let policy = "apiVersion: dovetail.sh/v1\nkind: Policy\nmetadata:\n  name: graviton\nspec:\n  source:\n    builtin: arm-first\n";
    let rows: &[(&str, String, &str)] = &[
        (
            "a duration that is not one",
            base.replace("consolidateAfter: 1m", "consolidateAfter: banana"),
            "spec.disruption.consolidateAfter",
        ),
        (
            "expireAfter that is not a duration",
            base.replace("expireAfter: 720h", "expireAfter: forever-ish"),
            "spec.template.spec.expireAfter",
        ),
        (
            "a budget of words",
            base.replace(
                "    consolidateAfter: 1m\n",
                "    consolidateAfter: 1m\n    budgets:\n      - nodes: \"ten\"\n",
            ),
            "spec.disruption.budgets[0].nodes",
        ),
        (
            "a budget schedule without a duration",
            base.replace(
                "    consolidateAfter: 1m\n",
                "    consolidateAfter: 1m\n    budgets:\n      - nodes: \"10%\"\n        schedule: \"0 9 * * *\"\n",
            ),
            "spec.disruption.budgets[0]",
        ),
        (
            "In without values",
            base.replace("values: [\"linux\"]", "values: []"),
            "spec.template.spec.requirements[1]",
        ),
        (
            "Gt with two values",
            base.replace("values: [\"2\"]", "values: [\"2\", \"3\"]"),
            "spec.template.spec.requirements[4]",
        ),
        (
            "a node class with both a role and an instance profile",
            base.replace(
                "  role: \"KarpenterNodeRole-${CLUSTER_NAME}\"",
                "  role: \"KarpenterNodeRole-${CLUSTER_NAME}\"\n  instanceProfile: nodes",
            ),
            "EC2NodeClass/default: (root)",
        ),
        (
            "a policy with two sources",
            format!(
                "{policy}    url: {{url: \"https://example.com/p.wasm\", sha256: \"{}\"}}\n",
                "0".repeat(64)
            ),
            "Policy/graviton: spec.source",
        ),
        (
            "a policy memory cap above the engine's",
            format!("{policy}  limits:\n    memoryMiB: 4096\n"),
            "spec.limits.memoryMiB",
        ),
    ];
    for (what, text, field) in rows {
        let err = parse("m.yaml", text).expect_err(what);
        let message = err.to_string();
        assert!(
            matches!(err, ManifestError::Rejected { .. }),
            "{what}: refused by the schema: {message}"
        );
        assert!(
            message.starts_with("m.yaml:"),
            "{what}: names the file: {message}"
        );
        assert!(message.contains(field), "{what}: names {field}: {message}");
    }
    // The base itself is valid, and each refusal says something different.
    assert!(parse("m.yaml", base).is_ok());
    let messages: std::collections::BTreeSet<String> = rows
        .iter()
        .map(|(_, t, _)| parse("m.yaml", t).unwrap_err().to_string())
        .collect();
    assert_eq!(messages.len(), rows.len(), "{messages:#?}");
}

/// Misspelled fields are refused, as `kubectl apply` (strict field validation) refuses them,
/// each at its own line: in our kinds by their CRD schema, in Kubernetes' kinds by their types.
#[test]
fn unknown_fields_are_refused_at_their_own_line() {
    let text = "\
apiVersion: dovetail.sh/v1
kind: Policy
metadata:
  name: team
spec:
  source:
    builtin: cheapest
  confg:
    weight: \"2\"
";
    let err = parse("policy.yaml", text).unwrap_err().to_string();
    assert!(
        err.starts_with("policy.yaml:8: Policy/team: spec.confg: unknown field")
            && err.contains("config"),
        "{err}"
    );
    let text = "\
apiVersion: dovetail.sh/v1
kind: NodePool
metadata:
  name: default
spec:
  template:
    spec:
      requirements: []
      nodeClassRef: {group: aws.dovetail.sh, kind: EC2NodeClass, name: default}
  policies:
    scoring: cheapest
    consolidaton: balanced
";
    let err = parse("pool.yaml", text).unwrap_err().to_string();
    assert!(
        err.starts_with(
            "pool.yaml:12: NodePool/default: spec.policies.consolidaton: unknown field"
        ),
        "{err}"
    );
    let text = "\
apiVersion: v1
kind: Pod
metadata:
  name: bare
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: nginx
        - name: sidecar
          image: envoy
          resourcs:
            requests: {cpu: 100m}
";
    let err = parse("web.yaml", text).unwrap_err().to_string();
    assert!(
        err.starts_with(
            "web.yaml:21: Deployment/web: spec.template.spec.containers[1].resourcs: unknown field"
        ),
        "{err}"
    );
}
