//! The fleet's agreed view of a target (issue 15): what each instance observes is shared
//! over gossip ([`crate::fleet`]), and a target is answered as up when at least
//! `fleet.up_fraction` of the instances with a fresh observation of it see it up.
//!
//! - **What is shared** is each instance's own published verdict (after its hysteresis and
//!   flap damping), one byte per target ([`Seen`]), in buckets ([`layout`], [`codec`]).
//! - **Fresh**: an instance shares a verdict as known only while its last probe result is
//!   younger than twice the interval plus the timeout; otherwise (not probed yet, probes
//!   stalled) it shares "unknown", which counts for nobody. An instance the failure
//!   detector marks dead stops counting at once (its views are dropped).
//! - **Alone** (no peer with a fresh observation of the target) an instance decides from
//!   its own view, as without a fleet. A (re)started instance whose own probes have not run
//!   yet takes the peers' view: it never answers its `initial` state while peers know.
//! - Drain, force and fallback apply on the agreed state (in `target_state`), as on a
//!   local one.
//!
//! Everything here runs off the query path: an agreed verdict is stored in the health
//! table's entry and reaches the answers as a local transition does (a batch publication).

pub mod assign;
pub mod codec;
pub mod layout;

use std::sync::Arc;

use layout::{BUCKETS, Layout, Slot};

/// What one instance sees of one target, as it is shared: one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// No fresh observation (not probed yet, or its probes are late).
    Unknown,
    Up,
    /// Down, with the kind of failure (the full reason stays with the instance).
    Refused,
    Timeout,
    Http,
    Flapping,
    Down,
}

impl Seen {
    pub fn char(self) -> char {
        match self {
            Seen::Unknown => '?',
            Seen::Up => '+',
            Seen::Refused => 'r',
            Seen::Timeout => 't',
            Seen::Http => 'h',
            Seen::Flapping => 'f',
            Seen::Down => 'd',
        }
    }

    pub fn from_char(c: char) -> Option<Self> {
        Some(match c {
            '?' => Seen::Unknown,
            '+' => Seen::Up,
            'r' => Seen::Refused,
            't' => Seen::Timeout,
            'h' => Seen::Http,
            'f' => Seen::Flapping,
            'd' => Seen::Down,
            _ => return None,
        })
    }

    /// Up or down; None when unknown.
    pub fn up(self) -> Option<bool> {
        match self {
            Seen::Unknown => None,
            Seen::Up => Some(true),
            _ => Some(false),
        }
    }

    /// A verdict as shared: up, or down with the kind of its reason.
    pub fn of(up: bool, reason: &str) -> Self {
        if up {
            return Seen::Up;
        }
        let r = reason.to_ascii_lowercase();
        if r.starts_with("flapping") {
            Seen::Flapping
        } else if r.contains("refused") {
            Seen::Refused
        } else if r.contains("timed out") || r.contains("timeout") {
            Seen::Timeout
        } else if r.starts_with("http") || r.contains("status") {
            Seen::Http
        } else {
            Seen::Down
        }
    }

    /// For the status API and the reasons of agreed verdicts.
    pub fn describe(self) -> &'static str {
        match self {
            Seen::Unknown => "unknown",
            Seen::Up => "up",
            Seen::Refused => "down (refused)",
            Seen::Timeout => "down (timeout)",
            Seen::Http => "down (http)",
            Seen::Flapping => "down (flapping)",
            Seen::Down => "down",
        }
    }
}

/// One peer's observations, as read from its gossip.
#[derive(Debug, Clone)]
pub struct PeerView {
    pub node: String,
    /// The value of each bucket as received (kept to read it again after a reload
    /// changes this instance's layout).
    pub raw: Vec<Option<Arc<str>>>,
    /// Each bucket read against this instance's layout: None where nothing was received,
    /// or where the peer's bucket holds other targets (another configuration).
    pub seen: Vec<Option<Arc<[Seen]>>>,
    /// Per bucket and target: since when (seconds since the epoch) the peer has seen the
    /// target as it says: as the peer says it (a target not in its bucket's common
    /// state), else when this instance saw the peer's view change (its clock).
    pub since: Vec<Option<Arc<Vec<u32>>>>,
}

