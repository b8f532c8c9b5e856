//! gtmd: an authoritative DNS server for delegated application zones that answers each app
//! hostname with the ingress addresses of its clusters.
//!
//! Data flow: config file → [`config`] (serde) → [`model::validate`] → [`snapshot::Snapshot`]
//! → [`dns`] handler, served by [`server::run`]. See `../shared/ARCHITECTURE.md`.

pub mod config;
pub mod dns;
pub mod geo;
pub mod health;
pub mod logging;
pub mod model;
pub mod policy;
pub mod server;
pub mod snapshot;

use std::path::Path;

pub use config::{ConfigError, ConfigErrors};
pub use model::Model;
pub use snapshot::Snapshot;

/// Everything `serve` and `check` need from a config file: parse, validate, build. Both run
/// exactly this, so `check` passing means `serve` will accept the file.
#[derive(Debug)]
pub struct Loaded {
    pub model: Model,
    pub snapshot: Snapshot,
}

/// Loads `path` with the process environment's `GTMD__…` overrides.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    let config = config::load(path)?;
    from_config(path, &config)
}

/// Validates and builds an already parsed config (`path` is only used in error messages).
pub fn from_config(path: &Path, config: &config::Config) -> Result<Loaded, ConfigErrors> {
    let model = model::validate(config).map_err(|errors| ConfigErrors {
        file: path.to_path_buf(),
        errors,
    })?;
    let snapshot = Snapshot::build(&model, &health::HealthTable::initial(&model));
    Ok(Loaded { model, snapshot })
}
