//! `[[clusters]]` validation.

use std::{collections::HashSet, net::IpAddr};

use super::{ClusterModel, probe};
use crate::config::{Errors, file::ClusterConfig};

pub fn validate(cfgs: &[ClusterConfig], errors: &mut Errors) -> Vec<ClusterModel> {
    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(cfgs.len());
    for (i, c) in cfgs.iter().enumerate() {
        let path = format!("clusters[{i}]");
        let name = c.name.trim().to_owned();
        if name.is_empty() {
            errors.push(format!("{path}.name"), "empty cluster name");
        } else if !names.insert(name.clone()) {
            errors.push(
                format!("{path}.name"),
                format!("duplicate cluster name {name:?}"),
            );
        }
        let coordinates = match (c.lat, c.lon) {
            (None, None) => None,
            (Some(lat), Some(lon)) => {
                if !(-90.0..=90.0).contains(&lat) {
                    errors.push(
                        format!("{path}.lat"),
                        format!("{lat} is out of range -90..=90"),
                    );
                }
                if !(-180.0..=180.0).contains(&lon) {
                    errors.push(
                        format!("{path}.lon"),
                        format!("{lon} is out of range -180..=180"),
                    );
                }
                Some((lat, lon))
            }
            (Some(_), None) => {
                errors.push(format!("{path}.lon"), "lat is set but lon is missing");
                None
            }
            (None, Some(_)) => {
                errors.push(format!("{path}.lat"), "lon is set but lat is missing");
                None
            }
        };
        if c.ingress.is_empty() {
            errors.push(
                format!("{path}.ingress"),
                "at least one ingress address is needed",
            );
        }
        let mut ingress = Vec::with_capacity(c.ingress.len());
        for (j, text) in c.ingress.iter().enumerate() {
            let ipath = format!("{path}.ingress[{j}]");
            match text.trim().parse::<IpAddr>() {
                Ok(ip) if ingress.contains(&ip) => {
                    errors.push(ipath, format!("duplicate address {ip}"))
                }
                Ok(ip) if ip.is_unspecified() || ip.is_multicast() => errors.push(
                    ipath,
                    format!("{ip} cannot be an ingress address (unspecified or multicast)"),
                ),
                Ok(ip) => ingress.push(ip),
                Err(_) => errors.push(
                    ipath,
                    format!(
                        "invalid IP address {text:?} (expected e.g. 198.51.100.10 or 2001:db8::10)"
                    ),
                ),
            }
        }
        let probe_ip = match &c.probe_address {
            Some(text) => text.trim().parse::<IpAddr>().unwrap_or_else(|_| {
                errors.push(
                    format!("{path}.probe_address"),
                    format!("invalid IP address {text:?}"),
                );
                IpAddr::from([0, 0, 0, 0])
            }),
            None => ingress
                .first()
                .copied()
                .unwrap_or(IpAddr::from([0, 0, 0, 0])),
        };
        let force = c.force.as_deref().and_then(|f| {
            probe::parse_up_down(f)
                .map_err(|e| errors.push(format!("{path}.force"), e))
                .ok()
        });
        if let Some(p) = &c.app_probe {
            probe::check_layer(p, &format!("{path}.app_probe"), errors);
        }
        let cluster_probe = c.probe.as_ref().and_then(|p| {
            let ppath = format!("{path}.probe");
            probe::check_layer(p, &ppath, errors);
            probe::resolve(p, probe_ip, None, &ppath, errors).map(std::sync::Arc::new)
        });
        out.push(ClusterModel {
            id: std::sync::Arc::from(name.as_str()),
            name,
            region: c.region.as_ref().map(|r| r.trim().to_owned()),
            coordinates,
            ingress,
            probe_ip,
            drain: c.drain,
            force,
            probe: cluster_probe,
        });
    }
    out
}
