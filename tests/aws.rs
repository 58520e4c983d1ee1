//! The EC2 provider and the interruption queue against a real AWS API server (moto), through the
//! real aws-sdk-ec2 / aws-sdk-sqs request paths.

use dovetail_test_support::fault_proxy;
use dovetail_test_support::moto;
use dovetail_test_support::seed;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::Filter;
use dovetail::api::manifest::{Manifest, parse};
use dovetail::capacity::CapacityType;
use dovetail::cloud::aws::{AwsCloud, AwsSettings, tags};
use dovetail::cloud::{CloudError, CloudProvider, LaunchRequest, Offer};
use dovetail::interruption::{self, Action, Queue};
use fault_proxy::FaultProxy;
use moto::Moto;
use seed::{DISCOVERY, runtime, seed};

fn node_class(ami_terms: &str) -> dovetail::api::ec2nodeclass::EC2NodeClassSpec {
    let yaml = format!(
        "apiVersion: aws.dovetail.sh/v1\nkind: EC2NodeClass\nmetadata: {{name: default}}\nspec:\n  instanceProfile: dovetail-node\n  amiSelectorTerms: {ami_terms}\n  subnetSelectorTerms: [{{tags: {{{DISCOVERY}: my-cluster}}}}]\n  securityGroupSelectorTerms: [{{tags: {{{DISCOVERY}: my-cluster}}}}]\n"
    );
    match parse("class.yaml", &yaml).unwrap().remove(0) {
        Manifest::EC2NodeClass(c) => c.spec,
        other => panic!("{other:?}"),
    }
}

/// Settings with the cluster given (no discovery), against `endpoint`.
fn settings(endpoint: &str) -> AwsSettings {
    let mut s = AwsSettings::new("us-east-1", "my-cluster");
    s.endpoint = Some(endpoint.to_string());
    s.cluster_endpoint = "https://ABCDEF.gr7.us-east-1.eks.amazonaws.com".into();
    s.cluster_ca = "LS0tLS1CRUdJTi...".into();
    s.service_cidr = "10.100.0.0/16".into();
    s.kubernetes_version = "1.34".into();
    s
}

fn cloud(moto: &Moto) -> AwsCloud {
    AwsCloud::new(settings(&moto.endpoint)).unwrap()
}

fn request(claim: &str, offers: &[(&str, &str, CapacityType)]) -> LaunchRequest {
    LaunchRequest {
        claim: claim.into(),
        node_pool: "default".into(),
        node_class: "default".into(),
        offers: offers
            .iter()
            .map(|(t, z, c)| Offer {
                instance_type: t.to_string(),
                zone: z.to_string(),
                capacity_type: *c,
                price: 0.05,
            })
            .collect(),
    }
}

/// (instance id, subnet, state, tags) of an instance in moto.
type Seen = (String, String, String, Vec<(String, String)>);

/// Every instance in moto.
fn instances(moto: &Moto) -> Vec<Seen> {
    runtime().block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&moto.config().await);
        let out = ec2.describe_instances().send().await.unwrap();
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(|i| {
                (
                    i.instance_id().unwrap().to_string(),
                    i.subnet_id().unwrap_or_default().to_string(),
                    i.state()
                        .and_then(|s| s.name())
                        .map(|n| n.as_str().to_string())
                        .unwrap_or_default(),
                    tag_pairs(i.tags()),
                )
            })
            .collect()
    })
}

