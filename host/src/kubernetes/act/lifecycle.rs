//! The claim lifecycle's writes, as the core asks for them: a registered Node adopted (labels,
//! finalizer, owner reference) and the claim's Registered and Initialized conditions.

use super::*;

/// The Initialized condition's message.
const READY: &str = "node is Ready";

impl KubePort {
    /// The Node gets the claim's labels and annotations, the termination finalizer and an
    /// owner reference to the claim (Karpenter's registration), then the claim is Registered.
    /// The finalizers are written against the version they were read from, so one another
    /// controller added meanwhile is not lost (a 409 is retried next tick, from the cache).
    pub(super) fn adopt(
        &mut self,
        claim: &str,
        node: &str,
        initialized: bool,
    ) -> Result<(), PortError> {
        self.acting()?;
        let c = self
            .claim_store
            .get(&ObjectRef::new(claim))
            .ok_or_else(|| PortError::Failed(format!("NodeClaim {claim} is not in the cache")))?;
        let n = self
            .node_store
            .get(&ObjectRef::new(node))
            .ok_or_else(|| PortError::Failed(format!("Node {node} is not in the cache")))?;
        let mut finalizers = n.finalizers().to_vec();
        if !finalizers.iter().any(|f| f == FINALIZER) {
            finalizers.push(FINALIZER.into());
        }
        let annotations: BTreeMap<&String, &String> = c
            .annotations()
            .iter()
            .filter(|(k, _)| !crate::kubernetes::internal_annotation(k))
            .collect();
        let adopt = json!({"metadata": {
            "resourceVersion": n.resource_version(),
            "labels": c.labels(),
            "annotations": annotations,
            "finalizers": finalizers,
            "ownerReferences": [{
                "apiVersion": "dovetail.sh/v1",
                "kind": "NodeClaim",
                "name": claim,
                "uid": c.metadata.uid.clone().unwrap_or_default(),
                "blockOwnerDeletion": true,
            }],
        }});
        let message = format!("node {node} registered");
        let mut registered = vec![condition(
            "Registered",
            true,
            "Registered",
            &message,
            self.now,
        )];
        if initialized {
            registered.push(condition(
                "Initialized",
                true,
                "Initialized",
                READY,
                self.now,
            ));
        }
        let status = json!({"status": {
            "nodeName": node,
            "conditions": with_conditions(&c, registered),
        }});
        let nodes: Api<KubeNode> = Api::all(self.client.clone());
        let claims = self.claims();
        let (metrics, recorder) = (self.metrics.clone(), self.recorder.clone());
        let (claim, node) = (claim.to_string(), node.to_string());
        let reference = self.claim_ref(&claim);
        self.writes.push(Box::pin(async move {
            let params = PatchParams::default();
            nodes
                .patch(&node, &params, &Patch::Merge(&adopt))
                .await
                .map_err(|e| failed(&metrics, "adopting Node", &node, &e))?;
            claims
                .patch_status(&claim, &params, &Patch::Merge(&status))
                .await
                .map_err(|e| failed(&metrics, "registering NodeClaim", &claim, &e))?;
            recorder.publish(reference.clone(), EventType::Normal, "Registered", message);
            if initialized {
                recorder.publish(reference, EventType::Normal, "Initialized", READY.into());
            }
            tracing::info!(nodeclaim = %claim, node = %node, "registered nodeclaim");
            Ok(())
        }));
        Ok(())
    }

    /// The claim's Initialized condition, with its Event.
    pub(super) fn write_initialized(&mut self, claim: &str) -> Result<(), PortError> {
        self.acting()?;
        let c = self
            .claim_store
            .get(&ObjectRef::new(claim))
            .ok_or_else(|| PortError::Failed(format!("NodeClaim {claim} is not in the cache")))?;
        let status = json!({"status": {
            "conditions": with_conditions(&c, vec![condition("Initialized", true, "Initialized", READY, self.now)]),
        }});
        let claims = self.claims();
        let (metrics, recorder) = (self.metrics.clone(), self.recorder.clone());
        let claim = claim.to_string();
        let reference = self.claim_ref(&claim);
        self.writes.push(Box::pin(async move {
            claims
                .patch_status(&claim, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .map_err(|e| failed(&metrics, "initializing NodeClaim", &claim, &e))?;
            recorder.publish(reference, EventType::Normal, "Initialized", READY.into());
            tracing::info!(nodeclaim = %claim, "initialized nodeclaim");
            Ok(())
        }));
        Ok(())
    }
}

/// The claim's conditions with `new` added (each replacing one of its type): a merge patch
/// replaces the whole list.
fn with_conditions(c: &NodeClaim, new: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = c
        .status
        .as_ref()
        .map(|s| {
            s.conditions
                .iter()
                .filter(|x| !new.iter().any(|n| n["type"] == x.type_.as_str()))
                .map(|x| serde_json::to_value(x).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    out.extend(new);
    out
}
