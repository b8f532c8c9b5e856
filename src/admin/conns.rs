//! The admin endpoint's connection bounds: a cap on open connections, and a pause after a
//! failed accept.
//!
//! At the cap (`admin.max_connections`) a new connection takes the place of the oldest one
//! that has no request in progress, rather than being turned away: Kubernetes probes
//! `/healthz` here, and a pure cap would let a few hundred idle connections (which cost an
//! attacker nothing) fail the liveness probe until the kubelet kills a healthy pod. A
//! connection serving a request is never evicted; only when all of them are is the new one
//! closed at once. Every open connection holds a descriptor, so the cap is also what the
//! descriptor budget ([`crate::fdbudget`]) counts for this endpoint.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

struct Entry {
    busy: Arc<AtomicBool>,
    evict: CancellationToken,
}

/// The open admin connections, oldest first (ids are handed out in accept order).
pub struct Slots {
    max: usize,
    metrics: Arc<Metrics>,
    open: Mutex<(u64, BTreeMap<u64, Entry>)>,
}

/// Why a new connection was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

impl Slots {
    pub fn new(max: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            metrics,
            open: Mutex::new((0, BTreeMap::new())),
        })
    }

    /// A slot for a new connection: a free one, or the one of the oldest connection
    /// without a request in progress (which is told to close, and counted), or [`Full`].
    pub fn admit(self: &Arc<Self>) -> Result<Slot, Full> {
        let mut guard = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (next, open) = &mut *guard;
        if open.len() >= self.max {
            let victim = open
                .iter()
                .find(|(_, e)| !e.busy.load(Ordering::Acquire))
                .map(|(id, _)| *id)
                .ok_or(Full)?;
            if let Some(e) = open.remove(&victim) {
                e.evict.cancel();
                self.metrics.admin_evicted.inc();
            }
        }
        let id = *next;
        *next += 1;
        let busy = Arc::new(AtomicBool::new(false));
        let evicted = CancellationToken::new();
        open.insert(
            id,
            Entry {
                busy: busy.clone(),
                evict: evicted.clone(),
            },
        );
        self.metrics.admin_connections.inc();
        Ok(Slot {
            id,
            slots: self.clone(),
            busy,
            evicted,
        })
    }
}

/// One admitted connection; gives its place back (and counts out of
/// `gtmd_admin_connections`) when dropped, however the connection ends.
pub struct Slot {
    id: u64,
    slots: Arc<Slots>,
    busy: Arc<AtomicBool>,
    /// Cancelled when a newer connection took this one's place.
    pub evicted: CancellationToken,
}

impl Slot {
    /// The flag a [`Busy`] guard sets while a request is in progress.
    pub fn busy_flag(&self) -> Arc<AtomicBool> {
        self.busy.clone()
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

/// A request in progress on a connection: it cannot be evicted meanwhile.
pub struct Busy(Arc<AtomicBool>);

impl Busy {
    pub fn new(flag: Arc<AtomicBool>) -> Self {
        flag.store(true, Ordering::Release);
        Self(flag)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
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
        let _busy_a = Busy::new(a.busy_flag());
        // a is busy: b (idle) is evicted for c.
        let c = slots.admit().unwrap();
        assert!(!a.evicted.is_cancelled());
        assert!(b.evicted.is_cancelled());
        drop(b);
        assert_eq!(metrics.admin_connections.get(), 2);
        assert_eq!(metrics.admin_evicted.get(), 1);
        // Both busy: the next one is turned away.
        let busy_c = Busy::new(c.busy_flag());
        assert!(slots.admit().is_err());
        drop(busy_c);
        let d = slots.admit().unwrap();
        assert!(c.evicted.is_cancelled());
        drop((a, c, d));
        assert_eq!(metrics.admin_connections.get(), 0);
    }
}
