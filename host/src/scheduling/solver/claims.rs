//! Claims: which pool admits a pod, opening a claim for it, adding a pod to a claim (resources,
//! taints, topology, min values), committing it, and narrowing a claim's types as it fills.

use super::*;

impl<'a> Solver<'a> {
    /// Taints and requirements: can this pool ever take the pod?
    pub(super) fn admits(&self, pool: usize, pod: &PendingPod) -> Result<(), String> {
        let np = &self.pools[pool];
        if let Some(t) = untolerated(&pod.tolerations, &np.taints) {
            return Err(format!(
                "does not tolerate taint {}={}:{:?}",
                t.key, t.value, t.effect
            ));
        }
        let known = crate::scheduling::model::labels::well_known;
        if !pod.node_terms.is_empty()
            && !pod
                .node_terms
                .iter()
                .any(|t| np.requirements.compatible_on_pool(t, known))
        {
            if let Some(k) = np.requirements.undefined_key(&pod.node_terms[0], known) {
                return Err(format!(
                    "it selects the label {k}, which the NodePool does not define (add it to the NodePool's requirements or template labels)"
                ));
            }
            let wanted = pod.node_terms[0].describe();
            return Err(format!(
                "its requirements ({wanted}) conflict with the NodePool's ({})",
                np.requirements.describe()
            ));
        }
        Ok(())
    }

    /// Opens a claim of `pool` for pod `p`, or says why the pool cannot launch one for it.
    pub(super) fn new_claim(&mut self, pool: usize, p: usize) -> Result<(), String> {
        let (requirements, types) = self.claim_types(pool, p)?;
        let np = &self.pools[pool];
        let zones = self.pool_zones[pool] & self.its.zones_admitted_by(&requirements);
        let requests = np.daemonset_overhead;
        let efficient = self.efficient_among(pool, &requirements, &types);
        // Sized for the zones its first pod may pin it to.
        let choices = self
            .zones_on(p, None, zones, self.pool_zones[pool])
            .map_or(zones, |z| self.pin_choices(p, z));
        let mut sized_for = if choices != 0 { choices } else { zones };
        // A pod with zone terms and a choice of zones chooses before the claim is sized.
        let chosen_zone = (sized_for.count_ones() > 1
            && self.terms[p].iter().any(|t| t.key == TopologyKey::Zone))
        .then(|| self.zone_for(pool, None, sized_for, &requirements))
        .flatten();
        if let Some(z) = chosen_zone {
            sized_for = 1 << z;
        }
        let target_type = self.target(pool, p, &types, sized_for, &requirements);
        let types = self.within_target(pool, types, target_type);
        let target = target_type.map(|t| self.pools[pool].allocatable(&self.its.types[t as usize]));
        let c = self.claims.len();
        self.claims.push(Claim {
            planned: PlannedClaim {
                node_pool: pool,
                pods: Vec::new(),
                requests: Resources {
                    pods: requests.pods,
                    ..requests
                },
                requirements,
                instance_types: types,
                zones,
            },
            max_alloc: zero(),
            reserved: (0, 0),
            efficient,
            open: true,
            domain: self.pool_zones[pool],
            target,
            sized: target_type,
            counted: None,
            chosen_zone,
        });
        self.refresh(c);
        match self.try_add(p, c) {
            Ok(()) => {
                self.order[pool].push(c);
                if let Some(t) = target_type {
                    // Counted once the claim exists, in the zones its first pod pinned it to.
                    let claim = &self.claims[c].planned;
                    let (zones, requirements) = (claim.zones, claim.requirements.clone());
                    self.claims[c].counted = self
                        .plan_spot(pool, t, zones, &requirements)
                        .map(|zone| (t, zone));
                }
                Ok(())
            }
            Err(r) => {
                let r = r.to_string();
                let claim = self.claims.pop().expect("just pushed");
                self.headroom[pool].0 = self.headroom[pool].0.saturating_add(claim.reserved.0);
                self.headroom[pool].1 = self.headroom[pool].1.saturating_add(claim.reserved.1);
                Err(r)
            }
        }
    }

