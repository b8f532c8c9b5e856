//! Hot reload: one path for SIGHUP and for changes in the config file's directory.
//!
//! parse → validate → build → swap, exactly as `gtmd check` and start-up do. A bad file is
//! rejected with one log line per problem (the same messages as `check`) and the running
//! configuration keeps serving; a later good file applies. Health carries over for every
//! probe whose target and settings did not change. Settings that only a restart can apply
//! (listen addresses, the TCP idle timeout, the admin endpoint) make the whole reload
//! fail with a message saying so: never half-applied.
//!
//! The directory is watched, not the file: Kubernetes ConfigMaps update by swapping a
//! `..data` symlink in the directory, which a watch on the file itself would miss. Bursts
//! of events (editors write, rename and chmod) are debounced.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::{
    health::{HealthEngine, ReloadSummary},
    metrics::Metrics,
    model::Model,
    server::ReloadSource,
};

/// Quiet time after the last file event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// The configuration in effect.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConfigInfo {
    pub path: Option<PathBuf>,
    pub hash: String,
    /// 1 at start, +1 per applied reload.
    pub generation: u64,
    #[serde(with = "unix_seconds")]
    pub loaded_at: SystemTime,
}

mod unix_seconds {
    use std::time::{SystemTime, UNIX_EPOCH};

    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
    }
}

struct Current {
    model: Arc<Model>,
    info: ConfigInfo,
}

/// Why a reload was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{} problem(s) in the configuration", .0.len())]
    Invalid(Vec<String>),
    #[error("no config file to reload")]
    NoSource,
    #[error("{0}")]
    Apply(String),
}

/// What an applied reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub generation: u64,
    pub probes: ReloadSummary,
}

pub struct Reloader {
    path: Option<PathBuf>,
    engine: Arc<tokio::sync::Mutex<HealthEngine>>,
    metrics: Arc<Metrics>,
    current: Mutex<Current>,
}

