//! `reuse_connections`: what is reused, what is not, and that a router that stops
//! accepting is still detected. Each test runs a small HTTP/1.1 server on loopback that
//! counts the connections it accepted and the requests it answered.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::oneshot,
};

use super::*;
use crate::health::pool::{KeptExchange, MAX_IDLE_PER_ADDRESS, PoolMetrics};

/// A test server: every request (a head without a body) on a connection is answered
/// with `response`, except that with `drop_second` a connection's second request is
/// read and the connection closed without an answer (a server that closed an idle
/// keep-alive connection just as the request came).
struct Server {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
    /// Stops accepting (open connections keep being served): closes the listener, or
    /// with `true` only stops calling accept; answered once done.
    stop: Option<oneshot::Sender<(bool, oneshot::Sender<()>)>>,
}

impl Server {
    async fn start(response: &'static [u8], drop_second: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let (stop, mut stopped) = oneshot::channel::<(bool, oneshot::Sender<()>)>();
        let (a, n) = (accepted.clone(), answered.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    done = &mut stopped => {
                        let Ok((keep_listening, done)) = done else { return };
                        if !keep_listening {
                            drop(listener);
                            let _ = done.send(());
                            return;
                        }
                        // The kernel still completes handshakes into the backlog.
                        let _ = done.send(());
                        std::future::pending::<()>().await;
                        drop(listener);
                        return;
                    }
                    conn = listener.accept() => {
                        let Ok((conn, _)) = conn else { continue };
                        a.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(serve(conn, response, drop_second, n.clone()));
                    }
                }
            }
        });
        Self {
            addr,
            accepted,
            answered,
            stop: Some(stop),
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    /// Closes the listener (new connects are refused), or with `keep_listening` only
    /// stops calling accept (new connects complete, and are never answered); returns once
    /// done.
    async fn stop_accepting(&mut self, keep_listening: bool) {
        let (done, closed) = oneshot::channel();
        self.stop
            .take()
            .unwrap()
            .send((keep_listening, done))
            .unwrap();
        closed.await.unwrap();
    }
}

async fn serve(
    mut conn: tokio::net::TcpStream,
    response: &'static [u8],
    drop_second: bool,
    answered: Arc<AtomicUsize>,
) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let mut requests = 0;
    loop {
        while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            got.drain(..end + 4);
            requests += 1;
            if drop_second && requests == 2 {
                return;
            }
            if conn.write_all(response).await.is_err() {
                return;
            }
            answered.fetch_add(1, Ordering::SeqCst);
        }
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// An http probe of `addr` with `reuse_connections` and `extra` settings.
fn reuse_spec(addr: SocketAddr, extra: &str) -> ProbeSpec {
    let spec = super::tests::probe_spec(
        addr.ip(),
        &format!(
            r#"kind = "http", port = {}, reuse_connections = true, timeout = "10s", interval = "60s" {extra}"#,
            addr.port()
        ),
    );
    assert!(spec.reuse_connections);
    spec
}

fn pool(slots: usize) -> (Arc<Pool>, PoolMetrics) {
    let metrics = PoolMetrics::unregistered();
    let pool = Arc::new(Pool::new(
        Arc::new(tokio::sync::Semaphore::new(slots)),
        metrics.clone(),
    ));
    (pool, metrics)
}

/// Runs `spec`'s probe `n` times in a row: each reason.
async fn probe_n(probe: &HttpProbe, spec: &ProbeSpec, n: usize) -> Vec<Reason> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(probe.run(spec).await.reason);
    }
    out
}

