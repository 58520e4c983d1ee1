//! Leader election: only the replica holding the `coordination.k8s.io/v1` Lease acts; the
//! others keep their caches warm. kube-lease-manager does the Lease protocol (server-side
//! apply, so two replicas can never both take it); this is the controller's view of it.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Error;

/// Where the Lease is and how long it holds.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    pub namespace: String,
    pub lease: String,
    /// A leader that stops renewing loses the Lease after this long (Karpenter's 15 s).
    pub duration: Duration,
}

impl Default for LeaderElection {
    fn default() -> Self {
        LeaderElection {
            namespace: "kube-system".into(),
            lease: "dovetail-leader-election".into(),
            duration: Duration::from_secs(15),
        }
    }
}

/// Whether this replica may act now.
pub enum Leadership {
    /// `--leader-elect=false`: a single replica.
    Alone,
    Elected(Box<Campaign>),
}

/// A replica's campaign for the Lease.
pub struct Campaign {
    state: watch::Receiver<bool>,
    task: JoinHandle<kube_lease_manager::Result<LeaseManager>>,
    leases: Api<Lease>,
    election: LeaderElection,
    identity: String,
    client: Client,
    last_look: Instant,
}

/// How often a follower looks whether the Lease was released (client-go's retry period).
const FOLLOWER_LOOK: Duration = Duration::from_secs(2);

impl Leadership {
    /// Starts campaigning for the Lease on the current runtime as `identity`.
    pub async fn campaign(
        client: Client,
        election: &LeaderElection,
        identity: &str,
    ) -> Result<Leadership, Error> {
        let (state, task) = watch_lease(client.clone(), election, identity).await?;
        Ok(Leadership::Elected(Box::new(Campaign {
            state,
            task,
            leases: Api::namespaced(client.clone(), &election.namespace),
            election: election.clone(),
            identity: identity.to_string(),
            client,
            last_look: Instant::now(),
        })))
    }

    /// Whether this replica holds the Lease at this moment.
    pub fn leading(&self) -> bool {
        match self {
            Leadership::Alone => true,
            Leadership::Elected(c) => *c.state.borrow(),
        }
    }

    /// A receiver of the leadership state (`None` alone), for one tick: the Lease is released
    /// only once every receiver is gone.
    pub fn changes(&self) -> Option<watch::Receiver<bool>> {
        match self {
            Leadership::Alone => None,
            Leadership::Elected(c) => Some(c.state.clone()),
        }
    }

    /// A follower looks, every [`FOLLOWER_LOOK`], whether the leader released the Lease (it
    /// shut down): the Lease manager itself would wait for the old term's expiry, so the
    /// campaign starts over and takes the free Lease at once.
    pub async fn look(&mut self) {
        let Leadership::Elected(c) = self else {
            return;
        };
        if *c.state.borrow() || c.last_look.elapsed() < FOLLOWER_LOOK {
            return;
        }
        c.last_look = Instant::now();
        let free = match c.leases.get_opt(&c.election.lease).await {
            Ok(Some(lease)) => lease
                .spec
                .and_then(|s| s.holder_identity)
                .is_none_or(|h| h.is_empty()),
            Ok(None) => true,
            Err(e) => {
                tracing::debug!(error = %e, "could not read the leader lease");
                false
            }
        };
        if !free {
            return;
        }
        tracing::info!(identity = %c.identity, "the leader lease was released; taking it");
        let (state, task) = match watch_lease(c.client.clone(), &c.election, &c.identity).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "could not campaign again");
                return;
            }
        };
        let old_state = std::mem::replace(&mut c.state, state);
        let old_task = std::mem::replace(&mut c.task, task);
        // The old campaign ends (it held nothing, so it releases nothing).
        drop(old_state);
        let _ = tokio::time::timeout(Duration::from_secs(5), old_task).await;
    }

    /// Gives the Lease up (the other replica takes over at once instead of after expiry).
    pub async fn release(self) {
        if let Leadership::Elected(c) = self {
            let Campaign { state, task, .. } = *c;
            // Closing the channel makes the manager release the Lease and end.
            drop(state);
            match tokio::time::timeout(Duration::from_secs(5), task).await {
                Ok(Ok(Ok(_))) => tracing::info!("leader lease released"),
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "releasing the leader lease failed"),
                Ok(Err(e)) => tracing::warn!(error = %e, "the leader election task failed"),
                Err(_) => tracing::warn!("releasing the leader lease timed out"),
            }
        }
    }
}

async fn watch_lease(
    client: Client,
    election: &LeaderElection,
    identity: &str,
) -> Result<
    (
        watch::Receiver<bool>,
        JoinHandle<kube_lease_manager::Result<LeaseManager>>,
    ),
    Error,
> {
    let duration = election.duration.as_secs().max(2);
    // Renew a third of the duration before expiry: a missed renewal still holds.
    let grace = (duration / 3).max(1);
    let manager = LeaseManagerBuilder::new(client, &election.lease)
        .with_namespace(&election.namespace)
        .with_identity(identity)
        .with_duration(duration)
        .with_grace(grace)
        .build()
        .await
        .map_err(|e| {
            Error::Lease(format!(
                "Lease {}/{}: {e}",
                election.namespace, election.lease
            ))
        })?;
    Ok(manager.watch().await)
}
