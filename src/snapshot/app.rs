//! One app's answer plan for the current health: which addresses to answer, and why.

use std::net::IpAddr;

use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::{
    health::state::{HealthTable, TargetState, target_state},
    model::{Fallback, Model, PolicyKind},
};

/// The health of one target as the snapshot saw it.
#[derive(Debug, Clone)]
pub struct TargetStatus {
    /// Index into the model's clusters.
    pub cluster: usize,
    pub state: TargetState,
    pub detail: String,
}

/// Answer records for one app hostname, for the health it was built with.
#[derive(Debug, Clone)]
pub struct AppAnswers {
    pub hostname: Name,
    pub policy: PolicyKind,
    /// A records: IPv4 ingress addresses of the answered targets, with the app's TTL.
    pub a: Vec<Record>,
    /// AAAA records: their IPv6 ingress addresses.
    pub aaaa: Vec<Record>,
    pub targets: Vec<TargetStatus>,
    /// No target is up: the answer comes from the app's fallback.
    pub fallback_active: bool,
}

impl AppAnswers {
    pub fn build(model: &Model, app: usize, table: &HealthTable) -> Self {
        let m = &model.apps[app];
        let targets: Vec<TargetStatus> = (0..m.targets.len())
            .map(|t| {
                let (state, detail) = target_state(model, table, app, t);
                TargetStatus {
                    cluster: m.targets[t].cluster,
                    state,
                    detail,
                }
            })
            .collect();
        let up: Vec<usize> = targets
            .iter()
            .filter(|t| t.state == TargetState::Up)
            .map(|t| t.cluster)
            .collect();
        let fallback_active = up.is_empty();
        let answered: Vec<usize> = if !fallback_active {
            up
        } else {
            match m.fallback {
                // Fail open: a GSLB that answers nothing takes the app down itself.
                Fallback::All => targets
                    .iter()
                    .filter(|t| t.state != TargetState::Drained)
                    .map(|t| t.cluster)
                    .collect(),
                Fallback::None => Vec::new(),
                Fallback::Cluster(c) if !model.clusters[c].drain => vec![c],
                Fallback::Cluster(_) => Vec::new(),
            }
        };
        let mut a: Vec<Record> = Vec::new();
        let mut aaaa: Vec<Record> = Vec::new();
        for c in answered {
            for ip in &model.clusters[c].ingress {
                let (rdata, set) = match ip {
                    IpAddr::V4(v4) => (RData::A((*v4).into()), &mut a),
                    IpAddr::V6(v6) => (RData::AAAA((*v6).into()), &mut aaaa),
                };
                // Two clusters may share an ingress (a shared edge): answer it once.
                if !set.iter().any(|r| r.data == rdata) {
                    set.push(Record::from_rdata(m.hostname.clone(), m.ttl, rdata));
                }
            }
        }
        Self {
            hostname: m.hostname.clone(),
            policy: m.policy,
            a,
            aaaa,
            targets,
            fallback_active,
        }
    }

    /// The app's RRset of `rtype`, empty for types an app does not have.
    pub fn records(&self, rtype: RecordType) -> &[Record] {
        match rtype {
            RecordType::A => &self.a,
            RecordType::AAAA => &self.aaaa,
            _ => &[],
        }
    }
}
