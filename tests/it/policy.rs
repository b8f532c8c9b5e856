//! Traffic policies over real DNS: queries carrying EDNS Client Subnet (built with
//! hickory-proto, and with `dig +subnet` in an ignored test) reach the clusters their
//! location maps to, fences hold, and the echoed ECS scope is right.

use std::collections::BTreeSet;

use hickory_proto::{
    op::{Edns, Message, ResponseCode},
    rr::{
        RData, RecordType,
        rdata::opt::{ClientSubnet, EdnsCode, EdnsOption},
    },
};

use crate::support::{BOTH, Proto, TestServer, ask, query};

use crate::fixtures::{EU, US};

/// The policy test config, with `extra_geo` added to its `[geo]` table.
pub fn toml(extra_geo: &str) -> String {
    crate::fixtures::policy_toml(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/geo-test.mmdb"),
        extra_geo,
    )
}

/// An A query with ECS `subnet` (e.g. "192.0.2.0/24").
pub fn with_ecs(name: &str, subnet: &str) -> Message {
    let mut q = query(name, RecordType::A);
    let (addr, prefix) = subnet.split_once('/').unwrap();
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    edns.options_mut()
        .insert(EdnsOption::Subnet(ClientSubnet::new(
            addr.parse().unwrap(),
            prefix.parse().unwrap(),
            0,
        )));
    q.set_edns(edns);
    q
}

fn addrs(r: &Message) -> BTreeSet<String> {
    r.answers
        .iter()
        .filter_map(|a| match &a.data {
            RData::A(ip) => Some(ip.to_string()),
            _ => None,
        })
        .collect()
}

fn set(ips: &[&str]) -> BTreeSet<String> {
    ips.iter().map(|s| s.to_string()).collect()
}

/// The echoed ECS: (source prefix, scope prefix).
fn echoed(r: &Message) -> Option<(u8, u8)> {
    match r.edns.as_ref()?.option(EdnsCode::Subnet)? {
        EdnsOption::Subnet(s) => Some((s.source_prefix(), s.scope_prefix())),
        _ => None,
    }
}

#[test]
fn geo_sends_each_region_to_its_pool_with_the_deciding_scope() {
    let s = TestServer::start(&toml(""));
    for proto in BOTH {
        let r = ask(s.addr, proto, &with_ecs("geo.p.test.", "192.0.2.0/24"));
        assert_eq!(addrs(&r), set(&[EU]), "DE client");
        assert_eq!(echoed(&r), Some((24, 24)));
        let r = ask(s.addr, proto, &with_ecs("geo.p.test.", "198.51.100.0/24"));
        assert_eq!(addrs(&r), set(&[US]), "US client");
        assert_eq!(echoed(&r), Some((24, 24)));
        // A region from the config table (10/8), not in the MaxMind data.
        let r = ask(s.addr, proto, &with_ecs("geo.p.test.", "10.1.2.0/24"));
        assert_eq!(addrs(&r), set(&[US]), "lab client");
        let (_, scope) = echoed(&r).unwrap();
        assert!(
            scope >= 8,
            "the answer holds at most for the lab /8, scope {scope}"
        );
        // Paris from the /16, with a more specific US /24 inside it: the scope must not
        // cover that /24.
        let r = ask(s.addr, proto, &with_ecs("geo.p.test.", "198.18.9.0/24"));
        assert_eq!(addrs(&r), set(&[EU]));
        let (_, scope) = echoed(&r).unwrap();
        assert!(
            scope > 16,
            "198.18/16 holds a US /24: scope {scope} would cover it"
        );
        let r = ask(s.addr, proto, &with_ecs("geo.p.test.", "198.18.7.0/24"));
        assert_eq!(
            addrs(&r),
            set(&[US]),
            "San Francisco /24 inside the Paris /16"
        );
        // IPv6 client subnets.
        let r = ask(s.addr, proto, &with_ecs("geo.p.test.", "2001:db8:e00::/48"));
        assert_eq!(addrs(&r), set(&[EU]));
        assert_eq!(echoed(&r), Some((48, 40)));
    }
}

