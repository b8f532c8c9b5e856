//! The bridge between this instance's health table and the gossip: its own observations
//! go out as one key per bucket (`v.00` … `v.ff`, see [`crate::health::agree`]), the
//! live peers' come in and are decided on. Neither runs on the query path: an agreed
//! verdict reaches the answers through the health table's batch publication.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tracing::{debug, info, warn};

use super::{
    SharingGauges,
    member::{LiveNodes, Member, newest_peers},
};
use crate::health::{
    HealthShared,
    agree::assign::Assignment,
    agree::{Changed, OwnBucket, PeerView, PeerViews, codec, layout::BUCKETS, layout::Layout},
};

/// The prefix of the bucket keys.
const PREFIX: &str = "v.";
/// Set once every bucket was published: a peer holding this key holds every bucket (a
/// delta carries a node's keys in the order they were set).
pub const READY_KEY: &str = "ready";
/// The live members this instance sees, itself included, by name, separated by spaces
/// (names are visible ASCII). A starting instance waits for exactly these to be ready
/// ([`warm_start`]) rather than for the set of peers it sees to hold still for a round.
pub const MEMBERS_KEY: &str = "members";

/// A change goes out at once, pushed to the live peers (not at the next round). A burst
/// of changes (an outage is thousands within seconds) goes out as one set of keys per
/// window: at most every tenth of the gossip interval, and at least [`MIN_WINDOW`]
/// apart. Each set re-sends the buckets it changed whole, so the window bounds the
/// bandwidth of a burst (77-86 KB/s per instance for 10,000 targets going down over
/// 5 s with the 100 ms window of a 1 s interval, see the README's fleet figures).
const MIN_WINDOW: Duration = Duration::from_millis(20);

/// How often every bucket is checked again for observations that went stale.
pub const SWEEP: Duration = Duration::from_secs(5);

/// The CPU time of the calling thread: what the fleet's work costs, whatever else runs.
pub fn cpu_time() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn key(bucket: usize) -> String {
    format!("{PREFIX}{bucket:02x}")
}

fn bucket_of_key(key: &str) -> Option<usize> {
    let hex = key.strip_prefix(PREFIX)?;
    (hex.len() == 2)
        .then(|| usize::from_str_radix(hex, 16).ok())
        .flatten()
        .filter(|&b| b < BUCKETS)
}

