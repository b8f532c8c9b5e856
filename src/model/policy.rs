//! Validation of an app's policy settings (`policy`, `max_answers`, `answers`, `sticky`,
//! `min_healthy_fraction`, `fallback_policy`, `pools`, `rules`) into an [`AppPolicy`].

use std::collections::HashMap;

use crate::{
    config::{Errors, file::AppConfig},
    geo::Geo,
    policy::{
        PoolPolicy,
        choose::{AppPolicy, PolicyKind, Pool},
        geo::{Matcher, Rule},
    },
};

use super::{ClusterModel, TargetModel};

pub const DEFAULT_MAX_ANSWERS: usize = 8;
const MAX_MAX_ANSWERS: u32 = 256;

fn parse_kind(s: &str) -> Result<PolicyKind, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "all" => Ok(PolicyKind::All),
        "failover" => Ok(PolicyKind::Failover),
        "weighted" => Ok(PolicyKind::Weighted),
        "geo" => Ok(PolicyKind::Geo),
        "nearest" => Ok(PolicyKind::Nearest),
        other => Err(format!(
            "unknown policy {other:?} (expected all, failover, weighted, geo or nearest)"
        )),
    }
}

/// A pool-level policy name with the app's weighted options.
fn parse_pool_policy(name: &str, weighted: PoolPolicy) -> Result<PoolPolicy, String> {
    match name.trim().to_ascii_lowercase().as_str() {
        "all" => Ok(PoolPolicy::All),
        "failover" => Ok(PoolPolicy::Failover),
        "weighted" => Ok(weighted),
        other => Err(format!(
            "unknown pool policy {other:?} (expected all, weighted or failover)"
        )),
    }
}

