//! The query path's random numbers: a per-thread SplitMix64 stream.
//!
//! Cheap (a few ns, no locking, no syscalls) and, for tests, reseedable: the fast and the
//! full path must make the same policy choice for the same query when compared, so both
//! draw from here and a test sets the same seed before each.

use std::cell::Cell;

thread_local! {
    static STATE: Cell<u64> = Cell::new(rand::random::<u64>() | 1);
}

/// The next random number of this thread's stream.
pub fn next_u64() -> u64 {
    STATE.with(|s| {
        let x = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(x);
        super::mix(x, 0)
    })
}

/// Reseeds this thread's stream (tests comparing two paths).
pub fn seed(seed: u64) {
    STATE.with(|s| s.set(seed));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reseeding_repeats_the_stream() {
        seed(42);
        let a: Vec<u64> = (0..4).map(|_| next_u64()).collect();
        seed(42);
        let b: Vec<u64> = (0..4).map(|_| next_u64()).collect();
        assert_eq!(a, b);
        assert_ne!(a[0], a[1]);
    }
}
