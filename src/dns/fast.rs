//! The UDP fast path: the common query shape answered straight from wire bytes.
//!
//! One question, class IN, opcode QUERY, optionally one OPT record (EDNS version 0, with or
//! without DO and an exact Client Subnet option): the question is parsed in place, the name
//! looked up in a hash map of the snapshot, and the reply written from precomputed
//! fragments (static names) or from the policy's choice (app names) — no hickory `Message`,
//! no task per packet. Anything else (other opcodes or classes, any other additional record
//! such as TSIG, malformed or unusual packets, names not in the map such as NXDOMAIN,
//! replies that would need truncation) goes to the full path, which is the reference: a
//! differential test holds the two to identical answers.

use std::{
    hash::{BuildHasher, RandomState},
    net::IpAddr,
};

use hickory_proto::{
    op::{MessageType, Metadata, OpCode, Query, emit_message_parts},
    rr::{LowerName, Name, RecordType},
    serialize::binary::BinEncoder,
};

use super::{
    client::{Client, Ecs, read_ecs},
    lookup::{choose_for, lookup},
    response::udp_limit,
    slots::{Slot, SlotTable},
};
use crate::{
    metrics::Tally,
    snapshot::{AppAnswers, Snapshot},
};

/// What the fast path did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fast {
    /// A reply of this many bytes is in the output buffer.
    Answered(usize),
    /// Not a query (QR set, or shorter than a header): never answered.
    Drop,
    /// Needs the full path.
    Slow,
}

/// The precomputed part of a static answer: everything after the question.
#[derive(Debug, Clone)]
struct Fragment {
    authoritative: bool,
    rcode: u8,
    counts: [u16; 3],
    bytes: Box<[u8]>,
}

/// A static name and its precomputed answers.
#[derive(Debug)]
struct StaticName {
    /// Lower-case wire form.
    key: Box<[u8]>,
    answers: Vec<(u16, Fragment)>,
}

/// Names the fast path answers, found by a keyed 64-bit hash of their lower-case wire
/// form.
///
/// The table holds only (hash, slot) pairs, small enough to stay in the CPU cache with
/// tens of thousands of names, and the match is confirmed against the name kept in the
/// app itself — which the query reads next anyway — so a lookup costs no cache miss of
/// its own. (A map keyed by boxed names costs two: the bucket and the key.) The hash is
/// seeded at random per index, so names cannot be chosen to collide; should two indexed
/// names collide anyway, the first keeps the slot and the second, failing the name check,
/// is answered by the full path.
#[derive(Debug, Default)]
pub struct FastIndex {
    seed: RandomState,
    /// App slots are confirmed by the app's `wire_name`, static ones by `statics[i].key`.
    slots: SlotTable,
    statics: Vec<StaticName>,
}

impl FastIndex {
    fn hash(&self, key: &[u8]) -> u64 {
        self.seed.hash_one(key)
    }

    fn insert(&mut self, key: &[u8], slot: Slot) {
        self.slots.insert(self.hash(key), slot);
    }
}

/// Query types precomputed at every static name.
const STATIC_TYPES: [RecordType; 9] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::NS,
    RecordType::SOA,
    RecordType::MX,
    RecordType::TXT,
    RecordType::SRV,
    RecordType::CAA,
    RecordType::CNAME,
];

/// `name` in lower-case wire form (the fast path's lookup key).
pub fn wire_name(name: &Name) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 1);
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    out
}

