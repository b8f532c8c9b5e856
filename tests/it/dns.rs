//! DNS behaviour over real UDP and TCP sockets: flags, sections, rcodes, EDNS, truncation.

use std::collections::BTreeSet;

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{DNSClass, Name, RData, Record, RecordType},
};

use crate::support::{BOTH, Proto, ask, plain_query, query, tcp_raw, udp_raw, zone_server};

fn rdata_strings(records: &[Record]) -> BTreeSet<String> {
    records.iter().map(|r| r.data.to_string()).collect()
}

fn types(records: &[Record]) -> Vec<RecordType> {
    records.iter().map(|r| r.record_type()).collect()
}

/// The authority section of a negative answer: exactly the zone SOA, with the RFC 2308 TTL.
fn assert_negative_soa(r: &Message, origin: &str, ttl: u32) {
    assert_eq!(r.authorities.len(), 1, "authority: {:?}", r.authorities);
    let soa = &r.authorities[0];
    assert_eq!(soa.record_type(), RecordType::SOA);
    assert_eq!(soa.name, Name::from_ascii(origin).unwrap());
    assert_eq!(soa.ttl, ttl);
}

#[test]
fn app_answers_its_clusters_addresses_with_app_ttl_and_flags() {
    let s = zone_server();
    for proto in BOTH {
        let r = ask(s.addr, proto, &query("app.example.test.", RecordType::A));
        assert_eq!(r.metadata.message_type, MessageType::Response);
        assert_eq!(r.metadata.id, 0x1234);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.metadata.authoritative, "{proto:?}: AA must be set");
        assert!(r.metadata.recursion_desired, "{proto:?}: RD is copied");
        assert!(
            !r.metadata.recursion_available,
            "{proto:?}: RA must be clear"
        );
        assert!(!r.metadata.truncation);
        assert_eq!(
            rdata_strings(&r.answers),
            ["198.51.100.10", "198.51.100.20"].map(String::from).into()
        );
        assert!(r.answers.iter().all(|a| a.ttl == 30));
        assert!(r.authorities.is_empty());

        let r = ask(s.addr, proto, &query("app.example.test.", RecordType::AAAA));
        assert_eq!(
            rdata_strings(&r.answers),
            ["2001:db8:e::10".to_owned()].into()
        );
        assert_eq!(r.answers[0].ttl, 30);
    }
}

#[test]
fn rd_clear_stays_clear() {
    let s = zone_server();
    let mut q = query("app.example.test.", RecordType::A);
    q.metadata.recursion_desired = false;
    for proto in BOTH {
        let r = ask(s.addr, proto, &q);
        assert!(!r.metadata.recursion_desired);
        assert!(r.metadata.authoritative);
    }
}

#[test]
fn question_is_echoed_with_the_clients_letter_case() {
    let s = zone_server();
    let q = query("app.example.test.", RecordType::A);
    let mut bytes = q.to_vec().unwrap();
    // hickory's encoder lowercases names, so mix the case in the wire bytes (as resolvers
    // using 0x20 do): header (12) + name (18) + type and class (4).
    for (i, b) in bytes[12..12 + 18].iter_mut().enumerate() {
        if i % 2 == 0 && b.is_ascii_lowercase() {
            *b = b.to_ascii_uppercase();
        }
    }
    let question = &bytes[12..12 + 18 + 4];
    assert!(question.iter().any(|b| b.is_ascii_uppercase()));
    for proto in BOTH {
        let raw = match proto {
            Proto::Udp => udp_raw(s.addr, &bytes),
            Proto::Tcp => tcp_raw(s.addr, &bytes),
        }
        .expect("reply");
        assert_eq!(&raw[12..12 + question.len()], question, "{proto:?}");
        let r = Message::from_vec(&raw).unwrap();
        assert_eq!(r.answers.len(), 2, "matching is case-insensitive");
    }
}

#[test]
fn other_type_at_app_is_nodata_with_soa() {
    let s = zone_server();
    for proto in BOTH {
        let r = ask(s.addr, proto, &query("app.example.test.", RecordType::MX));
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.metadata.authoritative);
        assert!(r.answers.is_empty());
        // SOA TTL 300, minimum 60: min is 60.
        assert_negative_soa(&r, "example.test.", 60);

        // An app whose clusters have no IPv6 ingress: AAAA is NODATA.
        let r = ask(
            s.addr,
            proto,
            &query("v4only.example.test.", RecordType::AAAA),
        );
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.answers.is_empty());
        assert_negative_soa(&r, "example.test.", 60);
    }
}

