//! Hot reload: one path for SIGHUP and for changes in the config file's directory.
//!
//! parse → validate → build → swap, exactly as `gtmd check` and start-up do. A bad file is
//! rejected with one log line per problem (the same messages as `check`) and the running
//! configuration keeps serving; a later good file applies. Health carries over for every
//! target still in the configuration, also when its probe's settings changed. Settings that only a restart can apply
//! (listen addresses, the TCP idle timeout, the admin endpoint) make the whole reload
//! fail with a message saying so: never half-applied.
//!
//! Nothing of a reload runs on the async workers that serve `/healthz` and DNS over TCP:
//! the file is read on a thread of its own with a deadline ([`read`]), parsed and
//! validated on another, and the new snapshot is built and applied on tokio's blocking
//! pool. A reload of 100k apps takes seconds; the server answers throughout.
//!
//! The file watch is in [`watch`].

mod read;
mod watch;

pub use read::READ_TIMEOUT;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::SystemTime,
};

use hickory_proto::rr::Name;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::{
    health::{HealthEngine, ReloadSummary},
    metrics::Metrics,
    model::Model,
    server::ReloadSource,
};

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
    /// Reading, parsing and validating the file (the rest is the build and the swap).
    pub parsed_in: std::time::Duration,
}

pub struct Reloader {
    path: Option<PathBuf>,
    engine: Arc<tokio::sync::Mutex<HealthEngine>>,
    metrics: Arc<Metrics>,
    current: Mutex<Current>,
    /// One reload at a time, in the order they were asked for. Held while the file is
    /// read (at most [`READ_TIMEOUT`]) and built; a reload abandoned at shutdown drops it.
    turn: tokio::sync::Mutex<()>,
    reader: read::FileReader,
    /// The last reload failed (to say so when the file is fine again but unchanged).
    last_failed: AtomicBool,
    /// The fleet, told each configuration applied (its hash is compared across the fleet).
    fleet: Option<Arc<crate::fleet::Fleet>>,
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
            turn: tokio::sync::Mutex::new(()),
            reader: read::FileReader::default(),
            last_failed: AtomicBool::new(false),
            fleet: None,
        }
    }

    /// Tells `fleet` (if any) each configuration applied.
    pub fn with_fleet(mut self, fleet: Option<Arc<crate::fleet::Fleet>>) -> Self {
        self.fleet = fleet;
        self
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn info(&self) -> ConfigInfo {
        self.current().info.clone()
    }

    /// Reloads the config file; `trigger` says why, for the log.
    pub async fn reload(self: &Arc<Self>, trigger: &str) -> Result<Applied, ReloadError> {
        self.reload_inner(trigger, false)
            .await
            .map(|a| a.expect("a forced reload applies or fails"))
    }

    /// Like [`Reloader::reload`], but a file whose text is the configuration in effect is
    /// left alone (Ok(None)): a `touch` or a permission fix of an unchanged file applies
    /// nothing.
    pub async fn reload_if_changed(
        self: &Arc<Self>,
        trigger: &str,
    ) -> Result<Option<Applied>, ReloadError> {
        self.reload_inner(trigger, true).await
    }

    async fn reload_inner(
        self: &Arc<Self>,
        trigger: &str,
        skip_unchanged: bool,
    ) -> Result<Option<Applied>, ReloadError> {
        let Some(path) = &self.path else {
            return Err(ReloadError::NoSource);
        };
        let started = std::time::Instant::now();
        let _turn = self.turn.lock().await;
        let result = match self.read_and_apply(path, skip_unchanged).await {
            Ok(None) => {
                // The file is what is serving: nothing is waiting to be applied.
                self.metrics.state.last_reload_successful.set(1);
                if self.last_failed.swap(false, Ordering::Relaxed) {
                    info!(
                        %trigger,
                        file = %path.display(),
                        "config file readable again, and the same as the configuration in effect"
                    );
                } else {
                    debug!(%trigger, file = %path.display(), "config file unchanged");
                }
                return Ok(None);
            }
            other => other,
        };
        self.last_failed.store(result.is_err(), Ordering::Relaxed);
        self.metrics
            .state
            .last_reload_successful
            .set(i64::from(result.is_ok()));
        match &result {
            Ok(Some(applied)) => {
                self.metrics.reloads.with_label_values(&["success"]).inc();
                let info = self.info();
                self.metrics.config_applied(&info.hash, info.generation);
                let s = self.current().model.clone();
                let took = started.elapsed();
                self.metrics
                    .state
                    .last_reload_duration
                    .set(took.as_secs_f64());
                info!(
                    %trigger,
                    file = %path.display(),
                    generation = applied.generation,
                    hash = %info.hash,
                    zones = s.zones.len(),
                    apps = s.apps.len(),
                    clusters = s.clusters.len(),
                    probes_kept = applied.probes.kept,
                    probes_changed_state_kept = applied.probes.changed,
                    probes_started = applied.probes.started,
                    probes_stopped = applied.probes.stopped,
                    took_ms = took.as_millis() as u64,
                    parse_ms = applied.parsed_in.as_millis() as u64,
                    "config reloaded"
                );
                for w in &s.warnings {
                    warn!(file = %path.display(), "config warning: {w}");
                }
            }
            Ok(None) => {}
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

    /// Read (own thread, deadline), parse + validate (own thread), build the snapshot and
    /// apply (blocking pool, under the engine lock): none of it on an async worker. The
    /// threads of the first two are never waited for at shutdown.
    async fn read_and_apply(
        self: &Arc<Self>,
        path: &Path,
        skip_unchanged: bool,
    ) -> Result<Option<Applied>, ReloadError> {
        let started = std::time::Instant::now();
        let text = self.reader.read(path).await.map_err(invalid)?;
        let owned = path.to_path_buf();
        let in_effect = self.info().hash;
        let fleet = self.fleet.is_some();
        let running = self.current().model.clone();
        let built = read::on_own_thread("gtmd-config-build", move || {
            if skip_unchanged && crate::fingerprint(&text) == in_effect {
                return Ok(None);
            }
            let fleet_hash = fleet.then(|| crate::fleet_fingerprint(&text));
            crate::validate_text(&owned, &text).map(|(mut model, hash)| {
                // Reloads take turns: `running` is still the model in effect when this one
                // is applied.
                model.share_probe_settings(&running);
                Some((model, hash, fleet_hash))
            })
        })
        .await
        .map_err(|e| ReloadError::Apply(format!("building the configuration: {e}")))?
        .map_err(invalid)?;
        let Some((model, hash, fleet_hash)) = built else {
            return Ok(None);
        };
        let parsed_in = started.elapsed();
        let mut engine = self.engine.clone().lock_owned().await;
        let this = self.clone();
        let owned = path.to_path_buf();
        let applied =
            tokio::task::spawn_blocking(move || this.apply(&owned, model, hash, &mut engine))
                .await
                .map_err(|e| ReloadError::Apply(format!("applying the configuration: {e}")))??;
        // Peers learn the configuration applied (they compare it with theirs).
        if let (Some(fleet), Some(hash)) = (&self.fleet, fleet_hash) {
            fleet.config_applied(&hash, applied.generation).await;
        }
        Ok(Some(Applied {
            parsed_in,
            ..applied
        }))
    }

    fn apply(
        &self,
        path: &Path,
        model: Model,
        hash: String,
        engine: &mut HealthEngine,
    ) -> Result<Applied, ReloadError> {
        let old = self.current().model.clone();
        let new = Arc::new(model);
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
        // The descriptor budget (fdbudget) left room for the probes in flight when it was
        // computed at start: more of them could fail for want of descriptors. Fewer are fine.
        if new.health.max_concurrent_probes > old.health.max_concurrent_probes {
            restart
                .push("health.max_concurrent_probes (raised above the file descriptor budget's)");
        }
        if old.server.tcp_max_connections != new.server.tcp_max_connections
            || old.server.tcp_max_connections_per_ip != new.server.tcp_max_connections_per_ip
            || old.server.tcp_max_queries != new.server.tcp_max_queries
        {
            restart.push("server.tcp_max_connections/tcp_max_connections_per_ip/tcp_max_queries");
        }
        // The writer thread holds the path it was started with.
        if old.health.state_file != new.health.state_file {
            restart.push("health.state_file");
        }
        // The gossip node is started once, with its name, address, seeds and key.
        let same_fleet = match (&old.fleet, &new.fleet) {
            (None, None) => true,
            (Some(a), Some(b)) => a.same_settings(b),
            _ => false,
        };
        if !same_fleet {
            restart.push("[fleet]");
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
        self.metrics.state.publish_overrides(Some(&old), &new);
        let mut current = self.current();
        let replaced = std::mem::replace(&mut current.model, new);
        current.info.hash = hash;
        current.info.generation += 1;
        current.info.loaded_at = SystemTime::now();
        let generation = current.info.generation;
        drop(current);
        // The old model (tens of milliseconds to free at 10,000 apps) is freed off the
        // reload's path, like the engine's old table and snapshot, and returned to the
        // system: the engine's trim may have run before it was freed.
        let _ = std::thread::Builder::new()
            .name("gtmd-free".into())
            .spawn(move || {
                drop((old, replaced));
                crate::heap::release_freed();
            });
        Ok(Applied {
            generation,
            probes,
            parsed_in: std::time::Duration::ZERO,
        })
    }
}

/// One error line per problem, each with the file's path.
fn invalid(errors: crate::ConfigErrors) -> ReloadError {
    ReloadError::Invalid(
        errors
            .errors
            .iter()
            .map(|e| format!("{}: {e}", errors.file.display()))
            .collect(),
    )
}

/// Removes the series of apps and clusters that left the configuration, so dashboards do
/// not show ghosts.
fn forget_removed_series(metrics: &Metrics, old: &Model, new: &Model) {
    // Borrowed (no 50,000 strings per reload); `None` is the empty app label of a
    // cluster's own series. Hostnames are lower case in the model, so names that are equal
    // (`Name` compares without regard to case) have the same label.
    fn targets(m: &Model) -> Vec<(Option<&Name>, &str)> {
        m.apps
            .iter()
            .flat_map(|a| {
                a.targets
                    .iter()
                    .map(|t| (Some(&a.hostname), m.clusters[t.cluster].name.as_str()))
            })
            .chain(m.clusters.iter().map(|c| (None, c.name.as_str())))
            .collect()
    }
    fn apps(m: &Model) -> Vec<&Name> {
        m.apps.iter().map(|a| &a.hostname).collect()
    }
    let (old_targets, new_targets) = (targets(old), targets(new));
    let (old_apps, new_apps) = (apps(old), apps(new));
    // The usual reload lists the same apps, targets and clusters in the same order:
    // nothing left, seen without a set of 50,000 pairs.
    if old_targets == new_targets && old_apps == new_apps {
        return;
    }
    let keep: std::collections::HashSet<&(Option<&Name>, &str)> = new_targets.iter().collect();
    for pair @ (app, cluster) in &old_targets {
        if !keep.contains(pair) {
            let app = app.map(Name::to_string).unwrap_or_default();
            let _ = metrics
                .answers
                .remove_label_values(&[app.as_str(), cluster]);
            metrics.forget_probe_series(&app, cluster);
        }
    }
    let keep: std::collections::HashSet<&&Name> = new_apps.iter().collect();
    for app in &old_apps {
        if !keep.contains(app) {
            let name = app.to_string();
            let _ = metrics.fallback_answers.remove_label_values(&[&name]);
            metrics.state.forget_app(&name);
        }
    }
}

/// Starts the reload triggers: SIGHUP and a watch on the config file's directory. A
/// reload in progress is abandoned when `cancel` fires, so shutdown never waits for a
/// file read.
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
                    got = hup.recv() => if got.is_none() { return },
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = reloader.reload("SIGHUP") => {}
                }
            }
        });
    }
    if source.watch {
        watch::spawn(tasks, reloader, path, cancel)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(apps: &[&str]) -> Model {
        let mut text = format!(
            "{}[[clusters]]\nname = \"a\"\ningress = [\"192.0.2.10\"]\n",
            crate::test_support::ZONE
        );
        for app in apps {
            text.push_str(&format!(
                "[[apps]]\nhostname = \"{app}\"\ntargets = [{{ cluster = \"a\" }}]\n"
            ));
        }
        crate::from_text(Path::new("t.toml"), &text).unwrap().model
    }

    fn series(metrics: &Metrics, app: &str) -> bool {
        let text = metrics.render();
        text.lines()
            .any(|l| l.starts_with("gtmd_") && l.contains(&format!("app=\"{app}\"")))
    }

    #[test]
    fn a_reload_forgets_the_series_of_apps_that_left_only() {
        let metrics = Metrics::new();
        let old = model(&["x.t.test", "y.t.test", "z.t.test"]);
        for app in ["x.t.test.", "y.t.test.", "z.t.test."] {
            metrics.answers.with_label_values(&[app, "a"]).inc();
            metrics.fallback_answers.with_label_values(&[app]).inc();
        }
        // The same apps: nothing forgotten.
        forget_removed_series(
            &metrics,
            &old,
            &model(&["x.t.test", "y.t.test", "z.t.test"]),
        );
        for app in ["x.t.test.", "y.t.test.", "z.t.test."] {
            assert!(series(&metrics, app), "{app}");
        }
        // y removed; x and z kept though listed in another order (hostnames are in
        // lower case in the model, so a label never differs from a name by case alone).
        forget_removed_series(&metrics, &old, &model(&["Z.t.test", "x.t.test"]));
        assert!(series(&metrics, "x.t.test."));
        assert!(series(&metrics, "z.t.test."));
        assert!(!series(&metrics, "y.t.test."));
    }
}
