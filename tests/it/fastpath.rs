//! Differential test: every query the UDP fast path answers gets a semantically identical
//! reply from the full hickory path (same rcode, flags, question bytes, sections, TTLs, EDNS
//! and ECS), with the policy's random choice made from the same seed.

use std::net::IpAddr;

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query},
    rr::{
        Name, RecordType,
        rdata::opt::{ClientSubnet, EdnsOption},
    },
};
use proptest::prelude::*;

use crate::differential::{Outcome, compare};

/// Names worth asking: apps, static names, empty non-terminals, missing and foreign names.
const NAMES: &[&str] = &[
    "app.example.test.",
    "v4only.example.test.",
    "mid.example.test.",
    "big.example.test.",
    "www.example.test.",
    "c1.example.test.",
    "example.test.",
    "ns1.example.test.",
    "a.b.c.example.test.",
    "b.c.example.test.",
    "srv.example.test.",
    "mail.example.test.",
    "sub.example.test.",
    "x.sub.example.test.",
    "x.inner.example.test.",
    "nope.example.test.",
    "longtxt.example.test.",
    "at.example.test.",
    "away.example.test.",
    "example.org.",
    "geo.p.test.",
    "fenced.p.test.",
    "near.p.test.",
    "sticky.p.test.",
    "plain.p.test.",
    "noecs.p.test.",
    "p.test.",
];

const TYPES: &[RecordType] = &[
    RecordType::A,
    RecordType::AAAA,
    RecordType::MX,
    RecordType::TXT,
    RecordType::NS,
    RecordType::SOA,
    RecordType::CNAME,
    RecordType::SRV,
    RecordType::CAA,
    RecordType::ANY,
    RecordType::PTR,
    RecordType::DS,
];

#[derive(Debug, Clone)]
struct Case {
    name: usize,
    rtype: usize,
    case_mask: u64,
    rd: bool,
    cd: bool,
    edns: Option<u16>,
    dnssec_ok: bool,
    ecs: Option<(bool, u32, u8)>,
    src: u8,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0..NAMES.len(),
        // A and AAAA are most of real traffic: weigh them up.
        prop_oneof![4 => Just(0usize), 2 => Just(1usize), 3 => 0..TYPES.len()],
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            Just(None),
            Just(Some(512u16)),
            Just(Some(1232)),
            Just(Some(4096)),
            Just(Some(100))
        ],
        any::<bool>(),
        prop_oneof![
            2 => Just(None),
            1 => (any::<bool>(), any::<u32>(), 0u8..=32).prop_map(Some),
        ],
        any::<u8>(),
        any::<u64>(),
    )
        .prop_map(
            |(name, rtype, case_mask, rd, cd, edns, dnssec_ok, ecs, src, seed)| Case {
                name,
                rtype,
                case_mask,
                rd,
                cd,
                edns,
                dnssec_ok,
                ecs,
                src,
                seed,
            },
        )
}

fn query_bytes(c: &Case) -> Vec<u8> {
    query_for(NAMES[c.name], TYPES[c.rtype], c)
}

/// The query of case `c` for any name and type.
fn query_for(name: &str, rtype: RecordType, c: &Case) -> Vec<u8> {
    let mut m = Message::new(0xbeef, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = c.rd;
    m.metadata.checking_disabled = c.cd;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if let Some(payload) = c.edns {
        let mut e = Edns::new();
        e.set_max_payload(payload);
        e.set_dnssec_ok(c.dnssec_ok);
        if let Some((v6, bits, prefix)) = c.ecs {
            let addr: IpAddr = if v6 {
                let mut o = [0u8; 16];
                o[..4].copy_from_slice(&bits.to_be_bytes());
                o[0] = 0x20;
                o[1] = 0x01;
                IpAddr::from(o)
            } else {
                IpAddr::from(bits.to_be_bytes())
            };
            let net = ipnet::IpNet::new(addr, prefix).unwrap().trunc();
            e.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::new(net.addr(), prefix, 0)));
        }
        m.set_edns(e);
    }
    let mut bytes = m.to_vec().unwrap();
    // Mixed case, as resolvers using 0x20 send it.
    let mut i = 12;
    while bytes[i] != 0 {
        let len = bytes[i] as usize;
        for (j, b) in bytes.iter_mut().enumerate().skip(i + 1).take(len) {
            if c.case_mask >> (j % 64) & 1 == 1 {
                *b = b.to_ascii_uppercase();
            }
        }
        i += len + 1;
    }
    bytes
}