/// EC2 tags as (key, value).
fn tag_pairs(tags: &[aws_sdk_ec2::types::Tag]) -> Vec<(String, String)> {
    tags.iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn live(moto: &Moto) -> Vec<Seen> {
    instances(moto)
        .into_iter()
        .filter(|i| i.2 == "pending" || i.2 == "running")
        .collect()
}

const TAGGED_AMI: &str = "[{tags: {dovetail.sh/discovery: my-cluster}}]";

#[test]
fn a_node_class_whose_selectors_match_no_subnet_is_not_ready_and_nothing_launches() {
    let Some(moto) = Moto::start() else { return };
    seed(&moto, false);
    let mut cloud = cloud(&moto);
    let err = cloud
        .resolve("default", &node_class(TAGGED_AMI))
        .unwrap_err();
    assert_eq!(
        err.reason,
        "no subnets matched tag dovetail.sh/discovery=my-cluster"
    );
    assert!(err.to_string().starts_with("EC2NodeClass default: "));
    let status = err.status(1_795_392_000);
    let ready = &status.conditions[0];
    assert_eq!(
        (ready.type_.as_str(), ready.status.as_str()),
        ("Ready", "False")
    );
    assert_eq!(ready.message, err.reason);
    let e = cloud
        .create(&request(
            "default-1",
            &[("m5.large", "us-east-1a", CapacityType::OnDemand)],
        ))
        .unwrap_err();
    assert!(matches!(e, CloudError::NotReady { .. }), "{e}");
    assert!(live(&moto).is_empty());
}

#[test]
fn launches_go_through_create_fleet_into_the_discovered_subnets_with_tags_and_a_template() {
    let Some(moto) = Moto::start() else { return };
    let seed = seed(&moto, true);
    let mut cloud = cloud(&moto);
    let class = cloud.resolve("default", &node_class(TAGGED_AMI)).unwrap();
    let mut found: Vec<&str> = class.subnets.iter().map(|s| s.id.as_str()).collect();
    found.sort_unstable();
    let mut want: Vec<&str> = seed.subnets.iter().map(|(s, _)| s.as_str()).collect();
    want.sort_unstable();
    assert_eq!(found, want, "exactly the tagged subnets");
    assert!(!found.contains(&seed.untagged_subnet.as_str()));
    let groups: Vec<&str> = class
        .security_groups
        .iter()
        .map(|g| g.id.as_str())
        .collect();
    assert_eq!(groups, vec![seed.group.as_str()]);
    assert!(!groups.contains(&seed.untagged_group.as_str()));
    assert!(class.amis.contains_key("x86_64"));

    let i = cloud
        .create(&request(
            "default-00001",
            &[
                ("m5.large", "us-east-1b", CapacityType::Spot),
                ("m5.xlarge", "us-east-1c", CapacityType::Spot),
            ],
        ))
        .unwrap();
    assert_eq!(i.offer.instance_type, "m5.large");
    assert_eq!(i.offer.zone, "us-east-1b");
    let all = live(&moto);
    assert_eq!(all.len(), 1);
    let (id, subnet, _, tags_) = &all[0];
    assert_eq!(id, &i.id);
    let zone_b = &seed
        .subnets
        .iter()
        .find(|(_, z)| z == "us-east-1b")
        .unwrap()
        .0;
    assert_eq!(
        subnet, zone_b,
        "launched into the tagged subnet of the chosen zone"
    );
    for (k, v) in [
        (tags::CLUSTER, "my-cluster"),
        (tags::NODEPOOL, "default"),
        (tags::NODECLAIM, "default-00001"),
        // As Karpenter's: what AWS's cloud provider and EKS look for.
        ("kubernetes.io/cluster/my-cluster", "owned"),
        ("eks:eks-cluster-name", "my-cluster"),
        ("Name", "default/default-00001"),
    ] {
        assert!(
            tags_.iter().any(|(tk, tv)| tk == k && tv == v),
            "tag {k}={v} missing: {tags_:?}"
        );
    }
    // The launch template exists, tagged for the cluster, requiring IMDSv2.
    let rt = runtime();
    let (names, tokens) = rt.block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&moto.config().await);
        let t = ec2
            .describe_launch_templates()
            .filters(
                Filter::builder()
                    .name(format!("tag:{}", tags::CLUSTER))
                    .values("my-cluster")
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let names: Vec<String> = t
            .launch_templates()
            .iter()
            .map(|l| l.launch_template_name().unwrap().to_string())
            .collect();
        let v = ec2
            .describe_launch_template_versions()
            .launch_template_name(&names[0])
            .send()
            .await
            .unwrap();
        let data = v.launch_template_versions()[0]
            .launch_template_data()
            .unwrap()
            .clone();
        let tokens = data
            .metadata_options()
            .and_then(|m| m.http_tokens())
            .map(|t| t.as_str().to_string());
        (names, tokens)
    });
    assert_eq!(names.len(), 1);
    assert!(names[0].starts_with("dovetail/my-cluster/"), "{names:?}");
    assert_eq!(tokens.as_deref(), Some("required"));

    // A second spot launch reuses the template; an on-demand one has its own (a spot launch's
    // template also tags the spot request); scale to zero terminates everything.
    let j = cloud
        .create(&request(
            "default-00002",
            &[("c5.large", "us-east-1a", CapacityType::Spot)],
        ))
        .unwrap();
    assert_eq!(cloud.calls.get("CreateLaunchTemplate"), Some(&1));
    let k = cloud
        .create(&request(
            "default-00003",
            &[("c5.large", "us-east-1a", CapacityType::OnDemand)],
        ))
        .unwrap();
    assert_eq!(cloud.calls.get("CreateLaunchTemplate"), Some(&2));
    for id in [&i.id, &j.id, &k.id] {
        cloud.delete(id).unwrap();
    }
    assert!(live(&moto).is_empty(), "{:?}", live(&moto));
}

#[test]
fn a_retried_launch_does_not_create_a_second_instance_and_steady_state_costs_two_calls() {
    let Some(moto) = Moto::start() else { return };
    seed(&moto, true);
    let spec = node_class(TAGGED_AMI);
    let offers = [("m5.large", "us-east-1a", CapacityType::OnDemand)];
    let mut first = cloud(&moto);
    first.resolve("default", &spec).unwrap();
    let a = first.create(&request("default-00001", &offers)).unwrap();
    // The controller restarts before recording the launch, and retries it.
    let mut second = cloud(&moto);
    second.resolve("default", &spec).unwrap();
    let b = second.create(&request("default-00001", &offers)).unwrap();
    assert_eq!(a.id, b.id);
    assert_eq!(live(&moto).len(), 1);

    // Warm the caches with one launch (this process has not looked its template up yet), then
    // count calls per launched node.
    second.create(&request("default-00002", &offers)).unwrap();
    let before: u64 = second.calls.values().sum();
    let n = 5;
    for k in 0..n {
        second
            .create(&request(&format!("default-1{k:04}"), &offers))
            .unwrap();
    }
    let per_node = (second.calls.values().sum::<u64>() - before) as f64 / f64::from(n);
    println!(
        "AWS API calls per launched node, warm: {per_node:.2} ({:?})",
        second.calls
    );
    assert!(per_node <= 2.0, "{per_node} calls per node");
}

#[test]
fn orphans_are_garbage_collected() {
    let Some(moto) = Moto::start() else { return };
    seed(&moto, true);
    let mut cloud = cloud(&moto);
    cloud.resolve("default", &node_class(TAGGED_AMI)).unwrap();
    let offers = [("m5.large", "us-east-1a", CapacityType::OnDemand)];
    let kept = cloud.create(&request("default-00001", &offers)).unwrap();
    // "Crash after CreateFleet, before the NodeClaim is updated": the instance exists, its
    // NodeClaim does not.
    let orphan = cloud.create(&request("default-00002", &offers)).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims: HashSet<String> = ["default-00001".to_string()].into();
    // Within the grace period a launch in flight is left alone.
    assert!(
        cloud
            .collect_orphans(&claims, Duration::from_secs(600), now)
            .unwrap()
            .is_empty()
    );
    let gone = cloud
        .collect_orphans(&claims, Duration::ZERO, now + 1)
        .unwrap();
    assert_eq!(gone, vec![orphan.id.clone()]);
    let ids: Vec<String> = live(&moto).into_iter().map(|i| i.0).collect();
    assert_eq!(ids, vec![kept.id]);
}

#[test]
fn an_ami_alias_resolves_through_the_public_ssm_parameter() {
    let Some(moto) = Moto::start() else { return };
    seed(&moto, true);
    let mut cloud = cloud(&moto);
    // moto has no EKS-optimized AMI parameters: the alias path reaches SSM and says which
    // parameter it read.
    let err = cloud
        .resolve("default", &node_class("[{alias: al2023@latest}]"))
        .unwrap_err();
    assert!(
        err.reason.contains(
            "/aws/service/eks/optimized-ami/1.34/amazon-linux-2023/x86_64/standard/recommended/image_id"
        ),
        "{}",
        err.reason
    );
    assert!(err.reason.contains("ParameterNotFound"), "{}", err.reason);
}

