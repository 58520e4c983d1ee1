//! A node's user data: the bootstrap configuration the controller writes for the AMI family,
//! merged with the EC2NodeClass's own `userData`, the way Karpenter merges them.
//!
//! - **AL2023** boots with nodeadm, which reads a MIME multipart document of `NodeConfig` parts
//!   (`application/node.eks.aws`) and scripts. The class's user data — a multipart document (all
//!   its parts kept), a bare `NodeConfig`, or a script — comes first; the controller's
//!   `NodeConfig` (cluster, kubelet settings, instance-store RAID0) comes last, so its values win
//!   (nodeadm merges NodeConfigs in order; <https://awslabs.github.io/amazon-eks-ami/nodeadm/>).
//! - **Bottlerocket** reads one TOML document of settings. The class's TOML is kept; the
//!   controller sets `settings.kubernetes` (cluster name, API server, CA, kubelet settings) over it
//!   (<https://bottlerocket.dev/en/os/latest/api/settings/kubernetes/>).
//!
//! Pure: the inputs are the class and the cluster; no I/O.

use std::collections::BTreeMap;

use crate::api::ec2nodeclass::EC2NodeClassSpec;

/// The MIME boundary of AL2023 user data.
const BOUNDARY: &str = "//";

/// Which bootstrap an AMI family uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Al2023,
    Bottlerocket,
}

impl Family {
    /// The family of a class: its alias (`al2023@…`, `bottlerocket@…`), else `amiFamily`, else
    /// AL2023 (what Karpenter assumes for selector terms without an alias).
    pub fn of(spec: &EC2NodeClassSpec) -> Result<Family, String> {
        let named = spec
            .ami_selector_terms
            .iter()
            .find_map(|t| t.alias.as_deref().map(|a| a.split('@').next().unwrap_or(a)))
            .or(spec.ami_family.as_deref());
        match named.map(str::to_ascii_lowercase).as_deref() {
            None | Some("al2023") => Ok(Family::Al2023),
            Some("bottlerocket") => Ok(Family::Bottlerocket),
            Some(other) => Err(format!(
                "AMI family {other:?} is not supported (al2023, bottlerocket)"
            )),
        }
    }
}

/// What the nodes must know of their cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterInfo {
    pub name: String,
    /// The API server's URL.
    pub endpoint: String,
    /// The CA bundle, base64 (as EKS and a kubeconfig carry it).
    pub ca_bundle: String,
    /// The service CIDR (nodeadm requires it: it derives the cluster DNS address from it).
    pub service_cidr: String,
}

/// The user data of a class's nodes; an error when the class's own user data cannot be merged.
pub fn render(
    family: Family,
    cluster: &ClusterInfo,
    spec: &EC2NodeClassSpec,
) -> Result<String, String> {
    match family {
        Family::Al2023 => al2023(cluster, spec),
        Family::Bottlerocket => bottlerocket(cluster, spec),
    }
}

fn al2023(cluster: &ClusterInfo, spec: &EC2NodeClassSpec) -> Result<String, String> {
    let mut parts = match spec.user_data.as_deref().map(str::trim_start) {
        None | Some("") => Vec::new(),
        Some(own) => own_parts(own)?,
    };
    parts.push((
        "application/node.eks.aws".to_string(),
        node_config(cluster, spec),
    ));
    let mut out =
        format!("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"{BOUNDARY}\"\n\n");
    for (content_type, body) in parts {
        out.push_str(&format!(
            "--{BOUNDARY}\nContent-Type: {content_type}\n\n{}\n\n",
            body.trim_end()
        ));
    }
    out.push_str(&format!("--{BOUNDARY}--\n"));
    Ok(out)
}

/// The class's user data as (content type, body) parts.
fn own_parts(own: &str) -> Result<Vec<(String, String)>, String> {
    let head = own.lines().next().unwrap_or_default();
    if head.starts_with("MIME-Version:") || head.starts_with("Content-Type:") {
        return mime_parts(own);
    }
    let is_node_config = serde_norway::from_str::<serde_norway::Value>(own)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_string))
        .is_some_and(|k| k == "NodeConfig");
    Ok(vec![(
        if is_node_config {
            "application/node.eks.aws"
        } else {
            "text/x-shellscript; charset=\"us-ascii\""
        }
        .to_string(),
        own.to_string(),
    )])
}

