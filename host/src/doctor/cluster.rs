//! The cluster side of an installation: is the cluster EKS describes the one KUBECONFIG reaches,
//! may the node role's instances join it, and is the controller running and quiet.

use base64::Engine as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;

use super::{Check, Verdict, check, forbidden, not_allowed};
use crate::cloud::aws::AwsSettings;

/// `scheme://host:port`, lower-cased, the default port made explicit: two spellings of one
/// endpoint compare equal.
fn endpoint(url: &str) -> String {
    let url = url.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url.as_str()));
    let host = rest.split('/').next().unwrap_or(rest);
    if host.contains(':') {
        format!("{scheme}://{host}")
    } else {
        let port = if scheme == "http" { 80 } else { 443 };
        format!("{scheme}://{host}:{port}")
    }
}

/// The certificates (DER) of a base64 PEM bundle, as EKS returns the cluster's CA.
fn pem_certs(b64: &str) -> Vec<Vec<u8>> {
    let Ok(pem) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
        return Vec::new();
    };
    let pem = String::from_utf8_lossy(&pem);
    let mut out = Vec::new();
    let mut body = None::<String>;
    for line in pem.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN CERTIFICATE") {
            body = Some(String::new());
        } else if line.starts_with("-----END CERTIFICATE") {
            if let Some(b) = body.take()
                && let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b)
            {
                out.push(der);
            }
        } else if let Some(b) = body.as_mut() {
            b.push_str(line);
        }
    }
    out
}

/// `1.33` from `/version`'s major and minor (EKS reports minors like `33+`).
fn minor_version(major: &str, minor: &str) -> String {
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
    format!("{}.{}", digits(major), digits(minor))
}

/// Whether `url` is the in-cluster address of the API server (its Service, as a pod reaches it:
/// `KUBERNETES_SERVICE_HOST` or `kubernetes.default.svc`), which is never the endpoint nodes use.
fn in_cluster(url: &str, service_host: Option<&str>) -> bool {
    let host = endpoint(url);
    let host = host
        .split_once("://")
        .map_or(host.as_str(), |(_, h)| h)
        .rsplit_once(':')
        .map_or("", |(h, _)| h)
        .trim_matches(['[', ']'])
        .to_string();
    host.starts_with("kubernetes.default.svc")
        || service_host.is_some_and(|s| s.trim_matches(['[', ']']).eq_ignore_ascii_case(&host))
}

/// The endpoint, Kubernetes version and CA that `eks:DescribeCluster` gives (what the nodes'
/// bootstrap will use), against the API server KUBECONFIG reaches.
pub async fn matches_kubeconfig(
    aws: &AwsSettings,
    kube: &kube::Config,
    client: &kube::Client,
) -> Vec<Check> {
    let mut out = Vec::new();
    let reached = kube.cluster_url.to_string();
    let service_host = std::env::var("KUBERNETES_SERVICE_HOST").ok();
    out.push(if in_cluster(&reached, service_host.as_deref()) {
        check(
            "cluster endpoint",
            Verdict::Skipped(format!(
                "in a pod the API server is reached through its Service ({reached}), not the endpoint nodes use; the version and CA are compared instead"
            )),
        )
    } else if endpoint(&reached) == endpoint(&aws.cluster_endpoint) {
        check(
            "cluster endpoint",
            Verdict::Ok(format!("KUBECONFIG reaches {reached}, as EKS gives it")),
        )
    } else {
        check(
            "cluster endpoint",
            Verdict::Problem(format!(
                "KUBECONFIG reaches {reached}, but EKS says {}'s API server is {}: nodes would join {} — switch KUBECONFIG's context or fix CLUSTER_NAME",
                aws.cluster_name, aws.cluster_endpoint, aws.cluster_name
            )),
        )
    });
    out.push(match client.apiserver_version().await {
        Ok(v) => {
            let found = minor_version(&v.major, &v.minor);
            if found == aws.kubernetes_version {
                check(
                    "cluster version",
                    Verdict::Ok(format!("Kubernetes {found}, as EKS gives it")),
                )
            } else {
                check(
                    "cluster version",
                    Verdict::Problem(format!(
                        "the API server is Kubernetes {found}, but EKS says {} is {}: AMI aliases would resolve for {}; is KUBECONFIG on another cluster?",
                        aws.cluster_name, aws.kubernetes_version, aws.kubernetes_version
                    )),
                )
            }
        }
        Err(e) => check(
            "cluster version",
            Verdict::Problem(format!("GET /version: {e}")),
        ),
    });
    let ca = pem_certs(&aws.cluster_ca);
    out.push(match (&kube.root_cert, ca.is_empty()) {
        (Some(trusted), false) => {
            if trusted.iter().any(|t| ca.contains(t)) {
                check(
                    "cluster CA",
                    Verdict::Ok("KUBECONFIG trusts the CA EKS gives".into()),
                )
            } else {
                check(
                    "cluster CA",
                    Verdict::Problem(format!(
                        "KUBECONFIG's certificate authority is not the one EKS gives for {}: nodes would trust another CA (set settings.clusterCABundle only to override it)",
                        aws.cluster_name
                    )),
                )
            }
        }
        (None, _) => check(
            "cluster CA",
            Verdict::Skipped("KUBECONFIG names no certificate authority to compare".into()),
        ),
        (_, true) => check(
            "cluster CA",
            Verdict::Skipped("the CA EKS gives is not a PEM bundle".into()),
        ),
    });
    out
}

