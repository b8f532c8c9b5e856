//! The probe scheduler: one lightweight task per probe on the shared tokio runtime.
//!
//! Each task owns its probe's hysteresis, so two probes of the same target can never be in
//! flight at once; a global semaphore caps how many probes run concurrently. Start times
//! are spread at random over the first interval so 20,000 probes do not fire together.
//! After a result that disagrees with the current state the task re-probes after
//! `fast_interval` until the state settles either way (HAProxy's fastinter), so detection
//! costs about one interval plus (fall − 1) short re-probes. Between the hysteresis and
//! what is published sits flap damping ([`super::flap`], state kept in the table entry):
//! a target whose state keeps changing is published down until it has been stable.
//!
//! On a transition the task updates the health table (under a mutex that only the probe,
//! publisher and reload side take; queries never do) and marks the probe dirty; the
//! publisher thread ([`super::publish`]) rebuilds the apps it touches and publishes one
//! snapshot per short batch window. A reload keeps the tasks of unchanged probes running
//! (their hysteresis and state carry over), stops removed ones and starts new ones.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use prometheus::{Histogram, IntGauge};
use tokio::{sync::Semaphore, task::JoinSet, time::Instant};
use tracing::{debug, info, warn};

use super::{
    agree::{
        Agreement, Changed, Outbox, OwnBucket, PeerViews, Seen,
        assign::Assignment,
        layout::{BUCKETS, Layout},
    },
    flap,
    http::HttpProbe,
    hysteresis::Hysteresis,
    outcome::Outcome,
    persist::{Kept, Restored, StateWriter},
    pool::{KeptExchange, Pool},
    publish::{Batch, Dirty, IndexCache, Next, TRIM_AFTER_APPS, TRIM_WHEN_QUIET, WINDOW},
    state::{HealthTable, LastResult, ProbeId, ProbeState, VerdictView, app_probe_ids, probes},
    tcp,
    tls::TlsConfigs,
};
use crate::{
    metrics::{Metrics, ProbeSlot},
    model::{Model, ProbeKind, ProbeSpec},
    snapshot::{AppAnswers, Snapshot},
};

/// A prepared probe of either kind.
enum Prober {
    Http(HttpProbe),
    Tcp(std::net::SocketAddr, Duration),
}

impl Prober {
    /// Runs the probe prepared from `spec`; with the kept connection the verdict came from,
    /// if it came from one (`reuse_connections`).
    async fn run(&self, spec: &ProbeSpec) -> (Outcome, Option<KeptExchange>) {
        match self {
            Prober::Http(p) => p.run_kept(spec).await,
            Prober::Tcp(addr, timeout) => (tcp::probe(*addr, *timeout).await, None),
        }
    }
}

/// State shared by the probe tasks and readers (status API).
pub struct HealthShared {
    model: ArcSwap<Model>,
    table: Mutex<HealthTable>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    /// Live probes that have no settled verdict yet, until the first round completes.
    pending: Mutex<HashSet<ProbeId>>,
    first_round: tokio::sync::watch::Sender<bool>,
    /// Identifies probe tasks, so a replaced task's last result is ignored.
    next_epoch: AtomicU64,
    /// The state file's writer (`health.state_file`).
    persist: Option<Arc<StateWriter>>,
    /// Probes whose published verdict changed, for the publisher.
    dirty: Dirty,
    /// The publication lock: held while a batch is built and stored and while a reload
    /// swaps table and snapshot, so a batch built from the old model never replaces the
    /// reload's snapshot. Never taken with the table's lock held.
    publishing: Mutex<IndexCache>,
    /// The first round's completion was announced.
    ready_announced: std::sync::atomic::AtomicBool,
    /// With a fleet: buckets of own observations to gossip again.
    pub outbox: Outbox,
    /// With `fleet.probes_per_target`: which targets this instance probes.
    assignment: arc_swap::ArcSwapOption<Assignment>,
}

impl HealthShared {
    /// The model in effect (the last one applied by a reload).
    pub fn model(&self) -> Arc<Model> {
        self.model.load_full()
    }

    /// With a fleet: this instance's own observations of bucket `b` (its hash and, in
    /// layout order, one state per target), to gossip.
    pub fn own_bucket(&self, b: usize) -> Option<OwnBucket> {
        lock(&self.table).own_bucket(b)
    }

    /// With a fleet: the layout of the configuration in effect.
    pub fn fleet_layout(&self) -> Option<Arc<Layout>> {
        lock(&self.table).layout()
    }

    /// The peers' views changed in `buckets` (or only who the peers are), read against
    /// `layout`: the targets there are decided again, and what changed is published. False (nothing done) when
    /// `layout` is no longer the table's (a reload took another): read them again.
    pub fn peers_changed(
        &self,
        views: Arc<PeerViews>,
        layout: &Arc<Layout>,
        buckets: &[(usize, Changed)],
    ) -> bool {
        {
            let mut table = lock(&self.table);
            if !table.layout().is_some_and(|l| Arc::ptr_eq(&l, layout)) {
                return false;
            }
            table.set_peers(views);
        }
        // A bucket at a time: probe results wait for a few hundred decisions at most.
        for (b, which) in buckets {
            let changed = lock(&self.table).agree_in(*b, which);
            self.dirty.mark(changed);
        }
        true
    }

