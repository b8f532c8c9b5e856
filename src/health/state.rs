//! Health state of every probe, keyed by a stable identity, and how probes, drain and force
//! combine into whether a target is answered. This is the one place those rules live.
//!
//! Probes are identified by app hostname and cluster name (not by position in the config),
//! so a reload that reorders, adds or removes apps keeps the state of every probe whose
//! target and settings did not change: no flap and no re-learning after a reload.

use std::{
    collections::HashMap,
    fmt,
    sync::Arc,
    time::{Duration, SystemTime},
};

use hickory_proto::rr::Name;

use crate::model::{Model, ProbeSpec};

/// Identifies one probe: an app in one cluster, or a cluster's own probe.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProbeId {
    App { app: Name, cluster: Arc<str> },
    Cluster(Arc<str>),
}

impl ProbeId {
    /// (app, cluster) metric labels; the app is empty for a cluster probe.
    pub fn labels(&self) -> (String, String) {
        match self {
            ProbeId::App { app, cluster } => (app.to_string(), cluster.to_string()),
            ProbeId::Cluster(c) => (String::new(), c.to_string()),
        }
    }
}

impl fmt::Display for ProbeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeId::App { app, cluster } => write!(f, "app {app} in cluster {cluster}"),
            ProbeId::Cluster(c) => write!(f, "cluster {c}"),
        }
    }
}

/// A probe's current verdict (after hysteresis).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeState {
    pub up: bool,
    /// Why, as of the last change ("initial state" before any).
    pub reason: Arc<str>,
    /// When the state last changed (or the probe started).
    pub since: SystemTime,
}

/// The last raw result of a probe, before hysteresis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastResult {
    pub ok: bool,
    pub reason: String,
    pub at: SystemTime,
    pub duration: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeEntry {
    pub state: ProbeState,
    pub last: Option<LastResult>,
    /// The probe task whose results this entry takes (a task replaced by a reload may
    /// still finish one probe: its result must not land here).
    pub owner: u64,
    /// Flap damping of this target: kept with its state, not in the probe task.
    pub flap: super::flap::Flap,
}

/// Every probe of a model with its settings: app probes per (app, target cluster), then
/// cluster probes.
pub fn probes(model: &Model) -> Vec<(ProbeId, ProbeSpec)> {
    let mut out = Vec::new();
    for app in &model.apps {
        for target in &app.targets {
            if let Some(spec) = &target.probe {
                out.push((
                    ProbeId::App {
                        app: app.hostname.clone(),
                        cluster: Arc::from(model.clusters[target.cluster].name.as_str()),
                    },
                    spec.clone(),
                ));
            }
        }
    }
    for cluster in &model.clusters {
        if let Some(spec) = &cluster.probe {
            out.push((
                ProbeId::Cluster(Arc::from(cluster.name.as_str())),
                spec.clone(),
            ));
        }
    }
    out
}

/// Verdicts of every probe.
#[derive(Debug, Clone, Default)]
pub struct HealthTable {
    entries: HashMap<ProbeId, ProbeEntry>,
}

fn initial(spec: &ProbeSpec) -> ProbeEntry {
    ProbeEntry {
        state: ProbeState {
            up: spec.initial_up,
            reason: Arc::from("initial state"),
            since: SystemTime::now(),
        },
        last: None,
        owner: 0,
        flap: Default::default(),
    }
}

impl HealthTable {
    /// Every probe in its configured initial state.
    pub fn initial(model: &Model) -> Self {
        Self {
            entries: probes(model)
                .into_iter()
                .map(|(id, spec)| {
                    let entry = initial(&spec);
                    (id, entry)
                })
                .collect(),
        }
    }

    /// The table for `new` after a reload: a probe with the same identity and settings as
    /// in `old` keeps its state; the others start in their initial state.
    pub fn carried(&self, old: &Model, new: &Model) -> Self {
        let old_specs: HashMap<ProbeId, ProbeSpec> = probes(old).into_iter().collect();
        self.carried_from(&old_specs, &probes(new))
    }