impl PeerView {
    pub fn new(node: String) -> Self {
        Self {
            node,
            raw: vec![None; BUCKETS],
            seen: vec![None; BUCKETS],
            since: vec![None; BUCKETS],
        }
    }

    /// Since when this peer has said what it says of the target at `slot`.
    pub fn since(&self, slot: Slot) -> Option<std::time::SystemTime> {
        let secs = *self.since[slot.bucket as usize]
            .as_ref()?
            .get(slot.index as usize)?;
        Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(secs)))
    }

    /// What this peer sees of the target at `slot`.
    pub fn at(&self, slot: Slot) -> Seen {
        self.seen[slot.bucket as usize]
            .as_ref()
            .and_then(|s| s.get(slot.index as usize).copied())
            .unwrap_or(Seen::Unknown)
    }

    /// Reads bucket `b`'s value against `layout`; which of its targets it now says
    /// something else of.
    pub fn set_raw(&mut self, b: usize, value: Arc<str>, layout: &Layout) -> Changed {
        if self.raw[b].as_deref() == Some(&*value) {
            return Changed::None;
        }
        let bucket = &layout.buckets[b];
        let mut said: Option<Box<[u32]>> = None;
        let seen: Option<Arc<[Seen]>> = match codec::decode(&value, bucket.hash, bucket.ids.len()) {
            Ok(d) => {
                said = d.since;
                Some(Arc::from(d.states))
            }
            // Expected while configurations differ (a rollout): not read, quietly.
            Err(codec::DecodeError::OtherTargets) => None,
            // Once per new value: a peer of another version, or a bug.
            Err(e) => {
                tracing::warn!(peer = %self.node, bucket = b, error = %e, "fleet: a peer's observations do not decode; they do not count");
                None
            }
        };
        self.raw[b] = Some(value);
        let changed = match (&self.seen[b], &seen) {
            (Some(old), Some(new)) if old.len() == new.len() => {
                let at: Vec<u32> = (0..new.len())
                    .filter(|&i| old[i] != new[i])
                    .map(|i| i as u32)
                    .collect();
                if at.is_empty() {
                    Changed::None
                } else {
                    Changed::Some(at)
                }
            }
            (None, None) => Changed::None,
            _ => Changed::All,
        };
        let now = epoch_secs(std::time::SystemTime::now());
        match (&changed, &seen) {
            (_, None) => self.since[b] = None,
            (Changed::All, Some(new)) => self.since[b] = Some(Arc::new(vec![now; new.len()])),
            (Changed::Some(at), Some(_)) => {
                if let Some(since) = self.since[b].as_mut() {
                    let since = Arc::make_mut(since);
                    for &i in at {
                        if let Some(t) = since.get_mut(i as usize) {
                            *t = now;
                        }
                    }
                }
            }
            (Changed::None, Some(_)) => {}
        }
        // Where the peer says since when it has seen a target so, that, not when this
        // instance heard of it.
        if let (Some(said), Some(since)) = (said, self.since[b].as_mut()) {
            let differs = |(i, t): (usize, &u32)| *t != 0 && since.get(i) != Some(t);
            if said.iter().enumerate().any(differs) {
                let since = Arc::make_mut(since);
                for (i, &t) in said.iter().enumerate() {
                    if let Some(at) = since.get_mut(i).filter(|_| t != 0) {
                        *at = t;
                    }
                }
            }
        }
        self.seen[b] = seen;
        changed
    }

    /// Targets this peer has a fresh observation of.
    pub fn known(&self) -> usize {
        self.seen
            .iter()
            .flatten()
            .map(|s| s.iter().filter(|x| **x != Seen::Unknown).count())
            .sum()
    }

    /// The same values read against another layout (after a reload).
    pub fn remapped(&self, layout: &Layout) -> Self {
        let mut out = Self::new(self.node.clone());
        for (b, raw) in self.raw.iter().enumerate() {
            if let Some(raw) = raw {
                out.set_raw(b, raw.clone(), layout);
            }
        }
        out
    }
}

/// This instance's own observations of one bucket, to gossip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnBucket {
    pub bucket: usize,
    /// The bucket's hash (which targets it holds).
    pub hash: u64,
    /// A state per target.
    pub states: Vec<Seen>,
    /// Per target, since when (seconds since the Unix epoch) this instance has seen it
    /// so; 0 where unknown.
    pub since: Vec<u32>,
}

