//! The immutable answer plan the DNS handler reads.
//!
//! A [`Snapshot`] is built once from a validated [`Model`] (and later, from health changes)
//! and then only read: the query path takes no lock and re-checks nothing. Everything that
//! can be decided ahead of a query is decided here: zone lookup tables, empty non-terminals,
//! delegation points, negative-answer SOA records with their RFC 2308 TTL, and each app's
//! answer records.

mod app;
mod zone;

use std::{collections::HashMap, sync::Arc};

use hickory_proto::rr::LowerName;

use crate::{
    health::state::{HealthTable, Verdicts},
    metrics::Metrics,
    model::Model,
};

pub use app::{AppAnswer, AppAnswers, FamilyPlan, TargetAnswers};

/// How clients are identified, from `[geo]`.
#[derive(Debug, Clone, Default)]
pub struct ClientSettings {
    pub geo: Arc<crate::geo::Geo>,
    pub ignore_ecs: bool,
    pub ecs_trusted: Option<Vec<ipnet::IpNet>>,
}
pub use zone::{Node, Zone};

/// Counts printed by `gtmd check` and logged at start and reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub zones: usize,
    pub records: usize,
    pub apps: usize,
    pub clusters: usize,
}

/// Everything the DNS handler needs, frozen.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Shared between snapshots that differ only in health.
    zones: Arc<HashMap<LowerName, Zone>>,
    apps: Vec<Arc<AppAnswers>>,
    /// The largest UDP payload gtmd sends (server.max_udp_payload).
    pub max_udp_payload: u16,
    pub clients: ClientSettings,
    pub summary: Summary,
    /// The fast path's index (static answers don't change with health: shared).
    pub fast: Arc<crate::dns::fast::FastIndex>,
    /// The model this snapshot was built from: readers that need config details (status,
    /// explain) take them from here, so they always match the answers.
    pub model: Arc<Model>,
}

impl Snapshot {
    /// Builds the snapshot for `health`. The model is valid, so this cannot fail.
    pub fn build(model: &Arc<Model>, health: &impl Verdicts, metrics: &Metrics) -> Self {
        let apps: Vec<Arc<AppAnswers>> = (0..model.apps.len())
            .map(|a| Arc::new(AppAnswers::build(model, a, health, metrics)))
            .collect();
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
        let mut snapshot = Self {
            fast: Arc::default(),
            zones: Arc::new(zones),
            apps,
            model: model.clone(),
            max_udp_payload: model.server.max_udp_payload,
            clients: ClientSettings {
                geo: model.geo.geo.clone(),
                ignore_ecs: model.geo.ignore_ecs,
                ecs_trusted: model.geo.ecs_trusted.clone(),
            },
            summary,
        };
        snapshot.fast = Arc::new(crate::dns::fast::FastIndex::build(&snapshot));
        snapshot
    }

    /// The snapshot a freshly loaded model starts from: every target in its initial
    /// health state (before any probe has answered).
    pub fn initial(model: &Arc<Model>, metrics: &Metrics) -> Self {
        Self::build(model, &HealthTable::initial(model), metrics)
    }

    /// Every owner name with static records, in every zone.
    pub fn static_names(&self) -> Vec<hickory_proto::rr::Name> {
        self.zones.values().flat_map(|z| z.owner_names()).collect()
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

    pub fn apps(&self) -> &[Arc<AppAnswers>] {
        &self.apps
    }

    /// A copy with some apps' answers replaced (after a health change); zones are shared.
    pub fn with_apps(&self, updates: impl IntoIterator<Item = (usize, AppAnswers)>) -> Self {
        let mut next = self.clone();
        for (i, answers) in updates {
            next.apps[i] = Arc::new(answers);
        }
        next
    }
}
