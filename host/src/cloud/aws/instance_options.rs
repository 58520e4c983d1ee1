//! What an EC2NodeClass sets on its instances beyond the image and the network: its disks
//! (block device mappings) and the instance metadata service's options, as EC2 takes them. Read
//! when a class is resolved (what cannot launch is refused there) and when its launch template
//! is written.

use aws_sdk_ec2::types::{
    LaunchTemplateBlockDeviceMappingRequest, LaunchTemplateEbsBlockDeviceRequest,
    LaunchTemplateHttpTokensState, LaunchTemplateInstanceMetadataEndpointState,
    LaunchTemplateInstanceMetadataOptionsRequest, LaunchTemplateInstanceMetadataProtocolIpv6,
    VolumeType,
};

use super::user_data::Family;
use crate::api::ec2nodeclass::{BlockDeviceMapping, EC2NodeClassSpec, Ebs};

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
