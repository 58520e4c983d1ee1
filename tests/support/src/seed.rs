//! An AWS account to launch into, in moto: a VPC with subnets and security groups tagged for
//! discovery, and a tagged image.

use aws_sdk_ec2::types::Tag;

use crate::moto::Moto;

pub const DISCOVERY: &str = "dovetail.sh/discovery";

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub struct Seed {
    /// Tagged subnets by zone.
    pub subnets: Vec<(String, String)>,
    pub untagged_subnet: String,
    pub group: String,
    pub untagged_group: String,
}

/// A VPC with subnets in three zones (tagged for discovery when `tag_subnets`) plus one
/// untagged, a tagged and an untagged security group, and a tagged image.
pub fn seed(moto: &Moto, tag_subnets: bool) -> Seed {
    let rt = runtime();
    rt.block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&moto.config().await);
        let tag = Tag::builder().key(DISCOVERY).value("my-cluster").build();
        let vpc = ec2
            .create_vpc()
            .cidr_block("10.0.0.0/16")
            .send()
            .await
            .unwrap()
            .vpc()
            .unwrap()
            .vpc_id()
            .unwrap()
            .to_string();
        let mut subnets = Vec::new();
        for (i, zone) in ["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1a"]
            .iter()
            .enumerate()
        {
            let id = ec2
                .create_subnet()
                .vpc_id(&vpc)
                .cidr_block(format!("10.0.{i}.0/24"))
                .availability_zone(*zone)
                .send()
                .await
                .unwrap()
                .subnet()
                .unwrap()
                .subnet_id()
                .unwrap()
                .to_string();
            subnets.push((id, zone.to_string()));
        }
        let untagged_subnet = subnets.pop().unwrap().0;
        if tag_subnets {
            for (id, _) in &subnets {
                ec2.create_tags()
                    .resources(id)
                    .tags(tag.clone())
                    .send()
                    .await
                    .unwrap();
            }
        }
        let mut groups = Vec::new();
        for name in ["nodes", "other"] {
            groups.push(
                ec2.create_security_group()
                    .group_name(name)
                    .description(name)
                    .vpc_id(&vpc)
                    .send()
                    .await
                    .unwrap()
                    .group_id()
                    .unwrap()
                    .to_string(),
            );
        }
        ec2.create_tags()
            .resources(&groups[0])
            .tags(tag.clone())
            .send()
            .await
            .unwrap();
        let images = ec2.describe_images().owners("amazon").send().await.unwrap();
        let image = images
            .images()
            .iter()
            .find(|i| i.architecture().is_some_and(|a| a.as_str() == "x86_64"))
            .expect("moto ships x86_64 images")
            .image_id()
            .unwrap()
            .to_string();
        ec2.create_tags()
            .resources(&image)
            .tags(tag)
            .send()
            .await
            .unwrap();
        Seed {
            subnets,
            untagged_subnet,
            group: groups[0].clone(),
            untagged_group: groups[1].clone(),
        }
    })
}

/// The EKS cluster `my-cluster` (Kubernetes 1.33, services in 172.31.0.0/16) that a controller
/// without `--cluster-endpoint` learns about; returns its endpoint and CA bundle.
pub fn eks_cluster(moto: &Moto) -> (String, String) {
    runtime().block_on(async {
        let eks = aws_sdk_eks::Client::new(&moto.config().await);
        let out = eks
            .create_cluster()
            .name("my-cluster")
            .version("1.33")
            .role_arn("arn:aws:iam::123456789012:role/eks")
            .resources_vpc_config(aws_sdk_eks::types::VpcConfigRequest::builder().build())
            .kubernetes_network_config(
                aws_sdk_eks::types::KubernetesNetworkConfigRequest::builder()
                    .service_ipv4_cidr("172.31.0.0/16")
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let c = out.cluster().unwrap();
        (
            c.endpoint().unwrap().to_string(),
            c.certificate_authority()
                .and_then(|a| a.data())
                .unwrap_or_default()
                .to_string(),
        )
    })
}
