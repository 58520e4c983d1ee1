//! `dovetail controller`'s loop against a cluster: it starts (clients, caches, cloud, catalog,
//! the core, the Lease), then ticks the core while it leads, once per change or timer. Each
//! step is a function here; what a tick decides is the core's.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use super::{
    Cloud, Error, Events, Kube, Operation, Settings, Shutdown, act, check_crds, leader, observe,
    policies, serve, status, stores, throttle, unix_now,
};
use crate::bridge::Bridge;
use crate::capacity::Catalog;
use crate::cloud::CloudProvider;
use crate::cloud::aws::AwsCloud;
use crate::cloud::sim::SimCloud;
use crate::controller::{ClusterPort, Context, Controller, Interruptions};
use crate::metrics::{MeasuredCloud, Metrics};
use crate::policy::{EngineConfig, PolicyEngine, PolicyRegistry};
use crate::scheduling::InstanceTypes;

/// Runs the controller against the cluster `config` points at until `shutdown` is set. Must be
/// called outside a Tokio runtime (it owns one).
///
/// With leader election, every replica keeps its caches warm; only the one holding the Lease
/// decides and writes, and it starts each term afresh (no batch or timer from an earlier term).
/// On shutdown the tick in progress finishes, its deferred writes are made, and the Lease is
/// released so the other replica takes over at once.
pub fn run(config: kube::Config, settings: Settings, shutdown: Shutdown) -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Runtime(e.to_string()))?;
    let handle = rt.handle().clone();
    let bridge = Bridge::on(handle.clone());
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(serve::Health::new(settings.operation.stuck_after));
    serve::start(
        &handle,
        settings.operation.metrics_addr,
        settings.operation.health_addr,
        metrics.clone(),
        health.clone(),
    )?;
    let (client, events_client) = clients(&rt, config, &settings)?;
    bridge.wait(check_crds(&client))?;
    let stores = {
        let _enter = rt.enter();
        stores::start(&client, &settings.policy_config_map_namespaces)
    };
    wait_for_caches(&bridge, &stores, settings.sync_timeout)?;
    health.set_synced(true);
    tracing::info!("caches synced");
    let kube = Kube {
        client: client.clone(),
        rt: bridge.clone(),
        events: Events::start(
            &handle,
            Recorder::new(
                events_client,
                Reporter {
                    controller: "dovetail".into(),
                    instance: Some(settings.instance.clone()),
                },
            ),
            metrics.clone(),
        ),
        metrics: metrics.clone(),
        deleted_claims: Default::default(),
    };
    let mut provider: Box<dyn CloudProvider> = match settings.cloud {
        Cloud::Aws => Box::new(AwsCloud::new(settings.aws.clone())?),
        Cloud::Sim => Box::new(SimCloud::new()),
    };
    let mut cloud = MeasuredCloud {
        inner: provider.as_mut(),
        metrics: &metrics,
    };
    let cloud: &mut dyn CloudProvider = &mut cloud;
    let (zones, its, cat) = instance_types(cloud, &settings.zones)?;
    health.set_cloud(true);
    let capacities = act::capacities(&its);
    let controller = Controller::new(
        settings.core.clone(),
        Context::new(its, cat, policy_registry(&metrics)?),
        unix_now(),
    );
    let mut queue = interruption_queue(&bridge, &settings, &metrics)?;
    let mut leadership = campaign(&bridge, &client, &settings)?;
    let edge = Edge {
        stores: &stores,
        kube: &kube,
        metrics: &metrics,
        health: &health,
        capacities: &capacities,
    };
    let mut term = Term::new(controller);
    let mut loader = policies::PolicyLoader::new(settings.policy_fetch.clone());
    let mut waiting_for: Option<String> = None;
    let mut leading = false;
    tracing::info!(zones = ?zones, "controller started");
    while !shutdown.stopped() {
        let read_ms = super::unix_now_ms();
        let now = read_ms.div_euclid(1000);
        health.beat(now);
        bridge.wait(leadership.look());
        if leadership.leading() != leading {
            leading = !leading;
            metrics.leader.set(i64::from(leading));
            if leading {
                tracing::info!(identity = %settings.instance, "became the leader");
                term = term.next(&settings, &stores, now);
                loader.forget_written();
                // What another leader did meanwhile is in the caches, not here.
                if let Ok(mut d) = kube.deleted_claims.lock() {
                    d.clear();
                }
            } else {
                tracing::warn!(identity = %settings.instance, "lost the leader lease; stopped acting");
            }
        }
        loader.reconcile(&stores, &term.controller.ctx.registry, &kube, leading, now);
        let loading = loader.loading().map(str::to_string);
        if loading != waiting_for {
            if let Some(p) = &loading {
                tracing::info!(policy = %p, "waiting for Policies to load before deciding");
            }
            waiting_for = loading;
        }
        let due = if leading && waiting_for.is_none() {
            let queue = queue.as_mut().map(|q| q as &mut dyn Interruptions);
            term.tick(&edge, cloud, queue, leadership.changes(), now)
        } else {
            None
        };
        let wake = pause(read_ms, due, SystemTime::now());
        sleep_until_change(&bridge, &stores, &leadership, wake);
    }
    tracing::info!("controller stopping");
    drop(queue);
    bridge.wait(leadership.release());
    metrics.leader.set(0);
    rt.shutdown_timeout(Duration::from_secs(5));
    tracing::info!("controller stopped");
    Ok(())
}