    /// Decides every target again (own observations whose probes stopped reporting went
    /// stale meanwhile: nothing else tells), in one pass a bucket at a time. Returns how
    /// many targets the fleet overrules this instance on, how many some fresh observation
    /// disagrees with what is answered, and this instance's own observations of every
    /// bucket (hash, states), to gossip.
    pub fn sweep(&self) -> (usize, usize, Vec<OwnBucket>) {
        let (mut overruled, mut disagreeing) = (0, 0);
        let mut own = Vec::new();
        for b in 0..BUCKETS {
            let swept = lock(&self.table).sweep_bucket(b);
            overruled += swept.overruled;
            disagreeing += swept.disagreeing;
            self.dirty.mark(swept.changed);
            own.extend(swept.own);
        }
        (overruled, disagreeing, own)
    }

    /// What the fleet sees of probe `id` (None without a fleet): this instance's own
    /// observation as shared, each live peer's, and the decision.
    pub fn fleet_view(&self, id: &ProbeId) -> Option<FleetTargetView> {
        let table = lock(&self.table);
        let a = table.agreement()?;
        let e = table.get(id)?;
        let slot = super::agree::layout::Slot::unpack(e.slot)?;
        let own = e.seen(a.layout.fresh(slot), SystemTime::now());
        let answered = e.verdict().up;
        Some(FleetTargetView {
            own,
            peers: a
                .peers
                .peers
                .iter()
                .map(|p| (p.node.clone(), p.at(slot), p.since(slot)))
                .collect(),
            decision: a.decide(slot, own),
            overruled: own.up().is_some_and(|up| up != answered),
        })
    }

    /// The fleet's membership changed (`fleet.probes_per_target`): each probe task checks
    /// at its next turn whether it is one of its target's probers.
    pub fn set_assignment(&self, assignment: Option<Assignment>) {
        self.assignment.store(assignment.map(Arc::new));
    }

    /// Whether this instance probes `id` (always, unless `fleet.probes_per_target` leaves
    /// it to others).
    pub fn probes(&self, id: &ProbeId) -> bool {
        self.assignment.load().as_ref().is_none_or(|a| a.probes(id))
    }

    /// The instances that probe `id`, when `fleet.probes_per_target` is set.
    pub fn probers(&self, id: &ProbeId) -> Option<Vec<String>> {
        let a = self.assignment.load_full()?;
        Some(a.probers(id).into_iter().map(str::to_owned).collect())
    }

    /// A fleet's start took every peer's observations: this instance answers the fleet's
    /// view while its own first round runs, so it is ready now.
    pub fn ready_from_fleet(&self) {
        if *self.first_round.borrow() {
            return;
        }
        let ready = {
            let mut pending = lock_pending(&self.pending);
            if pending.is_empty() {
                return;
            }
            // A target waits for a verdict until this instance's probe gives one or a peer
            // has a fresh observation of it: a peer that only shares "unknown" (starting
            // too, or another configuration) readies nothing.
            let table = lock(&self.table);
            pending.retain(|id| !table.peers_observe(id));
            pending.is_empty()
        };
        if ready {
            info!(
                "ready: every target has a fresh observation (this instance's or a peer's); this instance's own first probe round may still run"
            );
            self.announce_ready();
        }
    }

    /// A copy of one probe's entry: what the status API reads, one target at a time, so
    /// that a page neither copies the whole table (hundreds of MB at 100k apps) nor holds
    /// its lock while it is written.
    pub fn entry(&self, id: &ProbeId) -> Option<super::state::ProbeEntry> {
        lock(&self.table).get(id).cloned()
    }
}

/// What the fleet sees of one target (status API).
#[derive(Debug, Clone)]
pub struct FleetTargetView {
    /// This instance's own observation as it shares it.
    pub own: Seen,
    /// Each live peer's, by node name, and since when it says so: as the peer says it
    /// where its value carries the time, else as this instance saw its view change.
    pub peers: Vec<(String, Seen, Option<SystemTime>)>,
    pub decision: super::agree::Decision,
    /// This instance's own fresh observation says otherwise than what is answered.
    pub overruled: bool,
}

/// A running probe task.
struct Running {
    /// Shared with the task: one copy of the settings per probe, not two.
    spec: Arc<ProbeSpec>,
    /// Stops the task at its next await (a sleep, the semaphore, the probe in flight): a
    /// handle into the task itself, where a cancellation token cost an allocation and a
    /// waiting future per probe. A result the task records meanwhile is refused by the
    /// table entry's owner check.
    task: tokio::task::AbortHandle,
}

/// The running probe engine.
pub struct HealthEngine {
    shared: Arc<HealthShared>,
    running: HashMap<ProbeId, Running>,
    tasks: JoinSet<()>,
    semaphore: Arc<Semaphore>,
    max_concurrent: usize,
    /// Kept-alive connections of `reuse_connections` probes (their slots come from
    /// `semaphore`).
    pool: Arc<Pool>,
    tls: TlsConfigs,
    publisher: Option<std::thread::JoinHandle<()>>,
}

impl Drop for HealthEngine {
    fn drop(&mut self) {
        // Ends the publisher thread (which holds the shared state) if `stop` was not called.
        self.shared.dirty.stop();
    }
}

/// Metric handles of one probe, resolved once when it starts. The label strings are not
/// kept: they are only needed again for a failure or a transition, and 50,000 probes would
/// hold ~5 MB of them.
struct ProbeMetrics {
    /// `gtmd_probe_up`, `gtmd_probe_flapping`, `gtmd_probe_failures_total` and
    /// `gtmd_health_transitions_total` of this probe.
    gauges: Arc<ProbeSlot>,
    /// The cluster's duration histogram, shared by every probe there.
    duration: Histogram,
}

