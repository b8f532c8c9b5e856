//! `failover`: the healthy targets of the best (lowest) priority group that has any.

use super::{Candidate, Picks, all};

pub fn pick(candidates: &[Candidate], rotation: usize, max: usize, out: &mut Picks) {
    let Some(best) = candidates.iter().map(|c| c.priority).min() else {
        return;
    };
    let group: smallvec::SmallVec<[Candidate; 8]> = candidates
        .iter()
        .filter(|c| c.priority == best)
        .copied()
        .collect();
    all::pick(&group, rotation, max, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(target: usize, priority: u32) -> Candidate {
        Candidate {
            target,
            weight: 1,
            priority,
            coordinates: None,
            key: target as u64,
        }
    }

    #[test]
    fn best_group_only() {
        let mut out = Picks::new();
        pick(&[c(0, 2), c(1, 1), c(2, 1), c(3, 3)], 0, 8, &mut out);
        out.sort_unstable();
        assert_eq!(out[..], [1, 2]);
        out.clear();
        // The primary group is gone (not a candidate): the next one answers.
        pick(&[c(0, 2), c(3, 3)], 0, 8, &mut out);
        assert_eq!(out[..], [0]);
    }
}
