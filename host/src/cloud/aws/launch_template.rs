//! Launch templates: what a class's nodes boot with (AMI, user data, disks, instance metadata
//! options, network interface, monitoring, instance profile, security groups, and the tags of
//! the network interfaces and spot requests a launch makes), one template per distinct
//! configuration, named by a stable digest of it, created once and reused; templates no class
//! uses any more are deleted.

use aws_sdk_ec2::types::{
    LaunchTemplateIamInstanceProfileSpecificationRequest,
    LaunchTemplateInstanceNetworkInterfaceSpecificationRequest,
    LaunchTemplateTagSpecificationRequest, LaunchTemplatesMonitoringRequest,
    RequestLaunchTemplateData, ResourceType, Tag, TagSpecification,
};
use base64::Engine as _;
use sha2::Digest as _;

use super::node_class::ResolvedClass;
use super::{AwsCloud, api_error, sdk_message, tag_filter, tags};
use crate::capacity::CapacityType;
use crate::cloud::CloudError;

pub use super::instance_options::{block_devices, metadata_options};

/// The launch template data of a class's nodes on one AMI and capacity type. The network
/// interfaces a launch creates, and its spot request, are tagged here: CreateFleet's own tag
/// specifications cover only the fleet, instances and volumes.
pub fn template_data(
    class: &ResolvedClass,
    ami: &str,
    capacity: CapacityType,
) -> Result<RequestLaunchTemplateData, String> {
    let spec = &class.spec;
    let mut data = RequestLaunchTemplateData::builder()
        .image_id(ami)
        .user_data(base64::engine::general_purpose::STANDARD.encode(&class.user_data))
        .metadata_options(metadata_options(spec)?)
        .set_block_device_mappings(Some(block_devices(class.family, spec)?))
        .monitoring(
            LaunchTemplatesMonitoringRequest::builder()
                .enabled(spec.detailed_monitoring.unwrap_or(false))
                .build(),
        );
    match spec.associate_public_ip_address {
        // A public address is a property of the primary interface, which then carries the
        // security groups (EC2 refuses groups in both places).
        Some(public) => {
            let mut eni = LaunchTemplateInstanceNetworkInterfaceSpecificationRequest::builder()
                .device_index(0)
                .associate_public_ip_address(public);
            for g in &class.security_groups {
                eni = eni.groups(&g.id);
            }
            data = data.network_interfaces(eni.build());
        }
        None => {
            for g in &class.security_groups {
                data = data.security_group_ids(&g.id);
            }
        }
    }
    if let Some(p) = &class.instance_profile {
        data = data.iam_instance_profile(
            LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                .name(p)
                .build(),
        );
    }
    let mut types = vec![ResourceType::NetworkInterface];
    if capacity == CapacityType::Spot {
        types.push(ResourceType::SpotInstancesRequest);
    }
    for t in types {
        let mut s = LaunchTemplateTagSpecificationRequest::builder().resource_type(t);
        for (k, v) in &class.tags {
            s = s.tags(Tag::builder().key(k).value(v).build());
        }
        data = data.tag_specifications(s.build());
    }
    Ok(data.build())
}

/// A stable name for a configuration: the cluster and a digest of everything in the template.
pub fn template_name(
    cluster: &str,
    class: &ResolvedClass,
    ami: &str,
    capacity: CapacityType,
) -> String {
    let described = serde_json::json!({
        "class": class.name,
        "spec": class.spec,
        "ami": ami,
        "spot": capacity == CapacityType::Spot,
        "groups": class.security_groups.iter().map(|g| &g.id).collect::<Vec<_>>(),
        "profile": class.instance_profile,
        "tags": class.tags,
        "userData": class.user_data,
    });
    let digest = sha2::Sha256::digest(described.to_string().as_bytes());
    format!("dovetail/{cluster}/{}", &hex::encode(digest)[..16])
}

impl AwsCloud {
    /// The launch template of a class on one AMI and capacity type: found by name or created,
    /// then cached, so a steady state makes no template calls.
    pub(super) fn template(
        &mut self,
        claim: &str,
        class: &ResolvedClass,
        ami: &str,
        capacity: CapacityType,
    ) -> Result<String, CloudError> {
        let name = template_name(&self.settings.cluster_name, class, ami, capacity);
        if self.templates.contains(&name) {
            return Ok(name);
        }
        self.count("DescribeLaunchTemplates");
        let found = self.bridge.wait(
            self.ec2
                .describe_launch_templates()
                .launch_template_names(&name)
                .send(),
        );
        let exists = found.is_ok_and(|o| !o.launch_templates().is_empty());
        if !exists {
            let data =
                template_data(class, ami, capacity).map_err(|reason| CloudError::NotReady {
                    claim: claim.into(),
                    reason: format!("EC2NodeClass {}: {reason}", class.name),
                })?;
            let mut spec = TagSpecification::builder().resource_type(ResourceType::LaunchTemplate);
            for (k, v) in &class.tags {
                spec = spec.tags(Tag::builder().key(k).value(v).build());
            }
            self.count("CreateLaunchTemplate");
            self.bridge
                .wait(
                    self.ec2
                        .create_launch_template()
                        .launch_template_name(&name)
                        .launch_template_data(data)
                        .tag_specifications(spec.build())
                        .send(),
                )
                .map_err(|e| api_error(claim, "CreateLaunchTemplate", sdk_message(&e)))?;
        }
        self.templates.insert(name.clone());
        Ok(name)
    }