impl FastIndex {
    /// Precomputes static answers and indexes app names, from a built snapshot.
    pub fn build(snapshot: &Snapshot) -> Self {
        let mut index = Self::default();
        let app_names: std::collections::HashSet<&Name> =
            snapshot.apps().iter().map(|a| &a.hostname).collect();
        for (i, app) in snapshot.apps().iter().enumerate() {
            index.insert(&app.wire_name, Slot::App(i as u32));
        }
        let plain = Client {
            src: IpAddr::from([127, 0, 0, 1]),
            ecs: None,
        };
        for name in snapshot.static_names() {
            if app_names.contains(&name) {
                continue;
            }
            let lower = LowerName::new(&name);
            let mut statics = Vec::new();
            for rtype in STATIC_TYPES {
                let answer = lookup(snapshot, &lower, rtype, &plain);
                // Answers that involve an app (a CNAME to it, its addresses as additional
                // data) change with health: the full path answers those.
                let dynamic = answer.app.is_some()
                    || answer
                        .answers
                        .iter()
                        .chain(&answer.authority)
                        .chain(&answer.additional)
                        .any(|r| app_names.contains(&r.name));
                if dynamic {
                    continue;
                }
                if let Some(f) = fragment(&name, rtype, &answer) {
                    statics.push((u16::from(rtype), f));
                }
            }
            if !statics.is_empty() {
                let key = wire_name(&name).into_boxed_slice();
                index.insert(&key, Slot::Static(index.statics.len() as u32));
                index.statics.push(StaticName {
                    key,
                    answers: statics,
                });
            }
        }
        index
    }
}

/// Encodes `answer` for a question (`name`, `rtype`) and keeps what follows the question:
/// its compression pointers point into the question at offset 12, which a query for the
/// same name (in any letter case) has in the same place.
fn fragment(
    name: &Name,
    rtype: RecordType,
    answer: &super::lookup::Answer<'_>,
) -> Option<Fragment> {
    let mut name = name.clone();
    name.set_fqdn(true);
    let mut metadata = Metadata::new(0, MessageType::Response, OpCode::Query);
    metadata.authoritative = answer.authoritative;
    metadata.response_code = answer.rcode;
    let query = Query::query(name, rtype);
    let mut buf = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut buf);
    let header = emit_message_parts(
        &metadata,
        &mut std::iter::once(&query),
        &mut answer.answers.iter().copied(),
        &mut answer.authority.iter().copied(),
        &mut answer.additional.iter().copied(),
        None,
        None,
        &mut encoder,
    )
    .ok()?;
    if header.truncation {
        return None;
    }
    let question_end = 12 + wire_name(query.name()).len() + 4;
    let rcode = u16::from(answer.rcode);
    if rcode > 15 {
        return None;
    }
    Some(Fragment {
        authoritative: answer.authoritative,
        rcode: rcode as u8,
        counts: [
            header.counts.answers,
            header.counts.authorities,
            header.counts.additionals,
        ],
        bytes: buf[question_end..].into(),
    })
}

/// A parsed query of the fast shape.
struct Parsed<'a> {
    id: [u8; 2],
    rd: bool,
    cd: bool,
    /// The question as sent (original letter case), name + type + class.
    question: &'a [u8],
    /// The name in lower case, in the caller's buffer (not returned by value: parsing
    /// runs twice per packet, and the copy showed up in profiles).
    lower: &'a [u8],
    qtype: u16,
    /// `Some(payload)` when the query has an OPT record.
    edns: Option<u16>,
    /// The first byte of the query's EDNS flags with only DO kept (0x80 or 0): the reply's
    /// OPT carries it as it is (RFC 3225 §3), a copy rather than a branch.
    do_bit: u8,
    ecs: Option<Ecs>,
}

