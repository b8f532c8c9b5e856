//! One bucket of an instance's verdicts as the text of a gossip value (chitchat's values
//! are strings): `<bucket hash, 16 hex>/<targets>/<default>[@<base>;]<exceptions>`.
//!
//! Most targets share one state (up, or unknown at start), so a value names that default
//! once and lists only the targets that differ, each as the gap since the previous one
//! (decimal) and its state (one character). A bucket of 200 healthy targets is about 25
//! bytes; a cluster outage adds three or four bytes per target.
//!
//! A listed target that is observed (up or down, not unknown) also carries since when the
//! instance has seen it so: seconds after `base` (the oldest of the bucket's, in seconds
//! since the Unix epoch), in capital letters (`A` = 0 … `Z` = 25, `BA` = 26), which no gap
//! or state uses. A target in the default state carries none: its peers see since when it
//! says so as they received it (the value changes whenever a state does). Values without
//! `since` (an older instance) read as before.

use std::fmt::Write;

use super::Seen;

/// Why a value was not read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the bucket holds other targets (another configuration)")]
    OtherTargets,
    #[error("malformed verdicts: {0}")]
    Malformed(&'static str),
}

/// A bucket's value, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// A state per target.
    pub states: Box<[Seen]>,
    /// Per target, since when (seconds since the Unix epoch) the sender has seen it so;
    /// 0 where the value does not say (None when it says it of none).
    pub since: Option<Box<[u32]>>,
}

/// The value of a bucket with hash `hash` whose targets are in `states`, and since when
/// the instance has seen each so (`since`, seconds since the Unix epoch, 0 for not said;
/// empty: none said).
pub fn encode(hash: u64, states: &[Seen], since: &[u32]) -> String {
    let unknown = states.iter().filter(|s| **s == Seen::Unknown).count();
    let default = if unknown * 2 > states.len() {
        Seen::Unknown
    } else {
        Seen::Up
    };
    // Since when, for a listed target that is observed.
    let said = |i: usize| {
        let s = states[i];
        let t = since.get(i).copied().unwrap_or(0);
        (s != default && s != Seen::Unknown && t != 0).then_some(t)
    };
    let base = (0..states.len()).filter_map(said).min();
    let mut out = format!("{hash:016x}/{}/{}", states.len(), default.char());
    if let Some(base) = base {
        let _ = write!(out, "@{base};");
    }
    let mut previous: Option<usize> = None;
    for (i, s) in states.iter().enumerate() {
        if *s != default {
            let gap = previous.map_or(i, |p| i - p - 1);
            let _ = write!(out, "{gap}");
            out.push(s.char());
            if let (Some(t), Some(base)) = (said(i), base) {
                push_letters(&mut out, t - base);
            }
            previous = Some(i);
        }
    }
    out
}

/// `n` in base 26, `A` = 0.
fn push_letters(out: &mut String, n: u32) {
    let mut digits = [0u8; 8];
    let (mut n, mut len) = (n, 0);
    loop {
        digits[len] = b'A' + (n % 26) as u8;
        len += 1;
        n /= 26;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[..len].iter().rev().map(|&d| char::from(d)));
}

