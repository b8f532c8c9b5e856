//! The probe scheduler: one lightweight task per probe on the shared tokio runtime.
//!
//! Each task owns its probe's hysteresis, so two probes of the same target can never be in
//! flight at once; a global semaphore caps how many probes run concurrently. Start times
//! are spread at random over the first interval so 20,000 probes do not fire together.
//! After a result that disagrees with the current state the task re-probes after
//! `fast_interval` until the state settles either way (HAProxy's fastinter), so detection
//! costs about one interval plus (fall − 1) short re-probes.
//!
//! On a transition the task updates the health table and publishes a new snapshot right
//! away (under a mutex that only the probe side takes; queries never do), so the very next
//! query sees it.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use tokio::{sync::Semaphore, task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    http::{HttpProbe, shared_http_client},
    hysteresis::Hysteresis,
    outcome::Outcome,
    state::{HealthTable, ProbeKey, ProbeState},
    tcp,
    tls::TlsConfigs,
};
use crate::{
    model::{Model, ProbeKind, ProbeSpec},
    snapshot::{AppAnswers, Snapshot},
};

/// A prepared probe of either kind.
enum Prober {
    Http(Box<HttpProbe>),
    Tcp(std::net::SocketAddr, Duration),
}

impl Prober {
    async fn run(&self) -> Outcome {
        match self {
            Prober::Http(p) => p.run().await,
            Prober::Tcp(addr, timeout) => tcp::probe(*addr, *timeout).await,
        }
    }
}

/// State shared by all probe tasks.
struct Shared {
    model: Arc<Model>,
    table: Mutex<HealthTable>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    /// Probes that have not reached their first settled verdict yet.
    pending_first: AtomicUsize,
    first_round: tokio::sync::watch::Sender<bool>,
}

/// The running probe engine. Dropping it does not stop the probes; call [`Self::stop`].
pub struct HealthEngine {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

impl HealthEngine {
    /// Starts probing every target of `model` (inside a tokio runtime). `table` is the
    /// health the current snapshot was built with.
    pub fn start(
        model: Arc<Model>,
        table: HealthTable,
        snapshot: Arc<ArcSwap<Snapshot>>,
    ) -> Result<Self, String> {
        let probes = collect_probes(&model);
        let (first_round, _) = tokio::sync::watch::channel(probes.is_empty());
        let shared = Arc::new(Shared {
            model: model.clone(),
            table: Mutex::new(table),
            snapshot,
            pending_first: AtomicUsize::new(probes.len()),
            first_round,
        });
        let semaphore = Arc::new(Semaphore::new(model.health.max_concurrent_probes));
        let cancel = CancellationToken::new();
        super::tls::install_default_provider();
        let http = shared_http_client()?;
        let mut tls = TlsConfigs::default();
        let mut tasks = JoinSet::new();
        let count = probes.len();
        for (key, spec) in probes {
            let prober = match spec.kind {
                ProbeKind::Tcp => Prober::Tcp(spec.addr, spec.timeout),
                ProbeKind::Http => Prober::Http(Box::new(HttpProbe::new(&spec, &http, None)?)),
                ProbeKind::Https => {
                    let config = tls.get(spec.tls_verify, spec.ca_file.as_deref())?;
                    Prober::Http(Box::new(HttpProbe::new(&spec, &http, Some(config))?))
                }
            };
            tasks.spawn(probe_loop(
                key,
                spec,
                prober,
                shared.clone(),
                semaphore.clone(),
                cancel.clone(),
            ));
        }
        if count == 0 {
            info!("no probes configured: every target counts as up");
        } else {
            info!(probes = count, "health probes started");
        }
        Ok(Self {
            shared,
            cancel,
            tasks,
        })
    }

    /// Becomes true once every probe has reached its first settled verdict.
    pub fn first_round(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shared.first_round.subscribe()
    }

    /// A copy of the current health table.
    pub fn table(&self) -> HealthTable {
        lock(&self.shared.table).clone()
    }

