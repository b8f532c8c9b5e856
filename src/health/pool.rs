//! Keep-alive for `http` probes (`reuse_connections = true`): open connections shared by
//! the probes of one ingress address, without hiding a router that stops accepting.
//!
//! Thousands of apps of one cluster share its router's address, and HTTP/1.1 routes each
//! request by its Host header, so a connection opened for one app's probe can carry the
//! next app's. A fresh connection per probe cost most of gtmd's CPU at 50,000 probes per
//! 5 s, nearly all of it in the kernel (connect, close, socket, epoll registration).
//!
//! **What stays detected.** A router that stops accepting new connections often keeps
//! serving the ones it has, so a pool alone would keep such a router "up" forever. Each
//! address therefore remembers when a *fresh* connection to it was last answered (a byte
//! of a response arrived on it: a completed TCP handshake alone proves nothing, the kernel
//! completes them into the listen backlog of a router that no longer calls accept). A
//! pooled connection is only used while that was within the probe's `fast_interval`; past
//! it the probe connects fresh itself (and its connection joins the pool afterwards). A
//! fresh connection that fails before any answer (refused, timed out, any error, or cut
//! short by the probe's timeout) closes the address's pool and forgets that answer, so
//! every probe of the address connects fresh, and fails as without reuse, until a fresh
//! connection is answered again. Past [`RENEW_AFTER`] of the window one probe renews it
//! with a fresh connection while the others go on with kept ones, so that they need not
//! all connect fresh when it expires and so that a failure is known early.
//!
//! **Successes in doubt are repeated at once.** A probe that succeeded on a kept connection
//! after the router stopped accepting would otherwise keep its target up for a whole
//! `interval`. So when a fresh connection fails, the successes on kept connections taken
//! since the last answered fresh connection was opened are put in doubt ([`KeptExchange::in_doubt`]),
//! and their probes run again at once instead of after `interval`; the gate is closed by
//! then, so they connect fresh and fail like every other probe of the address. With many
//! probes per address (where reuse matters) a fresh connection is tried at least every
//! `RENEW_AFTER × fast_interval`, so a router that stops accepting at T is seen by every
//! target by T + `RENEW_AFTER × fast_interval` + one failed connect, never later than the
//! same target's next probe without reuse (`timeout < interval`, checked by the config).
//! With few probes per address (a kept success is not followed by another probe of the
//! address before its own next one) the kept success was taken at most
//! `RENEW_AFTER × fast_interval` after T, so detection takes at most that much longer than
//! without reuse: 125 ms with the defaults, `interval + (fall − 1) × fast_interval + 0.125 s`.
//!
//! **Bounds.** At most [`MAX_IDLE_PER_ADDRESS`] idle connections per address; one idle
//! longer than [`MAX_IDLE`] is closed rather than used (servers close idle keep-alive
//! connections after a few seconds: Apache and Node.js after 5 s). Each idle connection
//! holds one of the `health.max_concurrent_probes` slots, so probes in flight plus idle
//! connections stay within the descriptor budget planned for probes (`fdbudget`); a
//! connection is closed instead of kept when idle ones would hold more than half of the
//! free slots (so that probes never wait for a slot held by an idle connection). Gauge
//! `gtmd_probe_idle_connections`, counters `gtmd_probe_connections_total{how}` and
//! `gtmd_probe_rechecks_total`.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use prometheus::{IntCounter, IntGauge};
use tokio::{
    net::TcpStream,
    sync::{Notify, OwnedSemaphorePermit, Semaphore},
};

/// Idle connections kept per ingress address. A probe exchange on a LAN takes well under a
/// millisecond, so even 2,000 probes a second per address keep only a few connections
/// busy at once; more would only hold descriptors and server workers. On a loaded machine
/// exchanges slow down and overlap more: with 16, one run at 10,000 apps × 5 clusters saw
/// 15 % of the probes connect fresh (2-5 % in the others).
pub const MAX_IDLE_PER_ADDRESS: usize = 32;

/// A connection idle longer than this is closed, not used: below the shortest common
/// server keep-alive timeout (5 s), so a server rarely closes one just as a probe sends.
pub const MAX_IDLE: Duration = Duration::from_secs(2);

