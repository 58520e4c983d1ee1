//! The host's types into the WIT interface's records, and back: the one place a new WIT version
//! meets the rest of the host (as Zed's extension host converts at its boundary). Each
//! conversion is field by field, so a field added to either side fails to compile here.

use super::types as wit;
use crate::capacity::{self, Arch, CapacityType, CpuManufacturer, Resources, claim};
use crate::cluster::DisruptionReason;
use crate::cluster::consolidation as moves;

impl From<Resources> for wit::Resources {
    fn from(r: Resources) -> Self {
        let Resources {
            cpu_millis,
            memory_bytes,
            ephemeral_storage_bytes,
            pods,
            gpus,
        } = r;
        wit::Resources {
            cpu_millis,
            memory_bytes,
            ephemeral_storage_bytes,
            pods,
            gpus,
        }
    }
}

impl From<wit::Resources> for Resources {
    fn from(r: wit::Resources) -> Self {
        let wit::Resources {
            cpu_millis,
            memory_bytes,
            ephemeral_storage_bytes,
            pods,
            gpus,
        } = r;
        Resources {
            cpu_millis,
            memory_bytes,
            ephemeral_storage_bytes,
            pods,
            gpus,
        }
    }
}

impl From<Arch> for wit::Arch {
    fn from(a: Arch) -> Self {
        match a {
            Arch::Amd64 => wit::Arch::Amd64,
            Arch::Arm64 => wit::Arch::Arm64,
        }
    }
}

impl From<wit::Arch> for Arch {
    fn from(a: wit::Arch) -> Self {
        match a {
            wit::Arch::Amd64 => Arch::Amd64,
            wit::Arch::Arm64 => Arch::Arm64,
        }
    }
}

impl From<CapacityType> for wit::CapacityType {
    fn from(c: CapacityType) -> Self {
        match c {
            CapacityType::Spot => wit::CapacityType::Spot,
            CapacityType::OnDemand => wit::CapacityType::OnDemand,
            CapacityType::Reserved => wit::CapacityType::Reserved,
        }
    }
}

impl From<wit::CapacityType> for CapacityType {
    fn from(c: wit::CapacityType) -> Self {
        match c {
            wit::CapacityType::Spot => CapacityType::Spot,
            wit::CapacityType::OnDemand => CapacityType::OnDemand,
            wit::CapacityType::Reserved => CapacityType::Reserved,
        }
    }
}

impl From<CpuManufacturer> for wit::CpuManufacturer {
    fn from(c: CpuManufacturer) -> Self {
        match c {
            CpuManufacturer::Intel => wit::CpuManufacturer::Intel,
            CpuManufacturer::Amd => wit::CpuManufacturer::Amd,
            CpuManufacturer::Aws => wit::CpuManufacturer::Aws,
            CpuManufacturer::Other => wit::CpuManufacturer::Other,
        }
    }
}

impl From<DisruptionReason> for wit::DisruptionReason {
    fn from(r: DisruptionReason) -> Self {
        match r {
            DisruptionReason::Empty => wit::DisruptionReason::Empty,
            DisruptionReason::Underutilized => wit::DisruptionReason::Underutilized,
            DisruptionReason::Drifted => wit::DisruptionReason::Drifted,
            DisruptionReason::Expired => wit::DisruptionReason::Expired,
        }
    }
}

impl From<wit::DisruptionReason> for DisruptionReason {
    fn from(r: wit::DisruptionReason) -> Self {
        match r {
            wit::DisruptionReason::Empty => DisruptionReason::Empty,
            wit::DisruptionReason::Underutilized => DisruptionReason::Underutilized,
            wit::DisruptionReason::Drifted => DisruptionReason::Drifted,
            wit::DisruptionReason::Expired => DisruptionReason::Expired,
        }
    }
}

impl From<&capacity::Offering> for wit::Offering {
    fn from(o: &capacity::Offering) -> Self {
        let capacity::Offering {
            zone,
            capacity_type,
            price,
            interruption_rate,
            capacity_score,
        } = *o;
        wit::Offering {
            zone,
            capacity_type: capacity_type.into(),
            price,
            interruption_rate,
            capacity_score,
        }
    }
}

impl From<&capacity::InstanceType> for wit::InstanceType {
    fn from(t: &capacity::InstanceType) -> Self {
        let capacity::InstanceType {
            name,
            arch,
            cpu_manufacturer,
            vcpus,
            memory_mib,
            allocatable,
            gpu_name,
            offerings,
        } = t;
        wit::InstanceType {
            name: name.clone(),
            arch: (*arch).into(),
            cpu_manufacturer: (*cpu_manufacturer).into(),
            vcpus: *vcpus,
            memory_mib: *memory_mib,
            allocatable: (*allocatable).into(),
            gpu_name: gpu_name.clone(),
            offerings: offerings.iter().map(Into::into).collect(),
        }
    }
}

impl From<&capacity::Catalog> for wit::Catalog {
    fn from(c: &capacity::Catalog) -> Self {
        wit::Catalog {
            zones: c.zones.clone(),
            instance_types: c.instance_types.iter().map(Into::into).collect(),
        }
    }
}