fn parse<'a>(q: &'a [u8], lower: &'a mut [u8; 255]) -> Result<Parsed<'a>, Fast> {
    if q.len() < 12 {
        return Err(Fast::Drop);
    }
    if q[2] & 0x80 != 0 {
        return Err(Fast::Drop); // a response: answering it could start a reflection loop
    }
    let opcode = (q[2] >> 3) & 0x0f;
    let count = |i: usize| u16::from_be_bytes([q[i], q[i + 1]]);
    let arcount = count(10);
    if opcode != 0 || count(4) != 1 || count(6) != 0 || count(8) != 0 || arcount > 1 {
        return Err(Fast::Slow);
    }
    let mut i = 12;
    loop {
        let len = *q.get(i).ok_or(Fast::Slow)? as usize;
        if len & 0xc0 != 0 || i - 12 + len + 1 > 255 {
            return Err(Fast::Slow); // compression in a question, or too long
        }
        let label = q.get(i..i + 1 + len).ok_or(Fast::Slow)?;
        for (j, b) in label.iter().enumerate() {
            lower[i - 12 + j] = b.to_ascii_lowercase();
        }
        i += 1 + len;
        if len == 0 {
            break;
        }
    }
    let lower_len = i - 12;
    let tail = q.get(i..i + 4).ok_or(Fast::Slow)?;
    let qtype = u16::from_be_bytes([tail[0], tail[1]]);
    if u16::from_be_bytes([tail[2], tail[3]]) != 1 {
        return Err(Fast::Slow); // not class IN
    }
    let question = &q[12..i + 4];
    i += 4;
    let mut edns = None;
    let mut do_bit = 0;
    let mut ecs = None;
    if arcount == 1 {
        // OPT: root name, type 41, class = payload, TTL = ext rcode/version/flags.
        let opt = q.get(i..i + 11).ok_or(Fast::Slow)?;
        if opt[0] != 0 || u16::from_be_bytes([opt[1], opt[2]]) != 41 || opt[6] != 0 {
            return Err(Fast::Slow); // not OPT, or EDNS version above 0 (BADVERS)
        }
        edns = Some(u16::from_be_bytes([opt[3], opt[4]]));
        do_bit = opt[7] & 0x80;
        let rdlen = u16::from_be_bytes([opt[9], opt[10]]) as usize;
        i += 11;
        let rdata = q.get(i..i + rdlen).ok_or(Fast::Slow)?;
        i += rdlen;
        let mut j = 0;
        while j < rdata.len() {
            let head = rdata.get(j..j + 4).ok_or(Fast::Slow)?;
            let code = u16::from_be_bytes([head[0], head[1]]);
            let len = u16::from_be_bytes([head[2], head[3]]) as usize;
            let data = rdata.get(j + 4..j + 4 + len).ok_or(Fast::Slow)?;
            j += 4 + len;
            if code == 8 {
                if ecs.is_some() {
                    return Err(Fast::Slow);
                }
                // Anything but an exact option goes to the full path (FORMERR there).
                ecs = Some(read_ecs(data).ok_or(Fast::Slow)?);
            }
        }
    }
    if i != q.len() {
        return Err(Fast::Slow); // trailing bytes
    }
    Ok(Parsed {
        id: [q[0], q[1]],
        rd: q[2] & 0x01 != 0,
        cd: q[3] & 0x10 != 0,
        question,
        lower: &lower[..lower_len],
        qtype,
        edns,
        do_bit,
        ecs,
    })
}

/// A writer over the output buffer that refuses to overflow it or to pass `limit`.
struct Out<'a> {
    buf: &'a mut [u8],
    len: usize,
    limit: usize,
}

impl Out<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Fast> {
        let end = self.len + bytes.len();
        if end > self.limit {
            return Err(Fast::Slow);
        }
        self.buf
            .get_mut(self.len..end)
            .ok_or(Fast::Slow)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }
}

/// Answers `query` from `src` into `out` when it has the fast shape.
pub fn answer(
    snapshot: &Snapshot,
    tally: &mut Tally,
    query: &[u8],
    src: IpAddr,
    out: &mut [u8],
) -> Fast {
    answer_over(snapshot, tally, query, src, out, false)
}

/// Like [`answer`], for a query that came over TCP: the reply is never truncated, so it
/// may be as long as `out` (a longer one goes to the full path).
pub fn answer_tcp(
    snapshot: &Snapshot,
    tally: &mut Tally,
    query: &[u8],
    src: IpAddr,
    out: &mut [u8],
) -> Fast {
    answer_over(snapshot, tally, query, src, out, true)
}