impl ProbeMetrics {
    fn new(metrics: &Metrics, id: &ProbeId) -> Self {
        let (app, cluster) = id.labels();
        Self {
            gauges: metrics.probe_gauges.slot(&app, &cluster),
            duration: metrics
                .probe_duration
                .with_label_values(&[cluster.as_str()]),
        }
    }
}

impl HealthEngine {
    /// Starts probing every target of `model` (inside a tokio runtime) from the table of
    /// `restored` (initial states, or verdicts restored from the state file), which the
    /// snapshot must have been built with.
    pub fn start(
        model: Arc<Model>,
        snapshot: Arc<ArcSwap<Snapshot>>,
        metrics: Arc<Metrics>,
        restored: Restored,
    ) -> Result<Self, String> {
        super::tls::install_default_provider();
        let list = probes(&model);
        let (first_round, _) = tokio::sync::watch::channel(list.is_empty());
        let persist = match &model.health.state_file {
            Some(path) => Some(Arc::new(StateWriter::start(
                path.clone(),
                model.clone(),
                restored.seed,
                metrics.clone(),
            )?)),
            None => None,
        };
        let shared = Arc::new(HealthShared {
            model: ArcSwap::new(model.clone()),
            table: Mutex::new(restored.table),
            snapshot,
            metrics,
            pending: Mutex::new(list.iter().map(|(id, _)| id.clone()).collect()),
            first_round,
            next_epoch: AtomicU64::new(1),
            persist,
            dirty: Dirty::default(),
            publishing: Mutex::new(IndexCache::for_model(&model)),
            ready_announced: Default::default(),
            outbox: Outbox::default(),
            assignment: Default::default(),
        });
        let publisher = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("gtmd-publish".into())
                .spawn(move || {
                    let mut rebuilt = 0;
                    loop {
                        let idle = (rebuilt >= TRIM_AFTER_APPS).then_some(TRIM_WHEN_QUIET);
                        match shared.dirty.next(WINDOW, idle) {
                            Next::Batch(batch) => rebuilt += shared.publish(batch),
                            Next::Idle => {
                                crate::heap::release_freed();
                                rebuilt = 0;
                            }
                            Next::Stop => break,
                        }
                    }
                })
                .map_err(|e| format!("starting the health publisher thread: {e}"))?
        };
        let max_concurrent = model.health.max_concurrent_probes;
        let semaphore = Arc::new(Semaphore::new(max_concurrent));
        let pool = Arc::new(Pool::new(
            semaphore.clone(),
            shared.metrics.engine.pool.clone(),
        ));
        let mut tasks = JoinSet::new();
        tasks.spawn(pool.clone().sweep_forever());
        let mut engine = Self {
            shared,
            running: HashMap::new(),
            tasks,
            semaphore,
            max_concurrent,
            pool,
            tls: TlsConfigs::default(),
            publisher: Some(publisher),
        };
        let prepared = engine.prepare(&list)?;
        for ((id, spec), prober) in list.into_iter().zip(prepared) {
            let epoch = engine.shared.claim(&id);
            engine.spawn(id, spec.clone(), prober, epoch);
        }
        if engine.running.is_empty() {
            info!("no probes configured: every target counts as up");
        } else {
            info!(probes = engine.running.len(), "health probes started");
        }
        Ok(engine)
    }

    fn prepare(&mut self, list: &[(ProbeId, &Arc<ProbeSpec>)]) -> Result<Vec<Prober>, String> {
        list.iter()
            .map(|(id, spec)| {
                Ok(match spec.kind {
                    ProbeKind::Tcp => Prober::Tcp(spec.addr, spec.timeout),
                    ProbeKind::Http => {
                        Prober::Http(HttpProbe::new(spec, None)?.with_pool(spec, &self.pool))
                    }
                    ProbeKind::Https => {
                        let config = self.tls.get(spec.tls_verify, spec.ca_file.as_deref())?;
                        Prober::Http(HttpProbe::new(spec, Some(config))?)
                    }
                })
                .map_err(|e: String| format!("{id}: {e}"))
            })
            .collect()
    }

    fn spawn(&mut self, id: ProbeId, spec: Arc<ProbeSpec>, prober: Prober, epoch: u64) {
        let metrics = ProbeMetrics::new(&self.shared.metrics, &id);
        let task = self.tasks.spawn(probe_loop(
            id.clone(),
            spec.clone(),
            prober,
            self.shared.clone(),
            self.semaphore.clone(),
            metrics,
            epoch,
        ));
        self.running.insert(id, Running { spec, task });
    }

    /// Becomes true once every probe of the first configuration has a settled verdict.
    pub fn first_round(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shared.first_round.subscribe()
    }

    pub fn shared(&self) -> Arc<HealthShared> {
        self.shared.clone()
    }

    /// Applies a new model: probes that are unchanged keep running with their state, the
    /// others start over or stop; a snapshot of the new model with the carried health is
    /// published. On error nothing changes.
    pub fn reload(&mut self, new: Arc<Model>) -> Result<ReloadSummary, String> {
        let list = probes(&new);
        let to_start: Vec<(ProbeId, &Arc<ProbeSpec>)> = list
            .iter()
            .filter(|(id, spec)| self.running.get(id).is_none_or(|r| r.spec != **spec))
            .cloned()
            .collect();
        let changed_settings = to_start
            .iter()
            .filter(|(id, _)| self.running.contains_key(id))
            .count();
        // TLS settings are re-read (a CA file may have changed), and everything that can
        // fail happens before anything changes.
        self.tls = TlsConfigs::default();
        let prepared = self.prepare(&to_start)?;
        let epochs: Vec<u64> = to_start.iter().map(|_| self.shared.new_epoch()).collect();
        let starting: HashSet<ProbeId> = to_start.iter().map(|(id, _)| id.clone()).collect();
        // The new snapshot (seconds for 100k apps) is built without the table's lock:
        // probe tasks take that lock on the async workers for every result, and would
        // stall them for the whole build. It is built from a copy of the verdicts; under
        // the lock the entries then move to the new table as they are by then, and what
        // changed meanwhile is published by the next batch.
        //
        // Every target still there keeps its state, a probe restarted with new settings
        // included: its new task starts from the kept verdict (see `probe_loop`).
        let (view, fleet) = {
            let table = lock(&self.shared.table);
            (table.reload_view(&list), table.agreement().cloned())
        };
        // With a fleet: the new configuration's layout, and the peers' views read against
        // it (built here, off the lock; applied with the table).
        let fleet = fleet.map(|a| {
            let layout = Arc::new(Layout::build(&list));
            let peers = PeerViews {
                peers: a.peers.peers.iter().map(|p| p.remapped(&layout)).collect(),
            };
            Agreement {
                layout,
                peers: Arc::new(peers),
                up_fraction: a.up_fraction,
            }
        });
        let snapshot = Arc::new(Snapshot::build_after(
            Some(&self.shared.snapshot.load_full()),
            &new,
            &view,
            &self.shared.metrics,
        ));
        let index = IndexCache::for_model(&new);
        // Table and snapshot change together, with no batch of the old model in flight.
        let mut publishing = lock_publishing(&self.shared.publishing);
        // The index of the old model goes (and with it the last hold on that model).
        *publishing = index;
        let mut table = lock(&self.shared.table);
        let (mut carried, mut changed) = table.take_for(&list, &view);
        if fleet.is_some() {
            // Decided against the new layout; what differs from what the snapshot was
            // built with is published by the next batch.
            let seen: HashSet<ProbeId> = changed.iter().cloned().collect();
            changed.extend(
                carried
                    .set_agreement(fleet)
                    .into_iter()
                    .filter(|id| !seen.contains(id)),
            );
            self.shared.outbox.mark_all();
        }
        // Only now do the restarted probes' entries change hands: what their old tasks
        // recorded until this moment was carried, what they record from here on (until
        // aborted below) no longer lands.
        for ((id, _), epoch) in to_start.iter().zip(&epochs) {
            if let Some(entry) = carried.get_mut(id) {
                entry.owner = *epoch;
            }
        }
        let replaced = std::mem::replace(&mut *table, carried);
        drop(table);
        self.shared.dirty.mark(changed);
        self.shared.model.store(new.clone());
        if let Some(p) = &self.shared.persist {
            p.model(new.clone());
        }
        let previous = self.shared.snapshot.swap(snapshot.clone());
        drop(publishing);
        // Probes of the old model that are not in the new one: stopped below. When every
        // running probe is either kept or restarted (the usual edit), no scan is needed.
        let new_ids = to_start.len() - changed_settings;
        let removed: Vec<ProbeId> = if self.running.len() + new_ids == list.len() {
            Vec::new()
        } else {
            let live: HashSet<&ProbeId> = list.iter().map(|(id, _)| id).collect();
            self.running
                .keys()
                .filter(|id| !live.contains(id))
                .cloned()
                .collect()
        };
        // Readiness waits for the probes that are live now, not for removed ones.
        let ready = {
            let mut pending = lock_pending(&self.shared.pending);
            if *self.shared.first_round.borrow() {
                false
            } else {
                for id in &removed {
                    pending.remove(id);
                }
                pending.extend(starting.iter().cloned());
                pending.is_empty()
            }
        };
        if ready {
            self.shared.announce_ready();
        }
        // Logged after the locks are released (it walks every app); the old table and
        // snapshot are freed on a thread of their own (a tenth of a second at 10,000 apps
        // that the reload need not wait for).
        log_fallback_changes(&previous, &snapshot, &new);
        let _ = std::thread::Builder::new()
            .name("gtmd-free".into())
            .spawn(move || {
                drop((replaced, previous));
                crate::heap::release_freed();
            });
        let mut stopped = 0;
        for id in removed.iter().chain(starting.iter()) {
            if let Some(r) = self.running.remove(id) {
                r.task.abort();
                stopped += 1;
            }
        }
        forget_probe_series(&self.shared.metrics, &removed);
        let kept = self.running.len();
        let started = to_start.len();
        for (((id, spec), prober), epoch) in to_start.into_iter().zip(prepared).zip(epochs) {
            self.spawn(id, spec.clone(), prober, epoch);
        }
        self.resize(new.health.max_concurrent_probes);
        // Reap finished tasks so the set does not grow over many reloads.
        while self.tasks.try_join_next().is_some() {}
        Ok(ReloadSummary {
            kept,
            changed: changed_settings,
            started,
            stopped,
        })
    }

    fn resize(&mut self, max: usize) {
        if max > self.max_concurrent {
            self.semaphore.add_permits(max - self.max_concurrent);
        } else if max < self.max_concurrent {
            let fewer = self.max_concurrent - max;
            let forgotten = self.semaphore.forget_permits(fewer);
            let debt = fewer - forgotten;
            if debt > 0 {
                // The rest are in use: take them as they come back, then forget them.
                debug!(debt, "probe concurrency limit lowered while probes run");
                let semaphore = self.semaphore.clone();
                self.tasks.spawn(async move {
                    if let Ok(p) = semaphore.acquire_many(debt as u32).await {
                        p.forget();
                    }
                });
            }
        }
        self.max_concurrent = max;
    }

    /// Stops every probe and the publisher and waits for them to end.
    pub async fn stop(&mut self) {
        self.tasks.abort_all();
        self.running.clear();
        while self.tasks.join_next().await.is_some() {}
        self.shared.dirty.stop();
        if let Some(publisher) = self.publisher.take() {
            let _ = tokio::task::spawn_blocking(move || publisher.join()).await;
        }
        // The verdicts as they are at shutdown, for the next start. Bounded: the stop budget
        // (TimeoutStopSec, terminationGracePeriodSeconds) is the grace plus a few seconds,
        // and the file already holds every transition but the last 200 ms.
        if let Some(p) = self.shared.persist.clone() {
            let _ = tokio::task::spawn_blocking(move || p.finish(Duration::from_secs(2))).await;
        }
    }
}

