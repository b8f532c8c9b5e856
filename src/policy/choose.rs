//! Composing the policies for one query: geo rules → pools → pool policy, with the
//! all-down fallback applied to every policy.

use super::{
    Candidate, Picks, PoolPolicy, all, failover,
    geo::{Rule, matching_rule},
    nearest, weighted,
};
use crate::geo::Location;

/// The app-level policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    All,
    Failover,
    Weighted,
    Geo,
    Nearest,
}

impl PolicyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::All => "all",
            PolicyKind::Failover => "failover",
            PolicyKind::Weighted => "weighted",
            PolicyKind::Geo => "geo",
            PolicyKind::Nearest => "nearest",
        }
    }
}

impl std::fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A named group of an app's targets with its own policy (geo).
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub name: String,
    /// Target indices of the app.
    pub targets: Vec<usize>,
    pub policy: PoolPolicy,
}

/// Everything about how one app chooses its answer.
#[derive(Debug, Clone, PartialEq)]
pub struct AppPolicy {
    pub kind: PolicyKind,
    /// The policy over all targets (all / failover / weighted apps).
    pub pool_policy: PoolPolicy,
    pub max_answers: usize,
    /// Nearest: used when the client's coordinates are unknown.
    pub fallback_policy: PoolPolicy,
    pub pools: Vec<Pool>,
    pub rules: Vec<Rule>,
    /// Locate by the resolver address even when the query has ECS.
    pub ignore_ecs: bool,
}

/// What one family (A or AAAA) of an app offers right now.
#[derive(Debug, Clone, Copy)]
pub struct FamilyView<'a> {
    /// Up targets with addresses of the family.
    pub up: &'a [Candidate],
    /// Weight of every target of the family that is not drained.
    pub total_weight: u64,
    /// Per pool: its up candidates and total weight.
    pub pools: &'a [(Vec<Candidate>, u64)],
    /// No target of the app is up at all.
    pub all_down: bool,
}

/// What is known of the client, computed only if the policy asks.
pub struct ClientView<'a> {
    /// Hash of the client subnet (ECS, or the resolver address masked to /24 or /56).
    pub sticky_key: u64,
    /// The prefix length that subnet was masked to.
    pub sticky_scope: u8,
    pub locate: &'a dyn Fn() -> Location,
}

/// The policy's decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Picked {
    /// Answer these targets (empty: NODATA for this family).
    Targets(Picks),
    /// No eligible target is up: apply the app's fallback, over all its targets or, for a
    /// geofenced rule, only over that rule's pools.
    Fallback { rule: Option<usize> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub picked: Picked,
    /// The ECS scope of this answer: `Some` when it depends on the client's subnet.
    pub scope: Option<u8>,
    /// The location that decided (geo, nearest), for explanations.
    pub location: Option<Location>,
    /// The geo rule that matched and the pool that answered.
    pub rule: Option<usize>,
    pub pool: Option<usize>,
}

impl Choice {
    fn targets(targets: Picks) -> Self {
        Self {
            picked: Picked::Targets(targets),
            scope: None,
            location: None,
            rule: None,
            pool: None,
        }
    }
}

/// Runs a pool policy over `candidates`; returns the sticky scope if it used the subnet.
fn run(
    policy: PoolPolicy,
    candidates: &[Candidate],
    total_weight: u64,
    max: usize,
    client: &ClientView<'_>,
    random: &mut dyn FnMut() -> u64,
    out: &mut Picks,
) -> Option<u8> {
    let rotation = random() as usize;
    match policy {
        PoolPolicy::All => {
            all::pick(candidates, rotation, max, out);
            None
        }
        PoolPolicy::Failover => {
            failover::pick(candidates, rotation, max, out);
            None
        }
        PoolPolicy::Weighted {
            answers,
            sticky,
            min_healthy_fraction,
        } => {
            weighted::pick(
                candidates,
                total_weight,
                answers,
                sticky.then_some(client.sticky_key),
                min_healthy_fraction,
                rotation,
                max,
                &mut *random,
                out,
            );
            sticky.then_some(client.sticky_scope)
        }
    }
}