    /// A new claim's requirements for pod `p` (the pool's, joined with the pod's first
    /// compatible node term) and the instance types they admit within the pool's limit headroom.
    fn claim_types(&self, pool: usize, p: usize) -> Result<(Requirements, Vec<u32>), String> {
        let np = &self.pools[pool];
        let pod = &self.pods[p];
        let term = pod.node_terms.iter().find(|t| {
            np.requirements
                .compatible_on_pool(t, crate::scheduling::model::labels::well_known)
        });
        let requirements = match term {
            Some(t) => np.requirements.intersection(t),
            None => np.requirements.clone(),
        };
        let types: Vec<u32> = match term {
            Some(_) => self.its.admitted_by(&requirements),
            None => self.pool_types[pool].clone(),
        };
        if types.is_empty() {
            return Err(format!(
                "no instance type satisfies {}",
                requirements.describe()
            ));
        }
        let (cpu_room, mem_room) = self.headroom[pool];
        let types: Vec<u32> = types
            .into_iter()
            .filter(|&t| {
                let ty = &self.its.types[t as usize];
                ty.capacity.0 <= cpu_room && ty.capacity.1 <= mem_room
            })
            .collect();
        if types.is_empty() {
            let mut left = Vec::new();
            if np.limits.cpu_millis.is_some() {
                left.push(format!("cpu {cpu_room}m"));
            }
            if np.limits.memory_bytes.is_some() {
                left.push(format!("memory {}Mi", mem_room >> 20));
            }
            return Err(format!(
                "limits reached ({} left, too little for any instance type)",
                left.join(", ")
            ));
        }
        Ok((requirements, types))
    }

    /// Per type: within the premium cut-off. A pool's plain claims share it claim after claim,
    /// so it is computed once per (requirements, types).
    fn efficient_among(
        &mut self,
        pool: usize,
        requirements: &Requirements,
        types: &[u32],
    ) -> Vec<bool> {
        match self.efficient.get(&pool) {
            Some((r, t, e)) if r == requirements && t == types => e.clone(),
            _ => {
                let e = self.its.efficient(types, requirements, PREMIUM_TOLERANCE);
                self.efficient
                    .insert(pool, (requirements.clone(), types.to_vec(), e.clone()));
                e
            }
        }
    }

    /// Under a limit, a claim's options are no larger than its target on the limited
    /// resources: what it reserves is the size packing chose, not the catalog's largest.
    fn within_target(&self, pool: usize, types: Vec<u32>, target: Option<u32>) -> Vec<u32> {
        let np = &self.pools[pool];
        match target {
            Some(t) if np.limits.cpu_millis.is_some() || np.limits.memory_bytes.is_some() => {
                let cap = self.its.types[t as usize].capacity;
                types
                    .into_iter()
                    .filter(|&u| {
                        let c = self.its.types[u as usize].capacity;
                        (np.limits.cpu_millis.is_none() || c.0 <= cap.0)
                            && (np.limits.memory_bytes.is_none() || c.1 <= cap.1)
                    })
                    .collect()
            }
            _ => types,
        }
    }

