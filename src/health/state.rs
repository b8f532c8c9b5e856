//! Health state of every probe, keyed by a stable identity, and how probes, drain and force
//! combine into whether a target is answered. This is the one place those rules live.
//!
//! Probes are identified by app hostname and cluster name (not by position in the config),
//! so a reload that reorders, adds or removes apps, or changes how a target is probed,
//! keeps the state of every target that is still there: no flap and no re-learning after
//! a reload.

use std::{
    collections::HashMap,
    fmt,
    sync::Arc,
    time::{Duration, SystemTime},
};

use hickory_proto::rr::Name;
use indexmap::IndexMap;

use super::agree::{
    Agreement, OwnBucket, PeerViews, Seen, agreed_reason,
    layout::{Layout, NO_SLOT, Slot},
};
use crate::model::{Model, ProbeSpec};

/// Identifies one probe: an app in one cluster, or a cluster's own probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeId {
    App { app: Name, cluster: Arc<str> },
    Cluster(Arc<str>),
}

/// Equal ids hash alike: an app's name compares without regard to case, and is hashed as
/// its labels in lower case. Written here because `Name`'s own hash feeds the hasher one
/// byte at a time: with the tables keyed by 50,000 ids, that was most of the time a
/// reload spends looking them up.
impl std::hash::Hash for ProbeId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            ProbeId::App { app, cluster } => {
                state.write_u8(0);
                // A name's labels and their lengths fit 255 bytes; the buffer is flushed
                // when full all the same.
                let mut buf = [0u8; 256];
                let mut n = 0;
                for label in app.iter() {
                    for &b in std::iter::once(&(label.len() as u8)).chain(label) {
                        if n == buf.len() {
                            state.write(&buf);
                            n = 0;
                        }
                        buf[n] = b.to_ascii_lowercase();
                        n += 1;
                    }
                }
                state.write(&buf[..n]);
                cluster.hash(state);
            }
            ProbeId::Cluster(cluster) => {
                state.write_u8(1);
                cluster.hash(state);
            }
        }
    }
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
    /// The fleet's verdict when it is not this instance's own (see [`super::agree`]):
    /// what is answered. Boxed: None for nearly every entry.
    pub agreed: Option<Box<Agreed>>,
    /// Where this target's verdict sits in what the fleet gossips
    /// ([`super::agree::layout::Slot`], packed), or `NO_SLOT` without a fleet.
    pub slot: u32,
    /// This instance's probes have confirmed its verdict (a result agreed with it, or
    /// brought it): until then the verdict is an assumption (initial, restored, adopted
    /// from the fleet), shared as "unknown".
    pub confirmed: bool,
}

/// A verdict of the fleet, and what it was decided from (to tell, when it is decided
/// again, whether anything changed without writing its reason again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreed {
    pub state: ProbeState,
    ups: u32,
    known: u32,
    own: Seen,
    /// This instance's reason the text quotes.
    own_reason: Arc<str>,
}

impl ProbeEntry {
    /// The verdict answered: the fleet's when it overrules this instance, else its own.
    pub fn verdict(&self) -> &ProbeState {
        self.agreed.as_deref().map_or(&self.state, |a| &a.state)
    }

    /// This instance's own observation as the fleet counts it: known while its verdict is
    /// confirmed by its probes and its last result is younger than `fresh`.
    pub fn seen(&self, fresh: Duration, now: SystemTime) -> Seen {
        match &self.last {
            Some(l) if self.confirmed && now.duration_since(l.at).unwrap_or_default() <= fresh => {
                Seen::of(self.state.up, &self.state.reason)
            }
            _ => Seen::Unknown,
        }
    }
}

