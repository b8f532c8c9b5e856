//! Shared test plumbing: an in-process gtmd on an ephemeral loopback port, and plain
//! blocking UDP/TCP clients that send raw bytes or hickory `Message`s.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    path::Path,
    str::FromStr,
    sync::Arc,
    thread::JoinHandle,
    time::Duration,
};

use arc_swap::ArcSwap;
use gtmd::server::Listeners;
use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query},
    rr::{Name, RecordType},
};
use tokio::sync::oneshot;

/// How long a client waits for a reply before concluding there is none.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A gtmd serving `toml` on 127.0.0.1:<ephemeral> (UDP and TCP) until dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The admin HTTP endpoint.
    pub admin: SocketAddr,
    pub snapshot: Arc<ArcSwap<gtmd::Snapshot>>,
    /// True once every probe has its first verdict.
    pub first_round: tokio::sync::watch::Receiver<bool>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start(toml: &str) -> Self {
        Self::start_on(toml, "127.0.0.1".parse().unwrap())
    }

    /// Like [`TestServer::start`], on a loopback address of the caller's choice (e.g. ::1).
    pub fn start_on(toml: &str, ip: std::net::IpAddr) -> Self {
        let loaded = gtmd::from_text(Path::new("test.toml"), toml)
            .unwrap_or_else(|e| panic!("test config is invalid: {e}"));
        let listeners = Listeners::bind_ephemeral(ip).unwrap();
        let addr = listeners.local_addrs()[0];
        let (tx, rx) = oneshot::channel::<()>();
        let (snap_tx, snap_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let running = gtmd::server::start(loaded, listeners, Default::default())
                    .await
                    .unwrap();
                snap_tx
                    .send((
                        running.snapshot.clone(),
                        running.first_round.clone(),
                        running.admin_addr,
                    ))
                    .unwrap();
                let _ = rx.await;
                running.stop().await.unwrap();
            });
        });
        let (snapshot, first_round, admin) = snap_rx.recv().expect("server started");
        Self {
            addr,
            admin: admin.expect("tests bind an admin endpoint"),
            snapshot,
            first_round,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The transports every behaviour is checked over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

pub const BOTH: [Proto; 2] = [Proto::Udp, Proto::Tcp];

/// A query with RD set and EDNS (payload 1232), as a typical resolver sends it.
pub fn query(name: &str, rtype: RecordType) -> Message {
    let mut m = plain_query(name, rtype);
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    m.set_edns(edns);
    m
}

/// A query without EDNS.
pub fn plain_query(name: &str, rtype: RecordType) -> Message {
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_str(name).unwrap(), rtype));
    m
}

/// Sends `msg` over `proto` and decodes the reply.
pub fn ask(addr: SocketAddr, proto: Proto, msg: &Message) -> Message {
    let bytes = msg.to_vec().unwrap();
    let reply = match proto {
        Proto::Udp => udp_raw(addr, &bytes),
        Proto::Tcp => tcp_raw(addr, &bytes),
    }
    .unwrap_or_else(|| panic!("no {proto:?} reply to {msg:?}"));
    Message::from_vec(&reply).unwrap_or_else(|e| panic!("reply does not parse: {e}"))
}

/// Sends raw bytes in one datagram; the reply bytes, or None after [`REPLY_TIMEOUT`].
pub fn udp_raw(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    udp_raw_timeout(addr, bytes, REPLY_TIMEOUT)
}

pub fn udp_raw_timeout(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    let local: SocketAddr = if addr.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    }
    .parse()
    .unwrap();
    let sock = UdpSocket::bind(local).unwrap();
    sock.set_read_timeout(Some(timeout)).unwrap();
    sock.send_to(bytes, addr).unwrap();
    let mut buf = vec![0u8; 65535];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

/// Sends raw bytes as one length-prefixed TCP message; the reply, or None.
pub fn tcp_raw(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, REPLY_TIMEOUT).ok()?;
    s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    s.write_all(&framed).ok()?;
    read_tcp_message(&mut s)
}

pub fn read_tcp_message(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).ok()?;
    Some(buf)
}

pub use crate::fixtures::zone_toml;

/// A server running [`zone_toml`].
pub fn zone_server() -> TestServer {
    TestServer::start(&zone_toml())
}

/// A plain HTTP/1.0 GET: (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, REPLY_TIMEOUT).expect("admin endpoint");
    s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: gtmd\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

/// Held by the tests that load the machine on purpose (a full-speed flood) and by those
/// that time a real resolver or a reload against a latency bound, so the two kinds never
/// overlap: the suite runs its tests in parallel on two cores, and a flood saturating both
/// for seconds is not what a latency test means to measure.
static EXCLUSIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes [`EXCLUSIVE`] for the rest of the calling test.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    EXCLUSIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Polls `cond` every 10 ms; panics naming `what` after `limit`. Returns the time it took.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

/// A port of `ip` free for both UDP and TCP, for a server started after this returns
/// (a `gtmd` child process, a test backend that closes and reopens its socket).
///
/// The port is released before the child binds it, so it is taken *below* the kernel's
/// ephemeral range: no socket binding port 0 (every test client does) can be handed it in
/// between. Ports are taken in turn from a per-process start, so two tests of this
/// process never get the same one, and each is checked free for UDP and TCP.
pub fn free_port_on(ip: std::net::IpAddr) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = below_ephemeral_range();
    let span = high - low;
    let start = std::process::id() % span;
    for _ in 0..span {
        let port = (low + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        let free = std::net::UdpSocket::bind((ip, port)).is_ok()
            && std::net::TcpListener::bind((ip, port)).is_ok();
        if free {
            return port;
        }
    }
    panic!("no free port of {ip} in {low}..{high}");
}

/// Ports from 10000 up to the start of `net.ipv4.ip_local_port_range` (32768 by default).
fn below_ephemeral_range() -> (u32, u32) {
    let first_ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    (10000, first_ephemeral.max(11000))
}
