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
pub mod dry_run;
pub mod eks;
pub mod instance_options;
pub mod instance_profile;
pub mod launch_template;
pub mod node_class;
pub mod user_data;

pub use node_class::{NodeClassError, ResolvedClass};

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{
    DefaultTargetCapacityType, Filter, FleetLaunchTemplateConfigRequest,
    FleetLaunchTemplateOverridesRequest, FleetLaunchTemplateSpecificationRequest,
    FleetOnDemandAllocationStrategy, FleetType, InstanceType, OnDemandOptionsRequest, ResourceType,
    SpotAllocationStrategy, SpotOptionsRequest, Tag, TagSpecification,
    TargetCapacitySpecificationRequest,
};

use super::{CloudError, CloudProvider, Instance, LaunchRequest, Offer};
use crate::api::ec2nodeclass::EC2NodeClassSpec;
use crate::capacity::{Arch, CapacityType};
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
    /// The cluster's API server and CA bundle (base64), for the nodes' bootstrap; learnt from
    /// `eks:DescribeCluster` when empty ([`AwsSettings::discover`]).
    pub cluster_endpoint: String,
    pub cluster_ca: String,
    /// The cluster's service CIDR (nodeadm needs it); learnt like the endpoint when empty.
    pub service_cidr: String,
    /// Kubernetes minor version, for AMI aliases (`1.34`); learnt like the endpoint when empty.
    pub kubernetes_version: String,
    /// How long an offering that ran out of capacity is left out.
    pub unavailable_for: Duration,
    /// Credentials to use instead of the default chain (`doctor --role-arn`: the controller's
    /// role, assumed).
    pub credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
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
        if let Some(c) = &self.credentials {
            loader = loader.credentials_provider(c.clone());
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
            service_cidr: String::new(),
            kubernetes_version: String::new(),
            unavailable_for: Duration::from_secs(180),
            credentials: None,
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

/// The EC2 provider.
pub struct AwsCloud {
    /// Every call to AWS is waited on here.
    bridge: crate::bridge::Bridge,
    ec2: aws_sdk_ec2::Client,
    ssm: aws_sdk_ssm::Client,
    iam: aws_sdk_iam::Client,
    settings: AwsSettings,
    /// Resolved EC2NodeClasses by name: each NodePool launches with its own.
    classes: BTreeMap<String, ResolvedClass>,
    /// Launch templates known to exist, by name (a digest of their configuration).
    templates: std::collections::BTreeSet<String>,
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
    pub fn new(mut settings: AwsSettings) -> Result<Self, CloudError> {
        let bridge = crate::bridge::Bridge::own().map_err(|e| api_error("", "runtime", e))?;
        let config = bridge.wait(settings.sdk_config());
        if let Some(problem) = bridge.wait(credentials_problem(&config)) {
            return Err(CloudError::Setup(problem));
        }
        bridge
            .wait(settings.discover(&config))
            .map_err(CloudError::Setup)?;
        let arch = crate::catalog::embedded()
            .into_iter()
            .map(|e| {
                // NB: by the enum, not its Debug text ("Arch::Arm64" never matched "Arm64", so
                // every Graviton type was launched with the x86_64 image).
                let a = match e.arch {
                    Arch::Arm64 => "arm64",
                    Arch::Amd64 => "x86_64",
                };
                (e.name.clone(), a.to_string())
            })
            .collect();
        Ok(AwsCloud {
            ec2: aws_sdk_ec2::Client::new(&config),
            ssm: aws_sdk_ssm::Client::new(&config),
            iam: aws_sdk_iam::Client::new(&config),
            bridge,
            settings,
            classes: BTreeMap::new(),
            templates: Default::default(),
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

    /// A resolved class, by name.
    pub fn class(&self, name: &str) -> Option<&ResolvedClass> {
        self.classes.get(name)
    }

    /// The settings in force, with what discovery learnt.
    pub fn settings(&self) -> &AwsSettings {
        &self.settings
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
            .bridge
            .wait(
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
            .bridge
            .wait(
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
        class: &ResolvedClass,
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
        // The fleet, its instances and their volumes carry the class's tags (with the cluster's)
        // and the claim's: the IAM policy allows the launch only when each does. The network
        // interfaces and spot requests are tagged by the launch template.
        let mut all: Vec<(String, String)> = class.tags.clone().into_iter().collect();
        all.push((tags::NODEPOOL.into(), request.node_pool.clone()));
        all.push((tags::NODECLAIM.into(), request.claim.clone()));
        all.push((
            "Name".into(),
            format!("{}/{}", request.node_pool, request.claim),
        ));
        let tag_specs: Vec<TagSpecification> = [
            ResourceType::Fleet,
            ResourceType::Instance,
            ResourceType::Volume,
        ]
        .into_iter()
        .map(|t| {
            let mut spec = TagSpecification::builder().resource_type(t);
            for (k, v) in &all {
                spec = spec.tags(Tag::builder().key(k).value(v).build());
            }
            spec.build()
        })
        .collect();
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
            .set_tag_specifications(Some(tag_specs));
        self.count("CreateFleet");
        let out = self
            .bridge
            .wait(req.send())
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

impl AwsCloud {
    /// The claim's instance, when an earlier attempt (or an earlier controller) launched one:
    /// found by its tag, priced from the claim's offer for it, and remembered.
    fn adopt(&mut self, request: &LaunchRequest) -> Result<Option<Instance>, CloudError> {
        let Some((id, instance_type, zone, capacity_type)) = self.existing(&request.claim)? else {
            return Ok(None);
        };
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
        Ok(Some(instance))
    }

    /// An instance type's architecture (`x86_64` when the catalog does not say).
    fn arch_of(&self, instance_type: &str) -> &str {
        self.arch
            .get(instance_type)
            .map_or("x86_64", String::as_str)
    }

    /// Only offers the class has an image for: a Graviton type on a class with x86_64 AMIs
    /// alone is not an option (Karpenter drops such types the same way).
    fn check_images(
        &self,
        request: &LaunchRequest,
        class: &ResolvedClass,
    ) -> Result<(), CloudError> {
        if request
            .offers
            .iter()
            .any(|o| class.amis.contains_key(self.arch_of(&o.instance_type)))
        {
            return Ok(());
        }
        Err(CloudError::NotReady {
            claim: request.claim.clone(),
            reason: format!(
                "EC2NodeClass {} has no AMI for the architecture of any offer (it has {})",
                class.name,
                class.amis.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        })
    }

    /// The claim's offers EC2 may still have capacity for, that the class has an image and a
    /// subnet for, each with that subnet, in ranked order.
    fn usable(&self, request: &LaunchRequest, class: &ResolvedClass) -> Vec<(Offer, String)> {
        request
            .offers
            .iter()
            .filter(|o| {
                !self.is_unavailable(&(
                    o.instance_type.clone(),
                    o.zone.clone(),
                    capacity_type_label(o.capacity_type),
                )) && class.amis.contains_key(self.arch_of(&o.instance_type))
            })
            .filter_map(|o| {
                let subnet = class.subnets.iter().find(|s| s.zone == o.zone)?;
                Some((o.clone(), subnet.id.clone()))
            })
            .collect()
    }

    /// Up to three CreateFleet calls: each asks for the best usable offer's capacity type and
    /// architecture, with every usable offer of that kind as an override; offerings EC2 had no
    /// capacity for are left out a while, and the next call tries what is left.
    fn launch(
        &mut self,
        request: &LaunchRequest,
        class: &ResolvedClass,
    ) -> Result<Instance, CloudError> {
        let mut tried = 0;
        for _attempt in 0..3 {
            let usable = self.usable(request, class);
            let Some((first, _)) = usable.first() else {
                break;
            };
            let arch = self.arch_of(&first.instance_type).to_string();
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
                    o.capacity_type == capacity && self.arch_of(&o.instance_type) == arch
                })
                .take(MAX_OVERRIDES)
                .cloned()
                .collect();
            tried += batch.len();
            let template = self.template(&request.claim, class, &ami, capacity)?;
            let (instance, errors) = self.fleet(request, class, &batch, &template)?;
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
}

impl CloudProvider for AwsCloud {
    /// Launches the claim's instance once: an instance already launched for it (by this or an
    /// earlier controller) is returned, not launched again.
    fn create(&mut self, request: &LaunchRequest) -> Result<Instance, CloudError> {
        if let Some(i) = self.launched.get(&request.claim) {
            return Ok(i.clone());
        }
        if request.offers.is_empty() {
            return Err(CloudError::NoOffers {
                claim: request.claim.clone(),
            });
        }
        let class = self
            .classes
            .get(&request.node_class)
            .cloned()
            .ok_or_else(|| CloudError::NotReady {
                claim: request.claim.clone(),
                reason: format!("EC2NodeClass {} is not resolved", request.node_class),
            })?;
        if let Some(instance) = self.adopt(request)? {
            return Ok(instance);
        }
        self.check_images(request, &class)?;
        self.launch(request, &class)
    }

    fn delete(&mut self, id: &str) -> Result<(), CloudError> {
        self.count("TerminateInstances");
        match self
            .bridge
            .wait(self.ec2.terminate_instances().instance_ids(id).send())
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
    ) -> Option<Result<(Vec<crate::catalog::CatalogEntry>, crate::capacity::Catalog), CloudError>>
    {
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

    fn node_class(&mut self, name: &str, spec: &EC2NodeClassSpec) -> Result<(), CloudError> {
        self.resolve(name, spec)
            .map(|_| ())
            .map_err(|e| CloudError::NodeClass {
                class: e.class,
                reason: e.reason,
            })
    }

    fn node_class_status(
        &self,
        name: &str,
        now: i64,
    ) -> Option<crate::api::ec2nodeclass::EC2NodeClassStatus> {
        self.classes.get(name).map(|c| c.status(now))
    }

    fn remove_node_class(&mut self, name: &str) -> Result<(), CloudError> {
        let made_profile = self
            .classes
            .remove(name)
            .is_some_and(|c| c.spec.instance_profile.is_none());
        if made_profile {
            self.delete_instance_profile(name)
                .map_err(|message| CloudError::Api {
                    subject: format!("EC2NodeClass {name}"),
                    call: "DeleteInstanceProfile",
                    message,
                })?;
        }
        Ok(())
    }

    fn collect_node_classes(
        &mut self,
        live: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<String>, CloudError> {
        self.collect_instance_profiles(live)
            .map_err(|message| CloudError::Api {
                subject: String::new(),
                call: "DeleteInstanceProfile",
                message,
            })
    }

    fn zones(&self) -> Vec<String> {
        let mut zones: Vec<String> = self
            .classes
            .values()
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

pub(super) fn tag_filter(key: &str, value: &str) -> Filter {
    if value == "*" {
        Filter::builder().name("tag-key").values(key).build()
    } else {
        Filter::builder()
            .name(format!("tag:{key}"))
            .values(value)
            .build()
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