/// What a tick reads and writes through, for the whole run.
struct Edge<'a> {
    stores: &'a stores::Stores,
    kube: &'a Kube,
    metrics: &'a Metrics,
    health: &'a serve::Health,
    capacities: &'a act::Capacities,
}

/// One leader's term: the core and what this replica has observed and written for it. A new
/// term starts afresh (no batch, timer or cached write from an earlier one).
struct Term {
    controller: Controller,
    observer: observe::Observer,
    pools: status::PoolStatus,
    classes: status::NodeClasses,
}

impl Term {
    fn new(controller: Controller) -> Term {
        Term {
            controller,
            observer: observe::Observer::default(),
            pools: status::PoolStatus::default(),
            classes: status::NodeClasses::default(),
        }
    }

    /// The term that starts when this replica takes the Lease: the core keeps its context
    /// (catalog, policies) and continues NodeClaim names past the ones that exist.
    fn next(self, settings: &Settings, stores: &stores::Stores, now: i64) -> Term {
        let mut controller =
            Controller::new(settings.core.clone(), self.controller.into_context(), now);
        let claims = stores.node_claims.state();
        controller.continue_names_past(
            claims
                .iter()
                .map(|c| c.metadata.name.as_deref().unwrap_or_default()),
        );
        Term::new(controller)
    }

    /// Observes, lets the core decide and act, and records what the tick wrote. Returns the
    /// core's next timer (Unix milliseconds), if it has one.
    fn tick(
        &mut self,
        edge: &Edge,
        cloud: &mut dyn CloudProvider,
        queue: Option<&mut dyn Interruptions>,
        lease: Option<tokio::sync::watch::Receiver<bool>>,
        now: i64,
    ) -> Option<i64> {
        self.classes.resolve(edge.stores, cloud, edge.kube, now);
        let (cluster, signals, problems) =
            self.observer
                .snapshot(edge.stores, &self.controller.ctx, now);
        self.pools.write(
            &cluster,
            &self.controller.ctx.its,
            &self.controller.ctx.registry,
            &problems,
            edge.kube,
            now,
        );
        let mut port = act::KubePort::new(
            edge.kube,
            edge.stores,
            cluster,
            signals,
            edge.capacities.clone(),
            now,
            lease,
        );
        self.controller.tick(now, &mut port, cloud, queue);
        port.flush();
        // The grace a launch stands in for the cache counts from when its write was made,
        // not from the tick's start: a big batch's tick outlasts the grace by itself.
        let flushed = unix_now();
        for claim in std::mem::take(&mut port.launched) {
            self.observer.launched.insert(claim, flushed);
        }
        for (pod, claim, until) in std::mem::take(&mut port.nominations) {
            self.observer.nominated.insert(pod, (claim, until));
        }
        for s in std::mem::take(&mut self.observer.started) {
            edge.metrics.pods_startup_duration.observe(s.max(0) as f64);
        }
        edge.metrics.observe_cluster(
            ClusterPort::cluster(&port),
            &self.controller.ctx.its,
            &|pod| {
                self.controller
                    .unschedulable_reason(pod)
                    .map(str::to_string)
            },
        );
        if let Some(ok) = port.cloud_reached {
            edge.health.set_cloud(ok);
        }
        self.controller
            .next_wake_ms(ClusterPort::cluster(&port), now)
    }
}

