//! The EC2 cloud provider: EC2NodeClass resolution (subnets, security groups and AMIs by selector
//! terms), launch templates created once per configuration and reused, launches through
//! `CreateFleet` (type `instant`) over the ranked offerings, an unavailable-offerings cache fed by
//! capacity errors, termination, listing by tags and orphan garbage collection.
//!
//! Configured like any AWS tool (aws-config: region, the default credential chain with IRSA and
//! EKS Pod Identity, an optional endpoint override for VPC endpoints and tests). The
//! [`CloudProvider`] trait is synchronous; this provider drives the async SDK on its own
//! single-threaded runtime.

pub mod discovery;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{
    DefaultTargetCapacityType, Filter, FleetLaunchTemplateConfigRequest,
    FleetLaunchTemplateOverridesRequest, FleetLaunchTemplateSpecificationRequest,
    FleetOnDemandAllocationStrategy, FleetType, InstanceType, LaunchTemplateHttpTokensState,
    LaunchTemplateIamInstanceProfileSpecificationRequest,
    LaunchTemplateInstanceMetadataOptionsRequest, OnDemandOptionsRequest,
    RequestLaunchTemplateData, ResourceType, SpotAllocationStrategy, SpotOptionsRequest, Tag,
    TagSpecification, TargetCapacitySpecificationRequest,
};
use base64::Engine as _;

use super::{CloudError, CloudProvider, Instance, LaunchRequest, Offer};
use crate::api::ec2nodeclass::{EC2NodeClassSpec, ResolvedId, ResolvedSubnet};
use crate::policy::types::CapacityType;
use crate::scheduling::model::capacity_type_label;

/// Tag keys on everything the controller creates.
pub mod tags {
    pub const CLUSTER: &str = "dovetail.sh/cluster";
    pub const NODEPOOL: &str = "dovetail.sh/nodepool";
    pub const NODECLAIM: &str = "dovetail.sh/nodeclaim";
    pub const NODECLASS: &str = "dovetail.sh/ec2nodeclass";
}

/// At most this many overrides go into one CreateFleet (EC2's own limit is higher; more only
/// adds offerings the policy ranked low).
pub const MAX_OVERRIDES: usize = 60;

/// Error codes that mean "no capacity for this offering right now".
const CAPACITY_ERRORS: [&str; 5] = [
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "UnfulfillableCapacity",
    "MaxSpotInstanceCountExceeded",
    "SpotMaxPriceTooLow",
];

/// Where and as what the provider talks to AWS.
#[derive(Debug, Clone)]
pub struct AwsSettings {
    pub region: String,
    /// Endpoint override (VPC endpoints, or a test server such as moto).
    pub endpoint: Option<String>,
    pub cluster_name: String,
    /// The cluster's API server and CA bundle (base64), for the nodes' NodeConfig.
    pub cluster_endpoint: String,
    pub cluster_ca: String,
    /// Kubernetes minor version, for AMI aliases (`1.34`).
    pub kubernetes_version: String,
    /// How long an offering that ran out of capacity is left out.
    pub unavailable_for: Duration,
}

impl AwsSettings {
    /// The SDK configuration every client of the provider uses: region, the default credential
    /// chain, the endpoint override, and retries that back off on throttling.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(self.region.clone()));
        if let Some(url) = &self.endpoint {
            loader = loader.endpoint_url(url.clone());
        }
        loader
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(5))
            .load()
            .await
    }

    /// Settings for a cluster in a region, with defaults for the rest.
    pub fn new(region: &str, cluster_name: &str) -> Self {
        AwsSettings {
            region: region.into(),
            endpoint: None,
            cluster_name: cluster_name.into(),
            cluster_endpoint: String::new(),
            cluster_ca: String::new(),
            kubernetes_version: "1.34".into(),
            unavailable_for: Duration::from_secs(180),
        }
    }
}

