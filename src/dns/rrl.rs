//! Response rate limiting (RRL), as NSD and Knot do it: a reflection/amplification flood
//! sends many queries with a victim's address; answering each would aim our replies at the
//! victim. Responses are counted per (client network, response class, name) in token
//! buckets; over the limit a response is dropped, except every `slip`-th which goes out
//! truncated and empty (TC=1), so a real resolver behind that address retries over TCP —
//! which is never limited.
//!
//! The table is a fixed array of buckets indexed by a hash (memory bounded under a spoofed
//! flood, O(1) per packet); each bucket is one atomic word updated with compare-and-swap, so
//! UDP workers never take a lock. Colliding keys share a bucket: with 65,536 buckets that is
//! rare, and the failure mode is limiting slightly early.

use std::{
    net::IpAddr,
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};

use ipnet::IpNet;

const BUCKETS: usize = 1 << 16;

/// What to do with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Send an empty TC=1 reply instead.
    Slip,
    Drop,
}

/// Response classes, each with its own budget (as Knot's RRL classes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A positive answer or NODATA: keyed by the name.
    Answer,
    /// NXDOMAIN: keyed by the zone (random-subdomain floods share one budget).
    NxDomain,
    /// Errors (REFUSED, FORMERR, BADVERS, …): one budget per client network.
    Error,
    /// A referral to a child zone: keyed by the delegation point, so a flood of random
    /// names under one delegation shares one budget.
    Referral,
    /// An answer to a query of type ANY (the classic amplifier): keyed by the name.
    Any,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RrlSettings {
    pub responses_per_second: u32,
    pub slip: u32,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// Clients never limited (loopback and the company's resolvers, say).
    pub exempt: Vec<IpNet>,
}

pub struct Rrl {
    settings: RrlSettings,
    /// Per bucket: tokens (high 32 bits, in 1/1000 of a response) and the last update
    /// (low 32 bits, in ms since `epoch`).
    buckets: Box<[AtomicU64]>,
    /// Slip counter per bucket would cost memory: one global counter is enough to send
    /// every n-th limited response as TC.
    limited: AtomicU64,
    epoch: Instant,
}