/// The longest the loop sleeps: the clock moves batch windows and liveness along.
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// The pause after a tick whose timer was already due when it read the clock and that it could
/// not act on yet: such a timer does not spin the loop.
const DUE_PAUSE: Duration = Duration::from_millis(250);

/// How long the loop sleeps after a tick that read the clock at `read_ms` and ended at `ended`
/// (Unix milliseconds): until the core's next timer `due` on the clock, not counted from what
/// the tick read. A big batch's tick lasts over a second, and a timer that fell due meanwhile
/// (the batch window of pods that arrived during it) is acted on at once, not a second later.
fn pause(read_ms: i64, due: Option<i64>, ended: SystemTime) -> Duration {
    let until_due = match due {
        None => MAX_PAUSE,
        Some(t) if t <= read_ms => DUE_PAUSE,
        Some(t) => {
            let at = SystemTime::UNIX_EPOCH + Duration::from_millis(t.max(0) as u64);
            at.duration_since(ended).unwrap_or(Duration::ZERO)
        }
    };
    until_due.min(MAX_PAUSE)
}

/// Sleeps until the caches or the Lease change, or `wake` passes.
fn sleep_until_change(
    bridge: &Bridge,
    stores: &stores::Stores,
    leadership: &leader::Leadership,
    wake: Duration,
) {
    let changed = stores.changed.clone();
    let mut lease = leadership.changes();
    bridge.wait(async move {
        let lease_changed = async {
            match lease.as_mut() {
                Some(l) => {
                    // Only a change from now on wakes the loop (a clone has seen nothing).
                    l.borrow_and_update();
                    let _ = l.changed().await;
                }
                None => std::future::pending().await,
            }
        };
        let _ = tokio::time::timeout(wake, async {
            tokio::select! {
                _ = changed.notified() => {},
                _ = lease_changed => {},
            }
        })
        .await;
    });
}

/// The client for the core's reads and writes, and one for Events with its own quarter of the
/// budget: a storm of Events never delays a decision's writes.
fn clients(
    rt: &tokio::runtime::Runtime,
    config: kube::Config,
    settings: &Settings,
) -> Result<(Client, Client), Error> {
    let _enter = rt.enter();
    let events_budget = Operation {
        kube_qps: (settings.operation.kube_qps / 4.0).max(1.0),
        kube_burst: (settings.operation.kube_burst / 4).max(1),
        ..settings.operation.clone()
    };
    let events_client = client(config.clone(), &events_budget, &settings.instance)?;
    let client = client(config, &settings.operation, &settings.instance)?;
    Ok((client, events_client))
}

/// Waits for every cache's first list; a cluster that does not answer within `timeout` is an
/// error that says what to check.
fn wait_for_caches(
    bridge: &Bridge,
    stores: &stores::Stores,
    timeout: Duration,
) -> Result<(), Error> {
    let synced = bridge.wait(async {
        tokio::time::timeout(timeout, async {
            let _ = stores.pods.wait_until_ready().await;
            let _ = stores.nodes.wait_until_ready().await;
            let _ = stores.node_pools.wait_until_ready().await;
            let _ = stores.node_claims.wait_until_ready().await;
            let _ = stores.node_classes.wait_until_ready().await;
            let _ = stores.pdbs.wait_until_ready().await;
            let _ = stores.volume_attachments.wait_until_ready().await;
            let _ = stores.daemonsets.wait_until_ready().await;
            let _ = stores.policies.wait_until_ready().await;
            for s in &stores.policy_config_maps {
                let _ = s.wait_until_ready().await;
            }
        })
        .await
    });
    synced.map_err(|_| Error::NotSynced(timeout))
}

/// The zones to decide for (the cloud's, else the configured ones) and the instance types on
/// offer there: the cloud's catalog, else the embedded one.
fn instance_types(
    cloud: &mut dyn CloudProvider,
    configured: &[String],
) -> Result<(Vec<String>, InstanceTypes, Catalog), Error> {
    let mut zones = cloud.zones();
    if zones.is_empty() {
        zones = configured.to_vec();
    }
    let zone_refs: Vec<&str> = zones.iter().map(String::as_str).collect();
    let (entries, cat) = match cloud.catalog(&zone_refs) {
        Some(found) => found?,
        None => {
            let entries = crate::catalog::embedded();
            let cat = crate::catalog::policy_catalog(&entries, &zone_refs);
            (entries, cat)
        }
    };
    let its = InstanceTypes::new(&entries, &cat);
    Ok((zones, its, cat))
}

