//! `[[apps]]` validation.

use std::{collections::HashMap, net::IpAddr};

use super::{AppModel, ClusterModel, MAX_APP_TTL, TargetModel, ZoneModel, names, probe, zone_for};
use crate::config::{
    Errors,
    file::{AppConfig, ClusterConfig, DEFAULT_PRIORITY, DEFAULT_WEIGHT, ProbeConfig},
};

/// What an app answers when none of its targets is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Fail open: every target that is not drained (the default).
    All,
    /// Nothing (NODATA): clients fail fast rather than reach a dead cluster.
    None,
    /// This cluster (index into the clusters), e.g. a static maintenance page.
    Cluster(usize),
}

/// Largest weight accepted: keeps sums of many targets far from overflow.
const MAX_WEIGHT: u32 = 1_000_000;

pub fn validate(
    cfgs: &[AppConfig],
    probe_defaults: Option<&ProbeConfig>,
    cluster_cfgs: &[ClusterConfig],
    zones: &[ZoneModel],
    clusters: &[ClusterModel],
    geo: &super::GeoModel,
    errors: &mut Errors,
) -> Vec<AppModel> {
    let cluster_index: HashMap<&str, usize> = clusters
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let mut hostnames: HashMap<hickory_proto::rr::Name, usize> = HashMap::new();
    let mut out = Vec::with_capacity(cfgs.len());
    let from_defaults = defaults_problems(probe_defaults);
    // The probe settings that apps without a `probe` of their own inherit, resolved, per
    // (cluster, address probed), without a Host (see `ProbeSpec::for_host`).
    let mut inherited: HashMap<(usize, IpAddr), Option<probe::ProbeSpec>> = HashMap::new();
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
        if let Some(p) = &a.probe {
            probe::check_layer(p, &format!("{path}.probe"), errors);
        }
        let mut targets = validate_targets(a, &path, &cluster_index, errors);
        let probe_path = format!("{path}.probe");
        let host = hostname.to_string().trim_end_matches('.').to_owned();
        // Each target's probe: built-in defaults < [health.defaults] < cluster app_probe <
        // app probe.
        for t in &mut targets {
            let cluster = t.model.cluster;
            let ip = t.probe_ip.unwrap_or(clusters[cluster].probe_ip);
            // Most apps have no probe of their own: their targets in one cluster then
            // differ only in the Host header, and are resolved once.
            let key = (a.probe.is_none()).then_some((cluster, ip));
            if let Some(spec) = key.and_then(|k| inherited.get(&k)) {
                t.model.probe = spec
                    .as_ref()
                    .map(|s| std::sync::Arc::new(s.for_host(&host)));
                continue;
            }
            let layers = [
                probe_defaults,
                cluster_cfgs.get(cluster).and_then(|c| c.app_probe.as_ref()),
                a.probe.as_ref(),
            ];
            let merged = probe::merge(layers.into_iter().flatten());
            let mut found = Errors::default();
            let spec = probe::resolve(&merged, ip, None, &probe_path, &mut found);
            t.model.probe = spec
                .as_ref()
                .map(|s| std::sync::Arc::new(s.for_host(&host)));
            // Only what resolves without a problem is reused: a problem is reported at
            // every app that has it, as before.
            if let Some(k) = key
                && found.is_empty()
            {
                inherited.insert(k, spec);
            }
            for e in found.into_vec() {
                // The same problem as [health.defaults] has on its own: reported there,
                // once, rather than at every app that inherits it.
                let rest = e.path.strip_prefix(&probe_path).unwrap_or(&e.path);
                if from_defaults.contains(&(rest.to_owned(), e.message.clone())) {
                    errors.push(format!("health.defaults{rest}"), e.message);
                } else {
                    errors.push(e.path, e.message);
                }
            }
        }
        let target_models: Vec<TargetModel> = targets.into_iter().map(|t| t.model).collect();
        let policy = super::policy::validate(a, &path, &target_models, clusters, &geo.geo, errors);
        let fallback = parse_fallback(&a.fallback, &cluster_index)
            .map_err(|e| errors.push(format!("{path}.fallback"), e))
            .ok();
        if let (Some(zone), Some(policy), Some(fallback)) = (zone, policy, fallback) {
            out.push(AppModel {
                index: i,
                hostname,
                zone,
                ttl: a.ttl,
                policy,
                fallback,
                targets: target_models,
            });
        }
    }
    out
}

/// The problems `[health.defaults]` has on its own (as if it probed, with its own kind or
/// http), as (path below the probe, message): an app probe that inherits them unchanged
/// shows the same ones, which are then the defaults' fault.
fn defaults_problems(defaults: Option<&ProbeConfig>) -> Vec<(String, String)> {
    let Some(d) = defaults else {
        return Vec::new();
    };
    let mut alone = d.clone();
    alone.kind.get_or_insert_with(|| "http".to_owned());
    let mut found = Errors::default();
    probe::resolve(&alone, IpAddr::from([0, 0, 0, 0]), None, "", &mut found);
    found
        .into_vec()
        .into_iter()
        .map(|e| (e.path, e.message))
        .collect()
}