impl std::fmt::Debug for Rrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rrl")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Rrl {
    pub fn new(settings: RrlSettings) -> Self {
        Self {
            settings,
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(u64::MAX)).collect(),
            limited: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// The verdict for a response of `class` about `key` (the name, or the zone for
    /// NXDOMAIN) to `client`: takes one token from its bucket.
    pub fn check(&self, client: IpAddr, class: Class, key: &[u8]) -> Verdict {
        let Some(bucket) = self.bucket(client, class, key) else {
            return Verdict::Send;
        };
        let rate = self.rate();
        let now = self.now();
        let mut current = bucket.load(Ordering::Relaxed);
        loop {
            let refilled = Self::refilled(current, now, rate);
            let (next, ok) = if refilled >= 1000 {
                (refilled - 1000, true)
            } else {
                (refilled, false)
            };
            let word = (next << 32) | now;
            match bucket.compare_exchange_weak(current, word, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) if ok => return Verdict::Send,
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        self.limited()
    }

    /// Like [`Rrl::check`], but takes no token: `Send` while the bucket still holds one.
    /// The UDP worker asks this before queueing a query for the full path, so a flood whose
    /// budget is spent is shed at the door instead of being answered and then dropped; the
    /// token itself is taken by `check` once the reply (and so its exact class) is known.
    pub fn peek(&self, client: IpAddr, class: Class, key: &[u8]) -> Verdict {
        match self.bucket(client, class, key) {
            Some(bucket)
                if Self::refilled(bucket.load(Ordering::Relaxed), self.now(), self.rate())
                    < 1000 =>
            {
                self.limited()
            }
            _ => Verdict::Send,
        }
    }

    /// Tokens per second, in 1/1000 of a response.
    fn rate(&self) -> u64 {
        u64::from(self.settings.responses_per_second.max(1)) * 1000
    }

    /// Milliseconds since `epoch`, in the bucket word's 32 bits.
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 & 0xffff_ffff
    }

    /// The tokens of bucket word `current` refilled up to `now`.
    fn refilled(current: u64, now: u64, rate: u64) -> u64 {
        let (tokens, last) = if current == u64::MAX {
            (rate, now) // a fresh bucket holds one second's worth
        } else {
            (current >> 32, current & 0xffff_ffff)
        };
        let elapsed = now.wrapping_sub(last) & 0xffff_ffff;
        (tokens + elapsed * rate / 1000).min(rate)
    }

    /// The bucket of (`client`'s network, `class`, `key`); None for an exempt client.
    fn bucket(&self, client: IpAddr, class: Class, key: &[u8]) -> Option<&AtomicU64> {
        if self.settings.exempt.iter().any(|n| n.contains(&client)) {
            return None;
        }
        let prefix = match client {
            IpAddr::V4(_) => self.settings.ipv4_prefix,
            IpAddr::V6(_) => self.settings.ipv6_prefix,
        };
        let net = IpNet::new(client, prefix).map_or(client, |n| n.trunc().addr());
        let mut bytes = [0u8; 18];
        let n = match net {
            IpAddr::V4(a) => {
                bytes[..4].copy_from_slice(&a.octets());
                4
            }
            IpAddr::V6(a) => {
                bytes[..16].copy_from_slice(&a.octets());
                16
            }
        };
        bytes[n] = class as u8;
        let h = crate::policy::mix(
            crate::policy::stable_hash(&bytes[..=n]),
            crate::policy::stable_hash(key),
        );
        Some(&self.buckets[(h as usize) & (BUCKETS - 1)])
    }

    /// The fate of a response over its budget: every `slip`-th goes out truncated.
    fn limited(&self) -> Verdict {
        let slip = u64::from(self.settings.slip);
        if slip > 0
            && self
                .limited
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(slip)
        {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

/// The budget a response draws from: its class and key (a lower-case wire-format name
/// written into `buf`). NXDOMAIN and referrals are keyed by the owner of the reply's first
/// authority record (the zone's SOA, the delegation's NS), answers and ANY by the question
/// name, errors by nothing (one budget per client network). Reads only what the two messages say, with bounds on every step; what cannot be
/// read falls back to the question name, or to the empty key.
pub fn budget<'a>(query: &[u8], reply: &[u8], buf: &'a mut [u8; 256]) -> (Class, &'a [u8]) {
    let word = |m: &[u8], i: usize| m.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let rcode = reply.get(3).map_or(0, |b| b & 0x0f);
    let authoritative = reply.get(2).is_some_and(|b| b & 0x04 != 0);
    let answers = word(reply, 6).unwrap_or(0);
    let authorities = word(reply, 8).unwrap_or(0);
    let qtype = skip_name(query, 12).and_then(|end| word(query, end));
    // Our NOERROR replies are authoritative except referrals; a non-authoritative NOERROR
    // without records is BADVERS (its rcode's high bits live in the OPT record).
    let class = match rcode {
        0 if !authoritative && answers == 0 && authorities > 0 => Class::Referral,
        0 if !authoritative && answers == 0 => Class::Error,
        0 if qtype == Some(255) => Class::Any,
        0 => Class::Answer,
        3 => Class::NxDomain,
        _ => Class::Error,
    };
    let len = match class {
        Class::NxDomain | Class::Referral => first_authority_owner(reply, buf)
            .or_else(|| read_name(query, 12, buf))
            .unwrap_or(0),
        // One budget per client network for all errors: REFUSED for random names outside
        // our zones must not get a fresh bucket per name.
        Class::Error => 0,
        Class::Answer | Class::Any => read_name(query, 12, buf).unwrap_or(0),
    };
    (class, &buf[..len])
}

/// The owner name of the first authority record of `msg`, into `out`; its length.
fn first_authority_owner(msg: &[u8], out: &mut [u8; 256]) -> Option<usize> {
    let count = |i: usize| msg.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let mut pos = 12;
    for _ in 0..count(4)? {
        pos = skip_name(msg, pos)? + 4;
    }
    for _ in 0..count(6)? {
        pos = skip_name(msg, pos)? + 8;
        pos += usize::from(count(pos)?) + 2;
    }
    if count(8)? == 0 {
        return None;
    }
    read_name(msg, pos, out)
}

/// The offset just past the (possibly compressed) name at `pos`.
fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *msg.get(pos)?;
        match len {
            0 => return Some(pos + 1),
            1..=63 => pos += usize::from(len) + 1,
            _ if len & 0xc0 == 0xc0 => return Some(pos + 2),
            _ => return None,
        }
    }
}