/// Why the SDK found no credentials, as one line that says where it looked and how to set one;
/// `None` when it found some.
pub async fn credentials_problem(config: &aws_config::SdkConfig) -> Option<String> {
    use aws_credential_types::provider::ProvideCredentials as _;
    let tried = "tried: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment; AWS_PROFILE in ~/.aws/config and ~/.aws/credentials; a web identity token (IRSA: AWS_ROLE_ARN with AWS_WEB_IDENTITY_TOKEN_FILE); container credentials (EKS Pod Identity: AWS_CONTAINER_CREDENTIALS_FULL_URI); the EC2 instance metadata service";
    let fix = "in a cluster, give the service account an IRSA role (the chart's serviceAccount.annotations eks.amazonaws.com/role-arn) or an EKS Pod Identity association; elsewhere export AWS_PROFILE or the key pair";
    let Some(provider) = config.credentials_provider() else {
        return Some(format!(
            "no AWS credentials provider is configured ({tried}); {fix}"
        ));
    };
    match provider.provide_credentials().await {
        Ok(_) => None,
        Err(e) => Some(format!(
            "no AWS credentials found ({}); {tried}; {fix}",
            crate::bounded::bounded(&e.to_string(), 120)
        )),
    }
}

/// A node class resolved against the account.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedClass {
    pub name: String,
    pub subnets: Vec<ResolvedSubnet>,
    pub security_groups: Vec<ResolvedId>,
    /// The newest matching image per architecture (`x86_64`, `arm64`).
    pub amis: BTreeMap<String, String>,
    pub instance_profile: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub user_data: String,
    pub http_tokens_required: bool,
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

