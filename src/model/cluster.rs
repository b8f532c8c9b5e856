//! `[[clusters]]` validation.

use std::{collections::HashSet, net::IpAddr};

use super::ClusterModel;
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
        out.push(ClusterModel {
            name,
            region: c.region.as_ref().map(|r| r.trim().to_owned()),
            coordinates,
            ingress,
        });
    }
    out
}