/// The role's ARN (`iam:GetRole`, with the operator's credentials), or the verdict why not.
pub async fn role_arn(operator: &aws_config::SdkConfig, role: &str) -> Result<String, Verdict> {
    match aws_sdk_iam::Client::new(operator)
        .get_role()
        .role_name(role)
        .send()
        .await
    {
        Ok(o) => Ok(o.role().map(|r| r.arn().to_string()).unwrap_or_default()),
        Err(e) => {
            let m = aws_sdk_iam::error::DisplayErrorContext(&e).to_string();
            if m.contains("NoSuchEntity") {
                Err(Verdict::Problem(format!(
                    "no IAM role {role}: create it (the CloudFormation template's NodeRole) or fix spec.role"
                )))
            } else if forbidden(&m) {
                Err(not_allowed("read IAM roles"))
            } else {
                Err(Verdict::Problem(format!(
                    "GetRole {role}: {}",
                    crate::bounded::bounded(&m, 300)
                )))
            }
        }
    }
}

/// Whether instances of the node role may join: an EKS access entry for it, or a mapping in
/// the `aws-auth` ConfigMap (the older way).
pub async fn node_access(
    operator: &aws_config::SdkConfig,
    client: &kube::Client,
    cluster: &str,
    role: &str,
    arn: &str,
) -> Check {
    let what = format!("node role {role} may join");
    let entries = aws_sdk_eks::Client::new(operator)
        .list_access_entries()
        .cluster_name(cluster)
        .send()
        .await;
    let listed = match &entries {
        Ok(o) => {
            if o.access_entries().iter().any(|e| e == arn) {
                return check(&what, Verdict::Ok("an EKS access entry names it".into()));
            }
            None
        }
        Err(e) => Some(crate::bounded::bounded(
            &aws_sdk_eks::error::DisplayErrorContext(e).to_string(),
            200,
        )),
    };
    let aws_auth = kube::Api::<ConfigMap>::namespaced(client.clone(), "kube-system")
        .get_opt("aws-auth")
        .await;
    let aws_auth_forbidden = matches!(&aws_auth, Err(kube::Error::Api(s)) if s.code == 403);
    let mapped = aws_auth
        .ok()
        .flatten()
        .and_then(|m| m.data)
        .and_then(|d| d.get("mapRoles").cloned())
        .is_some_and(|roles| {
            roles
                .lines()
                .any(|l| l.trim().trim_start_matches("- ").trim() == format!("rolearn: {arn}"))
        });
    if mapped {
        return check(&what, Verdict::Ok("the aws-auth ConfigMap maps it".into()));
    }
    if aws_auth_forbidden && listed.as_deref().is_some_and(forbidden) {
        return check(&what, not_allowed("list access entries or read aws-auth"));
    }
    let looked = match listed {
        None => "no EKS access entry names it".to_string(),
        Some(e) => format!("the access entries could not be listed ({e})"),
    };
    check(
        &what,
        Verdict::Problem(format!(
            "{looked} and aws-auth does not map it, so its nodes cannot register: aws eks create-access-entry --cluster-name {cluster} --type EC2_LINUX --principal-arn {arn}"
        )),
    )
}

/// The label the chart puts on the controller's Deployment.
const NAME_LABEL: &str = "app.kubernetes.io/name=dovetail";