/// The EC2 provider.
pub struct AwsCloud {
    rt: tokio::runtime::Runtime,
    ec2: aws_sdk_ec2::Client,
    ssm: aws_sdk_ssm::Client,
    iam: aws_sdk_iam::Client,
    settings: AwsSettings,
    class: Option<ResolvedClass>,
    /// Launch template name by configuration hash.
    templates: HashMap<u64, String>,
    /// Offerings out of capacity, until when.
    unavailable: HashMap<(String, String, &'static str), Instant>,
    /// Instance type → architecture (`x86_64` / `arm64`), from the catalog.
    arch: HashMap<String, String>,
    /// Launches by NodeClaim: a retry in this process returns the same instance.
    launched: HashMap<String, Instance>,
    /// API calls made, by operation: the figure behind "calls per launched node".
    pub calls: BTreeMap<&'static str, u64>,
    /// Instance types discovered, and when.
    discovered: Option<(Instant, Vec<discovery::DiscoveredType>)>,
}

impl AwsCloud {
    /// Connects (nothing is called until the first request).
    pub fn new(settings: AwsSettings) -> Result<Self, CloudError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| api_error("", "runtime", e))?;
        let config = rt.block_on(settings.sdk_config());
        if let Some(problem) = rt.block_on(credentials_problem(&config)) {
            return Err(CloudError::Setup(problem));
        }
        let arch = crate::catalog::embedded()
            .into_iter()
            .map(|e| {
                let a = match format!("{:?}", e.arch).as_str() {
                    "Arm64" => "arm64",
                    _ => "x86_64",
                };
                (e.name.clone(), a.to_string())
            })
            .collect();
        Ok(AwsCloud {
            ec2: aws_sdk_ec2::Client::new(&config),
            ssm: aws_sdk_ssm::Client::new(&config),
            iam: aws_sdk_iam::Client::new(&config),
            rt,
            settings,
            class: None,
            templates: HashMap::new(),
            unavailable: HashMap::new(),
            arch,
            launched: HashMap::new(),
            calls: BTreeMap::new(),
            discovered: None,
        })
    }

    fn count(&mut self, call: &'static str) {
        *self.calls.entry(call).or_default() += 1;
    }

    /// The resolved class launches use.
    pub fn class(&self) -> Option<&ResolvedClass> {
        self.class.as_ref()
    }

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
                .rt
                .block_on(req.send())
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
                .rt
                .block_on(req.send())
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
                for (arch, id) in self.alias(alias).map_err(fail)? {
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
                .rt
                .block_on(req.send())
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
            (None, Some(role)) => Some(self.instance_profile(role).map_err(fail)?),
            (None, None) => None,
        };
        let mut class_tags = spec.tags.clone();
        class_tags.insert(tags::CLUSTER.into(), self.settings.cluster_name.clone());
        class_tags.insert(tags::NODECLASS.into(), name.to_string());
        let resolved = ResolvedClass {
            name: name.to_string(),
            subnets,
            security_groups: groups,
            amis: amis.into_iter().map(|(a, (_, id))| (a, id)).collect(),
            instance_profile,
            tags: class_tags,
            user_data: self.user_data(spec),
            http_tokens_required: spec
                .metadata_options
                .as_ref()
                .and_then(|m| m.http_tokens.as_deref())
                .is_none_or(|t| t == "required"),
        };
        self.class = Some(resolved.clone());
        Ok(resolved)
    }

    /// The instance profile for a node role, as Karpenter does it: `dovetail_<cluster>_<hash>`,
    /// created with the role in it when missing, reused otherwise.
    /// Whether the IAM role exists (`dovetail doctor`), in words.
    pub fn role_exists(&mut self, role: &str) -> Result<(), String> {
        self.count("GetRole");
        match self.rt.block_on(self.iam.get_role().role_name(role).send()) {
            Ok(_) => Ok(()),
            Err(e) => {
                let m = sdk_message(&e);
                if m.contains("NoSuchEntity") {
                    Err(format!(
                        "no IAM role {role}: create it (the CloudFormation template's NodeRole) or fix spec.role"
                    ))
                } else {
                    Err(format!(
                        "GetRole {role}: {}",
                        crate::bounded::bounded(&m, 300)
                    ))
                }
            }
        }
    }

    fn instance_profile(&mut self, role: &str) -> Result<String, String> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        role.hash(&mut h);
        let name = format!(
            "dovetail_{}_{:016x}",
            self.settings.cluster_name,
            h.finish()
        );
        self.count("GetInstanceProfile");
        let found = self.rt.block_on(
            self.iam
                .get_instance_profile()
                .instance_profile_name(&name)
                .send(),
        );
        let has_role = match found {
            Ok(o) => o
                .instance_profile()
                .is_some_and(|p| p.roles().iter().any(|r| r.role_name() == role)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|x| x.is_no_such_entity_exception()) =>
            {
                let tag = aws_sdk_iam::types::Tag::builder()
                    .key(tags::CLUSTER)
                    .value(&self.settings.cluster_name)
                    .build()
                    .map_err(|e| e.to_string())?;
                self.count("CreateInstanceProfile");
                self.rt
                    .block_on(
                        self.iam
                            .create_instance_profile()
                            .instance_profile_name(&name)
                            .tags(tag)
                            .send(),
                    )
                    .map_err(|e| {
                        format!(
                            "instance profile for role {role}: CreateInstanceProfile: {}",
                            sdk_message(&e)
                        )
                    })?;
                false
            }
            Err(e) => {
                return Err(format!(
                    "instance profile for role {role}: GetInstanceProfile: {}",
                    sdk_message(&e)
                ));
            }
        };
        if !has_role {
            self.count("AddRoleToInstanceProfile");
            self.rt
                .block_on(
                    self.iam
                        .add_role_to_instance_profile()
                        .instance_profile_name(&name)
                        .role_name(role)
                        .send(),
                )
                .map_err(|e| {
                    format!(
                        "instance profile for role {role}: AddRoleToInstanceProfile: {}",
                        sdk_message(&e)
                    )
                })?;
        }
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
        let current: std::collections::HashSet<&String> = self.templates.values().collect();
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

    /// An AMI alias (`al2023@latest`) through the public SSM parameters, per architecture.
    fn alias(&mut self, alias: &str) -> Result<Vec<(String, String)>, String> {
        let (family, version) = alias
            .split_once('@')
            .ok_or_else(|| format!("AMI alias {alias:?}: expected family@version"))?;
        let k8s = self.settings.kubernetes_version.clone();
        let mut out = Vec::new();
        for (arch, path_arch) in [("x86_64", "x86_64"), ("arm64", "arm64")] {
            let name = match (family, version) {
                ("al2023", "latest") => format!(
                    "/aws/service/eks/optimized-ami/{k8s}/amazon-linux-2023/{path_arch}/standard/recommended/image_id"
                ),
                ("al2023", v) => format!(
                    "/aws/service/eks/optimized-ami/{k8s}/amazon-linux-2023/{path_arch}/standard/amazon-eks-node-al2023-{path_arch}-standard-{k8s}-{v}/image_id"
                ),
                _ => {
                    return Err(format!(
                        "AMI alias {alias:?}: unknown family {family:?} (al2023)"
                    ));
                }
            };
            self.count("GetParameter");
            match self
                .rt
                .block_on(self.ssm.get_parameter().name(&name).send())
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

    /// AL2023 user data: a nodeadm NodeConfig for this cluster, then the class's own part.
    fn user_data(&self, spec: &EC2NodeClassSpec) -> String {
        let s = &self.settings;
        let mut parts = format!(
            "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"//\"\n\n--//\nContent-Type: application/node.eks.aws\n\napiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  cluster:\n    name: {}\n    apiServerEndpoint: {}\n    certificateAuthority: {}\n",
            s.cluster_name, s.cluster_endpoint, s.cluster_ca
        );
        if let Some(max) = spec.kubelet.as_ref().and_then(|k| k.max_pods) {
            parts.push_str(&format!("  kubelet:\n    config:\n      maxPods: {max}\n"));
        }
        if let Some(extra) = &spec.user_data {
            parts.push_str(&format!(
                "\n--//\nContent-Type: text/x-shellscript\n\n{extra}\n"
            ));
        }
        parts.push_str("\n--//--\n");
        parts
    }

    /// The launch template for an AMI of the resolved class: found by name or created, then
    /// cached, so a steady state makes no template calls.
    fn template(&mut self, claim: &str, ami: &str) -> Result<String, CloudError> {
        let class = self.class.clone().ok_or_else(|| CloudError::NotReady {
            claim: claim.into(),
            reason: "no EC2NodeClass resolved".into(),
        })?;
        let hash = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (
                &class.name,
                ami,
                class
                    .security_groups
                    .iter()
                    .map(|g| g.id.as_str())
                    .collect::<Vec<_>>(),
                &class.instance_profile,
                &class.tags,
                &class.user_data,
                class.http_tokens_required,
            )
                .hash(&mut h);
            h.finish()
        };
        if let Some(name) = self.templates.get(&hash) {
            return Ok(name.clone());
        }
        let name = format!("dovetail/{}/{:016x}", self.settings.cluster_name, hash);
        self.count("DescribeLaunchTemplates");
        let found = self.rt.block_on(
            self.ec2
                .describe_launch_templates()
                .launch_template_names(&name)
                .send(),
        );
        let exists = found.is_ok_and(|o| !o.launch_templates().is_empty());
        if !exists {
            let mut data = RequestLaunchTemplateData::builder()
                .image_id(ami)
                .user_data(base64::engine::general_purpose::STANDARD.encode(&class.user_data))
                .metadata_options(
                    LaunchTemplateInstanceMetadataOptionsRequest::builder()
                        .http_tokens(if class.http_tokens_required {
                            LaunchTemplateHttpTokensState::Required
                        } else {
                            LaunchTemplateHttpTokensState::Optional
                        })
                        .http_put_response_hop_limit(1)
                        .build(),
                );
            for g in &class.security_groups {
                data = data.security_group_ids(&g.id);
            }
            if let Some(p) = &class.instance_profile {
                data = data.iam_instance_profile(
                    LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                        .name(p)
                        .build(),
                );
            }
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
                        .launch_template_data(data.build())
                        .tag_specifications(spec.build())
                        .send(),
                )
                .map_err(|e| api_error(claim, "CreateLaunchTemplate", sdk_message(&e)))?;
        }
        self.templates.insert(hash, name.clone());
        Ok(name)
    }

    fn is_unavailable(&self, key: &(String, String, &'static str)) -> bool {
        self.unavailable
            .get(key)
            .is_some_and(|until| *until > Instant::now())
    }

    /// Instances of this cluster that are pending or running: (instance id, NodeClaim tag,
    /// launch time in Unix seconds).
    pub fn list(&mut self) -> Result<Vec<(String, Option<String>, i64)>, CloudError> {
        self.count("DescribeInstances");
        let out = self
            .rt
            .block_on(
                self.ec2
                    .describe_instances()
                    .filters(tag_filter(tags::CLUSTER, &self.settings.cluster_name))
                    .filters(
                        Filter::builder()
                            .name("instance-state-name")
                            .values("pending")
                            .values("running")
                            .build(),
                    )
                    .send(),
            )
            .map_err(|e| api_error("", "DescribeInstances", sdk_message(&e)))?;
        let mut found = Vec::new();
        for r in out.reservations() {
            for i in r.instances() {
                let claim = i
                    .tags()
                    .iter()
                    .find(|t| t.key() == Some(tags::NODECLAIM))
                    .and_then(|t| t.value())
                    .map(str::to_string);
                let launched = i.launch_time().map_or(0, |t| t.secs());
                found.push((
                    i.instance_id().unwrap_or_default().to_string(),
                    claim,
                    launched,
                ));
            }
        }
        Ok(found)
    }

    /// Terminates instances of this cluster whose NodeClaim is not in `claims` and that are
    /// older than `grace` (a launch in progress has no NodeClaim update yet). Returns their ids.
    pub fn collect_orphans(
        &mut self,
        claims: &std::collections::HashSet<String>,
        grace: Duration,
        now: i64,
    ) -> Result<Vec<String>, CloudError> {
        let orphans: Vec<String> = self
            .list()?
            .into_iter()
            .filter(|(_, claim, launched)| {
                claim.as_ref().is_none_or(|c| !claims.contains(c))
                    && now - launched >= grace.as_secs() as i64
            })
            .map(|(id, ..)| id)
            .collect();
        for id in &orphans {
            tracing::info!(instance = %id, "terminating orphan instance");
            self.delete(id)?;
        }
        self.launched.retain(|c, _| claims.contains(c));
        Ok(orphans)
    }

    /// The instance already launched for a NodeClaim, found by its tag (after a restart, a
    /// retried launch must not start a second one): its id, type, zone and whether it is spot,
    /// as EC2 says — not what the claim asked for first (that offer may have been out of
    /// capacity).
    fn existing(
        &mut self,
        claim: &str,
    ) -> Result<Option<(String, String, String, CapacityType)>, CloudError> {
        self.count("DescribeInstances");
        let out = self
            .rt
            .block_on(
                self.ec2
                    .describe_instances()
                    .filters(tag_filter(tags::CLUSTER, &self.settings.cluster_name))
                    .filters(tag_filter(tags::NODECLAIM, claim))
                    .filters(
                        Filter::builder()
                            .name("instance-state-name")
                            .values("pending")
                            .values("running")
                            .build(),
                    )
                    .send(),
            )
            .map_err(|e| api_error(claim, "DescribeInstances", sdk_message(&e)))?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find_map(|i| {
                let id = i.instance_id()?.to_string();
                let instance_type = i.instance_type()?.as_str().to_string();
                let zone = i.placement()?.availability_zone()?.to_string();
                let capacity = if i.instance_lifecycle()
                    == Some(&aws_sdk_ec2::types::InstanceLifecycleType::Spot)
                {
                    CapacityType::Spot
                } else {
                    CapacityType::OnDemand
                };
                Some((id, instance_type, zone, capacity))
            }))
    }

    /// One CreateFleet over `offers` (one capacity type, one architecture).
    fn fleet(
        &mut self,
        request: &LaunchRequest,
        offers: &[(Offer, String)],
        template: &str,
    ) -> Result<(Option<Instance>, Vec<FleetError>), CloudError> {
        let capacity = offers[0].0.capacity_type;
        let mut config = FleetLaunchTemplateConfigRequest::builder().launch_template_specification(
            FleetLaunchTemplateSpecificationRequest::builder()
                .launch_template_name(template)
                .version("$Latest")
                .build(),
        );
        for (i, (o, subnet)) in offers.iter().enumerate() {
            config = config.overrides(
                FleetLaunchTemplateOverridesRequest::builder()
                    .instance_type(InstanceType::from(o.instance_type.as_str()))
                    .subnet_id(subnet)
                    .availability_zone(&o.zone)
                    .priority(i as f64)
                    .build(),
            );
        }
        let mut instance_tags = TagSpecification::builder().resource_type(ResourceType::Instance);
        let mut volume_tags = TagSpecification::builder().resource_type(ResourceType::Volume);
        let class_tags = self
            .class
            .as_ref()
            .map(|c| c.tags.clone())
            .unwrap_or_default();
        let mut all: Vec<(String, String)> = class_tags.into_iter().collect();
        all.push((tags::NODEPOOL.into(), request.node_pool.clone()));
        all.push((tags::NODECLAIM.into(), request.claim.clone()));
        all.push((
            "Name".into(),
            format!("{}/{}", request.node_pool, request.claim),
        ));
        for (k, v) in &all {
            instance_tags = instance_tags.tags(Tag::builder().key(k).value(v).build());
            volume_tags = volume_tags.tags(Tag::builder().key(k).value(v).build());
        }
        let (target, fleet) = match capacity {
            CapacityType::Spot => (
                DefaultTargetCapacityType::Spot,
                self.ec2.create_fleet().spot_options(
                    SpotOptionsRequest::builder()
                        .allocation_strategy(SpotAllocationStrategy::PriceCapacityOptimized)
                        .build(),
                ),
            ),
            _ => (
                DefaultTargetCapacityType::OnDemand,
                self.ec2.create_fleet().on_demand_options(
                    OnDemandOptionsRequest::builder()
                        .allocation_strategy(FleetOnDemandAllocationStrategy::LowestPrice)
                        .build(),
                ),
            ),
        };
        let req = fleet
            .r#type(FleetType::Instant)
            .client_token(client_token(&self.settings.cluster_name, &request.claim))
            .launch_template_configs(config.build())
            .target_capacity_specification(
                TargetCapacitySpecificationRequest::builder()
                    .total_target_capacity(1)
                    .default_target_capacity_type(target)
                    .build(),
            )
            .tag_specifications(instance_tags.build())
            .tag_specifications(volume_tags.build());
        self.count("CreateFleet");
        let out = self
            .rt
            .block_on(req.send())
            .map_err(|e| api_error(&request.claim, "CreateFleet", sdk_message(&e)))?;
        let errors: Vec<FleetError> = out
            .errors()
            .iter()
            .map(|e| {
                let o = e
                    .launch_template_and_overrides()
                    .and_then(|l| l.overrides());
                (
                    e.error_code().unwrap_or_default().to_string(),
                    o.and_then(|o| o.instance_type())
                        .map(|t| t.as_str().to_string())
                        .unwrap_or_default(),
                    o.and_then(|o| o.availability_zone())
                        .map(str::to_string)
                        .unwrap_or_default(),
                )
            })
            .collect();
        if let Some(i) = out.instances().first()
            && let Some(id) = i.instance_ids().first()
        {
            let ty = i
                .instance_type()
                .map(|t| t.as_str().to_string())
                .unwrap_or_default();
            let subnet = i
                .launch_template_and_overrides()
                .and_then(|l| l.overrides())
                .and_then(|o| o.subnet_id())
                .map(str::to_string);
            let offer = offers
                .iter()
                .find(|(o, s)| o.instance_type == ty && subnet.as_ref().is_none_or(|x| x == s))
                .or_else(|| offers.iter().find(|(o, _)| o.instance_type == ty))
                .map(|(o, _)| o.clone())
                .unwrap_or_else(|| offers[0].0.clone());
            let instance = Instance {
                id: id.clone(),
                claim: request.claim.clone(),
                node_pool: request.node_pool.clone(),
                offer,
            };
            return Ok((Some(instance), errors));
        }
        Ok((None, errors))
    }
}