#[test]
fn missing_name_is_nxdomain_with_soa() {
    let s = zone_server();
    for proto in BOTH {
        let r = ask(s.addr, proto, &query("nope.example.test.", RecordType::A));
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert!(r.metadata.authoritative);
        assert!(r.answers.is_empty());
        assert_negative_soa(&r, "example.test.", 60);
        // Below an existing name too.
        let r = ask(s.addr, proto, &query("x.app.example.test.", RecordType::A));
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }
}

#[test]
fn empty_non_terminal_is_nodata() {
    let s = zone_server();
    for proto in BOTH {
        for name in ["b.c.example.test.", "c.example.test."] {
            let r = ask(s.addr, proto, &query(name, RecordType::A));
            assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{name}");
            assert!(r.answers.is_empty());
            assert_negative_soa(&r, "example.test.", 60);
        }
        let r = ask(s.addr, proto, &query("a.b.c.example.test.", RecordType::A));
        assert_eq!(rdata_strings(&r.answers), ["192.0.2.9".to_owned()].into());
    }
}

#[test]
fn names_outside_every_zone_are_refused() {
    let s = zone_server();
    for proto in BOTH {
        for name in ["example.org.", "test.", ".", "example.test.evil."] {
            let r = ask(s.addr, proto, &query(name, RecordType::A));
            assert_eq!(r.metadata.response_code, ResponseCode::Refused, "{name}");
            assert!(!r.metadata.authoritative);
            assert!(r.answers.is_empty() && r.authorities.is_empty());
        }
    }
}

#[test]
fn most_specific_zone_wins() {
    let s = zone_server();
    for proto in BOTH {
        let r = ask(
            s.addr,
            proto,
            &query("x.inner.example.test.", RecordType::A),
        );
        assert_eq!(rdata_strings(&r.answers), ["192.0.2.50".to_owned()].into());
        assert_eq!(r.answers[0].ttl, 600);
        let r = ask(
            s.addr,
            proto,
            &query("y.inner.example.test.", RecordType::A),
        );
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        // inner's SOA: TTL defaults to the zone TTL 600, minimum 30.
        assert_negative_soa(&r, "inner.example.test.", 30);
        let r = ask(
            s.addr,
            proto,
            &query("inner.example.test.", RecordType::SOA),
        );
        assert_eq!(r.answers.len(), 1);
        assert_eq!(
            r.answers[0].name,
            Name::from_ascii("inner.example.test.").unwrap()
        );
    }
}

#[test]
fn cname_is_followed_within_the_zone() {
    let s = zone_server();
    for proto in BOTH {
        let r = ask(s.addr, proto, &query("www.example.test.", RecordType::A));
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.metadata.authoritative);
        assert_eq!(
            types(&r.answers),
            [RecordType::CNAME, RecordType::A, RecordType::A]
        );
        assert_eq!(r.answers[0].data.to_string(), "app.example.test.");

        // A chain of two.
        let r = ask(s.addr, proto, &query("c1.example.test.", RecordType::AAAA));
        assert_eq!(
            types(&r.answers),
            [RecordType::CNAME, RecordType::CNAME, RecordType::AAAA]
        );

        // Asking for the CNAME itself does not follow it.
        let r = ask(
            s.addr,
            proto,
            &query("www.example.test.", RecordType::CNAME),
        );
        assert_eq!(types(&r.answers), [RecordType::CNAME]);

        // A loop ends, NOERROR, with each CNAME once.
        let r = ask(s.addr, proto, &query("loop1.example.test.", RecordType::A));
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(types(&r.answers), [RecordType::CNAME, RecordType::CNAME]);

        // Target missing in the zone: NXDOMAIN (RFC 6604) with the CNAME and the SOA.
        let r = ask(
            s.addr,
            proto,
            &query("dangling.example.test.", RecordType::A),
        );
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(types(&r.answers), [RecordType::CNAME]);
        assert_negative_soa(&r, "example.test.", 60);

        // Target outside the zone: the CNAME alone, the resolver goes on.
        let r = ask(s.addr, proto, &query("away.example.test.", RecordType::A));
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(types(&r.answers), [RecordType::CNAME]);
        assert!(r.authorities.is_empty());
    }
}