    /// Adds pod `p` to claim `c` if everything still holds; otherwise leaves `c` untouched.
    pub(super) fn try_add(&mut self, p: usize, c: usize) -> Result<(), Reject> {
        let pod = &self.pods[p];
        let claim = &self.claims[c];
        let requests = add(&claim.planned.requests, &pod.requests);
        if !fits(&requests, &claim.max_alloc) {
            return Err(Reject::TooBig(requests));
        }
        if let Some(node) = self.existing_node(c) {
            if untolerated(&pod.tolerations, &node.taints).is_some() {
                return Err(Reject::Requirements);
            }
            if !pod.node_terms.is_empty()
                && !pod.node_terms.iter().any(|t| t.matches(|k| node.label(k)))
            {
                return Err(Reject::Requirements);
            }
            let zones = self.allowed_zones(p, c)?;
            if zones & claim.planned.zones == 0 {
                return Err(Reject::Topology("zone"));
            }
            self.commit(p, c, requests);
            return Ok(());
        }
        // Node requirements: the first term compatible with the claim.
        let mut requirements = None;
        if !pod.node_terms.is_empty() {
            let term = pod
                .node_terms
                .iter()
                .find(|t| {
                    claim
                        .planned
                        .requirements
                        .compatible_on_pool(t, crate::scheduling::model::labels::well_known)
                })
                .ok_or(Reject::Requirements)?;
            requirements = Some(claim.planned.requirements.intersection(term));
        }
        let mut zones = self.allowed_zones(p, c)?;
        if let Some(r) = &requirements {
            // A zone the pod's terms (nodeSelector, affinity, its volumes) name narrows the claim.
            zones &= self.its.zones_admitted_by(r);
            if zones == 0 {
                return Err(Reject::Requirements);
            }
        }
        let has_zone_terms = self.terms[p].iter().any(|t| t.key == TopologyKey::Zone);
        let pin = if has_zone_terms {
            // A zone the claim's types have no allowed offering in is no choice.
            let mut choices = self.pin_choices(p, zones);
            if choices.count_ones() > 1 {
                let offered = choices & self.offered_zones(c, requirements.as_ref());
                if offered != 0 {
                    choices = offered;
                }
            }
            let prefer = claim.chosen_zone.or_else(|| {
                let reqs = requirements.as_ref().unwrap_or(&claim.planned.requirements);
                (choices.count_ones() > 1)
                    .then(|| self.zone_for(claim.planned.node_pool, claim.sized, choices, reqs))
                    .flatten()
            });
            self.pin_zone(choices, zones, prefer)
        } else {
            zones
        };
        let its = self.its;
        let pool = &self.pools[claim.planned.node_pool];
        let capacity = requirements
            .as_ref()
            .unwrap_or(&claim.planned.requirements)
            .get(crate::scheduling::model::labels::CAPACITY_TYPE);
        let types: Vec<u32> = claim
            .planned
            .instance_types
            .iter()
            .copied()
            .filter(|&t| {
                let ty = &its.types[t as usize];
                fits(&requests, &pool.allocatable(ty))
                    && requirements.as_ref().is_none_or(|r| its.type_matches(t, r))
                    && ty.offerings.iter().any(|o| {
                        o.available
                            && pin & (1 << o.zone) != 0
                            && capacity.is_none_or(|a| {
                                a.allows(Some(capacity_type_label(o.capacity_type)))
                            })
                    })
            })
            .collect();
        if types.is_empty() {
            return Err(Reject::NoType(requests));
        }
        if let Some(key) = self.short_of_min_values(claim.planned.node_pool, &types) {
            return Err(Reject::MinValues(key));
        }
        if !claim.planned.pods.is_empty() && !types.iter().any(|&t| claim.efficient[t as usize]) {
            return Err(Reject::Premium);
        }
        if claim.counted.is_some() && claim.planned.zones.count_ones() > 1 {
            let reqs = requirements
                .clone()
                .unwrap_or_else(|| claim.planned.requirements.clone());
            self.recount(c, pin, &reqs);
        }
        self.count_pinned_pods(c, pin);
        let claim = &mut self.claims[c];
        claim.planned.instance_types = types;
        claim.planned.zones = pin;
        if let Some(r) = requirements {
            claim.planned.requirements = r;
        }
        self.commit(p, c, requests);
        Ok(())
    }

    /// The zones where claim `c`'s types have an offering its requirements (or `narrowed`)
    /// allow.
    fn offered_zones(&self, c: usize, narrowed: Option<&Requirements>) -> u64 {
        let claim = &self.claims[c];
        let reqs = narrowed.unwrap_or(&claim.planned.requirements);
        let capacity = reqs.get(crate::scheduling::model::labels::CAPACITY_TYPE);
        let mut zones = 0u64;
        for &t in &claim.planned.instance_types {
            for o in &self.its.types[t as usize].offerings {
                if o.available
                    && capacity.is_none_or(|a| a.allows(Some(capacity_type_label(o.capacity_type))))
                {
                    zones |= 1 << o.zone;
                }
            }
            if zones & claim.planned.zones == claim.planned.zones {
                break;
            }
        }
        zones
    }

    /// A claim that several zones allowed and a pod now pins to one: the pods already on it
    /// count in that zone for the selectors they match (a spread's skew, an affinity group's
    /// zone), as a pod placed on a pinned claim does.
    fn count_pinned_pods(&mut self, c: usize, pin: u64) {
        if self.claims[c].planned.zones.count_ones() == 1 || pin.count_ones() != 1 {
            return;
        }
        let z = pin.trailing_zeros() as usize;
        for &q in &self.claims[c].planned.pods {
            for &s in &self.matches[q] {
                self.zone_counts[s as usize][z] += 1;
            }
        }
    }

