//! Traffic policies: pure functions from the healthy candidates (and, where the policy
//! needs them, a random number, the client's subnet or its location) to the targets to
//! answer. No I/O, no clock, no shared state: each is unit-tested alone and composed by
//! [`choose`].

pub mod all;
pub mod choose;
pub mod failover;
pub mod geo;
pub mod nearest;
#[cfg(test)]
mod props;
pub mod rng;
pub mod weighted;

pub use choose::{Choice, ClientView, choose};

/// The targets a policy picked, inline up to 8 (no allocation per query for any app with
/// up to 8 answers; more spill to the heap).
pub type Picks = smallvec::SmallVec<[usize; 8]>;

/// A target a policy may choose: up, and with addresses of the asked family.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Index of the target in its app.
    pub target: usize,
    pub weight: u32,
    pub priority: u32,
    pub coordinates: Option<(f64, f64)>,
    /// A stable hash of the cluster name, for rendezvous hashing (stable across reloads
    /// and target reordering).
    pub key: u64,
}

/// How a pool (or an app without pools) spreads traffic over its candidates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PoolPolicy {
    All,
    Failover,
    Weighted {
        answers: usize,
        sticky: bool,
        min_healthy_fraction: f64,
    },
}

/// A stable 64-bit hash (FNV-1a): used for rendezvous keys, so it must not change between
/// runs or builds (std's hasher is randomly seeded).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A strong 64-bit mix of two values (SplitMix64 finaliser over their combination).
pub fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