#[test]
fn names_below_a_delegation_get_a_referral_with_glue() {
    let s = zone_server();
    for proto in BOTH {
        for name in ["host.sub.example.test.", "sub.example.test."] {
            let r = ask(s.addr, proto, &query(name, RecordType::A));
            assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{name}");
            assert!(
                !r.metadata.authoritative,
                "{name}: a referral is not authoritative"
            );
            assert!(r.answers.is_empty());
            assert_eq!(types(&r.authorities), [RecordType::NS, RecordType::NS]);
            assert!(
                r.authorities
                    .iter()
                    .all(|a| a.name == Name::from_ascii("sub.example.test.").unwrap())
            );
            let glue: Vec<_> = r
                .additionals
                .iter()
                .filter(|a| a.record_type() != RecordType::OPT)
                .collect();
            assert_eq!(glue.len(), 1, "{glue:?}");
            assert_eq!(
                glue[0].name,
                Name::from_ascii("ns1.sub.example.test.").unwrap()
            );
            assert_eq!(glue[0].data.to_string(), "192.0.2.77");
        }
    }
}

#[test]
fn apex_soa_and_ns_answer_with_glue() {
    let s = zone_server();
    for proto in BOTH {
        let r = ask(s.addr, proto, &query("example.test.", RecordType::SOA));
        assert!(r.metadata.authoritative);
        assert_eq!(types(&r.answers), [RecordType::SOA]);
        assert_eq!(r.answers[0].ttl, 300);
        let RData::SOA(soa) = &r.answers[0].data else {
            panic!()
        };
        assert_eq!(soa.serial, 7);
        assert_eq!(soa.minimum, 60);

        let r = ask(s.addr, proto, &query("example.test.", RecordType::NS));
        assert_eq!(
            rdata_strings(&r.answers),
            ["ns.outside.net.", "ns1.example.test."]
                .map(String::from)
                .into()
        );
        let glue: BTreeSet<(String, String)> = r
            .additionals
            .iter()
            .filter(|a| a.record_type() != RecordType::OPT)
            .map(|a| (a.name.to_string(), a.data.to_string()))
            .collect();
        assert_eq!(
            glue,
            [
                ("ns1.example.test.".to_owned(), "192.0.2.1".to_owned()),
                ("ns1.example.test.".to_owned(), "2001:db8::1".to_owned()),
            ]
            .into()
        );
    }
}

#[test]
fn static_record_types_answer() {
    let s = zone_server();
    for proto in BOTH {
        let r = ask(s.addr, proto, &query("example.test.", RecordType::TXT));
        assert_eq!(r.answers[0].data.to_string(), "hello world");
        let r = ask(s.addr, proto, &query("example.test.", RecordType::CAA));
        assert_eq!(types(&r.answers), [RecordType::CAA]);
        let r = ask(s.addr, proto, &query("srv.example.test.", RecordType::SRV));
        assert_eq!(r.answers[0].data.to_string(), "1 1 443 app.example.test.");
        // SRV target addresses come in additional.
        let extra: Vec<_> = r
            .additionals
            .iter()
            .filter(|a| a.record_type() == RecordType::A)
            .collect();
        assert_eq!(extra.len(), 2);
    }
}

#[test]
fn edns_is_echoed_with_the_server_payload() {
    let s = zone_server();
    for proto in BOTH {
        let mut q = query("app.example.test.", RecordType::A);
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        q.set_edns(edns);
        let r = ask(s.addr, proto, &q);
        let edns = r.edns.as_ref().expect("OPT echoed");
        assert_eq!(
            edns.max_payload(),
            1232,
            "clamped to server.max_udp_payload"
        );
        assert_eq!(edns.version(), 0);

        // Without EDNS in the query there is none in the response.
        let r = ask(
            s.addr,
            proto,
            &plain_query("app.example.test.", RecordType::A),
        );
        assert!(r.edns.is_none());
    }
}