/// How often idle connections past [`MAX_IDLE`] are closed when no probe comes by.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The part of the window (`fast_interval`) after which one probe renews it with a fresh
/// connection. It bounds how long after a router stops accepting a kept success can still
/// be taken unnoticed by a sparse address (1/8: 125 ms with the defaults), at the cost of
/// one fresh connection per address per `fast_interval / 8` (8 a second with the defaults,
/// against ~2,000 a second per address at 10,000 apps without reuse).
pub const RENEW_AFTER: u32 = 8;

/// The pool's metrics.
#[derive(Clone)]
pub struct PoolMetrics {
    /// `gtmd_probe_idle_connections`.
    pub idle: IntGauge,
    /// `gtmd_probe_connections_total{how="opened"}`: fresh connects by reusing probes.
    pub opened: IntCounter,
    /// `{how="reused"}`: exchanges on a pooled connection.
    pub reused: IntCounter,
    /// `{how="stale"}`: pooled connections the server had closed (the probe went on with a
    /// fresh one).
    pub stale: IntCounter,
    /// `gtmd_probe_rechecks_total`: probes run again at once because their success on a
    /// kept connection was put in doubt.
    pub rechecked: IntCounter,
}

impl PoolMetrics {
    /// Handles registered nowhere (tests).
    #[cfg(test)]
    pub fn unregistered() -> Self {
        let counter = |n: &str| IntCounter::new(n, n).unwrap();
        Self {
            idle: IntGauge::new("idle", "idle").unwrap(),
            opened: counter("opened"),
            reused: counter("reused"),
            stale: counter("stale"),
            rechecked: counter("rechecked"),
        }
    }
}

/// The pools of every address probed with `reuse_connections`.
pub struct Pool {
    addrs: Mutex<HashMap<SocketAddr, Address>>,
    /// The probe engine's slots (`health.max_concurrent_probes`).
    slots: Arc<Semaphore>,
    metrics: PoolMetrics,
}

/// One address: its idle connections and its last successful fresh connect.
#[derive(Default)]
struct Address {
    /// Where the probes with a kept success learn that it was put in doubt. An address
    /// is remembered while a probe holds this.
    doubts: Arc<Doubts>,
    /// Oldest first.
    idle: Vec<Idle>,
    /// When a fresh connection was last answered; None since one failed (not accepting).
    fresh_ok: Option<Instant>,
    /// A probe is connecting fresh to renew `fresh_ok` before it is too old (so that the
    /// others need not all connect fresh at once when it expires).
    renewing: bool,
}

struct Idle {
    tcp: TcpStream,
    since: Instant,
    _slot: OwnedSemaphorePermit,
    _counted: Counted,
}

/// One unit of the idle gauge for as long as the connection is pooled.
struct Counted(IntGauge);