/// Which targets of a bucket a peer's new value says something else of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    None,
    /// Positions in the bucket.
    Some(Vec<u32>),
    All,
}

impl Changed {
    /// Both changes together.
    pub fn merge(self, other: Changed) -> Changed {
        match (self, other) {
            (Changed::All, _) | (_, Changed::All) => Changed::All,
            (Changed::None, x) | (x, Changed::None) => x,
            (Changed::Some(mut a), Changed::Some(b)) => {
                a.extend(b);
                a.sort_unstable();
                a.dedup();
                Changed::Some(a)
            }
        }
    }
}

/// The live peers' views.
#[derive(Debug, Clone, Default)]
pub struct PeerViews {
    pub peers: Vec<PeerView>,
}

/// What the fleet decides for one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Instances with a fresh observation that see it up, and all with a fresh
    /// observation (this one included when its own is fresh).
    pub ups: u32,
    pub known: u32,
    /// Peers among `known`.
    pub peers_known: u32,
    /// The agreed state; None when no peer has a fresh observation (alone: own view).
    pub up: Option<bool>,
}

/// Everything the health table needs to decide with the fleet.
#[derive(Debug, Clone)]
pub struct Agreement {
    pub layout: Arc<Layout>,
    pub peers: Arc<PeerViews>,
    /// `fleet.up_fraction`.
    pub up_fraction: f64,
}

impl Agreement {
    /// The fleet's decision on the target at `slot`, this instance seeing `own`.
    pub fn decide(&self, slot: Slot, own: Seen) -> Decision {
        let mut ups = 0;
        let mut known = 0;
        let mut peers_known = 0;
        for s in self.peers.peers.iter().map(|p| p.at(slot)) {
            if let Some(up) = s.up() {
                known += 1;
                peers_known += 1;
                ups += u32::from(up);
            }
        }
        if let Some(up) = own.up() {
            known += 1;
            ups += u32::from(up);
        }
        let up = (peers_known > 0).then(|| f64::from(ups) >= self.up_fraction * f64::from(known));
        Decision {
            ups,
            known,
            peers_known,
            up,
        }
    }
}

/// `t` in whole seconds since the Unix epoch, as the gossip carries times (0 before it,
/// saturated at the end of `u32`, the year 2106).
pub fn epoch_secs(t: std::time::SystemTime) -> u32 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs().min(u64::from(u32::MAX)) as u32)
}

/// The reason an agreed verdict gives when it is not this instance's own.
pub fn agreed_reason(d: &Decision, own: Seen, own_reason: &str) -> String {
    let (n, word) = match d.up {
        Some(true) => (d.ups, "up"),
        _ => (d.known - d.ups, "down"),
    };
    let own = match own {
        Seen::Unknown => "no fresh observation yet".to_owned(),
        _ => format!("this instance: {own_reason}"),
    };
    format!("fleet: {n} of {} instances see it {word} ({own})", d.known)
}

/// Buckets whose own observations changed since the fleet last gossiped them: marked by
/// the probes (under the table's lock, a flag each), taken by the fleet's publisher.
#[derive(Default)]
pub struct Outbox {
    marked: std::sync::Mutex<Vec<bool>>,
    wake: tokio::sync::Notify,
}

impl Outbox {
    pub fn mark(&self, bucket: usize) {
        let mut m = self.marked.lock().unwrap_or_else(|e| e.into_inner());
        if m.is_empty() {
            m.resize(BUCKETS, false);
        }
        if !std::mem::replace(&mut m[bucket], true) {
            self.wake.notify_one();
        }
    }

    /// Every bucket (a reload, a sweep for observations that went stale).
    pub fn mark_all(&self) {
        let mut m = self.marked.lock().unwrap_or_else(|e| e.into_inner());
        m.clear();
        m.resize(BUCKETS, true);
        self.wake.notify_one();
    }

    /// The marked buckets, unmarked.
    pub fn take(&self) -> Vec<usize> {
        let mut m = self.marked.lock().unwrap_or_else(|e| e.into_inner());
        let out = (0..m.len()).filter(|&b| m[b]).collect();
        m.iter_mut().for_each(|f| *f = false);
        out
    }

