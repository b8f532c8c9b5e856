//! Which instances probe a target when `fleet.probes_per_target` is K: N instances would
//! otherwise multiply the probes every ingress receives by N. Each target is probed by
//! the K live instances that score highest for it (rendezvous hashing: a score per
//! instance name and target identity), so every instance computes the same choice from
//! the same membership, and when an instance dies only its targets move, each to the
//! instance that scored next. The others share no observation of the target (unknown),
//! and the decision is taken from those that probe it.

use crate::health::state::ProbeId;

use super::layout::{FNV_START, canonical, fnv};

/// The live membership as this instance sees it, and K.
#[derive(Debug, Clone)]
pub struct Assignment {
    me: String,
    /// Every live instance, this one included, by name.
    members: Vec<String>,
    k: usize,
}

/// An instance's score for a target: FNV over name and identity, then mixed (splitmix64's
/// finaliser) so that close names do not rank alike.
fn score(member: &str, key: &[u8]) -> u64 {
    let mut h = fnv(fnv(FNV_START, member.as_bytes()), &[0xff]);
    h = fnv(h, key);
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl Assignment {
    pub fn new(me: &str, peers: impl IntoIterator<Item = String>, k: usize) -> Self {
        let mut members: Vec<String> = peers.into_iter().collect();
        members.push(me.to_owned());
        members.sort();
        members.dedup();
        Self {
            me: me.to_owned(),
            members,
            k,
        }
    }

    /// Whether this instance probes `id`.
    pub fn probes(&self, id: &ProbeId) -> bool {
        if self.k >= self.members.len() {
            return true;
        }
        let key = canonical(id);
        let mine = (score(&self.me, &key), self.me.as_str());
        let above = self
            .members
            .iter()
            .filter(|m| (score(m, &key), m.as_str()) > mine)
            .count();
        above < self.k
    }

    /// The instances that probe `id`, by name.
    pub fn probers(&self, id: &ProbeId) -> Vec<&str> {
        let key = canonical(id);
        let mut ranked: Vec<(u64, &str)> = self
            .members
            .iter()
            .map(|m| (score(m, &key), m.as_str()))
            .collect();
        ranked.sort_by(|a, b| b.cmp(a));
        ranked.truncate(self.k);
        ranked.into_iter().map(|(_, m)| m).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ids(n: usize) -> Vec<ProbeId> {
        (0..n)
            .map(|i| ProbeId::App {
                app: format!("app{i}.t.test.").parse().unwrap(),
                cluster: Arc::from(["c0", "c1", "c2", "c3", "c4"][i % 5]),
            })
            .collect()
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Every instance computes the same K probers per target, from its own side; the load
    /// spreads evenly; when one dies only its targets move, and each to one instance.
    #[test]
    fn each_target_has_k_probers_and_a_death_moves_only_the_dead_ones_targets() {
        let all = ["a", "b", "c", "d"];
        let view = |me: &str, live: &[&str]| Assignment::new(me, names(live), 2);
        let targets = ids(20_000);
        let mut load = [0usize; 4];
        for id in &targets {
            let probing: Vec<&str> = all
                .iter()
                .copied()
                .filter(|m| view(m, &all).probes(id))
                .collect();
            assert_eq!(probing.len(), 2, "{id}");
            let full = view("a", &all);
            let mut probers = full.probers(id);
            probers.sort();
            assert_eq!(probers, probing);
            for m in probing {
                load[all.iter().position(|x| *x == m).unwrap()] += 1;
            }
        }
        // 10,000 each, within 3 %.
        for l in load {
            assert!((9_700..=10_300).contains(&l), "{load:?}");
        }
        // d dies: a target d did not probe keeps its probers; one d probed gets exactly
        // one new prober.
        let (full, fewer) = (view("a", &all), view("a", &["a", "b", "c"]));
        for id in &targets {
            let before = full.probers(id);
            let after = fewer.probers(id);
            if before.contains(&"d") {
                assert_eq!(after.iter().filter(|m| before.contains(m)).count(), 1);
            } else {
                assert_eq!(before, after);
            }
        }
        // K at least the members: everyone probes everything.
        assert!(Assignment::new("a", names(&["b"]), 2).probes(&targets[0]));
        assert!(Assignment::new("a", Vec::new(), 1).probes(&targets[0]));
    }
}