/// The name at `pos`, decompressed and lower-cased, into `out` in wire format; its length.
/// At most 255 bytes and 32 pointers, so a hostile message cannot loop.
fn read_name(msg: &[u8], mut pos: usize, out: &mut [u8; 256]) -> Option<usize> {
    let mut n = 0;
    for _ in 0..32 {
        loop {
            let len = *msg.get(pos)?;
            match len {
                0 => {
                    out[n] = 0;
                    return Some(n + 1);
                }
                1..=63 => {
                    let label = msg.get(pos..pos + usize::from(len) + 1)?;
                    if n + label.len() + 1 > 255 {
                        return None;
                    }
                    for (o, b) in out[n..].iter_mut().zip(label) {
                        *o = b.to_ascii_lowercase();
                    }
                    n += label.len();
                    pos += label.len();
                }
                _ if len & 0xc0 == 0xc0 => {
                    pos = usize::from(u16::from_be_bytes([len & 0x3f, *msg.get(pos + 1)?]));
                    break;
                }
                _ => return None,
            }
        }
    }
    None
}

/// An empty TC=1 reply to `query` (header and question only) into `out`; its length.
/// A question that is not one well-formed uncompressed name (the query may be garbage
/// that earned a FORMERR) is left out rather than echoed, so the reply always parses.
pub fn slip_reply(query: &[u8], out: &mut [u8]) -> Option<usize> {
    let header = query.get(..12)?;
    let question = if header[4..6] == [0, 1] {
        plain_question(query)
    } else {
        None
    };
    let question = question.unwrap_or(&[]);
    let total = 12 + question.len();
    let dst = out.get_mut(..total)?;
    dst[0] = query[0];
    dst[1] = query[1];
    dst[2] = 0x80 | 0x02 | (query[2] & 0x79); // QR, TC, opcode and RD as asked
    // CD as asked by a query; never for other opcodes (as the full path answers them).
    dst[3] = if query[2] & 0x78 == 0 {
        query[3] & 0x10
    } else {
        0
    };
    let qdcount = u8::from(!question.is_empty());
    dst[4..12].copy_from_slice(&[0, qdcount, 0, 0, 0, 0, 0, 0]);
    dst[12..].copy_from_slice(question);
    Some(total)
}