/// By value: a round's claims are handed over once, their strings moved, not copied.
impl From<claim::Claim> for wit::Claim {
    fn from(c: claim::Claim) -> Self {
        let claim::Claim {
            node_pool,
            workloads,
            pods,
            requests,
            options,
        } = c;
        wit::Claim {
            node_pool,
            workloads: workloads
                .into_iter()
                .map(|w| {
                    let claim::Workload {
                        namespace,
                        owner,
                        labels,
                    } = w;
                    wit::Workload {
                        namespace,
                        owner,
                        labels,
                    }
                })
                .collect(),
            pods: pods
                .into_iter()
                .map(|p| {
                    let claim::Pod {
                        workload,
                        requests,
                        priority,
                    } = p;
                    wit::Pod {
                        workload,
                        requests: requests.into(),
                        priority,
                    }
                })
                .collect(),
            requests: requests.into(),
            options,
        }
    }
}

/// A policy's answer, by value.
impl From<wit::ClaimScores> for claim::ClaimScores {
    fn from(s: wit::ClaimScores) -> Self {
        let wit::ClaimScores { scores, vetoes } = s;
        claim::ClaimScores {
            scores,
            vetoes: vetoes
                .into_iter()
                .map(|v| {
                    let wit::Veto {
                        option_index,
                        reason,
                    } = v;
                    claim::Veto {
                        option_index,
                        reason,
                    }
                })
                .collect(),
        }
    }
}

impl From<&moves::Candidate> for wit::Candidate {
    fn from(c: &moves::Candidate) -> Self {
        let moves::Candidate {
            name,
            node_pool,
            instance_type,
            capacity_type,
            zone,
            price,
            age_seconds,
            allocatable,
            requested,
            pods,
            reasons,
        } = c;
        wit::Candidate {
            name: name.clone(),
            node_pool: node_pool.clone(),
            instance_type: instance_type.clone(),
            capacity_type: (*capacity_type).into(),
            zone: zone.clone(),
            price: *price,
            age_seconds: *age_seconds,
            allocatable: (*allocatable).into(),
            requested: (*requested).into(),
            pods: *pods,
            reasons: reasons.iter().map(|&r| r.into()).collect(),
        }
    }
}

impl From<&moves::Replacement> for wit::Replacement {
    fn from(r: &moves::Replacement) -> Self {
        let moves::Replacement {
            instance_type,
            capacity_type,
            zone,
            price,
        } = r;
        wit::Replacement {
            instance_type: instance_type.clone(),
            capacity_type: (*capacity_type).into(),
            zone: zone.clone(),
            price: *price,
        }
    }
}

impl From<&moves::Move> for wit::Move {
    fn from(m: &moves::Move) -> Self {
        let moves::Move {
            nodes,
            replacement,
            savings_per_hour,
            disruption_cost,
            reason,
        } = m;
        wit::Move {
            nodes: nodes.clone(),
            replacement: replacement.as_ref().map(Into::into),
            savings_per_hour: *savings_per_hour,
            disruption_cost: *disruption_cost,
            reason: (*reason).into(),
        }
    }
}

/// A round is lent to every policy that judges it (the serving one, a fallback, a shadow), so
/// it converts by reference: one copy per call, small beside the simulations that found it.
impl From<&moves::ConsolidationRound> for wit::ConsolidationRound {
    fn from(r: &moves::ConsolidationRound) -> Self {
        let moves::ConsolidationRound {
            now,
            candidates,
            moves,
        } = r;
        wit::ConsolidationRound {
            now: *now,
            candidates: candidates.iter().map(Into::into).collect(),
            moves: moves.iter().map(Into::into).collect(),
        }
    }
}

impl From<wit::Action> for moves::Action {
    fn from(a: wit::Action) -> Self {
        match a {
            wit::Action::Execute(i) => moves::Action::Execute(i),
            wit::Action::Keep(wit::Kept { move_index, reason }) => {
                moves::Action::Keep(moves::Kept { move_index, reason })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_and_capacity_type_round_trips() {
        use DisruptionReason as R;
        for r in [R::Empty, R::Underutilized, R::Drifted, R::Expired] {
            assert_eq!(DisruptionReason::from(wit::DisruptionReason::from(r)), r);
        }
        for c in [
            CapacityType::Spot,
            CapacityType::OnDemand,
            CapacityType::Reserved,
        ] {
            assert_eq!(CapacityType::from(wit::CapacityType::from(c)), c);
        }
        let r = Resources {
            cpu_millis: 1,
            memory_bytes: 2,
            ephemeral_storage_bytes: 3,
            pods: 4,
            gpus: 5,
        };
        assert_eq!(Resources::from(wit::Resources::from(r)), r);
    }

    #[test]
    fn a_catalog_converts_field_by_field() {
        let host = crate::catalog::policy_catalog(&crate::catalog::embedded(), &["a", "b"]);
        let guest = wit::Catalog::from(&host);
        assert_eq!(guest.zones, host.zones);
        assert_eq!(guest.instance_types.len(), host.instance_types.len());
        for (g, h) in guest.instance_types.iter().zip(&host.instance_types) {
            assert_eq!(g.name, h.name);
            assert_eq!((g.vcpus, g.memory_mib), (h.vcpus, h.memory_mib));
            assert_eq!(Resources::from(g.allocatable), h.allocatable);
            assert_eq!(g.gpu_name, h.gpu_name);
            assert_eq!(g.offerings.len(), h.offerings.len());
            for (go, ho) in g.offerings.iter().zip(&h.offerings) {
                assert_eq!((go.zone, go.price), (ho.zone, ho.price));
                assert_eq!(CapacityType::from(go.capacity_type), ho.capacity_type);
            }
        }
    }
}