#[test]
fn edns_version_above_zero_is_badvers() {
    let s = zone_server();
    for proto in BOTH {
        let mut q = query("app.example.test.", RecordType::A);
        let mut edns = Edns::new();
        edns.set_version(1);
        q.set_edns(edns);
        let r = ask(s.addr, proto, &q);
        // 16 is BADVERS in an OPT context (hickory decodes it as its alias BADSIG).
        assert_eq!(u16::from(r.metadata.response_code), 16);
        assert_eq!(r.edns.as_ref().expect("OPT present").version(), 0);
        assert!(r.answers.is_empty());
    }
}

#[test]
fn large_answers_truncate_over_udp_and_come_whole_over_tcp() {
    let s = zone_server();
    // 40 A records: ~700 bytes. Over 512 without EDNS, fits in 1232.
    let r = ask(
        s.addr,
        Proto::Udp,
        &plain_query("mid.example.test.", RecordType::A),
    );
    assert!(r.metadata.truncation, "TC over plain UDP");
    assert!(
        r.answers.is_empty(),
        "a truncated reply carries no partial RRset"
    );
    assert_eq!(r.queries.len(), 1);
    let r = ask(
        s.addr,
        Proto::Udp,
        &query("mid.example.test.", RecordType::A),
    );
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 40);

    // 100 A records: ~1650 bytes. Over 1232 even with EDNS.
    let r = ask(
        s.addr,
        Proto::Udp,
        &query("big.example.test.", RecordType::A),
    );
    assert!(r.metadata.truncation);
    assert!(r.answers.is_empty());
    assert!(r.edns.is_some(), "OPT kept in the truncated reply");
    for q in [
        query("big.example.test.", RecordType::A),
        plain_query("big.example.test.", RecordType::A),
    ] {
        let r = ask(s.addr, Proto::Tcp, &q);
        assert!(!r.metadata.truncation);
        assert_eq!(r.answers.len(), 100);
    }

    // A client payload below the server's: its own limit applies.
    let mut q = query("mid.example.test.", RecordType::A);
    let mut edns = Edns::new();
    edns.set_max_payload(600);
    q.set_edns(edns);
    let r = ask(s.addr, Proto::Udp, &q);
    assert!(r.metadata.truncation);
}

#[test]
fn optional_additional_records_are_dropped_before_truncating() {
    let s = zone_server();
    // 20 MX fit in 512 bytes; their 20 addresses do not.
    let r = ask(
        s.addr,
        Proto::Udp,
        &plain_query("mail.example.test.", RecordType::MX),
    );
    assert!(
        !r.metadata.truncation,
        "dropping additional data does not set TC"
    );
    assert_eq!(r.answers.len(), 20);
    assert!(r.additionals.is_empty());
    let r = ask(
        s.addr,
        Proto::Udp,
        &query("mail.example.test.", RecordType::MX),
    );
    assert_eq!(r.answers.len(), 20);
    assert_eq!(
        r.additionals
            .iter()
            .filter(|a| a.record_type() == RecordType::A)
            .count(),
        20
    );
}

#[test]
fn any_gets_a_minimal_answer() {
    let s = zone_server();
    for proto in BOTH {
        let r = ask(s.addr, proto, &query("example.test.", RecordType::ANY));
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(!r.answers.is_empty());
        let kinds: BTreeSet<_> = types(&r.answers).into_iter().collect();
        assert_eq!(kinds.len(), 1, "one RRset, not the node: {kinds:?}");
        let r = ask(s.addr, proto, &query("app.example.test.", RecordType::ANY));
        assert_eq!(types(&r.answers), [RecordType::A, RecordType::A]);
        let r = ask(s.addr, proto, &query("nope.example.test.", RecordType::ANY));
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }
}