impl Counted {
    fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Pool {
    pub fn new(slots: Arc<Semaphore>, metrics: PoolMetrics) -> Self {
        Self {
            addrs: Mutex::new(HashMap::new()),
            slots,
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Address>> {
        // Nothing is left half-done under this lock.
        self.addrs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle connection to `addr` a probe may use, and what tells the probe if its success
    /// on it is put in doubt: None unless a fresh connection to it was answered within
    /// `window` (the probe's `fast_interval`), or when none is idle.
    pub fn take(&self, addr: SocketAddr, window: Duration) -> Option<(TcpStream, KeptExchange)> {
        let now = Instant::now();
        let mut closed = Vec::new();
        let found = {
            let mut addrs = self.lock();
            let a = addrs.get_mut(&addr)?;
            // The gate that keeps a router that stops accepting detected.
            let age = a.fresh_ok.map(|t| now.duration_since(t));
            if age.is_none_or(|age| age > window) {
                return None;
            }
            // Past RENEW_AFTER of the window one probe renews it with a fresh connection
            // while the others go on with kept ones.
            if age.is_some_and(|age| age > window / RENEW_AFTER) && !a.renewing {
                a.renewing = true;
                return None;
            }
            let mut found = None;
            while let Some(idle) = a.idle.pop() {
                if now.duration_since(idle.since) > MAX_IDLE {
                    // The rest are older still.
                    closed.push(idle);
                    closed.append(&mut a.idle);
                    break;
                }
                if usable(&idle.tcp) {
                    found = Some((idle.tcp, KeptExchange::new(&a.doubts, now)));
                    break;
                }
                closed.push(idle);
            }
            found
        };
        drop(closed);
        if found.is_some() {
            self.metrics.reused.inc();
        }
        found
    }

    /// Keeps `tcp` (a connection to `addr` whose last response was read to its end) for
    /// another probe, unless the address is not accepting, its pool is full, or idle
    /// connections hold half of the free probe slots; otherwise it is closed.
    pub fn put(&self, addr: SocketAddr, tcp: TcpStream) {
        // Idle connections never hold more than half of the free slots, so that probes
        // waiting for one are not kept waiting by connections kept for them (at most
        // `MAX_IDLE` + `SWEEP_EVERY` each).
        let idle = usize::try_from(self.metrics.idle.get()).unwrap_or(0);
        if self.slots.available_permits() <= idle {
            return;
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            return;
        };
        let mut addrs = self.lock();
        let Some(a) = addrs.get_mut(&addr) else {
            return;
        };
        if a.fresh_ok.is_none() || a.idle.len() >= MAX_IDLE_PER_ADDRESS {
            return;
        }
        a.idle.push(Idle {
            tcp,
            since: Instant::now(),
            _slot: slot,
            _counted: Counted::new(&self.metrics.idle),
        });
    }

    /// A fresh connection to `addr`, opened at `opened`, was answered. The window counts
    /// from when it was opened, not from when its exchange ended: that can be a whole
    /// timeout later (a body drained until the deadline), and the router may have stopped
    /// accepting meanwhile.
    pub fn accepted(&self, addr: SocketAddr, opened: Instant) {
        let mut addrs = self.lock();
        let a = addrs.entry(addr).or_default();
        a.fresh_ok = Some(a.fresh_ok.map_or(opened, |t| t.max(opened)));
        a.renewing = false;
    }

    /// A fresh connection to `addr` failed before any answer: its pool closes, its probes
    /// connect fresh until one is answered, and the successes on kept connections taken
    /// since the last answered one was opened are put in doubt.
    pub fn refused(&self, addr: SocketAddr) {
        let closed = {
            let mut addrs = self.lock();
            let Some(a) = addrs.get_mut(&addr) else {
                return;
            };
            if let Some(answered) = a.fresh_ok {
                a.doubts.put_in_doubt(answered);
            }
            a.fresh_ok = None;
            a.renewing = false;
            std::mem::take(&mut a.idle)
        };
        drop(closed);
    }

    /// Closes connections idle past [`MAX_IDLE`] and forgets addresses with nothing left
    /// to remember (their probes were removed, or they are probed rarely): forgetting is
    /// always safe, the next probe connects fresh.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut closed = Vec::new();
        self.lock().retain(|_, a| {
            let expired = a
                .idle
                .iter()
                .take_while(|i| now.duration_since(i.since) > MAX_IDLE)
                .count();
            closed.extend(a.idle.drain(..expired));
            !a.idle.is_empty()
                || a.fresh_ok
                    .is_some_and(|t| now.duration_since(t) <= MAX_IDLE)
                // A probe waits to learn whether its kept success is in doubt.
                || Arc::strong_count(&a.doubts) > 1
        });
        drop(closed);
    }

    /// Idle connections to `addr` (tests).
    #[cfg(test)]
    pub fn idle(&self, addr: SocketAddr) -> usize {
        self.lock().get(&addr).map_or(0, |a| a.idle.len())
    }

    /// Counts a pooled connection found closed by the server.
    pub fn stale(&self) {
        self.metrics.stale.inc();
    }

    /// Counts a probe run again at once because its kept success was put in doubt.
    pub fn rechecked(&self) {
        self.metrics.rechecked.inc();
    }

    /// How many times successes on kept connections to `addr` were put in doubt (tests).
    #[cfg(test)]
    pub fn doubted(&self, addr: SocketAddr) -> u64 {
        self.lock().get(&addr).map_or(0, |a| a.doubts.state().count)
    }

    /// Runs [`Self::sweep`] every [`SWEEP_EVERY`] (until the task is aborted).
    pub async fn sweep_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.sweep();
        }
    }
}

/// Successes on kept connections to one address put in doubt: each time a fresh connection
/// fails, those taken after the last answered fresh connection was opened.
#[derive(Default)]
pub struct Doubts {
    state: Mutex<DoubtState>,
    notify: Notify,
}

#[derive(Default, Clone, Copy)]
struct DoubtState {
    /// How many times successes were put in doubt.
    count: u64,
    /// The last time: successes taken after this (the opening of the last answered fresh
    /// connection) are in doubt.
    after: Option<Instant>,
}

impl Doubts {
    fn state(&self) -> DoubtState {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn put_in_doubt(&self, answered: Instant) {
        {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.count += 1;
            s.after = Some(answered);
        }
        self.notify.notify_waiters();
    }
}

/// A probe's exchange on a kept connection: when it was taken, and where to learn that a
/// success on it was put in doubt.
pub struct KeptExchange {
    doubts: Arc<Doubts>,
    taken: Instant,
    /// [`DoubtState::count`] when taken.
    count: u64,
}

impl KeptExchange {
    fn new(doubts: &Arc<Doubts>, taken: Instant) -> Self {
        Self {
            doubts: doubts.clone(),
            taken,
            count: doubts.state().count,
        }
    }