#[tokio::test]
async fn probes_of_one_address_share_a_connection_only_with_reuse_on() {
    let server = Server::start(OK, false).await;
    let (pool, metrics) = pool(100);
    let spec = reuse_spec(server.addr, r#", fast_interval = "60s""#);
    let probe = HttpProbe::new(&spec, None).unwrap().with_pool(&spec, &pool);
    let reasons = probe_n(&probe, &spec, 20).await;
    assert!(
        reasons.iter().all(|r| *r == Reason::Status(200)),
        "{reasons:?}"
    );
    assert_eq!((server.accepted(), server.answered()), (1, 20));
    assert_eq!((metrics.opened.get(), metrics.reused.get()), (1, 19));
    assert_eq!((pool.idle(server.addr), metrics.idle.get()), (1, 1));

    // The same probe without the setting: one connection per probe, as before.
    let server = Server::start(OK, false).await;
    let mut spec = reuse_spec(server.addr, r#", fast_interval = "60s""#);
    spec.reuse_connections = false;
    let probe = HttpProbe::new(&spec, None).unwrap().with_pool(&spec, &pool);
    let reasons = probe_n(&probe, &spec, 5).await;
    assert!(
        reasons.iter().all(|r| *r == Reason::Status(200)),
        "{reasons:?}"
    );
    assert_eq!((server.accepted(), server.answered()), (5, 5));
    assert_eq!(pool.idle(server.addr), 0);
}

#[tokio::test]
async fn responses_read_to_their_known_end_keep_the_connection() {
    let reused: [(&'static [u8], &str); 4] = [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n3\r\n!!!\r\n0\r\nX-T: 1\r\n\r\n",
            "",
        ),
        // The match found in the first chunk: the rest is still read to the end.
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n3\r\n!!!\r\n0\r\n\r\n",
            r#", expect_body = "ok""#,
        ),
        (b"HTTP/1.1 204 No Content\r\n\r\n", ""),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            r#", method = "HEAD""#,
        ),
    ];
    for (response, extra) in reused {
        let server = Server::start(response, false).await;
        let (pool, _) = pool(100);
        let spec = reuse_spec(server.addr, &format!(r#", fast_interval = "60s" {extra}"#));
        let probe = HttpProbe::new(&spec, None).unwrap().with_pool(&spec, &pool);
        let reasons = probe_n(&probe, &spec, 3).await;
        let text = String::from_utf8_lossy(response);
        assert!(
            reasons
                .iter()
                .all(|r| matches!(r, Reason::Status(200 | 204))),
            "{text}: {reasons:?}"
        );
        assert_eq!(server.accepted(), 1, "{text}");
    }
}

#[tokio::test]
async fn responses_whose_end_is_unknown_or_that_say_close_are_not_reused() {
    let mut big = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
        BODY_LIMIT + 1
    )
    .into_bytes();
    big.resize(big.len() + BODY_LIMIT + 1, b'a');
    let big: &'static [u8] = big.leak();
    let closed: [&'static [u8]; 5] = [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        // Until the connection closes (the server here never closes it).
        b"HTTP/1.1 200 OK\r\n\r\nok",
        // More than was asked for: the rest would be read as the next probe's answer.
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 503 No\r\nContent-Length: 0\r\n\r\n",
        big,
    ];
    for response in closed {
        let server = Server::start(response, false).await;
        let (pool, metrics) = pool(100);
        let spec = reuse_spec(server.addr, r#", fast_interval = "60s""#);
        let probe = HttpProbe::new(&spec, None).unwrap().with_pool(&spec, &pool);
        let reasons = probe_n(&probe, &spec, 3).await;
        let text = String::from_utf8_lossy(&response[..60.min(response.len())]);
        assert!(
            reasons.iter().all(|r| *r == Reason::Status(200)),
            "{text}: {reasons:?}"
        );
        assert_eq!(server.accepted(), 3, "{text}");
        assert_eq!(
            (metrics.reused.get(), pool.idle(server.addr)),
            (0, 0),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_kept_connection_the_server_closed_is_replaced_without_a_failure() {
    let server = Server::start(OK, true).await;
    let (pool, metrics) = pool(100);
    let spec = reuse_spec(server.addr, r#", fast_interval = "60s""#);
    let probe = HttpProbe::new(&spec, None).unwrap().with_pool(&spec, &pool);
    let reasons = probe_n(&probe, &spec, 5).await;
    assert!(
        reasons.iter().all(|r| *r == Reason::Status(200)),
        "{reasons:?}"
    );
    // Probes 2 to 5 each found their kept connection closed and went on with a fresh one.
    assert_eq!(metrics.stale.get(), 4);
    assert_eq!((server.accepted(), server.answered()), (5, 5));
}

/// The router stops accepting new connections but keeps serving the ones it has: with
/// reuse the probes keep succeeding on kept connections only until the last answered
/// fresh connection is `fast_interval` old; then a probe connects fresh and fails, and
/// from then on every probe connects fresh and fails (as without reuse), while the router
/// would still answer on a kept connection.
async fn stops_accepting(keep_listening: bool, failure: Reason) {
    let mut server = Server::start(OK, false).await;
    let (pool, metrics) = pool(100);
    let fast_interval = Duration::from_millis(500);
    let mut spec = reuse_spec(server.addr, r#", fast_interval = "500ms""#);
    spec.timeout = Duration::from_secs(1);
    let probe = HttpProbe::new(&spec, None).unwrap().with_pool(&spec, &pool);
    let bound = Instant::now() + Duration::from_secs(20);
    while metrics.reused.get() == 0 {
        assert_eq!(probe.run(&spec).await.reason, Reason::Status(200));
        assert!(Instant::now() < bound, "no connection was reused");
    }
    server.stop_accepting(keep_listening).await;
    let stopped = Instant::now();
    let reused_before = metrics.reused.get();
    let detected = loop {
        let outcome = probe.run(&spec).await;
        if !outcome.up {
            assert_eq!(outcome.reason, failure);
            break stopped.elapsed();
        }
        assert!(
            stopped.elapsed() < fast_interval + Duration::from_secs(20),
            "still up {:?} after the router stopped accepting",
            stopped.elapsed()
        );
    };
    eprintln!(
        "detected {detected:?} after the router stopped accepting ({} probes on kept \
         connections meanwhile)",
        metrics.reused.get() - reused_before
    );
    assert_eq!(pool.idle(server.addr), 0);
    let reused = metrics.reused.get();
    let reasons = probe_n(&probe, &spec, 3).await;
    assert!(reasons.iter().all(|r| *r == failure), "{reasons:?}");
    assert_eq!(metrics.reused.get(), reused);
}

#[tokio::test]
async fn a_router_that_closes_its_listener_is_detected_within_fast_interval() {
    stops_accepting(false, Reason::ConnectionRefused).await;
}

/// The handshake of a new connection still completes (into the listen backlog): only an
/// answer on a fresh connection proves the router accepts.
#[tokio::test]
async fn a_router_that_stops_calling_accept_is_detected_within_fast_interval() {
    stops_accepting(true, Reason::Timeout(Duration::from_secs(1))).await;
}

#[tokio::test]
async fn the_pool_stays_bounded_under_many_concurrent_probes() {
    // With 5 slots, idle connections never outnumber the free ones: 2 of 5.
    for (slots, bound) in [(1000, MAX_IDLE_PER_ADDRESS), (5, 2)] {
        let server = Server::start(OK, false).await;
        let (pool, metrics) = pool(slots);
        let spec = Arc::new(reuse_spec(server.addr, r#", fast_interval = "60s""#));
        let probe = Arc::new(HttpProbe::new(&spec, None).unwrap().with_pool(&spec, &pool));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..200 {
            let (probe, spec) = (probe.clone(), spec.clone());
            set.spawn(async move { probe.run(&spec).await.reason });
        }
        while let Some(reason) = set.join_next().await {
            assert_eq!(reason.unwrap(), Reason::Status(200));
        }
        let idle = pool.idle(server.addr);
        assert!((1..=bound).contains(&idle), "{idle} idle, bound {bound}");
        assert_eq!(metrics.idle.get(), idle as i64);
        assert_eq!(server.answered(), 200);
    }
}

/// The window is a hard limit: past it a probe stops using kept connections even while
/// the probe that renews the window (past `RENEW_AFTER` of it) still waits for its answer.
#[tokio::test]
async fn kept_connections_expire_with_the_window_while_its_renewal_hangs() {
    let mut server = Server::start(OK, false).await;
    let (pool, metrics) = pool(100);
    let mut spec = reuse_spec(server.addr, r#", fast_interval = "500ms""#);
    spec.timeout = Duration::from_secs(10);
    let spec = Arc::new(spec);
    let probe = Arc::new(HttpProbe::new(&spec, None).unwrap().with_pool(&spec, &pool));
    let bound = Instant::now() + Duration::from_secs(20);
    // Enough kept connections that neither loop below connects fresh for want of one.
    while metrics.reused.get() == 0 || pool.idle(server.addr) < 3 {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..3 {
            let (probe, spec) = (probe.clone(), spec.clone());
            set.spawn(async move { probe.run(&spec).await.reason });
        }
        while let Some(reason) = set.join_next().await {
            assert_eq!(reason.unwrap(), Reason::Status(200));
        }
        assert!(Instant::now() < bound, "no connection was reused");
    }
    // New connections complete in the kernel and are never answered.
    server.stop_accepting(true).await;
    // Two probe loops, each until its first failure: (started, ended) of that probe.
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let (probe, spec) = (probe.clone(), spec.clone());
        loops.spawn(async move {
            loop {
                let started = Instant::now();
                let outcome = probe.run(&spec).await;
                if !outcome.up {
                    assert_eq!(outcome.reason, Reason::Timeout(spec.timeout));
                    return (started, Instant::now());
                }
                assert!(Instant::now() < bound + Duration::from_secs(20), "still up");
            }
        });
    }
    let mut failed = Vec::new();
    while let Some(first) = loops.join_next().await {
        failed.push(first.unwrap());
    }
    failed.sort();
    let (renewal, other) = (failed[0], failed[1]);
    assert!(
        other.0 < renewal.1,
        "the second loop kept using kept connections until the renewal failed ({:?} after it)",
        other.0 - renewal.1
    );
}

/// Runs `n` probes at once: with fewer idle connections than `n`, the first ones take them
/// and the others connect fresh (the test runtime has one thread, and each waits for its
/// answer before the next starts). Each outcome, with the kept exchange where there was one.
async fn probe_at_once(
    probe: &Arc<HttpProbe>,
    spec: &Arc<ProbeSpec>,
    n: usize,
) -> Vec<(Outcome, Option<KeptExchange>)> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (probe, spec) = (probe.clone(), spec.clone());
        set.spawn(async move { probe.run_kept(&spec).await });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap());
    }
    out
}

/// Whether `kept`'s success has been put in doubt by now (without waiting).
async fn doubted_now(kept: &KeptExchange) -> bool {
    tokio::time::timeout(Duration::ZERO, kept.in_doubt())
        .await
        .is_ok()
}

/// A router that stops accepting but serves its open connections: a probe that succeeds on
/// a kept connection meanwhile is put in doubt as soon as another probe's fresh connection
/// to the address fails, and its task wakes at once instead of after `interval`.
#[tokio::test]
async fn a_kept_success_is_put_in_doubt_when_a_fresh_connection_fails() {
    let mut server = Server::start(OK, false).await;
    let (pool, metrics) = pool(100);
    // The window is long: no renewal comes between the steps below.
    let spec = Arc::new(reuse_spec(server.addr, r#", fast_interval = "60s""#));
    let probe = Arc::new(HttpProbe::new(&spec, None).unwrap().with_pool(&spec, &pool));
    let (first, kept) = probe.run_kept(&spec).await;
    assert!(first.up && kept.is_none(), "the first probe connects fresh");
    server.stop_accepting(false).await;
    // Served on the kept connection: up, but the router no longer accepts.
    let (outcome, kept) = probe.run_kept(&spec).await;
    assert!(outcome.up);
    let kept = kept.expect("the second probe used the kept connection");
    assert!(!doubted_now(&kept).await, "nothing failed yet");
    let next = tokio::time::Instant::now() + Duration::from_secs(3600);
    let mut waiting = std::pin::pin!(crate::health::engine::until_next(next, Some(kept)));
    assert!(
        tokio::time::timeout(Duration::ZERO, waiting.as_mut())
            .await
            .is_err()
    );
    let pair = probe_at_once(&probe, &spec, 2).await;
    let reasons: Vec<_> = pair.iter().map(|(o, _)| o.reason.clone()).collect();
    assert!(
        reasons.contains(&Reason::ConnectionRefused) && reasons.contains(&Reason::Status(200)),
        "{reasons:?}"
    );
    assert_eq!(pool.doubted(server.addr), 1);
    // The kept success of the pair is in doubt too: it was taken after the last answer.
    let (_, kept) = pair.into_iter().find(|(o, _)| o.up).unwrap();
    assert!(doubted_now(&kept.unwrap()).await);
    // The waiting task wakes now, an hour before its time.
    assert_eq!(waiting.await, crate::health::engine::Woken::InDoubt);
    // From now on every probe connects fresh, and fails.
    let reused = metrics.reused.get();
    assert_eq!(probe.run(&spec).await.reason, Reason::ConnectionRefused);
    assert_eq!(metrics.reused.get(), reused);
}

/// A success on a kept connection taken before a fresh connection to the address was
/// opened and answered stays trusted when a later fresh connection fails: only those taken
/// after the last answered one are in doubt (no herd of re-probes on every failure).
#[tokio::test]
async fn a_kept_success_before_the_last_answered_fresh_connection_stays_trusted() {
    let mut server = Server::start(OK, false).await;
    let (pool, _metrics) = pool(100);
    let spec = Arc::new(reuse_spec(server.addr, r#", fast_interval = "60s""#));
    let probe = Arc::new(HttpProbe::new(&spec, None).unwrap().with_pool(&spec, &pool));
    assert!(probe.run(&spec).await.up);
    let (outcome, early) = probe.run_kept(&spec).await;
    assert!(outcome.up);
    let early = early.expect("kept");
    // One of the pair connects fresh and is answered: the address accepted after `early`.
    let pair = probe_at_once(&probe, &spec, 2).await;
    assert!(pair.iter().all(|(o, _)| o.up));
    assert!(pair.iter().any(|(_, k)| k.is_none()), "one connected fresh");
    assert_eq!(server.accepted(), 2);
    server.stop_accepting(false).await;
    // Two kept connections are idle now: three probes at once, so one connects fresh.
    let three = probe_at_once(&probe, &spec, 3).await;
    let reasons: Vec<_> = three.iter().map(|(o, _)| o.reason.clone()).collect();
    assert!(reasons.contains(&Reason::ConnectionRefused), "{reasons:?}");
    assert_eq!(pool.doubted(server.addr), 1);
    assert!(!doubted_now(&early).await);
}
