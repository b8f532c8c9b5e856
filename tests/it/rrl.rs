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
    let receiver = {
        let (sock, stop, full, tc) = (sock.clone(), stop.clone(), full.clone(), tc.clone());
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
                    }
                }
            }
        })
    };
    // 2,000 queries per second for 3 s, paced.
    let start = Instant::now();
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
    // One second's budget at start plus 200/s over 3 s.
    assert!((600..=900).contains(&full), "answered {full}");
    let limited = sent - full;
    let tc_share = tc as f64 / limited as f64;
    assert!(
        (0.4..=0.6).contains(&tc_share),
        "slip 2: half TC, half dropped ({tc} of {limited})"
    );
    let (_, text) = http_get(s.admin, "/metrics");
    let m = crate::ops::parse_exposition(&text);
    assert_eq!(m["gtmd_rrl_slipped_total"] as u64, tc);
    assert_eq!(m["gtmd_rrl_dropped_total"] as u64, dropped);

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
fn burst(sock: &UdpSocket, server: std::net::SocketAddr, queries: &[Vec<u8>]) -> (u64, u64) {
    let mut buf = [0u8; 2048];
    let (mut full, mut tc) = (0, 0);
    let mut count = |quiet: Duration| {
        sock.set_read_timeout(Some(quiet)).unwrap();
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            if Message::from_vec(&buf[..n]).unwrap().metadata.truncation {
                tc += 1;
            } else {
                full += 1;
            }
        }
    };
    for chunk in queries.chunks(50) {
        for q in chunk {
            sock.send_to(q, server).unwrap();
        }
        count(Duration::from_millis(5));
    }
    count(Duration::from_millis(300));
    (full, tc)
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
    // 600 random names under one delegation: one referral budget (one second's worth).
    let (full, tc) = burst(
        &sock,
        s.addr,
        &many(&|i| format!("r{i}.sub.rl.test."), RecordType::A),
    );
    eprintln!("referrals: {full} answered, {tc} truncated of 600");
    assert!((200..=260).contains(&full), "referrals answered {full}");
    assert!(tc > 100, "limited referrals slipped: {tc}");
    // 600 random missing names: one NXDOMAIN budget for the zone.
    let (full, _) = burst(
        &sock,
        s.addr,
        &many(&|i| format!("n{i}.rl.test."), RecordType::A),
    );
    eprintln!("NXDOMAIN: {full} answered of 600");
    assert!((200..=260).contains(&full), "NXDOMAIN answered {full}");
    // ANY for one name exhausts the ANY budget, not the answer budget of that name.
    let (full, _) = burst(
        &sock,
        s.addr,
        &many(&|_| "www.rl.test.".into(), RecordType::ANY),
    );
    assert!((200..=260).contains(&full), "ANY answered {full}");
    let (full, tc) = burst(
        &sock,
        s.addr,
        &many(&|_| "www.rl.test.".into(), RecordType::A)[..100],
    );
    assert_eq!((full, tc), (100, 0), "A answers keep their own budget");
}
