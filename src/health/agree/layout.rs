//! Where each target's verdict sits in what an instance gossips: a fixed number of buckets,
//! each the targets of the bucket in one canonical order, so that a verdict is one byte at
//! a position every instance with the same targets agrees on, and a change re-sends one
//! bucket (a few hundred bytes at 50,000 targets), not the whole state.
//!
//! A target's bucket and its place in it depend only on its identity (app hostname without
//! regard to case, cluster name), never on the configuration's order or probe settings. A
//! bucket carries a hash of its targets: a peer whose bucket holds other targets (another
//! configuration) is not read for that bucket, so an instance only ever uses observations
//! of targets that exist in its own configuration.

use std::{sync::Arc, time::Duration};

use crate::{health::state::ProbeId, model::ProbeSpec};

/// Buckets of an instance's verdicts (gossip keys `v.00` to `v.ff`).
pub const BUCKETS: usize = 256;

/// FNV-1a, 64 bits: stable across builds and instances (unlike the std hasher).
pub(crate) fn fnv(state: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(state, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

pub(crate) const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// The identity of a probe as bytes every instance writes alike: kind, then the app's
/// labels in lower case with their lengths, then the cluster name.
pub fn canonical(id: &ProbeId) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    match id {
        ProbeId::App { app, cluster } => {
            out.push(0);
            for label in app.iter() {
                out.push(label.len() as u8);
                out.extend(label.iter().map(u8::to_ascii_lowercase));
            }
            out.push(0xff);
            out.extend_from_slice(cluster.as_bytes());
        }
        ProbeId::Cluster(cluster) => {
            out.push(1);
            out.extend_from_slice(cluster.as_bytes());
        }
    }
    out
}

/// The bucket of a probe.
pub fn bucket_of(canonical: &[u8]) -> usize {
    (fnv(FNV_START, canonical) % BUCKETS as u64) as usize
}

/// One bucket's targets.
#[derive(Debug, Default)]
pub struct Bucket {
    /// In canonical order.
    pub ids: Vec<ProbeId>,
    /// How long this instance's own observation of each stays fresh (ms): twice the probe
    /// interval plus its timeout, the longest a probe that runs on time goes without a
    /// result.
    pub fresh_ms: Vec<u32>,
    /// Of the canonical identities, in order: equal only for the same targets.
    pub hash: u64,
}

/// The buckets of one configuration's probes.
#[derive(Debug)]
pub struct Layout {
    pub buckets: Vec<Bucket>,
}

/// A target's place: bucket and position in it (see [`Layout::slot_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub bucket: u16,
    pub index: u32,
}

impl Slot {
    /// Packed in a `u32` for the table entry (24 bits of position: 16 million targets per
    /// bucket).
    pub fn pack(self) -> u32 {
        (u32::from(self.bucket) << 24) | (self.index & 0x00ff_ffff)
    }

    pub fn unpack(packed: u32) -> Option<Self> {
        (packed != u32::MAX).then_some(Self {
            bucket: (packed >> 24) as u16,
            index: packed & 0x00ff_ffff,
        })
    }
}

/// No slot (not in the layout).
pub const NO_SLOT: u32 = u32::MAX;

/// How long an observation of a probe with `spec` stays fresh.
pub fn fresh_for(spec: &ProbeSpec) -> Duration {
    spec.interval * 2 + spec.timeout
}

impl Layout {
    /// The layout of a probe list (as [`crate::health::state::probes`] gives it).
    pub fn build(list: &[(ProbeId, &Arc<ProbeSpec>)]) -> Self {
        let mut keyed: Vec<Vec<(Vec<u8>, usize)>> = (0..BUCKETS).map(|_| Vec::new()).collect();
        for (i, (id, _)) in list.iter().enumerate() {
            let key = canonical(id);
            keyed[bucket_of(&key)].push((key, i));
        }
        let buckets = keyed
            .into_iter()
            .map(|mut entries| {
                entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                let mut hash = FNV_START;
                for (key, _) in &entries {
                    hash = fnv(hash, &(key.len() as u32).to_be_bytes());
                    hash = fnv(hash, key);
                }
                Bucket {
                    ids: entries.iter().map(|(_, i)| list[*i].0.clone()).collect(),
                    fresh_ms: entries
                        .iter()
                        .map(|(_, i)| {
                            fresh_for(list[*i].1).as_millis().min(u32::MAX as u128) as u32
                        })
                        .collect(),
                    hash,
                }
            })
            .collect();
        Self { buckets }
    }

    /// Every target with its slot.
    pub fn slots(&self) -> impl Iterator<Item = (&ProbeId, Slot)> {
        self.buckets.iter().enumerate().flat_map(|(b, bucket)| {
            bucket.ids.iter().enumerate().map(move |(i, id)| {
                (
                    id,
                    Slot {
                        bucket: b as u16,
                        index: i as u32,
                    },
                )
            })
        })
    }

    pub fn fresh(&self, slot: Slot) -> Duration {
        Duration::from_millis(u64::from(
            self.buckets[slot.bucket as usize].fresh_ms[slot.index as usize],
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn app(name: &str, cluster: &str) -> ProbeId {
        ProbeId::App {
            app: name.parse().unwrap(),
            cluster: Arc::from(cluster),
        }
    }

    /// Two instances whose configurations list the same targets in another order, in
    /// another case and with other probe settings agree on every slot and bucket hash;
    /// one more target changes its own bucket's hash only.
    #[test]
    fn the_same_targets_in_any_order_or_case_have_the_same_layout() {
        let spec = crate::test_support::probe_spec_for_tests();
        let mut slower = spec.clone();
        slower.interval *= 3;
        let (spec, slower) = (Arc::new(spec), Arc::new(slower));
        let ids: Vec<ProbeId> = (0..2000)
            .map(|i| app(&format!("app{i}.t.test."), ["a", "b"][i % 2]))
            .chain([ProbeId::Cluster(Arc::from("a"))])
            .collect();
        let one: Vec<(ProbeId, &Arc<ProbeSpec>)> =
            ids.iter().map(|id| (id.clone(), &spec)).collect();
        let other: Vec<(ProbeId, &Arc<ProbeSpec>)> = ids
            .iter()
            .rev()
            .map(|id| match id {
                ProbeId::App { app, cluster } => (
                    ProbeId::App {
                        app: app.to_string().to_uppercase().parse().unwrap(),
                        cluster: cluster.clone(),
                    },
                    &slower,
                ),
                c => (c.clone(), &slower),
            })
            .collect();
        let (a, b) = (Layout::build(&one), Layout::build(&other));
        assert_eq!(a.buckets.iter().map(|b| b.ids.len()).sum::<usize>(), 2001);
        for (x, y) in a.buckets.iter().zip(&b.buckets) {
            assert_eq!(x.hash, y.hash);
            assert_eq!(x.ids, y.ids);
        }
        assert!(a.buckets.iter().filter(|b| !b.ids.is_empty()).count() > 200);
        let mut more = one.clone();
        let extra = app("new.t.test.", "a");
        more.push((extra.clone(), &spec));
        let c = Layout::build(&more);
        let changed: Vec<usize> = (0..BUCKETS)
            .filter(|&i| a.buckets[i].hash != c.buckets[i].hash)
            .collect();
        assert_eq!(changed, [bucket_of(&canonical(&extra))]);
        let slot = c.slots().find(|(id, _)| **id == extra).unwrap().1;
        assert_eq!(Slot::unpack(slot.pack()), Some(slot));
        assert_eq!(c.fresh(slot), spec.interval * 2 + spec.timeout);
    }
}
