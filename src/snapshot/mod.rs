//! The immutable answer plan the DNS handler reads.
//!
//! A [`Snapshot`] is built once from a validated [`Model`] (and later, from health changes)
//! and then only read: the query path takes no lock and re-checks nothing. Everything that
//! can be decided ahead of a query is decided here: zone lookup tables, empty non-terminals,
//! delegation points, negative-answer SOA records with their RFC 2308 TTL, and each app's
//! answer records.

mod zone;

use std::collections::HashMap;

use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use crate::model::{Model, PolicyKind};

pub use zone::{Node, Zone};

/// Counts printed by `gtmd check` and logged at start and reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub zones: usize,
    pub records: usize,
    pub apps: usize,
    pub clusters: usize,
}

/// Answer records for one app hostname.
#[derive(Debug, Clone)]
pub struct AppAnswers {
    pub hostname: Name,
    pub policy: PolicyKind,
    /// A records: the IPv4 ingress addresses of every target cluster, with the app's TTL.
    pub a: Vec<Record>,
    /// AAAA records: the IPv6 ingress addresses.
    pub aaaa: Vec<Record>,
}

impl AppAnswers {
    /// The app's RRset of `rtype`, empty for types an app does not have.
    pub fn records(&self, rtype: RecordType) -> &[Record] {
        match rtype {
            RecordType::A => &self.a,
            RecordType::AAAA => &self.aaaa,
            _ => &[],
        }
    }
}

/// Everything the DNS handler needs, frozen.
#[derive(Debug)]
pub struct Snapshot {
    zones: HashMap<LowerName, Zone>,
    apps: Vec<AppAnswers>,
    /// The largest UDP payload gtmd sends (server.max_udp_payload).
    pub max_udp_payload: u16,
    pub summary: Summary,
}

impl Snapshot {
    /// Builds the snapshot. The model is valid, so this cannot fail.
    pub fn build(model: &Model) -> Self {
        let apps: Vec<AppAnswers> = model.apps.iter().map(|a| app_answers(model, a)).collect();
        let mut zones: HashMap<LowerName, Zone> = model
            .zones
            .iter()
            .map(|z| (LowerName::new(&z.origin), Zone::build(z)))
            .collect();
        for (i, app) in model.apps.iter().enumerate() {
            let origin = LowerName::new(&model.zones[app.zone].origin);
            if let Some(zone) = zones.get_mut(&origin) {
                zone.attach_app(&app.hostname, i);
            }
        }
        let summary = Summary {
            zones: model.zones.len(),
            records: model.zones.iter().map(|z| z.records.len()).sum(),
            apps: model.apps.len(),
            clusters: model.clusters.len(),
        };
        Self {
            zones,
            apps,
            max_udp_payload: model.server.max_udp_payload,
            summary,
        }
    }

    /// The most specific zone holding `name`: the longest configured suffix wins, so nested
    /// zones each answer for their own names.
    pub fn find_zone(&self, name: &LowerName) -> Option<&Zone> {
        let mut candidate = name.clone();
        loop {
            if let Some(zone) = self.zones.get(&candidate) {
                return Some(zone);
            }
            if candidate.is_root() {
                return None;
            }
            candidate = candidate.base_name();
        }
    }

    pub fn app(&self, index: usize) -> &AppAnswers {
        &self.apps[index]
    }
}

fn app_answers(model: &Model, app: &crate::model::AppModel) -> AppAnswers {
    let mut a: Vec<Record> = Vec::new();
    let mut aaaa: Vec<Record> = Vec::new();
    for target in &app.targets {
        for ip in &model.clusters[target.cluster].ingress {
            let rdata = match ip {
                std::net::IpAddr::V4(v4) => RData::A((*v4).into()),
                std::net::IpAddr::V6(v6) => RData::AAAA((*v6).into()),
            };
            let set = if ip.is_ipv4() { &mut a } else { &mut aaaa };
            // Two clusters may share an ingress (a shared edge): answer it once.
            if !set.iter().any(|r| r.data == rdata) {
                set.push(Record::from_rdata(app.hostname.clone(), app.ttl, rdata));
            }
        }
    }
    AppAnswers {
        hostname: app.hostname.clone(),
        policy: app.policy,
        a,
        aaaa,
    }
}
