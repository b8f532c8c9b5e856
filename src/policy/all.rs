//! `all`: every candidate, rotated per query so no address is always first.

use super::{Candidate, Picks};

/// Appends up to `max` candidates, starting at `rotation` (mod the count).
pub fn pick(candidates: &[Candidate], rotation: usize, max: usize, out: &mut Picks) {
    let n = candidates.len();
    if n == 0 {
        return;
    }
    let start = rotation % n;
    out.extend((0..n.min(max)).map(|i| candidates[(start + i) % n].target));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(target: usize) -> Candidate {
        Candidate {
            target,
            weight: 1,
            priority: 1,
            coordinates: None,
            key: target as u64,
        }
    }

    #[test]
    fn rotates_and_caps() {
        let cs = [c(0), c(1), c(2)];
        let mut out = Picks::new();
        pick(&cs, 1, 8, &mut out);
        assert_eq!(out[..], [1, 2, 0]);
        out.clear();
        pick(&cs, 5, 2, &mut out);
        assert_eq!(out[..], [2, 0]);
        out.clear();
        pick(&[], 3, 8, &mut out);
        assert!(out.is_empty());
    }
}
