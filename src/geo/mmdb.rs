//! A MaxMind database (GeoIP2 / GeoLite2 City or Country) as a location source.

use std::{net::IpAddr, path::Path};

use serde::Deserialize;

use super::{Code, Location};

/// An open MaxMind database, read fully into memory at load.
pub struct GeoDb {
    reader: maxminddb::Reader<Vec<u8>>,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDb")
            .field("type", &self.reader.metadata().database_type)
            .finish()
    }
}

/// The fields gtmd uses; City and Country databases both decode into it.
#[derive(Deserialize, Default)]
struct Record<'a> {
    #[serde(borrow, default)]
    country: Option<Named<'a>>,
    #[serde(borrow, default)]
    continent: Option<Coded<'a>>,
    #[serde(default)]
    location: Option<Coordinates>,
}

#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Coded<'a> {
    #[serde(borrow, default)]
    code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Coordinates {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

impl GeoDb {
    /// Opens and checks a database; the error names the file and the problem.
    pub fn open(path: &Path) -> Result<Self, String> {
        let reader = maxminddb::Reader::open_readfile(path)
            .map_err(|e| format!("cannot open MaxMind database {}: {e}", path.display()))?;
        Ok(Self { reader })
    }

    /// The database type from its metadata, e.g. `GeoLite2-City`.
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// Adds what the database knows of `addr` to `location`.
    pub fn fill(&self, addr: IpAddr, location: &mut Location) {
        let Ok(result) = self.reader.lookup(addr) else {
            return;
        };
        if let Ok(network) = result.network() {
            location.db_scope = network.prefix();
        }
        let Ok(Some(record)) = result.decode::<Record<'_>>() else {
            return;
        };
        location.country = record.country.and_then(|c| c.iso_code).and_then(Code::new);
        location.continent = record.continent.and_then(|c| c.code).and_then(Code::new);
        location.coordinates = record
            .location
            .and_then(|l| Some((l.latitude?, l.longitude?)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> GeoDb {
        GeoDb::open(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/geo-test.mmdb"
        )))
        .unwrap()
    }

    fn at(ip: &str) -> Location {
        let mut l = Location::default();
        db().fill(ip.parse().unwrap(), &mut l);
        l
    }

    #[test]
    fn reads_country_continent_coordinates_and_network() {
        let de = at("192.0.2.77");
        assert_eq!(de.country.as_deref(), Some("DE"));
        assert_eq!(de.continent.as_deref(), Some("EU"));
        assert_eq!(de.coordinates, Some((50.11, 8.68)));
        assert_eq!(de.db_scope, 24);
        let sf = at("198.18.7.1");
        assert_eq!(sf.country.as_deref(), Some("US"), "the nested /24 wins");
        assert_eq!(sf.db_scope, 24);
        let paris = at("198.18.8.1");
        assert_eq!(paris.country.as_deref(), Some("FR"));
        assert!(
            paris.db_scope > 16 && paris.db_scope <= 24,
            "{}",
            paris.db_scope
        );
        let br = at("100.64.1.1");
        assert_eq!(br.country.as_deref(), Some("BR"));
        assert_eq!(br.coordinates, None);
        let v6 = at("2001:db8:e00::1");
        assert_eq!(v6.country.as_deref(), Some("DE"));
        assert_eq!(v6.db_scope, 40);
        let nowhere = at("10.1.2.3");
        assert_eq!(
            nowhere,
            Location {
                db_scope: nowhere.db_scope,
                ..Location::default()
            }
        );
        assert_eq!(db().database_type(), "GeoIP2-City");
    }
}