/// What one probe result changed in what is published.
#[derive(Debug, Default)]
struct Published {
    /// The published state changed to this.
    transition: Option<bool>,
    /// Flapping started (true) or ended (false).
    flapping: Option<bool>,
}

/// What a reload did to the probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Probes left running: same target, same settings.
    pub kept: usize,
    /// Probes restarted with changed settings; their targets kept their state.
    pub changed: usize,
    /// Probe tasks started: `changed` plus probes of new targets (initial state).
    pub started: usize,
    /// Probe tasks stopped: `changed` plus probes of removed targets.
    pub stopped: usize,
}

fn lock(m: &Mutex<HealthTable>) -> std::sync::MutexGuard<'_, HealthTable> {
    // A panic while holding the lock cannot leave an entry half-written.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn lock_publishing(m: &Mutex<IndexCache>) -> std::sync::MutexGuard<'_, IndexCache> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn lock_pending(m: &Mutex<HashSet<ProbeId>>) -> std::sync::MutexGuard<'_, HashSet<ProbeId>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes the metric series of probes that no longer exist.
fn forget_probe_series(metrics: &Metrics, removed: &[ProbeId]) {
    for id in removed {
        let (app, cluster) = id.labels();
        metrics.forget_probe_series(&app, &cluster);
    }
}

