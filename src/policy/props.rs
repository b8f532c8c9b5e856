//! Property tests of the policies (proptest): whatever the targets, weights, priorities
//! and health, the invariants the issue lists hold.

use proptest::prelude::*;

use super::{
    Candidate, PoolPolicy,
    choose::{AppPolicy, ClientView, FamilyView, Picked, PolicyKind, choose},
    mix, stable_hash, weighted,
};
use crate::geo::Location;

/// (weight, priority, up) per target.
fn targets() -> impl Strategy<Value = Vec<(u32, u32, bool)>> {
    prop::collection::vec((0u32..100, 1u32..4, any::<bool>()), 1..12)
}

fn kind() -> impl Strategy<Value = PolicyKind> {
    prop_oneof![
        Just(PolicyKind::All),
        Just(PolicyKind::Failover),
        Just(PolicyKind::Weighted),
    ]
}

fn candidates(ts: &[(u32, u32, bool)]) -> Vec<Candidate> {
    ts.iter()
        .enumerate()
        .filter(|(_, t)| t.2)
        .map(|(i, &(weight, priority, _))| Candidate {
            target: i,
            weight,
            priority,
            coordinates: None,
            key: stable_hash(format!("c{i}").as_bytes()),
        })
        .collect()
}

fn app(kind: PolicyKind, max: usize, answers: usize, sticky: bool) -> AppPolicy {
    AppPolicy {
        kind,
        pool_policy: match kind {
            PolicyKind::Failover => PoolPolicy::Failover,
            PolicyKind::Weighted => PoolPolicy::Weighted {
                answers,
                sticky,
                min_healthy_fraction: 0.0,
            },
            _ => PoolPolicy::All,
        },
        max_answers: max,
        fallback_policy: PoolPolicy::All,
        pools: Vec::new(),
        rules: Vec::new(),
        ignore_ecs: false,
    }
}

proptest! {
    #[test]
    fn only_healthy_targets_never_more_than_max(
        ts in targets(),
        kind in kind(),
        max in 1usize..6,
        answers in 1usize..6,
        sticky in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let up = candidates(&ts);
        let total: u64 = ts.iter().map(|t| u64::from(t.0)).sum();
        let view = FamilyView { up: &up, total_weight: total, pools: &[], all_down: up.is_empty() };
        let p = app(kind, max, answers.min(max), sticky);
        let locate = Location::default;
        let client = ClientView { sticky_key: seed, sticky_scope: 24, locate: &locate };
        let mut s = seed;
        let ch = choose(&p, &view, &client, &mut || { s = mix(s, 1); s });
        // Something up (with weight, for weighted) always answers something.
        let eligible = up.iter().any(|c| kind != PolicyKind::Weighted || c.weight > 0);
        match ch.picked {
            Picked::Fallback { .. } => prop_assert!(!eligible, "fallback while an eligible target is up"),
            Picked::Targets(t) => {
                prop_assert!(t.len() <= max);
                for i in &t {
                    prop_assert!(ts[*i].2, "target {i} is down");
                }
                let mut dedup = t.clone();
                dedup.sort_unstable();
                dedup.dedup();
                prop_assert_eq!(dedup.len(), t.len(), "a target twice");
                prop_assert!(!t.is_empty(), "eligible targets up but nothing answered");
            }
        }
    }

    #[test]
    fn failover_never_skips_a_healthy_better_group(ts in targets(), seed in any::<u64>()) {
        let up = candidates(&ts);
        let view = FamilyView { up: &up, total_weight: 1, pools: &[], all_down: up.is_empty() };
        let locate = Location::default;
        let client = ClientView { sticky_key: 0, sticky_scope: 24, locate: &locate };
        let ch = choose(&app(PolicyKind::Failover, 8, 1, false), &view, &client, &mut || seed);
        if let Picked::Targets(t) = ch.picked {
            let best = up.iter().map(|c| c.priority).min();
            for i in t {
                prop_assert_eq!(Some(ts[i].1), best);
            }
        }
    }

    #[test]
    fn sticky_moves_only_the_share_that_changed(
        weights in prop::collection::vec(1u32..50, 2..6),
        which in any::<prop::sample::Index>(),
        new_weight in 1u32..50,
    ) {
        let which = which.index(weights.len());
        let cs = |ws: &[u32]| -> Vec<Candidate> {
            ws.iter().enumerate().map(|(i, &w)| Candidate {
                target: i, weight: w, priority: 1, coordinates: None,
                key: stable_hash(format!("c{i}").as_bytes()),
            }).collect()
        };
        let before = cs(&weights);
        let mut changed = weights.clone();
        changed[which] = new_weight;
        let after = cs(&changed);
        let total_before: u32 = weights.iter().sum();
        let total_after: u32 = changed.iter().sum();
        let share = |w: u32, t: u32| f64::from(w) / f64::from(t);
        let expected = (share(new_weight, total_after) - share(weights[which], total_before)).abs();
        let n = 4000u64;
        let mut moved = 0u64;
        for client in 0..n {
            let key = mix(client, 0xfeed);
            let (mut a, mut b) = (super::Picks::new(), super::Picks::new());
            weighted::pick_sticky(&before, 1, key, &mut a);
            weighted::pick_sticky(&after, 1, key, &mut b);
            if a != b {
                moved += 1;
                // Every move involves the changed target.
                prop_assert!(a[0] == which || b[0] == which, "{a:?} -> {b:?}");
            }
        }
        let moved = moved as f64 / n as f64;
        prop_assert!(moved <= expected + 0.04, "moved {moved} > expected {expected}");
    }
}