#[test]
fn an_ami_alias_takes_the_image_the_public_ssm_parameter_names() {
    let Some(moto) = Moto::start() else { return };
    seed(&moto, true);
    let (x86, arm) = runtime().block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&moto.config().await);
        let images = ec2.describe_images().owners("amazon").send().await.unwrap();
        let of = |arch: &str| {
            images
                .images()
                .iter()
                .find(|i| i.architecture().is_some_and(|a| a.as_str() == arch))
                .and_then(|i| i.image_id())
                .unwrap_or_else(|| panic!("moto ships {arch} images"))
                .to_string()
        };
        (of("x86_64"), of("arm64"))
    });
    // The parameters EKS publishes (moto refuses the reserved /aws/ prefix; the proxy plays
    // them), naming images moto has.
    let param = |arch: &str, id: &str| {
        format!(
            "/aws/service/eks/optimized-ami/1.34/amazon-linux-2023/{arch}/standard/recommended/image_id={id}"
        )
    };
    let (p_x86, p_arm) = (param("x86_64", &x86), param("arm64", &arm));
    let proxy = FaultProxy::start(
        &moto.endpoint,
        &["--ssm-parameter", &p_x86, "--ssm-parameter", &p_arm],
    );
    let mut cloud = AwsCloud::new(settings(&proxy.url)).unwrap();
    let class = cloud
        .resolve("default", &node_class("[{alias: al2023@latest}]"))
        .expect("the alias resolves");
    assert_eq!(class.amis.get("x86_64"), Some(&x86));
    assert_eq!(class.amis.get("arm64"), Some(&arm));
}

#[test]
fn interruption_messages_are_handled_deleted_and_counted_and_the_loop_survives_garbage() {
    let Some(moto) = Moto::start() else { return };
    let rt = runtime();
    let (sqs, url) = rt.block_on(async {
        let sqs = aws_sdk_sqs::Client::new(&moto.config().await);
        let url = sqs
            .create_queue()
            .queue_name("dovetail-my-cluster")
            .send()
            .await
            .unwrap()
            .queue_url()
            .unwrap()
            .to_string();
        (sqs, url)
    });
    let spot = r#"{"version":"0","id":"1e5527d7-bb36-4607-3370-4164db56a40e","detail-type":"EC2 Spot Instance Interruption Warning","source":"aws.ec2","account":"123456789012","time":"2026-11-23T12:00:00Z","region":"us-east-1","resources":["arn:aws:ec2:us-east-1b:instance/i-1234567890abcdef0"],"detail":{"instance-id":"i-1234567890abcdef0","instance-action":"terminate"}}"#;
    let mut garbage: Vec<String> = Vec::new();
    for k in 0..100 {
        garbage.push(match k % 4 {
            0 => spot[..(k + 5) % spot.len()].to_string(),
            1 => format!(r#"{{"detail-type":"EC2 AMI State Change","detail":{{"n":{k}}}}}"#),
            2 => format!("not json {k}"),
            _ => r#"{"detail-type":"EC2 Spot Instance Interruption Warning","detail":{"instance-action":"terminate"}}"#.to_string(),
        });
    }
    let mut queue = Queue::new(sqs.clone(), &url);
    queue.wait = Duration::from_secs(1);
    let (handled, first_seen) = rt.block_on(async {
        for g in &garbage {
            sqs.send_message()
                .queue_url(&url)
                .message_body(g)
                .send()
                .await
                .unwrap();
        }
        let sent = Instant::now();
        sqs.send_message()
            .queue_url(&url)
            .message_body(spot)
            .send()
            .await
            .unwrap();
        let mut handled = Vec::new();
        let mut first_seen = None;
        for _ in 0..40 {
            let got = queue.poll().await.unwrap();
            for r in got {
                first_seen.get_or_insert_with(|| sent.elapsed());
                let action = interruption::action(&r.notice, false);
                queue.done(&r, action).await.unwrap();
                handled.push((r.notice, action));
            }
            if queue.metrics.deleted == 101 {
                break;
            }
        }
        (handled, first_seen)
    });
    assert_eq!(handled.len(), 1);
    assert_eq!(handled[0].0.instance_ids, vec!["i-1234567890abcdef0"]);
    assert_eq!(handled[0].1, Action::Replace);
    let m = &queue.metrics;
    assert_eq!(m.deleted, 101, "{m:?}");
    assert_eq!(m.received.get("spot_interruption"), Some(&1));
    let bad: u64 = m
        .received
        .iter()
        .filter(|(k, _)| k.as_str() != "spot_interruption")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(bad, 100, "{m:?}");
    assert_eq!(m.actions.get("replace"), Some(&1));
    let left = rt.block_on(async {
        sqs.receive_message()
            .queue_url(&url)
            .wait_time_seconds(0)
            .send()
            .await
            .unwrap()
            .messages()
            .len()
    });
    assert_eq!(left, 0, "every message deleted");
    println!(
        "spot interruption: sent → handled in {:?} (behind 100 bad messages)",
        first_seen.unwrap()
    );
}

#[test]
fn a_failing_delete_of_garbage_does_not_cost_the_spot_warning_of_the_same_poll() {
    let Some(moto) = Moto::start() else { return };
    let rt = runtime();
    let proxy = FaultProxy::start(&moto.endpoint, &["--fail", "AmazonSQS.DeleteMessageBatch"]);
    let (sqs, url) = rt.block_on(async {
        let direct = aws_sdk_sqs::Client::new(&moto.config().await);
        let url = direct
            .create_queue()
            .queue_name("dovetail-my-cluster")
            .send()
            .await
            .unwrap()
            .queue_url()
            .unwrap()
            .to_string();
        for body in ["not json", r#"{"detail-type":"EC2 AMI State Change","detail":{}}"#] {
            direct.send_message().queue_url(&url).message_body(body).send().await.unwrap();
        }
        let spot = r#"{"version":"0","id":"2","detail-type":"EC2 Spot Instance Interruption Warning","source":"aws.ec2","account":"123456789012","time":"2026-11-23T12:00:00Z","region":"us-east-1","resources":[],"detail":{"instance-id":"i-0fedcba9876543210","instance-action":"terminate"}}"#;
        direct.send_message().queue_url(&url).message_body(spot).send().await.unwrap();
        // The queue client of the test goes through the proxy: its batch deletes fail.
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&proxy.url)
            .load()
            .await;
        (aws_sdk_sqs::Client::new(&config), url)
    });
    let mut queue = Queue::new(sqs, &url);
    queue.wait = Duration::from_secs(1);
    let handled = rt.block_on(async {
        let mut handled = Vec::new();
        for _ in 0..10 {
            for r in queue
                .poll()
                .await
                .expect("a failed delete is not a failed poll")
            {
                handled.push(r.notice);
            }
            if !handled.is_empty() {
                break;
            }
        }
        handled
    });
    assert_eq!(handled.len(), 1, "the spot warning is acted on");
    assert_eq!(handled[0].instance_ids, vec!["i-0fedcba9876543210"]);
    let m = &queue.metrics;
    assert_eq!(m.deleted, 0, "the deletes failed: {m:?}");
    let dropped: u64 = m
        .received
        .iter()
        .filter(|(k, _)| k.as_str() != "spot_interruption")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(dropped, 2, "both bad messages were read and counted: {m:?}");
}

