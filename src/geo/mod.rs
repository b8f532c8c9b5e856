//! Client location: CIDR → region tables from the config and an optional MaxMind database.
//!
//! [`Geo::locate`] answers "where is this client" with everything a policy may match on
//! (region, country, continent, coordinates) and, for EDNS Client Subnet, the widest prefix
//! around the client for which that answer is certain.

pub mod cidr;
pub mod code;
pub mod distance;
pub mod mmdb;

use std::{net::IpAddr, sync::Arc};

pub use cidr::PrefixTable;
pub use code::Code;
pub use mmdb::GeoDb;

/// Where a client is, as far as gtmd can tell.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Location {
    /// Region from the `[geo] regions` table.
    pub region: Option<Arc<str>>,
    /// ISO 3166-1 alpha-2 country code, upper case (MaxMind).
    pub country: Option<Code>,
    /// Continent code (`EU`, `NA`, `AS`, …), upper case (MaxMind).
    pub continent: Option<Code>,
    /// Latitude and longitude (MaxMind city data).
    pub coordinates: Option<(f64, f64)>,
    /// Prefix length around the client for which the region lookup holds.
    pub region_scope: u8,
    /// Prefix length around the client for which the MaxMind lookup holds (0 without one).
    pub db_scope: u8,
}

/// The location sources.
#[derive(Debug, Default)]
pub struct Geo {
    pub regions: PrefixTable<Arc<str>>,
    /// Every region name of the table (for validating rules).
    pub region_names: Vec<Arc<str>>,
    pub db: Option<GeoDb>,
}

impl Geo {
    /// Locates `addr` (already masked to the client subnet when it came from ECS).
    pub fn locate(&self, addr: IpAddr) -> Location {
        let region = self.regions.lookup(addr);
        let mut location = Location {
            region: region.value.cloned(),
            region_scope: region.scope,
            ..Location::default()
        };
        if let Some(db) = &self.db {
            db.fill(addr, &mut location);
        }
        location
    }
}
