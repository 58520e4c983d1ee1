//! `dovetail doctor`: checks an installation and says what is wrong in words a user can act on,
//! for the pitfalls the Karpenter guides list — AWS credentials and region, the CRDs against this
//! release, each EC2NodeClass's subnets, security groups and AMIs, the node role, the interruption
//! queue and the EventBridge rules feeding it, and pending pods no NodePool can serve (with the
//! requirement that keeps them out). Every check runs the controller's own code where there is one
//! (node class resolution, the scheduling simulation, the CRD check).

use std::collections::BTreeMap;

use kube::ResourceExt;

use crate::cloud::aws::{AwsCloud, AwsSettings};

mod cluster;
mod identity;

/// One check's verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Ok(String),
    /// Something to fix, with how.
    Problem(String),
    /// Not checked, and why (an earlier problem, nothing to check).
    Skipped(String),
}

/// A named check and its verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: String,
    pub verdict: Verdict,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (mark, text) = match &self.verdict {
            Verdict::Ok(t) => ("ok     ", t),
            Verdict::Problem(t) => ("PROBLEM", t),
            Verdict::Skipped(t) => ("skipped", t),
        };
        write!(f, "{mark}  {}: {text}", self.name)
    }
}

/// What to check.
pub struct DoctorSettings {
    pub aws: AwsSettings,
    pub interruption_queue: Option<String>,
    pub kube: kube::Config,
    /// The controller's IAM role: assumed for the calls the controller makes and the launch dry
    /// runs, so they are judged by its policy rather than the operator's. `None`: the caller's
    /// own identity (in the controller's pod, that is the controller's).
    pub role_arn: Option<String>,
    /// The namespace the controller is installed in (its Deployment and Events).
    pub namespace: String,
}

/// The EventBridge event types the interruption queue must receive.
const RULES: [&str; 4] = [
    "EC2 Spot Instance Interruption Warning",
    "EC2 Instance Rebalance Recommendation",
    "EC2 Instance State-change Notification",
    "AWS Health Event",
];

/// Runs every check; never fails as a whole (each problem is a verdict).
pub fn run(settings: DoctorSettings) -> Vec<Check> {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => crate::bridge::Bridge::owning(rt),
        Err(e) => {
            return vec![check("runtime", Verdict::Problem(e.to_string()))];
        }
    };
    let mut out = Vec::new();
    // The operator's identity inspects (roles, rules, access entries); the controller's makes
    // the controller's own calls.
    let operator = rt.wait(settings.aws.sdk_config());
    let aws_ok = match rt.wait(crate::cloud::aws::credentials_problem(&operator)) {
        None => {
            out.push(check(
                "AWS credentials",
                Verdict::Ok(format!("found, region {}", settings.aws.region)),
            ));
            true
        }
        Some(p) => {
            out.push(check("AWS credentials", Verdict::Problem(p)));
            false
        }
    };
    let mut aws = settings.aws.clone();
    let as_controller = aws_ok && {
        let (verdict, credentials) = rt.wait(identity::controller(
            &operator,
            settings.role_arn.as_deref(),
        ));
        let ok = !matches!(verdict, Verdict::Problem(_));
        out.push(check("controller identity", verdict));
        aws.credentials = credentials;
        ok
    };
    let controller = rt.wait(aws.sdk_config());

    let client = kube_client(&rt, &settings, &mut out);

    // The cluster as the nodes will see it, learnt the way the controller learns it, and
    // compared with the one KUBECONFIG reaches.
    let discovered = as_controller && {
        let found = rt.wait(aws.discover(&controller));
        out.push(match &found {
            Ok(()) => check(
                "cluster",
                Verdict::Ok(format!(
                    "{} at {}, Kubernetes {}, service CIDR {}",
                    aws.cluster_name,
                    aws.cluster_endpoint,
                    aws.kubernetes_version,
                    aws.service_cidr
                )),
            ),
            Err(why) => check("cluster", Verdict::Problem(why.clone())),
        });
        found.is_ok()
    };
    if discovered && let Some(client) = &client {
        out.extend(rt.wait(cluster::matches_kubeconfig(&aws, &settings.kube, client)));
    }

    // Node classes, through the provider's own resolution, as the controller.
    let classes: Vec<crate::api::EC2NodeClass> = match &client {
        Some(c) => rt
            .wait(kube::Api::<crate::api::EC2NodeClass>::all(c.clone()).list(&Default::default()))
            .map(|l| l.items)
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let mut cloud = if discovered {
        AwsCloud::new(aws.clone()).ok()
    } else {
        None
    };
    let probe = Probe {
        rt: &rt,
        operator: &operator,
        aws: &aws,
        client: client.as_ref(),
        aws_ok,
        assumed_role: settings.role_arn.is_some(),
    };
    let mut zones = probe.node_classes(&classes, cloud.as_mut(), &mut out);

    out.extend(interruption(&rt, &settings, &operator, aws_ok));

    if let Some(client) = &client {
        // The controller itself: running, ready, and what it has been warning about.
        out.extend(rt.wait(cluster::controller(client, &settings.namespace)));
        // Pending pods no NodePool can serve, in the zones the node classes reach (the
        // region's first three when none resolved).
        if zones.is_empty() {
            zones.extend(["a", "b", "c"].map(|z| format!("{}{z}", settings.aws.region)));
        }
        out.push(rt.wait(pending(client, &zones)));
    }
    out
}

