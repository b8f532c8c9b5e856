//! Response rate limiting over real sockets: one source flooding the same name gets about
//! the configured rate of full answers, the rest split between TC=1 replies and silence;
//! another network is unaffected; TCP is never limited.

use std::{
    net::UdpSocket,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hickory_proto::{op::Message, rr::RecordType};

use crate::support::{Proto, TestServer, ask, http_get, query};

const CONFIG: &str = r#"
[rrl]
enabled = true
responses_per_second = 200
slip = 2
exempt = []
[[zones]]
origin = "rl.test"
nameservers = ["ns.outside.net"]
[zones.soa]
mname = "ns.outside.net"
rname = "h.rl.test"
[[zones.records]]
name = "www"
type = "A"
value = "192.0.2.1"
"#;

#[test]
fn a_flood_from_one_network_is_limited_and_slipped() {
    let s = TestServer::start(CONFIG);
    let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let q = query("www.rl.test.", RecordType::A).to_vec().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (full, tc) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // When the last full answer arrived (µs after the start): the server answered within
    // that span, so its bucket refilled at most for that long (a loaded server lags the
    // sender).
    let last = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let receiver = {
        let (sock, stop, full, tc) = (sock.clone(), stop.clone(), full.clone(), tc.clone());
        let last = last.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, _)) = sock.recv_from(&mut buf) {
                    let m = Message::from_vec(&buf[..n]).unwrap();
                    if m.metadata.truncation {
                        assert!(m.answers.is_empty());
                        tc.fetch_add(1, Ordering::Relaxed);
                    } else {
                        assert_eq!(m.answers.len(), 1);
                        full.fetch_add(1, Ordering::Relaxed);
                        last.store(start.elapsed().as_micros() as u64, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    // 2,000 queries per second for 3 s, paced.
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(3) {
        let due = (start.elapsed().as_secs_f64() * 2000.0) as u64;
        while sent < due {
            sock.send_to(&q, s.addr).unwrap();
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    receiver.join().unwrap();
    let (full, tc) = (full.load(Ordering::Relaxed), tc.load(Ordering::Relaxed));
    let dropped = sent - full - tc;
    eprintln!("sent {sent}: {full} answered, {tc} truncated, {dropped} dropped");
    // One second's budget at start plus 200/s over the 3 s (or over as long as the server
    // took to answer them, if longer), with 100 to spare.
    let span = (last.load(Ordering::Relaxed) as f64 / 1e6).max(3.0);
    let most = 200.0 + 200.0 * span + 100.0;
    assert!(
        full >= 600 && full as f64 <= most,
        "answered {full} (at most {most:.0} in {span:.2} s)"
    );
    let limited = sent - full;
    let tc_share = tc as f64 / limited as f64;
    assert!(
        (0.4..=0.6).contains(&tc_share),
        "slip 2: half TC, half dropped ({tc} of {limited})"
    );
    let (_, text) = http_get(s.admin, "/metrics");
    let m = crate::ops::parse_exposition(&text);
    assert_eq!(m["gtmd_rrl_slipped_total"] as u64, tc);
    assert_eq!(m[r#"gtmd_dns_dropped_total{reason="rrl"}"#] as u64, dropped);

    // Another network is not affected; TCP from the limited one still answers.
    let other = UdpSocket::bind("127.0.1.1:0").unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    other.send_to(&q, s.addr).unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = other
        .recv_from(&mut buf)
        .expect("a reply for another network");
    assert_eq!(Message::from_vec(&buf[..n]).unwrap().answers.len(), 1);
    for _ in 0..50 {
        let r = ask(s.addr, Proto::Tcp, &query("www.rl.test.", RecordType::A));
        assert_eq!(r.answers.len(), 1);
    }
}

/// Sends `queries` from `sock` in quick chunks (well inside one second, so one bucket's
/// burst is all that can be answered), reading the replies after each chunk so none
/// overflow the socket; counts (full answers, TC replies).
fn burst(sock: &UdpSocket, server: std::net::SocketAddr, queries: &[Vec<u8>]) -> Burst {
    let mut buf = [0u8; 2048];
    let (mut full, mut tc) = (0, 0);
    let start = Instant::now();
    let mut last = Duration::ZERO;
    let mut count = |quiet: Duration| {
        sock.set_read_timeout(Some(quiet)).unwrap();
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            if Message::from_vec(&buf[..n]).unwrap().metadata.truncation {
                tc += 1;
            } else {
                full += 1;
                last = start.elapsed();
            }
        }
    };
    for chunk in queries.chunks(50) {
        for q in chunk {
            sock.send_to(q, server).unwrap();
        }
        count(Duration::from_millis(5));
    }
    let sending = start.elapsed();
    count(Duration::from_millis(300));
    Burst {
        full,
        tc,
        sending: sending.max(last),
    }
}

/// What one [`burst`] got back, and how long it lasted.
struct Burst {
    full: u64,
    tc: u64,
    /// From the first query sent to the last full answer received (or the end of sending
    /// if later): the server answered within it, so its bucket refilled at most for that
    /// long, however far a loaded server lagged behind the sender.
    sending: Duration,
}

impl Burst {
    /// One bucket allows one second's worth (200) at once, then refills at 200/s while
    /// the burst lasts: the most a single budget can answer.
    fn one_budget(&self) -> bool {
        let allowed = 200.0 + 200.0 * self.sending.as_secs_f64();
        (200.0..=allowed + 5.0).contains(&(self.full as f64))
    }
}

#[test]
fn referrals_nxdomain_and_any_have_budgets_of_their_own() {
    let s = TestServer::start(&CONFIG.replace(
        "[[zones.records]]",
        "[[zones.records]]\nname = \"sub\"\ntype = \"NS\"\nvalue = \"ns.child.net.\"\n[[zones.records]]",
    ));
    let sock = UdpSocket::bind("127.0.2.1:0").unwrap();
    let many = |fmt: &dyn Fn(u32) -> String, rtype| -> Vec<Vec<u8>> {
        (0..600)
            .map(|i| query(&fmt(i), rtype).to_vec().unwrap())
            .collect()
    };
    // 600 random names under one delegation: one referral budget.
    let b = burst(
        &sock,
        s.addr,
        &many(&|i| format!("r{i}.sub.rl.test."), RecordType::A),
    );
    eprintln!(
        "referrals: {} answered, {} truncated of 600 in {:?}",
        b.full, b.tc, b.sending
    );
    assert!(
        b.one_budget(),
        "referrals answered {} in {:?}",
        b.full,
        b.sending
    );
    assert!(b.tc > 100, "limited referrals slipped: {}", b.tc);
    // 600 random missing names: one NXDOMAIN budget for the zone.
    let b = burst(
        &sock,
        s.addr,
        &many(&|i| format!("n{i}.rl.test."), RecordType::A),
    );
    eprintln!("NXDOMAIN: {} answered of 600 in {:?}", b.full, b.sending);
    assert!(
        b.one_budget(),
        "NXDOMAIN answered {} in {:?}",
        b.full,
        b.sending
    );
    // ANY for one name exhausts the ANY budget, not the answer budget of that name.
    let b = burst(
        &sock,
        s.addr,
        &many(&|_| "www.rl.test.".into(), RecordType::ANY),
    );
    assert!(b.one_budget(), "ANY answered {} in {:?}", b.full, b.sending);
    let b = burst(
        &sock,
        s.addr,
        &many(&|_| "www.rl.test.".into(), RecordType::A)[..100],
    );
    let (full, tc) = (b.full, b.tc);
    assert_eq!((full, tc), (100, 0), "A answers keep their own budget");
    // Errors share one budget per network whatever the name: REFUSED for random names
    // outside the zone, and FORMERR for packets that do not even decode.
    let b = burst(
        &sock,
        s.addr,
        &many(&|i| format!("x{i}.elsewhere.example."), RecordType::A),
    );
    assert!(
        b.one_budget(),
        "REFUSED answered {} in {:?}",
        b.full,
        b.sending
    );
    let garbage: Vec<Vec<u8>> = (0..600u16)
        .map(|i| {
            let mut q = i.to_be_bytes().to_vec();
            q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0x3f]); // label runs off the end
            q
        })
        .collect();
    let b = burst(&sock, s.addr, &garbage);
    eprintln!("FORMERR: {} answered of 600 in {:?}", b.full, b.sending);
    assert!(
        b.full <= 200 + (200.0 * b.sending.as_secs_f64()) as u64 + 5,
        "FORMERR answered {}",
        b.full
    );
}