#[test]
fn a_launch_adopted_after_a_restart_records_what_runs_not_the_first_choice() {
    let Some(moto) = Moto::start() else { return };
    seed(&moto, true);
    // Before the crash: the first choice was out of capacity, the second launched.
    let proxy = FaultProxy::start(&moto.endpoint, &["--ice", "m5.large:us-east-1a"]);
    let mut before = AwsCloud::new(settings(&proxy.url)).unwrap();
    before.resolve("default", &node_class(TAGGED_AMI)).unwrap();
    let offers = [
        ("m5.large", "us-east-1a", CapacityType::Spot),
        ("m5a.large", "us-east-1b", CapacityType::OnDemand),
    ];
    let launched = before.create(&request("default-00001", &offers)).unwrap();
    assert_eq!(launched.offer.instance_type, "m5a.large");
    // After the restart: a new provider, the same claim's launch is retried and adopts.
    let mut after = AwsCloud::new(settings(&moto.endpoint)).unwrap();
    after.resolve("default", &node_class(TAGGED_AMI)).unwrap();
    let adopted = after.create(&request("default-00001", &offers)).unwrap();
    assert_eq!(adopted.id, launched.id, "no second instance");
    assert_eq!(
        (
            adopted.offer.instance_type.as_str(),
            adopted.offer.zone.as_str(),
            adopted.offer.capacity_type
        ),
        ("m5a.large", "us-east-1b", CapacityType::OnDemand),
        "what EC2 says runs"
    );
    assert_eq!(adopted.offer.price, launched.offer.price);
}

#[test]
fn insufficient_capacity_on_the_first_choice_caches_it_and_launches_the_next() {
    let Some(moto) = Moto::start() else { return };
    seed(&moto, true);
    let proxy = FaultProxy::start(&moto.endpoint, &["--ice", "m5.large:us-east-1a"]);
    let mut cloud = AwsCloud::new(settings(&proxy.url)).unwrap();
    cloud.resolve("default", &node_class(TAGGED_AMI)).unwrap();
    let offers = [
        ("m5.large", "us-east-1a", CapacityType::Spot),
        ("m5a.large", "us-east-1a", CapacityType::Spot),
    ];
    let i = cloud.create(&request("default-00001", &offers)).unwrap();
    assert_eq!(
        i.offer.instance_type, "m5a.large",
        "the next-ranked offering"
    );
    assert_eq!(proxy.injected(), 1);
    assert!(cloud.unavailable("m5.large", "us-east-1a", CapacityType::Spot));
    assert!(!cloud.unavailable("m5.large", "us-east-1a", CapacityType::OnDemand));
    // The cached offering is not asked for again.
    let j = cloud.create(&request("default-00002", &offers)).unwrap();
    assert_eq!(j.offer.instance_type, "m5a.large");
    assert_eq!(
        proxy.injected(),
        1,
        "the unavailable offering was left out of the fleet"
    );
    // Every offering out of capacity: a clear error naming the NodeClaim, nothing launched.
    let only = [("m5.large", "us-east-1a", CapacityType::OnDemand)];
    let proxy_all = FaultProxy::start(&moto.endpoint, &["--ice", "m5.large:us-east-1a"]);
    let mut cloud = AwsCloud::new(settings(&proxy_all.url)).unwrap();
    cloud.resolve("default", &node_class(TAGGED_AMI)).unwrap();
    let before = live(&moto).len();
    let e = cloud.create(&request("default-00003", &only)).unwrap_err();
    assert!(
        matches!(&e, CloudError::InsufficientCapacity { claim, .. } if claim == "default-00003"),
        "{e}"
    );
    assert_eq!(live(&moto).len(), before);
}

#[test]
fn simulate_with_the_aws_cloud_launches_interrupts_and_scales_to_zero_in_ec2() {
    use dovetail::sim::{EventKind, SimOptions, simulate};
    let Some(moto) = Moto::start() else { return };
    let seeded: Vec<String> = seed(&moto, true)
        .subnets
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    let rt = runtime();
    let url = rt.block_on(async {
        let sqs = aws_sdk_sqs::Client::new(&moto.config().await);
        sqs.create_queue()
            .queue_name("dovetail-my-cluster")
            .send()
            .await
            .unwrap()
            .queue_url()
            .unwrap()
            .to_string()
    });
    let manifests = format!(
        r#"apiVersion: aws.dovetail.sh/v1
kind: EC2NodeClass
metadata: {{name: default}}
spec:
  instanceProfile: dovetail-node
  amiSelectorTerms: [{{tags: {{{DISCOVERY}: my-cluster}}}}]
  subnetSelectorTerms: [{{tags: {{{DISCOVERY}: my-cluster}}}}]
  securityGroupSelectorTerms: [{{tags: {{{DISCOVERY}: my-cluster}}}}]
---
apiVersion: dovetail.sh/v1
kind: NodePool
metadata: {{name: default}}
spec:
  template:
    spec:
      requirements:
        - {{key: kubernetes.io/arch, operator: In, values: [amd64]}}
        - {{key: dovetail.sh/capacity-type, operator: In, values: [spot]}}
        - {{key: aws.dovetail.sh/instance-category, operator: In, values: [c, m, r]}}
      nodeClassRef: {{group: aws.dovetail.sh, kind: EC2NodeClass, name: default}}
  disruption: {{consolidationPolicy: WhenEmpty, consolidateAfter: 30s}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: inflate}}
spec:
  replicas: 10
  selector: {{matchLabels: {{app: inflate}}}}
  template:
    metadata: {{labels: {{app: inflate}}}}
    spec:
      containers: [{{name: inflate, image: pause, resources: {{requests: {{cpu: 500m}}}}}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 10
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: pause, resources: {{requests: {{cpu: "2", memory: 2Gi}}}}}}]
---
apiVersion: sim.dovetail.sh/v1
kind: Scenario
metadata: {{name: aws}}
spec:
  duration: 30m
  steps:
    - at: 5m
      interrupt: {{node: default-00001}}
    - at: 15m
      scale: {{deployment: inflate, replicas: 0}}
    - at: 15m
      scale: {{deployment: web, replicas: 0}}
