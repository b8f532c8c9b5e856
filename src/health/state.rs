//! Health state of every probed target, and how probes, drain and force combine into
//! whether a target is answered. This is the one place those rules live.

use std::{fmt, sync::Arc};

use crate::model::Model;

/// Identifies one probe: an app in one of its target clusters, or a cluster's own probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKey {
    App { app: usize, target: usize },
    Cluster(usize),
}

/// A probe's current verdict (after hysteresis).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeState {
    pub up: bool,
    /// Why, as of the last change (or "initial" before any).
    pub reason: Arc<str>,
}

/// Verdicts of every probe; `None` where nothing is probed.
#[derive(Debug, Clone)]
pub struct HealthTable {
    apps: Vec<Vec<Option<ProbeState>>>,
    clusters: Vec<Option<ProbeState>>,
}

impl HealthTable {
    /// Every probe in its configured initial state.
    pub fn initial(model: &Model) -> Self {
        let initial = |up: bool| ProbeState {
            up,
            reason: Arc::from("initial state"),
        };
        Self {
            apps: model
                .apps
                .iter()
                .map(|a| {
                    a.targets
                        .iter()
                        .map(|t| t.probe.as_ref().map(|p| initial(p.initial_up)))
                        .collect()
                })
                .collect(),
            clusters: model
                .clusters
                .iter()
                .map(|c| c.probe.as_ref().map(|p| initial(p.initial_up)))
                .collect(),
        }
    }

    pub fn get(&self, key: ProbeKey) -> Option<&ProbeState> {
        match key {
            ProbeKey::App { app, target } => self.apps.get(app)?.get(target)?.as_ref(),
            ProbeKey::Cluster(c) => self.clusters.get(c)?.as_ref(),
        }
    }

    pub fn set(&mut self, key: ProbeKey, state: ProbeState) {
        let slot = match key {
            ProbeKey::App { app, target } => self.apps.get_mut(app).and_then(|a| a.get_mut(target)),
            ProbeKey::Cluster(c) => self.clusters.get_mut(c),
        };
        if let Some(slot) = slot {
            *slot = Some(state);
        }
    }
}

/// Whether a target is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    let t = &model.apps[app].targets[target];
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
    if let Some(c) = table.get(ProbeKey::Cluster(t.cluster))
        && !c.up
    {
        return (
            TargetState::Down,
            format!("cluster {} probe down: {}", cluster.name, c.reason),
        );
    }
    match table.get(ProbeKey::App { app, target }) {
        Some(p) if p.up => (TargetState::Up, p.reason.to_string()),
        Some(p) => (TargetState::Down, p.reason.to_string()),
        None => (TargetState::Up, "not probed".into()),
    }
}