    /// Deletes this cluster's launch templates that no current configuration uses.
    pub fn collect_launch_templates(&mut self) -> Result<Vec<String>, CloudError> {
        self.count("DescribeLaunchTemplates");
        let out = self
            .bridge
            .wait(
                self.ec2
                    .describe_launch_templates()
                    .filters(tag_filter(tags::CLUSTER, &self.settings.cluster_name))
                    .send(),
            )
            .map_err(|e| api_error("", "DescribeLaunchTemplates", sdk_message(&e)))?;
        let current = &self.templates;
        let stale: Vec<String> = out
            .launch_templates()
            .iter()
            .filter_map(|t| t.launch_template_name().map(str::to_string))
            .filter(|n| !current.contains(n))
            .collect();
        for name in &stale {
            self.count("DeleteLaunchTemplate");
            self.bridge
                .wait(
                    self.ec2
                        .delete_launch_template()
                        .launch_template_name(name)
                        .send(),
                )
                .map_err(|e| api_error("", "DeleteLaunchTemplate", sdk_message(&e)))?;
        }
        Ok(stale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ec2nodeclass::EC2NodeClassSpec;
    use crate::cloud::aws::user_data::Family;
    use aws_sdk_ec2::types::LaunchTemplateHttpTokensState;

    fn spec(yaml: &str) -> EC2NodeClassSpec {
        serde_norway::from_str(&format!(
            "amiSelectorTerms: [{{alias: al2023@latest}}]\nsubnetSelectorTerms: [{{id: s}}]\nsecurityGroupSelectorTerms: [{{id: g}}]\n{yaml}"
        ))
        .unwrap()
    }

    #[test]
    fn a_class_without_disks_gets_the_familys_default() {
        let al = block_devices(Family::Al2023, &spec("")).unwrap();
        assert_eq!(al.len(), 1);
        let ebs = al[0].ebs().unwrap();
        assert_eq!((ebs.volume_size(), ebs.encrypted()), (Some(20), Some(true)));
        let br = block_devices(Family::Bottlerocket, &spec("")).unwrap();
        assert_eq!(
            br.iter()
                .map(|b| b.device_name().unwrap())
                .collect::<Vec<_>>(),
            ["/dev/xvda", "/dev/xvdb"]
        );
    }

    #[test]
    fn volume_sizes_round_up_to_whole_gib_and_bad_ones_name_the_field() {
        let b = block_devices(
            Family::Al2023,
            &spec("blockDeviceMappings: [{deviceName: /dev/xvda, ebs: {volumeSize: 100G, volumeType: gp3, iops: 4000}}]"),
        )
        .unwrap();
        // 100 G = 93.13 GiB.
        assert_eq!(b[0].ebs().unwrap().volume_size(), Some(94));
        assert_eq!(b[0].ebs().unwrap().iops(), Some(4000));
        let e = block_devices(
            Family::Al2023,
            &spec("blockDeviceMappings: [{deviceName: /dev/xvda, ebs: {volumeSize: lots}}]"),
        )
        .unwrap_err();
        assert!(e.contains("blockDeviceMappings[0].ebs.volumeSize"), "{e}");
    }

    #[test]
    fn metadata_options_default_to_imdsv2_with_one_hop_and_refuse_unknown_values() {
        let m = metadata_options(&spec("")).unwrap();
        assert_eq!(
            m.http_tokens(),
            Some(&LaunchTemplateHttpTokensState::Required)
        );
        assert_eq!(m.http_put_response_hop_limit(), Some(1));
        let m = metadata_options(&spec(
            "metadataOptions: {httpTokens: optional, httpPutResponseHopLimit: 2}",
        ))
        .unwrap();
        assert_eq!(
            m.http_tokens(),
            Some(&LaunchTemplateHttpTokensState::Optional)
        );
        assert_eq!(m.http_put_response_hop_limit(), Some(2));
        assert!(metadata_options(&spec("metadataOptions: {httpTokens: maybe}")).is_err());
    }
}