/// The parts of a MIME multipart document (headers of each part: its Content-Type).
fn mime_parts(doc: &str) -> Result<Vec<(String, String)>, String> {
    let (headers, body) = doc
        .replace("\r\n", "\n")
        .split_once("\n\n")
        .map(|(h, b)| (h.to_string(), b.to_string()))
        .ok_or("userData: a MIME document needs a blank line after its headers")?;
    let boundary = headers
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| {
            b.lines()
                .next()
                .unwrap_or(b)
                .trim()
                .trim_matches('"')
                .to_string()
        })
        .ok_or("userData: a multipart MIME document needs a boundary in its Content-Type")?;
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut closed = false;
    for chunk in body.split(&delimiter).skip(1) {
        if chunk.starts_with("--") {
            closed = true;
            break;
        }
        let chunk = chunk.trim_start_matches('\n');
        let (part_headers, part_body) = chunk.split_once("\n\n").unwrap_or((chunk, ""));
        let content_type = part_headers
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-type")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| "text/plain".into());
        parts.push((content_type, part_body.trim_end().to_string()));
    }
    if !closed {
        return Err(format!(
            "userData: the MIME document does not end with its closing boundary {delimiter}--"
        ));
    }
    Ok(parts)
}

/// The controller's NodeConfig: the cluster, kubelet's settings, local storage.
fn node_config(cluster: &ClusterInfo, spec: &EC2NodeClassSpec) -> String {
    let mut cfg = serde_json::json!({
        "apiVersion": "node.eks.aws/v1alpha1",
        "kind": "NodeConfig",
        "spec": {
            "cluster": {
                "name": cluster.name,
                "apiServerEndpoint": cluster.endpoint,
                "certificateAuthority": cluster.ca_bundle,
                "cidr": cluster.service_cidr,
            }
        }
    });
    let kubelet = kubelet_config(spec);
    if !kubelet.is_empty() {
        cfg["spec"]["kubelet"] = serde_json::json!({ "config": kubelet });
    }
    if spec.instance_store_policy.as_deref() == Some("RAID0") {
        cfg["spec"]["instance"] = serde_json::json!({"localStorage": {"strategy": "RAID0"}});
    }
    serde_norway::to_string(&cfg).expect("a NodeConfig serializes")
}

/// kubelet's configuration fields (KubeletConfiguration, kubelet.config.k8s.io/v1beta1) the
/// class sets.
fn kubelet_config(spec: &EC2NodeClassSpec) -> BTreeMap<&'static str, serde_json::Value> {
    let mut out = BTreeMap::new();
    let Some(k) = &spec.kubelet else {
        return out;
    };
    if let Some(n) = k.max_pods {
        out.insert("maxPods", n.into());
    }
    if let Some(n) = k.pods_per_core {
        out.insert("podsPerCore", n.into());
    }
    for (key, map) in [
        ("systemReserved", &k.system_reserved),
        ("kubeReserved", &k.kube_reserved),
        ("evictionHard", &k.eviction_hard),
        ("evictionSoft", &k.eviction_soft),
    ] {
        if !map.is_empty() {
            out.insert(key, serde_json::to_value(map).expect("a map serializes"));
        }
    }
    if !k.cluster_dns.is_empty() {
        out.insert("clusterDNS", k.cluster_dns.clone().into());
    }
    out
}

