//! TCP limits: a connection cap, a cap per client address, an idle timeout that a slowloris
//! client cannot dodge, a write timeout that a client that never reads cannot dodge, and a
//! per-connection query limit; pipelined queries are answered in order.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use hickory_proto::{op::Message, rr::RecordType};

use crate::support::{TestServer, http_get, query, read_tcp_message, tcp_raw, wait_for};

const CONFIG: &str = r#"
[server]
listen = ["127.0.0.1:0"]
tcp_idle_timeout = "1s"
tcp_max_connections = 3
tcp_max_queries = 5
[[zones]]
origin = "tcp.test"
nameservers = ["ns.outside.net"]
[zones.soa]
mname = "ns.outside.net"
rname = "h.tcp.test"
[[zones.records]]
name = "www"
type = "A"
value = "192.0.2.1"
"#;

fn framed(id: u16) -> Vec<u8> {
    let mut q = query("www.tcp.test.", RecordType::A);
    q.metadata.id = id;
    let bytes = q.to_vec().unwrap();
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&bytes);
    out
}

#[test]
fn connection_cap_idle_timeout_and_query_limit() {
    let s = TestServer::start(CONFIG);
    let q = query("www.tcp.test.", RecordType::A).to_vec().unwrap();
    assert!(tcp_raw(s.addr, &q).is_some());
    // The server frees that connection's slot when it reads the close: wait for it, or an
    // idle connection below could be the one turned away.
    let open = |n: f64| {
        move || {
            let (_, text) = http_get(s.admin, "/metrics");
            crate::ops::parse_exposition(&text).get("gtmd_tcp_connections") == Some(&n)
        }
    };
    wait_for(
        "the first connection to close",
        Duration::from_secs(20),
        open(0.0),
    );

    // Three idle connections fill the cap: a fourth is closed without an answer.
    let idle: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(s.addr).unwrap())
        .collect();
    wait_for("3 open connections", Duration::from_secs(20), open(3.0));
    assert!(tcp_raw(s.addr, &q).is_none(), "over the cap: closed");
    let (_, text) = http_get(s.admin, "/metrics");
    assert_eq!(
        crate::ops::parse_exposition(&text).get(r#"gtmd_tcp_rejected_total{reason="total"}"#),
        Some(&1.0)
    );
    // The idle ones time out after 1 s and free their slots.
    wait_for("3 read timeouts counted", Duration::from_secs(20), || {
        let (_, text) = http_get(s.admin, "/metrics");
        crate::ops::parse_exposition(&text).get(r#"gtmd_tcp_timeouts_total{direction="read"}"#)
            == Some(&3.0)
    });
    wait_for("the slots to be free", Duration::from_secs(20), open(0.0));
    assert!(
        tcp_raw(s.addr, &q).is_some(),
        "slots freed by the idle timeout"
    );
    drop(idle);

    // Slowloris: one byte every 100 ms never completes a query within the idle timeout.
    let mut slow = TcpStream::connect(s.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let msg = framed(1);
    let start = Instant::now();
    let mut closed = false;
    for b in &msg {
        if slow.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if start.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    let mut buf = [0u8; 1];
    let eof = matches!(slow.read(&mut buf), Ok(0) | Err(_));
    assert!(closed || eof, "the slow client was cut off");
    assert!(start.elapsed() < Duration::from_secs(3));

    // Pipelining: seven queries at once on one connection, limit five: five answers, in
    // order, then the connection closes.
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut all = Vec::new();
    for id in 1..=7u16 {
        all.extend_from_slice(&framed(id));
    }
    c.write_all(&all).unwrap();
    let mut ids = Vec::new();
    while let Some(reply) = read_tcp_message(&mut c) {
        ids.push(Message::from_vec(&reply).unwrap().metadata.id);
    }
    assert_eq!(ids, [1, 2, 3, 4, 5]);
}

/// A query whose question name is a compression pointer: hickory cannot echo it, so the
/// server answers FORMERR (written by the TCP loop itself, not by a task of its own).
fn framed_formerr(id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    q.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
    let mut out = (q.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&q);
    out
}

#[test]
fn formerr_replies_keep_their_place_and_survive_a_half_close() {
    // A long idle timeout: "the FORMERR comes at once, not when the connection times out"
    // is then told apart by a wide margin, however loaded the machine.
    let s = TestServer::start(
        &CONFIG.replace(r#"tcp_idle_timeout = "1s""#, r#"tcp_idle_timeout = "30s""#),
    );
    let rcode_and_id = |reply: &[u8]| (reply[3] & 0x0f, u16::from_be_bytes([reply[0], reply[1]]));
    // Pipelined: good, malformed, good (the good ones take the fast path).
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut all = framed(1);
    all.extend_from_slice(&framed_formerr(2));
    all.extend_from_slice(&framed(3));
    c.write_all(&all).unwrap();
    let replies: Vec<(u8, u16)> = (0..3)
        .map(|_| rcode_and_id(&read_tcp_message(&mut c).expect("a reply")))
        .collect();
    assert_eq!(replies, [(0, 1), (1, 2), (0, 3)], "(rcode, id) in order");
    // A malformed query, then the client closes its side: the FORMERR still arrives, and
    // at once (well within the 30 s idle timeout).
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    c.write_all(&framed_formerr(9)).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let start = Instant::now();
    let reply = read_tcp_message(&mut c).expect("the FORMERR before the close");
    assert_eq!(rcode_and_id(&reply), (1, 9));
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    c.write_all(&framed_formerr(10)).unwrap();
    let start = Instant::now();
    let reply = read_tcp_message(&mut c).expect("the FORMERR without closing");
    assert_eq!(rcode_and_id(&reply), (1, 10));
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "not held until the idle timeout: {:?}",
        start.elapsed()
    );
}

/// One metric of the server's exposition (0 when absent).
fn metric(s: &TestServer, series: &str) -> f64 {
    let (_, text) = http_get(s.admin, "/metrics");
    crate::ops::parse_exposition(&text)
        .get(series)
        .copied()
        .unwrap_or(0.0)
}

#[test]
fn a_client_that_never_reads_its_replies_is_closed_after_the_idle_timeout() {
    // No query limit: only the write timeout can end this connection.
    let s = TestServer::start(&CONFIG.replace("tcp_max_queries = 5\n", ""));
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    let batch: Vec<u8> = (0..1000u16).flat_map(framed).collect();
    // Pipelined queries, never a read: the replies fill both socket buffers, then the
    // server's write waits. Stop when our own write blocks (the server no longer reads)
    // or fails (it closed); bounded in time either way.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if c.write_all(&batch).is_err() {
            break;
        }
    }
    // Still connected and never reading: the server gives up on its write after 1 s.
    wait_for(
        "the non-reading connection to be closed",
        Duration::from_secs(10),
        || metric(&s, "gtmd_tcp_connections") == 0.0,
    );
    assert_eq!(
        metric(&s, r#"gtmd_tcp_timeouts_total{direction="write"}"#),
        1.0
    );
    // The server still serves others.
    let q = query("www.tcp.test.", RecordType::A).to_vec().unwrap();
    assert!(tcp_raw(s.addr, &q).is_some());
    drop(c);
}

/// A TCP connection to `to` from the loopback address `from` (any port).
fn connect_from(from: &str, to: std::net::SocketAddr) -> Option<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
    let from: std::net::SocketAddr = format!("{from}:0").parse().unwrap();
    sock.bind(&from.into()).ok()?;
    sock.connect_timeout(&to.into(), Duration::from_secs(3))
        .ok()?;
    Some(sock.into())
}

/// One query over a fresh connection from `from`; the reply, or None when turned away.
fn ask_from(from: &str, to: std::net::SocketAddr) -> Option<Vec<u8>> {
    let mut c = connect_from(from, to)?;
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    c.write_all(&framed(7)).ok()?;
    read_tcp_message(&mut c)
}

#[test]
fn one_address_cannot_hold_every_slot_while_others_are_served() {
    let config = CONFIG
        .replace(r#"tcp_idle_timeout = "1s""#, r#"tcp_idle_timeout = "5s""#)
        .replace(
            "tcp_max_connections = 3",
            "tcp_max_connections = 6\ntcp_max_connections_per_ip = 2",
        )
        .replace("tcp_max_queries = 5\n", "");
    let s = TestServer::start(&config);
    let addr = s.addr;
    // The hostile address opens connections as fast as it can and holds them; whichever
    // is closed is reopened at once. Bounded: it stops when the test is done or at 30 s.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hostile = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut held: Vec<TcpStream> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && start.elapsed() < Duration::from_secs(30)
            {
                // Drop the ones the server closed (a non-blocking peek sees EOF or an error).
                held.retain(|c| {
                    c.set_nonblocking(true).unwrap();
                    let mut b = [0u8; 1];
                    let alive = matches!(c.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
                    c.set_nonblocking(false).unwrap();
                    alive
                });
                if held.len() < 20
                    && let Some(c) = connect_from("127.0.0.2", addr)
                {
                    held.push(c);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    // The hostile address holds what it can and has been turned away at least once.
    wait_for(
        "the hostile address to hit a limit",
        Duration::from_secs(10),
        || {
            let (_, text) = http_get(s.admin, "/metrics");
            let m = crate::ops::parse_exposition(&text);
            m.get("gtmd_tcp_connections").copied().unwrap_or(0.0) >= 2.0
                && m.iter()
                    .filter(|(k, _)| k.starts_with("gtmd_tcp_rejected_total"))
                    .map(|(_, v)| v)
                    .sum::<f64>()
                    >= 1.0
        },
    );
    // Other addresses get every query answered meanwhile.
    for i in 0..30 {
        let from = if i % 2 == 0 { "127.0.0.3" } else { "127.0.0.4" };
        assert!(
            ask_from(from, addr).is_some(),
            "query {i} from {from} was not answered while 127.0.0.2 storms"
        );
    }
    assert!(metric(&s, r#"gtmd_tcp_rejected_total{reason="per_ip"}"#) >= 1.0);
    assert!(metric(&s, "gtmd_tcp_connections") <= 2.0 + 1.0);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    hostile.join().unwrap();
}

/// A metric of a child gtmd's admin endpoint, or None while it cannot answer.
fn child_metric(admin: std::net::SocketAddr, series: &str) -> Option<f64> {
    let mut s = TcpStream::connect_timeout(&admin, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: gtmd\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (_, body) = text.split_once("\r\n\r\n")?;
    Some(
        crate::ops::parse_exposition(body)
            .get(series)
            .copied()
            .unwrap_or(0.0),
    )
}

#[test]
fn accept_errors_back_off_instead_of_spinning() {
    const FDS: u64 = 64;
    let (port, admin) = (crate::cli::free_port(), crate::cli::free_port());
    let toml = CONFIG
        .replace(
            r#"listen = ["127.0.0.1:0"]"#,
            &format!("listen = [\"127.0.0.1:{port}\"]"),
        )
        .replace("tcp_max_connections = 3\n", "")
        .replace(r#"tcp_idle_timeout = "1s""#, r#"tcp_idle_timeout = "1h""#)
        .replace(
            "[[zones]]",
            &format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\n[[zones]]"),
        );
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(toml.as_bytes()).unwrap();
    let dns: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gtmd"));
    cmd.args(["serve", "--no-watch", "--config"])
        .arg(f.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Kill(cmd.spawn().unwrap());
    let q = query("www.tcp.test.", RecordType::A).to_vec().unwrap();
    wait_for("gtmd to answer", Duration::from_secs(20), || {
        crate::support::udp_raw_timeout(dns, &q, Duration::from_millis(200)).is_some()
    });
    // The limit is lowered only now: at start gtmd fits its connection caps to the limit
    // (fdbudget), so that clients alone cannot exhaust it; the backoff is for a shortage
    // that comes anyway, as here.
    let limit = libc::rlimit {
        rlim_cur: FDS,
        rlim_max: FDS,
    };
    // SAFETY: prlimit reads the struct we own; the old limit is not asked for.
    let r = unsafe {
        libc::prlimit(
            child.0.id() as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    // More connections than descriptors (from several addresses: each stays under the
    // per-address limit), all held: accept fails with EMFILE while some wait.
    let held: Vec<TcpStream> = (0..3 * FDS)
        .filter_map(|i| connect_from(&format!("127.0.1.{}", 1 + i % 16), dns))
        .collect();
    assert!(held.len() as u64 > 2 * FDS, "{} connections", held.len());
    let fds = format!("/proc/{}/fd", child.0.id());
    wait_for(
        "gtmd to run out of descriptors",
        Duration::from_secs(10),
        || std::fs::read_dir(&fds).map_or(0, |d| d.count()) as u64 >= FDS,
    );
    // A window in which a retry every 10 ms would fail ~200 times; with a backoff that
    // doubles up to 1 s, about ten (fewer on a slower machine).
    std::thread::sleep(Duration::from_secs(2));
    drop(held);
    let series = r#"gtmd_accept_errors_total{listener="dns_tcp"}"#;
    let mut errors = None;
    wait_for(
        "the admin endpoint to answer again",
        Duration::from_secs(20),
        || {
            errors = child_metric(admin, series);
            errors.is_some()
        },
    );
    let errors = errors.unwrap();
    assert!((1.0..=30.0).contains(&errors), "{errors} failed accepts");
    wait_for("TCP DNS to answer again", Duration::from_secs(10), || {
        tcp_raw(dns, &q).is_some()
    });
}
