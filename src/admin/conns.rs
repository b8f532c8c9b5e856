//! The admin endpoint's connection bounds: a cap on open connections, and a pause after a
//! failed accept.
//!
//! At the cap (`admin.max_connections`) a new connection takes the place of the oldest one
//! that has no request in progress, rather than being turned away: Kubernetes probes
//! `/healthz` here, and a pure cap would let a few hundred idle connections (which cost an
//! attacker nothing) fail the liveness probe until the kubelet kills a healthy pod. A
//! connection serving a request is not evicted while its client takes the response; one whose
//! client has taken nothing of it for [`STALLED`] (a client that sent a request and never
//! reads the reply) counts as idle. Only when every connection is busy and progressing is
//! the new one closed at once. Every open connection holds a descriptor, so the cap is also what the
//! descriptor budget ([`crate::fdbudget`]) counts for this endpoint.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// A response whose client has taken nothing of it for this long is stalled: its
/// connection may be evicted like an idle one. A client reading even a large `/metrics`
/// takes a chunk far more often.
pub const STALLED: Duration = Duration::from_secs(1);

struct Entry {
    activity: Activity,
    evict: CancellationToken,
}

/// Whether a connection has a request in progress, and when its response last moved.
#[derive(Clone)]
pub struct Activity {
    busy: Arc<AtomicBool>,
    /// Milliseconds since `epoch` of the request's start or of the last chunk taken.
    moved: Arc<AtomicU64>,
    epoch: Instant,
}

impl Activity {
    pub(crate) fn new(epoch: Instant) -> Self {
        Self {
            busy: Arc::new(AtomicBool::new(false)),
            moved: Arc::new(AtomicU64::new(0)),
            epoch,
        }
    }

    /// The response moved (started, or the client took a chunk).
    pub fn moved(&self) {
        self.moved
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Release);
    }

    /// How long a request in progress has not moved; None when idle.
    pub fn stalled_for(&self) -> Option<Duration> {
        if !self.busy.load(Ordering::Acquire) {
            return None;
        }
        let moved = Duration::from_millis(self.moved.load(Ordering::Acquire));
        Some(self.epoch.elapsed().saturating_sub(moved))
    }

    /// Idle, or busy with a response its client has not taken from for [`STALLED`].
    fn evictable(&self) -> bool {
        self.stalled_for().is_none_or(|d| d >= STALLED)
    }
}

/// The open admin connections, oldest first (ids are handed out in accept order).
pub struct Slots {
    max: usize,
    epoch: Instant,
    metrics: Arc<Metrics>,
    open: Mutex<(u64, BTreeMap<u64, Entry>)>,
}

/// Why a new connection was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

impl Slots {
    pub fn new(max: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Self::with_epoch(max, metrics, Instant::now())
    }

    fn with_epoch(max: usize, metrics: Arc<Metrics>, epoch: Instant) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            epoch,
            metrics,
            open: Mutex::new((0, BTreeMap::new())),
        })
    }

    /// A slot for a new connection: a free one, or the one of the oldest connection
    /// without a request in progress or with a stalled response (which is told to close,
    /// and counted), or [`Full`].
    pub fn admit(self: &Arc<Self>) -> Result<Slot, Full> {
        let mut guard = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (next, open) = &mut *guard;
        if open.len() >= self.max {
            let victim = open
                .iter()
                .find(|(_, e)| e.activity.evictable())
                .map(|(id, _)| *id)
                .ok_or(Full)?;
            if let Some(e) = open.remove(&victim) {
                e.evict.cancel();
                self.metrics.admin_evicted.inc();
            }
        }
        let id = *next;
        *next += 1;
        let activity = Activity::new(self.epoch);
        let evicted = CancellationToken::new();
        open.insert(
            id,
            Entry {
                activity: activity.clone(),
                evict: evicted.clone(),
            },
        );
        self.metrics.admin_connections.inc();
        Ok(Slot {
            id,
            slots: self.clone(),
            activity,
            evicted,
        })
    }
}

/// One admitted connection; gives its place back (and counts out of
/// `gtmd_admin_connections`) when dropped, however the connection ends.
pub struct Slot {
    id: u64,
    slots: Arc<Slots>,
    activity: Activity,
    /// Cancelled when a newer connection took this one's place.
    pub evicted: CancellationToken,
}

impl Slot {
    /// What a [`Busy`] guard marks while a request is in progress.
    pub fn activity(&self) -> Activity {
        self.activity.clone()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .remove(&self.id);
        self.slots.metrics.admin_connections.dec();
    }
}

/// A request in progress on a connection: it is not evicted meanwhile, unless its
/// response stalls.
pub struct Busy(Activity);

impl Busy {
    pub fn new(activity: Activity) -> Self {
        activity.moved();
        activity.busy.store(true, Ordering::Release);
        Self(activity)
    }

    /// The client took part of the response.
    pub fn moved(&self) {
        self.0.moved();
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let metrics = Arc::new(Metrics::new());
        let slots = Slots::new(2, metrics.clone());
        let a = slots.admit().unwrap();
        let b = slots.admit().unwrap();
        let _busy_a = Busy::new(a.activity());
        // a is busy: b (idle) is evicted for c.
        let c = slots.admit().unwrap();
        assert!(!a.evicted.is_cancelled());
        assert!(b.evicted.is_cancelled());
        drop(b);
        assert_eq!(metrics.admin_connections.get(), 2);
        assert_eq!(metrics.admin_evicted.get(), 1);
        // Both busy: the next one is turned away.
        let busy_c = Busy::new(c.activity());
        assert!(slots.admit().is_err());
        drop(busy_c);
        let d = slots.admit().unwrap();
        assert!(c.evicted.is_cancelled());
        drop((a, c, d));
        assert_eq!(metrics.admin_connections.get(), 0);
    }

    #[test]
    fn a_busy_connection_whose_response_stalls_makes_room_like_an_idle_one() {
        let metrics = Arc::new(Metrics::new());
        // As in a server that has run for a while.
        let epoch = Instant::now()
            .checked_sub(STALLED * 10)
            .expect("the clock is past its first seconds");
        let slots = Slots::with_epoch(2, metrics.clone(), epoch);
        let a = slots.admit().unwrap();
        let b = slots.admit().unwrap();
        let busy_a = Busy::new(a.activity());
        let _busy_b = Busy::new(b.activity());
        // Both busy and moving: no room.
        assert!(slots.admit().is_err());
        // b's client has taken nothing since the epoch: b makes room, a (moving) stays.
        b.activity.moved.store(0, Ordering::Release);
        let c = slots.admit().unwrap();
        assert!(b.evicted.is_cancelled());
        assert!(!a.evicted.is_cancelled());
        // a takes a chunk: still moving, so nothing is evictable again.
        busy_a.moved();
        let _busy_c = Busy::new(c.activity());
        drop(b);
        assert!(slots.admit().is_err());
    }
}
