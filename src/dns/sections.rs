//! A walk over a query's records as they stand on the wire, for what hickory's decoded
//! `Request` no longer shows:
//! - where a TSIG record sits: it must be the only one and the last record of the
//!   additional section (RFC 8945 §5.1), but hickory keeps the OPT record apart from the
//!   other additional records, so "TSIG, then OPT" looks like a well-placed TSIG;
//! - the Client Subnet option as sent: hickory reads only the address bytes the source
//!   prefix needs and drops the rest, which RFC 7871 §6 answers with FORMERR.
//!
//! Full path only (a few hundred nanoseconds against its microseconds): the fast path takes
//! no query with a record other than one OPT, nor an ECS option that is not exact.

/// Where the query's TSIG record is, if it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tsig {
    Absent,
    /// One TSIG record, the last of the additional section.
    Last,
    /// Several, or one elsewhere: FORMERR (RFC 8945 §5.1).
    Misplaced,
}

/// What the walk found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walk<'a> {
    pub tsig: Tsig,
    /// The data of the first Client Subnet option of the first OPT record, as sent.
    pub ecs: Option<&'a [u8]>,
}

const OPT: u16 = 41;
const TSIG: u16 = 250;
const ECS: u16 = 8;

/// Walks `msg`; `None` if its sections do not parse (hickory refuses those anyway).
pub fn walk(msg: &[u8]) -> Option<Walk<'_>> {
    let count = |i: usize| -> Option<usize> {
        let b = msg.get(i..i + 2)?;
        Some(usize::from(u16::from_be_bytes([b[0], b[1]])))
    };
    let questions = count(4)?;
    let records = count(6)? + count(8)?;
    let additional = count(10)?;
    let mut i = 12;
    for _ in 0..questions {
        i = skip_name(msg, i)? + 4;
    }
    let (mut tsigs, mut tsig_last, mut ecs, mut seen_opt) = (0, false, None, false);
    let total = records + additional;
    for n in 0..total {
        i = skip_name(msg, i)?;
        let head = msg.get(i..i + 10)?;
        let rtype = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[8], head[9]]));
        let data = msg.get(i + 10..i + 10 + len)?;
        i += 10 + len;
        match rtype {
            TSIG => {
                tsigs += 1;
                tsig_last = n >= records && n + 1 == total;
            }
            OPT if n >= records && !seen_opt => {
                seen_opt = true;
                ecs = option(data, ECS);
            }
            _ => {}
        }
    }
    let tsig = match (tsigs, tsig_last) {
        (0, _) => Tsig::Absent,
        (1, true) => Tsig::Last,
        _ => Tsig::Misplaced,
    };
    Some(Walk { tsig, ecs })
}

/// The index after the name at `i` (labels, ending in a root label or a pointer).
fn skip_name(msg: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let len = *msg.get(i)?;
        match len & 0xc0 {
            0xc0 => return msg.get(i + 1).map(|_| i + 2),
            0 if len == 0 => return Some(i + 1),
            0 => i += 1 + usize::from(len),
            _ => return None,
        }
    }
}

/// The data of the first option `code` in OPT record data `rdata`.
fn option(rdata: &[u8], code: u16) -> Option<&[u8]> {
    let mut j = 0;
    while j < rdata.len() {
        let head = rdata.get(j..j + 4)?;
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let data = rdata.get(j + 4..j + 4 + len)?;
        if u16::from_be_bytes([head[0], head[1]]) == code {
            return Some(data);
        }
        j += 4 + len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for "a." type A with the given additional records.
    fn query(additional: &[&[u8]]) -> Vec<u8> {
        let mut q = vec![
            0x12,
            0x34,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            additional.len() as u8,
        ];
        q.extend_from_slice(b"\x01a\x00\x00\x01\x00\x01");
        for r in additional {
            q.extend_from_slice(r);
        }
        q
    }

    fn opt(options: &[u8]) -> Vec<u8> {
        let mut r = vec![0, 0, 41, 4, 0xd0, 0, 0, 0x80, 0];
        r.extend_from_slice(&(options.len() as u16).to_be_bytes());
        r.extend_from_slice(options);
        r
    }

    /// A TSIG record whose owner is a pointer to the question name.
    fn tsig() -> Vec<u8> {
        let mut r = vec![0xc0, 12, 0, 250, 0, 255, 0, 0, 0, 0, 0, 3];
        r.extend_from_slice(b"\x01a\x00");
        r
    }

    #[test]
    fn finds_the_tsig_place_and_the_ecs_option_as_sent() {
        let ecs = [0, 8, 0, 8, 0, 1, 24, 0, 192, 0, 2, 0];
        let (o, t) = (opt(&ecs), tsig());
        let q = query(&[&o, &t]);
        let w = walk(&q).unwrap();
        assert_eq!(w.tsig, Tsig::Last);
        assert_eq!(
            w.ecs,
            Some(&[0, 1, 24, 0, 192, 0, 2, 0][..]),
            "every byte kept"
        );
        assert_eq!(walk(&query(&[&t, &o])).unwrap().tsig, Tsig::Misplaced);
        assert_eq!(walk(&query(&[&t, &t])).unwrap().tsig, Tsig::Misplaced);
        assert_eq!(walk(&query(&[&t])).unwrap().tsig, Tsig::Last);
        let q = query(&[&opt(&[0, 10, 0, 0])]);
        let w = walk(&q).unwrap();
        assert_eq!((w.tsig, w.ecs), (Tsig::Absent, None));
        let mut in_answer = query(&[]);
        in_answer[7] = 1;
        in_answer.extend_from_slice(&t);
        assert_eq!(walk(&in_answer).unwrap().tsig, Tsig::Misplaced);
    }

    #[test]
    fn refuses_what_does_not_parse() {
        let mut o = opt(&[0, 8, 0, 2, 0, 1]);
        o[10] += 1;
        assert_eq!(walk(&query(&[&o])), None, "record longer than the message");
        let mut q = query(&[&tsig()]);
        q.pop();
        assert_eq!(walk(&q), None, "record cut short");
        assert_eq!(walk(&[0; 5]), None);
        let mut q = query(&[]);
        q[12] = 0x40;
        assert_eq!(walk(&q), None, "extended label type");
    }
}