/// What the per-resource checks share: the runtime, the operator's AWS identity, the settings
/// with the cluster as discovered, and the API server, when each was reached.
struct Probe<'a> {
    rt: &'a crate::bridge::Bridge,
    operator: &'a aws_config::SdkConfig,
    aws: &'a AwsSettings,
    client: Option<&'a kube::Client>,
    aws_ok: bool,
    /// The controller's identity is an assumed role (`--role-arn`), not the operator's.
    assumed_role: bool,
}

impl Probe<'_> {
    /// Each EC2NodeClass resolved as the controller resolves it, a dry-run launch, and its node
    /// role with its access to the cluster. Returns the zones their subnets reach.
    fn node_classes(
        &self,
        classes: &[crate::api::EC2NodeClass],
        mut cloud: Option<&mut AwsCloud>,
        out: &mut Vec<Check>,
    ) -> std::collections::BTreeSet<String> {
        if classes.is_empty() {
            out.push(check(
                "EC2NodeClasses",
                Verdict::Skipped("none found: apply one (docs/install.md, step 5)".into()),
            ));
        }
        let mut zones = std::collections::BTreeSet::new();
        for class in classes {
            let name = format!("EC2NodeClass {}", class.name_any());
            let Some(cloud) = cloud.as_deref_mut() else {
                let why = if self.aws_ok {
                    "the cluster was not discovered"
                } else {
                    "no AWS credentials"
                };
                out.push(check(&name, Verdict::Skipped(why.into())));
                continue;
            };
            match cloud.resolve(&class.name_any(), &class.spec) {
                Ok(r) => {
                    let here: std::collections::BTreeSet<&str> =
                        r.subnets.iter().map(|s| s.zone.as_str()).collect();
                    zones.extend(here.iter().map(|z| z.to_string()));
                    out.push(check(
                        &name,
                        Verdict::Ok(format!(
                            "{} subnet(s) in {}, {} security group(s), AMIs for {}",
                            r.subnets.len(),
                            here.into_iter().collect::<Vec<_>>().join(", "),
                            r.security_groups.len(),
                            r.amis.keys().cloned().collect::<Vec<_>>().join(", ")
                        )),
                    ));
                    out.push(identity::dry_runs(
                        &format!("launch as the controller ({name})"),
                        cloud.dry_run_launch(&r),
                        self.assumed_role,
                    ));
                }
                Err(e) => out.push(check(&name, Verdict::Problem(e.reason))),
            }
            if let Some(role) = &class.spec.role {
                self.node_role(role, out);
            }
        }
        zones
    }

    /// A node role exists, and the cluster lets its nodes join.
    fn node_role(&self, role: &str, out: &mut Vec<Check>) {
        let what = format!("node role {role}");
        let arn = self.rt.wait(cluster::role_arn(self.operator, role));
        out.push(match &arn {
            Ok(_) => check(&what, Verdict::Ok("exists".into())),
            Err(why) => check(&what, why.clone()),
        });
        if let (Ok(arn), Some(client)) = (&arn, self.client) {
            out.push(self.rt.wait(cluster::node_access(
                self.operator,
                client,
                &self.aws.cluster_name,
                role,
                arn,
            )));
        }
    }
}

