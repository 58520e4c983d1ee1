//! What the nodes must know of their cluster — API endpoint, CA bundle, service CIDR — and the
//! Kubernetes version AMI aliases resolve for: taken from the settings, else learnt from
//! `eks:DescribeCluster`, as Karpenter does. A controller that can learn neither refuses to start
//! with one line naming what to set; an empty value never reaches a node's bootstrap.

use super::AwsSettings;
use super::user_data::ClusterInfo;

/// The settings and environment variables that provide each value by hand.
const SET: [(&str, &str); 4] = [
    ("endpoint", "--cluster-endpoint (CLUSTER_ENDPOINT)"),
    ("CA bundle", "--cluster-ca-bundle (CLUSTER_CA_BUNDLE)"),
    ("service CIDR", "--cluster-cidr (CLUSTER_CIDR)"),
    (
        "Kubernetes version",
        "--kubernetes-version (KUBERNETES_VERSION)",
    ),
];

impl AwsSettings {
    /// What a node's bootstrap says of the cluster.
    pub fn cluster_info(&self) -> ClusterInfo {
        ClusterInfo {
            name: self.cluster_name.clone(),
            endpoint: self.cluster_endpoint.clone(),
            ca_bundle: self.cluster_ca.clone(),
            service_cidr: self.service_cidr.clone(),
        }
    }

    /// The values not set, by name.
    fn missing(&self) -> Vec<usize> {
        [
            &self.cluster_endpoint,
            &self.cluster_ca,
            &self.service_cidr,
            &self.kubernetes_version,
        ]
        .iter()
        .enumerate()
        .filter(|(_, v)| v.trim().is_empty())
        .map(|(i, _)| i)
        .collect()
    }

    /// Fills what is not set from `eks:DescribeCluster`; makes no call when all is set.
    pub async fn discover(&mut self, config: &aws_config::SdkConfig) -> Result<(), String> {
        let missing = self.missing();
        if missing.is_empty() {
            return Ok(());
        }
        let eks = aws_sdk_eks::Client::new(config);
        let found = eks.describe_cluster().name(&self.cluster_name).send().await;
        let why = match found {
            Ok(out) => {
                if let Some(c) = out.cluster() {
                    let fill = |v: &mut String, found: Option<&str>| {
                        if v.trim().is_empty() {
                            *v = found.unwrap_or_default().to_string();
                        }
                    };
                    fill(&mut self.cluster_endpoint, c.endpoint());
                    fill(
                        &mut self.cluster_ca,
                        c.certificate_authority().and_then(|a| a.data()),
                    );
                    fill(
                        &mut self.service_cidr,
                        c.kubernetes_network_config()
                            .and_then(|n| n.service_ipv4_cidr().or(n.service_ipv6_cidr())),
                    );
                    fill(&mut self.kubernetes_version, c.version());
                }
                "eks:DescribeCluster does not say".to_string()
            }
            Err(e) => format!(
                "eks:DescribeCluster {}: {}",
                self.cluster_name,
                crate::bounded::bounded(&super::sdk_message(&e), 160)
            ),
        };
        let still = self.missing();
        if still.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = still.iter().map(|&i| SET[i].0).collect();
        let flags: Vec<&str> = still.iter().map(|&i| SET[i].1).collect();
        Err(format!(
            "cannot learn the cluster's {} ({why}): set {}",
            names.join(", "),
            flags.join(", ")
        ))
    }
}
