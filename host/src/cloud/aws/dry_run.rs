//! The launch calls, dry-run (`DryRun=true`) as the controller makes them, so `dovetail doctor`
//! finds a policy that would refuse the first launch before it happens (Karpenter validates its
//! node classes the same way). EC2 answers `DryRunOperation` when the caller may make the call
//! and `UnauthorizedOperation` when not; nothing is created either way.

use aws_sdk_ec2::types::{
    FleetLaunchTemplateConfigRequest, FleetLaunchTemplateOverridesRequest,
    FleetLaunchTemplateSpecificationRequest, FleetType, IamInstanceProfileSpecification,
    InstanceNetworkInterfaceSpecification, InstanceType, ResourceType, Tag, TagSpecification,
    TargetCapacitySpecificationRequest,
};

use aws_sdk_ec2::error::ProvideErrorMetadata as _;

use super::launch_template::{template_data, template_name};
use super::node_class::ResolvedClass;
use super::{AwsCloud, tags};
use crate::capacity::CapacityType;

/// One dry-run call and what EC2 said.
#[derive(Debug, Clone, PartialEq)]
pub struct DryRun {
    /// `CreateLaunchTemplate`, `RunInstances`, `CreateFleet`.
    pub call: &'static str,
    /// `Ok(())`: EC2 would have made it. `Err`: what refused it.
    pub outcome: Result<(), String>,
}

/// The instance type a dry run asks for, per architecture (any type the account offers does:
/// authorization does not depend on it).
fn probe_type(arch: &str) -> &'static str {
    if arch == "arm64" {
        "m6g.large"
    } else {
        "m5.large"
    }
}

/// EC2's answer to a dry run as an outcome: its error code and message, not the SDK's dump.
fn outcome<E, R>(r: Result<R, aws_sdk_ec2::error::SdkError<E>>) -> Result<(), String>
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    let e = match r {
        // A dry run that succeeded without saying so is not one.
        Ok(_) => return Err("EC2 accepted a request marked DryRun".into()),
        Err(e) => e,
    };
    match (e.code(), e.message()) {
        (Some("DryRunOperation"), _) => Ok(()),
        (Some(code), message) => Err(crate::bounded::bounded(
            &format!("{code}: {}", message.unwrap_or_default()),
            400,
        )),
        (None, _) => Err(crate::bounded::bounded(
            &aws_sdk_ec2::error::DisplayErrorContext(&e).to_string(),
            400,
        )),
    }
}

impl AwsCloud {
    /// Dry-runs what the first on-demand launch of a resolved class calls: its launch template,
    /// then the launch itself — CreateFleet with the class's existing template when there is one,
    /// else RunInstances with the same image, subnet, security groups, instance profile and tags.
    pub fn dry_run_launch(&mut self, class: &ResolvedClass) -> Vec<DryRun> {
        let mut out = Vec::new();
        let Some((arch, ami)) = class
            .amis
            .get_key_value("x86_64")
            .or_else(|| class.amis.iter().next())
            .map(|(a, i)| (a.clone(), i.clone()))
        else {
            return out;
        };
        let Some(subnet) = class.subnets.first() else {
            return out;
        };
        let capacity = CapacityType::OnDemand;
        let name = template_name(&self.settings.cluster_name, class, &ami, capacity);
        let tag_spec = |t: ResourceType, extra: &[(&str, &str)]| {
            let mut s = TagSpecification::builder().resource_type(t);
            for (k, v) in &class.tags {
                s = s.tags(Tag::builder().key(k).value(v).build());
            }
            for (k, v) in extra {
                s = s.tags(Tag::builder().key(*k).value(*v).build());
            }
            s.build()
        };
        // What a launch tags its fleet, instance and volumes with beyond the class's tags.
        let claim = [
            (tags::NODEPOOL, "doctor"),
            (tags::NODECLAIM, "doctor-dry-run"),
            ("Name", "doctor/doctor-dry-run"),
        ];

        match template_data(class, &ami, capacity) {
            Ok(data) => {
                let r = self.bridge.wait(
                    self.ec2
                        .create_launch_template()
                        .dry_run(true)
                        .launch_template_name(&name)
                        .launch_template_data(data)
                        .tag_specifications(tag_spec(ResourceType::LaunchTemplate, &[]))
                        .send(),
                );
                out.push(DryRun {
                    call: "CreateLaunchTemplate",
                    outcome: outcome(r),
                });
            }
            Err(why) => out.push(DryRun {
                call: "CreateLaunchTemplate",
                outcome: Err(why),
            }),
        }

        let exists = self
            .bridge
            .wait(
                self.ec2
                    .describe_launch_templates()
                    .launch_template_names(&name)
                    .send(),
            )
            .is_ok_and(|o| !o.launch_templates().is_empty());
        if exists {
            let config = FleetLaunchTemplateConfigRequest::builder()
                .launch_template_specification(
                    FleetLaunchTemplateSpecificationRequest::builder()
                        .launch_template_name(&name)
                        .version("$Latest")
                        .build(),
                )
                .overrides(
                    FleetLaunchTemplateOverridesRequest::builder()
                        .instance_type(InstanceType::from(probe_type(&arch)))
                        .subnet_id(&subnet.id)
                        .availability_zone(&subnet.zone)
                        .build(),
                )
                .build();
            let r = self.bridge.wait(
                self.ec2
                    .create_fleet()
                    .dry_run(true)
                    .r#type(FleetType::Instant)
                    .launch_template_configs(config)
                    .target_capacity_specification(
                        TargetCapacitySpecificationRequest::builder()
                            .total_target_capacity(1)
                            .default_target_capacity_type(
                                aws_sdk_ec2::types::DefaultTargetCapacityType::OnDemand,
                            )
                            .build(),
                    )
                    .tag_specifications(tag_spec(ResourceType::Fleet, &claim))
                    .tag_specifications(tag_spec(ResourceType::Instance, &claim))
                    .tag_specifications(tag_spec(ResourceType::Volume, &claim))
                    .send(),
            );
            out.push(DryRun {
                call: "CreateFleet",
                outcome: outcome(r),
            });
        } else {
            let mut req = self
                .ec2
                .run_instances()
                .dry_run(true)
                .image_id(&ami)
                .instance_type(InstanceType::from(probe_type(&arch)))
                .min_count(1)
                .max_count(1)
                .tag_specifications(tag_spec(ResourceType::Instance, &claim))
                .tag_specifications(tag_spec(ResourceType::Volume, &claim))
                .tag_specifications(tag_spec(ResourceType::NetworkInterface, &[]));
            match class.spec.associate_public_ip_address {
                Some(public) => {
                    let mut eni = InstanceNetworkInterfaceSpecification::builder()
                        .device_index(0)
                        .subnet_id(&subnet.id)
                        .associate_public_ip_address(public);
                    for g in &class.security_groups {
                        eni = eni.groups(&g.id);
                    }
                    req = req.network_interfaces(eni.build());
                }
                None => {
                    req = req.subnet_id(&subnet.id);
                    for g in &class.security_groups {
                        req = req.security_group_ids(&g.id);
                    }
                }
            }
            if let Some(p) = &class.instance_profile {
                req = req.iam_instance_profile(
                    IamInstanceProfileSpecification::builder().name(p).build(),
                );
            }
            let r = self.bridge.wait(req.send());
            out.push(DryRun {
                call: "RunInstances",
                outcome: outcome(r),
            });
        }
        out
    }
}