    /// Stops every probe and waits for the tasks to end.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

fn lock(m: &Mutex<HealthTable>) -> std::sync::MutexGuard<'_, HealthTable> {
    // A panic while holding the lock cannot leave the table half-written (single `set`).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every probe of the model: app probes per (app, target), then cluster probes.
fn collect_probes(model: &Model) -> Vec<(ProbeKey, ProbeSpec)> {
    let mut out = Vec::new();
    for (a, app) in model.apps.iter().enumerate() {
        for (t, target) in app.targets.iter().enumerate() {
            if let Some(spec) = &target.probe {
                out.push((ProbeKey::App { app: a, target: t }, spec.clone()));
            }
        }
    }
    for (c, cluster) in model.clusters.iter().enumerate() {
        if let Some(spec) = &cluster.probe {
            out.push((ProbeKey::Cluster(c), spec.clone()));
        }
    }
    out
}

async fn probe_loop(
    key: ProbeKey,
    spec: ProbeSpec,
    prober: Prober,
    shared: Arc<Shared>,
    semaphore: Arc<Semaphore>,
    cancel: CancellationToken,
) {
    let offset = Duration::from_nanos(rand::random_range(0..spec.interval.as_nanos() as u64));
    let mut next = Instant::now() + offset;
    let mut hysteresis = Hysteresis::new(spec.initial_up, spec.rise, spec.fall);
    let mut first_pending = true;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        let started = Instant::now();
        let outcome = {
            let Ok(_permit) = semaphore.acquire().await else {
                return;
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                o = prober.run() => o,
            }
        };
        debug!(?key, ok = outcome.up, reason = %outcome.reason, took = ?outcome.duration, "probe");
        if let Some(up) = hysteresis.observe(outcome.up) {
            shared.transition(key, up, &outcome);
        }
        if first_pending && hysteresis.settled() {
            first_pending = false;
            shared.first_verdict();
        }
        let delay = if hysteresis.settled() {
            spec.interval
        } else {
            spec.fast_interval
        };
        // Keep the cadence from the start of the probe; never schedule in the past.
        next = (started + delay).max(Instant::now());
    }
}

impl Shared {
    fn first_verdict(&self) {
        if self.pending_first.fetch_sub(1, Ordering::AcqRel) == 1 {
            info!("first probe round complete: every target has a verdict");
            self.first_round.send_replace(true);
        }
    }

    /// Records a state change and publishes the snapshot that follows from it.
    fn transition(&self, key: ProbeKey, up: bool, outcome: &Outcome) {
        let model = &self.model;
        let state = |up: bool| if up { "up" } else { "down" };
        let reason = outcome.reason.to_string();
        match key {
            ProbeKey::App { app, target } => info!(
                app = %model.apps[app].hostname,
                cluster = %model.clusters[model.apps[app].targets[target].cluster].name,
                from = %state(!up),
                to = %state(up),
                reason = %reason,
                "health transition"
            ),
            ProbeKey::Cluster(c) => info!(
                cluster = %model.clusters[c].name,
                from = %state(!up),
                to = %state(up),
                reason = %reason,
                "cluster health transition"
            ),
        }
        let mut table = lock(&self.table);
        table.set(
            key,
            ProbeState {
                up,
                reason: Arc::from(reason),
            },
        );
        let affected: Vec<usize> = match key {
            ProbeKey::App { app, .. } => vec![app],
            ProbeKey::Cluster(c) => model
                .apps
                .iter()
                .enumerate()
                .filter(|(_, a)| a.targets.iter().any(|t| t.cluster == c))
                .map(|(i, _)| i)
                .collect(),
        };
        let current = self.snapshot.load();
        let updates: Vec<(usize, AppAnswers)> = affected
            .into_iter()
            .map(|a| {
                let policy = current.app(a).policy.clone();
                (a, AppAnswers::build_with_policy(model, a, &table, policy))
            })
            .collect();
        for (a, answers) in &updates {
            let was = current.app(*a).fallback_active;
            if answers.fallback_active && !was {
                warn!(
                    app = %answers.hostname,
                    fallback = %fallback_name(model, model.apps[*a].fallback),
                    "no target is up: answering the fallback"
                );
            } else if was && !answers.fallback_active {
                info!(app = %answers.hostname, "a target is up again: fallback over");
            }
        }
        self.snapshot.store(Arc::new(current.with_apps(updates)));
    }
}

fn fallback_name(model: &Model, f: crate::model::Fallback) -> String {
    match f {
        crate::model::Fallback::All => "all (fail open)".to_owned(),
        crate::model::Fallback::None => "none (NODATA)".to_owned(),
        crate::model::Fallback::Cluster(c) => format!("cluster:{}", model.clusters[c].name),
    }
}