impl CloudProvider for AwsCloud {
    fn create(&mut self, request: &LaunchRequest) -> Result<Instance, CloudError> {
        if let Some(i) = self.launched.get(&request.claim) {
            return Ok(i.clone());
        }
        if request.offers.is_empty() {
            return Err(CloudError::NoOffers {
                claim: request.claim.clone(),
            });
        }
        let class = self.class.clone().ok_or_else(|| CloudError::NotReady {
            claim: request.claim.clone(),
            reason: "no EC2NodeClass resolved".into(),
        })?;
        if let Some((id, instance_type, zone, capacity_type)) = self.existing(&request.claim)? {
            tracing::info!(nodeclaim = %request.claim, instance = %id, %instance_type, %zone, "instance already launched for this nodeclaim");
            // The price of what runs: the claim's offer for it, else any offer of its type.
            let price = request
                .offers
                .iter()
                .find(|o| {
                    o.instance_type == instance_type
                        && o.zone == zone
                        && o.capacity_type == capacity_type
                })
                .or_else(|| {
                    request
                        .offers
                        .iter()
                        .find(|o| o.instance_type == instance_type)
                })
                .map_or(0.0, |o| o.price);
            let instance = Instance {
                id,
                claim: request.claim.clone(),
                node_pool: request.node_pool.clone(),
                offer: Offer {
                    instance_type,
                    zone,
                    capacity_type,
                    price,
                },
            };
            self.launched
                .insert(request.claim.clone(), instance.clone());
            return Ok(instance);
        }
        let mut tried = 0;
        for _attempt in 0..3 {
            // The best remaining offer decides capacity type and architecture; the fleet gets
            // every remaining offer of the same kind that has a subnet, in ranked order.
            let usable: Vec<(Offer, String)> = request
                .offers
                .iter()
                .filter(|o| {
                    !self.is_unavailable(&(
                        o.instance_type.clone(),
                        o.zone.clone(),
                        capacity_type_label(o.capacity_type),
                    ))
                })
                .filter_map(|o| {
                    let subnet = class.subnets.iter().find(|s| s.zone == o.zone)?;
                    Some((o.clone(), subnet.id.clone()))
                })
                .collect();
            let Some((first, _)) = usable.first() else {
                break;
            };
            let arch = self
                .arch
                .get(&first.instance_type)
                .cloned()
                .unwrap_or_else(|| "x86_64".into());
            let Some(ami) = class.amis.get(&arch).cloned() else {
                return Err(CloudError::NotReady {
                    claim: request.claim.clone(),
                    reason: format!("no AMI for architecture {arch}"),
                });
            };
            let capacity = first.capacity_type;
            let batch: Vec<(Offer, String)> = usable
                .iter()
                .filter(|(o, _)| {
                    o.capacity_type == capacity
                        && self
                            .arch
                            .get(&o.instance_type)
                            .map_or("x86_64", String::as_str)
                            == arch
                })
                .take(MAX_OVERRIDES)
                .cloned()
                .collect();
            tried += batch.len();
            let template = self.template(&request.claim, &ami)?;
            let (instance, errors) = self.fleet(request, &batch, &template)?;
            // Offerings EC2 had no capacity for are left out a while, whether or not another
            // override launched.
            let mut capacity_errors = 0;
            for (code, ty, zone) in &errors {
                if CAPACITY_ERRORS.contains(&code.as_str()) {
                    capacity_errors += 1;
                    tracing::warn!(nodeclaim = %request.claim, instance_type = %ty, zone = %zone, code = %code, "offering out of capacity");
                    self.mark_unavailable(ty, zone, capacity);
                }
            }
            if let Some(instance) = instance {
                self.launched
                    .insert(request.claim.clone(), instance.clone());
                return Ok(instance);
            }
            if capacity_errors == 0 {
                let detail = errors
                    .iter()
                    .map(|(c, t, z)| format!("{c} ({t} in {z})"))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(api_error(
                    &request.claim,
                    "CreateFleet",
                    format!("no instance launched: {detail}"),
                ));
            }
        }
        Err(CloudError::InsufficientCapacity {
            claim: request.claim.clone(),
            tried,
        })
    }