"#
    );
    let settings = settings(&moto.endpoint);
    let opts = SimOptions {
        aws: Some(settings),
        interruption_queue: Some(url),
        events_endpoint: Some(moto.admin_endpoint.clone()),
        ..SimOptions::default()
    };
    let report = simulate(&[("aws.yaml".into(), manifests)], &opts).unwrap();
    let pos = |f: &dyn Fn(&EventKind) -> bool| report.events.iter().position(|e| f(&e.kind));
    let interrupted =
        pos(&|k| matches!(k, EventKind::Interrupted { node, .. } if node == "default-00001"))
            .expect("the queued interruption reached the node");
    let replacement =
        pos(&|k| matches!(k, EventKind::Launched { node, .. } if node != "default-00001"))
            .expect("a replacement");
    let drained = pos(&|k| matches!(k, EventKind::Evicted { node, .. } if node == "default-00001"))
        .expect("the node was drained");
    assert!(
        interrupted < replacement && replacement < drained,
        "replacement before the drain"
    );
    assert_eq!(
        report.interruption.received.get("spot_interruption"),
        Some(&1)
    );
    assert_eq!(report.interruption.deleted, 1, "the message was deleted");
    // Figure, not an assertion: from the message's SentTimestamp to its handling, which requests
    // the replacement (CreateFleet) before returning.
    println!(
        "spot interruption: queued → replacement requested in {:.3} s",
        report.interruption.ages[0]
    );
    // Everything launched is in EC2 with its tags, and scale to zero terminated all of it.
    let all = instances(&moto);
    assert_eq!(all.len() as u32, report.launched);
    for (_, subnet, _, t) in &all {
        assert!(
            t.iter().any(|(k, v)| k == tags::NODEPOOL && v == "default"),
            "{t:?}"
        );
        assert!(
            seeded.contains(subnet),
            "{subnet} is not a discovered subnet"
        );
    }
    // Decisions priced spot from the account (moto quotes every spot pool at 0.00001).
    for e in &report.events {
        if let EventKind::Launched {
            capacity_type,
            price,
            ..
        } = &e.kind
        {
            assert_eq!(*capacity_type, "spot");
            assert!(
                *price < 0.001,
                "spot priced from DescribeSpotPriceHistory: {price}"
            );
        }
    }
    assert!(
        report.launched >= 2,
        "capacity and the replacement: {}",
        report.launched
    );
    assert!(
        report.pending_seconds.len() >= 20,
        "both deployments' pods ran: {}",
        report.pending_seconds.len()
    );
    assert!(report.nodes.is_empty());
    assert!(live(&moto).is_empty(), "{:?}", live(&moto));
}

#[test]
fn instance_types_are_discovered_with_zones_and_spot_prices_and_cached() {
    let Some(moto) = Moto::start() else { return };
    let mut cloud = cloud(&moto);
    let types = cloud.instance_types().unwrap();
    assert!(types.len() > 500, "{} types", types.len());
    let m5 = types
        .iter()
        .find(|t| t.name == "m5.large")
        .expect("m5.large");
    assert_eq!((m5.vcpus, m5.memory_mib, m5.max_pods), (2, 8192, 29));
    let entries = dovetail::catalog::embedded();
    let embedded = entries.iter().find(|e| e.name == "m5.large").unwrap();
    assert_eq!(m5.allocatable.cpu_millis, embedded.allocatable.cpu_millis);
    assert_eq!(
        m5.allocatable.memory_bytes,
        embedded.allocatable.memory_bytes
    );
    // (On-demand prices come from the embedded table: comparing them with it would check
    // nothing. The allocatable above is computed from the vCPUs and memory EC2 reports.)
    assert!(m5.zones.iter().any(|z| z == "us-east-1a"), "{:?}", m5.zones);
    assert!(
        types.iter().any(|t| !t.spot_prices.is_empty()),
        "spot prices from DescribeSpotPriceHistory"
    );
    assert!(types.iter().any(|t| t.arch == "arm64"));
    let calls: u64 = cloud.calls.values().sum();
    let again = cloud.instance_types().unwrap();
    assert_eq!(again.len(), types.len());
    assert_eq!(
        cloud.calls.values().sum::<u64>(),
        calls,
        "served from the cache"
    );
}

