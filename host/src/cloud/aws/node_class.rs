//! EC2NodeClass resolution: subnets, security groups and AMIs by selector terms (AMI aliases
//! through AWS's public SSM parameters for the cluster's Kubernetes version), the instance
//! profile, the bootstrap user data; and the status that says what was found or why not.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::Filter;

use super::user_data::{self, Family};
use super::{AwsCloud, sdk_message, tag_filter, tags};
use crate::api::ec2nodeclass::{EC2NodeClassSpec, ResolvedId, ResolvedSubnet};

/// A node class resolved against the account.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedClass {
    pub name: String,
    pub subnets: Vec<ResolvedSubnet>,
    pub security_groups: Vec<ResolvedId>,
    /// The newest matching image per architecture (`x86_64`, `arm64`).
    pub amis: BTreeMap<String, String>,
    pub instance_profile: Option<String>,
    /// The class's tags with the cluster's and the class's own: on everything its launches make.
    pub tags: BTreeMap<String, String>,
    /// The bootstrap the AMI family reads, merged with the class's `userData`.
    pub user_data: String,
    pub family: Family,
    /// The spec it was resolved from: disks, metadata options, network, monitoring.
    pub spec: EC2NodeClassSpec,
}

impl ResolvedClass {
    /// The EC2NodeClass status this resolution writes: what was found, and `Ready=True`.
    pub fn status(&self, now: i64) -> crate::api::ec2nodeclass::EC2NodeClassStatus {
        crate::api::ec2nodeclass::EC2NodeClassStatus {
            subnets: self.subnets.clone(),
            security_groups: self.security_groups.clone(),
            amis: self
                .amis
                .values()
                .map(|id| ResolvedId {
                    id: id.clone(),
                    name: None,
                })
                .collect(),
            instance_profile: self.instance_profile.clone(),
            conditions: vec![ready_condition(true, "Resolved", "", now)],
        }
    }
}

impl NodeClassError {
    /// The EC2NodeClass status for this failure: `Ready=False` with the reason.
    pub fn status(&self, now: i64) -> crate::api::ec2nodeclass::EC2NodeClassStatus {
        crate::api::ec2nodeclass::EC2NodeClassStatus {
            conditions: vec![ready_condition(
                false,
                "ResolutionFailed",
                &self.reason,
                now,
            )],
            ..Default::default()
        }
    }
}

fn ready_condition(
    ready: bool,
    reason: &str,
    message: &str,
    now: i64,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        type_: "Ready".into(),
        status: if ready { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(now).unwrap_or_default(),
        ),
        observed_generation: None,
    }
}

/// Why a node class is not ready.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("EC2NodeClass {class}: {reason}")]
pub struct NodeClassError {
    pub class: String,
    pub reason: String,
}

