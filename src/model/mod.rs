//! The validated model: what the configuration *means*, with every rule checked.
//!
//! [`validate`] walks the whole [`Config`] and collects every problem with its path, so
//! `gtmd check` and a rejected reload both report all of them at once. On success the model
//! holds canonical (lower-case, absolute) names, parsed records and addresses, and clusters
//! referenced by index, so nothing downstream has to re-check or re-parse anything.

mod app;
mod cluster;
pub mod fleet;
pub mod geo;
pub mod limits;
pub mod names;
pub mod policy;
pub mod probe;
mod server;
mod zone;

use std::{collections::HashMap, net::IpAddr, net::SocketAddr, time::Duration};

use hickory_proto::rr::{Name, Record};

use crate::config::{Config, ConfigError, Errors};

pub use app::Fallback;
pub use geo::GeoModel;
pub use probe::{FlapSpec, HttpMethod, ProbeKind, ProbeSpec};
pub use server::AdminLimits;

/// Largest TTL accepted for static records and the SOA: one week. Longer TTLs are legal DNS
/// but in a GSLB zone they are always a typo that would pin resolvers for too long.
pub const MAX_TTL: u32 = 604_800;
/// Largest TTL accepted for an app: one day. Beyond that health-driven steering is moot.
pub const MAX_APP_TTL: u32 = 86_400;

#[derive(Debug, Clone)]
pub struct Model {
    pub server: ServerModel,
    pub health: HealthModel,
    pub geo: GeoModel,
    /// `[fleet]` (None: this instance runs alone).
    pub fleet: Option<fleet::FleetModel>,
    pub zones: Vec<ZoneModel>,
    pub clusters: Vec<ClusterModel>,
    pub apps: Vec<AppModel>,
    /// Settings that are valid but have no effect, with their paths (reported by `gtmd
    /// check`, and logged at start and on reload).
    pub warnings: Vec<ConfigError>,
}

#[derive(Debug, Clone)]
pub struct ServerModel {
    pub listen: Vec<SocketAddr>,
    /// The admin HTTP endpoint (None: disabled).
    pub admin: Option<SocketAddr>,
    /// Bounds on the admin endpoint's connections.
    pub admin_limits: AdminLimits,
    pub tcp_idle_timeout: Duration,
    pub max_udp_payload: u16,
    /// UDP sockets (and worker threads) per listen address.
    pub udp_workers: usize,
    pub tcp_max_connections: usize,
    /// TCP connections at once from one client address (IPv6: one /64).
    pub tcp_max_connections_per_ip: usize,
    pub tcp_max_queries: usize,
    /// Queries waiting for a full-path worker, per UDP socket.
    pub full_path_queue: usize,
    /// Response rate limiting (None: off).
    pub rrl: Option<crate::dns::rrl::RrlSettings>,
    /// DNS keeps answering this long after SIGTERM while `/readyz` says 503.
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct HealthModel {
    pub max_concurrent_probes: usize,
    /// `health.state_file`: the verdicts kept across restarts (see `health::persist`).
    pub state_file: Option<std::path::PathBuf>,
    /// `health.state_max_age`: older state is not restored.
    pub state_max_age: Duration,
}

/// Default of `health.state_max_age`.
pub const DEFAULT_STATE_MAX_AGE: Duration = Duration::from_secs(600);
/// Largest `health.state_max_age`: a verdict a week old says nothing about a cluster now.
pub const MAX_STATE_MAX_AGE: Duration = Duration::from_secs(7 * 86_400);

#[derive(Debug, Clone)]
pub struct ZoneModel {
    /// Lower-case, absolute.
    pub origin: Name,
    pub soa: Record,
    /// The apex NS RRset.
    pub nameservers: Vec<Record>,
    /// Static records, owner names lower-case and absolute, inside this zone.
    pub records: Vec<Record>,
    /// The config path of each entry of `records` (`zones[0].records[3].values[1]`).
    pub record_paths: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ClusterModel {
    pub name: String,
    /// The name again, shared: what the cluster's probe ids hold, so that looking a
    /// target's verdict up (50,000 times per snapshot at 10,000 apps) allocates nothing.
    pub id: std::sync::Arc<str>,
    pub region: Option<String>,
    pub coordinates: Option<(f64, f64)>,
    pub ingress: Vec<IpAddr>,
    /// Where probes of this cluster go: `probe_address`, else the first ingress address.
    pub probe_ip: IpAddr,
    pub drain: bool,
    /// Admin override of every app's health in this cluster.
    pub force: Option<bool>,
    /// The probe of the cluster's ingress itself.
    pub probe: Option<std::sync::Arc<ProbeSpec>>,
}

#[derive(Debug, Clone)]
pub struct AppModel {
    /// Position in the config's `apps` list, for error paths.
    pub index: usize,
    /// Lower-case, absolute.
    pub hostname: Name,
    /// Index into [`Model::zones`]: the most specific zone holding the hostname.
    pub zone: usize,
    pub ttl: u32,
    pub policy: crate::policy::choose::AppPolicy,
    pub fallback: Fallback,
    pub targets: Vec<TargetModel>,
}

#[derive(Debug, Clone)]
pub struct TargetModel {
    /// Index into [`Model::clusters`].
    pub cluster: usize,
    pub weight: u32,
    pub priority: u32,
    pub drain: bool,
    /// Admin override of the probe result.
    pub force: Option<bool>,
    /// The probe of this app in this cluster (None: not probed, counts as up). Shared with
    /// the probe's task, which holds the same settings (and across a reload, see
    /// [`Model::share_probe_settings`]): one copy of 50,000 settings, not two.
    pub probe: Option<std::sync::Arc<ProbeSpec>>,
}

impl Model {
    /// Points each probe's settings that equal those of the same target (app hostname and
    /// cluster name, or cluster) in `running`, the model in effect, at `running`'s. The
    /// probe tasks hold the settings of the model in effect (shared, `Arc`), so a reload
    /// that keeps a probe then holds one copy of its settings instead of two (at 10,000
    /// apps × 5 clusters, tens of MiB). Apps are matched by position, else by name;
    /// targets by position, else by cluster name.
    pub fn share_probe_settings(&mut self, running: &Model) {
        let mut apps = AppFinder::new(running);
        let clusters = &self.clusters;
        for (i, app) in self.apps.iter_mut().enumerate() {
            let Some(was) = apps.find(i, &app.hostname).map(|at| &running.apps[at]) else {
                continue;
            };
            for (k, target) in app.targets.iter_mut().enumerate() {
                let name = &clusters[target.cluster].name;
                let kept = at_or_find(&was.targets, k, |t| {
                    running.clusters[t.cluster].name == *name
                });
                share(&mut target.probe, kept.and_then(|t| t.probe.as_ref()));
            }
        }
        for (k, cluster) in self.clusters.iter_mut().enumerate() {
            let kept = at_or_find(&running.clusters, k, |c| c.name == cluster.name);
            share(&mut cluster.probe, kept.and_then(|c| c.probe.as_ref()));
        }
    }
}

/// Finds the apps of a model by hostname, trying the same position first: the usual
/// reload keeps the apps in their order, and then builds no map of 10,000 names.
pub struct AppFinder<'m> {
    model: &'m Model,
    by_name: Option<HashMap<&'m Name, usize>>,
}

impl<'m> AppFinder<'m> {
    pub fn new(model: &'m Model) -> Self {
        Self {
            model,
            by_name: None,
        }
    }