/// Validates the policy of app `a` (at `path`), whose targets are `targets`.
pub fn validate(
    a: &AppConfig,
    path: &str,
    targets: &[TargetModel],
    clusters: &[ClusterModel],
    geo: &Geo,
    errors: &mut Errors,
) -> Option<AppPolicy> {
    let kind = parse_kind(&a.policy)
        .map_err(|e| errors.push(format!("{path}.policy"), e))
        .ok()?;
    let max_answers = match a.max_answers {
        None => DEFAULT_MAX_ANSWERS,
        Some(n) if (1..=MAX_MAX_ANSWERS).contains(&n) => n as usize,
        Some(n) => {
            errors.push(
                format!("{path}.max_answers"),
                format!("{n} is out of range 1..={MAX_MAX_ANSWERS}"),
            );
            DEFAULT_MAX_ANSWERS
        }
    };
    let answers = match a.answers {
        None => 1,
        Some(n) if n >= 1 && n as usize <= max_answers => n as usize,
        Some(n) => {
            errors.push(
                format!("{path}.answers"),
                format!("{n} is out of range 1..={max_answers} (max_answers)"),
            );
            1
        }
    };
    let min_healthy_fraction = match a.min_healthy_fraction {
        None => 0.0,
        Some(f) if (0.0..=1.0).contains(&f) => f,
        Some(f) => {
            errors.push(
                format!("{path}.min_healthy_fraction"),
                format!("{f} is out of range 0.0..=1.0"),
            );
            0.0
        }
    };
    let weighted = PoolPolicy::Weighted {
        answers,
        sticky: a.sticky,
        min_healthy_fraction,
    };
    let uses_weighted = kind == PolicyKind::Weighted
        || a.pools.iter().any(|p| {
            p.policy
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case("weighted"))
        })
        || a.fallback_policy
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case("weighted"));
    for (field, set) in [
        ("answers", a.answers.is_some()),
        ("sticky", a.sticky),
        ("min_healthy_fraction", a.min_healthy_fraction.is_some()),
    ] {
        if set && !uses_weighted {
            errors.push(
                format!("{path}.{field}"),
                format!("only applies to the weighted policy (this app's policy is {kind})"),
            );
        }
    }
    let pool_policy = match kind {
        PolicyKind::Failover => PoolPolicy::Failover,
        PolicyKind::Weighted => weighted,
        _ => PoolPolicy::All,
    };
    let fallback_policy = match &a.fallback_policy {
        None => PoolPolicy::All,
        Some(_) if kind != PolicyKind::Nearest => {
            errors.push(
                format!("{path}.fallback_policy"),
                "only applies to the nearest policy",
            );
            PoolPolicy::All
        }
        Some(name) => parse_pool_policy(name, weighted)
            .map_err(|e| errors.push(format!("{path}.fallback_policy"), e))
            .unwrap_or(PoolPolicy::All),
    };

    let target_of: HashMap<&str, usize> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| (clusters[t.cluster].name.as_str(), i))
        .collect();
    let mut pools = Vec::with_capacity(a.pools.len());
    let mut pool_index: HashMap<String, usize> = HashMap::new();
    for (i, p) in a.pools.iter().enumerate() {
        let ppath = format!("{path}.pools[{i}]");
        let name = p.name.trim().to_owned();
        if name.is_empty() {
            errors.push(format!("{ppath}.name"), "empty pool name");
        } else if pool_index.insert(name.clone(), i).is_some() {
            errors.push(format!("{ppath}.name"), format!("duplicate pool {name:?}"));
        }
        if p.clusters.is_empty() {
            errors.push(
                format!("{ppath}.clusters"),
                "at least one cluster is needed",
            );
        }
        let mut members = Vec::new();
        for (j, c) in p.clusters.iter().enumerate() {
            match target_of.get(c.trim()) {
                Some(&t) if members.contains(&t) => errors.push(
                    format!("{ppath}.clusters[{j}]"),
                    format!("cluster {c:?} is listed twice"),
                ),
                Some(&t) => members.push(t),
                None => errors.push(
                    format!("{ppath}.clusters[{j}]"),
                    format!("{c:?} is not one of this app's targets"),
                ),
            }
        }
        let policy = parse_pool_policy(p.policy.as_deref().unwrap_or("all"), weighted)
            .map_err(|e| errors.push(format!("{ppath}.policy"), e))
            .unwrap_or(PoolPolicy::All);
        pools.push(Pool {
            name,
            targets: members,
            policy,
        });
    }
    let mut rules = Vec::with_capacity(a.rules.len());
    for (i, r) in a.rules.iter().enumerate() {
        let rpath = format!("{path}.rules[{i}]");
        let mut matchers = Vec::new();
        for (j, m) in r.matches.to_vec().iter().enumerate() {
            match parse_matcher(m, geo) {
                Ok(m) => matchers.push(m),
                Err(e) => errors.push(format!("{rpath}.match[{j}]"), e),
            }
        }
        if matchers.is_empty() {
            errors.push(format!("{rpath}.match"), "at least one condition is needed");
        }
        if r.pools.is_empty() {
            errors.push(format!("{rpath}.pools"), "at least one pool is needed");
        }
        let mut rule_pools = Vec::new();
        for (j, name) in r.pools.iter().enumerate() {
            match pool_index.get(name.trim()) {
                Some(&p) => rule_pools.push(p),
                None => errors.push(
                    format!("{rpath}.pools[{j}]"),
                    format!("unknown pool {name:?}"),
                ),
            }
        }
        rules.push(Rule {
            matchers,
            pools: rule_pools,
            geofence: r.geofence,
        });
    }
    match kind {
        PolicyKind::Geo if rules.is_empty() => {
            errors.push(
                format!("{path}.rules"),
                "the geo policy needs at least one rule",
            );
        }
        PolicyKind::Geo => {}
        _ if !a.pools.is_empty() || !a.rules.is_empty() => errors.push(
            format!(
                "{path}.{}",
                if a.rules.is_empty() { "pools" } else { "rules" }
            ),
            format!("pools and rules only apply to the geo policy (this app's policy is {kind})"),
        ),
        _ => {}
    }
    if kind == PolicyKind::Nearest {
        if geo.db.is_none() {
            errors.push(
                format!("{path}.policy"),
                "the nearest policy needs client coordinates: set [geo] mmdb",
            );
        }
        if !targets
            .iter()
            .any(|t| clusters[t.cluster].coordinates.is_some())
        {
            errors.push(
                format!("{path}.targets"),
                "the nearest policy needs clusters with lat/lon",
            );
        }
    }
    warn_ignored_target_settings(a, path, kind, &pools, fallback_policy, errors);
    Some(AppPolicy {
        kind,
        pool_policy,
        max_answers,
        fallback_policy,
        pools,
        rules,
        ignore_ecs: a.ignore_ecs,
    })
}

