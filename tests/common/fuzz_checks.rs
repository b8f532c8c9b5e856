//! The checks behind the fuzz targets (`fuzz/`), shared with the integration tests that
//! replay the seeds and every crash the fuzzers found (`tests/it/fuzz_regressions.rs`):
//! each function takes one raw fuzz input and panics if gtmd misbehaves on it.
//!
//! Packet inputs start with a 10-byte set-up header (config choice and client address,
//! then the policy seed); the rest is the datagram. The configs are the integration
//! tests' own (`fixtures.rs`), loaded into snapshots once.

use std::{
    cell::RefCell,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::{Arc, LazyLock},
};

use arc_swap::ArcSwap;
use gtmd::{
    dns::{
        DnsHandler,
        rrl::{Rrl, RrlSettings, slip_reply},
        udp::{Capture, Step, full_path, on_datagram},
    },
    metrics::Metrics,
    snapshot::Snapshot,
};
use hickory_proto::op::{Message, MessageType};
use hickory_server::net::xfer::Protocol;

use super::{differential::compare, fixtures};

/// One loaded config.
pub struct Served {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<Metrics>,
    pub handler: DnsHandler,
}

/// Loads `toml` into a snapshot with its metrics and a handler.
pub fn serve(toml: &str) -> Served {
    let loaded = gtmd::from_text(Path::new("fuzz.toml"), toml).expect("fixture is valid");
    let model = Arc::new(loaded.model);
    let metrics = Arc::new(Metrics::new());
    let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::initial(&model, &metrics)));
    let handler = DnsHandler::new(snapshot.clone(), metrics.clone());
    Served {
        snapshot,
        metrics,
        handler,
    }
}

/// The repository root, whether this file is compiled into the main crate's tests or the
/// fuzz crate (one level down).
pub fn repo_root() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    if dir.join("tests/common").is_dir() {
        dir.to_path_buf()
    } else {
        dir.join("..")
    }
}

/// The record-shapes zone and the every-policy zone.
pub static SERVED: LazyLock<[Served; 2]> = LazyLock::new(|| {
    let mmdb = repo_root().join("tests/data/geo-test.mmdb");
    [
        serve(&fixtures::zone_toml()),
        serve(&fixtures::policy_toml(&mmdb.to_string_lossy(), "")),
    ]
});

/// The runtime the full path runs on.
pub static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
});

/// Splits a packet input into (config, client address, seed, datagram). Clients cover
/// IPv4 and IPv6, the test geo database's networks (10/8 is a configured region) and
/// loopback.
pub fn split(data: &[u8]) -> Option<(&'static Served, SocketAddr, u64, &[u8])> {
    let (head, packet) = data.split_at_checked(10)?;
    let served = &SERVED[usize::from(head[0] & 1)];
    let ip = match head[0] >> 1 & 3 {
        0 => IpAddr::V4(Ipv4Addr::new(10, head[1], 0, 7)),
        1 => IpAddr::V4(Ipv4Addr::new(head[1], 51, 100, 9)),
        2 => IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            u16::from(head[1]),
            0,
            0,
            0,
            0,
            1,
        )),
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    let seed = u64::from_le_bytes(head[2..10].try_into().ok()?);
    Some((served, SocketAddr::new(ip, 5300), seed, packet))
}

/// Every datagram the UDP fast path answers gets a semantically identical reply from the
/// full hickory path (see `differential.rs` for what "identical" means).
pub fn differential(data: &[u8]) {
    let Some((served, src, seed, packet)) = split(data) else {
        return;
    };
    if let Err(e) = compare(
        &served.snapshot,
        &served.metrics,
        &served.handler,
        &RUNTIME,
        packet,
        src,
        seed,
    ) {
        panic!("fast and full paths disagree on {packet:02x?}:\n{e}");
    }
}

/// A limit low enough that the fuzzer sees answers, slips and drops.
static RRL: LazyLock<Rrl> = LazyLock::new(|| {
    Rrl::new(RrlSettings {
        responses_per_second: 5,
        slip: 2,
        ipv4_prefix: 24,
        ipv6_prefix: 56,
        exempt: vec![],
    })
});