/// Gossips this instance's own observations as they change (and every [`SWEEP`]).
pub async fn publish_own(
    member: Arc<Member>,
    health: Arc<HealthShared>,
    gauges: SharingGauges,
    gossip_interval: Duration,
) {
    let window = (gossip_interval / 10).max(MIN_WINDOW);
    // The first change after a quiet window goes at once; the next ones wait out the
    // window from the last set sent.
    let mut last_sent: Option<tokio::time::Instant> = None;
    let mut published: Vec<Option<String>> = vec![None; BUCKETS];
    let mut announced = false;
    let mut sweep = tokio::time::interval(SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    health.outbox.mark_all();
    loop {
        // This instance's own observations of the buckets to gossip again.
        let mut own: Vec<OwnBucket> = Vec::new();
        tokio::select! {
            () = health.outbox.marked() => {
                if let Some(at) = last_sent {
                    tokio::time::sleep_until(at + window).await;
                }
            }
            _ = sweep.tick() => {
                let (h, work) = (health.clone(), gauges.work.sweep.clone());
                let swept = tokio::task::spawn_blocking(move || {
                    let started = cpu_time();
                    let out = h.sweep();
                    work.inc_by(cpu_time().saturating_sub(started).as_secs_f64());
                    out
                });
                if let Ok((overruled, disagreeing, states)) = swept.await {
                    gauges.overruled.set(overruled as i64);
                    gauges.disagreeing.set(disagreeing as i64);
                    own = states;
                }
            }
        }
        let started = cpu_time();
        own.extend(
            health
                .outbox
                .take()
                .into_iter()
                .filter_map(|b| health.own_bucket(b)),
        );
        let mut sets = Vec::new();
        for OwnBucket {
            bucket: b,
            hash,
            states,
            since,
        } in own
        {
            if states.is_empty() && published[b].is_none() {
                continue;
            }
            let value = codec::encode(hash, &states, &since);
            if published[b].as_deref() != Some(value.as_str()) {
                published[b] = Some(value.clone());
                sets.push((key(b), value));
            }
        }
        if !announced {
            sets.push((READY_KEY.to_owned(), "1".to_owned()));
            announced = true;
        }
        gauges
            .work
            .publish
            .inc_by(cpu_time().saturating_sub(started).as_secs_f64());
        if !sets.is_empty() {
            debug!(keys = sets.len(), "fleet: own observations gossiped");
            member.set_all(sets).await;
            let peers = member.live_peers().await;
            member.gossip_now(peers.iter().map(|p| p.addr));
            last_sent = Some(tokio::time::Instant::now());
        }
    }
}

/// The live peers' views, kept current from the gossip.
pub struct PeerReader {
    me: String,
    /// By node name: the generation read and the view.
    views: HashMap<String, (u64, PeerView)>,
    layout: Option<Arc<Layout>>,
}

impl PeerReader {
    pub fn new(me: &str) -> Self {
        Self {
            me: me.to_owned(),
            views: HashMap::new(),
            layout: None,
        }
    }

    /// Reads the live nodes against `layout`; the targets of each bucket some peer now
    /// says something else of, and whether peers came or went.
    pub fn read(
        &mut self,
        live: &LiveNodes,
        layout: &Arc<Layout>,
    ) -> (Vec<(usize, Changed)>, bool) {
        let mut changed = vec![Changed::None; BUCKETS];
        let before = self.views.len();
        if !self.layout.as_ref().is_some_and(|l| Arc::ptr_eq(l, layout)) {
            for (_, view) in self.views.values_mut() {
                *view = view.remapped(layout);
            }
            changed.iter_mut().for_each(|c| *c = Changed::All);
            self.layout = Some(layout.clone());
        }
        let peers = newest_peers(live, &self.me);
        // Peers no longer live (or restarted) stop counting at once.
        self.views.retain(|node, (generation, view)| {
            let keep = peers
                .iter()
                .any(|(id, _)| *id.node_id == **node && id.generation_id == *generation);
            if !keep {
                for (b, s) in view.seen.iter().enumerate() {
                    if s.is_some() {
                        changed[b] = Changed::All;
                    }
                }
                info!(peer = %node, "fleet: a peer's observations no longer count (dead, or restarted)");
            }
            keep
        });
        let mut joined = self.views.len() != before;
        for (id, state) in peers {
            let (_, view) = self.views.entry(id.node_id.to_string()).or_insert_with(|| {
                joined = true;
                (id.generation_id, PeerView::new(id.node_id.to_string()))
            });
            for (k, v) in state.iter_prefix(PREFIX) {
                match bucket_of_key(k) {
                    // Unchanged (most keys, most of the time): nothing to copy or read.
                    Some(b) if view.raw[b].as_deref() == Some(v.value.as_str()) => {}
                    Some(b) => {
                        let now = view.set_raw(b, Arc::from(v.value.as_str()), layout);
                        let before = std::mem::replace(&mut changed[b], Changed::None);
                        changed[b] = before.merge(now);
                    }
                    None => debug!(peer = %id.node_id, key = k, "fleet: unknown key ignored"),
                }
            }
        }
        (
            changed
                .into_iter()
                .enumerate()
                .filter(|(_, c)| *c != Changed::None)
                .collect(),
            joined,
        )
    }

    /// The views now.
    pub fn views(&self) -> PeerViews {
        let mut peers: Vec<PeerView> = self.views.values().map(|(_, v)| v.clone()).collect();
        peers.sort_by(|a, b| a.node.cmp(&b.node));
        PeerViews { peers }
    }

    /// Peers that have published every bucket ([`READY_KEY`]), and all live peers.
    pub fn complete(live: &LiveNodes, me: &str) -> (usize, usize) {
        let peers = newest_peers(live, me);
        let ready = peers
            .iter()
            .filter(|(_, s)| s.get(READY_KEY).is_some())
            .count();
        (ready, peers.len())
    }

    /// Whether every member that the live peers name ([`MEMBERS_KEY`]) is live here and
    /// ready: then nothing more is to come. None while a live peer has not said (a start
    /// of its own, or an older version): the caller then waits for the live set to settle.
    pub fn all_named_ready(live: &LiveNodes, me: &str) -> Option<bool> {
        let peers = newest_peers(live, me);
        let ready = |name: &str| {
            peers
                .iter()
                .any(|(id, s)| *id.node_id == *name && s.get(READY_KEY).is_some())
        };
        let mut all = !peers.is_empty();
        for (_, state) in &peers {
            let named = state.get(MEMBERS_KEY)?;
            all &= named.split(' ').filter(|n| *n != me).all(ready);
        }
        Some(all && peers.iter().all(|(id, _)| ready(&id.node_id)))
    }
}

/// The value of [`MEMBERS_KEY`]: this instance and the peers it reads, by name.
fn members(me: &str, reader: &PeerReader) -> String {
    let mut names: Vec<&str> = reader.views.keys().map(String::as_str).collect();
    names.push(me);
    names.sort_unstable();
    names.join(" ")
}

/// Keeps the health table's view of the peers current.
pub async fn read_peers(
    member: Arc<Member>,
    health: Arc<HealthShared>,
    mut reader: PeerReader,
    gauges: SharingGauges,
    probes_per_target: Option<usize>,
) {
    let mut shown: Vec<String> = Vec::new();
    let assign = |reader: &PeerReader| {
        if let Some(k) = probes_per_target {
            let peers = reader.views.keys().cloned();
            health.set_assignment(Some(Assignment::new(member.node(), peers, k)));
        }
    };
    assign(&reader);
    member
        .set(MEMBERS_KEY, &members(member.node(), &reader))
        .await;
    let mut watch = member.live_watcher().await;
    // A peer's change is read as its delta arrives, not at this instance's next round.
    let keys = Arc::new(tokio::sync::Notify::new());
    let _subscribed = member.on_key_change(PREFIX, keys.clone()).await;
    loop {
        let Some(layout) = health.fleet_layout() else {
            return;
        };
        watch.borrow_and_update();
        let live = member.live_states().await;
        let started = cpu_time();
        let (changed, peers) = reader.read(&live, &layout);
        gauges
            .work
            .read
            .inc_by(cpu_time().saturating_sub(started).as_secs_f64());
        if peers {
            assign(&reader);
            member
                .set(MEMBERS_KEY, &members(member.node(), &reader))
                .await;
        }
        if !changed.is_empty() || peers {
            let views = Arc::new(reader.views());
            let (h, work) = (health.clone(), gauges.work.read.clone());
            let applied = tokio::task::spawn_blocking(move || {
                let started = cpu_time();
                let applied = h.peers_changed(views, &layout, &changed);
                work.inc_by(cpu_time().saturating_sub(started).as_secs_f64());
                applied
            })
            .await
            .unwrap_or(false);
            if !applied {
                // A reload changed the layout meanwhile: read again against the new one.
                continue;
            }
            // One series per live peer: a departed peer's goes.
            let views = reader.views();
            for node in shown
                .iter()
                .filter(|n| !views.peers.iter().any(|p| p.node == **n))
            {
                let _ = gauges.peer_observations.remove_label_values(&[node]);
            }
            shown = views.peers.iter().map(|p| p.node.clone()).collect();
            for p in &views.peers {
                gauges
                    .peer_observations
                    .with_label_values(&[&p.node])
                    .set(p.known() as i64);
            }
        }
        tokio::select! {
            changed = watch.changed() => if changed.is_err() {
                warn!("fleet: the gossip's watch ended; peers' observations no longer update");
                return;
            },
            () = keys.notified() => {}
        }
    }
}

/// Keeps `gtmd_fleet_peer_heard_seconds` current: every second, for each live peer, how
/// long ago its heartbeat last advanced here.
pub async fn heard(member: Arc<Member>, gauge: prometheus::GaugeVec) {
    let mut last: HashMap<String, (u64, tokio::time::Instant)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let live = member.live_states().await;
        let now = tokio::time::Instant::now();
        let peers = newest_peers(&live, member.node());
        let names: Vec<String> = peers.iter().map(|(id, _)| id.node_id.to_string()).collect();
        last.retain(|node, _| {
            let keep = names.contains(node);
            if !keep {
                let _ = gauge.remove_label_values(&[node]);
            }
            keep
        });
        for ((_, state), node) in peers.iter().zip(names) {
            let beat = u64::from(state.heartbeat());
            let entry = last.entry(node.clone()).or_insert((beat, now));
            if entry.0 != beat {
                *entry = (beat, now);
            }
            gauge
                .with_label_values(&[&node])
                .set(now.duration_since(entry.1).as_secs_f64());
        }
    }
}