    fn delete(&mut self, id: &str) -> Result<(), CloudError> {
        self.count("TerminateInstances");
        match self
            .rt
            .block_on(self.ec2.terminate_instances().instance_ids(id).send())
        {
            Ok(_) => Ok(()),
            Err(e) if sdk_message(&e).contains("InvalidInstanceID.NotFound") => Ok(()),
            Err(e) => Err(CloudError::Api {
                subject: format!("instance {id}"),
                call: "TerminateInstances",
                message: sdk_message(&e),
            }),
        }
    }

    fn catalog(
        &mut self,
        zones: &[&str],
    ) -> Option<
        Result<
            (
                Vec<crate::catalog::CatalogEntry>,
                crate::policy::types::Catalog,
            ),
            CloudError,
        >,
    > {
        Some(
            self.instance_types()
                .map(|types| discovery::catalog(&types, zones)),
        )
    }

    /// NodeClaims (name → instance id) whose instance is no longer pending or running: the
    /// controller removes them (and their pods are rescheduled). One DescribeInstances.
    fn vanished(&mut self, claims: &BTreeMap<String, String>) -> Result<Vec<String>, CloudError> {
        let live: std::collections::HashSet<String> =
            self.list()?.into_iter().map(|(id, ..)| id).collect();
        Ok(claims
            .iter()
            .filter(|(_, id)| !live.contains(*id))
            .map(|(c, _)| c.clone())
            .collect())
    }