/// Logs fallback episodes that a reload starts or ends (drain, force, removed targets).
fn log_fallback_changes(old: &Snapshot, new: &Snapshot, model: &Model) {
    let before: HashMap<&hickory_proto::rr::Name, bool> = old
        .apps()
        .iter()
        .map(|a| (&a.hostname, a.fallback_active))
        .collect();
    for a in new.apps() {
        let was = before.get(&a.hostname).copied().unwrap_or(false);
        if a.fallback_active && !was {
            warn!(
                app = %a.hostname,
                fallback = %a.fallback_note(model),
                "no target is up after the reload: answering the fallback"
            );
        } else if was && !a.fallback_active {
            info!(app = %a.hostname, "a target is up after the reload: fallback over");
        }
    }
}

/// One unit of a gauge for as long as it lives (a cancelled probe task gives it back too).
struct Held<'a>(&'a IntGauge);

impl<'a> Held<'a> {
    fn new(gauge: &'a IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[allow(clippy::too_many_arguments)]
async fn probe_loop(
    id: ProbeId,
    spec: Arc<ProbeSpec>,
    prober: Prober,
    shared: Arc<HealthShared>,
    semaphore: Arc<Semaphore>,
    metrics: ProbeMetrics,
    epoch: u64,
) {
    let span = (spec.interval.as_nanos() as u64).max(1);
    let offset = Duration::from_nanos(rand::random_range(0..span));
    let mut next = Instant::now() + offset;
    let mut hysteresis = Hysteresis::new(spec.initial_up, spec.rise, spec.fall);
    // A probe restarted by a reload with changed settings, or one whose state was
    // restored from the state file, starts from the verdict in the table: a down target
    // keeps needing `rise` successes.
    {
        let mut table = lock(&shared.table);
        // In a fleet, an instance without its own result yet starts from what it answers.
        if let Some(up) = table.adopt_answered(&id) {
            hysteresis = Hysteresis::new(up, spec.rise, spec.fall);
        }
        if let Some(entry) = table.get(&id) {
            metrics.gauges.set_flapping(entry.flap.is_flapping());
        }
    }
    let mut skipping = false;
    metrics.gauges.set_up(hysteresis.is_up());
    let mut first_pending = true;
    // The last success, when it came from a kept connection (`reuse_connections`).
    let mut kept: Option<KeptExchange> = None;
    loop {
        // A reload or stop aborts the task at one of these awaits (see `Running::task`).
        let rechecked = until_next(next, kept.take()).await == Woken::InDoubt;
        if rechecked {
            shared.metrics.engine.pool.rechecked.inc();
        }
        // Left to other instances of the fleet (`probes_per_target`) while one of them has
        // a fresh observation of it: checked again at the next interval; this instance's
        // observation ages into "unknown" meanwhile. Without one (a start, a prober that
        // died or whose probes stalled, a peer on another configuration) it probes itself.
        if !shared.probes(&id) && lock(&shared.table).peers_observe(&id) {
            if first_pending {
                first_pending = false;
                shared.not_mine(&id);
            }
            skipping = true;
            next = Instant::now() + spec.interval;
            continue;
        }
        if std::mem::take(&mut skipping) {
            // Taken over (its prober died): from the verdict answered until now.
            if let Some(up) = lock(&shared.table).adopt_answered(&id) {
                hysteresis = Hysteresis::new(up, spec.rise, spec.fall);
            }
        }
        let due = next;
        let started = Instant::now();
        let outcome = {
            let waiting = Held::new(&shared.metrics.engine.waiting);
            let Ok(_permit) = semaphore.acquire().await else {
                return;
            };
            drop(waiting);
            let _in_flight = Held::new(&shared.metrics.engine.in_flight);
            // Boxed: an idle task then holds a pointer, not the whole in-flight request
            // state (KiBs each at 20,000+ probes).
            let (outcome, on) = Box::pin(prober.run(&spec)).await;
            kept = on.filter(|_| outcome.up);
            outcome
        };
        metrics.duration.observe(outcome.duration.as_secs_f64());
        if !outcome.up {
            metrics.gauges.count_failure(outcome.reason.label());
        }
        debug!(probe = %id, ok = outcome.up, reason = %outcome.reason, took = ?outcome.duration, "probe");
        let changed = hysteresis.observe(outcome.up).is_some();
        let published = shared.record(&id, epoch, &outcome, hysteresis.is_up(), changed, &spec);
        if let Some(flapping) = published.flapping {
            metrics.gauges.set_flapping(flapping);
        }
        if let Some(up) = published.transition {
            metrics.gauges.set_up(up);
            metrics.gauges.count_transition(up);
        }
        if first_pending && hysteresis.settled() {
            first_pending = false;
            // Not for a task a reload replaced or removed while it probed (aborted, but
            // not before its next await): its successor's verdict is the one awaited.
            let owner = lock(&shared.table)
                .get(&id)
                .is_some_and(|e| e.owner == epoch);
            if owner {
                shared.first_verdict(&id);
            }
        }
        let delay = if hysteresis.settled() {
            spec.interval
        } else {
            spec.fast_interval
        };
        // Keep the cadence from the start of the probe; never schedule in the past. A
        // recheck that found the target as it was keeps the probe's own schedule: the
        // probes woken together by one doubt would otherwise probe together from then on.
        next = if rechecked && hysteresis.settled() && due > Instant::now() {
            due
        } else {
            (started + delay).max(Instant::now())
        };
    }
}

/// Why a probe runs again.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Woken {
    /// Its time came.
    Due,
    /// Its last success, on a kept connection, was put in doubt.
    InDoubt,
}

/// Waits until `next`, or while the last success came from a kept connection (`kept`),
/// until that success is put in doubt (a fresh connection to the address failed since,
/// see `pool`: the router may have stopped accepting), so that it is checked again at
/// once, on a fresh connection.
pub(super) async fn until_next(next: Instant, kept: Option<KeptExchange>) -> Woken {
    match kept {
        None => {
            tokio::time::sleep_until(next).await;
            Woken::Due
        }
        // Boxed: the wait for a doubt is part of every probe task's future otherwise
        // (50,000 of them), https and tcp probes' included.
        Some(kept) => tokio::select! {
            () = tokio::time::sleep_until(next) => Woken::Due,
            () = Box::pin(async move { kept.in_doubt().await }) => Woken::InDoubt,
        },
    }
}

impl HealthShared {
    fn new_epoch(&self) -> u64 {
        self.next_epoch.fetch_add(1, Ordering::Relaxed)
    }