/// Every probe of a model with its settings: app probes per (app, target cluster), then
/// cluster probes. The settings are borrowed from the model: a reload compares 50,000 of
/// them (mostly the same `Arc`, see `Model::share_probe_settings`) and hands the probes it
/// starts a count of the model's.
pub fn probes(model: &Model) -> Vec<(ProbeId, &Arc<ProbeSpec>)> {
    // One name per cluster, shared by its probes' ids (50,000 of them at 10,000 apps).
    let names: Vec<Arc<str>> = model.clusters.iter().map(|c| c.id.clone()).collect();
    let mut out = Vec::new();
    for app in &model.apps {
        for target in &app.targets {
            if let Some(spec) = &target.probe {
                out.push((
                    ProbeId::App {
                        app: app.hostname.clone(),
                        cluster: names[target.cluster].clone(),
                    },
                    spec,
                ));
            }
        }
    }
    for (cluster, name) in model.clusters.iter().zip(names) {
        if let Some(spec) = &cluster.probe {
            out.push((ProbeId::Cluster(name), spec));
        }
    }
    out
}

/// Verdicts of every probe.
#[derive(Debug, Clone, Default)]
pub struct HealthTable {
    /// In a map that also numbers its entries, so that the fleet's passes over every
    /// target reach each entry by its number ([`HealthTable::at`]), not by hashing and
    /// comparing its id: at 50,000 targets that lookup was most of the sweep's time.
    entries: IndexMap<ProbeId, ProbeEntry>,
    /// With a fleet: the layout of what is gossiped and the peers' views.
    agreement: Option<Box<Agreement>>,
    /// With a fleet: per bucket of the layout and target in it, the number of its entry
    /// (`NOT_HELD` when this table has none). Kept in step by [`HealthTable::reindex`]
    /// whenever the entries or the layout change.
    at: Vec<Box<[u32]>>,
}

/// In [`HealthTable::at`]: a target of the layout this table holds no entry for.
const NOT_HELD: u32 = u32::MAX;

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
        agreed: None,
        slot: NO_SLOT,
        confirmed: false,
    }
}

impl HealthTable {
    /// Every probe in its configured initial state.
    pub fn initial(model: &Model) -> Self {
        Self {
            entries: probes(model)
                .into_iter()
                .map(|(id, spec)| {
                    let entry = initial(spec);
                    (id, entry)
                })
                .collect(),
            agreement: None,
            at: Vec::new(),
        }
    }

    /// The verdicts a reload builds its snapshot from: every probe of the new model's list
    /// with its state here, or its initial state when it is new. Copied (an `Arc` count
    /// each) so the build runs without the table's lock.
    pub fn reload_view(&self, new: &[(ProbeId, &Arc<ProbeSpec>)]) -> VerdictView {
        VerdictView(
            new.iter()
                .map(|(id, spec)| {
                    let state = match self.entries.get(id) {
                        Some(e) => e.verdict().clone(),
                        None => initial(spec).state,
                    };
                    (id.clone(), state)
                })
                .collect(),
        )
    }