/// The API server KUBECONFIG (or the pod's service account) reaches, and whether it has our
/// CRDs at this version or newer.
fn kube_client(
    rt: &crate::bridge::Bridge,
    settings: &DoctorSettings,
    out: &mut Vec<Check>,
) -> Option<kube::Client> {
    let client = {
        let _enter = rt.handle().enter();
        kube::Client::try_from(settings.kube.clone())
    };
    let client = match client {
        Ok(c) => Some(c),
        Err(e) => {
            out.push(check(
                "Kubernetes API",
                Verdict::Problem(format!("{e}: set KUBECONFIG or run in the cluster")),
            ));
            None
        }
    };
    if let Some(client) = &client {
        out.push(match rt.wait(crate::kubernetes::crd_versions(client)) {
            Ok(found) => match crate::api::crds_problem(&found) {
                None => check(
                    "CRDs",
                    Verdict::Ok(format!(
                        "{} installed, version {} or newer",
                        found.len(),
                        env!("CARGO_PKG_VERSION")
                    )),
                ),
                Some(p) => check("CRDs", Verdict::Problem(p)),
            },
            Err(e) => check("CRDs", Verdict::Problem(e.to_string())),
        });
    }
    client
}

/// The interruption queue and what feeds it.
fn interruption(
    rt: &crate::bridge::Bridge,
    settings: &DoctorSettings,
    operator: &aws_config::SdkConfig,
    aws_ok: bool,
) -> Vec<Check> {
    match (&settings.interruption_queue, aws_ok) {
        (None, _) => vec![check(
            "interruption queue",
            Verdict::Skipped(
                "none set (INTERRUPTION_QUEUE / settings.interruptionQueue): spot interruptions are not handled ahead of time"
                    .into(),
            ),
        )],
        (Some(_), false) => vec![check(
            "interruption queue",
            Verdict::Skipped("no AWS credentials".into()),
        )],
        (Some(queue_ref), true) => rt.wait(queue(operator, queue_ref)),
    }
}

/// Whether an error is the identity's lack of a right (AWS's AccessDenied or
/// UnauthorizedOperation, the API server's 403), not a problem of the installation: run in the
/// controller's pod, the doctor has only the controller's rights, and some checks need more.
fn forbidden(error: &str) -> bool {
    [
        "AccessDenied",
        "UnauthorizedOperation",
        "not authorized",
        "Forbidden",
        "forbidden",
    ]
    .iter()
    .any(|m| error.contains(m))
}

/// A check this identity may not make, as a skip that says how to make it.
fn not_allowed(what: &str) -> Verdict {
    Verdict::Skipped(format!(
        "this identity may not {what} (the controller's role and RBAC need not); run `dovetail doctor` with your own credentials and KUBECONFIG for this check"
    ))
}

fn check(name: &str, verdict: Verdict) -> Check {
    Check {
        name: name.to_string(),
        verdict,
    }
}