    /// Whether a fresh connection failed since this was taken, the address not having
    /// answered a fresh connection opened in between. Two failures since then count as a
    /// doubt whatever answered between them (an exchange rarely outlives one).
    fn doubted(&self) -> bool {
        let s = self.doubts.state();
        match s.count - self.count {
            0 => false,
            1 => s.after.is_none_or(|after| self.taken > after),
            _ => true,
        }
    }

    /// Completes once the success on this exchange is put in doubt (never, if it is not).
    pub async fn in_doubt(&self) {
        loop {
            let notified = self.doubts.notify.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before looking, so a doubt raised in between is not missed.
            notified.as_mut().enable();
            if self.doubted() {
                return;
            }
            notified.await;
        }
    }
}

/// Whether an idle connection can carry a request: nothing arrived on it while idle (an
/// end of stream, a reset, or bytes no request asked for, which would be read as the next
/// probe's response). Does not wait; costs nothing when the runtime saw no readiness.
fn usable(tcp: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(tcp.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// Reports how a fresh connection fared to the pool: [`Pool::accepted`] when told it was
/// answered, and [`Pool::refused`] otherwise, including when the probe is dropped before
/// (its timeout cut the connect or the exchange short).
pub struct Connecting<'a> {
    pool: &'a Pool,
    addr: SocketAddr,
    /// When the connect began: what an answer proves about the address dates from here.
    opened: Instant,
    done: bool,
}

impl<'a> Connecting<'a> {
    pub fn new(pool: &'a Pool, addr: SocketAddr) -> Self {
        Self {
            pool,
            addr,
            opened: Instant::now(),
            done: false,
        }
    }

    /// The connect succeeded (counted; not yet proof of accepting).
    pub fn connected(&self) {
        self.pool.metrics.opened.inc();
    }

    /// Whether a byte of a response arrived on the connection.
    pub fn finish(mut self, answered: bool) {
        if answered {
            self.done = true;
            self.pool.accepted(self.addr, self.opened);
        }
    }
}

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.pool.refused(self.addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh connection whose exchange ended late (its body drained until the deadline)
    /// proves the address accepted when it was opened, not when it ended: the window must
    /// not reach past `opened + window`, or kept connections would go on being used for a
    /// timeout longer after a router stopped accepting.
    #[tokio::test]
    async fn the_window_counts_from_when_the_fresh_connection_was_opened() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = Pool::new(Arc::new(Semaphore::new(4)), PoolMetrics::unregistered());
        let window = Duration::from_secs(1);
        let now = Instant::now();
        // Opened longer ago than the window, answered (ended) only now.
        let opened = now.checked_sub(window * 2).unwrap();
        pool.accepted(addr, opened);
        let (tcp, _) = tokio::join!(TcpStream::connect(addr), listener.accept());
        pool.put(addr, tcp.unwrap());
        assert_eq!(pool.idle(addr), 1);
        assert!(
            pool.take(addr, window).is_none(),
            "the window outlived its fresh connect"
        );
        // A fresh connection opened within the window opens the gate again; an older
        // answer arriving later does not move it back.
        pool.accepted(addr, Instant::now());
        pool.accepted(addr, opened);
        let (tcp, _) = tokio::join!(TcpStream::connect(addr), listener.accept());
        pool.put(addr, tcp.unwrap());
        assert!(pool.take(addr, window).is_some());
    }
}