    /// Health belongs to the target (app × cluster, or the cluster for a cluster probe),
    /// not to how it is probed: an edited interval, path or timeout must not put a dead
    /// cluster back into the answers until the probe re-learns that it is dead.
    ///
    /// The table for a reload's probe list `new`: each probe still configured takes its
    /// entry out of this table as it is now (verdict, last result, flap history, owner:
    /// whatever its task recorded up to this moment), a new probe starts initial; this table
    /// keeps only the entries of removed probes. Moved, not copied: this runs under the
    /// table's lock. Also returns the probes whose verdict differs from `seen`, the view
    /// the reload's snapshot was built from (they changed during the build).
    pub fn take_for(
        &mut self,
        new: &[(ProbeId, &Arc<ProbeSpec>)],
        seen: &VerdictView,
    ) -> (HealthTable, Vec<ProbeId>) {
        let differs = |id: &ProbeId, entry: &ProbeEntry| {
            let now = entry.verdict();
            seen.verdict(id)
                .is_some_and(|s| s.up != now.up || s.reason != now.reason)
        };
        let mut changed = Vec::new();
        // The usual reload keeps every target (settings edited or not): the table then is
        // already the new one, and is handed over whole instead of moved entry by entry
        // (a quarter of the reload's time under this lock at 50,000 probes). A model
        // never lists a probe twice (hostnames, cluster names and an app's targets are
        // unique), so as many ids as entries, all found, is the same set.
        if self.entries.len() == new.len() {
            let mut all = true;
            for (id, _) in new {
                match self.entries.get(id) {
                    Some(entry) if differs(id, entry) => changed.push(id.clone()),
                    Some(_) => {}
                    None => {
                        all = false;
                        break;
                    }
                }
            }
            if all {
                let entries = std::mem::take(&mut self.entries);
                let agreement = self.agreement.take();
                let at = std::mem::take(&mut self.at);
                return (
                    HealthTable {
                        entries,
                        agreement,
                        at,
                    },
                    changed,
                );
            }
            changed.clear();
        }
        let entries = new
            .iter()
            .map(|(id, spec)| {
                let entry = self
                    .entries
                    .swap_remove(id)
                    .unwrap_or_else(|| initial(spec));
                if differs(id, &entry) {
                    changed.push(id.clone());
                }
                (id.clone(), entry)
            })
            .collect();
        let mut table = HealthTable {
            entries,
            agreement: self.agreement.take(),
            at: Vec::new(),
        };
        self.at.clear();
        table.reindex();
        (table, changed)
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

    /// The fleet's part, if this instance is in one.
    pub fn agreement(&self) -> Option<&Agreement> {
        self.agreement.as_deref()
    }

    /// Joins a fleet, or takes a new layout (a reload): every entry gets its slot and its
    /// agreed verdict. Returns the probes whose answered verdict changed.
    pub fn set_agreement(&mut self, agreement: Option<Agreement>) -> Vec<ProbeId> {
        for e in self.entries.values_mut() {
            e.slot = NO_SLOT;
        }
        if let Some(a) = &agreement {
            for (id, slot) in a.layout.slots() {
                if let Some(e) = self.entries.get_mut(id) {
                    e.slot = slot.pack();
                }
            }
        }
        self.agreement = agreement.map(Box::new);
        self.reindex();
        let ids: Vec<ProbeId> = self.entries.keys().cloned().collect();
        ids.into_iter().filter(|id| self.agree(id)).collect()
    }

    /// Numbers the entry of every target of the layout ([`HealthTable::at`]).
    fn reindex(&mut self) {
        self.at = match self.agreement.as_deref() {
            None => Vec::new(),
            Some(a) => a
                .layout
                .buckets
                .iter()
                .map(|bucket| {
                    bucket
                        .ids
                        .iter()
                        .map(|id| self.entries.get_index_of(id).map_or(NOT_HELD, |i| i as u32))
                        .collect()
                })
                .collect(),
        };
    }

    /// New views of the peers (same layout).
    pub fn set_peers(&mut self, peers: Arc<PeerViews>) {
        if let Some(a) = &mut self.agreement {
            a.peers = peers;
        }
    }

    /// Decides probe `id`'s answered verdict again from its own state and the peers'
    /// views; whether it changed (up or down, or why).
    pub fn agree(&mut self, id: &ProbeId) -> bool {
        let Some(e) = self.entries.get_mut(id) else {
            return false;
        };
        let (Some(a), Some(slot)) = (self.agreement.as_deref(), Slot::unpack(e.slot)) else {
            return e.agreed.take().is_some();
        };
        agree_entry(id, e, a, slot, SystemTime::now()).0
    }

    /// One pass over bucket `b` (the fleet's periodic sweep): every target decided again
    /// (own observations may have gone stale), and counted, and this instance's own
    /// observations of the bucket to gossip (its hash and one state per target).
    pub fn sweep_bucket(&mut self, b: usize) -> Swept {
        let mut out = Swept::default();
        let Some(a) = self.agreement.as_deref() else {
            return out;
        };
        let (Some(bucket), Some(at)) = (a.layout.buckets.get(b), self.at.get(b)) else {
            return out;
        };
        let now = SystemTime::now();
        let mut own = OwnBucket::with_capacity(b, bucket.hash, bucket.ids.len());
        for (i, (id, &n)) in bucket.ids.iter().zip(at.iter()).enumerate() {
            let slot = Slot {
                bucket: b as u16,
                index: i as u32,
            };
            let Some((held, e)) = self.entries.get_index_mut(n as usize) else {
                own.push_unknown();
                continue;
            };
            debug_assert_eq!(held, id, "the layout's index is stale");
            let (changed, seen) = agree_entry(id, e, a, slot, now);
            if changed {
                out.changed.push(id.clone());
            }
            own.push(seen, e);
            let answered = e.verdict().up;
            out.overruled += usize::from(seen.up().is_some_and(|up| up != answered));
            let differs = seen.up().is_some_and(|up| up != answered)
                || a.peers
                    .peers
                    .iter()
                    .any(|p| p.at(slot).up().is_some_and(|up| up != answered));
            out.disagreeing += usize::from(differs);
        }
        out.own = Some(own);
        out
    }

    /// A probe task starts probing `id` (at its start, or taking it over from an instance
    /// that died): without a result of its own yet, this instance adopts the verdict it
    /// answers (the fleet's) as its own, so that its hysteresis starts from what the fleet
    /// knew, not from an initial or stale state. Returns the state to start from.
    pub fn adopt_answered(&mut self, id: &ProbeId) -> Option<bool> {
        let e = self.entries.get_mut(id)?;
        let fresh = self
            .agreement
            .as_deref()
            .zip(Slot::unpack(e.slot))
            .map(|(a, slot)| a.layout.fresh(slot));
        let known = fresh.is_some_and(|f| e.seen(f, SystemTime::now()) != Seen::Unknown);
        if !known && let Some(agreed) = e.agreed.take() {
            e.state = agreed.state;
            e.confirmed = false;
        }
        Some(e.state.up)
    }

    /// Whether a peer has a fresh observation of `id` (readable: same targets).
    pub fn peers_observe(&self, id: &ProbeId) -> bool {
        let (Some(a), Some(slot)) = (
            self.agreement.as_deref(),
            self.entries.get(id).and_then(|e| Slot::unpack(e.slot)),
        ) else {
            return false;
        };
        a.peers.peers.iter().any(|p| p.at(slot) != Seen::Unknown)
    }

    /// This instance's own observations of bucket `b`'s targets, in layout order (what it
    /// gossips).
    pub fn own_bucket(&self, b: usize) -> Option<OwnBucket> {
        let a = self.agreement.as_deref()?;
        let bucket = a.layout.buckets.get(b)?;
        let now = SystemTime::now();
        let fresh = |i: usize| Duration::from_millis(u64::from(bucket.fresh_ms[i]));
        let mut own = OwnBucket::with_capacity(b, bucket.hash, bucket.ids.len());
        for (i, &n) in self.at.get(b)?.iter().enumerate() {
            match self.entries.get_index(n as usize) {
                Some((_, e)) => own.push(e.seen(fresh(i), now), e),
                None => own.push_unknown(),
            }
        }
        Some(own)
    }

    /// Decides bucket `b`'s targets again (the peers' views of it changed); the probes
    /// whose answered verdict changed.
    pub fn agree_bucket(&mut self, b: usize) -> Vec<ProbeId> {
        let Some(layout) = self.layout() else {
            return Vec::new();
        };
        let Some(bucket) = layout.buckets.get(b) else {
            return Vec::new();
        };
        (0..bucket.ids.len())
            .filter(|&i| self.agree_at(b, i))
            .map(|i| bucket.ids[i].clone())
            .collect()
    }

    /// Decides again the targets of bucket `b` that `which` names; the probes whose
    /// answered verdict changed.
    pub fn agree_in(&mut self, b: usize, which: &super::agree::Changed) -> Vec<ProbeId> {
        use super::agree::Changed;
        let Some(layout) = self.layout() else {
            return Vec::new();
        };
        let Some(bucket) = layout.buckets.get(b) else {
            return Vec::new();
        };
        match which {
            Changed::None => Vec::new(),
            Changed::All => self.agree_bucket(b),
            Changed::Some(at) => at
                .iter()
                .map(|&i| i as usize)
                .filter(|&i| i < bucket.ids.len() && self.agree_at(b, i))
                .map(|i| bucket.ids[i].clone())
                .collect(),
        }
    }

    /// [`HealthTable::agree`] for the target at index `i` of bucket `b` of the layout.
    fn agree_at(&mut self, b: usize, i: usize) -> bool {
        let Some(a) = self.agreement.as_deref() else {
            return false;
        };
        let (Some(id), Some(&n)) = (
            a.layout.buckets.get(b).and_then(|bucket| bucket.ids.get(i)),
            self.at.get(b).and_then(|at| at.get(i)),
        ) else {
            return false;
        };
        let Some((held, e)) = self.entries.get_index_mut(n as usize) else {
            return false;
        };
        debug_assert_eq!(held, id, "the layout's index is stale");
        let slot = Slot {
            bucket: b as u16,
            index: i as u32,
        };
        agree_entry(id, e, a, slot, SystemTime::now()).0
    }

    /// The layout of the fleet's gossip, if in a fleet.
    pub fn layout(&self) -> Option<Arc<Layout>> {
        self.agreement.as_deref().map(|a| a.layout.clone())
    }
}

impl OwnBucket {
    fn with_capacity(bucket: usize, hash: u64, n: usize) -> Self {
        Self {
            bucket,
            hash,
            states: Vec::with_capacity(n),
            since: Vec::with_capacity(n),
        }
    }