    /// A new epoch for the task about to run probe `id`, recorded as its table owner.
    fn claim(&self, id: &ProbeId) -> u64 {
        let epoch = self.new_epoch();
        if let Some(entry) = lock(&self.table).get_mut(id) {
            entry.owner = epoch;
        }
        epoch
    }

    /// A probe left to a peer that observes its target: its verdict is not awaited. The
    /// target is decided from the peer's observation first (the peers' views may be newer
    /// than the last decision), so that readiness never publishes an older answer.
    fn not_mine(&self, id: &ProbeId) {
        if lock(&self.table).agree(id) {
            self.dirty.mark([id.clone()]);
        }
        let ready = {
            let mut pending = lock_pending(&self.pending);
            pending.remove(id) && pending.is_empty()
        };
        if ready {
            self.announce_ready();
        }
    }

    fn first_verdict(&self, id: &ProbeId) {
        if let Some(p) = &self.persist {
            // The verdict a task settles on first, confirmed by its probes (the others
            // reach the file through transitions).
            let kept = lock(&self.table).get(id).map(|e| Kept {
                up: e.state.up,
                reason: match &e.last {
                    Some(l) if l.ok == e.state.up => Arc::from(l.reason.as_str()),
                    _ => e.state.reason.clone(),
                },
                since: e.state.since,
                as_of: None,
            });
            if let Some(kept) = kept {
                p.verdict(id, kept);
            }
        }
        let ready = {
            let mut pending = lock_pending(&self.pending);
            pending.remove(id) && pending.is_empty()
        };
        if ready {
            self.announce_ready();
        }
    }

    /// Every probe has a verdict: publishes what is still waiting for the batch window
    /// (so the first ready answer holds every verdict), then says so, once.
    fn announce_ready(&self) {
        if let Some(batch) = self.dirty.take() {
            let _ = self.publish(batch);
        }
        if !self.ready_announced.swap(true, Ordering::AcqRel) {
            info!("first probe round complete: every target has a verdict");
            self.first_round.send_replace(true);
            // The set held every probe's id (~5 MB at 50,000 probes): give it back.
            lock_pending(&self.pending).shrink_to_fit();
        }
    }