#[test]
fn a_role_gets_an_instance_profile_and_stale_templates_and_vanished_instances_are_collected() {
    let Some(moto) = Moto::start() else { return };
    seed(&moto, true);
    let rt = runtime();
    rt.block_on(async {
        let iam = aws_sdk_iam::Client::new(&moto.config().await);
        iam.create_role()
            .role_name("DovetailNodeRole-my-cluster")
            .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#)
            .send()
            .await
            .unwrap();
    });
    let with_role = |ami: &str| {
        let mut spec = node_class(ami);
        spec.instance_profile = None;
        spec.role = Some("DovetailNodeRole-my-cluster".into());
        spec
    };
    let mut provider = cloud(&moto);
    let class = provider.resolve("default", &with_role(TAGGED_AMI)).unwrap();
    let profile = class
        .instance_profile
        .clone()
        .expect("a profile for the role");
    assert!(profile.starts_with("dovetail_my-cluster_"), "{profile}");
    let roles = rt.block_on(async {
        let iam = aws_sdk_iam::Client::new(&moto.config().await);
        iam.get_instance_profile()
            .instance_profile_name(&profile)
            .send()
            .await
            .unwrap()
            .instance_profile()
            .unwrap()
            .roles()
            .iter()
            .map(|r| r.role_name().to_string())
            .collect::<Vec<_>>()
    });
    assert_eq!(roles, vec!["DovetailNodeRole-my-cluster"]);
    // Resolving again reuses the profile.
    let again = provider.resolve("default", &with_role(TAGGED_AMI)).unwrap();
    assert_eq!(again.instance_profile, Some(profile));
    assert_eq!(provider.calls.get("CreateInstanceProfile"), Some(&1));

    let offers = [("m5.large", "us-east-1a", CapacityType::OnDemand)];
    let a = provider.create(&request("default-00001", &offers)).unwrap();
    let b = provider.create(&request("default-00002", &offers)).unwrap();
    // A template of an older configuration is stale once the current one is in use.
    let mut old = cloud(&moto);
    let mut spec = with_role(TAGGED_AMI);
    spec.user_data = Some("echo old".into());
    old.resolve("default", &spec).unwrap();
    old.create(&request("default-00003", &offers)).unwrap();
    let stale = provider.collect_launch_templates().unwrap();
    assert_eq!(stale.len(), 1, "{stale:?}");
    assert_eq!(
        provider.collect_launch_templates().unwrap(),
        Vec::<String>::new()
    );

    // An instance terminated behind the controller's back: its NodeClaim is reported.
    rt.block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&moto.config().await);
        ec2.terminate_instances()
            .instance_ids(&b.id)
            .send()
            .await
            .unwrap();
    });
    let claims = [
        ("default-00001".to_string(), a.id.clone()),
        ("default-00002".to_string(), b.id.clone()),
    ]
    .into();
    assert_eq!(provider.vanished(&claims).unwrap(), vec!["default-00002"]);
}

/// The launch template data and tags of an instance moto runs: (image, subnet, security groups,
/// tags, the template's data).
fn launched_with(
    moto: &Moto,
    id: &str,
) -> (
    String,
    String,
    Vec<String>,
    Vec<(String, String)>,
    aws_sdk_ec2::types::ResponseLaunchTemplateData,
) {
    runtime().block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&moto.config().await);
        let out = ec2
            .describe_instances()
            .instance_ids(id)
            .send()
            .await
            .unwrap();
        let i = out.reservations()[0].instances()[0].clone();
        let template = i
            .tags()
            .iter()
            .find(|t| t.key() == Some("aws:ec2launchtemplate:id"))
            .and_then(|t| t.value())
            .map(str::to_string);
        let names: Vec<String> = ec2
            .describe_launch_templates()
            .send()
            .await
            .unwrap()
            .launch_templates()
            .iter()
            .map(|t| t.launch_template_id().unwrap().to_string())
            .collect();
        // moto does not tag instances with their template: find it by the image and groups.
        let mut data = None;
        for lt in template.into_iter().chain(names) {
            let v = ec2
                .describe_launch_template_versions()
                .launch_template_id(&lt)
                .send()
                .await
                .unwrap();
            let d = v.launch_template_versions()[0]
                .launch_template_data()
                .unwrap()
                .clone();
            if d.image_id() == i.image_id() {
                data = Some(d);
                break;
            }
        }
        (
            i.image_id().unwrap().to_string(),
            i.subnet_id().unwrap_or_default().to_string(),
            i.security_groups()
                .iter()
                .map(|g| g.group_id().unwrap().to_string())
                .collect(),
            tag_pairs(i.tags()),
            data.expect("the instance's launch template"),
        )
    })
}

fn decoded_user_data(data: &aws_sdk_ec2::types::ResponseLaunchTemplateData) -> String {
    use base64::Engine as _;
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(data.user_data().unwrap())
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn two_node_pools_launch_each_with_its_own_node_classs_ami_subnets_groups_tags_and_user_data() {
    let Some(moto) = Moto::start() else { return };
    let seed = seed(&moto, true);
    let arm = runtime().block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&moto.config().await);
        let images = ec2.describe_images().owners("amazon").send().await.unwrap();
        images
            .images()
            .iter()
            .find(|i| i.architecture().is_some_and(|a| a.as_str() == "arm64"))
            .and_then(|i| i.image_id())
            .unwrap()
            .to_string()
    });
    let mut cloud = cloud(&moto);
    let general = node_class(TAGGED_AMI);
    let mut gpu = node_class(&format!("[{{id: {arm}}}]"));
    gpu.subnet_selector_terms[0].tags.clear();
    gpu.subnet_selector_terms[0].id = Some(seed.untagged_subnet.clone());
    gpu.security_group_selector_terms[0].tags.clear();
    gpu.security_group_selector_terms[0].id = Some(seed.untagged_group.clone());
    gpu.tags = [("team".to_string(), "ml".to_string())].into();
    gpu.user_data = Some("#!/bin/bash\necho gpu-class".into());
    cloud.resolve("general", &general).unwrap();
    cloud.resolve("gpu", &gpu).unwrap();

    let mut a = request(
        "general-00001",
        &[("m5.large", "us-east-1b", CapacityType::OnDemand)],
    );
    a.node_pool = "general".into();
    a.node_class = "general".into();
    let mut b = request(
        "gpu-00001",
        &[("m6g.large", "us-east-1a", CapacityType::OnDemand)],
    );
    b.node_pool = "gpu".into();
    b.node_class = "gpu".into();
    let ia = cloud.create(&a).unwrap();
    let ib = cloud.create(&b).unwrap();

    let (image_a, subnet_a, _, tags_a, data_a) = launched_with(&moto, &ia.id);
    let (image_b, subnet_b, _, tags_b, data_b) = launched_with(&moto, &ib.id);
    // moto does not copy a template's groups onto a fleet's instances: read the template's.
    let groups_a = data_a.security_group_ids().to_vec();
    let groups_b = data_b.security_group_ids().to_vec();
    assert_ne!(image_a, arm);
    assert_eq!(image_b, arm, "the gpu class's own AMI");
    let zone_b = &seed
        .subnets
        .iter()
        .find(|(_, z)| z == "us-east-1b")
        .unwrap()
        .0;
    assert_eq!(&subnet_a, zone_b);
    assert_eq!(subnet_b, seed.untagged_subnet, "the gpu class's own subnet");
    assert_eq!(groups_a, vec![seed.group.clone()]);
    assert_eq!(
        groups_b,
        vec![seed.untagged_group.clone()],
        "the gpu class's own group"
    );
    let has =
        |tags: &[(String, String)], k: &str, v: &str| tags.iter().any(|(a, b)| a == k && b == v);
    assert!(
        has(&tags_b, "team", "ml") && has(&tags_b, tags::NODECLASS, "gpu"),
        "{tags_b:?}"
    );
    assert!(
        !has(&tags_a, "team", "ml") && has(&tags_a, tags::NODECLASS, "general"),
        "{tags_a:?}"
    );
    assert!(decoded_user_data(&data_b).contains("echo gpu-class"));
    assert!(!decoded_user_data(&data_a).contains("echo gpu-class"));
    // Each class's status reports its own resolution.
    let status_b = cloud.node_class_status("gpu", 0).unwrap();
    assert_eq!(status_b.subnets.len(), 1);
    assert_eq!(status_b.subnets[0].id, seed.untagged_subnet);
}

