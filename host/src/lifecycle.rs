//! The NodeClaim lifecycle after launch, as Karpenter's `nodeclaim/lifecycle` controller runs it:
//! **Registered** once a Node with the claim's providerID exists (the Node is then adopted: the
//! claim's labels, the termination finalizer, an owner reference), **Initialized** once that Node
//! is Ready with the claim's startup taints gone, and **liveness**: a claim whose Node has not
//! registered within the registration TTL is deleted with its instance, so capacity that will
//! never join (a node role the cluster refuses, subnets that cannot reach the API server) is not
//! paid for and its pods are provisioned again.
//!
//! Decided here from the snapshot, for both worlds: the Kubernetes world reads the conditions and
//! the Node objects, the simulator's kubelet registers its nodes; each only carries the steps out.

use std::time::Duration;

use crate::cluster::Cluster;

/// Karpenter's registration TTL: how long a launched claim may wait for its Node.
pub const REGISTRATION_TTL: Duration = Duration::from_secs(15 * 60);

/// One thing to do to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Its Node registered: adopt the Node and set the claim's Registered condition — and
    /// Initialized with it when the Node is Ready already (one write, not two).
    Register {
        claim: String,
        node: String,
        initialized: bool,
    },
    /// Its Node is Ready and the startup taints are gone: set Initialized.
    Initialize { claim: String },
    /// No Node within the TTL: terminate the instance and delete the claim.
    NeverJoined {
        claim: String,
        instance: String,
        /// How long it waited (seconds).
        waited: i64,
    },
}

/// The steps due now, in claim order. A claim being deleted is left to termination; a Node being
/// deleted is not adopted (a finalizer would hold it).
pub fn decide(cluster: &Cluster, ttl: Duration, now: i64) -> Vec<Step> {
    let mut steps = Vec::new();
    for n in cluster.nodes.values() {
        if n.deletion.is_some() {
            continue;
        }
        let l = &n.lifecycle;
        let waited = now - l.launched.unwrap_or(n.launched_at);
        match &l.joined {
            // Never joined (a claim registered before lost its Node by hand, not by a launch
            // that failed).
            None if !l.registered && waited > ttl.as_secs() as i64 => {
                steps.push(Step::NeverJoined {
                    claim: n.name.clone(),
                    instance: n.instance.id.clone(),
                    waited,
                });
            }
            Some(j) if !l.registered && !j.deleting => steps.push(Step::Register {
                claim: n.name.clone(),
                node: j.node.clone(),
                initialized: j.ready && !j.startup_taints_left,
            }),
            Some(j) if l.registered && !l.initialized && j.ready && !j.startup_taints_left => steps
                .push(Step::Initialize {
                    claim: n.name.clone(),
                }),
            _ => {}
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Deletion, Joined, Lifecycle};

    fn cluster(lifecycles: &[(&str, i64, Lifecycle)]) -> Cluster {
        let mut c = Cluster::default();
        for (name, launched_at, l) in lifecycles {
            let mut n = crate::cluster::Node::example(name);
            n.launched_at = *launched_at;
            n.lifecycle = l.clone();
            c.nodes.insert(name.to_string(), n);
        }
        c
    }

    fn joined(ready: bool, startup_taints_left: bool) -> Option<Joined> {
        Some(Joined {
            node: "ip-10-0-0-1.ec2.internal".into(),
            ready,
            startup_taints_left,
            deleting: false,
        })
    }

    #[test]
    fn a_claim_is_registered_then_initialized_as_its_node_comes_up() {
        let ttl = REGISTRATION_TTL;
        let waiting = Lifecycle::default();
        assert!(decide(&cluster(&[("a", 0, waiting)]), ttl, 60).is_empty());
        let up = Lifecycle {
            joined: joined(false, false),
            ..Default::default()
        };
        assert_eq!(
            decide(&cluster(&[("a", 0, up)]), ttl, 60),
            vec![Step::Register {
                claim: "a".into(),
                node: "ip-10-0-0-1.ec2.internal".into(),
                initialized: false,
            }]
        );
        // Ready by the time it is seen: registered and initialized at once.
        let ready = Lifecycle {
            joined: joined(true, false),
            ..Default::default()
        };
        assert_eq!(
            decide(&cluster(&[("a", 0, ready)]), ttl, 60),
            vec![Step::Register {
                claim: "a".into(),
                node: "ip-10-0-0-1.ec2.internal".into(),
                initialized: true,
            }]
        );
        // A startup taint still on it: registered only.
        let tainted = Lifecycle {
            joined: joined(true, true),
            ..Default::default()
        };
        assert!(matches!(
            decide(&cluster(&[("a", 0, tainted)]), ttl, 60)[..],
            [Step::Register {
                initialized: false,
                ..
            }]
        ));
        let registered = |ready, tainted| Lifecycle {
            joined: joined(ready, tainted),
            registered: true,
            ..Default::default()
        };
        // Not Ready, or Ready with a startup taint left: not yet.
        assert!(decide(&cluster(&[("a", 0, registered(false, false))]), ttl, 60).is_empty());
        assert!(decide(&cluster(&[("a", 0, registered(true, true))]), ttl, 60).is_empty());
        assert_eq!(
            decide(&cluster(&[("a", 0, registered(true, false))]), ttl, 60),
            vec![Step::Initialize { claim: "a".into() }]
        );
        let done = Lifecycle {
            initialized: true,
            ..registered(true, false)
        };
        assert!(decide(&cluster(&[("a", 0, done)]), ttl, 60).is_empty());
    }

    #[test]
    fn a_claim_whose_node_never_registers_goes_after_the_ttl_and_not_before() {
        let ttl = Duration::from_secs(900);
        let c = cluster(&[("a", 100, Lifecycle::default())]);
        assert!(
            decide(&c, ttl, 1000).is_empty(),
            "at the TTL it may still come"
        );
        assert_eq!(
            decide(&c, ttl, 1001),
            vec![Step::NeverJoined {
                claim: "a".into(),
                instance: "i-a".into(),
                waited: 901
            }]
        );
        // A claim registered before (its Node since deleted by hand) is not a launch that failed.
        let c = cluster(&[(
            "a",
            100,
            Lifecycle {
                registered: true,
                ..Default::default()
            },
        )]);
        assert!(decide(&c, ttl, 5000).is_empty());
        // A launch recorded long after the claim was made (resumed after an outage) has its
        // whole TTL from the launch.
        let c = cluster(&[(
            "a",
            100,
            Lifecycle {
                launched: Some(3000),
                ..Default::default()
            },
        )]);
        assert!(decide(&c, ttl, 3900).is_empty());
        assert_eq!(decide(&c, ttl, 3901).len(), 1);
    }

    #[test]
    fn claims_and_nodes_going_away_are_left_alone() {
        let ttl = Duration::from_secs(900);
        let mut c = cluster(&[("a", 0, Lifecycle::default())]);
        c.nodes.get_mut("a").unwrap().deletion = Some(Deletion {
            reason: None,
            since: 10,
            replacement: None,
            policy: None,
        });
        assert!(decide(&c, ttl, 5000).is_empty());
        let mut j = joined(true, false);
        j.as_mut().unwrap().deleting = true;
        let c = cluster(&[(
            "a",
            0,
            Lifecycle {
                joined: j,
                ..Default::default()
            },
        )]);
        assert!(
            decide(&c, ttl, 60).is_empty(),
            "a Node being deleted is not adopted"
        );
    }
}