fn answer_over(
    snapshot: &Snapshot,
    tally: &mut Tally,
    query: &[u8],
    src: IpAddr,
    out: &mut [u8],
    tcp: bool,
) -> Fast {
    let mut lower = [0u8; 255];
    let p = match parse(query, &mut lower) {
        Ok(p) => p,
        Err(f) => return f,
    };
    let index = &snapshot.fast;
    let key = p.lower;
    let Some(slot) = index.slots.get(index.hash(key)) else {
        return Fast::Slow;
    };
    let client = Client::with_ecs(src, p.ecs, &snapshot.clients);
    let qtype = RecordType::from(p.qtype);
    let mut w = Out {
        buf: out,
        len: 0,
        // Longer UDP replies go to the full path, which truncates (and counts) properly.
        limit: if tcp {
            usize::MAX
        } else {
            udp_limit(p.edns, snapshot.max_udp_payload) as usize
        },
    };
    // Each writer counts its answer once the reply is complete (rate limiting may still
    // turn it into a TC=1 slip or a drop: `Tally::commit`).
    let written = match slot {
        Slot::App(i) if snapshot.app(i as usize).wire_name[..] != *key => Err(Fast::Slow),
        Slot::App(i) if matches!(qtype, RecordType::A | RecordType::AAAA) => {
            let i = i as usize;
            let app = snapshot.app(i);
            let plan = if qtype == RecordType::AAAA {
                &app.v6
            } else {
                &app.v4
            };
            if plan.rendered.period > 0 {
                write_rendered(snapshot, tally, i, qtype, &p, &client, &mut w)
            } else {
                write_app(snapshot, tally, i, qtype, &p, &client, &mut w)
            }
        }
        Slot::App(_) => Err(Fast::Slow),
        Slot::Static(i) => {
            let name = &index.statics[i as usize];
            match name.answers.iter().find(|(t, _)| *t == p.qtype) {
                Some((_, f)) if *name.key == *key => write_static(f, &p, &client, snapshot, &mut w)
                    .map(|rcode| {
                        let rcode = hickory_proto::op::ResponseCode::from(0, rcode);
                        tally.answer(snapshot, qtype, rcode, None);
                    }),
                _ => Err(Fast::Slow),
            }
        }
    };
    match written {
        Ok(()) => Fast::Answered(w.len),
        Err(f) => f,
    }
}

/// Index size from which [`prefetch`] works: about 1.5 MB of app plans, more than a core's
/// L2 cache (1-2 MB).
const PREFETCH_FROM: usize = 1000;