/// The first question (name, type, class) if its name is a well-formed uncompressed name
/// of at most 255 bytes: the only kind a reply may echo byte for byte.
pub(super) fn plain_question(query: &[u8]) -> Option<&[u8]> {
    let mut i = 12;
    loop {
        let len = *query.get(i)? as usize;
        if len == 0 {
            break;
        }
        if len > 63 || i + len + 1 - 12 > 254 {
            return None;
        }
        i += len + 1;
    }
    query.get(12..i + 5)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrl(rate: u32, slip: u32) -> Rrl {
        Rrl::new(RrlSettings {
            responses_per_second: rate,
            slip,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            exempt: vec!["10.9.0.0/16".parse().unwrap()],
        })
    }

    #[test]
    fn a_burst_is_cut_at_the_rate_and_split_between_slip_and_drop() {
        let r = rrl(100, 2);
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        let mut counts = [0i32; 3];
        for _ in 0..1000 {
            match r.check(client, Class::Answer, b"shop") {
                Verdict::Send => counts[0] += 1,
                Verdict::Slip => counts[1] += 1,
                Verdict::Drop => counts[2] += 1,
            }
        }
        // Within one instant: one second's budget, then half slipped, half dropped.
        assert!((100..=105).contains(&counts[0]), "{counts:?}");
        assert!((counts[1] - counts[2]).abs() <= 1, "{counts:?}");
        // Same /24 shares the budget; another network and another name do not.
        assert_ne!(
            r.check("192.0.2.200".parse().unwrap(), Class::Answer, b"shop"),
            Verdict::Send
        );
        assert_eq!(
            r.check("198.51.100.1".parse().unwrap(), Class::Answer, b"shop"),
            Verdict::Send
        );
        assert_eq!(r.check(client, Class::Answer, b"other"), Verdict::Send);
        assert_eq!(
            r.check("10.9.1.1".parse().unwrap(), Class::Answer, b"shop"),
            Verdict::Send
        );
    }

    #[test]
    fn slip_replies_parse_whatever_the_query() {
        let mut out = [0u8; 512];
        // A well-formed question is echoed.
        let q = [
            0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1,
        ];
        let n = slip_reply(&q, &mut out).unwrap();
        assert_eq!(
            &out[..n],
            &[
                0xab, 0xcd, 0x83, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1
            ]
        );
        // A reserved label type (0x40), a compression pointer or no question: header only.
        for bad in [
            &[
                0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 1, 0, 1,
            ][..],
            &[
                0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1,
            ][..],
            &[
                0xab, 0xcd, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1,
            ][..],
        ] {
            let n = slip_reply(bad, &mut out).unwrap();
            assert_eq!(&out[..n], &[0xab, 0xcd, 0x83, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        }
        assert_eq!(slip_reply(&q[..11], &mut out), None);
    }

    /// CD is copied into the slip to a query, as into its answer, and never into the slip
    /// to another opcode (whose full reply, NOTIMP, does not carry it either).
    #[test]
    fn slips_copy_cd_for_queries_only() {
        let mut out = [0u8; 512];
        for (opcode, cd) in [(0u8, 0x10u8), (2, 0), (4, 0), (5, 0), (15, 0)] {
            let q = [
                0xab,
                0xcd,
                opcode << 3 | 1,
                0x30,
                0,
                1,
                0,
                0,
                0,
                0,
                0,
                0,
                1,
                b'a',
                0,
                0,
                1,
                0,
                1,
            ];
            let n = slip_reply(&q, &mut out).unwrap();
            assert_eq!(
                out[..4],
                [0xab, 0xcd, 0x83 | opcode << 3, cd],
                "opcode {opcode}"
            );
            assert_eq!(n, q.len());
        }
    }

    /// A reply built by hickory (compressed as on the wire) and the query it answers.
    fn exchange(
        qname: &str,
        qtype: hickory_proto::rr::RecordType,
        rcode: hickory_proto::op::ResponseCode,
        aa: bool,
        answers: &[&str],
        authority: Option<(&str, hickory_proto::rr::RData)>,
    ) -> (Vec<u8>, Vec<u8>) {
        use hickory_proto::{
            op::{Message, MessageType, OpCode, Query},
            rr::{Name, RData, Record, rdata::A},
        };
        let name = Name::from_ascii(qname).unwrap();
        let mut q = Message::new(9, MessageType::Query, OpCode::Query);
        q.add_query(Query::query(name.clone(), qtype));
        let mut r = Message::new(9, MessageType::Response, OpCode::Query);
        r.add_query(Query::query(name, qtype));
        r.metadata.response_code = rcode;
        r.metadata.authoritative = aa;
        for a in answers {
            r.add_answer(Record::from_rdata(
                Name::from_ascii(a).unwrap(),
                60,
                RData::A(A::new(192, 0, 2, 1)),
            ));
        }
        if let Some((owner, data)) = authority {
            r.add_authority(Record::from_rdata(
                Name::from_ascii(owner).unwrap(),
                60,
                data,
            ));
        }
        (q.to_vec().unwrap(), r.to_vec().unwrap())
    }

    fn wire(name: &str) -> Vec<u8> {
        let mut v = Vec::new();
        for label in name.trim_end_matches('.').split('.') {
            v.push(label.len() as u8);
            v.extend_from_slice(label.as_bytes());
        }
        v.push(0);
        v
    }

    #[test]
    fn responses_are_classed_and_keyed_as_knot_does() {
        use hickory_proto::{
            op::ResponseCode,
            rr::{
                Name, RData, RecordType,
                rdata::{NS, SOA},
            },
        };
        let soa = || {
            RData::SOA(SOA::new(
                Name::from_ascii("ns.t.test.").unwrap(),
                Name::from_ascii("h.t.test.").unwrap(),
                1,
                2,
                3,
                4,
                5,
            ))
        };
        let ns = || RData::NS(NS(Name::from_ascii("ns.child.net.").unwrap()));
        let mut buf = [0u8; 256];
        let cases = [
            (
                exchange(
                    "WWW.t.test.",
                    RecordType::A,
                    ResponseCode::NoError,
                    true,
                    &["www.t.test."],
                    None,
                ),
                Class::Answer,
                "www.t.test",
            ),
            (
                exchange(
                    "www.t.test.",
                    RecordType::AAAA,
                    ResponseCode::NoError,
                    true,
                    &[],
                    Some(("t.test.", soa())),
                ),
                Class::Answer,
                "www.t.test",
            ),
            (
                exchange(
                    "www.t.test.",
                    RecordType::ANY,
                    ResponseCode::NoError,
                    true,
                    &["www.t.test."],
                    None,
                ),
                Class::Any,
                "www.t.test",
            ),
            (
                exchange(
                    "x7f3.Y.t.test.",
                    RecordType::A,
                    ResponseCode::NXDomain,
                    true,
                    &[],
                    Some(("t.test.", soa())),
                ),
                Class::NxDomain,
                "t.test",
            ),
            (
                exchange(
                    "r4nd.sub.t.test.",
                    RecordType::A,
                    ResponseCode::NoError,
                    false,
                    &[],
                    Some(("Sub.t.test.", ns())),
                ),
                Class::Referral,
                "sub.t.test",
            ),
            (
                exchange(
                    "r4nd.sub.t.test.",
                    RecordType::ANY,
                    ResponseCode::NoError,
                    false,
                    &[],
                    Some(("sub.t.test.", ns())),
                ),
                Class::Referral,
                "sub.t.test",
            ),
        ];
        for ((query, reply), class, key) in cases {
            let (c, k) = budget(&query, &reply, &mut buf);
            assert_eq!((c, k), (class, &wire(key)[..]), "{key}");
        }
        // Errors share one key whatever the name: REFUSED outside our zones, and BADVERS
        // (rcode 0 in the header, not authoritative, no records).
        for (name, rcode) in [
            ("www.other.", ResponseCode::Refused),
            ("x1.other.", ResponseCode::Refused),
            ("www.t.test.", ResponseCode::FormErr),
        ] {
            let (q, r) = exchange(name, RecordType::A, rcode, false, &[], None);
            assert_eq!(budget(&q, &r, &mut buf), (Class::Error, &[][..]), "{name}");
        }
        let (q, r) = exchange(
            "www.t.test.",
            RecordType::A,
            ResponseCode::NoError,
            false,
            &[],
            None,
        );
        assert_eq!(budget(&q, &r, &mut buf), (Class::Error, &[][..]), "BADVERS");
    }

    #[test]
    fn hostile_replies_fall_back_to_the_question_name() {
        let (query, mut reply) = exchange(
            "a.t.test.",
            hickory_proto::rr::RecordType::A,
            hickory_proto::op::ResponseCode::NXDomain,
            true,
            &[],
            None,
        );
        // Claims an authority record it does not have, then a pointer loop as its owner.
        reply[9] = 1;
        let mut buf = [0u8; 256];
        assert_eq!(
            budget(&query, &reply, &mut buf),
            (Class::NxDomain, &wire("a.t.test")[..])
        );
        let at = reply.len();
        reply.extend_from_slice(&[0xc0, at as u8]);
        assert_eq!(budget(&query, &reply, &mut buf).1, &wire("a.t.test")[..]);
        // Nothing readable at all: no header flags, so not an authoritative answer.
        assert_eq!(budget(&[], &[], &mut buf), (Class::Error, &[][..]));
    }
}
