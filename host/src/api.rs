//! The resources users apply (`NodePool`, `EC2NodeClass`, `Policy`) and the one the controller
//! creates (`NodeClaim`). The CRDs are generated from these types (`dovetail crds`); validation
//! lives in the schema (enums, patterns, ranges, CEL rules) so the apiserver enforces it, and
//! `validate` applies the same schema and rules where no API server is in the way.

pub mod convert;
pub mod duration;
pub mod ec2nodeclass;
pub mod manifest;
pub mod nodeclaim;
pub mod nodepool;
pub mod policy;
pub mod scenario;
pub mod validate;

pub use ec2nodeclass::EC2NodeClass;
pub use nodeclaim::NodeClaim;
pub use nodepool::NodePool;
pub use policy::Policy;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The annotation on each CRD that says which release generated it: the controller refuses to
/// start against CRDs older than itself.
pub const CRD_VERSION_ANNOTATION: &str = "dovetail.sh/version";

/// Every CRD of the project, in a stable order, stamped with this release's version.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        NodePool::crd(),
        NodeClaim::crd(),
        EC2NodeClass::crd(),
        Policy::crd(),
    ];
    for crd in &mut crds {
        crd.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(
                CRD_VERSION_ANNOTATION.to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            );
    }
    crds
}

/// Why the CRDs in a cluster cannot serve this controller, if they cannot: `found` maps each CRD
/// name to its version annotation (`None`: not installed; `Some("")`: installed without one).
pub fn crds_problem(found: &[(String, Option<String>)]) -> Option<String> {
    let ours = env!("CARGO_PKG_VERSION");
    let version = |v: &str| -> Option<(u64, u64, u64)> {
        let mut p = v.split(['.', '-', '+']).map(|x| x.parse::<u64>().ok());
        Some((p.next()??, p.next()??, p.next()??))
    };
    let mut problems = Vec::new();
    for (name, v) in found {
        match v.as_deref() {
            None => problems.push(format!("{name} is not installed")),
            Some(v) if version(v).is_none() => {
                problems.push(format!("{name} has no {CRD_VERSION_ANNOTATION} version (not from the dovetail-crd chart of a release)"))
            }
            Some(v) if version(v) < version(ours) => {
                problems.push(format!("{name} is version {v}, older than this controller ({ours})"))
            }
            Some(_) => {}
        }
    }
    (!problems.is_empty()).then(|| {
        format!(
            "the CRDs do not match this controller: {}; install or upgrade them first: `helm upgrade --install dovetail-crd charts/dovetail-crd` (or `dovetail crds | kubectl apply -f -`)",
            problems.join("; ")
        )
    })
}

/// The CRDs as one multi-document YAML stream, as `dovetail crds` prints it and the chart ships.
pub fn crds_yaml() -> String {
    crds()
        .iter()
        .map(|crd| serde_norway::to_string(crd).expect("a CRD serializes"))
        .collect::<Vec<_>>()
        .join("---\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crds_older_than_the_controller_or_missing_are_a_problem_that_says_what_to_run() {
        let ours = env!("CARGO_PKG_VERSION").to_string();
        let ok = vec![("nodepools.dovetail.sh".to_string(), Some(ours.clone()))];
        assert_eq!(crds_problem(&ok), None);
        let newer = vec![("nodepools.dovetail.sh".to_string(), Some("99.0.0".into()))];
        assert_eq!(
            crds_problem(&newer),
            None,
            "newer CRDs serve an older controller"
        );
        let bad = vec![
            ("nodepools.dovetail.sh".to_string(), Some("0.0.1".into())),
            ("policies.dovetail.sh".to_string(), None),
            ("nodeclaims.dovetail.sh".to_string(), Some(String::new())),
        ];
        let p = crds_problem(&bad).unwrap();
        assert!(
            p.contains("nodepools.dovetail.sh is version 0.0.1, older"),
            "{p}"
        );
        assert!(p.contains("policies.dovetail.sh is not installed"), "{p}");
        assert!(
            p.contains("nodeclaims.dovetail.sh has no dovetail.sh/version"),
            "{p}"
        );
        assert!(p.contains("helm upgrade --install dovetail-crd"), "{p}");
    }
}