fn check_reply(query: &[u8], reply: &[u8], max: usize, what: &str) {
    let m = Message::from_vec(reply)
        .unwrap_or_else(|e| panic!("{what} reply does not parse ({e}): {reply:02x?}"));
    assert!(
        m.metadata.message_type == MessageType::Response,
        "{what} reply is not a response"
    );
    assert_eq!(reply[..2], query[..2], "{what} reply has another ID");
    // RFC 3225 §3: the OPT of a reply carries the query's DO bit.
    if let (Some(ours), Ok(asked)) = (m.edns.as_ref(), Message::from_vec(query))
        && let Some(theirs) = asked.edns.as_ref()
    {
        assert_eq!(
            ours.flags().dnssec_ok,
            theirs.flags().dnssec_ok,
            "{what} reply does not copy DO"
        );
    }
    // CD is echoed to queries only (the NOTIMP to other opcodes does not carry it).
    assert!(
        query[2] & 0x78 == 0 || !m.metadata.checking_disabled,
        "{what} reply to opcode {} echoes CD",
        query[2] >> 3 & 0x0f
    );
    assert!(
        reply.len() <= max,
        "{what} reply of {} bytes exceeds {max}",
        reply.len()
    );
}

/// The most a UDP reply to `query` may hold: the EDNS payload it advertises, else 512.
fn udp_max(query: &[u8]) -> usize {
    Message::from_vec(query)
        .ok()
        .and_then(|m| m.edns.map(|e| usize::from(e.max_payload())))
        .map_or(512, |p| p.max(512))
}

fn full(
    served: &Served,
    packet: &[u8],
    src: std::net::SocketAddr,
    proto: Protocol,
) -> Option<Vec<u8>> {
    let capture = Capture::default();
    let formerr = RefCell::new(None);
    RUNTIME.block_on(full_path(
        &served.handler,
        packet.to_vec(),
        src,
        proto,
        capture.clone(),
        |r| {
            *formerr.borrow_mut() = Some(r);
            true
        },
    ));
    let reply = capture.0.lock().unwrap().take();
    reply.or_else(|| formerr.borrow_mut().take())
}

/// Raw bytes into the request handler, as a UDP worker and a TCP connection would pass
/// them: the fast path with rate limiting, the full hickory path, the RRL slip reply. No
/// input may panic; every reply must parse, be a response (QR=1) with the query's ID, over
/// UDP fit the size the query allows (512 bytes without EDNS), carry the query's DO bit in
/// its OPT, and have CD clear unless it answers a QUERY.
pub fn packet(data: &[u8]) {
    let Some((served, src, seed, packet)) = split(data) else {
        return;
    };
    let mut slot = vec![0u8; 4096];
    if let Some(len) = slip_reply(packet, &mut slot) {
        check_reply(packet, &slot[..len], 512, "slip");
    }
    if seed & 1 == 0 {
        let snap = served.snapshot.load();
        let rrl = (seed & 2 != 0 && !matches!(src.ip(), IpAddr::V4(a) if a.is_loopback()))
            .then_some(&*RRL);
        let mut tally = gtmd::metrics::Tally::new(&served.metrics);
        let step = on_datagram(&snap, &mut tally, rrl, packet, src, &mut slot);
        tally.flush(&served.metrics, &snap);
        match step {
            Step::Reply(len) => check_reply(packet, &slot[..len], udp_max(packet), "fast path"),
            Step::Nothing => {}
            Step::Full => {
                if let Some(reply) = full(served, packet, src, Protocol::Udp) {
                    check_reply(packet, &reply, udp_max(packet), "full path (UDP)");
                }
            }
        }
    } else if let Some(reply) = full(served, packet, src, Protocol::Tcp) {
        check_reply(packet, &reply, 65535, "full path (TCP)");
    }
}