#[test]
fn fast_and_full_paths_agree() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let configs = [crate::support::zone_toml(), crate::policy::toml("")];
    let answered_fast = std::cell::Cell::new(0u32);
    let total = std::cell::Cell::new(0u32);
    for toml in &configs {
        let crate::fuzz_checks::Served {
            snapshot,
            metrics,
            handler,
        } = crate::fuzz_checks::serve(toml);
        let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
            cases: 2500,
            failure_persistence: None,
            ..Default::default()
        });
        runner
            .run(&case(), |c| {
                total.set(total.get() + 1);
                let bytes = query_bytes(&c);
                let src: std::net::SocketAddr = format!("10.1.{}.7:5300", c.src).parse().unwrap();
                match compare(&snapshot, &metrics, &handler, &runtime, &bytes, src, c.seed) {
                    Ok(Outcome::Declined) => {}
                    Ok(Outcome::Agreed) => answered_fast.set(answered_fast.get() + 1),
                    Err(e) => prop_assert!(false, "query {:?}: {}", c, e),
                }
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let (answered_fast, total) = (answered_fast.get(), total.get());
    eprintln!("{answered_fast} of {total} random queries took the fast path; all agreed");
    assert!(
        answered_fast * 4 > total,
        "the fast path answered too few ({answered_fast}/{total}) for this test to mean much"
    );
}

/// Policy `all` over three clusters (two with an IPv4 and an IPv6 address, one with two
/// IPv4 addresses), each with its own probe; the same with `ignore_ecs`; and one capped
/// below its targets (not pre-rendered: rotations answer different targets).
const ALL3: &str = r#"
[[zones]]
origin = "r.test"
nameservers = ["ns.outside.net"]
[zones.soa]
mname = "ns.outside.net"
rname = "h.r.test"
[[clusters]]
name = "a"
ingress = ["192.0.2.1", "2001:db8::1"]
probe_address = "127.0.0.1"
probe = { kind = "tcp", port = 1 }
[[clusters]]
name = "b"
ingress = ["192.0.2.2", "2001:db8::2"]
probe_address = "127.0.0.1"
probe = { kind = "tcp", port = 1 }
[[clusters]]
name = "c"
ingress = ["192.0.2.3", "192.0.2.4"]
probe_address = "127.0.0.1"
probe = { kind = "tcp", port = 1 }
[[apps]]
hostname = "three.r.test"
ttl = 40
targets = [{ cluster = "a" }, { cluster = "b" }, { cluster = "c" }]
[[apps]]
hostname = "noecs.r.test"
ignore_ecs = true
targets = [{ cluster = "c" }, { cluster = "a" }, { cluster = "b" }]
[[apps]]
hostname = "capped.r.test"
max_answers = 2
targets = [{ cluster = "a" }, { cluster = "b" }, { cluster = "c" }]
"#;

/// Policy `all`'s answers are pre-rendered at snapshot build, one per rotation (issue 14):
/// the fast path copies the drawn rotation instead of running the policy. Every health
/// state of the three clusters is built as a health change builds it, and the pre-rendered
/// answers must be the full path's answers for the same draw (same records in the same
/// order, same TTL, same EDNS/ECS), present exactly where they apply.
#[test]
fn pre_rendered_all_answers_are_the_full_paths_in_every_health_state() {
    use gtmd::{
        health::state::{HealthTable, ProbeId},
        snapshot::Snapshot,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let crate::fuzz_checks::Served {
        snapshot,
        metrics,
        handler,
    } = crate::fuzz_checks::serve(ALL3);
    let model = snapshot.load().model.clone();
    let names = ["three.r.test.", "noecs.r.test.", "capped.r.test."];
    for down in 0u8..8 {
        // Bit i set: cluster i's probe says down.
        let mut table = HealthTable::initial(&model);
        for (i, cluster) in ["a", "b", "c"].into_iter().enumerate() {
            let entry = table.get_mut(&ProbeId::Cluster(cluster.into())).unwrap();
            entry.state.up = down >> i & 1 == 0;
        }
        // Even states built afresh (start, reload), odd ones rebuilt from the previous
        // snapshot's plans, as a health publication does: both must render the same.
        let next = if down % 2 == 0 {
            Snapshot::build(&model, &table, &metrics)
        } else {
            let previous = snapshot.load();
            previous.with_apps(
                (0..model.apps.len())
                    .map(|a| (a, previous.app(a).rebuilt(&model, a, &table, &metrics))),
            )
        };
        snapshot.store(std::sync::Arc::new(next));
        let snap = snapshot.load();
        let up = |clusters: &[usize]| clusters.iter().filter(|&&i| down >> i & 1 == 0).count();
        // Rendered wherever a family has an up target; not for the capped app.
        let (v4, v6) = (up(&[0, 1, 2]) as u32, up(&[0, 1]) as u32);
        for (app, name) in names[..2].iter().enumerate() {
            let plan = snap.app(app);
            assert_eq!(plan.v4.rendered.period, v4, "{name} A, down {down:03b}");
            assert_eq!(plan.v6.rendered.period, v6, "{name} AAAA, down {down:03b}");
        }
        if down == 0 {
            // Rotations of two of three answer different targets: the policy runs.
            assert_eq!(
                snap.app(2).v4.rendered.period,
                0,
                "capped: not pre-rendered"
            );
        }
        let mut agreed = 0;
        for name in names {
            for rtype in [RecordType::A, RecordType::AAAA] {
                for (edns, ecs) in [(None, None), (Some(1232), None), (Some(1232), Some(24))] {
                    for seed in 0..12u64 {
                        let c = Case {
                            name: 0,
                            rtype: 0,
                            case_mask: seed * 0x9e37_79b9,
                            rd: true,
                            cd: false,
                            edns,
                            dnssec_ok: seed % 2 == 0,
                            ecs: ecs.map(|p| (false, 0xc633_6400, p)),
                            src: 9,
                            seed,
                        };
                        let bytes = query_for(name, rtype, &c);
                        let src = "10.1.9.7:5300".parse().unwrap();
                        match compare(&snapshot, &metrics, &handler, &runtime, &bytes, src, seed) {
                            Ok(Outcome::Agreed) => agreed += 1,
                            Ok(Outcome::Declined) => {}
                            Err(e) => panic!("{name} {rtype} down {down:03b} {c:?}: {e}"),
                        }
                    }
                }
            }
        }
        // Every state answers some of these on the fast path (all down: the fallback).
        assert!(agreed > 0, "down {down:03b}: nothing took the fast path");
    }
}