/// Waits, at most `wait`, until the live peers have published all their observations,
/// and returns what they see: a (re)starting instance answers from the fleet's view, not
/// from `initial` states; and whether every live peer's observations arrived (at least
/// one peer's). A peer counts as live only after two of its heartbeats, so a fleet's
/// second peer can become live a round after the first. The wait ends as soon as every
/// member that the live peers name ([`MEMBERS_KEY`]) is live and ready here; otherwise
/// (a peer that names none yet, or names one that is not coming: it just died) once the
/// set of ready peers has stayed the same for `settle` (a gossip round), as before the
/// members were named.
pub async fn warm_start(
    member: &Member,
    layout: &Arc<Layout>,
    wait: Duration,
    settle: Duration,
) -> (PeerReader, bool) {
    let mut reader = PeerReader::new(member.node());
    let mut watch = member.live_watcher().await;
    let started = tokio::time::Instant::now();
    let deadline = started + wait;
    // Since when every live peer is ready, and how many there are.
    let mut complete: Option<(usize, tokio::time::Instant)> = None;
    loop {
        let live = watch.borrow_and_update().clone();
        let (ready, all) = PeerReader::complete(&live, member.node());
        let now = tokio::time::Instant::now();
        complete = match complete {
            _ if all == 0 || ready < all => None,
            Some((n, since)) if n == all => Some((n, since)),
            _ => Some((all, now)),
        };
        let settled = complete.map(|(_, since)| since + settle);
        let named = PeerReader::all_named_ready(&live, member.node()) == Some(true);
        if named || settled.is_some_and(|at| at <= now) {
            reader.read(&live, layout);
            info!(peers = all, took = ?started.elapsed(), "fleet: started from the peers' observations");
            return (reader, true);
        }
        let wake = settled.map_or(deadline, |at| at.min(deadline));
        tokio::select! {
            r = watch.changed() => if r.is_err() { break },
            () = tokio::time::sleep_until(wake) => {
                if wake < deadline {
                    continue;
                }
                let live = watch.borrow_and_update().clone();
                reader.read(&live, layout);
                let (ready, all) = PeerReader::complete(&live, member.node());
                if all == 0 {
                    info!(waited = ?wait, "fleet: no peer answered; starting from this instance's own view");
                    return (reader, false);
                }
                if ready == all {
                    info!(peers = all, took = ?started.elapsed(), "fleet: started from the peers' observations");
                    return (reader, true);
                }
                warn!(ready, peers = all, "fleet: not every peer's observations arrived in time; starting with what did");
                return (reader, false);
            }
        }
    }
    (reader, false)
}