#[test]
fn request_level_errors() {
    let s = zone_server();
    for proto in BOTH {
        // QDCOUNT 0 and 2: FORMERR.
        let mut q = Message::new(7, MessageType::Query, OpCode::Query);
        let r = ask(s.addr, proto, &q);
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
        q.add_query(Query::query(
            Name::from_ascii("app.example.test.").unwrap(),
            RecordType::A,
        ));
        q.add_query(Query::query(
            Name::from_ascii("www.example.test.").unwrap(),
            RecordType::A,
        ));
        let r = ask(s.addr, proto, &q);
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(r.metadata.id, 7);

        // Opcodes other than QUERY: NOTIMP.
        for op in [OpCode::Status, OpCode::Notify, OpCode::Update] {
            let mut q = plain_query("app.example.test.", RecordType::A);
            q.metadata.op_code = op;
            let r = ask(s.addr, proto, &q);
            assert_eq!(r.metadata.response_code, ResponseCode::NotImp, "{op:?}");
        }

        // Other classes: REFUSED.
        for class in [DNSClass::CH, DNSClass::HS, DNSClass::ANY] {
            let mut q = plain_query("app.example.test.", RecordType::A);
            let mut qq = Query::query(
                Name::from_ascii("app.example.test.").unwrap(),
                RecordType::A,
            );
            qq.set_query_class(class);
            q.queries = vec![qq];
            let r = ask(s.addr, proto, &q);
            assert_eq!(r.metadata.response_code, ResponseCode::Refused, "{class:?}");
        }
    }
    // No zone transfers.
    let r = ask(
        s.addr,
        Proto::Tcp,
        &query("example.test.", RecordType::AXFR),
    );
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn serves_over_ipv6_too() {
    let s =
        crate::support::TestServer::start_on(&crate::support::zone_toml(), "::1".parse().unwrap());
    assert!(s.addr.is_ipv6());
    for proto in BOTH {
        let r = ask(s.addr, proto, &query("app.example.test.", RecordType::AAAA));
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(
            rdata_strings(&r.answers),
            ["2001:db8:e::10".to_owned()].into()
        );
    }
}

#[test]
fn cname_into_a_delegation_carries_the_referral() {
    let s = zone_server();
    for proto in BOTH {
        let r = ask(s.addr, proto, &query("todel.example.test.", RecordType::A));
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(
            r.metadata.authoritative,
            "the CNAME itself is authoritative"
        );
        assert_eq!(types(&r.answers), [RecordType::CNAME]);
        assert_eq!(types(&r.authorities), [RecordType::NS, RecordType::NS]);
        assert!(
            r.additionals
                .iter()
                .any(|a| a.data.to_string() == "192.0.2.77")
        );
    }
}

#[test]
fn referral_glue_for_an_app_nameserver_comes_from_the_app() {
    let s = zone_server();
    let r = ask(
        s.addr,
        Proto::Udp,
        &query("x.appns.example.test.", RecordType::A),
    );
    assert!(!r.metadata.authoritative);
    assert_eq!(types(&r.authorities), [RecordType::NS]);
    let glue: BTreeSet<String> = r
        .additionals
        .iter()
        .filter(|a| a.record_type() != RecordType::OPT)
        .map(|a| a.data.to_string())
        .collect();
    assert_eq!(
        glue,
        ["198.51.100.10", "198.51.100.20", "2001:db8:e::10"]
            .map(String::from)
            .into()
    );
}

#[test]
fn long_unquoted_txt_is_split_and_served_whole() {
    let s = zone_server();
    let r = ask(
        s.addr,
        Proto::Tcp,
        &query("longtxt.example.test.", RecordType::TXT),
    );
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(!r.metadata.truncation);
    let RData::TXT(txt) = &r.answers[0].data else {
        panic!("{:?}", r.answers)
    };
    assert!(txt.txt_data.iter().all(|s| s.len() <= 255));
    let whole: Vec<u8> = txt
        .txt_data
        .iter()
        .flat_map(|s| s.iter().copied())
        .collect();
    assert_eq!(String::from_utf8(whole).unwrap(), "é-gtmd-".repeat(200));
    // Over UDP it does not fit in 1232 bytes: TC, and the TCP answer above is whole.
    let r = ask(
        s.addr,
        Proto::Udp,
        &query("longtxt.example.test.", RecordType::TXT),
    );
    assert!(r.metadata.truncation);
}

#[test]
fn at_sign_in_record_data_is_the_origin() {
    let s = zone_server();
    let r = ask(
        s.addr,
        Proto::Udp,
        &query("at.example.test.", RecordType::MX),
    );
    assert_eq!(r.answers[0].data.to_string(), "5 example.test.");
}
