//! `[geo]` validation: the region table, the MaxMind database, ECS trust.

use std::{collections::HashSet, path::Path, sync::Arc};

use ipnet::IpNet;

use crate::{
    config::{Errors, file::GeoConfig},
    geo::{Geo, GeoDb, PrefixTable},
};

/// Client-location settings, with the database opened and the table built.
#[derive(Debug, Clone)]
pub struct GeoModel {
    pub geo: Arc<Geo>,
    /// Ignore ECS everywhere.
    pub ignore_ecs: bool,
    /// Resolvers whose ECS is trusted (all when `None`).
    pub ecs_trusted: Option<Vec<IpNet>>,
}

pub fn validate(cfg: &GeoConfig, errors: &mut Errors) -> GeoModel {
    let mut names: Vec<Arc<str>> = Vec::new();
    let mut seen = HashSet::new();
    let mut entries = Vec::new();
    for (i, r) in cfg.regions.iter().enumerate() {
        let path = format!("geo.regions[{i}]");
        let name = r.name.trim();
        if name.is_empty() {
            errors.push(format!("{path}.name"), "empty region name");
            continue;
        }
        if !seen.insert(name.to_owned()) {
            errors.push(format!("{path}.name"), format!("duplicate region {name:?}"));
        }
        let name: Arc<str> = Arc::from(name);
        names.push(name.clone());
        for (j, n) in r.networks.iter().enumerate() {
            match n.trim().parse::<IpNet>() {
                Ok(net) if net.trunc() != net => errors.push(
                    format!("{path}.networks[{j}]"),
                    format!("{net} has host bits set (did you mean {}?)", net.trunc()),
                ),
                Ok(net) => entries.push((net, name.clone())),
                Err(_) => errors.push(
                    format!("{path}.networks[{j}]"),
                    format!("invalid network {n:?} (expected CIDR, e.g. 192.0.2.0/24)"),
                ),
            }
        }
    }
    let db = cfg.mmdb.as_ref().and_then(|p| {
        GeoDb::open(Path::new(p))
            .map_err(|e| errors.push("geo.mmdb", e))
            .ok()
    });
    let ecs_trusted = cfg.ecs_trusted.as_ref().map(|list| {
        list.iter()
            .enumerate()
            .filter_map(|(i, n)| {
                n.trim()
                    .parse::<IpNet>()
                    .map_err(|_| {
                        errors.push(
                            format!("geo.ecs_trusted[{i}]"),
                            format!("invalid network {n:?} (expected CIDR, e.g. 10.0.0.0/8)"),
                        )
                    })
                    .ok()
            })
            .map(|n| n.trunc())
            .collect()
    });
    GeoModel {
        geo: Arc::new(Geo {
            regions: PrefixTable::build(entries),
            region_names: names,
            db,
        }),
        ignore_ecs: cfg.ignore_ecs,
        ecs_trusted,
    }
}
