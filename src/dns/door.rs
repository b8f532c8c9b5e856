//! What a UDP worker decides about a query before the full path sees it: which rate-limit
//! budget its reply will draw on, so a flood whose budget is spent is shed at the door
//! instead of being queued, answered and only then dropped.
//!
//! The exact budget depends on the reply (its rcode, its authority section), which only
//! the full path makes. Nearly always it follows from the question and the snapshot alone:
//! a name outside every zone is REFUSED and a query with a TSIG record or an inexact ECS
//! option NOTAUTH or FORMERR (the error budget), a name at or below a delegation point gets
//! a referral (keyed by the cut), a name the zone holds gets an answer or NODATA (keyed by
//! the name, ANY on its own budget), anything else in a zone is NXDOMAIN (keyed by the
//! zone). The rare miss (a CNAME leading to a missing name, a bad
//! EDNS version) only means the door lets the query through to the exact check after
//! answering; it never drops what the exact check would have sent.

use hickory_proto::{
    rr::{LowerName, Name},
    serialize::binary::{BinDecodable, BinDecoder},
};

use super::{
    client::read_ecs,
    rrl::{Class, plain_question},
    sections::{self, Tsig},
};
use crate::snapshot::Snapshot;

/// The type asked by `query`'s single well-formed question, if it has one.
pub fn question_type(query: &[u8]) -> Option<u16> {
    if query.get(4..6)? != [0, 1] {
        return None;
    }
    let q = plain_question(query)?;
    let t = q.get(q.len() - 4..q.len() - 2)?;
    Some(u16::from_be_bytes([t[0], t[1]]))
}

/// The budget the reply to `query` will most likely draw from: its class and key (a
/// lower-case wire name written into `buf`, as `rrl::budget` keys replies).
pub fn predict<'a>(snapshot: &Snapshot, query: &[u8], buf: &'a mut [u8; 256]) -> (Class, &'a [u8]) {
    let Some((class, key, qname)) = classify(snapshot, query) else {
        // One budget per client network for every error.
        return (Class::Error, &buf[..0]);
    };
    let len = match key {
        Some(key) => write_lower(&Name::from(key), buf),
        None => {
            for (o, b) in buf.iter_mut().zip(qname) {
                *o = b.to_ascii_lowercase();
            }
            qname.len()
        }
    };
    (class, &buf[..len])
}

/// The class of the reply to `query` and the name it is keyed by (None: the question
/// name, returned too in wire form); None for an error reply.
fn classify<'q>(
    snapshot: &Snapshot,
    query: &'q [u8],
) -> Option<(Class, Option<LowerName>, &'q [u8])> {
    let header = query.get(..12)?;
    // Opcodes other than QUERY get NOTIMP, several questions FORMERR: errors.
    if header[2] & 0x78 != 0 || header[4..6] != [0, 1] {
        return None;
    }
    let q = plain_question(query)?;
    let (name, tail) = q.split_at(q.len() - 4);
    let qtype = u16::from_be_bytes([tail[0], tail[1]]);
    let qclass = u16::from_be_bytes([tail[2], tail[3]]);
    // Class other than IN, zone transfers: REFUSED.
    if qclass != 1 || matches!(qtype, 251 | 252) {
        return None;
    }
    // A TSIG (NOTAUTH, or FORMERR when misplaced), records that do not parse or an ECS
    // option that is not exact (FORMERR): errors.
    match sections::walk(query) {
        Some(w) if w.tsig == Tsig::Absent && w.ecs.is_none_or(|e| read_ecs(e).is_some()) => {}
        _ => return None,
    }
    let lower = LowerName::from(Name::read(&mut BinDecoder::new(name)).ok()?);
    // Outside every zone: REFUSED.
    let zone = snapshot.find_zone(&lower)?;
    Some(if let Some((cut, _)) = zone.find_cut(&lower) {
        (Class::Referral, Some(cut), name)
    } else if zone.node(&lower).is_some() {
        let class = if qtype == 255 {
            Class::Any
        } else {
            Class::Answer
        };
        (class, None, name)
    } else {
        (Class::NxDomain, Some(zone.origin.clone()), name)
    })
}

