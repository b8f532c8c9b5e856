//! Authoritative resolution of one question against a snapshot: a pure function, no I/O.
//!
//! It decides *what* the answer is (rcode, AA, the records of each section); turning that
//! into wire bytes, EDNS and truncation is [`super::response`]'s job. Keeping the two apart
//! lets the same logic serve UDP and TCP and be unit-tested without sockets.

use hickory_proto::{
    op::ResponseCode,
    rr::{LowerName, RData, Record, RecordType},
};

use crate::snapshot::{Node, Snapshot, Zone};

/// The longest CNAME chain followed inside a zone before giving up (loops included).
const MAX_CNAME_CHAIN: usize = 8;

/// The decided content of a response.
#[derive(Debug, Default, PartialEq)]
pub struct Answer<'a> {
    pub rcode: ResponseCode,
    pub authoritative: bool,
    pub answers: Vec<&'a Record>,
    pub authority: Vec<&'a Record>,
    pub additional: Vec<&'a Record>,
    /// A referral: its glue is required, so it must not be dropped to make the response fit.
    pub referral: bool,
}

impl Answer<'_> {
    fn refused() -> Self {
        Self {
            rcode: ResponseCode::Refused,
            ..Self::default()
        }
    }
}

/// Answers `qname`/`qtype` (class IN) from `snapshot`.
pub fn lookup<'a>(snapshot: &'a Snapshot, qname: &LowerName, qtype: RecordType) -> Answer<'a> {
    let Some(zone) = snapshot.find_zone(qname) else {
        return Answer::refused();
    };
    if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        // Zone transfers are not offered: the config file is the source of truth.
        return Answer::refused();
    }
    let mut answer = Answer {
        authoritative: true,
        ..Answer::default()
    };
    let mut name = qname.clone();
    for hop in 0..MAX_CNAME_CHAIN {
        if let Some((cut, cut_node)) = zone.find_cut(&name) {
            // A DS query at the cut belongs to the parent side: answered below as NODATA.
            let parent_side = cut == name && qtype == RecordType::DS;
            if !parent_side {
                let delegation = referral(snapshot, zone, cut_node);
                if hop == 0 {
                    return delegation;
                }
                // A CNAME into delegated space: the CNAME (authoritative) plus the
                // delegation, as BIND and Knot answer, so the resolver can go on.
                answer.authority = delegation.authority;
                answer.additional = delegation.additional;
                return answer;
            }
        }
        let Some(node) = zone.node(&name) else {
            answer.rcode = ResponseCode::NXDomain;
            answer.authority.push(&zone.negative_soa);
            return answer;
        };
        let cname = node.rrset(RecordType::CNAME);
        if !cname.is_empty() && qtype != RecordType::CNAME {
            answer.answers.extend(cname.iter());
            let RData::CNAME(target) = &cname[0].data else {
                return answer;
            };
            let target = LowerName::new(&target.0);
            let stays_in_zone = zone.contains(&target)
                && snapshot
                    .find_zone(&target)
                    .is_some_and(|z| std::ptr::eq(z, zone));
            let looped = answer
                .answers
                .iter()
                .any(|r| LowerName::new(&r.name) == target);
            if !stays_in_zone || looped || qtype == RecordType::ANY {
                return answer;
            }
            name = target;
            continue;
        }
        let records = node_records(snapshot, node, qtype);
        if records.is_empty() {
            answer.authority.push(&zone.negative_soa);
        } else {
            answer.answers.extend(records.iter());
            add_additional(snapshot, zone, records, &mut answer.additional);
        }
        return answer;
    }
    answer
}

/// The RRset of `qtype` at `node`: static records, or the app's addresses.
fn node_records<'a>(snapshot: &'a Snapshot, node: &'a Node, qtype: RecordType) -> &'a [Record] {
    let app = node.app.map(|i| snapshot.app(i));
    match qtype {
        // RFC 8482: one RRset, never the whole node.
        RecordType::ANY => match app {
            Some(app) if !app.a.is_empty() => &app.a,
            Some(app) if !app.aaaa.is_empty() && node.first_rrset().is_empty() => &app.aaaa,
            _ => node.first_rrset(),
        },
        RecordType::A | RecordType::AAAA if app.is_some() => app.map_or(&[], |a| a.records(qtype)),
        _ => node.rrset(qtype),
    }
}

/// A referral to the delegation at `cut_node`: NS in authority, glue in additional, AA clear.
fn referral<'a>(snapshot: &'a Snapshot, zone: &'a Zone, cut_node: &'a Node) -> Answer<'a> {
    let ns = cut_node.rrset(RecordType::NS);
    let mut answer = Answer {
        authority: ns.iter().collect(),
        referral: true,
        ..Answer::default()
    };
    for record in ns {
        if let RData::NS(target) = &record.data
            && let Some(node) = zone.node(&LowerName::new(&target.0))
        {
            answer
                .additional
                .extend(node_records(snapshot, node, RecordType::A));
            answer
                .additional
                .extend(node_records(snapshot, node, RecordType::AAAA));
        }
    }
    answer
}

/// Additional-section processing (RFC 1034 §3.6): addresses of in-zone NS, MX and SRV
/// targets, so resolvers need no second round trip.
fn add_additional<'a>(
    snapshot: &'a Snapshot,
    zone: &'a Zone,
    records: &'a [Record],
    additional: &mut Vec<&'a Record>,
) {
    for record in records {
        let target = match &record.data {
            RData::NS(ns) => &ns.0,
            RData::MX(mx) => &mx.exchange,
            RData::SRV(srv) => &srv.target,
            _ => continue,
        };
        let target = LowerName::new(target);
        if !zone.contains(&target) || zone.find_cut(&target).is_some() {
            continue;
        }
        if let Some(node) = zone.node(&target) {
            for rtype in [RecordType::A, RecordType::AAAA] {
                for r in node_records(snapshot, node, rtype) {
                    if !additional.iter().any(|x| std::ptr::eq(*x, r)) {
                        additional.push(r);
                    }
                }
            }
        }
    }
}
