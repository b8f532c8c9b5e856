//! Authoritative resolution of one question against a snapshot: a pure function, no I/O.
//!
//! It decides *what* the answer is (rcode, AA, the records of each section); turning that
//! into wire bytes, EDNS and truncation is [`super::response`]'s job. Keeping the two apart
//! lets the same logic serve UDP and TCP and be unit-tested without sockets.

use hickory_proto::{
    op::ResponseCode,
    rr::{LowerName, RData, Record, RecordType},
};

use super::client::Client;
use crate::{
    policy::{Picks, choose::ClientView},
    snapshot::{AppAnswer, AppAnswers, Node, Snapshot, Zone},
};

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
    /// The ECS scope to echo: `Some(0)` for answers that do not depend on the client,
    /// the deciding prefix length for those that do, `None` to echo no ECS (the app
    /// ignores it).
    pub ecs_scope: Option<u8>,
    /// The app answered and what it chose, for `gtmd_answers_total`: counted by the
    /// caller once the reply is sent (a lookup itself counts nothing: snapshot builds and
    /// explanations look up too).
    pub app: Option<AppUse>,
}

/// What an app contributed to an answer.
#[derive(Debug, Default, PartialEq)]
pub struct AppUse {
    /// Index of the app in the snapshot.
    pub index: usize,
    /// Its fallback answered (no eligible target was up).
    pub fallback: bool,
    /// The targets whose addresses are in the answer (inline: no allocation).
    pub answered: Picks,
}

impl AppUse {
    /// Adds this answer to `gtmd_answers_total` / `gtmd_fallback_answers_total`: called
    /// once the reply went out with its answer section.
    pub fn count(&self, snapshot: &Snapshot) {
        if let Some(app) = snapshot.apps().get(self.index) {
            app.count_answered(&self.answered, self.fallback);
        }
    }
}

impl Answer<'_> {
    fn refused() -> Self {
        Self {
            rcode: ResponseCode::Refused,
            ..Self::default()
        }
    }
}

/// Answers `qname`/`qtype` (class IN) from `snapshot` for `client`.
pub fn lookup<'a>(
    snapshot: &'a Snapshot,
    qname: &LowerName,
    qtype: RecordType,
    client: &Client,
) -> Answer<'a> {
    let mut answer = resolve(snapshot, qname, qtype, client);
    if answer.app.is_none() && client.ecs.is_some() {
        // Nothing here depends on the client: valid for every subnet.
        answer.ecs_scope = Some(0);
    }
    answer
}

fn resolve<'a>(
    snapshot: &'a Snapshot,
    qname: &LowerName,
    qtype: RecordType,
    client: &Client,
) -> Answer<'a> {
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
        let records = match node.app {
            Some(i) if matches!(qtype, RecordType::A | RecordType::AAAA | RecordType::ANY) => {
                app_records(snapshot, i, node, qtype, client, &mut answer)
            }
            // RFC 8482: one RRset, never the whole node.
            _ if qtype == RecordType::ANY => node.first_rrset().iter().collect(),
            _ => node.rrset(qtype).iter().collect(),
        };
        if records.is_empty() {
            answer.authority.push(&zone.negative_soa);
        } else {
            add_additional(snapshot, zone, &records, &mut answer.additional);
            answer.answers.extend(records);
        }
        return answer;
    }
    answer
}

/// The answer records of app `index` for `qtype`, chosen by its policy for `client`.
/// ANY gets one RRset (RFC 8482): the app's A answer, else AAAA, else a static RRset.
fn app_records<'a>(
    snapshot: &'a Snapshot,
    index: usize,
    node: &'a Node,
    qtype: RecordType,
    client: &Client,
    answer: &mut Answer<'a>,
) -> Vec<&'a Record> {
    let app = snapshot.app(index);
    let types: &[RecordType] = match qtype {
        RecordType::ANY => &[RecordType::A, RecordType::AAAA],
        t => std::slice::from_ref(match t {
            RecordType::A => &RecordType::A,
            _ => &RecordType::AAAA,
        }),
    };
    for &rtype in types {
        let chosen = choose_for(snapshot, app, rtype, client);
        answer.app = Some(AppUse {
            index,
            // An empty fallback (NODATA: every target out by the operator, or `none`) is
            // not an answer by the fallback: gtmd_fallback_answers_total counts answers.
            fallback: chosen.answer.fallback && !chosen.answer.records.is_empty(),
            answered: chosen.answer.answered.clone(),
        });
        answer.ecs_scope = chosen.scope;
        if !chosen.answer.records.is_empty() {
            return chosen.answer.record_refs().collect();
        }
    }
    if qtype == RecordType::ANY {
        return node.first_rrset().iter().collect();
    }
    Vec::new()
}

/// What an app answers one client, and the ECS scope to echo (`None`: echo none).
pub struct Chosen<'a> {
    pub answer: AppAnswer<'a>,
    pub scope: Option<u8>,
}

/// Runs `app`'s policy for `client` — the one place both the full and the fast path do
/// it. Counts nothing: each path counts the answer once it knows the reply went out.
/// Inlined: out of line, its answer (a few hundred bytes) is one more copy per query.
#[inline(always)]
pub fn choose_for<'a>(
    snapshot: &'a Snapshot,
    app: &'a AppAnswers,
    rtype: RecordType,
    client: &Client,
) -> Chosen<'a> {
    let addr = client.view(app.policy.ignore_ecs);
    let geo = &snapshot.clients.geo;
    let locate = || addr.locate_with(geo);
    let view = ClientView {
        sticky_key: addr.sticky_key(),
        sticky_scope: addr.sticky_prefix,
        locate: &locate,
    };
    let mut random = crate::policy::rng::next_u64;
    let answer = app.answer(rtype, &view, &mut random);
    // ECS is echoed when the query had usable ECS and this app uses it.
    let scope = match client.ecs {
        Some(_) if !app.policy.ignore_ecs => Some(answer.choice.scope.unwrap_or(0)),
        _ => None,
    };
    Chosen { answer, scope }
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
                .extend(address_records(snapshot, node, RecordType::A));
            answer
                .additional
                .extend(address_records(snapshot, node, RecordType::AAAA));
        }
    }
    answer
}

/// Additional-section processing (RFC 1034 §3.6): addresses of in-zone NS, MX and SRV
/// targets, so resolvers need no second round trip.
fn add_additional<'a>(
    snapshot: &'a Snapshot,
    zone: &'a Zone,
    records: &[&'a Record],
    additional: &mut Vec<&'a Record>,
) {
    for &record in records {
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
                for r in address_records(snapshot, node, rtype) {
                    if !additional.iter().any(|x| std::ptr::eq(*x, r)) {
                        additional.push(r);
                    }
                }
            }
        }
    }
}

/// A or AAAA records at `node` for additional data: static ones, or every record an app
/// could answer right now (no client: additional data is not steered).
fn address_records<'a>(
    snapshot: &'a Snapshot,
    node: &'a Node,
    rtype: RecordType,
) -> Vec<&'a Record> {
    match node.app {
        Some(i) => snapshot.app(i).all_records(rtype),
        None => node.rrset(rtype).iter().collect(),
    }
}
