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
//! **The bound.** A kept connection is used at most `fast_interval` after the last answered
//! fresh connection was opened, so a router that stops accepting at T fails every probe
//! that starts after T + `fast_interval`: detection takes at most one `fast_interval`
//! longer than without reuse (`interval + fall × fast_interval` for refused connections, 8 s
//! with the defaults). A killed or blackholed router fails kept connections as it fails
//! fresh ones: no difference at all.
//!
//! **Successes in doubt are repeated at once.** Within that bound, a probe that succeeded on
//! a kept connection after the router stopped accepting would keep its target up for a
//! whole `interval`. So when a fresh connection fails, the successes on kept connections
//! taken since the last answered fresh connection was opened are put in doubt
//! ([`KeptExchange::in_doubt`]), and their probes run again at once instead of after
//! `interval`; the gate is closed by then, so they connect fresh and fail like every other
//! probe of the address. Successes taken before that answer stay trusted, so a failure
//! wakes only the probes of the last moments, not every app of the address. On a busy
//! address (a probe at least every `fast_interval / RENEW_AFTER`, more than ~40 apps with
//! the defaults) a fresh connection is tried within `fast_interval / RENEW_AFTER` of T
//! (unless a renewal is still waiting for its answer: then when that one fails or is
//! answered), so with a router that answers promptly the doubted targets fail no later
//! than the bound without reuse.
//!
//! **Bounds.** At most [`MAX_IDLE_PER_ADDRESS`] idle connections per address; one idle
//! longer than [`MAX_IDLE`] is closed rather than used (servers close idle keep-alive
//! connections after a few seconds: Apache and Node.js after 5 s). Each idle connection
//! holds one of the `health.max_concurrent_probes` slots, so probes in flight plus idle
//! connections stay within the descriptor budget planned for probes (`fdbudget`); a
//! connection is closed instead of kept when idle ones would outnumber the free slots (so
//! that probes seldom wait for a slot held by an idle connection). Gauge
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
/// connection: on a busy address a router that stops accepting is found by a fresh
/// connection within `fast_interval / RENEW_AFTER` (125 ms with the defaults), and the
/// successes taken meanwhile are put in doubt, at the cost of one fresh connection per
/// address per 125 ms (against ~2,000 a second per address at 10,000 apps without reuse).
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
    /// When the last fresh connection that failed was opened: an answer on one opened
    /// before it proves nothing about now, and does not reopen the gate.
    failed_opened: Option<Instant>,
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
        let mut closed = Vec::new();
        let found = {
            let mut addrs = self.lock();
            // Read under the lock: a fresh connection answered while this waited for the
            // lock must not seem to have been opened after this exchange was taken.
            let now = Instant::now();
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
    /// connections would outnumber the free probe slots; otherwise it is closed.
    pub fn put(&self, addr: SocketAddr, tcp: TcpStream) {
        // Idle connections do not outnumber the free slots once this one is kept, so that
        // probes seldom wait for a slot an idle connection holds (at most `MAX_IDLE` +
        // `SWEEP_EVERY`). The gauge counts this pool's idle connections (one pool per
        // engine); probes racing here may overshoot by a few.
        let idle = usize::try_from(self.metrics.idle.get()).unwrap_or(0);
        if self.slots.available_permits() < idle + 2 {
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
        if a.failed_opened.is_some_and(|failed| opened < failed) {
            return;
        }
        a.fresh_ok = Some(a.fresh_ok.map_or(opened, |t| t.max(opened)));
        a.renewing = false;
    }

    /// A fresh connection to `addr`, opened at `opened`, failed before any answer: its pool
    /// closes, its probes connect fresh until one opened later is answered, and the
    /// successes on kept connections taken since the last answered one was opened are put
    /// in doubt.
    pub fn refused(&self, addr: SocketAddr, opened: Instant) {
        let (closed, doubted) = {
            let mut addrs = self.lock();
            let Some(a) = addrs.get_mut(&addr) else {
                return;
            };
            a.failed_opened = Some(a.failed_opened.map_or(opened, |t| t.max(opened)));
            let doubted = a.fresh_ok.map(|answered| {
                a.doubts.put_in_doubt(answered);
                a.doubts.clone()
            });
            a.fresh_ok = None;
            a.renewing = false;
            (std::mem::take(&mut a.idle), doubted)
        };
        // Woken after the pool's lock is released: every take and put waits for it.
        if let Some(doubts) = doubted {
            doubts.notify.notify_waiters();
        }
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

/// The doubts kept: an exchange that saw more doubts raised than this since it was taken
/// is in doubt whatever they were (it slept through many failures of its address).
const DOUBTS_KEPT: usize = 8;

#[derive(Default, Clone, Copy)]
struct DoubtState {
    /// How many times successes were put in doubt.
    count: u64,
    /// The last [`DOUBTS_KEPT`] times, by `count % DOUBTS_KEPT`: successes taken after the
    /// opening of the last answered fresh connection then were put in doubt.
    after: [Option<Instant>; DOUBTS_KEPT],
}

impl Doubts {
    fn state(&self) -> DoubtState {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Raises a doubt on the successes taken after `answered`; the caller wakes the
    /// waiters (once it released the pool's lock).
    fn put_in_doubt(&self, answered: Instant) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.count += 1;
        let i = (s.count % DOUBTS_KEPT as u64) as usize;
        s.after[i] = Some(answered);
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
    /// answered a fresh connection opened in between (after this was taken).
    fn doubted(&self) -> bool {
        let s = self.doubts.state();
        let since = s.count - self.count;
        if since > DOUBTS_KEPT as u64 {
            return true;
        }
        (self.count + 1..=s.count).any(|k| {
            s.after[(k % DOUBTS_KEPT as u64) as usize].is_none_or(|after| self.taken > after)
        })
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
            self.pool.refused(self.addr, self.opened);
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
        let (listener, addr, pool) = loopback().await;
        let window = Duration::from_secs(1);
        let now = Instant::now();
        // Opened longer ago than the window, answered (ended) only now.
        let opened = now.checked_sub(window * 2).unwrap();
        pool.accepted(addr, opened);
        pool.put(addr, connection(&listener).await);
        assert_eq!(pool.idle(addr), 1);
        assert!(
            pool.take(addr, window).is_none(),
            "the window outlived its fresh connect"
        );
        // A fresh connection opened within the window opens the gate again; an older
        // answer arriving later does not move it back.
        pool.accepted(addr, Instant::now());
        pool.accepted(addr, opened);
        pool.put(addr, connection(&listener).await);
        assert!(pool.take(addr, window).is_some());
    }

    /// A listener on loopback, its address, and a pool of 8 probe slots.
    async fn loopback() -> (tokio::net::TcpListener, SocketAddr, Pool) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = Pool::new(Arc::new(Semaphore::new(8)), PoolMetrics::unregistered());
        (listener, addr, pool)
    }

    /// A connection to `listener`, to pool.
    async fn connection(listener: &tokio::net::TcpListener) -> TcpStream {
        let (tcp, _) = tokio::join!(
            TcpStream::connect(listener.local_addr().unwrap()),
            listener.accept()
        );
        tcp.unwrap()
    }

    /// The clock's first reading after `t` (readings are ordered; this never waits long).
    fn after(t: Instant) -> Instant {
        loop {
            let now = Instant::now();
            if now > t {
                return now;
            }
        }
    }

    /// Each failure doubts only the kept successes taken after the last answer before it:
    /// one taken before answered fresh connections stays trusted through any number of
    /// failures (a success doubted for every failure its task slept through would wake
    /// thousands of tasks of a busy address at each one).
    #[tokio::test]
    async fn each_failure_doubts_only_what_was_taken_after_its_last_answer() {
        let (listener, addr, pool) = loopback().await;
        let window = Duration::from_secs(60);
        pool.accepted(addr, Instant::now());
        pool.put(addr, connection(&listener).await);
        let (_, early) = pool.take(addr, window).expect("kept");
        // Fresh connections opened after `early` was taken answer and fail, twice.
        let mut t = early.taken;
        for _ in 0..2 {
            t = after(t);
            pool.accepted(addr, t);
            t = after(t);
            pool.refused(addr, t);
        }
        assert_eq!(pool.doubted(addr), 2);
        assert!(!early.doubted());
        // One taken after the last answer is doubted by the next failure.
        pool.accepted(addr, after(t));
        pool.put(addr, connection(&listener).await);
        let (_, late) = pool.take(addr, window).expect("kept");
        assert!(!late.doubted());
        pool.refused(addr, after(late.taken));
        assert!(late.doubted());
        assert!(!early.doubted());
    }

    /// An answer on a fresh connection opened before one that failed proves nothing about
    /// now: it does not reopen the gate; one opened after the failure does.
    #[tokio::test]
    async fn an_answer_older_than_a_failure_does_not_reopen_the_gate() {
        let (listener, addr, pool) = loopback().await;
        let window = Duration::from_secs(60);
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        pool.accepted(addr, t0);
        // B, opened after A, fails; then A's answer arrives.
        pool.refused(addr, t0 + 2 * ms);
        pool.accepted(addr, t0 + ms);
        pool.put(addr, connection(&listener).await);
        assert_eq!(
            pool.idle(addr),
            0,
            "kept while the address is not known to accept"
        );
        assert!(pool.take(addr, window).is_none());
        pool.accepted(addr, t0 + 3 * ms);
        pool.put(addr, connection(&listener).await);
        assert!(pool.take(addr, window).is_some());
    }
}