/// `name` in lower-case wire format into `out`; its length.
fn write_lower(name: &Name, out: &mut [u8; 256]) -> usize {
    let mut n = 0;
    for label in name.iter() {
        out[n] = label.len() as u8;
        for (o, b) in out[n + 1..].iter_mut().zip(label) {
            *o = b.to_ascii_lowercase();
        }
        n += label.len() + 1;
    }
    out[n] = 0;
    n + 1
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use arc_swap::ArcSwap;
    use hickory_server::net::xfer::Protocol;

    use super::*;
    use crate::{
        dns::{
            DnsHandler,
            rrl::budget,
            udp::{Capture, full_path},
        },
        test_support::snapshot,
    };

    const ZONE: &str = r#"
[[zones]]
origin = "t.test"
nameservers = ["ns1.t.test."]
soa = { mname = "ns1.t.test.", rname = "hostmaster.t.test." }
records = [
  { name = "ns1", type = "A", value = "192.0.2.53" },
  { name = "www", type = "TXT", value = "hello" },
  { name = "a.b", type = "TXT", value = "deep" },
  { name = "sub", type = "NS", value = "ns.sub" },
  { name = "ns.sub", type = "A", value = "192.0.2.54" },
]

[[clusters]]
name = "a"
ingress = ["192.0.2.10"]

[[apps]]
hostname = "app.t.test"
targets = [{ cluster = "a" }]
"#;

    fn handler() -> DnsHandler {
        let (snap, metrics) = snapshot(ZONE);
        DnsHandler::new(Arc::new(ArcSwap::from_pointee(snap)), Arc::new(metrics))
    }

    /// A query (RD) for dotted `name` of `qtype`, class IN.
    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        q
    }

    /// The full path's reply to `q` over UDP.
    fn reply(handler: &DnsHandler, q: &[u8]) -> Vec<u8> {
        let captured = Capture(Arc::new(Mutex::new(None)), false);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(full_path(
            handler,
            q.to_vec(),
            "192.0.2.99:5300".parse().unwrap(),
            Protocol::Udp,
            captured.clone(),
            |_| true,
        ));
        let bytes = captured.0.lock().unwrap().take();
        bytes.expect("a reply")
    }

    #[test]
    fn the_door_predicts_the_budget_the_reply_draws_from() {
        let handler = handler();
        let snap = handler.snapshot();
        let cases: &[(&str, u16)] = &[
            ("app.t.test", 1),       // app answer
            ("APP.t.test", 16),      // NODATA at the app, letter case
            ("www.t.test", 16),      // static answer
            ("www.t.test", 255),     // ANY
            ("b.t.test", 1),         // empty non-terminal: NODATA
            ("nope.t.test", 1),      // NXDOMAIN, keyed by the zone
            ("x.y.nope.t.test", 28), // NXDOMAIN deeper down
            ("x.sub.t.test", 1),     // referral, keyed by the cut
            ("sub.t.test", 255),     // referral at the cut
            ("example.org", 1),      // REFUSED
            ("t.test", 252),         // AXFR: REFUSED
        ];
        for &(name, qtype) in cases {
            let q = query(name, qtype);
            let mut a = [0u8; 256];
            let mut b = [0u8; 256];
            let predicted = predict(&snap, &q, &mut a);
            let r = reply(&handler, &q);
            let exact = budget(&q, &r, &mut b);
            assert_eq!(predicted, exact, "{name} type {qtype}");
        }
    }

    /// TSIG-signed queries (NOTAUTH, or FORMERR), misplaced TSIG records and inexact ECS
    /// options (FORMERR) are errors, whatever their question.
    #[test]
    fn signed_queries_and_bad_ecs_draw_on_the_error_budget() {
        let handler = handler();
        let snap = handler.snapshot();
        let tsig: &[u8] = b"\x01k\x00\x00\xfa\x00\xff\x00\x00\x00\x00\x00\x1d\x0bhmac-sha256\x00\
            \x00\x00\x00\x00\x03\xe8\x01\x2c\x00\x00\x12\x34\x00\x00\x00\x00";
        let opt = |options: &[u8]| {
            let mut r = vec![0, 0, 41, 4, 0xd0, 0, 0, 0, 0];
            r.extend_from_slice(&(options.len() as u16).to_be_bytes());
            r.extend_from_slice(options);
            r
        };
        let bad_ecs = opt(&[0, 8, 0, 8, 0, 1, 24, 0, 192, 0, 2, 0]);
        let good_ecs = opt(&[0, 8, 0, 7, 0, 1, 24, 0, 192, 0, 2]);
        let cases: [(&[&[u8]], Class); 5] = [
            (&[tsig], Class::Error),
            (&[&opt(&[]), tsig], Class::Error),
            (&[tsig, &opt(&[])], Class::Error),
            (&[&bad_ecs], Class::Error),
            (&[&good_ecs], Class::Answer),
        ];
        for (additional, class) in cases {
            let mut q = query("app.t.test", 1);
            q[11] = additional.len() as u8;
            for r in additional {
                q.extend_from_slice(r);
            }
            let mut a = [0u8; 256];
            let mut b = [0u8; 256];
            let predicted = predict(&snap, &q, &mut a);
            assert_eq!(predicted.0, class, "{q:02x?}");
            let r = reply(&handler, &q);
            assert_eq!(predicted, budget(&q, &r, &mut b), "{q:02x?}");
        }
    }

    #[test]
    fn unreadable_questions_draw_on_the_error_budget() {
        let handler = handler();
        let snap = handler.snapshot();
        let mut buf = [0u8; 256];
        assert_eq!(predict(&snap, &[0; 5], &mut buf).0, Class::Error);
        let mut two = query("app.t.test", 1);
        two[5] = 2;
        assert_eq!(predict(&snap, &two, &mut buf).0, Class::Error);
        let mut notify = query("app.t.test", 1);
        notify[2] |= 4 << 3;
        assert_eq!(predict(&snap, &notify, &mut buf).0, Class::Error);
        assert_eq!(question_type(&two), None);
        assert_eq!(question_type(&query("app.t.test", 28)), Some(28));
    }
}