/// A target whose probe is not resolved yet.
struct PendingTarget {
    model: TargetModel,
    /// The target's own `probe_address`.
    probe_ip: Option<IpAddr>,
}

fn parse_fallback(text: &str, clusters: &HashMap<&str, usize>) -> Result<Fallback, String> {
    let t = text.trim();
    match t.to_ascii_lowercase().as_str() {
        "all" => Ok(Fallback::All),
        "none" => Ok(Fallback::None),
        _ => match t.split_once(':') {
            Some((k, name)) if k.eq_ignore_ascii_case("cluster") => clusters
                .get(name.trim())
                .map(|&c| Fallback::Cluster(c))
                .ok_or_else(|| format!("unknown cluster {:?} in {t:?}", name.trim())),
            _ => Err(format!(
                "invalid fallback {t:?} (expected \"all\", \"none\" or \"cluster:NAME\")"
            )),
        },
    }
}

fn validate_targets(
    a: &AppConfig,
    path: &str,
    cluster_index: &HashMap<&str, usize>,
    errors: &mut Errors,
) -> Vec<PendingTarget> {
    if a.targets.is_empty() {
        errors.push(format!("{path}.targets"), "at least one target is needed");
        return Vec::new();
    }
    let mut targets: Vec<PendingTarget> = Vec::with_capacity(a.targets.len());
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
        if targets.iter().any(|x| x.model.cluster == cluster) {
            errors.push(
                format!("{tpath}.cluster"),
                format!("cluster {name:?} is listed twice"),
            );
            continue;
        }
        let weight = t.weight.unwrap_or(DEFAULT_WEIGHT);
        if weight > MAX_WEIGHT {
            errors.push(
                format!("{tpath}.weight"),
                format!("{weight} is out of range 0..={MAX_WEIGHT}"),
            );
        }
        total_weight += u64::from(weight);
        let force = t.force.as_deref().and_then(|f| {
            probe::parse_up_down(f)
                .map_err(|e| errors.push(format!("{tpath}.force"), e))
                .ok()
        });
        let probe_ip = t.probe_address.as_deref().and_then(|text| {
            text.trim()
                .parse::<IpAddr>()
                .map_err(|_| {
                    errors.push(
                        format!("{tpath}.probe_address"),
                        format!("invalid IP address {text:?}"),
                    )
                })
                .ok()
        });
        targets.push(PendingTarget {
            model: TargetModel {
                cluster,
                weight,
                priority: t.priority.unwrap_or(DEFAULT_PRIORITY),
                drain: t.drain,
                force,
                probe: None,
            },
            probe_ip,
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

#[cfg(test)]
mod tests {
    /// Apps without a probe of their own share the resolved settings of their cluster
    /// (resolved once per cluster and address probed), yet each target probes with its
    /// own app's Host, its own address, and the layers that apply to it.
    #[test]
    fn inherited_probe_settings_are_resolved_once_and_given_each_apps_host() {
        let text = concat!(
            crate::test_support::t_test_zone!(),
            r#"[health.defaults]
kind = "http"
path = "/d"
[[clusters]]
name = "a"
ingress = ["192.0.2.10"]
[[clusters]]
name = "b"
ingress = ["192.0.2.11"]
app_probe = { path = "/b", host = "fixed.example" }
[[apps]]
hostname = "x.t.test"
targets = [{ cluster = "a" }, { cluster = "b" }]
[[apps]]
hostname = "y.t.test"
targets = [{ cluster = "a", probe_address = "192.0.2.99" }, { cluster = "b" }]
[[apps]]
hostname = "z.t.test"
probe = { path = "/z" }
targets = [{ cluster = "a" }, { cluster = "b" }]
"#
        );
        let model = crate::test_support::model(text);
        let got = |app: usize, t: usize| {
            let s = model.apps[app].targets[t].probe.clone().unwrap();
            (
                s.host.clone().unwrap(),
                s.path.clone(),
                s.addr.ip().to_string(),
            )
        };
        let want =
            |host: &str, path: &str, ip: &str| (host.to_owned(), path.to_owned(), ip.to_owned());
        assert_eq!(got(0, 0), want("x.t.test", "/d", "192.0.2.10"));
        assert_eq!(got(0, 1), want("fixed.example", "/b", "192.0.2.11"));
        assert_eq!(got(1, 0), want("y.t.test", "/d", "192.0.2.99"));
        assert_eq!(got(1, 1), want("fixed.example", "/b", "192.0.2.11"));
        assert_eq!(got(2, 0), want("z.t.test", "/z", "192.0.2.10"));
        assert_eq!(got(2, 1), want("fixed.example", "/z", "192.0.2.11"));
    }
}