    /// The next target: seen as `seen`, by entry `e` (since when its own verdict holds).
    fn push(&mut self, seen: Seen, e: &ProbeEntry) {
        self.states.push(seen);
        self.since.push(if seen == Seen::Unknown {
            0
        } else {
            super::agree::epoch_secs(e.state.since)
        });
    }

    fn push_unknown(&mut self) {
        self.states.push(Seen::Unknown);
        self.since.push(0);
    }
}

/// What one pass of the fleet's sweep found in a bucket ([`HealthTable::sweep_bucket`]).
#[derive(Debug, Default)]
pub struct Swept {
    /// Probes whose answered verdict changed.
    pub changed: Vec<ProbeId>,
    /// Targets whose answered verdict this instance's own fresh observation contradicts.
    pub overruled: usize,
    /// Targets some fresh observation (own or a peer's) disagrees with what is answered.
    pub disagreeing: usize,
    /// This instance's own observations of the bucket, to gossip.
    pub own: Option<OwnBucket>,
}

/// Decides the answered verdict of entry `e` (probe `id`, at `slot`) from its own state
/// and the peers' views; whether it changed (up or down, or why), and this instance's own
/// observation as counted.
fn agree_entry(
    id: &ProbeId,
    e: &mut ProbeEntry,
    a: &Agreement,
    slot: Slot,
    now: SystemTime,
) -> (bool, Seen) {
    let own = e.seen(a.layout.fresh(slot), now);
    let d = a.decide(slot, own);
    // Most targets, most of the time (every pass of the sweep): answered from the own
    // view, and still so. Nothing to compare or write.
    let own_view = match d.up {
        None => true,
        Some(up) => own.up() == Some(up) && up == e.state.up,
    };
    if own_view && e.agreed.is_none() {
        return (false, own);
    }
    let before = e.verdict().clone();
    let agreed = match d.up {
        // Alone: the own view, when this instance has one. Without any fresh
        // observation (a start, a target whose prober just died) the last answered
        // verdict stays: an instance's stale or initial state never resurrects a
        // target the fleet saw dead.
        None if own == Seen::Unknown => e.agreed.take(),
        None => None,
        // The own view, confirmed.
        Some(up) if own.up() == Some(up) && up == e.state.up => None,
        // The same decision from the same observations: nothing to write.
        Some(up)
            if e.agreed.as_deref().is_some_and(|a| {
                a.state.up == up
                    && (a.ups, a.known, a.own) == (d.ups, d.known, own)
                    && Arc::ptr_eq(&a.own_reason, &e.state.reason)
            }) =>
        {
            return (false, own);
        }
        Some(up) => {
            let since = if before.up == up { before.since } else { now };
            Some(Box::new(Agreed {
                state: ProbeState {
                    up,
                    reason: Arc::from(agreed_reason(&d, own, &e.state.reason).as_str()),
                    since,
                },
                ups: d.ups,
                known: d.known,
                own,
                own_reason: e.state.reason.clone(),
            }))
        }
    };
    e.agreed = agreed;
    let after = e.verdict();
    if before.up != after.up {
        log_agreed(id, after, &e.state);
    }
    (before.up != after.up || before.reason != after.reason, own)
}

/// Logs when the fleet starts or stops overruling this instance's own verdict.
fn log_agreed(id: &ProbeId, answered: &ProbeState, own: &ProbeState) {
    if answered.up == own.up {
        tracing::info!(probe = %id, up = answered.up, "fleet: answering this instance's own verdict again");
    } else {
        tracing::info!(probe = %id, up = answered.up, own = %own.reason, reason = %answered.reason, "fleet: the agreed verdict overrules this instance's own");
    }
}

/// Where [`target_state`] reads probe verdicts: the whole table, or a [`VerdictView`] of
/// the few states a publication copied out of it, so that answers are rebuilt without
/// holding the table's lock (probe tasks take it for every result).
pub trait Verdicts {
    fn verdict(&self, id: &ProbeId) -> Option<&ProbeState>;
}

impl Verdicts for HealthTable {
    fn verdict(&self, id: &ProbeId) -> Option<&ProbeState> {
        self.entries.get(id).map(ProbeEntry::verdict)
    }
}

/// Copied verdicts of some probes: what the apps of one publication read.
#[derive(Debug, Default)]
pub struct VerdictView(HashMap<ProbeId, ProbeState>);

impl VerdictView {
    /// The verdicts of `ids` in `table` (those it holds), copied: one `Arc` count each.
    pub fn copy<'a>(table: &HealthTable, ids: impl IntoIterator<Item = &'a ProbeId>) -> Self {
        let mut view = HashMap::new();
        for id in ids {
            if let Some(e) = table.entries.get(id) {
                view.entry(id.clone())
                    .or_insert_with(|| e.verdict().clone());
            }
        }
        Self(view)
    }
}

