//! Overload and hostile input seen from outside: every packet received is counted once,
//! every response sent once, drops as drops; a flood of queries that miss the fast path is
//! shed at the door with a bounded queue, so memory stays flat.

use std::{
    collections::HashMap,
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hickory_proto::{op::Message, rr::RecordType};

use crate::support::{TestServer, http_get, query, wait_for};

const CONFIG: &str = r#"
[rrl]
enabled = true
responses_per_second = 20
slip = 2
exempt = []
[[zones]]
origin = "ov.test"
nameservers = ["ns.outside.net"]
[zones.soa]
mname = "ns.outside.net"
rname = "h.ov.test"
[[zones.records]]
name = "www"
type = "A"
value = "192.0.2.1"
"#;

fn metrics(admin: SocketAddr) -> HashMap<String, f64> {
    let (status, text) = http_get(admin, "/metrics");
    assert_eq!(status, 200);
    crate::ops::parse_exposition(&text)
}

/// The sum of every series of `family` whose labels contain `filter`.
fn sum(m: &HashMap<String, f64>, family: &str, filter: &str) -> u64 {
    m.iter()
        .filter(|(k, _)| {
            k.strip_prefix(family)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
                && k.contains(filter)
        })
        .map(|(_, v)| *v as u64)
        .sum()
}

/// A query for `name` with the header and question written by hand, then `additional`
/// appended (ARCOUNT = `arcount`).
fn raw_query(id: u16, labels: &[&[u8]], additional: &[u8], arcount: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0]);
    q.extend_from_slice(&arcount.to_be_bytes());
    for l in labels {
        q.push(l.len() as u8);
        q.extend_from_slice(l);
    }
    q.push(0);
    q.extend_from_slice(&[0, 1, 0, 1]);
    q.extend_from_slice(additional);
    q
}

