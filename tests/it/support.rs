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
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(3);

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
        let config = gtmd::config::parse_with_env(Path::new("test.toml"), toml, [])
            .unwrap_or_else(|e| panic!("test config does not parse: {e}"));
        let loaded = gtmd::from_config(Path::new("test.toml"), &config)
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

/// The config most DNS behaviour tests run against.
pub const ZONE_TOML: &str = r#"
[server]
listen = ["127.0.0.1:0"]
[admin]
listen = "127.0.0.1:0"

[[zones]]
origin = "example.test"
ttl = 3600
nameservers = ["ns1.example.test", "ns.outside.net"]
[zones.soa]
mname = "ns1.example.test"
rname = "hostmaster.example.test"
serial = 7
minimum = 60
ttl = 300

[[zones.records]]
name = "ns1"
type = "A"
value = "192.0.2.1"
[[zones.records]]
name = "ns1"
type = "AAAA"
value = "2001:db8::1"
[[zones.records]]
name = "www"
type = "CNAME"
value = "app"
[[zones.records]]
name = "c1"
type = "CNAME"
value = "c2"
[[zones.records]]
name = "c2"
type = "CNAME"
value = "app.example.test."
[[zones.records]]
name = "loop1"
type = "CNAME"
value = "loop2"
[[zones.records]]
name = "loop2"
type = "CNAME"
value = "loop1"
[[zones.records]]
name = "dangling"
type = "CNAME"
value = "missing"
[[zones.records]]
name = "away"
type = "CNAME"
value = "host.elsewhere.net."
[[zones.records]]
name = "a.b.c"
type = "A"
value = "192.0.2.9"
[[zones.records]]
name = "@"
type = "TXT"
value = "hello world"
[[zones.records]]
name = "@"
type = "MX"
value = "10 ns1"
[[zones.records]]
name = "srv"
type = "SRV"
value = "1 1 443 app"
[[zones.records]]
name = "@"
type = "CAA"
value = '0 issue "ca.example"'
[[zones.records]]
name = "sub"
type = "NS"
values = ["ns1.sub", "ns.outside.net."]
[[zones.records]]
name = "ns1.sub"
type = "A"
value = "192.0.2.77"
[[zones.records]]
name = "todel"
type = "CNAME"
value = "host.sub"
[[zones.records]]
name = "appns"
type = "NS"
value = "app"
[[zones.records]]
name = "longtxt"
type = "TXT"
value = "LONGTXT"
[[zones.records]]
name = "at"
type = "MX"
value = "5 @"
# The parent side of the nested zone below: allowed, the child zone answers its names.
[[zones.records]]
name = "inner"
type = "NS"
value = "ns.outside.net."
[[zones.records]]
name = "mail"
type = "MX"
values = [
  "1 mx01", "1 mx02", "1 mx03", "1 mx04", "1 mx05", "1 mx06", "1 mx07", "1 mx08",
  "1 mx09", "1 mx10", "1 mx11", "1 mx12", "1 mx13", "1 mx14", "1 mx15", "1 mx16",
  "1 mx17", "1 mx18", "1 mx19", "1 mx20",
]
[[zones.records]]
name = "mx01"
type = "A"
values = ["192.0.2.101"]
[[zones.records]]
name = "mx02"
type = "A"
value = "192.0.2.102"
[[zones.records]]
name = "mx03"
type = "A"
value = "192.0.2.103"
[[zones.records]]
name = "mx04"
type = "A"
value = "192.0.2.104"
[[zones.records]]
name = "mx05"
type = "A"
value = "192.0.2.105"
[[zones.records]]
name = "mx06"
type = "A"
value = "192.0.2.106"
[[zones.records]]
name = "mx07"
type = "A"
value = "192.0.2.107"
[[zones.records]]
name = "mx08"
type = "A"
value = "192.0.2.108"
[[zones.records]]
name = "mx09"
type = "A"
value = "192.0.2.109"
[[zones.records]]
name = "mx10"
type = "A"
value = "192.0.2.110"
[[zones.records]]
name = "mx11"
type = "A"
value = "192.0.2.111"
[[zones.records]]
name = "mx12"
type = "A"
value = "192.0.2.112"
[[zones.records]]
name = "mx13"
type = "A"
value = "192.0.2.113"
[[zones.records]]
name = "mx14"
type = "A"
value = "192.0.2.114"
[[zones.records]]
name = "mx15"
type = "A"
value = "192.0.2.115"
[[zones.records]]
name = "mx16"
type = "A"
value = "192.0.2.116"
[[zones.records]]
name = "mx17"
type = "A"
value = "192.0.2.117"
[[zones.records]]
name = "mx18"
type = "A"
value = "192.0.2.118"
[[zones.records]]
name = "mx19"
type = "A"
value = "192.0.2.119"
[[zones.records]]
name = "mx20"
type = "A"
value = "192.0.2.120"

[[zones]]
origin = "inner.example.test"
ttl = 600
nameservers = ["ns.outside.net"]
[zones.soa]
mname = "ns.outside.net"
rname = "hostmaster.inner.example.test"
serial = 99
minimum = 30
[[zones.records]]
name = "x"
type = "A"
value = "192.0.2.50"

[[clusters]]
name = "east"
region = "us-east"
ingress = ["198.51.100.10", "2001:db8:e::10"]
[[clusters]]
name = "west"
region = "us-west"
ingress = ["198.51.100.20"]
[[clusters]]
name = "eu"
ingress = ["203.0.113.30"]
[[clusters]]
name = "forty"
ingress = [BIG40]
[[clusters]]
name = "hundred"
ingress = [BIG100]

[[apps]]
hostname = "app.example.test"
ttl = 30
targets = [{ cluster = "east" }, { cluster = "west" }]
[[apps]]
hostname = "v4only.example.test"
ttl = 45
targets = [{ cluster = "eu" }]
[[apps]]
hostname = "mid.example.test"
max_answers = 64
targets = [{ cluster = "forty" }]
[[apps]]
hostname = "big.example.test"
max_answers = 256
targets = [{ cluster = "hundred" }]
"#;

/// [`ZONE_TOML`] with its address lists filled in.
pub fn zone_toml() -> String {
    let list = |n: u32| {
        (0..n)
            .map(|i| format!("\"10.{}.{}.{}\"", n, i / 250, i % 250 + 1))
            .collect::<Vec<_>>()
            .join(", ")
    };
    ZONE_TOML
        .replace("LONGTXT", &"é-gtmd-".repeat(200))
        .replace("BIG40", &list(40))
        .replace("BIG100", &list(100))
}

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
