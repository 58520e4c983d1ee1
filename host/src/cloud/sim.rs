//! The simulated cloud: launches always land unless an offering was made to run out of capacity.

use std::collections::{BTreeMap, HashSet};

use super::{CloudError, CloudProvider, Instance, LaunchRequest};
use crate::capacity::CapacityType;
use crate::scheduling::model::capacity_type_label;

/// An in-memory EC2.
#[derive(Debug, Default)]
pub struct SimCloud {
    next_id: u64,
    /// Offerings that refuse launches: (instance type, zone, capacity type).
    exhausted: HashSet<(String, String, &'static str)>,
    /// Offerings seen refusing, as the unavailable-offerings cache.
    unavailable: HashSet<(String, String, &'static str)>,
    /// Running instances by id.
    pub instances: BTreeMap<String, Instance>,
    /// Launches by claim: a retry of the same claim returns the same instance.
    by_claim: BTreeMap<String, String>,
    /// Instances no claim owned when garbage collection last looked, and since when.
    unowned_since: BTreeMap<String, i64>,
}

impl SimCloud {
    /// An empty cloud.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes an offering refuse launches, like EC2's InsufficientInstanceCapacity.
    pub fn exhaust(&mut self, instance_type: &str, zone: &str, capacity_type: CapacityType) {
        self.exhausted.insert((
            instance_type.into(),
            zone.into(),
            capacity_type_label(capacity_type),
        ));
    }
}

impl CloudProvider for SimCloud {
    fn create(&mut self, request: &LaunchRequest) -> Result<Instance, CloudError> {
        if let Some(id) = self.by_claim.get(&request.claim) {
            return Ok(self.instances[id].clone());
        }
        if request.offers.is_empty() {
            return Err(CloudError::NoOffers {
                claim: request.claim.clone(),
            });
        }
        for offer in &request.offers {
            let key = (
                offer.instance_type.clone(),
                offer.zone.clone(),
                capacity_type_label(offer.capacity_type),
            );
            if self.exhausted.contains(&key) {
                self.unavailable.insert(key);
                continue;
            }
            self.next_id += 1;
            let instance = Instance {
                id: format!("i-{:016x}", self.next_id),
                claim: request.claim.clone(),
                node_pool: request.node_pool.clone(),
                offer: offer.clone(),
            };
            self.by_claim
                .insert(request.claim.clone(), instance.id.clone());
            self.instances.insert(instance.id.clone(), instance.clone());
            return Ok(instance);
        }
        Err(CloudError::InsufficientCapacity {
            claim: request.claim.clone(),
            tried: request.offers.len(),
        })
    }

    fn delete(&mut self, id: &str) -> Result<(), CloudError> {
        if let Some(i) = self.instances.remove(id) {
            self.by_claim.remove(&i.claim);
        }
        Ok(())
    }

    fn exhaust(
        &mut self,
        instance_type: &str,
        zone: &str,
        capacity_type: CapacityType,
    ) -> Result<(), CloudError> {
        SimCloud::exhaust(self, instance_type, zone, capacity_type);
        Ok(())
    }

    fn running(&self) -> Option<Vec<Instance>> {
        Some(self.instances.values().cloned().collect())
    }

    /// An instance no claim owns is terminated once it has been seen unowned for `grace` (the
    /// simulated cloud keeps no launch times; counting from first sight only waits longer).
    fn collect_garbage(
        &mut self,
        claims: &std::collections::HashSet<String>,
        grace: std::time::Duration,
        now: i64,
    ) -> Result<Vec<String>, CloudError> {
        let unowned: Vec<String> = self
            .instances
            .values()
            .filter(|i| !claims.contains(&i.claim))
            .map(|i| i.id.clone())
            .collect();
        self.unowned_since.retain(|id, _| unowned.contains(id));
        let mut gone = Vec::new();
        for id in unowned {
            let since = *self.unowned_since.entry(id.clone()).or_insert(now);
            if now - since >= grace.as_secs() as i64 {
                CloudProvider::delete(self, &id)?;
                self.unowned_since.remove(&id);
                gone.push(id);
            }
        }
        Ok(gone)
    }

    fn vanished(
        &mut self,
        claims: &std::collections::BTreeMap<String, String>,
    ) -> Result<Vec<String>, CloudError> {
        Ok(claims
            .iter()
            .filter(|(_, id)| !self.instances.contains_key(*id))
            .map(|(c, _)| c.clone())
            .collect())
    }

    fn mark_unavailable(&mut self, instance_type: &str, zone: &str, capacity_type: CapacityType) {
        self.unavailable.insert((
            instance_type.into(),
            zone.into(),
            capacity_type_label(capacity_type),
        ));
    }

    fn unavailable(&self, instance_type: &str, zone: &str, capacity_type: CapacityType) -> bool {
        self.unavailable.contains(&(
            instance_type.into(),
            zone.into(),
            capacity_type_label(capacity_type),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::Offer;

    fn offer(t: &str, zone: &str) -> Offer {
        Offer {
            instance_type: t.into(),
            zone: zone.into(),
            capacity_type: CapacityType::Spot,
            price: 0.1,
        }
    }

    #[test]
    fn next_offer_on_capacity_errors_and_retries_are_idempotent() {
        let mut cloud = SimCloud::new();
        cloud.exhaust("m5.large", "a", CapacityType::Spot);
        let req = LaunchRequest {
            claim: "c1".into(),
            node_pool: "p".into(),
            node_class: "default".into(),
            offers: vec![offer("m5.large", "a"), offer("m6i.large", "a")],
        };
        let i = cloud.create(&req).unwrap();
        assert_eq!(i.offer.instance_type, "m6i.large");
        assert!(cloud.unavailable("m5.large", "a", CapacityType::Spot));
        assert_eq!(
            cloud.create(&req).unwrap().id,
            i.id,
            "same claim, same instance"
        );
        assert_eq!(cloud.instances.len(), 1);
        let only_bad = LaunchRequest {
            claim: "c2".into(),
            node_pool: "p".into(),
            node_class: "default".into(),
            offers: vec![offer("m5.large", "a")],
        };
        assert!(matches!(
            cloud.create(&only_bad),
            Err(CloudError::InsufficientCapacity { tried: 1, .. })
        ));
    }
}
