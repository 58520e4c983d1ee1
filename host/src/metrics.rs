//! The controller's Prometheus metrics (`dovetail_…`), the families a Karpenter dashboard
//! reads. One [`Metrics`] per process, shared by reference: the cluster port counts what the
//! core did, the cloud and queue wrappers count calls, the run loop sets the gauges that are a
//! function of the snapshot, and the policy registry reports every policy call.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::capacity::CapacityType;
use crate::cloud::{CloudError, CloudProvider, Instance, LaunchRequest};

/// Label pairs of one series.
pub type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;
type FloatGauges = Family<Labels, Gauge<f64, AtomicU64>>;

fn seconds() -> Histogram {
    // 1 ms … ~65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

fn startup_seconds() -> Histogram {
    // 1 s … ~68 min: a pod waits for a node to launch and join.
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

/// Every family the controller exports.
pub struct Metrics {
    registry: Registry,
    /// NodeClaims created (nodepool, reason, capacity_type, instance_type).
    pub nodeclaims_created: Family<Labels, Counter>,
    /// NodeClaims terminated (nodepool, reason).
    pub nodeclaims_terminated: Family<Labels, Counter>,
    /// NodeClaims that could not be launched.
    pub nodeclaims_not_launched: Counter,
    /// A pod from pending to bound to a node Dovetail launched.
    pub pods_startup_duration: Histogram,
    /// One provisioning batch's scheduling simulation and scoring.
    pub scheduling_duration: Histogram,
    /// One disruption pass that had candidates: finding them, simulating their moves, the
    /// policy and enforcement. The loop decides nothing else meanwhile.
    pub disruption_duration: Histogram,
    /// Pods in one provisioning batch.
    pub batch_size: Histogram,
    /// Pending pods by why they wait (nominated to a launching node, or the failing
    /// requirement's kind).
    pub pods_pending: Family<Labels, Gauge>,
    /// Disruption decisions (reason, policy, outcome: executed / kept_by_policy /
    /// overruled_by_host / blocked; why).
    pub disruption_decisions: Family<Labels, Counter>,
    /// Evictions (outcome: evicted / refused_by_pdb / failed).
    pub evictions: Family<Labels, Counter>,
    /// Policy calls (policy, digest, call, outcome).
    pub policy_calls: Family<Labels, Counter>,
    /// Policy call latency (policy, call).
    pub policy_call_duration: Histograms,
    /// Policy failures (policy, digest, kind).
    pub policy_failures: Family<Labels, Counter>,
    /// Decisions made by a fallback because a policy failed (policy, fallback).
    pub policy_fallbacks: Family<Labels, Counter>,
    /// Decisions a shadow candidate was compared on (policy, role, agree).
    pub policy_shadow_decisions: Family<Labels, Counter>,
    /// Sum of the shadow candidate's cost deltas, USD per hour (policy, role): what its choices
    /// would have added to (or saved from) the fleet's hourly price so far.
    pub policy_shadow_cost_delta: FloatGauges,
    /// Nodes each would have disrupted (policy, decided_by: serving / shadow).
    pub policy_shadow_disruptions: Family<Labels, Counter>,
    /// Rounds not put to a shadow candidate because it was still busy (policy).
    pub policy_shadow_skipped: Family<Labels, Counter>,
    /// Interruption messages (kind, action).
    pub interruption_messages: Family<Labels, Counter>,
    /// Cloud provider calls (call).
    pub cloudprovider_duration: Histograms,
    /// Cloud provider errors (call).
    pub cloudprovider_errors: Family<Labels, Counter>,
    /// NodePool resources in use and their limits (nodepool, resource).
    pub nodepool_usage: FloatGauges,
    pub nodepool_limit: FloatGauges,
    /// What the nodes of each NodePool cost per hour, USD.
    pub cluster_cost_per_hour: FloatGauges,
    /// 1 while this replica holds the leader Lease.
    pub leader: Gauge,
    /// API writes that failed (what, code: conflict / throttled / other).
    pub api_write_errors: Family<Labels, Counter>,
    /// Events not published: dropped (queue full) or suppressed (a repeat storm).
    pub events_not_published: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("dovetail");
        let m = Metrics {
            nodeclaims_created: Family::default(),
            nodeclaims_terminated: Family::default(),
            nodeclaims_not_launched: Counter::default(),
            pods_startup_duration: startup_seconds(),
            scheduling_duration: seconds(),
            disruption_duration: seconds(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 16)),
            pods_pending: Family::default(),
            disruption_decisions: Family::default(),
            evictions: Family::default(),
            policy_calls: Family::default(),
            policy_call_duration: Family::new_with_constructor(seconds),
            policy_failures: Family::default(),
            policy_fallbacks: Family::default(),
            policy_shadow_decisions: Family::default(),
            policy_shadow_cost_delta: Family::default(),
            policy_shadow_disruptions: Family::default(),
            policy_shadow_skipped: Family::default(),
            interruption_messages: Family::default(),
            cloudprovider_duration: Family::new_with_constructor(seconds),
            cloudprovider_errors: Family::default(),
            nodepool_usage: Family::default(),
            nodepool_limit: Family::default(),
            cluster_cost_per_hour: Family::default(),
            leader: Gauge::default(),
            api_write_errors: Family::default(),
            events_not_published: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "nodeclaims_created",
            "NodeClaims created",
            m.nodeclaims_created.clone(),
        );
        r.register(
            "nodeclaims_terminated",
            "NodeClaims terminated",
            m.nodeclaims_terminated.clone(),
        );
        r.register(
            "nodeclaims_not_launched",
            "NodeClaims whose launch failed",
            m.nodeclaims_not_launched.clone(),
        );
        r.register(
            "pods_startup_duration_seconds",
            "From a pod pending to bound to a node Dovetail launched",
            m.pods_startup_duration.clone(),
        );
        r.register(
            "provisioner_scheduling_duration_seconds",
            "One provisioning batch's simulation and scoring",
            m.scheduling_duration.clone(),
        );
        r.register(
            "disruption_evaluation_duration_seconds",
            "One disruption pass with candidates: simulation, policy and enforcement",
            m.disruption_duration.clone(),
        );
        r.register(
            "provisioner_batch_size",
            "Pods in one provisioning batch",
            m.batch_size.clone(),
        );
        r.register(
            "pods_pending",
            "Pending pods by why they wait",
            m.pods_pending.clone(),
        );
        r.register(
            "disruption_decisions",
            "Disruption decisions by outcome",
            m.disruption_decisions.clone(),
        );
        r.register("evictions", "Pod evictions", m.evictions.clone());
        r.register("policy_calls", "Policy calls", m.policy_calls.clone());
        r.register(
            "policy_call_duration_seconds",
            "Policy call latency",
            m.policy_call_duration.clone(),
        );
        r.register(
            "policy_failures",
            "Policy failures by kind",
            m.policy_failures.clone(),
        );
        r.register(
            "policy_fallbacks",
            "Decisions a fallback made for a failed policy",
            m.policy_fallbacks.clone(),
        );
        r.register(
            "policy_shadow_decisions",
            "Decisions a shadow policy was compared on, by whether it agreed",
            m.policy_shadow_decisions.clone(),
        );
        r.register(
            "policy_shadow_cost_delta_usd_per_hour",
            "What a shadow policy's choices would have added to the fleet's hourly price",
            m.policy_shadow_cost_delta.clone(),
        );
        r.register(
            "policy_shadow_disruptions",
            "Nodes the serving and the shadow policy would disrupt",
            m.policy_shadow_disruptions.clone(),
        );
        r.register(
            "policy_shadow_skipped",
            "Rounds not put to a shadow policy because it was still busy",
            m.policy_shadow_skipped.clone(),
        );
        r.register(
            "interruption_messages",
            "Interruption messages by kind and action",
            m.interruption_messages.clone(),
        );
        r.register(
            "cloudprovider_duration_seconds",
            "Cloud provider call latency",
            m.cloudprovider_duration.clone(),
        );
        r.register(
            "cloudprovider_errors",
            "Cloud provider call errors",
            m.cloudprovider_errors.clone(),
        );
        r.register(
            "nodepool_usage",
            "NodePool resources in use (cpu in cores, memory in bytes, nodes)",
            m.nodepool_usage.clone(),
        );
        r.register(
            "nodepool_limit",
            "NodePool limits (cpu in cores, memory in bytes)",
            m.nodepool_limit.clone(),
        );
        r.register(
            "cluster_cost_per_hour",
            "What each NodePool's nodes cost per hour, USD",
            m.cluster_cost_per_hour.clone(),
        );
        r.register(
            "leader",
            "1 while this replica holds the leader Lease",
            m.leader.clone(),
        );
        r.register(
            "api_write_errors",
            "Kubernetes API writes that failed",
            m.api_write_errors.clone(),
        );
        r.register(
            "events_not_published",
            "Events dropped (queue full) or suppressed (repeats)",
            m.events_not_published.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The text exposition format (OpenMetrics text, which Prometheus scrapes).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// A policy call's outcome, from the policy registry.
    pub fn policy_call(
        &self,
        policy: &str,
        digest: &str,
        call: &'static str,
        took: Duration,
        failure: Option<&'static str>,
    ) {
        let outcome = failure.map_or("ok", |_| "failed");
        self.policy_calls
            .get_or_create(&vec![
                ("policy", policy.to_string()),
                ("digest", short(digest)),
                ("call", call.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
        self.policy_call_duration
            .get_or_create(&vec![
                ("policy", policy.to_string()),
                ("call", call.to_string()),
            ])
            .observe(took.as_secs_f64());
        if let Some(kind) = failure {
            self.policy_failures
                .get_or_create(&vec![
                    ("policy", policy.to_string()),
                    ("digest", short(digest)),
                    ("kind", kind.to_string()),
                ])
                .inc();
        }
    }

    fn cloud_call<T>(
        &self,
        call: &'static str,
        f: impl FnOnce() -> Result<T, CloudError>,
    ) -> Result<T, CloudError> {
        let started = std::time::Instant::now();
        let out = f();
        self.cloudprovider_duration
            .get_or_create(&vec![("call", call.to_string())])
            .observe(started.elapsed().as_secs_f64());
        if out.is_err() {
            self.cloudprovider_errors
                .get_or_create(&vec![("call", call.to_string())])
                .inc();
        }
        out
    }
}

impl crate::policy::registry::CallObserver for Metrics {
    fn call(
        &self,
        policy: &str,
        digest: &str,
        call: &'static str,
        took: Duration,
        failure: Option<&'static str>,
    ) {
        self.policy_call(policy, digest, call, took, failure);
    }

    fn fallback(&self, policy: &str, fallback: &str) {
        self.policy_fallbacks
            .get_or_create(&vec![
                ("policy", policy.to_string()),
                ("fallback", fallback.to_string()),
            ])
            .inc();
    }

    fn shadow(
        &self,
        policy: &str,
        role: crate::policy::shadow::ShadowRole,
        c: &crate::policy::shadow::Comparison,
    ) {
        let labels = |extra: (&'static str, String)| {
            vec![
                ("policy", policy.to_string()),
                ("role", role.as_str().to_string()),
                extra,
            ]
        };
        self.policy_shadow_decisions
            .get_or_create(&labels(("agree", c.agree.to_string())))
            .inc();
        self.policy_shadow_cost_delta
            .get_or_create(&vec![
                ("policy", policy.to_string()),
                ("role", role.as_str().to_string()),
            ])
            .inc_by(c.cost_delta_per_hour);
        for (by, n) in [
            ("serving", c.disruptions_serving),
            ("shadow", c.disruptions_shadow),
        ] {
            if n > 0 {
                self.policy_shadow_disruptions
                    .get_or_create(&vec![
                        ("policy", policy.to_string()),
                        ("decided_by", by.to_string()),
                    ])
                    .inc_by(u64::from(n));
            }
        }
    }

    fn shadow_skipped(&self, policy: &str) {
        self.policy_shadow_skipped
            .get_or_create(&vec![("policy", policy.to_string())])
            .inc();
    }
}

impl Metrics {
    /// The gauges that are a function of the snapshot: pending pods by why they wait, NodePool
    /// usage against limits, and cost per hour.
    pub fn observe_cluster(
        &self,
        cluster: &crate::cluster::Cluster,
        its: &crate::scheduling::InstanceTypes,
        unschedulable: &dyn Fn(&str) -> Option<String>,
    ) {
        let mut pending: std::collections::BTreeMap<&'static str, i64> = [
            "nominated",
            "waiting_for_batch",
            "resources",
            "requirements",
            "taints",
            "nodepool_limits",
            "no_nodepool",
            "other",
        ]
        .into_iter()
        .map(|r| (r, 0))
        .collect();
        for p in cluster.pods.values() {
            let reason = match &p.node {
                Some(n) if cluster.nodes.get(n).is_some_and(|n| n.ready_at.is_none()) => {
                    "nominated"
                }
                Some(_) => continue,
                None => {
                    unschedulable(&p.spec.name).map_or("waiting_for_batch", |r| pending_label(&r))
                }
            };
            *pending.entry(reason).or_default() += 1;
        }
        for (reason, n) in pending {
            self.pods_pending
                .get_or_create(&vec![("reason", reason.to_string())])
                .set(n);
        }
        for (pool, spec) in cluster.pools.iter().zip(cluster.pool_specs(its)) {
            let name = pool.spec.name.clone();
            let gauge = |f: &FloatGauges, resource: &str, v: f64| {
                f.get_or_create(&vec![
                    ("nodepool", name.clone()),
                    ("resource", resource.to_string()),
                ])
                .set(v);
            };
            let nodes: Vec<&crate::cluster::Node> = cluster
                .nodes
                .values()
                .filter(|n| n.instance.node_pool == name)
                .collect();
            gauge(
                &self.nodepool_usage,
                "cpu",
                spec.in_use.cpu_millis as f64 / 1000.0,
            );
            gauge(
                &self.nodepool_usage,
                "memory",
                spec.in_use.memory_bytes as f64,
            );
            gauge(&self.nodepool_usage, "nodes", nodes.len() as f64);
            if let Some(cpu) = spec.limits.cpu_millis {
                gauge(&self.nodepool_limit, "cpu", cpu as f64 / 1000.0);
            }
            if let Some(mem) = spec.limits.memory_bytes {
                gauge(&self.nodepool_limit, "memory", mem as f64);
            }
            self.cluster_cost_per_hour
                .get_or_create(&vec![("nodepool", name.clone())])
                .set(nodes.iter().map(|n| n.instance.offer.price).sum());
        }
    }
}

/// A bounded label for why a pod cannot get a node (the reason itself names NodePools and
/// quantities: it goes to the pod's Event).
pub fn pending_label(reason: &str) -> &'static str {
    let r = reason.to_ascii_lowercase();
    if r.contains("no nodepool") {
        "no_nodepool"
    } else if r.contains("limit") {
        "nodepool_limits"
    } else if r.contains("taint") || r.contains("tolerat") {
        "taints"
    } else if r.contains("requirement")
        || r.contains("label")
        || r.contains("affinity")
        || r.contains("zone")
    {
        "requirements"
    } else if r.contains("cpu") || r.contains("memory") || r.contains("fit") || r.contains("pods") {
        "resources"
    } else {
        "other"
    }
}

/// A bounded label for why the host blocked or overruled a disruption, or why a policy kept
/// one (the text itself names nodes and pods: it goes to Events and debug lines, not labels).
pub fn why_label(why: &str) -> &'static str {
    if why.contains("do-not-disrupt") {
        "do_not_disrupt"
    } else if why.contains("PodDisruptionBudget") {
        "pdb"
    } else if why.contains("no controller") {
        "bare_pod"
    } else if why.contains("disruption budget") {
        "budget"
    } else if why.contains("nowhere to go") {
        "pods_do_not_fit"
    } else if why.contains("already being disrupted") {
        "already_disrupting"
    } else {
        "other"
    }
}

/// A digest as a label: its first 12 hex digits (enough to tell versions apart).
fn short(digest: &str) -> String {
    digest
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect()
}

/// A cloud provider whose calls are timed and whose errors are counted.
pub struct MeasuredCloud<'a> {
    pub inner: &'a mut dyn CloudProvider,
    pub metrics: &'a Metrics,
}

impl CloudProvider for MeasuredCloud<'_> {
    fn create(&mut self, request: &LaunchRequest) -> Result<Instance, CloudError> {
        let inner = &mut *self.inner;
        self.metrics.cloud_call("create", || inner.create(request))
    }

    fn delete(&mut self, id: &str) -> Result<(), CloudError> {
        let inner = &mut *self.inner;
        self.metrics.cloud_call("delete", || inner.delete(id))
    }

    fn unavailable(&self, instance_type: &str, zone: &str, capacity_type: CapacityType) -> bool {
        self.inner.unavailable(instance_type, zone, capacity_type)
    }

    fn mark_unavailable(&mut self, instance_type: &str, zone: &str, capacity_type: CapacityType) {
        self.inner
            .mark_unavailable(instance_type, zone, capacity_type)
    }

    fn node_class(
        &mut self,
        name: &str,
        spec: &crate::api::ec2nodeclass::EC2NodeClassSpec,
    ) -> Result<(), CloudError> {
        self.inner.node_class(name, spec)
    }

    fn catalog(
        &mut self,
        zones: &[&str],
    ) -> Option<Result<(Vec<crate::catalog::CatalogEntry>, crate::capacity::Catalog), CloudError>>
    {
        self.inner.catalog(zones)
    }

    fn vanished(
        &mut self,
        claims: &std::collections::BTreeMap<String, String>,
    ) -> Result<Vec<String>, CloudError> {
        let inner = &mut *self.inner;
        self.metrics
            .cloud_call("vanished", || inner.vanished(claims))
    }

    fn node_class_status(
        &self,
        name: &str,
        now: i64,
    ) -> Option<crate::api::ec2nodeclass::EC2NodeClassStatus> {
        self.inner.node_class_status(name, now)
    }

    fn remove_node_class(&mut self, name: &str) -> Result<(), CloudError> {
        let inner = &mut *self.inner;
        self.metrics
            .cloud_call("remove_node_class", || inner.remove_node_class(name))
    }

    fn collect_node_classes(
        &mut self,
        live: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<String>, CloudError> {
        let inner = &mut *self.inner;
        self.metrics
            .cloud_call("collect_node_classes", || inner.collect_node_classes(live))
    }

    fn zones(&self) -> Vec<String> {
        self.inner.zones()
    }

    fn collect_garbage(
        &mut self,
        claims: &std::collections::HashSet<String>,
        grace: Duration,
        now: i64,
    ) -> Result<Vec<String>, CloudError> {
        let inner = &mut *self.inner;
        self.metrics.cloud_call("collect_garbage", || {
            inner.collect_garbage(claims, grace, now)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_carry_the_prefix_and_their_labels() {
        let m = Metrics::new();
        m.nodeclaims_created
            .get_or_create(&vec![
                ("nodepool", "default".into()),
                ("reason", "provisioning".into()),
                ("capacity_type", "spot".into()),
                ("instance_type", "m5.large".into()),
            ])
            .inc();
        m.policy_call(
            "cheapest",
            "sha256:0123456789abcdef",
            "score",
            Duration::from_millis(3),
            Some("timeout"),
        );
        let text = m.encode();
        assert!(
            text.contains(r#"dovetail_nodeclaims_created_total{nodepool="default",reason="provisioning",capacity_type="spot",instance_type="m5.large"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"dovetail_policy_failures_total{policy="cheapest",digest="0123456789ab",kind="timeout"} 1"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn a_disruption_pass_is_timed_under_karpenters_name() {
        let m = Metrics::new();
        m.disruption_duration.observe(6.2);
        let text = m.encode();
        assert!(
            text.contains("dovetail_disruption_evaluation_duration_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"dovetail_disruption_evaluation_duration_seconds_bucket{le="8.192"} 1"#
            ),
            "{text}"
        );
    }
}