impl Verdicts for VerdictView {
    fn verdict(&self, id: &ProbeId) -> Option<&ProbeState> {
        self.0.get(id)
    }
}

/// Every probe whose verdict [`target_state`] may read for the targets of app `app`: each
/// target's cluster probe and app probe (whether or not configured).
pub fn app_probe_ids(model: &Model, app: usize) -> impl Iterator<Item = ProbeId> + '_ {
    let a = &model.apps[app];
    a.targets.iter().flat_map(move |t| {
        let cluster = model.clusters[t.cluster].id.clone();
        [
            ProbeId::Cluster(cluster.clone()),
            ProbeId::App {
                app: a.hostname.clone(),
                cluster,
            },
        ]
    })
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
    table: &impl Verdicts,
    app: usize,
    target: usize,
) -> (TargetState, Arc<str>) {
    let a = &model.apps[app];
    let t = &a.targets[target];
    let cluster = &model.clusters[t.cluster];
    if t.drain {
        return (TargetState::Drained, "target drained".into());
    }
    if cluster.drain {
        return (
            TargetState::Drained,
            format!("cluster {} drained", cluster.name).into(),
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
        return (forced(up), format!("forced {}", forced(up)).into());
    }
    if let Some(up) = cluster.force {
        return (
            forced(up),
            format!("cluster {} forced {}", cluster.name, forced(up)).into(),
        );
    }
    if let Some(c) = table.verdict(&ProbeId::Cluster(cluster.id.clone()))
        && !c.up
    {
        return (
            TargetState::Down,
            format!("cluster {} probe down: {}", cluster.name, c.reason).into(),
        );
    }
    let id = ProbeId::App {
        app: a.hostname.clone(),
        cluster: cluster.id.clone(),
    };
    match table.verdict(&id) {
        Some(p) if p.up => (TargetState::Up, p.reason.clone()),
        Some(p) => (TargetState::Down, p.reason.clone()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(interval: &str, path: &str, extra_app: bool) -> String {
        let mut s = format!(
            concat!(
                r#"
[health.defaults]
kind = "http"
port = 80
interval = "{interval}"
"#,
                crate::test_support::t_test_zone!(),
                r#"[[clusters]]
name = "a"
ingress = ["192.0.2.10"]
probe = {{ kind = "tcp", port = 81, interval = "{interval}" }}
[[apps]]
hostname = "x.t.test"
probe = {{ path = "{path}" }}
targets = [{{ cluster = "a" }}]
"#
            ),
            interval = interval,
            path = path
        );
        if extra_app {
            s.push_str("[[apps]]\nhostname = \"y.t.test\"\ntargets = [{ cluster = \"a\" }]\n");
        }
        s
    }

    fn model(text: &str) -> Model {
        crate::from_text(std::path::Path::new("t.toml"), text)
            .unwrap()
            .model
    }

    /// With a fleet: an instance with no observation of its own answers its peers' view;
    /// when that view goes (its only observer died), the last answered verdict stays
    /// rather than the instance's initial state, and a probe that takes the target over
    /// starts from it.
    #[test]
    fn without_any_fresh_observation_the_last_answered_verdict_stays() {
        use crate::health::agree::{PeerView, PeerViews, codec};
        let model = model(&config("5s", "/", false));
        let list = probes(&model);
        let layout = Arc::new(Layout::build(&list));
        let x = app("x.t.test.");
        let (_, slot) = layout.slots().find(|(id, _)| **id == x).unwrap();
        let bucket = &layout.buckets[slot.bucket as usize];
        let mut states = vec![Seen::Up; bucket.ids.len()];
        states[slot.index as usize] = Seen::Refused;
        let mut peer = PeerView::new("b".into());
        peer.set_raw(
            slot.bucket as usize,
            Arc::from(codec::encode(bucket.hash, &states, &[])),
            &layout,
        );
        let mut table = HealthTable::initial(&model);
        let changed = table.set_agreement(Some(Agreement {
            layout,
            peers: Arc::new(PeerViews { peers: vec![peer] }),
            up_fraction: 0.5,
        }));
        assert!(changed.contains(&x));
        let answered = |t: &HealthTable| t.verdict(&x).unwrap().clone();
        assert!(!answered(&table).up);
        assert!(
            answered(&table)
                .reason
                .starts_with("fleet: 1 of 1 instances see it down")
        );
        // The peer dies: nobody has a fresh observation; it stays down.
        table.set_peers(Arc::new(PeerViews::default()));
        assert!(!table.agree(&x));
        assert!(!answered(&table).up);
        // This instance takes the probe over: it starts from down.
        assert_eq!(table.adopt_answered(&x), Some(false));
        assert!(!table.get(&x).unwrap().state.up);
    }

    #[test]
    fn ids_equal_without_regard_to_case_hash_alike() {
        use std::hash::BuildHasher;
        let hasher = std::collections::hash_map::RandomState::new();
        let (lower, upper) = (app("x.t.test."), app("X.T.Test."));
        assert_eq!(lower, upper);
        assert_eq!(hasher.hash_one(&lower), hasher.hash_one(&upper));
        assert_ne!(lower, app("x.t.test2."));
        let table: std::collections::HashSet<ProbeId> =
            [lower, ProbeId::Cluster(Arc::from("a"))].into();
        assert!(table.contains(&upper));
        assert!(!table.contains(&ProbeId::Cluster(Arc::from("b"))));
    }

    fn app(name: &str) -> ProbeId {
        ProbeId::App {
            app: name.parse().unwrap(),
            cluster: Arc::from("a"),
        }
    }

    /// What a reload leaves in the table for `new` (the path `HealthEngine::reload` takes).
    fn carried(table: &HealthTable, new: &Model) -> HealthTable {
        table
            .clone()
            .take_for(&probes(new), &VerdictView::default())
            .0
    }

    #[test]
    fn a_settings_change_keeps_the_targets_verdict_and_only_new_targets_start_initial() {
        let old = model(&config("5s", "/", false));
        let mut table = HealthTable::initial(&old);
        let since = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let last = LastResult {
            ok: false,
            reason: "connection refused".into(),
            at: since,
            duration: Duration::from_millis(1),
        };
        for id in [app("x.t.test."), ProbeId::Cluster(Arc::from("a"))] {
            let e = table.get_mut(&id).unwrap();
            e.state = ProbeState {
                up: false,
                reason: Arc::from("connection refused"),
                since,
            };
            e.last = Some(last.clone());
        }
        let before_app = table.get(&app("x.t.test.")).unwrap().clone();
        let before_cluster = table
            .get(&ProbeId::Cluster(Arc::from("a")))
            .unwrap()
            .clone();
        // The interval (every probe), then the app probe's path, then both with a new app.
        for text in [
            config("4s", "/", false),
            config("5s", "/ready", false),
            config("4s", "/ready", true),
        ] {
            let new = model(&text);
            let (_, old_spec) = probes(&old).into_iter().next().unwrap();
            let (_, new_spec) = probes(&new).into_iter().next().unwrap();
            assert_ne!(old_spec, new_spec, "the edit changes the probe's settings");
            let carried = carried(&table, &new);
            assert_eq!(carried.get(&app("x.t.test.")), Some(&before_app));
            assert_eq!(
                carried.get(&ProbeId::Cluster(Arc::from("a"))),
                Some(&before_cluster)
            );
        }
        let new = model(&config("4s", "/ready", true));
        let carried = carried(&table, &new);
        let y = carried.get(&app("y.t.test.")).unwrap();
        assert!(y.state.up && &*y.state.reason == "initial state" && y.last.is_none());
        // A target taken out of the configuration leaves the table.
        let carried_back = self::carried(&carried, &old);
        assert!(carried_back.get(&app("y.t.test.")).is_none());
        assert_eq!(carried_back.len(), 2);
    }

    /// The fleet's passes over every target (sweep, own observations) reach each target's
    /// entry by its number in the table: still its own entry after a reload that removes
    /// one target (the others move) and adds another.
    #[test]
    fn the_fleets_passes_read_each_targets_own_entry_across_a_reload() {
        let config = |apps: &[&str]| {
            let mut text = format!(
                "[health.defaults]\nkind = \"http\"\nport = 80\n{}\
                 [[clusters]]\nname = \"a\"\ningress = [\"192.0.2.10\"]\n",
                crate::test_support::t_test_zone!()
            );
            for a in apps {
                text.push_str(&format!(
                    "[[apps]]\nhostname = \"{a}.t.test\"\ntargets = [{{ cluster = \"a\" }}]\n"
                ));
            }
            model(&text)
        };
        // Each app's own observation tells which app it is: down (refused) or up, by name.
        let expected = |id: &ProbeId| match id {
            ProbeId::App { app, .. } if app.to_ascii().starts_with('d') => Seen::Refused,
            _ => Seen::Up,
        };
        let observe = |table: &mut HealthTable, model: &Model| {
            let now = SystemTime::now();
            for (id, _) in probes(model) {
                let e = table.get_mut(&id).unwrap();
                let up = expected(&id) == Seen::Up;
                e.state = ProbeState {
                    up,
                    reason: Arc::from(if up { "ok" } else { "connection refused" }),
                    since: now,
                };
                e.last = Some(LastResult {
                    ok: up,
                    reason: e.state.reason.to_string(),
                    at: now,
                    duration: Duration::from_millis(1),
                });
                e.confirmed = true;
            }
        };
        let join = |table: &mut HealthTable, model: &Model| {
            table.set_agreement(Some(Agreement {
                layout: Arc::new(Layout::build(&probes(model))),
                peers: Arc::new(PeerViews::default()),
                up_fraction: 0.5,
            }));
        };
        let check = |table: &mut HealthTable| {
            let layout = table.layout().unwrap();
            for (b, bucket) in layout.buckets.iter().enumerate() {
                let want: Vec<Seen> = bucket.ids.iter().map(expected).collect();
                assert_eq!(table.own_bucket(b).unwrap().states, want, "bucket {b}");
                assert_eq!(
                    table.sweep_bucket(b).own.unwrap().states,
                    want,
                    "bucket {b}"
                );
            }
        };
        let old = config(&["u1", "d2", "u3", "d4", "u5", "d6"]);
        let mut table = HealthTable::initial(&old);
        observe(&mut table, &old);
        join(&mut table, &old);
        check(&mut table);
        // A reload: u1 goes (the entries after it are renumbered), d7 comes.
        let new = config(&["d2", "u3", "d4", "u5", "d6", "d7"]);
        let (mut carried, _) = table.take_for(&probes(&new), &VerdictView::default());
        observe(&mut carried, &new);
        join(&mut carried, &new);
        check(&mut carried);
    }
}
