//! One bucket of an instance's verdicts as the text of a gossip value (chitchat's values
//! are strings): `<bucket hash, 16 hex>/<targets>/<default><exceptions>`.
//!
//! Most targets share one state (up, or unknown at start), so a value names that default
//! once and lists only the targets that differ, each as the gap since the previous one
//! (decimal) and its state (one character). A bucket of 200 healthy targets is about 25
//! bytes; a cluster outage adds two or three bytes per target.

use super::Seen;

/// Why a value was not read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the bucket holds other targets (another configuration)")]
    OtherTargets,
    #[error("malformed verdicts: {0}")]
    Malformed(&'static str),
}

/// The value of a bucket with hash `hash` whose targets are in `states`.
pub fn encode(hash: u64, states: &[Seen]) -> String {
    let unknown = states.iter().filter(|s| **s == Seen::Unknown).count();
    let default = if unknown * 2 > states.len() {
        Seen::Unknown
    } else {
        Seen::Up
    };
    let mut out = format!("{hash:016x}/{}/{}", states.len(), default.char());
    let mut previous: Option<usize> = None;
    for (i, s) in states.iter().enumerate() {
        if *s != default {
            let gap = previous.map_or(i, |p| i - p - 1);
            out.push_str(&gap.to_string());
            out.push(s.char());
            previous = Some(i);
        }
    }
    out
}

/// The states of a value, if it describes the bucket with `hash` and `len` targets.
pub fn decode(value: &str, hash: u64, len: usize) -> Result<Box<[Seen]>, DecodeError> {
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
    let mut states = vec![default; len].into_boxed_slice();
    let mut next = 0usize;
    let mut gap: usize = 0;
    let mut digits = 0;
    for c in chars {
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
        next = at + 1;
        gap = 0;
        digits = 0;
    }
    if digits != 0 {
        return Err(DecodeError::Malformed("a gap without its state"));
    }
    Ok(states)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_survive_the_round_trip_and_a_healthy_bucket_is_short() {
        let mut states = vec![Seen::Up; 200];
        let healthy = encode(0xabc, &states);
        assert_eq!(healthy, "0000000000000abc/200/+");
        assert_eq!(&*decode(&healthy, 0xabc, 200).unwrap(), &states[..]);
        for i in (0..200).step_by(5) {
            states[i] = Seen::Refused;
        }
        states[7] = Seen::Unknown;
        states[199] = Seen::Timeout;
        let outage = encode(1, &states);
        assert!(outage.len() < 22 + 3 * 42, "{} bytes", outage.len());
        assert_eq!(&*decode(&outage, 1, 200).unwrap(), &states[..]);
        // Mostly unknown (a start): unknown is the default.
        let start: Vec<Seen> = (0..50)
            .map(|i| if i == 3 { Seen::Down } else { Seen::Unknown })
            .collect();
        let text = encode(2, &start);
        assert_eq!(text, "0000000000000002/50/?3d");
        assert_eq!(&*decode(&text, 2, 50).unwrap(), &start[..]);
        assert_eq!(&*decode(&encode(3, &[]), 3, 0).unwrap(), &[]);
    }

    /// What an instance gossips at 10,000 apps x 5 clusters: a few KiB healthy, a few tens
    /// of KiB with one cluster down for every app (the bound: a few hundred KiB).
    #[test]
    fn ten_thousand_apps_in_five_clusters_cost_kibs() {
        use crate::health::{ProbeId, agree::layout::Layout};
        use std::sync::Arc;
        let spec = crate::test_support::probe_spec_for_tests();
        let spec = &spec;
        let clusters: Vec<Arc<str>> = (0..5).map(|c| Arc::from(format!("c{c}"))).collect();
        let list: Vec<(ProbeId, &crate::model::ProbeSpec)> = (0..10_000)
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
                    // Key ("v.xx") and value.
                    4 + encode(b.hash, &states).len()
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
        let text = encode(7, &[Seen::Up, Seen::Down]);
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
        ] {
            assert!(
                matches!(decode(bad, 7, 2), Err(DecodeError::Malformed(_))),
                "{bad:?} was read"
            );
        }
    }
}