    /// Puts pod `p` on claim `c` (whose types and zones already allow it) and counts it.
    pub(super) fn commit(&mut self, p: usize, c: usize, requests: Resources) {
        let claim = &mut self.claims[c];
        claim.planned.requests = requests;
        claim.planned.pods.push(p);
        let pin = claim.planned.zones;
        self.refresh(c);
        let single_zone = (pin.count_ones() == 1).then(|| pin.trailing_zeros() as usize);
        for &s in &self.matches[p] {
            self.placed[s as usize] += 1;
            *self.host_counts.entry((s, c)).or_default() += 1;
            if let Some(z) = single_zone {
                self.zone_counts[s as usize][z] += 1;
            }
        }
        for t in self.terms[p]
            .iter()
            .filter(|t| t.kind == TermKind::AntiAffinity)
        {
            match t.key {
                TopologyKey::Hostname => {
                    self.repel_host.insert((t.selector, c));
                }
                TopologyKey::Zone => {
                    if let Some(z) = single_zone {
                        self.repel_zone[t.selector as usize] |= 1 << z;
                    }
                }
            }
        }
    }

    /// The first `minValues` key of the pool that `types` no longer meet (keys a type does not
    /// answer, like zone, are met by the offerings and not checked here).
    pub(super) fn short_of_min_values(&self, pool: usize, types: &[u32]) -> Option<&'static str> {
        for (key, n) in &self.pools[pool].min_values {
            let Some(&k) = crate::scheduling::model::labels::TYPE_KEYS
                .iter()
                .find(|&&k| k == key)
            else {
                continue;
            };
            let distinct: HashSet<&str> =
                types.iter().filter_map(|&t| self.its.label(t, k)).collect();
            if distinct.len() < *n {
                return Some(k);
            }
        }
        None
    }

    /// Recomputes a claim's quick-fit bound and limit reservation after its types changed.
    pub(super) fn refresh(&mut self, c: usize) {
        if c < self.existing_of.len() {
            let claim = &mut self.claims[c];
            let (r, s, max) = (&claim.planned.requests, &self.smallest, &claim.max_alloc);
            claim.open = r.cpu_millis.saturating_add(s.cpu_millis) <= max.cpu_millis
                && r.memory_bytes.saturating_add(s.memory_bytes) <= max.memory_bytes
                && r.pods < max.pods;
            return;
        }
        let claim = &mut self.claims[c];
        let pool = claim.planned.node_pool;
        let efficient = &claim.efficient;
        let grow_only_efficient = !claim.planned.pods.is_empty();
        let mut max = zero();
        let mut cap = (0u64, 0u64);
        for &t in &claim.planned.instance_types {
            let ty = &self.its.types[t as usize];
            cap = (cap.0.max(ty.capacity.0), cap.1.max(ty.capacity.1));
            if grow_only_efficient && !efficient[t as usize] {
                continue;
            }
            let a = &self.pools[pool].allocatable(ty);
            max.cpu_millis = max.cpu_millis.max(a.cpu_millis);
            max.memory_bytes = max.memory_bytes.max(a.memory_bytes);
            max.ephemeral_storage_bytes =
                max.ephemeral_storage_bytes.max(a.ephemeral_storage_bytes);
            max.pods = max.pods.max(a.pods);
            max.gpus = max.gpus.max(a.gpus);
        }
        if let Some(t) = &claim.target {
            max.cpu_millis = max.cpu_millis.min(t.cpu_millis);
            max.memory_bytes = max.memory_bytes.min(t.memory_bytes);
            max.pods = max.pods.min(t.pods);
        }
        claim.max_alloc = max;
        let (old_cpu, old_mem) = claim.reserved;
        claim.reserved = cap;
        let h = &mut self.headroom[pool];
        h.0 = h.0.saturating_add(old_cpu).saturating_sub(cap.0);
        h.1 = h.1.saturating_add(old_mem).saturating_sub(cap.1);
        let r = &claim.planned.requests;
        let s = &self.smallest;
        claim.open = r.cpu_millis.saturating_add(s.cpu_millis) <= max.cpu_millis
            && r.memory_bytes.saturating_add(s.memory_bytes) <= max.memory_bytes
            && r.pods < max.pods;
    }
}