/// Chooses the targets of one app for one query.
pub fn choose(
    policy: &AppPolicy,
    view: &FamilyView<'_>,
    client: &ClientView<'_>,
    random: &mut dyn FnMut() -> u64,
) -> Choice {
    if view.all_down {
        return Choice {
            picked: Picked::Fallback { rule: None },
            ..Choice::targets(Picks::new())
        };
    }
    let max = policy.max_answers;
    let mut out = Picks::new();
    match policy.kind {
        PolicyKind::All | PolicyKind::Failover | PolicyKind::Weighted => {
            let scope = run(
                policy.pool_policy,
                view.up,
                view.total_weight,
                max,
                client,
                random,
                &mut out,
            );
            if out.is_empty() && !view.up.is_empty() {
                // Targets are up but none can be chosen (weighted, all at weight 0): that
                // is "nothing eligible is up", so the fallback applies.
                return Choice {
                    picked: Picked::Fallback { rule: None },
                    scope,
                    ..Choice::targets(Picks::new())
                };
            }
            Choice {
                scope,
                ..Choice::targets(out)
            }
        }
        PolicyKind::Nearest => {
            let location = (client.locate)();
            let mut scope = location.db_scope;
            if let Some(coordinates) = location.coordinates {
                nearest::pick(view.up, coordinates, &mut out);
            }
            if out.is_empty() {
                let sticky = run(
                    policy.fallback_policy,
                    view.up,
                    view.total_weight,
                    max,
                    client,
                    random,
                    &mut out,
                );
                scope = scope.max(sticky.unwrap_or(0));
            }
            Choice {
                scope: Some(scope),
                location: Some(location),
                ..Choice::targets(out)
            }
        }
        PolicyKind::Geo => {
            let location = (client.locate)();
            // The answer depends on the region table and the database alike (a rule that
            // did not match also decided), so the scope must hold for both.
            let mut scope = location.region_scope.max(location.db_scope);
            let Some((rule_index, rule)) = matching_rule(&policy.rules, &location) else {
                all::pick(view.up, random() as usize, max, &mut out);
                return Choice {
                    scope: Some(scope),
                    location: Some(location),
                    ..Choice::targets(out)
                };
            };
            for &p in &rule.pools {
                let (candidates, total) = &view.pools[p];
                if candidates.is_empty() {
                    continue;
                }
                out.clear();
                if let Some(s) = run(
                    policy.pools[p].policy,
                    candidates,
                    *total,
                    max,
                    client,
                    random,
                    &mut out,
                ) {
                    scope = scope.max(s);
                }
                if out.is_empty() {
                    continue; // nothing choosable in this pool (weights 0): the next one
                }
                return Choice {
                    picked: Picked::Targets(out),
                    scope: Some(scope),
                    location: Some(location),
                    rule: Some(rule_index),
                    pool: Some(p),
                };
            }
            let picked = if rule.geofence {
                Picked::Fallback {
                    rule: Some(rule_index),
                }
            } else {
                // Its pools are all down and it is not fenced: any healthy target.
                all::pick(view.up, random() as usize, max, &mut out);
                Picked::Targets(out)
            };
            Choice {
                picked,
                scope: Some(scope),
                location: Some(location),
                rule: Some(rule_index),
                pool: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{geo::Code, policy::geo::Matcher};

    fn c(target: usize, weight: u32, priority: u32) -> Candidate {
        Candidate {
            target,
            weight,
            priority,
            coordinates: None,
            key: crate::policy::stable_hash(&[target as u8]),
        }
    }

    fn policy(kind: PolicyKind) -> AppPolicy {
        AppPolicy {
            kind,
            pool_policy: PoolPolicy::All,
            max_answers: 8,
            fallback_policy: PoolPolicy::All,
            pools: Vec::new(),
            rules: Vec::new(),
            ignore_ecs: false,
        }
    }

    fn client<'a>(locate: &'a dyn Fn() -> Location) -> ClientView<'a> {
        ClientView {
            sticky_key: 7,
            sticky_scope: 24,
            locate,
        }
    }

    fn targets(choice: &Choice) -> Vec<usize> {
        match &choice.picked {
            Picked::Targets(t) => {
                let mut t = t.to_vec();
                t.sort_unstable();
                t
            }
            other => panic!("expected targets, got {other:?}"),
        }
    }

    /// Targets 0, 1 in pool "eu" (0), 2, 3 in pool "us" (1); EU clients → [eu, us],
    /// fenced DE clients → [eu] only; everyone else → [us, eu].
    fn geo_policy() -> AppPolicy {
        AppPolicy {
            pools: vec![
                Pool {
                    name: "eu".into(),
                    targets: vec![0, 1],
                    policy: PoolPolicy::All,
                },
                Pool {
                    name: "us".into(),
                    targets: vec![2, 3],
                    policy: PoolPolicy::All,
                },
            ],
            rules: vec![
                Rule {
                    matchers: vec![Matcher::Country("DE".into())],
                    pools: vec![0],
                    geofence: true,
                },
                Rule {
                    matchers: vec![Matcher::Continent("EU".into())],
                    pools: vec![0, 1],
                    geofence: false,
                },
                Rule {
                    matchers: vec![Matcher::Default],
                    pools: vec![1, 0],
                    geofence: false,
                },
            ],
            ..policy(PolicyKind::Geo)
        }
    }

    fn located(country: &str, continent: &str) -> Location {
        Location {
            country: Code::new(country),
            continent: Code::new(continent),
            db_scope: 24,
            region_scope: 8,
            ..Location::default()
        }
    }

    #[test]
    fn geo_first_healthy_pool_of_the_matching_rule() {
        let p = geo_policy();
        let all = [c(0, 1, 1), c(1, 1, 1), c(2, 1, 1), c(3, 1, 1)];
        let pools = vec![(vec![all[0], all[1]], 2), (vec![all[2], all[3]], 2)];
        let view = FamilyView {
            up: &all,
            total_weight: 4,
            pools: &pools,
            all_down: false,
        };
        let fr = || located("FR", "EU");
        let ch = choose(&p, &view, &client(&fr), &mut || 0);
        assert_eq!(targets(&ch), [0, 1]);
        assert_eq!((ch.rule, ch.pool, ch.scope), (Some(1), Some(0), Some(24)));
        let us = || located("US", "NA");
        let ch = choose(&p, &view, &client(&us), &mut || 0);
        assert_eq!(targets(&ch), [2, 3]);

        // EU pool down: FR (not fenced) goes to the US pool; DE (fenced) gets the fallback
        // restricted to its pools.
        let pools_eu_down = vec![(vec![], 2), (vec![all[2], all[3]], 2)];
        let up = [all[2], all[3]];
        let view = FamilyView {
            up: &up,
            total_weight: 4,
            pools: &pools_eu_down,
            all_down: false,
        };
        assert_eq!(targets(&choose(&p, &view, &client(&fr), &mut || 0)), [2, 3]);
        let de = || located("DE", "EU");
        let ch = choose(&p, &view, &client(&de), &mut || 0);
        assert_eq!(ch.picked, Picked::Fallback { rule: Some(0) });
    }

    #[test]
    fn all_down_is_the_app_fallback_for_every_policy() {
        let nowhere = Location::default;
        for kind in [
            PolicyKind::All,
            PolicyKind::Failover,
            PolicyKind::Weighted,
            PolicyKind::Geo,
            PolicyKind::Nearest,
        ] {
            let p = AppPolicy {
                kind,
                ..geo_policy()
            };
            let view = FamilyView {
                up: &[],
                total_weight: 4,
                pools: &[(vec![], 2), (vec![], 2)],
                all_down: true,
            };
            let ch = choose(&p, &view, &client(&nowhere), &mut || 0);
            assert_eq!(ch.picked, Picked::Fallback { rule: None }, "{kind}");
        }
    }

    #[test]
    fn nearest_uses_coordinates_then_its_fallback_policy() {
        let mut fra = c(0, 1, 1);
        fra.coordinates = Some((50.1, 8.7));
        let mut iad = c(1, 1, 1);
        iad.coordinates = Some((39.0, -77.5));
        let up = [fra, iad];
        let view = FamilyView {
            up: &up,
            total_weight: 2,
            pools: &[],
            all_down: false,
        };
        let p = AppPolicy {
            fallback_policy: PoolPolicy::Failover,
            ..policy(PolicyKind::Nearest)
        };
        let paris = || Location {
            coordinates: Some((48.9, 2.35)),
            db_scope: 20,
            ..Location::default()
        };
        let ch = choose(&p, &view, &client(&paris), &mut || 0);
        assert_eq!((targets(&ch), ch.scope), (vec![0], Some(20)));
        let unknown = || Location {
            db_scope: 12,
            ..Location::default()
        };
        let ch = choose(&p, &view, &client(&unknown), &mut || 0);
        assert_eq!((targets(&ch), ch.scope), (vec![0, 1], Some(12)));
    }

    #[test]
    fn weighted_with_only_weight_zero_up_is_the_fallback() {
        let up = [c(1, 0, 1)];
        let view = FamilyView {
            up: &up,
            total_weight: 1,
            pools: &[],
            all_down: false,
        };
        let p = AppPolicy {
            pool_policy: PoolPolicy::Weighted {
                answers: 1,
                sticky: false,
                min_healthy_fraction: 0.0,
            },
            ..policy(PolicyKind::Weighted)
        };
        let nowhere = Location::default;
        let ch = choose(&p, &view, &client(&nowhere), &mut || 3);
        assert_eq!(ch.picked, Picked::Fallback { rule: None });
    }

    #[test]
    fn scopes_follow_what_the_answer_depends_on() {
        let up = [c(0, 3, 1), c(1, 1, 1)];
        let view = FamilyView {
            up: &up,
            total_weight: 4,
            pools: &[],
            all_down: false,
        };
        let never = || -> Location { panic!("location-independent policies never locate") };
        for kind in [PolicyKind::All, PolicyKind::Failover, PolicyKind::Weighted] {
            let p = AppPolicy {
                pool_policy: if kind == PolicyKind::Weighted {
                    PoolPolicy::Weighted {
                        answers: 1,
                        sticky: false,
                        min_healthy_fraction: 0.0,
                    }
                } else {
                    PoolPolicy::All
                },
                ..policy(kind)
            };
            assert_eq!(choose(&p, &view, &client(&never), &mut || 5).scope, None);
        }
        let sticky = AppPolicy {
            pool_policy: PoolPolicy::Weighted {
                answers: 1,
                sticky: true,
                min_healthy_fraction: 0.0,
            },
            ..policy(PolicyKind::Weighted)
        };
        assert_eq!(
            choose(&sticky, &view, &client(&never), &mut || 5).scope,
            Some(24)
        );
    }
}