/// An OPT record owned by `owner` (wire form) carrying `options`.
fn opt(owner: &[u8], options: &[u8]) -> Vec<u8> {
    let mut r = owner.to_vec();
    r.extend_from_slice(&[0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
    r.extend_from_slice(&(options.len() as u16).to_be_bytes());
    r.extend_from_slice(options);
    r
}

/// Sends `packets` in batches of 16, reading replies after each batch until the server is
/// quiet for 100 ms (so no buffer overflows); the number of replies read so far (late ones
/// are read by [`read_replies`]).
fn exchange(sock: &UdpSocket, addr: SocketAddr, packets: &[Vec<u8>]) -> u64 {
    let mut replies = 0;
    for batch in packets.chunks(16) {
        for p in batch {
            sock.send_to(p, addr).unwrap();
        }
        replies += read_replies(sock, Duration::from_millis(100));
    }
    replies
}

/// Reads replies until none comes for `quiet`; each must parse. How many were read.
fn read_replies(sock: &UdpSocket, quiet: Duration) -> u64 {
    sock.set_read_timeout(Some(quiet)).unwrap();
    let mut buf = [0u8; 4096];
    let mut replies = 0;
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        Message::from_vec(&buf[..n]).expect("every reply parses");
        replies += 1;
    }
    replies
}

#[test]
fn every_packet_is_counted_once_as_a_request_and_as_a_response_or_a_drop() {
    let s = TestServer::start(CONFIG);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut packets = Vec::new();
    // Fast path, then over the rate: sent, slipped and dropped.
    for _ in 0..60 {
        packets.push(query("www.ov.test.", RecordType::A).to_vec().unwrap());
    }
    // Full path: NXDOMAIN for random names (one budget for the zone), TXT NODATA.
    for i in 0..60 {
        packets.push(
            query(&format!("n{i}.ov.test."), RecordType::A)
                .to_vec()
                .unwrap(),
        );
        packets.push(query("www.ov.test.", RecordType::TXT).to_vec().unwrap());
    }
    // Packets that do not decode: FORMERR (through the error budget).
    let ecs_33 = [0, 8, 0, 8, 0, 1, 33, 0, 192, 0, 2, 1];
    let root = [0u8];
    for i in 0..10u16 {
        let www: &[&[u8]] = &[b"www", b"ov", b"test"];
        let mut two_opts = opt(&root, &[]);
        two_opts.extend(opt(&root, &[]));
        packets.push(raw_query(i, www, &two_opts, 2));
        packets.push(raw_query(i, www, &opt(b"\x01a\x00", &[]), 1));
        packets.push(raw_query(i, www, &opt(&root, &ecs_33), 1));
        packets.push(raw_query(i, &[&[b'x'; 64], b"ov", b"test"], &[], 0));
    }
    // Never answered: responses (QR set) and runts.
    let mut response = query("www.ov.test.", RecordType::A).to_vec().unwrap();
    response[2] |= 0x80;
    let malformed = 20;
    for _ in 0..malformed / 2 {
        packets.push(response.clone());
        packets.push(vec![0x12, 0x34, 0x01]);
    }
    let sent = packets.len() as u64;
    let mut received = exchange(&sock, s.addr, &packets);
    let mut m = HashMap::new();
    // Every packet's fate is known once responses and drops add up to what was sent.
    wait_for("every packet counted", Duration::from_secs(30), || {
        m = metrics(s.admin);
        sum(&m, "gtmd_dns_responses_total", "") + sum(&m, "gtmd_dns_dropped_total", "") >= sent
    });
    // A reply counted as sent may still be on its way on a slow machine: read until every
    // response the metrics count has arrived (a reply lost on loopback fails here).
    wait_for(
        "every reply sent is received",
        Duration::from_secs(30),
        || {
            received += read_replies(&sock, Duration::from_millis(50));
            m = metrics(s.admin);
            received >= sum(&m, "gtmd_dns_responses_total", "")
        },
    );
    eprintln!("sent {sent}, {received} replies; metrics: {m:?}");
    assert_eq!(sum(&m, "gtmd_dns_requests_total", ""), sent, "requests");
    assert_eq!(
        sum(&m, "gtmd_dns_requests_total", r#"qtype="invalid""#),
        10 + malformed / 2,
        "packets without a readable question (64-byte label, runts) are requests too"
    );
    assert_eq!(
        sum(&m, "gtmd_dns_responses_total", ""),
        received,
        "responses"
    );
    assert!(
        sum(&m, "gtmd_dns_responses_total", r#"rcode="FORMERR""#) > 0,
        "FORMERR replies are counted"
    );
    assert_eq!(
        sum(&m, "gtmd_dns_dropped_total", ""),
        sent - received,
        "drops"
    );
    assert_eq!(
        sum(&m, "gtmd_dns_dropped_total", r#"reason="malformed""#),
        malformed
    );
    assert!(sum(&m, "gtmd_dns_dropped_total", r#"reason="rrl""#) > 0);
}

/// Resident and peak resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[test]
fn a_flood_of_nxdomain_queries_is_shed_at_the_door_and_memory_stays_flat() {
    let _exclusive = crate::support::exclusive();
    // A child gtmd, so its memory is its own; RRL off (the default), as for one
    // unspoofed source.
    let port = crate::cli::free_port();
    let admin_port = crate::cli::free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let config = crate::cli::example_on_port(port);
    // A short full-path queue, so that even a slow sender on a busy machine fills it.
    let text = std::fs::read_to_string(config.path())
        .unwrap()
        .replace("127.0.0.1:9153", &admin.to_string())
        .replace("[server]\n", "[server]\nfull_path_queue = 16\n");
    assert!(text.contains("full_path_queue = 16"));
    std::fs::write(config.path(), text).unwrap();
    let served = crate::cli::serve(config.path(), addr);
    let pid = served.0.id();
    let (before, _) = rss_kib(pid);

    // Two open-loop senders of random nonexistent names for 3 s (each stops by itself),
    // and a well-behaved client asking the app name.
    let stop = Arc::new(AtomicBool::new(false));
    let flooders: Vec<_> = (0..2u64)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
                sock.set_nonblocking(true).unwrap();
                let started = Instant::now();
                let mut sent = 0u64;
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ t;
                while started.elapsed() < Duration::from_secs(3) && !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let q = query(&format!("r{x:x}.apps.example.com."), RecordType::A)
                        .to_vec()
                        .unwrap();
                    if sock.send_to(&q, addr).is_ok() {
                        sent += 1;
                    }
                }
                sent
            })
        })
        .collect();
    let (asked, answered) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let good = {
        let (stop, asked, answered) = (stop.clone(), asked.clone(), answered.clone());
        std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let q = query("shop.apps.example.com.", RecordType::A)
                .to_vec()
                .unwrap();
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                asked.fetch_add(1, Ordering::Relaxed);
                sock.send_to(&q, addr).unwrap();
                if sock.recv_from(&mut buf).is_ok() {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let sent: u64 = flooders.into_iter().map(|f| f.join().unwrap()).sum();
    stop.store(true, Ordering::Relaxed);
    good.join().unwrap();
    let (after, peak) = rss_kib(pid);
    let m = metrics(admin);
    let overload = sum(&m, "gtmd_dns_dropped_total", r#"reason="overload""#);
    let (asked, answered) = (
        asked.load(Ordering::Relaxed),
        answered.load(Ordering::Relaxed),
    );
    eprintln!(
        "flood: {sent} sent, {overload} shed as overload; RSS {before} KiB before, peak \
         {peak}, {after} after; well-behaved client {answered}/{asked}"
    );
    // The queue holds at most 2 × 16 queries of a few hundred bytes; a task per
    // datagram grew by 65 MiB in this test (and by 1.9 GB in a longer, faster flood).
    assert!(
        peak < before + 16 * 1024,
        "peak RSS {peak} KiB grew more than 16 MiB over {before} KiB"
    );
    assert!(overload > 0, "the full path's queue overflowed: counted");
    // Still answering once the flood is over.
    wait_for(
        "the app answers after the flood",
        Duration::from_secs(10),
        || {
            crate::support::udp_raw_timeout(
                addr,
                &query("shop.apps.example.com.", RecordType::A)
                    .to_vec()
                    .unwrap(),
                Duration::from_millis(500),
            )
            .is_some()
        },
    );
    drop(served);
}