impl AwsCloud {
    /// Resolves a node class: subnets, security groups and AMIs by its selector terms. On
    /// success launches use it; on failure the reason is what the `Ready=False` condition says
    /// and nothing launches.
    pub fn resolve(
        &mut self,
        name: &str,
        spec: &EC2NodeClassSpec,
    ) -> Result<ResolvedClass, NodeClassError> {
        let fail = |reason: String| NodeClassError {
            class: name.to_string(),
            reason,
        };
        // What cannot launch is refused before any call: the family, the bootstrap, the disks.
        let family = Family::of(spec).map_err(fail)?;
        let user_data =
            user_data::render(family, &self.settings.cluster_info(), spec).map_err(fail)?;
        super::instance_options::block_devices(family, spec).map_err(fail)?;
        super::instance_options::metadata_options(spec).map_err(fail)?;
        if let Some(p) = spec.instance_store_policy.as_deref()
            && p != "RAID0"
        {
            return Err(fail(format!(
                "instanceStorePolicy {p:?} is not supported (RAID0)"
            )));
        }
        let mut subnets = Vec::new();
        for term in &spec.subnet_selector_terms {
            let mut req = self.ec2.describe_subnets();
            if let Some(id) = &term.id {
                req = req.subnet_ids(id);
            }
            for (k, v) in &term.tags {
                req = req.filters(tag_filter(k, v));
            }
            self.count("DescribeSubnets");
            let out = self
                .bridge
                .wait(req.send())
                .map_err(|e| fail(format!("DescribeSubnets: {}", sdk_message(&e))))?;
            for s in out.subnets() {
                subnets.push(ResolvedSubnet {
                    id: s.subnet_id().unwrap_or_default().to_string(),
                    zone: s.availability_zone().unwrap_or_default().to_string(),
                });
            }
        }
        if subnets.is_empty() {
            return Err(fail(format!(
                "no subnets matched {}",
                describe_terms(
                    spec.subnet_selector_terms
                        .iter()
                        .map(|t| (&t.id, &t.name, &t.tags))
                )
            )));
        }
        let mut groups = Vec::new();
        for term in &spec.security_group_selector_terms {
            let mut req = self.ec2.describe_security_groups();
            if let Some(id) = &term.id {
                req = req.group_ids(id);
            }
            if let Some(n) = &term.name {
                req = req.filters(Filter::builder().name("group-name").values(n).build());
            }
            for (k, v) in &term.tags {
                req = req.filters(tag_filter(k, v));
            }
            self.count("DescribeSecurityGroups");
            let out = self
                .bridge
                .wait(req.send())
                .map_err(|e| fail(format!("DescribeSecurityGroups: {}", sdk_message(&e))))?;
            for g in out.security_groups() {
                groups.push(ResolvedId {
                    id: g.group_id().unwrap_or_default().to_string(),
                    name: g.group_name().map(str::to_string),
                });
            }
        }
        if groups.is_empty() {
            return Err(fail(format!(
                "no security groups matched {}",
                describe_terms(
                    spec.security_group_selector_terms
                        .iter()
                        .map(|t| (&t.id, &t.name, &t.tags))
                )
            )));
        }
        let mut amis: BTreeMap<String, (String, String)> = BTreeMap::new();
        for term in &spec.ami_selector_terms {
            if let Some(alias) = &term.alias {
                for (arch, id) in self.alias(family, alias).map_err(fail)? {
                    amis.insert(arch, (String::from("~"), id));
                }
                continue;
            }
            let mut req = self.ec2.describe_images();
            if let Some(id) = &term.id {
                req = req.image_ids(id);
            }
            if let Some(n) = &term.name {
                req = req.filters(Filter::builder().name("name").values(n).build());
            }
            if let Some(o) = &term.owner {
                req = req.owners(o);
            }
            for (k, v) in &term.tags {
                req = req.filters(tag_filter(k, v));
            }
            self.count("DescribeImages");
            let out = self
                .bridge
                .wait(req.send())
                .map_err(|e| fail(format!("DescribeImages: {}", sdk_message(&e))))?;
            for img in out.images() {
                let arch = img
                    .architecture()
                    .map_or("x86_64".to_string(), |a| a.as_str().to_string());
                let created = img.creation_date().unwrap_or_default().to_string();
                let id = img.image_id().unwrap_or_default().to_string();
                let newer = amis.get(&arch).is_none_or(|(c, _)| created > *c);
                if newer {
                    amis.insert(arch, (created, id));
                }
            }
        }
        if amis.is_empty() {
            return Err(fail("no AMIs matched the amiSelectorTerms".into()));
        }
        let instance_profile = match (&spec.instance_profile, &spec.role) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(role)) => Some(self.ensure_instance_profile(name, role).map_err(fail)?),
            (None, None) => None,
        };
        let mut class_tags = spec.tags.clone();
        class_tags.insert(tags::CLUSTER.into(), self.settings.cluster_name.clone());
        class_tags.insert(tags::NODECLASS.into(), name.to_string());
        // What AWS's own tools look for on a cluster's instances, as Karpenter tags them: the
        // cloud provider and load balancer controller find the cluster's by the first, EKS by the
        // second. (The IAM policy scopes by dovetail.sh/cluster, which only we write.)
        class_tags.insert(
            format!("kubernetes.io/cluster/{}", self.settings.cluster_name),
            "owned".into(),
        );
        class_tags.insert(
            "eks:eks-cluster-name".into(),
            self.settings.cluster_name.clone(),
        );
        let resolved = ResolvedClass {
            name: name.to_string(),
            subnets,
            security_groups: groups,
            amis: amis.into_iter().map(|(a, (_, id))| (a, id)).collect(),
            instance_profile,
            tags: class_tags,
            user_data,
            family,
            spec: spec.clone(),
        };
        self.classes.insert(name.to_string(), resolved.clone());
        Ok(resolved)
    }

    /// The instance profile for a node role, as Karpenter does it: `dovetail_<cluster>_<hash>`,
    /// created with the role in it when missing, reused otherwise.
    /// An AMI alias (`al2023@latest`, `bottlerocket@1.20.4`) through the public SSM parameters
    /// AWS publishes for the cluster's Kubernetes version, per architecture.
    fn alias(&mut self, family: Family, alias: &str) -> Result<Vec<(String, String)>, String> {
        let version = alias
            .split_once('@')
            .map(|(_, v)| v)
            .ok_or_else(|| format!("AMI alias {alias:?}: expected family@version"))?;
        let k8s = self.settings.kubernetes_version.clone();
        let mut out = Vec::new();
        for (arch, path_arch) in [("x86_64", "x86_64"), ("arm64", "arm64")] {
            let name = alias_parameter(family, &k8s, path_arch, version);
            self.count("GetParameter");
            match self
                .bridge
                .wait(self.ssm.get_parameter().name(&name).send())
            {
                Ok(o) => {
                    if let Some(v) = o.parameter().and_then(|p| p.value()) {
                        out.push((arch.to_string(), v.to_string()));
                    }
                }
                Err(e) => {
                    return Err(format!(
                        "AMI alias {alias}: SSM parameter {name}: {}",
                        sdk_message(&e)
                    ));
                }
            }
        }
        Ok(out)
    }
}