/// Arbitrary text as a config file (and `GTMD__…` overrides): loading, validating and
/// building a snapshot never panics, and every rejection names the file and carries a
/// message. Input: the file text, optionally followed by a NUL byte and `KEY=VALUE` lines
/// passed as environment overrides.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (file, env) = text.split_once('\0').unwrap_or((text, ""));
    let env: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (format!("GTMD__{k}"), v.to_owned()))
        .collect();
    let path = Path::new("fuzz.toml");
    let result = gtmd::config::parse_with_env(path, file, env)
        .and_then(|config| gtmd::from_config(path, &config));
    if let Err(errors) = result {
        assert!(!errors.errors.is_empty(), "a rejection without an error");
        let shown = errors.to_string();
        assert!(
            shown.contains("fuzz.toml"),
            "error does not name the file: {shown}"
        );
        for e in &errors.errors {
            assert!(!e.message.is_empty(), "an error without a message: {e:?}");
        }
    }
}

/// The fleet's own decoding: a bucket of shared observations (`health::agree::codec`)
/// and an authenticated gossip datagram (`fleet::auth`), whole or in parts, as a holder
/// of the key could send anything. Never panics; a bucket that decodes holds exactly its
/// targets and survives a round trip; unfinished messages stay bounded.
///
/// Input: a mode byte. Mode 0: two bytes of target count, then the value's text. Else: a
/// sequence of datagrams, each a format byte (1 whole, 2 a part), a length byte and that
/// many body bytes, tagged with the fleet key and checked by one socket in turn.
pub fn fleet(data: &[u8]) {
    use gtmd::health::agree::codec;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if rest.len() < 2 {
            return;
        }
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])) % 512;
        let text = String::from_utf8_lossy(&rest[2..]);
        // The hash the value names, so that the body is what gets read.
        let hash = text
            .split('/')
            .next()
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .unwrap_or(0);
        if let Ok(read) = codec::decode(&text, hash, len) {
            assert_eq!(read.states.len(), len);
            let since = read.since.as_deref().unwrap_or(&[]);
            assert!(since.is_empty() || since.len() == len);
            let again =
                codec::decode(&codec::encode(hash, &read.states, since), hash, len).unwrap();
            assert_eq!(
                again.states, read.states,
                "{text:?} does not survive a round trip"
            );
            // What a value says of since is kept where it is said of an observed target
            // that differs from the common state (the rest is not encoded): written
            // again, it reads the same.
            let third = codec::decode(
                &codec::encode(hash, &again.states, again.since.as_deref().unwrap_or(&[])),
                hash,
                len,
            )
            .unwrap();
            assert_eq!(
                third, again,
                "{text:?}: since does not survive a round trip"
            );
        }
        return;
    }
    FLEET_SOCKET.with(|cell| {
        let mut guard = cell.borrow_mut();
        let (socket, key) = &mut *guard;
        let from: SocketAddr = "127.0.0.1:7946".parse().unwrap();
        let mut input = rest;
        while let [format, n, body @ ..] = input {
            let n = usize::from(*n).min(body.len());
            let datagram = socket.tagged(key, *format, &body[..n]);
            let _ = socket.accept(&datagram, from);
            assert!(socket.partial_messages() <= gtmd::fleet::auth::MAX_PARTIAL);
            input = &body[n..];
        }
    });
}

thread_local! {
    /// One gossip socket per fuzzing thread (bound once, on loopback; nothing is sent).
    static FLEET_SOCKET: RefCell<(gtmd::fleet::auth::AuthSocket, gtmd::fleet::auth::FleetKey)> = {
        let key = gtmd::fleet::auth::FleetKey::new(b"a fleet key for the fuzz target!").unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
        let metrics = gtmd::fleet::auth::GossipMetrics::unregistered();
        let socket = runtime
            .block_on(gtmd::fleet::auth::AuthSocket::bind(
                "127.0.0.1:0".parse().unwrap(),
                key.clone(),
                metrics,
            ))
            .unwrap();
        // The socket's reactor stays with the runtime; `accept` never touches it.
        std::mem::forget(runtime);
        RefCell::new((socket, key))
    };
}