    fn node_class(&mut self, name: &str, spec: &EC2NodeClassSpec) -> Result<(), String> {
        self.resolve(name, spec).map(|_| ()).map_err(|e| e.reason)
    }

    fn node_class_status(
        &self,
        name: &str,
        now: i64,
    ) -> Option<crate::api::ec2nodeclass::EC2NodeClassStatus> {
        self.class
            .as_ref()
            .filter(|c| c.name == name)
            .map(|c| c.status(now))
    }

    fn zones(&self) -> Vec<String> {
        let mut zones: Vec<String> = self
            .class
            .iter()
            .flat_map(|c| c.subnets.iter().map(|s| s.zone.clone()))
            .collect();
        zones.sort();
        zones.dedup();
        zones
    }

    fn collect_garbage(
        &mut self,
        claims: &std::collections::HashSet<String>,
        grace: Duration,
        now: i64,
    ) -> Result<Vec<String>, CloudError> {
        let gone = self.collect_orphans(claims, grace, now)?;
        self.collect_launch_templates()?;
        Ok(gone)
    }

    fn mark_unavailable(&mut self, instance_type: &str, zone: &str, capacity: CapacityType) {
        self.unavailable.insert(
            (
                instance_type.into(),
                zone.into(),
                capacity_type_label(capacity),
            ),
            Instant::now() + self.settings.unavailable_for,
        );
    }

