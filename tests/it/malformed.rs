//! Hostile and broken input: the server never crashes or hangs, every reply it sends parses,
//! and it keeps answering afterwards.

use std::{
    io::Write,
    net::{SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, ResponseCode},
    rr::RecordType,
};

use crate::support::{BOTH, ask, query, udp_raw_timeout, zone_server};

/// A small deterministic PRNG (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn assert_still_answers(addr: SocketAddr) {
    for proto in BOTH {
        let r = ask(addr, proto, &query("app.example.test.", RecordType::A));
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(r.answers.len(), 2);
    }
}

/// Sends the packets from one socket in small batches, collecting the replies of each batch
/// until the server is quiet for a moment (so no socket buffer overflows and replies are
/// not lost); every reply must parse as a DNS message. Returns the number of replies.
fn blast(addr: SocketAddr, packets: &[Vec<u8>]) -> usize {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(30)))
        .unwrap();
    let mut buf = vec![0u8; 65535];
    let mut replies = 0;
    for batch in packets.chunks(32) {
        for p in batch {
            let _ = sock.send_to(p, addr);
        }
        let give_up = Instant::now() + Duration::from_secs(5);
        while Instant::now() < give_up {
            let Ok((n, _)) = sock.recv_from(&mut buf) else {
                break;
            };
            if let Err(e) = Message::from_vec(&buf[..n]) {
                panic!("reply does not parse: {e}: {:02x?}", &buf[..n]);
            }
            replies += 1;
        }
    }
    replies
}

fn valid_query() -> Vec<u8> {
    query("app.example.test.", RecordType::A).to_vec().unwrap()
}

#[test]
fn truncated_queries() {
    let s = zone_server();
    let q = valid_query();
    let packets: Vec<Vec<u8>> = (0..q.len()).map(|n| q[..n].to_vec()).collect();
    blast(s.addr, &packets);
    assert_still_answers(s.addr);
}

#[test]
fn random_and_mutated_packets() {
    let s = zone_server();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let q = valid_query();
    let mut packets = Vec::new();
    for _ in 0..1500 {
        let len = rng.below(600);
        packets.push((0..len).map(|_| rng.next() as u8).collect());
    }
    for _ in 0..3000 {
        let mut p = q.clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(p.len());
            p[i] ^= 1 << rng.below(8);
        }
        // Keep QR clear so most mutants are processed rather than dropped.
        p[2] &= 0x7f;
        packets.push(p);
    }
    let replies = blast(s.addr, &packets);
    // Most mutants are still queries (a flipped bit in a label or the ID): they must be
    // answered, or this test would only exercise the drop path.
    eprintln!("{replies} replies to {} packets", packets.len());
    assert!(
        replies > 2000,
        "mutated queries mostly get answers, got {replies}"
    );
    assert_still_answers(s.addr);
}

#[test]
fn compression_pointer_loops_and_bad_pointers() {
    let s = zone_server();
    let header = |qd: u16| {
        let mut h = vec![0xab, 0xcd, 0x01, 0x00];
        h.extend_from_slice(&qd.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        h
    };
    let mut packets = Vec::new();
    // Name is a pointer to itself.
    let mut p = header(1);
    p.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    packets.push(p);
    // Two pointers pointing at each other.
    let mut p = header(1);
    p.extend_from_slice(&[0xc0, 14, 0xc0, 12, 0, 1, 0, 1]);
    packets.push(p);
    // Label then pointer back to the label.
    let mut p = header(1);
    p.extend_from_slice(&[3, b'a', b'b', b'c', 0xc0, 12, 0, 1, 0, 1]);
    packets.push(p);
    // Pointer beyond the end.
    let mut p = header(1);
    p.extend_from_slice(&[0xc0, 0xff, 0, 1, 0, 1]);
    packets.push(p);
    // Reserved label types 0x40 and 0x80.
    for lead in [0x40u8, 0x80] {
        let mut p = header(1);
        p.extend_from_slice(&[lead, 1, 0, 0, 1, 0, 1]);
        packets.push(p);
    }
    // QDCOUNT 65535 with one question.
    let mut p = header(u16::MAX);
    p.extend_from_slice(&valid_query()[12..]);
    packets.push(p);
    // A name longer than 255 octets.
    let mut p = header(1);
    for _ in 0..5 {
        p.push(63);
        p.extend(std::iter::repeat_n(b'x', 63));
    }
    p.extend_from_slice(&[0, 0, 1, 0, 1]);
    packets.push(p);
    // ARCOUNT claiming records that are not there, and two OPT records.
    let mut p = valid_query();
    p[11] = 200;
    packets.push(p);
    let mut p = valid_query();
    let opt_start = p.len() - 11;
    let opt = p[opt_start..].to_vec();
    p.extend_from_slice(&opt);
    p[11] = 2;
    packets.push(p);
    for p in &packets {
        if let Some(reply) = udp_raw_timeout(s.addr, p, Duration::from_millis(300)) {
            let m = Message::from_vec(&reply).expect("reply parses");
            assert_ne!(m.metadata.response_code, ResponseCode::NoError, "{p:02x?}");
        }
    }
    assert_still_answers(s.addr);
}

#[test]
fn oversized_datagrams() {
    let s = zone_server();
    let mut big = valid_query();
    big.resize(60_000, 0xff);
    let mut bigger_garbage = vec![0x41u8; 65_000];
    bigger_garbage[2] = 0x01;
    blast(s.addr, &[big, bigger_garbage]);
    assert_still_answers(s.addr);
}

#[test]
fn responses_are_never_answered() {
    let s = zone_server();
    let mut p = valid_query();
    p[2] |= 0x80; // QR: this is a response; answering it would allow reflection loops.
    assert!(udp_raw_timeout(s.addr, &p, Duration::from_millis(500)).is_none());
    assert_still_answers(s.addr);
}

#[test]
fn broken_tcp_streams() {
    let s = zone_server();
    let q = valid_query();
    // Length prefix of zero; a prefix longer than what follows; garbage; a half prefix.
    let streams: Vec<Vec<u8>> = vec![
        vec![0, 0],
        {
            let mut v = vec![0xff, 0xff];
            v.extend_from_slice(&q);
            v
        },
        (0..300u16).map(|i| (i * 7) as u8).collect(),
        vec![0x01],
        {
            let mut v = (q.len() as u16).to_be_bytes().to_vec();
            v.extend_from_slice(&q[..q.len() / 2]);
            v
        },
    ];
    for bytes in streams {
        let mut c = TcpStream::connect(s.addr).unwrap();
        let _ = c.write_all(&bytes);
        drop(c);
    }
    // A connection that sends nothing does not block others.
    let _idle = TcpStream::connect(s.addr).unwrap();
    assert_still_answers(s.addr);
}
