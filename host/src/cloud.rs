//! Where capacity comes from: the [`CloudProvider`] trait and its implementations: `sim` (the
//! simulator's in-memory EC2) and `aws` (EC2 itself).

pub mod aws;
pub mod sim;

use crate::capacity::CapacityType;

/// One way to launch a node, in the order the scoring policy ranked it.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: CapacityType,
    /// USD per hour.
    pub price: f64,
}

/// A request to launch one NodeClaim.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchRequest {
    /// NodeClaim name; also the idempotency key of the launch.
    pub claim: String,
    pub node_pool: String,
    /// The NodePool's EC2NodeClass: what the instance boots with.
    pub node_class: String,
    /// Feasible offers, best first. The provider takes the first it can fulfil.
    pub offers: Vec<Offer>,
}

/// A launched instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// e.g. `i-0000000000000001`, or the cloud's id.
    pub id: String,
    pub claim: String,
    pub node_pool: String,
    pub offer: Offer,
}

/// Cloud errors, each naming what it is about (a NodeClaim, an instance).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CloudError {
    /// Every offer was out of capacity (each is now cached as unavailable).
    #[error("nodeclaim {claim}: insufficient capacity for all {tried} offers")]
    InsufficientCapacity { claim: String, tried: usize },
    /// The request had no offers.
    #[error("nodeclaim {claim}: no offers to launch")]
    NoOffers { claim: String },
    /// The provider cannot launch yet (e.g. its node class did not resolve).
    #[error("nodeclaim {claim}: not ready to launch: {reason}")]
    NotReady { claim: String, reason: String },
    /// The provider cannot start: credentials, region or an endpoint (one actionable line).
    #[error("{0}")]
    Setup(String),
    /// A node class cannot be used; `reason` is its `Ready=False` message.
    #[error("{reason}")]
    NodeClass { class: String, reason: String },
    /// What only another provider can do (a simulated cloud's faults).
    #[error("{0}")]
    Unsupported(&'static str),
    /// A cloud API call failed. `subject` is what it was about (`nodeclaim default-00001`,
    /// `instance i-0123…`), empty for a call about the account (discovery, garbage collection).
    #[error("{}{call}: {message}", if subject.is_empty() { String::new() } else { format!("{subject}: ") })]
    Api {
        subject: String,
        call: &'static str,
        message: String,
    },
}

/// Launches and terminates instances.
pub trait CloudProvider {
    /// Launches the first offer that has capacity. Offers out of capacity are remembered as
    /// unavailable (see [`CloudProvider::unavailable`]).
    fn create(&mut self, request: &LaunchRequest) -> Result<Instance, CloudError>;
    /// Terminates an instance.
    fn delete(&mut self, id: &str) -> Result<(), CloudError>;
    /// Whether an offering is known to be out of capacity (the scheduler leaves it out).
    fn unavailable(&self, instance_type: &str, zone: &str, capacity_type: CapacityType) -> bool;
    /// Leaves an offering out for a while (a spot interruption says its pool is being reclaimed).
    fn mark_unavailable(&mut self, instance_type: &str, zone: &str, capacity_type: CapacityType);
    /// Takes a node class (EC2NodeClass) into use; the error ([`CloudError::NodeClass`]) says
    /// why it is not Ready.
    fn node_class(
        &mut self,
        _name: &str,
        _spec: &crate::api::ec2nodeclass::EC2NodeClassSpec,
    ) -> Result<(), CloudError> {
        Ok(())
    }
    /// Stops using a deleted node class, removing what the provider made for it (the instance
    /// profile of its role).
    fn remove_node_class(&mut self, _name: &str) -> Result<(), CloudError> {
        Ok(())
    }
    /// Removes what the provider made for node classes that are none of `live` (deleted while
    /// no controller ran); returns what it removed.
    fn collect_node_classes(
        &mut self,
        _live: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<String>, CloudError> {
        Ok(Vec::new())
    }
    /// The instance types and offerings this cloud has in `zones`, for decisions; `None` when
    /// the embedded catalog describes it.
    #[allow(clippy::type_complexity)]
    fn catalog(
        &mut self,
        _zones: &[&str],
    ) -> Option<Result<(Vec<crate::catalog::CatalogEntry>, crate::capacity::Catalog), CloudError>>
    {
        None
    }
    /// Of `claims` (NodeClaim → instance id), those whose instance is no longer running —
    /// terminated outside the controller (a console, a spot reclaim we missed).
    fn vanished(
        &mut self,
        _claims: &std::collections::BTreeMap<String, String>,
    ) -> Result<Vec<String>, CloudError> {
        Ok(Vec::new())
    }
    /// The status of a node class taken into use with [`CloudProvider::node_class`]: what it
    /// resolved to. `None` when the cloud has nothing to report beyond Ready.
    fn node_class_status(
        &self,
        _name: &str,
        _now: i64,
    ) -> Option<crate::api::ec2nodeclass::EC2NodeClassStatus> {
        None
    }
    /// Every instance the cloud runs for this cluster, when it can say cheaply (the simulated
    /// cloud; a real account is asked through `collect_garbage` instead).
    fn running(&self) -> Option<Vec<Instance>> {
        None
    }
    /// The zones the node classes in use can launch into (empty: not known).
    fn zones(&self) -> Vec<String> {
        Vec::new()
    }
    /// Terminates this cluster's instances that none of `claims` owns and that are older than
    /// `grace`, and removes what launches no longer use; returns the instances terminated.
    fn collect_garbage(
        &mut self,
        _claims: &std::collections::HashSet<String>,
        _grace: std::time::Duration,
        _now: i64,
    ) -> Result<Vec<String>, CloudError> {
        Ok(Vec::new())
    }
    /// Makes an offering refuse launches: only a simulated cloud can.
    fn exhaust(
        &mut self,
        _instance_type: &str,
        _zone: &str,
        _capacity_type: CapacityType,
    ) -> Result<(), CloudError> {
        Err(CloudError::Unsupported(
            "only the simulated cloud can be made to run out of capacity",
        ))
    }
}