    /// Completes once something is marked after the last take.
    pub async fn marked(&self) {
        self.wake.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agreement(peers: &[&[Seen]], up_fraction: f64) -> (Agreement, Slot) {
        let spec = Arc::new(crate::test_support::probe_spec_for_tests());
        let id = crate::health::ProbeId::Cluster(Arc::from("a"));
        let layout = Layout::build(&[(id, &spec)]);
        let (_, slot) = layout.slots().next().unwrap();
        let hash = layout.buckets[slot.bucket as usize].hash;
        let views = peers
            .iter()
            .enumerate()
            .map(|(i, states)| {
                let mut v = PeerView::new(format!("p{i}"));
                v.set_raw(
                    slot.bucket as usize,
                    Arc::from(codec::encode(hash, states, &[])),
                    &layout,
                );
                v
            })
            .collect();
        (
            Agreement {
                layout: Arc::new(layout),
                peers: Arc::new(PeerViews { peers: views }),
                up_fraction,
            },
            slot,
        )
    }

    #[test]
    fn a_target_is_down_only_when_a_majority_of_fresh_observations_say_so() {
        use Seen::*;
        let up = |peers: &[&[Seen]], own: Seen| {
            agreement(peers, 0.5)
                .0
                .decide(agreement(peers, 0.5).1, own)
                .up
        };
        // One instance's path is broken: the two others overrule it.
        assert_eq!(up(&[&[Up], &[Up]], Refused), Some(true));
        // Two of three see it down.
        assert_eq!(up(&[&[Timeout], &[Up]], Refused), Some(false));
        // Half and half: up (down only with a majority).
        assert_eq!(up(&[&[Refused]], Up), Some(true));
        // Unknowns count for nobody; with no peer observation, the own view decides.
        assert_eq!(up(&[&[Unknown], &[Unknown]], Refused), None);
        assert_eq!(up(&[], Refused), None);
        // A (re)started instance with no observation yet takes the peers' view.
        assert_eq!(up(&[&[Refused], &[Refused]], Unknown), Some(false));
        assert_eq!(up(&[&[Unknown], &[Up]], Unknown), Some(true));
        // A stricter fraction: every fresh observation must be up.
        let (a, slot) = agreement(&[&[Up], &[Refused]], 1.0);
        assert_eq!(a.decide(slot, Up).up, Some(false));
        let d = a.decide(slot, Up);
        assert_eq!((d.ups, d.known, d.peers_known), (2, 3, 2));
        assert_eq!(
            agreed_reason(&d, Up, "HTTP 200"),
            "fleet: 1 of 3 instances see it down (this instance: HTTP 200)"
        );
    }

    #[test]
    fn a_peer_bucket_of_other_targets_is_not_read() {
        let (a, slot) = agreement(&[&[Seen::Refused]], 0.5);
        let mut other = PeerView::new("x".into());
        let b = slot.bucket as usize;
        let wrong = Arc::from(codec::encode(12345, &[Seen::Refused], &[]));
        assert_eq!(other.set_raw(b, wrong, &a.layout), Changed::None);
        // A value that fits: every target changed (nothing was known); then only the
        // targets whose state differs.
        let hash = a.layout.buckets[b].hash;
        let fits = |s: Seen| Arc::from(codec::encode(hash, &[s], &[]));
        assert_eq!(other.set_raw(b, fits(Seen::Up), &a.layout), Changed::All);
        assert_eq!(other.set_raw(b, fits(Seen::Up), &a.layout), Changed::None);
        assert_eq!(
            other.set_raw(b, fits(Seen::Timeout), &a.layout),
            Changed::Some(vec![0])
        );
        let other = PeerView::new("x".into());
        assert_eq!(other.at(slot), Seen::Unknown);
        // Read again against a layout where it fits.
        assert_eq!(a.peers.peers[0].remapped(&a.layout).at(slot), Seen::Refused);
        assert_eq!(Seen::of(false, "connection refused"), Seen::Refused);
        assert_eq!(Seen::of(false, "timed out after 2s"), Seen::Timeout);
        assert_eq!(Seen::of(false, "HTTP 503"), Seen::Http);
        assert_eq!(
            Seen::of(false, "flapping: 6 changes in 60s"),
            Seen::Flapping
        );
        assert_eq!(Seen::of(true, "whatever"), Seen::Up);
    }
}