    fn unavailable(&self, instance_type: &str, zone: &str, capacity_type: CapacityType) -> bool {
        self.is_unavailable(&(
            instance_type.into(),
            zone.into(),
            capacity_type_label(capacity_type),
        ))
    }
}

/// A CreateFleet error: (code, instance type, zone).
type FleetError = (String, String, String);

/// A CreateFleet client token: the NodeClaim within this cluster (EC2 allows 64 characters).
fn client_token(cluster: &str, claim: &str) -> String {
    let mut t = format!("{cluster}-{claim}");
    t.truncate(64);
    t
}

fn tag_filter(key: &str, value: &str) -> Filter {
    if value == "*" {
        Filter::builder().name("tag-key").values(key).build()
    } else {
        Filter::builder()
            .name(format!("tag:{key}"))
            .values(value)
            .build()
    }
}

fn describe_terms<'a>(
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

/// A failed call about a NodeClaim (`claim` non-empty) or about the account.
fn api_error(claim: &str, call: &'static str, message: impl std::fmt::Display) -> CloudError {
    CloudError::Api {
        subject: if claim.is_empty() {
            String::new()
        } else {
            format!("nodeclaim {claim}")
        },
        call,
        message: message.to_string(),
    }
}

/// The whole error chain, with the service's code and message ("service error" alone says
/// nothing).
fn sdk_message(e: &(dyn std::error::Error + 'static)) -> String {
    aws_sdk_ec2::error::DisplayErrorContext(e).to_string()
}