/// Starts loading what answering a batch of queries will read — each one's slot in the
/// index and its app's plan — without waiting for any of it.
///
/// With many apps queried at random, each query's app is cold, and answering it stalls on
/// cache misses one after another: the index entry, the app's pointer, the app. Done in
/// three passes over the whole batch (all index lines, then all app pointers, then all
/// apps), the misses of a pass are in flight together instead. Only hints: no effect on
/// any answer. Skipped for small indexes, whose names stay in the cache anyway: there it
/// would only parse every packet twice.
pub fn prefetch<'a>(snapshot: &Snapshot, queries: impl Iterator<Item = &'a [u8]>) {
    const MAX: usize = 64;
    let index = &snapshot.fast;
    if index.slots.len() < PREFETCH_FROM {
        return;
    }
    let mut hashes = [0u64; MAX];
    let mut n = 0;
    for query in queries.take(MAX) {
        let mut lower = [0u8; 255];
        if let Ok(p) = parse(query, &mut lower) {
            let hash = index.hash(p.lower);
            prefetch_line(index.slots.first_line(hash));
            hashes[n] = hash;
            n += 1;
        }
    }
    let mut apps = [0usize; MAX];
    let mut m = 0;
    for &hash in &hashes[..n] {
        if let Some(Slot::App(i)) = index.slots.get(hash) {
            let i = i as usize;
            prefetch_line(snapshot.apps()[i..].as_ptr().cast());
            apps[m] = i;
            m += 1;
        }
    }
    for &i in &apps[..m] {
        let app: *const AppAnswers = snapshot.app(i);
        // The hot part: name, policy and the A plan (the type is laid out hot-first).
        let hot = std::mem::size_of::<AppAnswers>().min(12 * 64);
        for offset in (0..hot).step_by(64) {
            prefetch_line(app.cast::<u8>().wrapping_add(offset));
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn prefetch_line(p: *const u8) {
    // SAFETY: SSE is part of the x86_64 baseline, and a prefetch is only a hint: it
    // reads nothing into the program and never faults, whatever the address.
    unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast()) };
}

#[cfg(not(target_arch = "x86_64"))]
fn prefetch_line(_: *const u8) {}

fn header(
    w: &mut Out<'_>,
    p: &Parsed<'_>,
    aa: bool,
    rcode: u8,
    counts: [u16; 3],
    opt: bool,
) -> Result<(), Fast> {
    let b2 = 0x80 | if aa { 0x04 } else { 0 } | if p.rd { 0x01 } else { 0 };
    let b3 = if p.cd { 0x10 } else { 0 } | (rcode & 0x0f);
    w.put(&p.id)?;
    w.put(&[b2, b3, 0, 1])?;
    w.put(&counts[0].to_be_bytes())?;
    w.put(&counts[1].to_be_bytes())?;
    w.put(&(counts[2] + u16::from(opt)).to_be_bytes())?;
    w.put(p.question)
}

/// The OPT record of the reply: our payload, version 0, the query's DO bit, and the ECS
/// echo if any.
fn opt(
    w: &mut Out<'_>,
    p: &Parsed<'_>,
    snapshot: &Snapshot,
    client: &Client,
    scope: Option<u8>,
) -> Result<(), Fast> {
    let payload = snapshot.max_udp_payload.max(512);
    w.put(&[0, 0, 41])?;
    w.put(&payload.to_be_bytes())?;
    // Extended rcode 0, version 0, flags: DO as asked, Z zero.
    w.put(&[0, 0, p.do_bit, 0])?;
    match (client.ecs, scope) {
        (Some(ecs), Some(scope)) => {
            let bytes = ecs.source_prefix.div_ceil(8) as usize;
            let mut octets = [0u8; 16];
            let family: u16 = match ecs.addr {
                IpAddr::V4(a) => {
                    octets[..4].copy_from_slice(&a.octets());
                    1
                }
                IpAddr::V6(a) => {
                    octets = a.octets();
                    2
                }
            };
            let len = 4 + bytes as u16;
            w.put(&(len + 4).to_be_bytes())?;
            w.put(&8u16.to_be_bytes())?;
            w.put(&len.to_be_bytes())?;
            w.put(&family.to_be_bytes())?;
            w.put(&[ecs.source_prefix, scope])?;
            w.put(&octets[..bytes])
        }
        _ => w.put(&[0, 0]),
    }
}

fn write_static(
    f: &Fragment,
    p: &Parsed<'_>,
    client: &Client,
    snapshot: &Snapshot,
    w: &mut Out<'_>,
) -> Result<u8, Fast> {
    header(w, p, f.authoritative, f.rcode, f.counts, p.edns.is_some())?;
    w.put(&f.bytes)?;
    if p.edns.is_some() {
        // Static answers do not depend on the client: ECS scope 0.
        opt(w, p, snapshot, client, client.ecs.map(|_| 0))?;
    }
    Ok(f.rcode)
}

/// Writes app `index`'s answer and counts it in `tally` (if the reply is sent).
///
/// The choice is used where it was made, not returned: it is a few hundred bytes, and every
/// move of it was a copy on the query path.
#[inline(always)]
fn write_app(
    snapshot: &Snapshot,
    tally: &mut Tally,
    index: usize,
    qtype: RecordType,
    p: &Parsed<'_>,
    client: &Client,
    w: &mut Out<'_>,
) -> Result<(), Fast> {
    let app = snapshot.app(index);
    let choice = choose_for(snapshot, app, qtype, client);
    let (chosen, scope) = (&choice.answer, choice.scope);
    if chosen.records.is_empty() {
        return Err(Fast::Slow); // NODATA carries the zone SOA: the full path writes it
    }
    header(
        w,
        p,
        true,
        0,
        [chosen.records.len() as u16, 0, 0],
        p.edns.is_some(),
    )?;
    for r in &chosen.records {
        write_address(w, r.ip, app.ttl)?;
    }
    if p.edns.is_some() {
        opt(w, p, snapshot, client, scope)?;
    }
    let noerror = hickory_proto::op::ResponseCode::NoError;
    tally.answer(snapshot, qtype, noerror, Some((index, chosen)));
    Ok(())
}

/// Writes app `index`'s pre-rendered `all` answer for `qtype` (its plan has one) and
/// counts it in `tally` (if the reply is sent).
///
/// One random draw, as the policy makes (the full path makes the same choice from the
/// same draw), and one copy. The answer does not depend on the client: ECS scope 0, if
/// the app uses ECS at all. Out of line, and [`write_app`] inlined: inlined together they
/// grew enough for the compiler to stop inlining `choose_for`, and the other policies'
/// path took ~5 % more instructions per query.
#[inline(never)]
fn write_rendered(
    snapshot: &Snapshot,
    tally: &mut Tally,
    index: usize,
    qtype: RecordType,
    p: &Parsed<'_>,
    client: &Client,
    w: &mut Out<'_>,
) -> Result<(), Fast> {
    let app = snapshot.app(index);
    let v6 = qtype == RecordType::AAAA;
    let rendered = &(if v6 { &app.v6 } else { &app.v4 }).rendered;
    let section = rendered.rotation(crate::policy::rng::next_u64());
    header(w, p, true, 0, [rendered.count, 0, 0], p.edns.is_some())?;
    w.put(section)?;
    if p.edns.is_some() {
        let scope = (!app.policy.ignore_ecs).then_some(0);
        opt(w, p, snapshot, client, scope)?;
    }
    tally.answer_every_up(snapshot, qtype, index, v6);
    Ok(())
}

/// An A or AAAA record whose owner is the question name (a pointer to offset 12).
fn write_address(w: &mut Out<'_>, ip: IpAddr, ttl: u32) -> Result<(), Fast> {
    let (v4, v6);
    let (rtype, rdata): (u16, &[u8]) = match ip {
        IpAddr::V4(a) => {
            v4 = a.octets();
            (1, &v4)
        }
        IpAddr::V6(a) => {
            v6 = a.octets();
            (28, &v6)
        }
    };
    w.put(&[0xc0, 0x0c])?;
    w.put(&rtype.to_be_bytes())?;
    w.put(&1u16.to_be_bytes())?;
    w.put(&ttl.to_be_bytes())?;
    w.put(&(rdata.len() as u16).to_be_bytes())?;
    w.put(rdata)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        metrics::Metrics,
        test_support::{APP, ONE_APP, STATIC, query, snapshot},
    };

    const OTHER: &[u8] = b"\x05other\x01t\x04test\x00";

    fn answer(snapshot: &Snapshot, metrics: &Metrics, name: &[u8]) -> Fast {
        let mut tally = Tally::new(metrics);
        let mut out = [0u8; 512];
        let src: IpAddr = "198.51.100.1".parse().unwrap();
        answer_into(snapshot, &mut tally, &query(name, 1), src, &mut out)
    }

    use super::answer as answer_into;

    /// The index finds names by hash only; the name itself must confirm every match (so a
    /// name colliding with an indexed one goes to the full path).
    #[test]
    fn a_hash_match_is_confirmed_by_the_name_and_collisions_go_to_the_full_path() {
        let (mut snapshot, metrics) = snapshot(ONE_APP);
        assert!(matches!(
            answer(&snapshot, &metrics, APP),
            Fast::Answered(_)
        ));
        assert!(matches!(
            answer(&snapshot, &metrics, STATIC),
            Fast::Answered(_)
        ));
        assert_eq!(answer(&snapshot, &metrics, OTHER), Fast::Slow);

        // Make "other.t.test" hash to the app's slot, then to the static name's: a name
        // that only shares the hash is not answered as either.
        let mut index = FastIndex::build(&snapshot);
        let other = index.hash(OTHER);
        index.slots.insert(other, Slot::App(0));
        snapshot.fast = Arc::new(index);
        assert_eq!(answer(&snapshot, &metrics, OTHER), Fast::Slow);
        let mut index = FastIndex::build(&snapshot);
        let static_at = index
            .statics
            .iter()
            .position(|s| *s.key == *STATIC)
            .unwrap();
        let other = index.hash(OTHER); // each index has its own seed
        index.slots.insert(other, Slot::Static(static_at as u32));
        snapshot.fast = Arc::new(index);
        assert_eq!(answer(&snapshot, &metrics, OTHER), Fast::Slow);

        // A build-time collision: the first name keeps the slot.
        let mut index = FastIndex::build(&snapshot);
        index.insert(APP, Slot::Static(static_at as u32));
        snapshot.fast = Arc::new(index);
        assert!(matches!(
            answer(&snapshot, &metrics, APP),
            Fast::Answered(_)
        ));
    }

    /// DO (RFC 3225 §3) is copied on the fast path itself — a DO query is as common as any
    /// from a validating resolver and must not cost a trip through the full path — and
    /// only DO: the other EDNS flag bits (Z) are not echoed.
    #[test]
    fn the_do_bit_is_copied_into_the_opt_of_fast_answers() {
        let (snapshot, metrics) = snapshot(ONE_APP);
        let src: IpAddr = "198.51.100.1".parse().unwrap();
        for name in [APP, STATIC] {
            for (flags, echoed) in [(0x80u8, 0x80u8), (0, 0), (0xff, 0x80), (0x7f, 0)] {
                let mut q = query(name, 1);
                q[11] = 1;
                q.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, flags, 0xff, 0, 0]);
                let mut tally = Tally::new(&metrics);
                let mut out = [0u8; 512];
                let Fast::Answered(len) = answer_into(&snapshot, &mut tally, &q, src, &mut out)
                else {
                    panic!("{name:?} with EDNS flags {flags:#x} left the fast path");
                };
                // The OPT record ends the reply: ..., TTL (rcode, version, flags), RDLEN 0.
                let ttl = &out[len - 6..len - 2];
                assert_eq!(ttl, [0, 0, echoed, 0], "{name:?} with flags {flags:#x}");
            }
        }
    }

    /// The prefetch only reads (hints), but it parses every packet and indexes the apps
    /// itself: with an index large enough for it to run, any batch — app names, unknown
    /// names, runts, responses, oversized batches — must go through it without a panic,
    /// and the answers after it are the usual ones.
    #[test]
    fn prefetch_takes_any_batch_of_a_large_index() {
        let mut toml = ONE_APP.to_owned();
        for i in 0..PREFETCH_FROM {
            toml.push_str(&format!(
                "[[apps]]\nhostname = \"a{i}.t.test\"\ntargets = [{{ cluster = \"a\" }}]\n"
            ));
        }
        let (snapshot, metrics) = snapshot(&toml);
        assert!(
            snapshot.fast.slots.len() >= PREFETCH_FROM,
            "big enough to prefetch"
        );
        let name = |i: usize| {
            let label = format!("a{i}");
            let mut n = vec![label.len() as u8];
            n.extend_from_slice(label.as_bytes());
            n.extend_from_slice(b"\x01t\x04test\x00");
            n
        };
        // The odd ones first: a batch is read up to its first 64 packets.
        let mut response = query(APP, 1);
        response[2] |= 0x80;
        let mut batch = vec![
            query(&name(PREFETCH_FROM - 1), 1), // the last app
            query(OTHER, 1),
            query(STATIC, 1),
            vec![0x12, 0x34, 0x01],
            Vec::new(),
            response,
        ];
        let odd = batch.len();
        batch.extend((0..100).map(|i| query(&name(i * 7), 1)));
        prefetch(&snapshot, batch.iter().map(Vec::as_slice));
        for q in batch[..1].iter().chain(&batch[odd..]) {
            let name = &q[12..q.len() - 4];
            let answered = answer(&snapshot, &metrics, name);
            assert!(
                matches!(answered, Fast::Answered(_)),
                "{name:?} after the prefetch"
            );
        }
        assert_eq!(answer(&snapshot, &metrics, OTHER), Fast::Slow);
    }
}