/// Warns about every target `weight` or `priority` the app's policy never reads: such a
/// setting looks like it steers traffic (`policy = "all"` with 80/20 weights) while every
/// answer ignores it. Weights are read only by the weighted policy (the app's, a geo pool's
/// or the nearest policy's `fallback_policy`), priorities only by failover.
fn warn_ignored_target_settings(
    a: &AppConfig,
    path: &str,
    kind: PolicyKind,
    pools: &[Pool],
    fallback_policy: PoolPolicy,
    errors: &mut Errors,
) {
    let is_weighted = |p: PoolPolicy| matches!(p, PoolPolicy::Weighted { .. });
    let is_failover = |p: PoolPolicy| matches!(p, PoolPolicy::Failover);
    // Whether target `j` is ever chosen by a pool policy matching `uses`.
    let used = |j: usize, uses: &dyn Fn(PoolPolicy) -> bool, app_level: bool| match kind {
        PolicyKind::Geo => pools
            .iter()
            .any(|p| uses(p.policy) && p.targets.contains(&j)),
        PolicyKind::Nearest => uses(fallback_policy),
        _ => app_level,
    };
    let why = |what: &str, reader: &str| match kind {
        PolicyKind::Geo => format!(
            "is ignored: this target is in no {reader} pool of the geo policy, and only the \
             {reader} policy uses {what} (app {})",
            a.hostname
        ),
        PolicyKind::Nearest => format!(
            "is ignored: policy \"nearest\" uses {what} only with fallback_policy = \"{reader}\" \
             (app {})",
            a.hostname
        ),
        _ => format!(
            "is ignored: policy \"{kind}\" does not use {what}, only the {reader} policy does \
             (app {})",
            a.hostname
        ),
    };
    for (j, t) in a.targets.iter().enumerate() {
        if t.weight.is_some() && !used(j, &is_weighted, kind == PolicyKind::Weighted) {
            errors.warn(
                format!("{path}.targets[{j}].weight"),
                why("weights", "weighted"),
            );
        }
        if t.priority.is_some() && !used(j, &is_failover, kind == PolicyKind::Failover) {
            errors.warn(
                format!("{path}.targets[{j}].priority"),
                why("priorities", "failover"),
            );
        }
    }
}

fn parse_matcher(text: &str, geo: &Geo) -> Result<Matcher, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("default") {
        return Ok(Matcher::Default);
    }
    let Some((kind, value)) = t.split_once(':') else {
        return Err(format!(
            "invalid condition {t:?} (expected region:NAME, country:CC, continent:CC or default)"
        ));
    };
    let value = value.trim();
    let needs_db = |what: &str| {
        if geo.db.is_none() {
            Err(format!(
                "{what} conditions need a MaxMind database: set [geo] mmdb"
            ))
        } else {
            Ok(())
        }
    };
    match kind.trim().to_ascii_lowercase().as_str() {
        "region" => {
            if geo.region_names.iter().any(|r| &**r == value) {
                Ok(Matcher::Region(value.into()))
            } else {
                Err(format!("unknown region {value:?} (not in [geo] regions)"))
            }
        }
        "country" if value.len() == 2 && value.chars().all(|c| c.is_ascii_alphabetic()) => {
            needs_db("country")?;
            Ok(Matcher::Country(value.to_ascii_uppercase().into()))
        }
        "continent" if value.len() == 2 && value.chars().all(|c| c.is_ascii_alphabetic()) => {
            needs_db("continent")?;
            Ok(Matcher::Continent(value.to_ascii_uppercase().into()))
        }
        "country" | "continent" => Err(format!(
            "{value:?} is not a two-letter code (e.g. country:DE, continent:EU)"
        )),
        other => Err(format!(
            "unknown condition {other:?} (expected region, country, continent or default)"
        )),
    }
}
