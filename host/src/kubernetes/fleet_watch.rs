//! The fleet of a real cluster, for `dovetail top`: the controller's own reflectors and snapshot
//! ([`super::observe`]) read into a [`FleetView`], with nothing written — it lists and watches,
//! so a read-only kubeconfig is enough and a running controller is never disturbed.

use std::time::Duration;

use kube::ResourceExt;

use super::{Error, observe, stores, unix_now};
use crate::controller::Context;
use crate::fleet::{BoundCache, FleetView};
use crate::policy::{EngineConfig, PolicyEngine, PolicyRegistry};
use crate::scheduling::InstanceTypes;
use crate::scheduling::model::labels;

/// Watches a cluster's nodes, NodeClaims, NodePools and pods.
pub struct FleetWatch {
    rt: crate::bridge::Bridge,
    stores: stores::Stores,
    observer: observe::Observer,
    ctx: Context,
    bounds: BoundCache,
    /// The API server, for the header.
    pub server: String,
}

impl FleetWatch {
    /// Connects, checks the CRDs are installed and waits for the caches (at most `sync_timeout`).
    /// Prices come from the embedded catalog for the zones the nodes are in.
    pub fn connect(config: kube::Config, sync_timeout: Duration) -> Result<Self, Error> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| Error::Runtime(e.to_string()))?;
        let rt = crate::bridge::Bridge::owning(rt);
        let server = config.cluster_url.to_string();
        let client = {
            let _enter = rt.handle().enter();
            kube::Client::try_from(config)?
        };
        rt.wait(super::check_crds(&client))?;
        let stores = {
            let _enter = rt.handle().enter();
            stores::start(&client, &[])
        };
        let synced = rt.wait(async {
            tokio::time::timeout(sync_timeout, async {
                let _ = stores.pods.wait_until_ready().await;
                let _ = stores.nodes.wait_until_ready().await;
                let _ = stores.node_pools.wait_until_ready().await;
                let _ = stores.node_claims.wait_until_ready().await;
                let _ = stores.daemonsets.wait_until_ready().await;
            })
            .await
        });
        if synced.is_err() {
            return Err(Error::NotSynced(sync_timeout));
        }
        let mut zones: Vec<String> = stores
            .nodes
            .state()
            .iter()
            .filter_map(|n| n.labels().get(labels::ZONE).cloned())
            .chain(
                stores
                    .node_claims
                    .state()
                    .iter()
                    .filter_map(|c| c.labels().get(labels::ZONE).cloned()),
            )
            .collect();
        zones.sort();
        zones.dedup();
        if zones.is_empty() {
            zones = vec![
                "us-east-1a".into(),
                "us-east-1b".into(),
                "us-east-1c".into(),
            ];
        }
        let zone_refs: Vec<&str> = zones.iter().map(String::as_str).collect();
        let entries = crate::catalog::embedded();
        let cat = crate::catalog::policy_catalog(&entries, &zone_refs);
        let its = InstanceTypes::new(&entries, &cat);
        let registry = PolicyRegistry::new(PolicyEngine::new(EngineConfig::default())?);
        Ok(FleetWatch {
            rt,
            stores,
            observer: observe::Observer::default(),
            ctx: Context::new(its, cat, std::sync::Arc::new(registry)),
            bounds: BoundCache::default(),
            server,
        })
    }

    /// The fleet now.
    pub fn view(&mut self) -> FleetView {
        let _enter = self.rt.handle().enter();
        let now = unix_now();
        let (cluster, _, _) = self.observer.snapshot(&self.stores, &self.ctx, now);
        let mut fleet = FleetView::of(&cluster, &self.ctx.its, now, &mut self.bounds);
        // Shadow candidates, as the controller reports them on their Policies.
        fleet.shadows = self
            .stores
            .policies
            .state()
            .iter()
            .filter_map(|p| {
                let shadow = p.status.as_ref()?.shadow.as_ref()?;
                Some(shadow.line(&p.name_any()))
            })
            .collect();
        fleet
    }

    /// Waits until something the reflectors hold changes, or `at_most`.
    pub fn wait(&self, at_most: Duration) {
        let changed = self.stores.changed.clone();
        self.rt.wait(async {
            let _ = tokio::time::timeout(at_most, changed.notified()).await;
        });
    }
}