    /// The index of the app named `name`, looked for at `at` first.
    pub fn find(&mut self, at: usize, name: &Name) -> Option<usize> {
        match self.model.apps.get(at) {
            Some(app) if app.hostname == *name => Some(at),
            _ => {
                let model = self.model;
                self.by_name
                    .get_or_insert_with(|| {
                        model
                            .apps
                            .iter()
                            .enumerate()
                            .map(|(i, a)| (&a.hostname, i))
                            .collect()
                    })
                    .get(name)
                    .copied()
            }
        }
    }
}

/// The entry at `k` when `same` holds for it, else the first one for which it holds.
fn at_or_find<T>(list: &[T], k: usize, same: impl Fn(&T) -> bool) -> Option<&T> {
    list.get(k)
        .filter(|x| same(x))
        .or_else(|| list.iter().find(|x| same(x)))
}

/// `spec` becomes `kept` when they are equal.
fn share(spec: &mut Option<std::sync::Arc<ProbeSpec>>, kept: Option<&std::sync::Arc<ProbeSpec>>) {
    if let (Some(spec), Some(kept)) = (spec, kept)
        && spec == kept
    {
        *spec = kept.clone();
    }
}

/// Checks the whole configuration; returns every error found, in file order.
pub fn validate(config: &Config) -> Result<Model, Vec<ConfigError>> {
    let mut errors = Errors::default();
    limits::check(config, &mut errors);
    if !errors.is_empty() {
        // Validating a config this size would only multiply the errors and the time.
        return Err(errors.into_vec());
    }
    let mut server = server::validate(&config.server, &config.admin, &mut errors);
    server.rrl = server::validate_rrl(&config.rrl, &mut errors);
    let health = validate_health(&config.health, &mut errors);
    let geo = geo::validate(&config.geo, &mut errors);
    let fleet = config
        .fleet
        .as_ref()
        .and_then(|f| fleet::validate(f, &mut errors));
    let zones = zone::validate_zones(&config.zones, &mut errors);
    let clusters = cluster::validate(&config.clusters, &mut errors);
    let apps = app::validate(
        &config.apps,
        config.health.defaults.as_ref(),
        &config.clusters,
        &zones,
        &clusters,
        &geo,
        &mut errors,
    );
    zone::check_cross(&zones, &apps, &mut errors);
    let (mut apps, mut clusters) = (apps, clusters);
    if let Some(f) = &fleet {
        let agent: std::sync::Arc<str> = std::sync::Arc::from(
            format!("{} (fleet node {})", probe::DEFAULT_AGENT, f.node).as_str(),
        );
        let specs = apps
            .iter_mut()
            .flat_map(|a| a.targets.iter_mut().filter_map(|t| t.probe.as_mut()))
            .chain(clusters.iter_mut().filter_map(|c| c.probe.as_mut()));
        for spec in specs {
            // Not shared yet: changed in place.
            std::sync::Arc::make_mut(spec).agent = Some(agent.clone());
        }
    }
    if errors.is_empty() {
        Ok(Model {
            server,
            health,
            geo,
            fleet,
            zones,
            clusters,
            apps,
            warnings: errors.take_warnings(),
        })
    } else {
        Err(errors.into_vec())
    }
}

fn validate_health(cfg: &crate::config::file::HealthConfig, errors: &mut Errors) -> HealthModel {
    if !(1..=100_000).contains(&cfg.max_concurrent_probes) {
        errors.push(
            "health.max_concurrent_probes",
            format!("{} is out of range 1..=100000", cfg.max_concurrent_probes),
        );
    }
    if let Some(d) = &cfg.defaults {
        probe::check_layer(d, "health.defaults", errors);
    }
    let state_file = cfg.state_file.as_deref().and_then(|f| {
        if f.trim().is_empty() || f.ends_with('/') {
            errors.push(
                "health.state_file",
                format!("{f:?} is not a file path (leave the key out to keep no state file)"),
            );
            None
        } else {
            Some(std::path::PathBuf::from(f))
        }
    });
    let state_max_age = cfg.state_max_age.unwrap_or(DEFAULT_STATE_MAX_AGE);
    if state_max_age.is_zero() || state_max_age > MAX_STATE_MAX_AGE {
        errors.push(
            "health.state_max_age",
            format!(
                "{} is out of range: more than 0s, at most 7 days",
                humantime::format_duration(state_max_age)
            ),
        );
    }
    HealthModel {
        max_concurrent_probes: cfg.max_concurrent_probes.max(1),
        state_file,
        state_max_age,
    }
}

/// The most specific zone holding `name`, if any.
pub fn zone_for(zones: &[ZoneModel], name: &Name) -> Option<usize> {
    zones
        .iter()
        .enumerate()
        .filter(|(_, z)| names::in_zone(name, &z.origin))
        .max_by_key(|(_, z)| z.origin.num_labels())
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    fn model(body: &str) -> super::Model {
        crate::test_support::model(&format!("{}{body}", crate::test_support::t_test_zone!()))
    }

    /// A reload's model shares each probe's settings with the model in effect when they
    /// are equal, wherever its app and target moved; settings that changed stay its own.
    #[test]
    fn a_reloads_model_shares_the_probe_settings_that_did_not_change() {
        let clusters = r#"[health.defaults]
kind = "tcp"
port = 1
[[clusters]]
name = "a"
ingress = ["192.0.2.10"]
[[clusters]]
name = "b"
ingress = ["192.0.2.11"]
probe = { kind = "tcp", port = 2 }
"#;
        let running = model(&format!(
            r#"{clusters}[[apps]]
hostname = "x.t.test"
targets = [{{ cluster = "a" }}, {{ cluster = "b" }}]
[[apps]]
hostname = "y.t.test"
targets = [{{ cluster = "a" }}]
"#
        ));
        // y first, x's targets swapped, y's probe on another port.
        let mut new = model(&format!(
            r#"{clusters}[[apps]]
hostname = "y.t.test"
probe = {{ port = 3 }}
targets = [{{ cluster = "a" }}]
[[apps]]
hostname = "x.t.test"
targets = [{{ cluster = "b" }}, {{ cluster = "a" }}]
"#
        ));
        new.share_probe_settings(&running);
        let spec =
            |m: &super::Model, app: usize, t: usize| m.apps[app].targets[t].probe.clone().unwrap();
        assert!(Arc::ptr_eq(&spec(&new, 1, 0), &spec(&running, 0, 1)));
        assert!(Arc::ptr_eq(&spec(&new, 1, 1), &spec(&running, 0, 0)));
        assert!(!Arc::ptr_eq(&spec(&new, 0, 0), &spec(&running, 1, 0)));
        assert_eq!(spec(&new, 0, 0).addr.port(), 3);
        let cluster = |m: &super::Model| m.clusters[1].probe.clone().unwrap();
        assert!(Arc::ptr_eq(&cluster(&new), &cluster(&running)));
    }
}
