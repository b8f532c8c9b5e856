//! `weighted`: targets chosen in proportion to their weight, at random or sticky.
//!
//! Sticky choice is weighted rendezvous hashing: each (client subnet, target) pair gets a
//! pseudo-random u in (0, 1] and the score −ln(u) / weight; the lowest scores win. A client
//! keeps its target as long as it is healthy, and changing one target's weight only moves
//! the clients whose winner changes because of it — no reshuffle of everyone else.

use super::{Candidate, Picks, all, mix};

/// Random weighted choice of `answers` distinct candidates (weight 0 never chosen).
pub fn pick_random(
    candidates: &[Candidate],
    answers: usize,
    mut random: impl FnMut() -> u64,
    out: &mut Picks,
) {
    if answers == 1 {
        // The common case, without copying the candidates.
        let total: u64 = candidates.iter().map(|c| u64::from(c.weight)).sum();
        if total == 0 {
            return;
        }
        let mut r = random() % total;
        for c in candidates {
            let w = u64::from(c.weight);
            if r < w {
                out.push(c.target);
                return;
            }
            r -= w;
        }
        return;
    }
    let mut pool: smallvec::SmallVec<[Candidate; 8]> = candidates
        .iter()
        .filter(|c| c.weight > 0)
        .copied()
        .collect();
    for _ in 0..answers.min(pool.len()) {
        let total: u64 = pool.iter().map(|c| u64::from(c.weight)).sum();
        // Modulo bias is below total / 2^64: negligible for weights ≤ 10^6.
        let mut r = random() % total;
        let i = pool
            .iter()
            .position(|c| {
                let w = u64::from(c.weight);
                if r < w {
                    true
                } else {
                    r -= w;
                    false
                }
            })
            .unwrap_or(pool.len() - 1);
        out.push(pool.swap_remove(i).target);
    }
}

/// Sticky weighted choice for the client subnet hashed to `client`.
pub fn pick_sticky(candidates: &[Candidate], answers: usize, client: u64, out: &mut Picks) {
    let score = |c: &Candidate| {
        // u in (0, 1]: 53 random bits, never 0.
        let u = ((mix(client, c.key) >> 11) + 1) as f64 / (1u64 << 53) as f64;
        -u.ln() / f64::from(c.weight)
    };
    if answers == 1 {
        // The common case: the lowest score, without sorting.
        let best = candidates
            .iter()
            .filter(|c| c.weight > 0)
            .map(|c| (score(c), c.target))
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        out.extend(best.map(|(_, t)| t));
        return;
    }
    let mut scored: smallvec::SmallVec<[(f64, usize); 8]> = candidates
        .iter()
        .filter(|c| c.weight > 0)
        .map(|c| (score(c), c.target))
        .collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    out.extend(scored.iter().take(answers).map(|&(_, t)| t));
}