/// The controller's Deployment (ready replicas) and the warnings it reported in the last hour.
pub async fn controller(client: &kube::Client, namespace: &str) -> Vec<Check> {
    let mut out = Vec::new();
    let deployments = kube::Api::<Deployment>::namespaced(client.clone(), namespace)
        .list(&kube::api::ListParams::default().labels(NAME_LABEL))
        .await;
    out.push(match deployments {
        Err(kube::Error::Api(s)) if s.code == 403 => {
            check("controller", not_allowed("list Deployments"))
        }
        Err(e) => check(
            "controller",
            Verdict::Problem(format!("cannot list Deployments in {namespace}: {e}")),
        ),
        Ok(l) if l.items.is_empty() => check(
            "controller",
            Verdict::Problem(format!(
                "no Deployment labelled {NAME_LABEL} in {namespace}: install the chart (docs/install.md, step 4) or pass --namespace"
            )),
        ),
        Ok(l) => {
            let d = &l.items[0];
            let want = d.spec.replicas.unwrap_or(1);
            let ready = d
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            let name = d.name_any();
            if ready >= want && want > 0 {
                check(
                    "controller",
                    Verdict::Ok(format!("{namespace}/{name}: {ready} of {want} replicas ready")),
                )
            } else {
                check(
                    "controller",
                    Verdict::Problem(format!(
                        "{namespace}/{name}: {ready} of {want} replicas ready: kubectl -n {namespace} describe deploy/{name}; kubectl -n {namespace} logs deploy/{name}"
                    )),
                )
            }
        }
    });
    out.push(warnings(client).await);
    out
}

/// The controller's Warning Events of the last hour, by reason, with the latest note.
async fn warnings(client: &kube::Client) -> Check {
    let events = match kube::Api::<Event>::all(client.clone())
        .list(&Default::default())
        .await
    {
        Ok(l) => l.items,
        Err(kube::Error::Api(s)) if s.code == 403 => {
            return check("controller warnings", not_allowed("list Events"));
        }
        Err(e) => {
            return check(
                "controller warnings",
                Verdict::Problem(format!("cannot list Events: {e}")),
            );
        }
    };
    let since = chrono_like_now() - 3600;
    let mut by_reason: std::collections::BTreeMap<String, (usize, i64, String)> =
        Default::default();
    for e in &events {
        if e.reporting_controller.as_deref() != Some("dovetail")
            || e.type_.as_deref() != Some("Warning")
        {
            continue;
        }
        let at = e
            .series
            .as_ref()
            .map(|s| s.last_observed_time.0.as_second())
            .or_else(|| e.event_time.as_ref().map(|t| t.0.as_second()))
            .or_else(|| {
                e.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.as_second())
            })
            .unwrap_or(0);
        if at < since {
            continue;
        }
        let count = e.series.as_ref().map(|s| s.count as usize).unwrap_or(1);
        let reason = e.reason.clone().unwrap_or_default();
        let entry = by_reason.entry(reason).or_insert((0, 0, String::new()));
        entry.0 += count;
        if at >= entry.1 {
            entry.1 = at;
            entry.2 = crate::bounded::bounded(e.note.as_deref().unwrap_or_default(), 160);
        }
    }
    if by_reason.is_empty() {
        return check(
            "controller warnings",
            Verdict::Ok("no Warning Events from dovetail in the last hour".into()),
        );
    }
    let total: usize = by_reason.values().map(|v| v.0).sum();
    let lines: Vec<String> = by_reason
        .iter()
        .map(|(reason, (n, _, note))| format!("{reason} ×{n} (latest: {note})"))
        .collect();
    check(
        "controller warnings",
        Verdict::Problem(format!("{total} in the last hour: {}", lines.join("; "))),
    )
}

/// Seconds since the epoch.
fn chrono_like_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_endpoint_spelled_two_ways_compares_equal_and_two_do_not() {
        assert_eq!(
            endpoint("https://ABC.gr7.us-east-1.eks.amazonaws.com/"),
            endpoint("https://abc.gr7.us-east-1.eks.amazonaws.com:443")
        );
        assert_ne!(
            endpoint("https://abc.eks.amazonaws.com"),
            endpoint("http://127.0.0.1:6443")
        );
    }

    #[test]
    fn the_api_servers_service_address_is_told_from_an_endpoint() {
        assert!(in_cluster("https://10.100.0.1:443/", Some("10.100.0.1")));
        assert!(in_cluster("https://[fd00::1]:443", Some("fd00::1")));
        assert!(in_cluster("https://kubernetes.default.svc", None));
        assert!(!in_cluster(
            "https://abc.gr7.us-east-1.eks.amazonaws.com",
            Some("10.100.0.1")
        ));
        assert!(!in_cluster("https://10.100.0.1:443/", None));
    }

    #[test]
    fn eks_minor_versions_with_a_plus_read_as_the_minor() {
        assert_eq!(minor_version("1", "33+"), "1.33");
    }

    #[test]
    fn a_base64_pem_bundle_gives_its_certificates() {
        let der = b"not really DER but bytes";
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64::engine::general_purpose::STANDARD.encode(der)
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode(pem);
        assert_eq!(pem_certs(&b64), vec![der.to_vec()]);
        assert!(pem_certs("not base64!").is_empty());
    }
}