#[test]
fn geofenced_rules_never_answer_outside_their_pools() {
    let s = TestServer::start(&toml(""));
    // The EU target is down by its probe: fenced DE/FR clients still never get the US
    // cluster; fail open answers the EU one within the fence.
    let r = ask(
        s.addr,
        Proto::Udp,
        &with_ecs("fenced.p.test.", "192.0.2.0/24"),
    );
    assert_eq!(addrs(&r), set(&[EU]), "fallback all, within the fence");
    let r = ask(
        s.addr,
        Proto::Udp,
        &with_ecs("fenced.p.test.", "198.18.9.0/24"),
    );
    assert_eq!(addrs(&r), set(&[EU]), "FR is fenced too");
    let r = ask(
        s.addr,
        Proto::Udp,
        &with_ecs("fenced-none.p.test.", "192.0.2.0/24"),
    );
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(
        r.answers.is_empty(),
        "fallback none: NODATA, not the US cluster"
    );
    // Outside the fence the US pool answers.
    let r = ask(
        s.addr,
        Proto::Udp,
        &with_ecs("fenced.p.test.", "198.51.100.0/24"),
    );
    assert_eq!(addrs(&r), set(&[US]));
}

#[test]
fn nearest_goes_to_the_closest_cluster() {
    let s = TestServer::start(&toml(""));
    let r = ask(
        s.addr,
        Proto::Udp,
        &with_ecs("near.p.test.", "198.18.7.0/24"),
    );
    assert_eq!(addrs(&r), set(&[US]), "San Francisco");
    assert_eq!(echoed(&r), Some((24, 24)));
    let r = ask(
        s.addr,
        Proto::Udp,
        &with_ecs("near.p.test.", "203.0.113.0/24"),
    );
    assert_eq!(
        addrs(&r),
        set(&[EU]),
        "Tokyo is closer to Frankfurt than to Virginia"
    );
    // No coordinates (country-only data): the fallback policy (all).
    let r = ask(
        s.addr,
        Proto::Udp,
        &with_ecs("near.p.test.", "100.64.0.0/24"),
    );
    assert_eq!(addrs(&r), set(&[EU, US]));
}

#[test]
fn sticky_weighted_keeps_a_subnet_on_its_cluster() {
    let s = TestServer::start(&toml(""));
    let mut seen = BTreeSet::new();
    for subnet in 0..40 {
        let ecs = format!("198.19.{subnet}.0/24");
        let first = addrs(&ask(s.addr, Proto::Udp, &with_ecs("sticky.p.test.", &ecs)));
        assert_eq!(first.len(), 1);
        for _ in 0..5 {
            let r = ask(s.addr, Proto::Udp, &with_ecs("sticky.p.test.", &ecs));
            assert_eq!(addrs(&r), first, "{ecs} moved");
            assert_eq!(echoed(&r), Some((24, 24)));
        }
        seen.extend(first);
    }
    assert_eq!(seen, set(&[EU, US]), "40 subnets spread over both clusters");
}

#[test]
fn location_independent_answers_echo_scope_zero_or_no_ecs() {
    let s = TestServer::start(&toml(""));
    let r = ask(
        s.addr,
        Proto::Udp,
        &with_ecs("plain.p.test.", "192.0.2.0/24"),
    );
    assert_eq!(addrs(&r), set(&[EU, US]));
    assert_eq!(echoed(&r), Some((24, 0)), "cache it for everyone");
    let r = ask(
        s.addr,
        Proto::Udp,
        &with_ecs("nope.p.test.", "192.0.2.0/24"),
    );
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(echoed(&r), Some((24, 0)));
    let r = ask(s.addr, Proto::Udp, &query("plain.p.test.", RecordType::A));
    assert_eq!(echoed(&r), None, "no ECS asked, none echoed");
}