impl Reloader {
    pub fn new(
        path: Option<PathBuf>,
        engine: Arc<tokio::sync::Mutex<HealthEngine>>,
        metrics: Arc<Metrics>,
        model: Arc<Model>,
        hash: String,
    ) -> Self {
        Self {
            path: path.clone(),
            engine,
            metrics,
            current: Mutex::new(Current {
                model,
                info: ConfigInfo {
                    path,
                    hash,
                    generation: 1,
                    loaded_at: SystemTime::now(),
                },
            }),
        }
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn info(&self) -> ConfigInfo {
        self.current().info.clone()
    }

    /// Reloads the config file; `trigger` says why, for the log.
    pub async fn reload(&self, trigger: &str) -> Result<Applied, ReloadError> {
        let Some(path) = &self.path else {
            return Err(ReloadError::NoSource);
        };
        // One reload at a time: the engine lock also orders reloads with each other.
        let mut engine = self.engine.lock().await;
        let result = self.apply(path, &mut engine);
        match &result {
            Ok(applied) => {
                self.metrics.reloads.with_label_values(&["success"]).inc();
                let info = self.info();
                self.metrics.config_applied(&info.hash, info.generation);
                let s = self.current().model.clone();
                info!(
                    %trigger,
                    file = %path.display(),
                    generation = applied.generation,
                    hash = %info.hash,
                    zones = s.zones.len(),
                    apps = s.apps.len(),
                    clusters = s.clusters.len(),
                    probes_kept = applied.probes.kept,
                    probes_started = applied.probes.started,
                    probes_stopped = applied.probes.stopped,
                    "config reloaded"
                );
            }
            Err(e) => {
                self.metrics.reloads.with_label_values(&["failure"]).inc();
                if let ReloadError::Invalid(problems) = e {
                    for p in problems {
                        error!(%trigger, "config reload rejected: {p}");
                    }
                }
                warn!(
                    %trigger,
                    file = %path.display(),
                    error = %e,
                    generation = self.info().generation,
                    "config reload failed: the previous configuration keeps serving"
                );
            }
        }
        result
    }

    fn apply(&self, path: &Path, engine: &mut HealthEngine) -> Result<Applied, ReloadError> {
        let loaded = crate::load(path).map_err(|errors| {
            ReloadError::Invalid(
                errors
                    .errors
                    .iter()
                    .map(|e| format!("{}: {e}", errors.file.display()))
                    .collect(),
            )
        })?;
        let old = self.current().model.clone();
        let new = Arc::new(loaded.model);
        let mut restart = Vec::new();
        if old.server.listen != new.server.listen {
            restart.push("server.listen");
        }
        if old.server.tcp_idle_timeout != new.server.tcp_idle_timeout {
            restart.push("server.tcp_idle_timeout");
        }
        if old.server.admin != new.server.admin
            || old.server.admin_limits != new.server.admin_limits
        {
            restart.push("admin");
        }
        if old.server.rrl != new.server.rrl {
            restart.push("rrl");
        }
        if old.server.udp_workers != new.server.udp_workers {
            restart.push("server.udp_workers");
        }
        if old.server.full_path_queue != new.server.full_path_queue {
            restart.push("server.full_path_queue");
        }
        if old.server.tcp_max_connections != new.server.tcp_max_connections
            || old.server.tcp_max_connections_per_ip != new.server.tcp_max_connections_per_ip
            || old.server.tcp_max_queries != new.server.tcp_max_queries
        {
            restart.push("server.tcp_max_connections/tcp_max_connections_per_ip/tcp_max_queries");
        }
        if !restart.is_empty() {
            return Err(ReloadError::Invalid(
                restart
                    .into_iter()
                    .map(|k| {
                        format!(
                            "{}: {k} changed: restart gtmd to apply it (nothing of this file was applied)",
                            path.display()
                        )
                    })
                    .collect(),
            ));
        }
        let probes = engine.reload(new.clone()).map_err(ReloadError::Apply)?;
        forget_removed_series(&self.metrics, &old, &new);
        let mut current = self.current();
        current.model = new;
        current.info.hash = loaded.hash;
        current.info.generation += 1;
        current.info.loaded_at = SystemTime::now();
        Ok(Applied {
            generation: current.info.generation,
            probes,
        })
    }
}

/// Removes the series of apps and clusters that left the configuration, so dashboards do
/// not show ghosts.
fn forget_removed_series(metrics: &Metrics, old: &Model, new: &Model) {
    let pairs = |m: &Model| -> std::collections::HashSet<(String, String)> {
        let mut out: std::collections::HashSet<(String, String)> = m
            .apps
            .iter()
            .flat_map(|a| {
                a.targets
                    .iter()
                    .map(|t| (a.hostname.to_string(), m.clusters[t.cluster].name.clone()))
            })
            .collect();
        out.extend(m.clusters.iter().map(|c| (String::new(), c.name.clone())));
        out
    };
    let keep = pairs(new);
    for (app, cluster) in pairs(old).difference(&keep) {
        let _ = metrics.answers.remove_label_values(&[app, cluster]);
        metrics.forget_probe_series(app, cluster);
    }
    let apps: std::collections::HashSet<String> =
        new.apps.iter().map(|a| a.hostname.to_string()).collect();
    for a in &old.apps {
        let name = a.hostname.to_string();
        if !apps.contains(&name) {
            let _ = metrics.fallback_answers.remove_label_values(&[&name]);
        }
    }
}

/// Starts the reload triggers: SIGHUP and a watch on the config file's directory.
pub fn spawn_triggers(
    tasks: &mut JoinSet<()>,
    reloader: Arc<Reloader>,
    source: &ReloadSource,
    cancel: CancellationToken,
) -> Result<(), String> {
    let Some(path) = source.path.clone() else {
        return Ok(());
    };
    if source.sighup {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| format!("cannot listen for SIGHUP: {e}"))?;
        let reloader = reloader.clone();
        let cancel = cancel.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    got = hup.recv() => {
                        if got.is_none() {
                            return;
                        }
                        let _ = reloader.reload("SIGHUP").await;
                    }
                }
            }
        });
    }
    if source.watch {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Reading the file (ours included) raises access events: only changes count,
                // or every reload would trigger the next one.
                if let Ok(e) = event
                    && matches!(
                        e.kind,
                        notify::EventKind::Create(_)
                            | notify::EventKind::Modify(_)
                            | notify::EventKind::Remove(_)
                            | notify::EventKind::Any
                    )
                    && !matches!(
                        e.kind,
                        notify::EventKind::Modify(notify::event::ModifyKind::Metadata(_))
                    )
                {
                    let _ = tx.send(());
                }
            })
            .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
        notify::Watcher::watch(&mut watcher, &dir, notify::RecursiveMode::NonRecursive)
            .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
        info!(dir = %dir.display(), "watching the config directory for changes");
        let mut last_tried = Some(reloader.info().hash);
        tasks.spawn(async move {
            let _watcher = watcher; // dropped (unwatched) when this task ends
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    got = rx.recv() => if got.is_none() { return },
                }
                // Debounce: wait for a quiet moment.
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        more = tokio::time::timeout(DEBOUNCE, rx.recv()) => match more {
                            Ok(Some(())) => continue,
                            Ok(None) => return,
                            Err(_) => break,
                        },
                    }
                }
                // Only a change of the config itself reloads (other files in the directory
                // do not), judged by content; a content already tried (applied or
                // rejected) is not tried again until it changes.
                let seen = match crate::config::read(&path) {
                    Ok(text) => Some(crate::fingerprint(&text)),
                    Err(_) => None,
                };
                if seen.is_some() && (seen == last_tried || seen == Some(reloader.info().hash)) {
                    debug!("config directory changed, config file unchanged");
                    continue;
                }
                last_tried = seen;
                let _ = reloader.reload("file change").await;
            }
        });
    }
    Ok(())
}
