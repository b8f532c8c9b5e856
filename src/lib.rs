//! gtmd: an authoritative DNS server for delegated application zones that answers each app
//! hostname with the ingress addresses of its clusters.
//!
//! Data flow: config file → [`config`] (serde) → [`model::validate`] → [`snapshot::Snapshot`]
//! → [`dns`] handler, served by [`server::run`]. See `../shared/ARCHITECTURE.md`.

pub mod accept;
pub mod admin;
pub mod config;
pub mod dns;
pub mod fdbudget;
pub mod fleet;
pub mod geo;
pub mod health;
pub mod heap;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod reload;
pub mod server;
pub mod snapshot;
#[cfg(test)]
mod test_support;

use std::path::Path;

pub use config::{ConfigError, ConfigErrors};
pub use model::Model;
pub use snapshot::Snapshot;

/// Everything `serve`, `check` and a reload need from a config file: parse, validate,
/// build. All run exactly this, so `check` passing means `serve` and a reload accept it.
#[derive(Debug)]
pub struct Loaded {
    pub model: Model,
    pub summary: snapshot::Summary,
    /// Identifies the configuration in effect (file text and environment overrides).
    pub hash: String,
    /// What the fleet compares between instances ([`fleet_fingerprint`]; empty: `hash`).
    pub fleet_hash: String,
    /// The `GTMD__…` environment overrides in effect (they win over the file).
    pub overrides: Vec<config::EnvOverride>,
}

/// Loads `path` with the process environment's `GTMD__…` overrides.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    let text = config::read(path)?;
    let parsed = config::parse_with_env(path, &text, gtmd_env())?;
    let mut loaded = from_config(path, &parsed)?;
    loaded.hash = fingerprint(&text);
    loaded.fleet_hash = fleet_fingerprint(&text);
    loaded.overrides = config::env_overrides(&text, gtmd_env());
    Ok(loaded)
}

/// Parses, validates and builds config `text` as if read from `path`, without environment
/// overrides (tests, benches and fuzz targets that hold their config in memory).
pub fn from_text(path: &Path, text: &str) -> Result<Loaded, ConfigErrors> {
    from_config(path, &config::parse_with_env(path, text, [])?)
}

/// Parses and validates `text` (read from `path`) with the environment overrides, without
/// the snapshot build of [`load`]: a reload builds its snapshot once, with the health
/// carried over, rather than twice (time and peak memory). Returns the model and its hash.
pub fn validate_text(path: &Path, text: &str) -> Result<(Model, String), ConfigErrors> {
    let parsed = config::parse_with_env(path, text, gtmd_env())?;
    for o in config::env_overrides(text, gtmd_env()) {
        if o.replaces_file {
            tracing::warn!(
                file = %path.display(),
                "{}: the file's value is not used: the environment variable {} overrides it \
                 (the environment wins over the file)",
                o.key,
                o.var
            );
        }
    }
    let model = model::validate(&parsed).map_err(|errors| ConfigErrors {
        file: path.to_path_buf(),
        errors,
    })?;
    Ok((model, fingerprint(text)))
}

/// The process's `GTMD__…` environment overrides, sorted.
fn gtmd_env() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with(&format!("{}__", config::ENV_PREFIX)))
        .collect();
    env.sort();
    env
}

/// Identifies a configuration: a hash of the file text and the environment overrides.
pub fn fingerprint(text: &str) -> String {
    hash_with_env(text, |_| true)
}

/// The environment overrides that make one instance of a fleet differ from another
/// running the same file: where it listens, its admin endpoint and who it is in the fleet.
const INSTANCE_ENV: [&str; 5] = [
    "GTMD__SERVER__LISTEN",
    "GTMD__ADMIN__LISTEN",
    "GTMD__FLEET__NODE",
    "GTMD__FLEET__LISTEN",
    "GTMD__FLEET__PEERS",
];

/// What instances of a fleet compare to find configuration divergence: [`fingerprint`]
/// without the overrides of [`INSTANCE_ENV`] (every instance reads the same file and
/// sets its identity in its environment, as a StatefulSet's pods do).
pub fn fleet_fingerprint(text: &str) -> String {
    hash_with_env(text, |k| !INSTANCE_ENV.contains(&k))
}

fn hash_with_env(text: &str, include: impl Fn(&str) -> bool) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for (k, v) in gtmd_env() {
        if include(&k) {
            bytes.extend_from_slice(format!("\n{k}={v}").as_bytes());
        }
    }
    format!("{:016x}", policy::stable_hash(&bytes))
}

/// Validates and builds an already parsed config (`path` is only used in error messages).
pub fn from_config(path: &Path, config: &config::Config) -> Result<Loaded, ConfigErrors> {
    let model = model::validate(config).map_err(|errors| ConfigErrors {
        file: path.to_path_buf(),
        errors,
    })?;
    // The same build `serve` does, so a config that fails to build fails here too.
    let model = std::sync::Arc::new(model);
    let snapshot = Snapshot::initial(&model, &metrics::Metrics::new());
    let summary = snapshot.summary;
    drop(snapshot);
    let model = std::sync::Arc::try_unwrap(model).unwrap_or_else(|m| (*m).clone());
    Ok(Loaded {
        model,
        summary,
        hash: String::new(),
        fleet_hash: String::new(),
        overrides: Vec::new(),
    })
}