async fn queue(sdk: &aws_config::SdkConfig, queue: &str) -> Vec<Check> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let url = match crate::interruption::queue_url(&sqs, queue).await {
        Ok(url) => url,
        Err(e) => {
            return vec![check(
                "interruption queue",
                Verdict::Problem(format!(
                    "{}: create it with the CloudFormation template (deploy/cloudformation.yaml) or fix INTERRUPTION_QUEUE",
                    crate::bounded::bounded(&e.to_string(), 300)
                )),
            )];
        }
    };
    let url = url.as_str();
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await;
    let arn = match attrs {
        Ok(a) => a
            .attributes()
            .and_then(|m| m.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
            .cloned()
            .unwrap_or_default(),
        Err(e) => {
            let m = aws_sdk_sqs::error::DisplayErrorContext(&e).to_string();
            if forbidden(&m) {
                // GetQueueUrl found it; the controller's role reads nothing more of it.
                return vec![
                    check("interruption queue", Verdict::Ok(format!("{url} exists"))),
                    check(
                        "EventBridge rules",
                        not_allowed("read the queue's attributes and rules"),
                    ),
                ];
            }
            return vec![check(
                "interruption queue",
                Verdict::Problem(format!(
                    "{url} cannot be read ({}): create it with the CloudFormation template (deploy/cloudformation.yaml) or fix INTERRUPTION_QUEUE",
                    crate::bounded::bounded(&m, 300)
                )),
            )];
        }
    };
    let mut out = vec![check(
        "interruption queue",
        Verdict::Ok(format!("{url} exists")),
    )];
    let events = aws_sdk_eventbridge::Client::new(sdk);
    let names = match events
        .list_rule_names_by_target()
        .target_arn(&arn)
        .send()
        .await
    {
        Ok(r) => r.rule_names().to_vec(),
        Err(e) if forbidden(&aws_sdk_eventbridge::error::DisplayErrorContext(&e).to_string()) => {
            out.push(check(
                "EventBridge rules",
                not_allowed("list EventBridge rules"),
            ));
            return out;
        }
        Err(e) => {
            out.push(check(
                "EventBridge rules",
                Verdict::Problem(format!(
                    "cannot list the rules targeting {arn}: {}",
                    crate::bounded::bounded(
                        &aws_sdk_eventbridge::error::DisplayErrorContext(&e).to_string(),
                        300
                    )
                )),
            ));
            return out;
        }
    };
    let mut covered = std::collections::BTreeSet::new();
    for name in &names {
        if let Ok(rule) = events.describe_rule().name(name).send().await
            && let Some(pattern) = rule.event_pattern()
            && let Ok(p) = serde_json::from_str::<serde_json::Value>(pattern)
        {
            for t in p["detail-type"].as_array().into_iter().flatten() {
                if let Some(t) = t.as_str() {
                    covered.insert(t.to_string());
                }
            }
        }
    }
    let missing: Vec<&str> = RULES
        .iter()
        .copied()
        .filter(|r| !covered.contains(*r))
        .collect();
    out.push(if missing.is_empty() {
        check(
            "EventBridge rules",
            Verdict::Ok(format!("{} rule(s) feed the queue every event type", names.len())),
        )
    } else {
        check(
            "EventBridge rules",
            Verdict::Problem(format!(
                "no rule sends {} to the queue: the CloudFormation template (deploy/cloudformation.yaml) creates them",
                missing.join(", ")
            )),
        )
    });
    out
}

/// Pending pods that no NodePool can take, by the scheduling simulation's own reasons, in the
/// zones the node classes' subnets reach.
async fn pending(client: &kube::Client, zones: &std::collections::BTreeSet<String>) -> Check {
    use k8s_openapi::api::core::v1::Pod;
    let pods = match kube::Api::<Pod>::all(client.clone())
        .list(&kube::api::ListParams::default().fields("status.phase=Pending"))
        .await
    {
        Ok(l) => l.items,
        Err(e) => {
            return check(
                "pending pods",
                Verdict::Problem(format!("cannot list pods: {e}")),
            );
        }
    };
    let pools = kube::Api::<crate::api::NodePool>::all(client.clone())
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let zero = crate::scheduling::model::zero();
    let specs: Vec<_> = pools
        .iter()
        .filter_map(|p| crate::scheduling::from_kube::node_pool(p, zero, zero).ok())
        .collect();
    let mut waiting = Vec::new();
    let mut names = Vec::new();
    for p in pods.iter().filter(|p| {
        p.spec.as_ref().is_some_and(|s| s.node_name.is_none())
            && p.metadata.deletion_timestamp.is_none()
    }) {
        let id = format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any());
        let Some(spec) = &p.spec else { continue };
        let labels: BTreeMap<String, String> = p.labels().clone();
        if let Ok(pod) = crate::scheduling::from_kube::pending_pod(
            &format!("Pod/{id}"),
            "spec",
            &id,
            &labels,
            spec,
        ) {
            waiting.push(pod);
            names.push(id);
        }
    }
    if waiting.is_empty() {
        return check("pending pods", Verdict::Ok("none waiting".into()));
    }
    let entries = crate::catalog::embedded();
    let zones: Vec<&str> = zones.iter().map(String::as_str).collect();
    let cat = crate::catalog::policy_catalog(&entries, &zones);
    let its = crate::scheduling::InstanceTypes::new(&entries, &cat);
    let plan = crate::scheduling::solve(&waiting, &specs, &its);
    if plan.unschedulable.is_empty() {
        return check(
            "pending pods",
            Verdict::Ok(format!("{} waiting, each fits a NodePool", waiting.len())),
        );
    }
    let lines: Vec<String> = plan
        .unschedulable
        .iter()
        .take(5)
        .map(|u| format!("{}: {}", names[u.pod], u.reason))
        .collect();
    check(
        "pending pods",
        Verdict::Problem(format!(
            "{} of {} cannot be served by any NodePool: {}",
            plan.unschedulable.len(),
            waiting.len(),
            lines.join("; ")
        )),
    )
}