    /// Records a probe result (`verdict`: the hysteresis state after it, `changed`: whether
    /// it changed) and, when what is published changes (the state, or why it is down while
    /// flapping), publishes the snapshot that follows.
    fn record(
        &self,
        id: &ProbeId,
        epoch: u64,
        outcome: &Outcome,
        verdict: bool,
        changed: bool,
        spec: &ProbeSpec,
    ) -> Published {
        let mut table = lock(&self.table);
        let Some(entry) = table.get_mut(id).filter(|e| e.owner == epoch) else {
            return Published::default(); // removed or replaced by a reload while this probe ran
        };
        let now = SystemTime::now();
        // The first result, or the first after a gap (a probe taken over, probes that were
        // late), makes this instance's observation known to the fleet again.
        let first = entry.last.as_ref().is_none_or(|l| {
            now.duration_since(l.at).unwrap_or_default()
                > crate::health::agree::layout::fresh_for(spec)
        });
        entry.last = Some(LastResult {
            ok: outcome.up,
            reason: outcome.reason.to_string(),
            at: now,
            duration: outcome.duration,
        });
        let step = entry.flap.observe(
            &spec.flap,
            std::time::Instant::now(),
            outcome.up,
            verdict,
            changed,
        );
        let transition = (step.up != entry.state.up).then_some(step.up);
        // A result that agrees with what is published, or that changes it, confirms it.
        let confirms = !entry.confirmed && (transition.is_some() || outcome.up == entry.state.up);
        if confirms {
            entry.confirmed = true;
        }
        match step.event {
            Some(event) => flap::log_event(id, &spec.flap, event),
            None if transition.is_none() => {
                if changed {
                    debug!(probe = %id, up = verdict, "verdict change held back: flapping");
                }
                if first || confirms {
                    self.share(&mut table, id);
                }
                return Published::default();
            }
            None => {}
        }
        let published = Published {
            transition,
            flapping: step
                .event
                .map(|e| matches!(e, flap::FlapEvent::Started { .. })),
        };
        let reason = entry
            .flap
            .reason()
            .unwrap_or_else(|| outcome.reason.to_string());
        let since = if transition.is_some() {
            now
        } else {
            entry.state.since
        };
        entry.state = ProbeState {
            up: step.up,
            reason: Arc::from(reason.as_str()),
            since,
        };
        if let Some(p) = &self.persist {
            p.verdict(
                id,
                Kept {
                    up: step.up,
                    reason: entry.state.reason.clone(),
                    since,
                    as_of: None,
                },
            );
        }
        if let Some(up) = transition {
            log_transition(id, up, &reason);
        }
        self.share(&mut table, id);
        self.dirty.mark([id.clone()]);
        published
    }

    /// With a fleet: this instance's observation of `id` changed (its first result, a
    /// new verdict): the fleet gossips it, and the agreed verdict is decided again.
    fn share(&self, table: &mut HealthTable, id: &ProbeId) {
        let Some(slot) = table
            .get(id)
            .and_then(|e| crate::health::agree::layout::Slot::unpack(e.slot))
        else {
            return;
        };
        self.outbox.mark(slot.bucket as usize);
        if table.agree(id) {
            self.dirty.mark([id.clone()]);
        }
    }