/// The policy registry, reporting to `metrics`; a shadow candidate is judged in the
/// background, so a decision never waits for one.
fn policy_registry(metrics: &Arc<Metrics>) -> Result<Arc<PolicyRegistry>, Error> {
    let registry = Arc::new(PolicyRegistry::new(PolicyEngine::new(
        EngineConfig::default(),
    )?));
    registry.observe(metrics.clone());
    registry.judge_shadows_in_background();
    Ok(registry)
}

/// The SQS interruption queue's poller, if one is configured.
fn interruption_queue(
    bridge: &Bridge,
    settings: &Settings,
    metrics: &Arc<Metrics>,
) -> Result<Option<crate::interruption::Poller>, Error> {
    let Some(queue) = &settings.interruption_queue else {
        return Ok(None);
    };
    let sdk = bridge.wait(settings.aws.sdk_config());
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let url = bridge.wait(crate::interruption::queue_url(&sqs, queue))?;
    let mut q = crate::interruption::Queue::new(sqs, &url);
    q.prom = Some(metrics.clone());
    Ok(Some(crate::interruption::Poller::spawn(bridge, q)))
}

/// Joins the election for the Lease, or leads alone (`--leader-elect=false`).
fn campaign(
    bridge: &Bridge,
    client: &Client,
    settings: &Settings,
) -> Result<leader::Leadership, Error> {
    match &settings.operation.leader_election {
        Some(election) => {
            tracing::info!(lease = %election.lease, namespace = %election.namespace, identity = %settings.instance, "campaigning for the leader lease");
            Ok(bridge.wait(leader::Leadership::campaign(
                client.clone(),
                election,
                &settings.instance,
            ))?)
        }
        None => Ok(leader::Leadership::Alone),
    }
}

/// The client: kube's stack behind a buffer, under the client-side rate limit, with a
/// User-Agent naming this replica (so an API server's audit log tells replicas apart).
fn client(
    mut config: kube::Config,
    operation: &Operation,
    instance: &str,
) -> Result<Client, Error> {
    // kube retries a 429 up to 15 times with a backoff that doubles to 1000 s: one eviction a
    // PodDisruptionBudget keeps refusing, or an API server shedding load, would hold the tick
    // for minutes. A refused write is the core's to plan again on its next pass.
    config.default_retry = false;
    let agent = format!("dovetail/{} ({instance})", env!("CARGO_PKG_VERSION"));
    if let Ok(v) = http::HeaderValue::from_str(&agent) {
        config.headers.push((http::header::USER_AGENT, v));
    }
    let bucket = throttle::Bucket::new(operation.kube_qps, operation.kube_burst);
    let client = kube::client::ClientBuilder::try_from(config)?
        .with_layer(&tower::buffer::BufferLayer::new(1024))
        .with_layer(&throttle::Throttle(bucket))
        .build();
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix_millis: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(unix_millis)
    }

    #[test]
    fn a_timer_that_fell_due_during_a_long_tick_is_acted_on_at_once() {
        // The tick read the clock at 53.670 s and ended at 54.100 s; the batch closed at 54.
        assert_eq!(pause(53_670, Some(54_000), at(54_100)), Duration::ZERO);
    }

    #[test]
    fn the_loop_sleeps_until_the_timer_on_the_clock() {
        assert_eq!(
            pause(53_670, Some(54_370), at(54_100)),
            Duration::from_millis(270)
        );
        assert_eq!(pause(10_000, Some(99_000), at(10_010)), MAX_PAUSE);
        assert_eq!(pause(10_000, None, at(10_010)), MAX_PAUSE);
    }

    #[test]
    fn a_timer_due_before_the_tick_that_it_could_not_act_on_does_not_spin_the_loop() {
        assert_eq!(pause(10_000, Some(10_000), at(10_050)), DUE_PAUSE);
        assert_eq!(pause(12_000, Some(10_000), at(12_900)), DUE_PAUSE);
    }
}