#[test]
fn a_node_classs_disks_metadata_network_monitoring_storage_and_kubelet_reach_the_launch_template() {
    let Some(moto) = Moto::start() else { return };
    seed(&moto, true);
    let mut cloud = cloud(&moto);
    let mut spec = node_class(TAGGED_AMI);
    let yaml = "blockDeviceMappings: [{deviceName: /dev/xvda, rootVolume: true, ebs: {volumeSize: 100Gi, volumeType: gp3, iops: 4000, throughput: 250, encrypted: true, deleteOnTermination: true}}]\nmetadataOptions: {httpTokens: required, httpPutResponseHopLimit: 2, httpEndpoint: enabled}\nassociatePublicIPAddress: false\ndetailedMonitoring: true\ninstanceStorePolicy: RAID0\nkubelet: {maxPods: 20, systemReserved: {cpu: 100m}, evictionHard: {memory.available: 5%}}\n";
    let extra: serde_json::Value = serde_norway::from_str(yaml).unwrap();
    let mut json = serde_json::to_value(&spec).unwrap();
    for (k, v) in extra.as_object().unwrap() {
        json[k] = v.clone();
    }
    spec = serde_json::from_value(json).unwrap();
    cloud.resolve("default", &spec).unwrap();
    let i = cloud
        .create(&request(
            "default-00001",
            &[("m5.large", "us-east-1a", CapacityType::Spot)],
        ))
        .unwrap();
    let (_, _, _, _, data) = launched_with(&moto, &i.id);
    let disk = &data.block_device_mappings()[0];
    assert_eq!(disk.device_name(), Some("/dev/xvda"));
    let ebs = disk.ebs().unwrap();
    assert_eq!(ebs.volume_size(), Some(100));
    assert_eq!(ebs.volume_type().map(|t| t.as_str()), Some("gp3"));
    assert_eq!((ebs.iops(), ebs.throughput()), (Some(4000), Some(250)));
    assert_eq!(ebs.encrypted(), Some(true));
    let m = data.metadata_options().unwrap();
    assert_eq!(m.http_tokens().map(|t| t.as_str()), Some("required"));
    assert_eq!(m.http_put_response_hop_limit(), Some(2));
    assert_eq!(data.monitoring().and_then(|m| m.enabled()), Some(true));
    let eni = &data.network_interfaces()[0];
    assert_eq!(eni.device_index(), Some(0));
    assert_eq!(eni.associate_public_ip_address(), Some(false));
    assert!(!eni.groups().is_empty(), "the groups ride on the interface");
    // The network interface and the spot request are tagged by the template.
    let tagged: Vec<&str> = data
        .tag_specifications()
        .iter()
        .filter(|s| s.tags().iter().any(|t| t.key() == Some(tags::CLUSTER)))
        .filter_map(|s| s.resource_type().map(|r| r.as_str()))
        .collect();
    for t in ["network-interface", "spot-instances-request"] {
        assert!(tagged.contains(&t), "{t} untagged: {tagged:?}");
    }
    let user_data = decoded_user_data(&data);
    assert!(user_data.contains("maxPods: 20"), "{user_data}");
    assert!(user_data.contains("strategy: RAID0"), "{user_data}");
    assert!(user_data.contains("cidr: 10.100.0.0/16"), "{user_data}");
    assert!(user_data.contains("memory.available: 5%"), "{user_data}");
}

#[test]
fn without_an_endpoint_the_cluster_is_learnt_from_eks_and_written_into_the_bootstrap() {
    let Some(moto) = Moto::start() else { return };
    seed(&moto, true);
    // Nothing to learn from: one line that says what to set.
    let mut bare = AwsSettings::new("us-east-1", "my-cluster");
    bare.endpoint = Some(moto.endpoint.clone());
    let e = AwsCloud::new(bare.clone())
        .err()
        .expect("no cluster, no start");
    let line = e.to_string();
    assert!(!line.contains('\n'), "{line}");
    assert!(line.contains("eks:DescribeCluster my-cluster"), "{line}");
    assert!(
        line.contains("--cluster-endpoint (CLUSTER_ENDPOINT)"),
        "{line}"
    );
    assert!(
        line.contains("--kubernetes-version (KUBERNETES_VERSION)"),
        "{line}"
    );

    let (endpoint, ca) = seed::eks_cluster(&moto);
    let mut cloud = AwsCloud::new(bare).expect("the cluster is learnt");
    assert_eq!(cloud.settings().cluster_endpoint, endpoint);
    assert_eq!(cloud.settings().kubernetes_version, "1.33");
    assert_eq!(cloud.settings().service_cidr, "172.31.0.0/16");
    cloud.resolve("default", &node_class(TAGGED_AMI)).unwrap();
    let i = cloud
        .create(&request(
            "default-00001",
            &[("m5.large", "us-east-1a", CapacityType::OnDemand)],
        ))
        .unwrap();
    let user_data = decoded_user_data(&launched_with(&moto, &i.id).4);
    assert!(
        user_data.contains(&format!("apiServerEndpoint: {endpoint}")),
        "{user_data}"
    );
    assert!(user_data.contains("cidr: 172.31.0.0/16"), "{user_data}");
    if !ca.is_empty() {
        assert!(user_data.contains(&ca), "{user_data}");
    }
    assert_eq!(
        cloud.calls.get("DescribeCluster"),
        None,
        "discovery is not a per-launch cost"
    );
}

