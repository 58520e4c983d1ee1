//! The resources users apply (`NodePool`, `EC2NodeClass`, `Policy`) and the one the controller
//! creates (`NodeClaim`). The CRDs are generated from these types (`dovetail crds`); validation
//! lives in the schema (enums, patterns, ranges, CEL rules) so the apiserver enforces it, and
//! `validate` applies the same schema and rules where no API server is in the way.

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

/// Every CRD of the project, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        NodePool::crd(),
        NodeClaim::crd(),
        EC2NodeClass::crd(),
        Policy::crd(),
    ]
}

/// The CRDs as one multi-document YAML stream, as `dovetail crds` prints it and the chart ships.
pub fn crds_yaml() -> String {
    crds()
        .iter()
        .map(|crd| serde_norway::to_string(crd).expect("a CRD serializes"))
        .collect::<Vec<_>>()
        .join("---\n")
}
