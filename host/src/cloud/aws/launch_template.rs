//! Launch templates: what a class's nodes boot with (AMI, user data, disks, instance metadata
//! options, network interface, monitoring, instance profile, security groups, and the tags of
//! the network interfaces and spot requests a launch makes), one template per distinct
//! configuration, named by a stable digest of it, created once and reused; templates no class
//! uses any more are deleted.

use aws_sdk_ec2::types::{
    LaunchTemplateBlockDeviceMappingRequest, LaunchTemplateEbsBlockDeviceRequest,
    LaunchTemplateHttpTokensState, LaunchTemplateIamInstanceProfileSpecificationRequest,
    LaunchTemplateInstanceMetadataEndpointState, LaunchTemplateInstanceMetadataOptionsRequest,
    LaunchTemplateInstanceMetadataProtocolIpv6,
    LaunchTemplateInstanceNetworkInterfaceSpecificationRequest,
    LaunchTemplateTagSpecificationRequest, LaunchTemplatesMonitoringRequest,
    RequestLaunchTemplateData, ResourceType, Tag, TagSpecification, VolumeType,
};
use base64::Engine as _;
use sha2::Digest as _;

use super::node_class::ResolvedClass;
use super::user_data::Family;
use super::{AwsCloud, api_error, sdk_message, tag_filter, tags};
use crate::api::ec2nodeclass::{BlockDeviceMapping, EC2NodeClassSpec, Ebs};
use crate::cloud::CloudError;
use crate::policy::types::CapacityType;

/// The disks of a class's nodes: its `blockDeviceMappings`, or the AMI family's default —
/// AL2023 a 20 GiB encrypted gp3 root volume, Bottlerocket a 4 GiB OS volume and a 20 GiB data
/// volume (as Karpenter launches them). A size EC2 cannot take is an error naming the field.
pub fn block_devices(
    family: Family,
    spec: &EC2NodeClassSpec,
) -> Result<Vec<LaunchTemplateBlockDeviceMappingRequest>, String> {
    let default = |device: &str, gib: &str| BlockDeviceMapping {
        device_name: device.into(),
        ebs: Some(Ebs {
            volume_size: Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                gib.into(),
            )),
            volume_type: Some("gp3".into()),
            encrypted: Some(true),
            delete_on_termination: Some(true),
            ..Default::default()
        }),
        root_volume: None,
    };
    let mappings = if spec.block_device_mappings.is_empty() {
        match family {
            Family::Al2023 => vec![default("/dev/xvda", "20Gi")],
            Family::Bottlerocket => vec![default("/dev/xvda", "4Gi"), default("/dev/xvdb", "20Gi")],
        }
    } else {
        spec.block_device_mappings.clone()
    };
    mappings
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut b =
                LaunchTemplateBlockDeviceMappingRequest::builder().device_name(&m.device_name);
            if let Some(e) = &m.ebs {
                let mut ebs = LaunchTemplateEbsBlockDeviceRequest::builder()
                    .set_encrypted(e.encrypted)
                    .set_delete_on_termination(e.delete_on_termination)
                    .set_kms_key_id(e.kms_key_id.clone())
                    .set_snapshot_id(e.snapshot_id.clone());
                if let Some(size) = &e.volume_size {
                    let bytes = crate::quantity::bytes(&size.0).map_err(|err| {
                        format!("spec.blockDeviceMappings[{i}].ebs.volumeSize: {err}")
                    })?;
                    // EC2 takes whole GiB: round up, as Karpenter does.
                    let gib = bytes.div_ceil(1 << 30);
                    let gib = i32::try_from(gib).map_err(|_| {
                        format!(
                            "spec.blockDeviceMappings[{i}].ebs.volumeSize: {} is too large",
                            size.0
                        )
                    })?;
                    ebs = ebs.volume_size(gib);
                }
                if let Some(t) = &e.volume_type {
                    ebs = ebs.volume_type(VolumeType::from(t.as_str()));
                }
                let as_i32 = |field: &str, v: Option<i64>| -> Result<Option<i32>, String> {
                    v.map(|n| {
                        i32::try_from(n).map_err(|_| {
                            format!(
                                "spec.blockDeviceMappings[{i}].ebs.{field}: {n} is out of range"
                            )
                        })
                    })
                    .transpose()
                };
                ebs = ebs
                    .set_iops(as_i32("iops", e.iops)?)
                    .set_throughput(as_i32("throughput", e.throughput)?);
                b = b.ebs(ebs.build());
            }
            Ok(b.build())
        })
        .collect()
}

/// Instance metadata options: the class's, over IMDSv2 required, endpoint enabled, IPv6
/// disabled and a hop limit of 1 (Karpenter's defaults; a pod cannot reach the node's role).
pub fn metadata_options(
    spec: &EC2NodeClassSpec,
) -> Result<LaunchTemplateInstanceMetadataOptionsRequest, String> {
    let m = spec.metadata_options.clone().unwrap_or_default();
    let choice = |field: &str, v: Option<&str>, default: &str, allowed: [&str; 2]| {
        let v = v.unwrap_or(default);
        if allowed.contains(&v) {
            Ok(v.to_string())
        } else {
            Err(format!(
                "spec.metadataOptions.{field}: {v:?} is not one of {allowed:?}"
            ))
        }
    };
    let tokens = choice(
        "httpTokens",
        m.http_tokens.as_deref(),
        "required",
        ["required", "optional"],
    )?;
    let endpoint = choice(
        "httpEndpoint",
        m.http_endpoint.as_deref(),
        "enabled",
        ["enabled", "disabled"],
    )?;
    let ipv6 = choice(
        "httpProtocolIPv6",
        m.http_protocol_ipv6.as_deref(),
        "disabled",
        ["enabled", "disabled"],
    )?;
    let hops = m.http_put_response_hop_limit.unwrap_or(1);
    if !(1..=64).contains(&hops) {
        return Err(format!(
            "spec.metadataOptions.httpPutResponseHopLimit: {hops} is not within 1..64"
        ));
    }
    Ok(LaunchTemplateInstanceMetadataOptionsRequest::builder()
        .http_tokens(LaunchTemplateHttpTokensState::from(tokens.as_str()))
        .http_endpoint(LaunchTemplateInstanceMetadataEndpointState::from(
            endpoint.as_str(),
        ))
        .http_protocol_ipv6(LaunchTemplateInstanceMetadataProtocolIpv6::from(
            ipv6.as_str(),
        ))
        .http_put_response_hop_limit(hops as i32)
        .build())
}

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
        let found = self.rt.block_on(
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
            self.rt
                .block_on(
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
            .rt
            .block_on(
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
            self.rt
                .block_on(
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