    /// Publishes one snapshot with the apps that read a verdict in `batch` rebuilt. The
    /// table's lock is held only to copy those verdicts, never while answers are built.
    fn publish(&self, batch: Batch) -> u64 {
        let mut index = lock_publishing(&self.publishing);
        let current = self.snapshot.load_full();
        let model = current.model.clone();
        let apps = index.get(&model).apps(&batch.ids);
        if apps.is_empty() {
            return 0;
        }
        let view = {
            let ids: Vec<ProbeId> = apps
                .iter()
                .flat_map(|&a| app_probe_ids(&model, a))
                .collect();
            let table = lock(&self.table);
            VerdictView::copy(&table, &ids)
        };
        let updates: Vec<(usize, AppAnswers)> = apps
            .iter()
            .map(|&a| {
                let answers = current.app(a).rebuilt(&model, a, &view, &self.metrics);
                (a, answers)
            })
            .collect();
        for (a, answers) in &updates {
            let was = current.app(*a).fallback_active;
            if answers.fallback_active && !was {
                warn!(
                    app = %answers.hostname,
                    fallback = %answers.fallback_note(&model),
                    "no target is up: answering the fallback"
                );
            } else if was && !answers.fallback_active {
                info!(app = %answers.hostname, "a target is up again: fallback over");
            }
        }
        let rebuilt = updates.len() as u64;
        self.snapshot.store(Arc::new(current.with_apps(updates)));
        drop(index);
        let m = &self.metrics.engine;
        m.publications.inc();
        m.apps.inc_by(rebuilt);
        m.delay.observe(batch.first.elapsed().as_secs_f64());
        debug!(
            apps = rebuilt,
            probes = batch.ids.len(),
            "health publication"
        );
        rebuilt
    }
}

/// Logs a change of the published state once, at INFO, with its reason.
fn log_transition(id: &ProbeId, up: bool, reason: &str) {
    let state = |up: bool| if up { "up" } else { "down" };
    match id {
        ProbeId::App { app, cluster } => info!(
            app = %app,
            cluster = %cluster,
            from = %state(!up),
            to = %state(up),
            reason = %reason,
            "health transition"
        ),
        ProbeId::Cluster(cluster) => info!(
            cluster = %cluster,
            from = %state(!up),
            to = %state(up),
            reason = %reason,
            "cluster health transition"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::publish::ProbeIndex;

    const PROBED: &str = concat!(
        crate::test_support::t_test_zone!(),
        r#"[[clusters]]
name = "a"
ingress = ["192.0.2.10"]
[[clusters]]
name = "b"
ingress = ["192.0.2.11"]
probe = { kind = "tcp", port = 80 }
[[apps]]
hostname = "x.t.test"
probe = { kind = "tcp", port = 80 }
targets = [{ cluster = "a" }]
[[apps]]
hostname = "y.t.test"
targets = [{ cluster = "b" }]
[[apps]]
hostname = "z.t.test"
targets = [{ cluster = "a" }]
"#
    );

    fn down(table: &mut HealthTable, id: &ProbeId) {
        let entry = table.get_mut(id).unwrap();
        entry.state.up = false;
        entry.state.reason = Arc::from("refused");
    }

    /// A reload keeps one copy of a kept probe's settings: the new model's is the running
    /// task's; a probe restarted with new settings runs with the new model's copy.
    #[tokio::test]
    async fn a_reload_keeps_one_copy_of_the_settings_of_each_probe() {
        let text = |port_y: u16| {
            format!(
                "{}[[clusters]]\nname = \"a\"\ningress = [\"192.0.2.10\"]\n\
                 probe_address = \"127.0.0.1\"\n\
                 [[apps]]\nhostname = \"x.t.test\"\nprobe = {{ kind = \"tcp\", port = 1 }}\n\
                 targets = [{{ cluster = \"a\" }}]\n\
                 [[apps]]\nhostname = \"y.t.test\"\nprobe = {{ kind = \"tcp\", port = {port_y} }}\n\
                 targets = [{{ cluster = \"a\" }}]\n",
                crate::test_support::t_test_zone!()
            )
        };
        let load = crate::test_support::model;
        let model = Arc::new(load(&text(1)));
        let metrics = Arc::new(Metrics::new());
        let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::initial(&model, &metrics)));
        let restored = crate::health::persist::Restored {
            table: HealthTable::initial(&model),
            seed: HashMap::new(),
        };
        let mut engine = HealthEngine::start(model.clone(), snapshot, metrics, restored).unwrap();
        let id = |app: &str| ProbeId::App {
            app: app.parse().unwrap(),
            cluster: Arc::from("a"),
        };
        let running = |engine: &HealthEngine, app: &str| engine.running[&id(app)].spec.clone();
        let spec = |m: &Model, app: usize| m.apps[app].targets[0].probe.clone().unwrap();
        assert!(Arc::ptr_eq(
            &running(&engine, "x.t.test."),
            &spec(&model, 0)
        ));
        // y's probe now goes to port 2.
        let mut edited = load(&text(2));
        edited.share_probe_settings(&model);
        assert!(Arc::ptr_eq(
            &spec(&edited, 0),
            &running(&engine, "x.t.test.")
        ));
        assert!(!Arc::ptr_eq(
            &spec(&edited, 1),
            &running(&engine, "y.t.test.")
        ));
        let edited = Arc::new(edited);
        let summary = engine.reload(edited.clone()).unwrap();
        assert_eq!((summary.kept, summary.changed), (1, 1));
        assert!(Arc::ptr_eq(
            &running(&engine, "x.t.test."),
            &spec(&edited, 0)
        ));
        assert!(Arc::ptr_eq(
            &running(&engine, "y.t.test."),
            &spec(&edited, 1)
        ));
        assert_eq!(running(&engine, "y.t.test.").addr.port(), 2);
        engine.stop().await;
    }

    #[test]
    fn what_probes_record_during_a_reload_build_is_carried_to_the_apps_it_touches() {
        let model = crate::from_text(std::path::Path::new("t.toml"), PROBED)
            .unwrap()
            .model;
        let list = probes(&model);
        let mut table = HealthTable::initial(&model);
        table.get_mut(&list[0].0).unwrap().owner = 3;
        let view = table.reload_view(&list);
        let x = ProbeId::App {
            app: model.apps[0].hostname.clone(),
            cluster: Arc::from("a"),
        };
        let b = ProbeId::Cluster(Arc::from("b"));
        // While the snapshot was built from `view`: x went down in a probe that keeps
        // running, and cluster b's probe went down in a task the reload is about to
        // replace with new settings: both are the targets' latest verdicts and must land.
        down(&mut table, &x);
        down(&mut table, &b);
        let (carried, changed) = table.take_for(&list, &view);
        assert_eq!(
            changed.into_iter().collect::<HashSet<_>>(),
            HashSet::from([x.clone(), b.clone()])
        );
        assert!(!carried.get(&x).unwrap().state.up);
        assert!(!carried.get(&b).unwrap().state.up);
        // Moved as they were, owner included; the old table keeps only removed probes.
        assert_eq!(carried.get(&list[0].0).unwrap().owner, 3);
        assert!(table.is_empty());
        let index = ProbeIndex::build(&model);
        assert_eq!(index.apps([&x]), [0]);
        assert_eq!(index.apps([&b]), [1]);
        // A probe new to the table starts initial, and counts as changed only if the
        // view saw another verdict.
        let (again, changed) = HealthTable::default().take_for(&list, &view);
        assert!(changed.is_empty());
        assert_eq!(&*again.get(&x).unwrap().state.reason, "initial state");
    }
}