/// The weighted policy: `min_healthy_fraction` of `total_weight` must be healthy for a
/// weighted pick; below it, every healthy target is answered (capacity is short: spread
/// the load rather than concentrate it).
#[allow(clippy::too_many_arguments)]
pub fn pick(
    candidates: &[Candidate],
    total_weight: u64,
    answers: usize,
    sticky: Option<u64>,
    min_healthy_fraction: f64,
    rotation: usize,
    max: usize,
    random: impl FnMut() -> u64,
    out: &mut Picks,
) {
    let healthy: u64 = candidates.iter().map(|c| u64::from(c.weight)).sum();
    if total_weight > 0 && (healthy as f64) < min_healthy_fraction * total_weight as f64 {
        all::pick(candidates, rotation, max, out);
        return;
    }
    match sticky {
        Some(client) => pick_sticky(candidates, answers, client, out),
        None => pick_random(candidates, answers, random, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(target: usize, weight: u32) -> Candidate {
        Candidate {
            target,
            weight,
            priority: 1,
            coordinates: None,
            key: crate::policy::stable_hash(format!("cluster{target}").as_bytes()),
        }
    }

    /// A deterministic generator for the statistical tests.
    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut s = seed;
        move || {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            mix(s, 0)
        }
    }

    fn shares(
        weights: &[u32],
        calls: usize,
        mut pick1: impl FnMut(&[Candidate]) -> usize,
    ) -> Vec<f64> {
        let cs: Vec<Candidate> = weights.iter().enumerate().map(|(i, &w)| c(i, w)).collect();
        let mut counts = vec![0usize; weights.len()];
        for _ in 0..calls {
            counts[pick1(&cs)] += 1;
        }
        counts.iter().map(|&n| n as f64 / calls as f64).collect()
    }

    fn assert_within(shares: &[f64], weights: &[u32], tolerance: f64) {
        let total: u32 = weights.iter().sum();
        for (s, &w) in shares.iter().zip(weights) {
            let expected = f64::from(w) / f64::from(total);
            assert!(
                (s - expected).abs() <= tolerance,
                "share {s} vs {expected} ({shares:?})"
            );
        }
    }

    #[test]
    fn random_split_within_one_point_fixed_seed() {
        for weights in [&[95u32, 5][..], &[70, 20, 10]] {
            let mut r = rng(42);
            let s = shares(weights, 100_000, |cs| {
                let mut out = Picks::new();
                pick_random(cs, 1, &mut r, &mut out);
                out[0]
            });
            assert_within(&s, weights, 0.01);
        }
    }

    #[test]
    fn random_split_unseeded_passes_a_loose_chi_square() {
        // 100,000 draws, 2 degrees of freedom: chi-square above 40 has probability ~2e-9.
        let weights = [70u32, 20, 10];
        let mut thread = rand::rng();
        let s = shares(&weights, 100_000, |cs| {
            let mut out = Picks::new();
            pick_random(cs, 1, || rand::RngExt::random::<u64>(&mut thread), &mut out);
            out[0]
        });
        let chi: f64 = s
            .iter()
            .zip(weights)
            .map(|(share, w)| {
                let expected = f64::from(w) / 100.0 * 100_000.0;
                let observed = share * 100_000.0;
                (observed - expected).powi(2) / expected
            })
            .sum();
        assert!(chi < 40.0, "chi-square {chi} for {s:?}");
    }

    #[test]
    fn sticky_split_follows_weights_over_many_clients() {
        let weights = [70u32, 20, 10];
        let mut client = 0u64;
        let s = shares(&weights, 100_000, |cs| {
            client += 1;
            let mut out = Picks::new();
            pick_sticky(cs, 1, mix(client, 7), &mut out);
            out[0]
        });
        assert_within(&s, &weights, 0.01);
    }

    #[test]
    fn sticky_is_stable_and_moves_only_what_it_must() {
        let before: Vec<Candidate> = [50, 30, 20]
            .iter()
            .enumerate()
            .map(|(i, &w)| c(i, w))
            .collect();
        // Target 2 goes from 20 to 40: its share goes from 20% to 1/3; only clients moving
        // *to* it should change (≈ 13.3% of all), none between 0 and 1.
        let mut after = before.clone();
        after[2].weight = 40;
        let (mut moved, mut wrong) = (0, 0);
        let n = 100_000u64;
        for client in 0..n {
            let key = mix(client, 99);
            let (mut a, mut b) = (Picks::new(), Picks::new());
            pick_sticky(&before, 1, key, &mut a);
            pick_sticky(&after, 1, key, &mut b);
            let mut again = Picks::new();
            pick_sticky(&before, 1, key, &mut again);
            assert_eq!(a, again, "same client, same answer");
            if a != b {
                moved += 1;
                if b[0] != 2 {
                    wrong += 1;
                }
            }
        }
        assert_eq!(
            wrong, 0,
            "clients only move to the target whose weight grew"
        );
        let share = moved as f64 / n as f64;
        assert!((share - (1.0 / 3.0 - 0.2)).abs() < 0.01, "moved {share}");
    }

    #[test]
    fn weight_zero_is_never_chosen_and_answers_are_distinct() {
        let cs = [c(0, 0), c(1, 5), c(2, 5)];
        let mut r = rng(1);
        for _ in 0..1000 {
            let mut out = Picks::new();
            pick_random(&cs, 3, &mut r, &mut out);
            out.sort_unstable();
            assert_eq!(out[..], [1, 2]);
            let mut out = Picks::new();
            pick_sticky(&cs, 3, r(), &mut out);
            out.sort_unstable();
            assert_eq!(out[..], [1, 2]);
        }
    }

    #[test]
    fn below_min_healthy_fraction_answers_every_healthy_target() {
        // Total configured weight 100; only 30 of it is healthy.
        let cs = [c(1, 20), c(2, 10)];
        let mut out = Picks::new();
        pick(&cs, 100, 1, None, 0.5, 0, 8, rng(3), &mut out);
        out.sort_unstable();
        assert_eq!(out[..], [1, 2]);
        let mut out = Picks::new();
        pick(&cs, 100, 1, None, 0.25, 0, 8, rng(3), &mut out);
        assert_eq!(out.len(), 1, "30% healthy ≥ 25%: a weighted pick");
    }
}