#[test]
fn ignored_or_untrusted_ecs_locates_the_resolver() {
    let s = TestServer::start(&toml(""));
    // The app ignores ECS: the resolver (127.0.0.1, unknown) gets the default rule, and
    // no ECS is echoed since the answer did not use it.
    let r = ask(
        s.addr,
        Proto::Udp,
        &with_ecs("noecs.p.test.", "192.0.2.0/24"),
    );
    assert_eq!(addrs(&r), set(&[US]));
    assert_eq!(echoed(&r), None);
    // ECS trusted only from 10/8: our queries come from 127.0.0.1.
    let t = TestServer::start(&toml(r#"ecs_trusted = ["10.0.0.0/8"]"#));
    let r = ask(t.addr, Proto::Udp, &with_ecs("geo.p.test.", "192.0.2.0/24"));
    assert_eq!(addrs(&r), set(&[US]), "untrusted ECS is not used");
    assert_eq!(echoed(&r), None);
}

#[test]
fn malformed_ecs_is_formerr() {
    let s = TestServer::start(&toml(""));
    for proto in BOTH {
        // Address bits beyond the source prefix, and a scope set in a query.
        for (addr, source, scope) in [("192.0.3.0", 23u8, 0u8), ("192.0.2.0", 24, 16)] {
            let mut q = query("geo.p.test.", RecordType::A);
            let mut edns = Edns::new();
            edns.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::new(
                    addr.parse().unwrap(),
                    source,
                    scope,
                )));
            q.set_edns(edns);
            let r = ask(s.addr, proto, &q);
            assert_eq!(
                r.metadata.response_code,
                ResponseCode::FormErr,
                "{addr}/{source}/{scope}"
            );
        }
    }
}

#[test]
#[ignore = "needs dig (bind9-dnsutils)"]
fn dig_subnet_reaches_the_regional_cluster() {
    use std::{io::Write, process::Command};
    let port = crate::cli::free_port();
    let config = toml("").replace(
        "[geo]",
        &format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[geo]"
        ),
    );
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(config.as_bytes()).unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let _served = crate::cli::serve(f.path(), addr);
    let dig = |subnet: &str| {
        let out = Command::new("dig")
            .args(["@127.0.0.1", "-p", &port.to_string(), "+time=3", "+tries=1"])
            .arg(format!("+subnet={subnet}"))
            .arg("geo.p.test")
            .output()
            .expect("dig");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let eu = dig("192.0.2.0/24");
    assert!(eu.contains(&format!("IN\tA\t{EU}")), "{eu}");
    assert!(eu.contains("CLIENT-SUBNET: 192.0.2.0/24/24"), "{eu}");
    let us = dig("198.51.100.0/24");
    assert!(us.contains(&format!("IN\tA\t{US}")), "{us}");
    assert!(!us.contains(&format!("IN\tA\t{EU}")), "{us}");
}

/// Issue 13 point 7: the operator's overrides are the operator's word. Every target forced
/// down answered them all (fail open) while every target drained answered nothing; now
/// neither is answered (NODATA), and fail open brings back only targets the probes put
/// down.
#[test]
fn drained_and_forced_down_targets_are_never_answered_by_fail_open() {
    let s = TestServer::start(
        r#"
[[zones]]
origin = "o.test"
nameservers = ["ns.outside.net"]
[zones.soa]
mname = "ns.outside.net"
rname = "h.o.test"
[[clusters]]
name = "a"
ingress = ["192.0.2.10"]
[[clusters]]
name = "b"
ingress = ["192.0.2.11"]
[[clusters]]
name = "dead"
ingress = ["192.0.2.12"]
probe_address = "127.0.0.1"
probe = { kind = "tcp", port = 1, initial = "down" }
[[apps]]
hostname = "forced.o.test"
targets = [{ cluster = "a", force = "down" }, { cluster = "b", force = "down" }]
[[apps]]
hostname = "drained.o.test"
targets = [{ cluster = "a", drain = true }, { cluster = "b", drain = true }]
[[apps]]
hostname = "mixed.o.test"
targets = [{ cluster = "a", force = "down" }, { cluster = "b", drain = true }, { cluster = "dead" }]
"#,
    );
    for proto in BOTH {
        for name in ["forced.o.test.", "drained.o.test."] {
            let r = ask(s.addr, proto, &query(name, RecordType::A));
            assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{name}");
            assert!(r.answers.is_empty(), "{name}: {:?}", r.answers);
        }
        let r = ask(s.addr, proto, &query("mixed.o.test.", RecordType::A));
        assert_eq!(
            addrs(&r),
            set(&["192.0.2.12"]),
            "only the target down by its probe fails open"
        );
    }
}