fn bottlerocket(cluster: &ClusterInfo, spec: &EC2NodeClassSpec) -> Result<String, String> {
    use toml_edit::{Array, DocumentMut, InlineTable, Item, Table, value};
    let mut doc: DocumentMut = spec
        .user_data
        .as_deref()
        .unwrap_or_default()
        .parse()
        .map_err(|e| format!("userData: not a Bottlerocket TOML document: {e}"))?;
    let settings = doc
        .entry("settings")
        .or_insert(Item::Table(Table::new()))
        .as_table_mut()
        .ok_or("userData: `settings` must be a table")?;
    settings.set_implicit(true);
    let kubernetes = settings
        .entry("kubernetes")
        .or_insert(Item::Table(Table::new()))
        .as_table_mut()
        .ok_or("userData: `settings.kubernetes` must be a table")?;
    kubernetes.insert("cluster-name", value(&cluster.name));
    kubernetes.insert("api-server", value(&cluster.endpoint));
    kubernetes.insert("cluster-certificate", value(&cluster.ca_bundle));
    if let Some(k) = &spec.kubelet {
        if let Some(n) = k.max_pods {
            kubernetes.insert("max-pods", value(i64::from(n)));
        }
        if let Some(dns) = k.cluster_dns.first() {
            kubernetes.insert("cluster-dns-ip", value(dns));
        }
        for (key, map) in [
            ("system-reserved", &k.system_reserved),
            ("kube-reserved", &k.kube_reserved),
            ("eviction-hard", &k.eviction_hard),
        ] {
            if !map.is_empty() {
                let mut t = InlineTable::new();
                for (k, v) in map {
                    t.insert(k, v.as_str().into());
                }
                kubernetes.insert(key, value(t));
            }
        }
    }
    if spec.instance_store_policy.as_deref() == Some("RAID0") {
        let commands = settings
            .entry("bootstrap-commands")
            .or_insert(Item::Table(Table::new()))
            .as_table_mut()
            .ok_or("userData: `settings.bootstrap-commands` must be a table")?;
        let mut command = Table::new();
        let mut init = Array::new();
        init.extend(["apiclient", "ephemeral-storage", "init"]);
        let mut bind = Array::new();
        bind.extend(["apiclient", "ephemeral-storage", "bind"]);
        let mut all = Array::new();
        all.push(init);
        all.push(bind);
        command.insert("commands", value(all));
        command.insert("mode", value("always"));
        command.insert("essential", value(true));
        commands.insert("000-mount-instance-storage", Item::Table(command));
    }
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> ClusterInfo {
        ClusterInfo {
            name: "prod".into(),
            endpoint: "https://ABC.gr7.us-east-1.eks.amazonaws.com".into(),
            ca_bundle: "Q0E=".into(),
            service_cidr: "10.100.0.0/16".into(),
        }
    }

    fn spec(yaml: &str) -> EC2NodeClassSpec {
        serde_norway::from_str(&format!(
            "amiSelectorTerms: [{{alias: al2023@latest}}]\nsubnetSelectorTerms: [{{id: s}}]\nsecurityGroupSelectorTerms: [{{id: g}}]\n{yaml}"
        ))
        .unwrap()
    }

    /// (content type, body) of each part of a rendered document.
    fn parts(doc: &str) -> Vec<(String, String)> {
        mime_parts(doc).unwrap()
    }

    #[test]
    fn al2023_writes_the_cluster_and_kubelet_into_the_last_node_config() {
        let s = spec(
            "kubelet: {maxPods: 20, systemReserved: {cpu: 100m}, evictionHard: {memory.available: 5%}}\ninstanceStorePolicy: RAID0",
        );
        let doc = render(Family::Al2023, &cluster(), &s).unwrap();
        let p = parts(&doc);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0, "application/node.eks.aws");
        let cfg: serde_json::Value = serde_norway::from_str(&p[0].1).unwrap();
        let c = &cfg["spec"]["cluster"];
        assert_eq!(
            c["apiServerEndpoint"],
            "https://ABC.gr7.us-east-1.eks.amazonaws.com"
        );
        assert_eq!(c["certificateAuthority"], "Q0E=");
        assert_eq!(c["cidr"], "10.100.0.0/16");
        assert_eq!(c["name"], "prod");
        let k = &cfg["spec"]["kubelet"]["config"];
        assert_eq!(k["maxPods"], 20);
        assert_eq!(k["systemReserved"]["cpu"], "100m");
        assert_eq!(k["evictionHard"]["memory.available"], "5%");
        assert_eq!(cfg["spec"]["instance"]["localStorage"]["strategy"], "RAID0");
    }

    #[test]
    fn al2023_keeps_a_script_and_a_node_config_of_the_class_before_its_own() {
        let script = spec("userData: |\n  #!/bin/bash\n  echo hello\n");
        let p = parts(&render(Family::Al2023, &cluster(), &script).unwrap());
        assert_eq!(p.len(), 2);
        assert!(p[0].0.starts_with("text/x-shellscript"));
        assert!(p[0].1.contains("echo hello"));
        assert_eq!(p[1].0, "application/node.eks.aws");

        let own = spec(
            "userData: |\n  apiVersion: node.eks.aws/v1alpha1\n  kind: NodeConfig\n  spec:\n    kubelet:\n      config:\n        shutdownGracePeriod: 30s\n",
        );
        let p = parts(&render(Family::Al2023, &cluster(), &own).unwrap());
        assert_eq!(p[0].0, "application/node.eks.aws");
        assert!(p[0].1.contains("shutdownGracePeriod"));
        assert!(p[1].1.contains("apiServerEndpoint"));
    }

    #[test]
    fn al2023_keeps_every_part_of_a_multipart_document() {
        let s = spec(
            "userData: |\n  MIME-Version: 1.0\n  Content-Type: multipart/mixed; boundary=\"BOUNDARY\"\n\n  --BOUNDARY\n  Content-Type: text/x-shellscript\n\n  echo one\n  --BOUNDARY\n  Content-Type: application/node.eks.aws\n\n  kind: NodeConfig\n  --BOUNDARY--\n",
        );
        let p = parts(&render(Family::Al2023, &cluster(), &s).unwrap());
        assert_eq!(p.len(), 3);
        assert_eq!(p[0], ("text/x-shellscript".into(), "echo one".into()));
        assert_eq!(p[1].0, "application/node.eks.aws");
        assert!(p[2].1.contains("cidr: 10.100.0.0/16"));
    }

    #[test]
    fn a_multipart_document_without_its_closing_boundary_is_refused() {
        let s = spec(
            "userData: |\n  MIME-Version: 1.0\n  Content-Type: multipart/mixed; boundary=\"B\"\n\n  --B\n  Content-Type: text/x-shellscript\n\n  echo one\n",
        );
        let e = render(Family::Al2023, &cluster(), &s).unwrap_err();
        assert!(e.contains("closing boundary"), "{e}");
    }

    #[test]
    fn bottlerocket_sets_the_cluster_over_the_classs_own_settings() {
        let s = spec(
            "userData: |\n  [settings.kubernetes]\n  api-server = \"https://wrong\"\n  [settings.host-containers.admin]\n  enabled = true\nkubelet: {maxPods: 20, kubeReserved: {memory: 1Gi}}\ninstanceStorePolicy: RAID0",
        );
        let doc = render(Family::Bottlerocket, &cluster(), &s).unwrap();
        let t: toml_edit::DocumentMut = doc.parse().unwrap();
        let k = &t["settings"]["kubernetes"];
        assert_eq!(
            k["api-server"].as_str(),
            Some("https://ABC.gr7.us-east-1.eks.amazonaws.com")
        );
        assert_eq!(k["cluster-name"].as_str(), Some("prod"));
        assert_eq!(k["cluster-certificate"].as_str(), Some("Q0E="));
        assert_eq!(k["max-pods"].as_integer(), Some(20));
        assert_eq!(k["kube-reserved"]["memory"].as_str(), Some("1Gi"));
        assert_eq!(
            t["settings"]["host-containers"]["admin"]["enabled"].as_bool(),
            Some(true)
        );
        assert!(doc.contains("ephemeral-storage"));
    }

    #[test]
    fn the_family_comes_from_the_alias() {
        let mut s = spec("");
        assert_eq!(Family::of(&s), Ok(Family::Al2023));
        s.ami_selector_terms[0].alias = Some("bottlerocket@latest".into());
        assert_eq!(Family::of(&s), Ok(Family::Bottlerocket));
        s.ami_selector_terms[0].alias = Some("windows2022@latest".into());
        assert!(Family::of(&s).is_err());
    }
}
