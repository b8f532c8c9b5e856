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

/// Response classes that share a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A positive answer: keyed by the name.
    Answer,
    /// NXDOMAIN: keyed by the zone (random-subdomain floods).
    NxDomain,
    /// Errors (REFUSED, FORMERR, …).
    Error,
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
    /// NXDOMAIN) to `client`.
    pub fn check(&self, client: IpAddr, class: Class, key: &[u8]) -> Verdict {
        if self.settings.exempt.iter().any(|n| n.contains(&client)) {
            return Verdict::Send;
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
        let bucket = &self.buckets[(h as usize) & (BUCKETS - 1)];
        let rate = u64::from(self.settings.responses_per_second.max(1)) * 1000;
        let now = self.epoch.elapsed().as_millis() as u64 & 0xffff_ffff;
        let mut current = bucket.load(Ordering::Relaxed);
        loop {
            let (tokens, last) = if current == u64::MAX {
                (rate, now) // a fresh bucket holds one second's worth
            } else {
                (current >> 32, current & 0xffff_ffff)
            };
            let elapsed = now.wrapping_sub(last) & 0xffff_ffff;
            let refilled = (tokens + elapsed * rate / 1000).min(rate);
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

/// The class of a response by its rcode.
pub fn class_of(rcode: u8) -> Class {
    match rcode {
        0 => Class::Answer,
        3 => Class::NxDomain,
        _ => Class::Error,
    }
}

/// The budget key of a response: the name for answers and errors; for NXDOMAIN its last two
/// labels, so a random-subdomain flood under one zone shares one budget. `name` is in wire
/// format (lower case).
pub fn key_of(class: Class, name: &[u8]) -> &[u8] {
    if class != Class::NxDomain {
        return name;
    }
    // Label start offsets; keep the last two labels (and the root).
    let mut starts = Vec::with_capacity(8);
    let mut i = 0;
    while i < name.len() && name[i] != 0 {
        starts.push(i);
        i += name[i] as usize + 1;
    }
    match starts.len() {
        0..=2 => name,
        n => &name[starts[n - 2]..],
    }
}

/// An empty TC=1 reply to `query` (header and question only) into `out`; its length.
/// A question that is not one well-formed uncompressed name (the query may be garbage
/// that earned a FORMERR) is left out rather than echoed, so the reply always parses.
pub fn slip_reply(query: &[u8], out: &mut [u8]) -> Option<usize> {
    let header = query.get(..12)?;
    let question = if header[4..6] == [0, 1] {
        question_bytes(query)
    } else {
        None
    };
    let question = question.unwrap_or(&[]);
    let total = 12 + question.len();
    let dst = out.get_mut(..total)?;
    dst[0] = query[0];
    dst[1] = query[1];
    dst[2] = 0x80 | 0x02 | (query[2] & 0x79); // QR, TC, opcode and RD as asked
    dst[3] = query[3] & 0x10; // CD
    let qdcount = u8::from(!question.is_empty());
    dst[4..12].copy_from_slice(&[0, qdcount, 0, 0, 0, 0, 0, 0]);
    dst[12..].copy_from_slice(question);
    Some(total)
}

/// The first question (name, type, class) if its name is a well-formed uncompressed name
/// of at most 255 bytes.
fn question_bytes(query: &[u8]) -> Option<&[u8]> {
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
}