#[test]
fn a_deleted_node_classs_instance_profile_is_emptied_and_deleted_and_a_new_role_replaces_the_old() {
    let Some(moto) = Moto::start() else { return };
    seed(&moto, true);
    let rt = runtime();
    let iam = rt.block_on(async { aws_sdk_iam::Client::new(&moto.config().await) });
    for role in ["DovetailNodeRole-my-cluster", "Other"] {
        rt.block_on(
            iam.create_role()
                .role_name(role)
                .assume_role_policy_document("{}")
                .send(),
        )
        .unwrap();
    }
    let mut spec = node_class(TAGGED_AMI);
    spec.instance_profile = None;
    spec.role = Some("DovetailNodeRole-my-cluster".into());
    let mut cloud = cloud(&moto);
    let profile = cloud
        .resolve("default", &spec)
        .unwrap()
        .instance_profile
        .unwrap();
    assert_eq!(
        profile,
        dovetail::cloud::aws::instance_profile::profile_name("my-cluster", "us-east-1", "default")
    );
    let roles = |name: &str| {
        rt.block_on(
            iam.get_instance_profile()
                .instance_profile_name(name)
                .send(),
        )
        .ok()
        .map(|o| {
            o.instance_profile()
                .unwrap()
                .roles()
                .iter()
                .map(|r| r.role_name().to_string())
                .collect::<Vec<_>>()
        })
    };
    // The class now names another role (a role outside the template: the IAM check refuses to
    // pass it, so this part runs against moto directly).
    let mut admin = AwsCloud::new(settings(&moto.admin_endpoint)).unwrap();
    spec.role = Some("Other".into());
    admin.resolve("default", &spec).unwrap();
    assert_eq!(roles(&profile), Some(vec!["Other".to_string()]));
    spec.role = Some("DovetailNodeRole-my-cluster".into());
    cloud.resolve("default", &spec).unwrap();
    assert_eq!(
        roles(&profile),
        Some(vec!["DovetailNodeRole-my-cluster".to_string()])
    );
    cloud.remove_node_class("default").unwrap();
    assert_eq!(roles(&profile), None, "the profile is gone");
    // Removing it again is no error.
    cloud.resolve("default", &spec).unwrap();
    cloud.remove_node_class("default").unwrap();
    cloud.remove_node_class("default").unwrap();

    // A class deleted while no controller ran: the next one's sweep removes its profile, and
    // touches neither a live class's nor one that is not this cluster's.
    let kept = cloud
        .resolve("default", &spec)
        .unwrap()
        .instance_profile
        .unwrap();
    let orphan = cloud
        .resolve("gpu", &spec)
        .unwrap()
        .instance_profile
        .unwrap();
    rt.block_on(
        iam.create_instance_profile()
            .instance_profile_name("someone-elses")
            .send(),
    )
    .unwrap();
    let mut restarted = AwsCloud::new(settings(&moto.endpoint)).unwrap();
    let removed = restarted
        .collect_node_classes(&["default".to_string()].into())
        .unwrap();
    assert_eq!(removed, vec![orphan.clone()]);
    assert_eq!(roles(&orphan), None);
    assert!(roles(&kept).is_some());
    assert!(roles("someone-elses").is_some());
}

#[test]
fn the_iam_check_refuses_what_a_policy_without_one_statement_would_and_names_it() {
    let Some(moto) = Moto::start() else { return };
    seed(&moto, true);
    let (mut check, url) = moto::iam_check(
        &moto.admin_endpoint,
        &["--iam-without", "AllowScopedCreation"],
    );
    let mut refused = AwsCloud::new(settings(&url)).unwrap();
    refused.resolve("default", &node_class(TAGGED_AMI)).unwrap();
    let e = refused
        .create(&request(
            "default-00001",
            &[("m5.large", "us-east-1a", CapacityType::OnDemand)],
        ))
        .unwrap_err();
    let denials = moto::iam_denials(&url);
    let _ = check.kill();
    let _ = check.wait();
    assert!(e.to_string().contains("UnauthorizedOperation"), "{e}");
    assert!(live(&moto).is_empty(), "nothing launched");
    assert!(
        denials
            .iter()
            .any(|d| d.contains("ec2:CreateLaunchTemplate")
                && d.contains("statement AllowScopedCreation is missing")),
        "{denials:#?}"
    );
    // The same launch through the whole policy is allowed (and checked when `moto` drops).
    let mut whole = cloud(&moto);
    whole.resolve("default", &node_class(TAGGED_AMI)).unwrap();
    whole
        .create(&request(
            "default-00001",
            &[("m5.large", "us-east-1a", CapacityType::Spot)],
        ))
        .unwrap();
    let allowed = moto.iam_allowed();
    for action in [
        "ec2:CreateFleet",
        "ec2:RunInstances",
        "ec2:CreateTags",
        "ec2:CreateLaunchTemplate",
    ] {
        assert!(allowed.contains(action), "{action} was judged: {allowed:?}");
    }
}

#[test]
fn offers_of_an_architecture_the_class_has_no_image_for_are_passed_over() {
    let Some(moto) = Moto::start() else { return };
    seed(&moto, true);
    let mut cloud = cloud(&moto);
    // The tagged image is x86_64 only.
    let class = cloud.resolve("default", &node_class(TAGGED_AMI)).unwrap();
    assert_eq!(class.amis.keys().collect::<Vec<_>>(), ["x86_64"]);
    let i = cloud
        .create(&request(
            "default-00001",
            &[
                ("m6g.large", "us-east-1a", CapacityType::OnDemand),
                ("m5.large", "us-east-1a", CapacityType::OnDemand),
            ],
        ))
        .unwrap();
    assert_eq!(
        i.offer.instance_type, "m5.large",
        "the Graviton type is skipped"
    );
    let (image, ..) = launched_with(&moto, &i.id);
    assert_eq!(Some(&image), class.amis.get("x86_64"));
    let e = cloud
        .create(&request(
            "default-00002",
            &[("m6g.large", "us-east-1a", CapacityType::OnDemand)],
        ))
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::NotReady { reason, .. } if reason.contains("no AMI for the architecture")),
        "{e}"
    );
}
