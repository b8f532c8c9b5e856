//! `[[apps]]` validation.

use std::{collections::HashMap, fmt, time::Duration};

use super::{
    AppModel, ClusterModel, MAX_APP_TTL, ProbeModel, TargetModel, ZoneModel, names, zone_for,
};
use crate::config::{
    Errors,
    file::{AppConfig, ProbeConfig},
};

/// How an app's answer is chosen among its healthy targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// Every target's ingress addresses.
    All,
}

impl PolicyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::All => "all",
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Policies that are planned but not built yet: named so the error says so instead of
/// calling a documented policy "unknown".
const PLANNED_POLICIES: &[&str] = &["failover", "weighted", "geo", "nearest"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Http,
    Https,
    Tcp,
}

/// Largest weight accepted: keeps sums of many targets far from overflow.
const MAX_WEIGHT: u32 = 1_000_000;

pub fn validate(
    cfgs: &[AppConfig],
    zones: &[ZoneModel],
    clusters: &[ClusterModel],
    errors: &mut Errors,
) -> Vec<AppModel> {
    let cluster_index: HashMap<&str, usize> = clusters
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let mut hostnames: HashMap<hickory_proto::rr::Name, usize> = HashMap::new();
    let mut out = Vec::with_capacity(cfgs.len());
    for (i, a) in cfgs.iter().enumerate() {
        let path = format!("apps[{i}]");
        let hostname = match names::absolute(&a.hostname) {
            Ok(n) => n,
            Err(e) => {
                errors.push(format!("{path}.hostname"), e);
                continue;
            }
        };
        if let Some(first) = hostnames.insert(hostname.clone(), i) {
            errors.push(
                format!("{path}.hostname"),
                format!("duplicate hostname {hostname} (also apps[{first}])"),
            );
        }
        let zone = zone_for(zones, &hostname);
        if zone.is_none() && !zones.is_empty() {
            let list: Vec<String> = zones.iter().map(|z| z.origin.to_string()).collect();
            errors.push(
                format!("{path}.hostname"),
                format!(
                    "{hostname} is not inside any configured zone (zones: {})",
                    list.join(", ")
                ),
            );
        }
        if a.ttl > MAX_APP_TTL {
            errors.push(
                format!("{path}.ttl"),
                format!("{} is out of range 0..={MAX_APP_TTL}", a.ttl),
            );
        }
        let policy = match a.policy.trim().to_ascii_lowercase().as_str() {
            "all" => Some(PolicyKind::All),
            p if PLANNED_POLICIES.contains(&p) => {
                errors.push(
                    format!("{path}.policy"),
                    format!("policy {p:?} is not available in this version (available: all)"),
                );
                None
            }
            p => {
                errors.push(
                    format!("{path}.policy"),
                    format!("unknown policy {p:?} (available: all)"),
                );
                None
            }
        };
        let targets = validate_targets(a, &path, &cluster_index, errors);
        let probe = a
            .probe
            .as_ref()
            .and_then(|p| validate_probe(p, &format!("{path}.probe"), errors));
        if let (Some(zone), Some(policy)) = (zone, policy) {
            out.push(AppModel {
                index: i,
                hostname,
                zone,
                ttl: a.ttl,
                policy,
                targets,
                probe,
            });
        }
    }
    out
}

fn validate_targets(
    a: &AppConfig,
    path: &str,
    cluster_index: &HashMap<&str, usize>,
    errors: &mut Errors,
) -> Vec<TargetModel> {
    if a.targets.is_empty() {
        errors.push(format!("{path}.targets"), "at least one target is needed");
        return Vec::new();
    }
    let mut targets: Vec<TargetModel> = Vec::with_capacity(a.targets.len());
    let mut total_weight: u64 = 0;
    for (j, t) in a.targets.iter().enumerate() {
        let tpath = format!("{path}.targets[{j}]");
        let name = t.cluster.trim();
        let Some(&cluster) = cluster_index.get(name) else {
            let mut known: Vec<&str> = cluster_index.keys().copied().collect();
            known.sort_unstable();
            errors.push(
                format!("{tpath}.cluster"),
                format!("unknown cluster {name:?} (known: {})", known.join(", ")),
            );
            continue;
        };
        if targets.iter().any(|x| x.cluster == cluster) {
            errors.push(
                format!("{tpath}.cluster"),
                format!("cluster {name:?} is listed twice"),
            );
            continue;
        }
        if t.weight > MAX_WEIGHT {
            errors.push(
                format!("{tpath}.weight"),
                format!("{} is out of range 0..={MAX_WEIGHT}", t.weight),
            );
        }
        total_weight += u64::from(t.weight);
        targets.push(TargetModel {
            cluster,
            weight: t.weight,
            priority: t.priority,
        });
    }
    if total_weight == 0 && !targets.is_empty() {
        errors.push(
            format!("{path}.targets"),
            "zero total weight: at least one target needs a weight above 0",
        );
    }
    targets
}

fn validate_probe(p: &ProbeConfig, path: &str, errors: &mut Errors) -> Option<ProbeModel> {
    let kind = match p.kind.trim().to_ascii_lowercase().as_str() {
        "http" => ProbeKind::Http,
        "https" => ProbeKind::Https,
        "tcp" => ProbeKind::Tcp,
        other => {
            errors.push(
                format!("{path}.kind"),
                format!("unknown probe kind {other:?} (expected http, https or tcp)"),
            );
            return None;
        }
    };
    let port = match (p.port, kind) {
        (Some(0), _) => {
            errors.push(format!("{path}.port"), "port 0 is not a valid port");
            0
        }
        (Some(port), _) => port,
        (None, ProbeKind::Http) => 80,
        (None, ProbeKind::Https) => 443,
        (None, ProbeKind::Tcp) => {
            errors.push(format!("{path}.port"), "a tcp probe needs a port");
            0
        }
    };
    if !p.path.starts_with('/') {
        errors.push(
            format!("{path}.path"),
            format!("{:?} must start with '/'", p.path),
        );
    }
    if p.interval < Duration::from_millis(250) {
        errors.push(
            format!("{path}.interval"),
            format!("{:?} is below the minimum of 250ms", p.interval),
        );
    }
    if p.timeout.is_zero() || p.timeout >= p.interval {
        errors.push(
            format!("{path}.timeout"),
            format!(
                "{:?} must be above 0 and below the interval ({:?})",
                p.timeout, p.interval
            ),
        );
    }
    for (field, v) in [("rise", p.rise), ("fall", p.fall)] {
        if !(1..=100).contains(&v) {
            errors.push(
                format!("{path}.{field}"),
                format!("{v} is out of range 1..=100"),
            );
        }
    }
    Some(ProbeModel {
        kind,
        port,
        path: p.path.clone(),
        interval: p.interval,
        timeout: p.timeout,
        rise: p.rise,
        fall: p.fall,
    })
}