/// The states (and since when) of a value, if it describes the bucket with `hash` and
/// `len` targets.
pub fn decode(value: &str, hash: u64, len: usize) -> Result<Decoded, DecodeError> {
    let mut parts = value.splitn(3, '/');
    let (Some(h), Some(n), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(DecodeError::Malformed("three parts expected"));
    };
    let h = u64::from_str_radix(h, 16).map_err(|_| DecodeError::Malformed("bucket hash"))?;
    let n: usize = n
        .parse()
        .map_err(|_| DecodeError::Malformed("target count"))?;
    if h != hash || n != len {
        return Err(DecodeError::OtherTargets);
    }
    let mut chars = body.chars();
    let default = chars
        .next()
        .and_then(Seen::from_char)
        .ok_or(DecodeError::Malformed("default state"))?;
    let mut rest = chars.as_str();
    let base: Option<u32> = match rest.strip_prefix('@') {
        None => None,
        Some(after) => {
            let (digits, tail) = after
                .split_once(';')
                .ok_or(DecodeError::Malformed("a base without its end"))?;
            rest = tail;
            Some(
                digits
                    .parse()
                    .map_err(|_| DecodeError::Malformed("since base"))?,
            )
        }
    };
    let mut states = vec![default; len].into_boxed_slice();
    let mut since = base.map(|_| vec![0u32; len].into_boxed_slice());
    let mut next = 0usize;
    let mut gap: usize = 0;
    let mut digits = 0;
    // The target last read, and the seconds after `base` read for it so far.
    let mut last: Option<(usize, Option<u32>)> = None;
    let settle = |last: &mut Option<(usize, Option<u32>)>,
                  since: &mut Option<Box<[u32]>>|
     -> Result<(), DecodeError> {
        if let Some((at, Some(after))) = last.take() {
            let t = base
                .and_then(|b| b.checked_add(after))
                .ok_or(DecodeError::Malformed("since past its range"))?;
            if let Some(since) = since.as_mut() {
                since[at] = t;
            }
        }
        Ok(())
    };
    for c in rest.chars() {
        if c.is_ascii_uppercase() {
            let Some((at, after)) = last.as_mut() else {
                return Err(DecodeError::Malformed("since without its target"));
            };
            if base.is_none() || states[*at] == Seen::Unknown {
                return Err(DecodeError::Malformed("since without a base or a state"));
            }
            let d = u32::from(c as u8 - b'A');
            *after = Some(
                after
                    .unwrap_or(0)
                    .checked_mul(26)
                    .and_then(|a| a.checked_add(d))
                    .ok_or(DecodeError::Malformed("since overflows"))?,
            );
            continue;
        }
        settle(&mut last, &mut since)?;
        if let Some(d) = c.to_digit(10) {
            gap = gap
                .checked_mul(10)
                .and_then(|g| g.checked_add(d as usize))
                .ok_or(DecodeError::Malformed("gap overflows"))?;
            digits += 1;
            continue;
        }
        let state = Seen::from_char(c).ok_or(DecodeError::Malformed("state"))?;
        if digits == 0 {
            return Err(DecodeError::Malformed("a state without its gap"));
        }
        let at = next
            .checked_add(gap)
            .filter(|&at| at < len)
            .ok_or(DecodeError::Malformed("a target past the bucket's end"))?;
        states[at] = state;
        last = Some((at, None));
        next = at + 1;
        gap = 0;
        digits = 0;
    }
    settle(&mut last, &mut since)?;
    if digits != 0 {
        return Err(DecodeError::Malformed("a gap without its state"));
    }
    Ok(Decoded { states, since })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_survive_the_round_trip_and_a_healthy_bucket_is_short() {
        let states_of = |text: &str, hash, len| decode(text, hash, len).unwrap().states;
        let mut states = vec![Seen::Up; 200];
        let healthy = encode(0xabc, &states, &[]);
        assert_eq!(healthy, "0000000000000abc/200/+");
        assert_eq!(&*states_of(&healthy, 0xabc, 200), &states[..]);
        for i in (0..200).step_by(5) {
            states[i] = Seen::Refused;
        }
        states[7] = Seen::Unknown;
        states[199] = Seen::Timeout;
        let outage = encode(1, &states, &[]);
        assert!(outage.len() < 22 + 3 * 42, "{} bytes", outage.len());
        assert_eq!(&*states_of(&outage, 1, 200), &states[..]);
        // Mostly unknown (a start): unknown is the default.
        let start: Vec<Seen> = (0..50)
            .map(|i| if i == 3 { Seen::Down } else { Seen::Unknown })
            .collect();
        let text = encode(2, &start, &[]);
        assert_eq!(text, "0000000000000002/50/?3d");
        assert_eq!(&*states_of(&text, 2, 50), &start[..]);
        assert_eq!(&*states_of(&encode(3, &[], &[]), 3, 0), &[]);
    }

    /// A listed target that is observed carries since when; one in the common state, or
    /// unknown, does not.
    #[test]
    fn since_travels_with_the_targets_that_differ() {
        use Seen::*;
        let states = [Up, Refused, Up, Unknown, Timeout, Up];
        let since = [1_000, 1_700_000_000, 5, 1_700_000_100, 1_700_000_027, 0];
        let text = encode(9, &states, &since);
        // Base 1,700,000,000; refused at +0 (A), unknown with none, timeout at +27 (BB).
        assert_eq!(text, "0000000000000009/6/+@1700000000;1rA1?0tBB");
        let d = decode(&text, 9, 6).unwrap();
        assert_eq!(&*d.states, &states[..]);
        assert_eq!(
            d.since.as_deref(),
            Some(&[0, 1_700_000_000, 0, 0, 1_700_000_027, 0][..])
        );
        // Nothing to say: no base, and it reads as none said.
        let quiet = encode(9, &[Up, Up], &[7, 8]);
        assert_eq!(quiet, "0000000000000009/2/+");
        assert_eq!(decode(&quiet, 9, 2).unwrap().since, None);
        // Letters past one digit: 26 * 26 + 1 seconds after the base.
        let wide = encode(9, &[Down, Down], &[100, 100 + 677]);
        assert_eq!(wide, "0000000000000009/2/+@100;0dA0dBAB");
        assert_eq!(
            decode(&wide, 9, 2).unwrap().since.as_deref(),
            Some(&[100, 777][..])
        );
    }

    /// What an instance gossips at 10,000 apps x 5 clusters: a few KiB healthy, a few tens
    /// of KiB with one cluster down for every app (the bound: a few hundred KiB).
    #[test]
    fn ten_thousand_apps_in_five_clusters_cost_kibs() {
        use crate::health::{ProbeId, agree::layout::Layout};
        use std::sync::Arc;
        let spec = Arc::new(crate::test_support::probe_spec_for_tests());
        let spec = &spec;
        let clusters: Vec<Arc<str>> = (0..5).map(|c| Arc::from(format!("c{c}"))).collect();
        let list: Vec<(ProbeId, &Arc<crate::model::ProbeSpec>)> = (0..10_000)
            .flat_map(|a| {
                let app: hickory_proto::rr::Name = format!("app{a}.outage.test.").parse().unwrap();
                clusters.iter().map(move |c| {
                    (
                        ProbeId::App {
                            app: app.clone(),
                            cluster: c.clone(),
                        },
                        spec,
                    )
                })
            })
            .collect();
        let layout = Layout::build(&list);
        let size = |down: &str| -> usize {
            layout
                .buckets
                .iter()
                .map(|b| {
                    let states: Vec<Seen> = b
                        .ids
                        .iter()
                        .map(|id| match id {
                            ProbeId::App { cluster, .. } if &**cluster == down => Seen::Refused,
                            _ => Seen::Up,
                        })
                        .collect();
                    // Key ("v.xx") and value; the down targets went down over 10 s.
                    let since: Vec<u32> = (0..states.len())
                        .map(|i| 1_700_000_000 + (i % 10) as u32)
                        .collect();
                    4 + encode(b.hash, &states, &since).len()
                })
                .sum()
        };
        let (healthy, outage) = (size("none"), size("c0"));
        assert!(healthy < 10 * 1024, "{healthy} bytes healthy");
        assert!(outage < 48 * 1024, "{outage} bytes with c0 down");
        eprintln!("50,000 targets: {healthy} bytes healthy, {outage} with one cluster down");
    }

    #[test]
    fn another_bucket_or_garbage_is_refused() {
        let text = encode(7, &[Seen::Up, Seen::Down], &[]);
        assert_eq!(decode(&text, 8, 2), Err(DecodeError::OtherTargets));
        assert_eq!(decode(&text, 7, 3), Err(DecodeError::OtherTargets));
        for bad in [
            "",
            "7",
            "7/2",
            "zz/2/+",
            "7/x/+",
            "7/2/",
            "7/2/+5d",
            "7/2/+1",
            "7/2/+d",
            "7/2/+0x",
            "7/2/+99999999999999999999999d",
            "7/2/+0d0d0d",
            "7/2/+A0d",
            "7/2/+0dA",
            "7/2/+@5",
            "7/2/+@x;0dA",
            "7/2/+@5;0?A",
            "7/2/+@4294967295;0dB",
            "7/2/+@5;0dZZZZZZZZZZZZ",
        ] {
            assert!(
                matches!(decode(bad, 7, 2), Err(DecodeError::Malformed(_))),
                "{bad:?} was read"
            );
        }
    }
}