/// The public SSM parameter that names an alias's image: the EKS-optimized AL2023 AMIs
/// (<https://docs.aws.amazon.com/eks/latest/userguide/retrieve-ami-id.html>) and Bottlerocket's
/// (<https://bottlerocket.dev/en/os/latest/install/quickstart/aws/>).
pub fn alias_parameter(family: Family, k8s: &str, arch: &str, version: &str) -> String {
    match (family, version) {
        (Family::Al2023, "latest") => format!(
            "/aws/service/eks/optimized-ami/{k8s}/amazon-linux-2023/{arch}/standard/recommended/image_id"
        ),
        (Family::Al2023, v) => format!(
            "/aws/service/eks/optimized-ami/{k8s}/amazon-linux-2023/{arch}/standard/amazon-eks-node-al2023-{arch}-standard-{k8s}-{v}/image_id"
        ),
        (Family::Bottlerocket, v) => format!(
            "/aws/service/bottlerocket/aws-k8s-{k8s}/{arch}/{}/image_id",
            v.strip_prefix('v').unwrap_or(v)
        ),
    }
}

pub(super) fn describe_terms<'a>(
    terms: impl Iterator<
        Item = (
            &'a Option<String>,
            &'a Option<String>,
            &'a BTreeMap<String, String>,
        ),
    >,
) -> String {
    let parts: Vec<String> = terms
        .map(|(id, name, tags)| {
            let mut p = Vec::new();
            if let Some(id) = id {
                p.push(format!("id {id}"));
            }
            if let Some(n) = name {
                p.push(format!("name {n}"));
            }
            for (k, v) in tags {
                p.push(format!("tag {k}={v}"));
            }
            p.join(" and ")
        })
        .collect();
    if parts.is_empty() {
        "no selector terms".into()
    } else {
        parts.join(" or ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_name_the_parameter_of_the_clusters_kubernetes_version() {
        assert_eq!(
            alias_parameter(Family::Al2023, "1.33", "arm64", "latest"),
            "/aws/service/eks/optimized-ami/1.33/amazon-linux-2023/arm64/standard/recommended/image_id"
        );
        assert_eq!(
            alias_parameter(Family::Bottlerocket, "1.33", "x86_64", "v1.20.4"),
            "/aws/service/bottlerocket/aws-k8s-1.33/x86_64/1.20.4/image_id"
        );
        assert_eq!(
            alias_parameter(Family::Bottlerocket, "1.33", "x86_64", "latest"),
            "/aws/service/bottlerocket/aws-k8s-1.33/x86_64/latest/image_id"
        );
    }
}