    /// [`HealthTable::carried`] from the probe lists of both models, listed beforehand so
    /// that only lookups happen while the table's lock is held.
    pub fn carried_from(
        &self,
        old_specs: &HashMap<ProbeId, ProbeSpec>,
        new: &[(ProbeId, ProbeSpec)],
    ) -> Self {
        Self {
            entries: new
                .iter()
                .map(|(id, spec)| {
                    let kept = (old_specs.get(id) == Some(spec))
                        .then(|| self.entries.get(id).cloned())
                        .flatten();
                    let entry = kept.unwrap_or_else(|| initial(spec));
                    (id.clone(), entry)
                })
                .collect(),
        }
    }

    /// Every entry, to update in place.
    pub fn entries_mut(&mut self) -> impl Iterator<Item = (&ProbeId, &mut ProbeEntry)> {
        self.entries.iter_mut()
    }

    pub fn get(&self, id: &ProbeId) -> Option<&ProbeEntry> {
        self.entries.get(id)
    }

    pub fn get_mut(&mut self, id: &ProbeId) -> Option<&mut ProbeEntry> {
        self.entries.get_mut(id)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Whether a target is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetState {
    Up,
    Down,
    /// Taken out by an operator (`drain = true`): never answered, not even in fallback.
    Drained,
}

impl fmt::Display for TargetState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TargetState::Up => "up",
            TargetState::Down => "down",
            TargetState::Drained => "drained",
        })
    }
}

/// The state of target `target` of app `app`, and why. Precedence: drain (target or
/// cluster) > force on the target > force on the cluster > the cluster's own probe > the
/// app probe > up (not probed).
pub fn target_state(
    model: &Model,
    table: &HealthTable,
    app: usize,
    target: usize,
) -> (TargetState, String) {
    let a = &model.apps[app];
    let t = &a.targets[target];
    let cluster = &model.clusters[t.cluster];
    if t.drain {
        return (TargetState::Drained, "target drained".into());
    }
    if cluster.drain {
        return (
            TargetState::Drained,
            format!("cluster {} drained", cluster.name),
        );
    }
    let forced = |up: bool| {
        if up {
            TargetState::Up
        } else {
            TargetState::Down
        }
    };
    if let Some(up) = t.force {
        return (forced(up), format!("forced {}", forced(up)));
    }
    if let Some(up) = cluster.force {
        return (
            forced(up),
            format!("cluster {} forced {}", cluster.name, forced(up)),
        );
    }
    let name: Arc<str> = Arc::from(cluster.name.as_str());
    if let Some(c) = table.get(&ProbeId::Cluster(name.clone()))
        && !c.state.up
    {
        return (
            TargetState::Down,
            format!("cluster {} probe down: {}", cluster.name, c.state.reason),
        );
    }
    let id = ProbeId::App {
        app: a.hostname.clone(),
        cluster: name,
    };
    match table.get(&id) {
        Some(p) if p.state.up => (TargetState::Up, p.state.reason.to_string()),
        Some(p) => (TargetState::Down, p.state.reason.to_string()),
        None => (TargetState::Up, "not probed".into()),
    }
}

/// An operator's override of a target's health, as `gtmd_target_override` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Override {
    Drain,
    ForceUp,
    ForceDown,
}

impl Override {
    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Override::Drain => "drain",
            Override::ForceUp => "force_up",
            Override::ForceDown => "force_down",
        }
    }
}

/// The override in effect on target `target` of app `app`, if any, with the precedence of
/// [`target_state`]: drain (target or cluster) > force on the target > force on the
/// cluster.
pub fn operator_override(model: &Model, app: usize, target: usize) -> Option<Override> {
    let t = &model.apps[app].targets[target];
    let cluster = &model.clusters[t.cluster];
    if t.drain || cluster.drain {
        return Some(Override::Drain);
    }
    t.force.or(cluster.force).map(|up| {
        if up {
            Override::ForceUp
        } else {
            Override::ForceDown
        }
    })
}
