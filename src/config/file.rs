//! The configuration file exactly as the user writes it.
//!
//! These types only describe the shape of the TOML file (and the `GTMD__…` environment
//! overrides layered on top of it). Nothing here is checked beyond what serde needs to
//! deserialize: every semantic rule lives in [`crate::model::validate`], so that `gtmd check`
//! can report *all* problems at once with their paths instead of stopping at the first.
//!
//! Unknown keys are rejected (`deny_unknown_fields`): a typo such as `wieght` in a file edited
//! by hand at 3 a.m. must be an error, not a silently ignored line.

use std::time::Duration;

use serde::Deserialize;

use super::{duration, strict};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub rrl: RrlConfig,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub geo: GeoConfig,
    /// `[fleet]`: absent, gtmd runs alone.
    #[serde(default)]
    pub fleet: Option<FleetConfig>,
    #[serde(default)]
    pub zones: Vec<ZoneConfig>,
    #[serde(default)]
    pub clusters: Vec<ClusterConfig>,
    #[serde(default)]
    pub apps: Vec<AppConfig>,
}

/// `[server]`: how gtmd listens for DNS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Addresses to serve DNS on; each one is bound for both UDP and TCP.
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// How long an idle TCP connection is kept open ("10s", "1500ms", or seconds).
    #[serde(default = "default_tcp_idle_timeout", with = "duration")]
    pub tcp_idle_timeout: Duration,
    /// The largest UDP response gtmd sends, whatever the client advertises (RFC 9715 / DNS
    /// flag day 2020 recommend 1232 to avoid IP fragmentation).
    #[serde(default = "default_max_udp_payload", deserialize_with = "strict::int")]
    pub max_udp_payload: u16,
    /// UDP worker threads (sockets) per listen address; 0 = one per CPU.
    #[serde(default, deserialize_with = "strict::int")]
    pub udp_workers: usize,
    /// TCP connections served at once; more are closed on accept.
    #[serde(
        default = "default_tcp_max_connections",
        deserialize_with = "strict::int"
    )]
    pub tcp_max_connections: usize,
    /// TCP connections served at once from one client address (an IPv6 client: its /64);
    /// more from that address are closed on accept, so one address cannot hold every slot.
    #[serde(
        default = "default_tcp_max_connections_per_ip",
        deserialize_with = "strict::int"
    )]
    pub tcp_max_connections_per_ip: usize,
    /// Queries answered on one TCP connection before it is closed; 0 = no limit (closing a
    /// busy pipelined connection loses the queries in flight).
    #[serde(default, deserialize_with = "strict::int")]
    pub tcp_max_queries: usize,
    /// UDP queries that miss the fast path waiting for a full-path worker, per UDP socket;
    /// when it is full, new ones are dropped (`gtmd_dns_dropped_total{reason="overload"}`).
    #[serde(default = "default_full_path_queue", deserialize_with = "strict::int")]
    pub full_path_queue: usize,
    /// After SIGTERM/SIGINT: how long DNS keeps answering while `/readyz` says 503, so
    /// load balancers and Kubernetes take the instance out before it stops; 0 stops at once.
    #[serde(default = "default_shutdown_grace", with = "duration")]
    pub shutdown_grace: Duration,
}

/// Long enough for a readiness probe every 2 s with 2 failures to take the pod out of
/// its Service endpoints, short enough for a rolling update to move on quickly.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn default_shutdown_grace() -> Duration {
    DEFAULT_SHUTDOWN_GRACE
}

fn default_full_path_queue() -> usize {
    1024
}

fn default_tcp_max_connections() -> usize {
    1000
}

/// Room for a resolver farm behind one NAT address, while one hostile address holds at
/// most 3 % of the default 1,000 slots.
fn default_tcp_max_connections_per_ip() -> usize {
    32
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            tcp_idle_timeout: default_tcp_idle_timeout(),
            max_udp_payload: default_max_udp_payload(),
            udp_workers: 0,
            tcp_max_connections: default_tcp_max_connections(),
            tcp_max_connections_per_ip: default_tcp_max_connections_per_ip(),
            tcp_max_queries: 0,
            full_path_queue: default_full_path_queue(),
            shutdown_grace: default_shutdown_grace(),
        }
    }
}

fn default_listen() -> Vec<String> {
    vec!["127.0.0.1:5353".to_owned(), "[::1]:5353".to_owned()]
}

fn default_tcp_idle_timeout() -> Duration {
    Duration::from_secs(10)
}

pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = 1232;

fn default_max_udp_payload() -> u16 {
    DEFAULT_MAX_UDP_PAYLOAD
}

/// `[rrl]`: response rate limiting on UDP (off by default).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RrlConfig {
    #[serde(default, deserialize_with = "strict::bool")]
    pub enabled: bool,
    #[serde(default = "default_rrl_rate", deserialize_with = "strict::int")]
    pub responses_per_second: u32,
    /// Every n-th limited response goes out truncated (TC=1) instead of dropped; 0 drops all.
    #[serde(default = "default_slip", deserialize_with = "strict::int")]
    pub slip: u32,
    #[serde(default = "default_v4_prefix", deserialize_with = "strict::int")]
    pub ipv4_prefix: u8,
    #[serde(default = "default_v6_prefix", deserialize_with = "strict::int")]
    pub ipv6_prefix: u8,
    /// Clients never limited. Loopback by default; list your own resolvers here.
    #[serde(default = "default_rrl_exempt")]
    pub exempt: Vec<String>,
}

impl Default for RrlConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            responses_per_second: default_rrl_rate(),
            slip: default_slip(),
            ipv4_prefix: default_v4_prefix(),
            ipv6_prefix: default_v6_prefix(),
            exempt: default_rrl_exempt(),
        }
    }
}

fn default_rrl_rate() -> u32 {
    200
}
fn default_slip() -> u32 {
    2
}
fn default_v4_prefix() -> u8 {
    24
}
fn default_v6_prefix() -> u8 {
    56
}
fn default_rrl_exempt() -> Vec<String> {
    vec!["127.0.0.0/8".to_owned(), "::1/128".to_owned()]
}

/// `[admin]`: the HTTP endpoint for metrics, health, readiness and status.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Where to serve it. Loopback by default: binding elsewhere must be explicit.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    #[serde(default = "default_true", deserialize_with = "strict::bool")]
    pub enabled: bool,
    /// Admin connections open at once. At the cap a new connection replaces the one that
    /// has waited longest without a request in progress, or is closed at once if every
    /// connection is busy: idle clients can neither exhaust descriptors nor lock out
    /// `/healthz`.
    #[serde(
        default = "default_admin_max_connections",
        deserialize_with = "strict::int"
    )]
    pub max_connections: usize,
    /// Time a client has to send a complete request head, counted from the connection's
    /// start or from the end of the previous response: it closes slow-header clients and
    /// idle keep-alive connections alike.
    #[serde(default = "default_admin_header_timeout", with = "duration")]
    pub header_timeout: Duration,
    /// A connection is closed this long after it was accepted (after the response in
    /// progress, which gets `header_timeout` more to finish): bounds a client that reads
    /// its response slowly or never.
    #[serde(default = "default_admin_connection_lifetime", with = "duration")]
    pub connection_lifetime: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            enabled: true,
            max_connections: default_admin_max_connections(),
            header_timeout: default_admin_header_timeout(),
            connection_lifetime: default_admin_connection_lifetime(),
        }
    }
}

fn default_admin_max_connections() -> usize {
    64
}

fn default_admin_header_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_admin_connection_lifetime() -> Duration {
    Duration::from_secs(120)
}

fn default_admin_listen() -> String {
    "127.0.0.1:9153".to_owned()
}

fn default_true() -> bool {
    true
}

/// `[[zones]]`: one zone gtmd is authoritative for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// The zone apex, e.g. `apps.example.com` (a trailing dot is optional).
    pub origin: String,
    /// TTL for records that do not set their own.
    #[serde(default = "default_zone_ttl", deserialize_with = "strict::int")]
    pub ttl: u32,
    /// Names of the zone's authoritative servers: the apex NS RRset.
    #[serde(default)]
    pub nameservers: Vec<String>,
    pub soa: SoaConfig,
    /// Static records (anything that is not an app hostname).
    #[serde(default)]
    pub records: Vec<RecordConfig>,
}

fn default_zone_ttl() -> u32 {
    3600
}

/// `[zones.soa]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoaConfig {
    /// Primary server name.
    pub mname: String,
    /// Responsible mailbox in DNS form (`hostmaster.example.com`) or as an e-mail address.
    pub rname: String,
    #[serde(default = "default_serial", deserialize_with = "strict::int")]
    pub serial: u32,
    #[serde(default = "default_refresh", deserialize_with = "strict::int")]
    pub refresh: u32,
    #[serde(default = "default_retry", deserialize_with = "strict::int")]
    pub retry: u32,
    #[serde(default = "default_expire", deserialize_with = "strict::int")]
    pub expire: u32,
    /// Negative-caching TTL (RFC 2308): NXDOMAIN/NODATA answers carry the SOA with
    /// TTL = min(SOA TTL, minimum).
    #[serde(default = "default_minimum", deserialize_with = "strict::int")]
    pub minimum: u32,
    /// TTL of the SOA record itself; the zone TTL when absent.
    #[serde(default, deserialize_with = "strict::opt_int")]
    pub ttl: Option<u32>,
}

fn default_serial() -> u32 {
    1
}
fn default_refresh() -> u32 {
    3600
}
fn default_retry() -> u32 {
    600
}
fn default_expire() -> u32 {
    1_209_600
}
fn default_minimum() -> u32 {
    60
}

/// `[[zones.records]]`: one static record, or one RRset when `values` has several entries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordConfig {
    /// Owner name: relative to the zone origin (`www`), `@` for the apex, or absolute with a
    /// trailing dot (`www.apps.example.com.`).
    pub name: String,
    /// Record type: A, AAAA, CNAME, TXT, MX, SRV, CAA or NS.
    #[serde(rename = "type")]
    pub rtype: String,
    #[serde(default, deserialize_with = "strict::opt_int")]
    pub ttl: Option<u32>,
    /// The record data in zone-file presentation format (`10 mail`, `0 issue "ca.example"`).
    pub value: Option<String>,
    /// Several record data values for the same name and type.
    pub values: Option<Vec<String>>,
}

/// `[[clusters]]`: one cluster whose ingress addresses apps are answered with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub name: String,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default, deserialize_with = "strict::opt_float")]
    pub lat: Option<f64>,
    #[serde(default, deserialize_with = "strict::opt_float")]
    pub lon: Option<f64>,
    /// Ingress (router / load balancer) addresses, IPv4 and/or IPv6.
    #[serde(default)]
    pub ingress: Vec<String>,
    /// Probe this address instead of the first ingress address (NAT / proxy setups).
    pub probe_address: Option<String>,
    /// Stop answering this cluster for every app (probes keep running).
    #[serde(default, deserialize_with = "strict::bool")]
    pub drain: bool,
    /// Override probe results for every app in this cluster: "up" or "down".
    pub force: Option<String>,
    /// A probe of the cluster's ingress itself (e.g. the router's /healthz/ready on 1936).
    /// When it is down, every app is down in this cluster.
    pub probe: Option<ProbeConfig>,
    /// Defaults for the app probes sent to this cluster (between `[health.defaults]` and the
    /// app's own `probe`).
    pub app_probe: Option<ProbeConfig>,
}

/// `[[apps]]`: one application hostname steered over clusters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub hostname: String,
    #[serde(default = "default_app_ttl", deserialize_with = "strict::int")]
    pub ttl: u32,
    #[serde(default = "default_policy")]
    pub policy: String,
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    /// Health probe settings, layered over the cluster's `app_probe` and `[health.defaults]`.
    #[serde(default)]
    pub probe: Option<ProbeConfig>,
    /// What to answer when no target is up: "all" (fail open, default), "none", or
    /// "cluster:NAME".
    #[serde(default = "default_fallback")]
    pub fallback: String,
    /// Most addresses in one answer (all, failover, and fallbacks). Default 8.
    #[serde(default, deserialize_with = "strict::opt_int")]
    pub max_answers: Option<u32>,
    /// Targets chosen per answer by the weighted policy. Default 1.
    #[serde(default, deserialize_with = "strict::opt_int")]
    pub answers: Option<u32>,
    /// Weighted: choose by a consistent hash of the client subnet instead of at random.
    #[serde(default, deserialize_with = "strict::bool")]
    pub sticky: bool,
    /// Weighted: below this fraction of total weight up, answer every healthy target.
    #[serde(default, deserialize_with = "strict::opt_float")]
    pub min_healthy_fraction: Option<f64>,
    /// Nearest: the policy used when the client's location is unknown ("all", "weighted",
    /// "failover"). Default "all".
    pub fallback_policy: Option<String>,
    /// Locate clients by the resolver's address even when the query carries ECS.
    #[serde(default, deserialize_with = "strict::bool")]
    pub ignore_ecs: bool,
    /// Geo: named groups of targets, each with its own policy.
    #[serde(default)]
    pub pools: Vec<PoolConfig>,
    /// Geo: location rules, first match wins.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

/// `apps[].pools[]`: a named group of an app's target clusters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub name: String,
    /// Cluster names; each must be one of the app's targets.
    pub clusters: Vec<String>,
    /// "all" (default), "weighted" or "failover".
    pub policy: Option<String>,
}

/// `apps[].rules[]`: where clients matching a location go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// What the rule matches: `region:NAME`, `country:DE`, `continent:EU` or `default`;
    /// one string or a list (any of them).
    #[serde(rename = "match")]
    pub matches: OneOrMany,
    /// Pool names in order of preference: the first with a healthy target answers.
    pub pools: Vec<String>,
    /// Never answer outside these pools (data locality); when they are all down the app's
    /// fallback applies within them.
    #[serde(default, deserialize_with = "strict::bool")]
    pub geofence: bool,
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// `[geo]`: client location.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoConfig {
    /// A MaxMind database (GeoLite2/GeoIP2 City or Country) for country, continent and
    /// coordinates.
    pub mmdb: Option<String>,
    /// Ignore EDNS Client Subnet for every app: locate by the resolver's address.
    #[serde(default, deserialize_with = "strict::bool")]
    pub ignore_ecs: bool,
    /// Trust ECS only from resolvers in these networks (all when absent).
    pub ecs_trusted: Option<Vec<String>>,
    /// Named regions as CIDR lists (longest prefix wins), matched by `region:NAME` rules.
    #[serde(default)]
    pub regions: Vec<RegionConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    pub name: String,
    pub networks: Vec<String>,
}

fn default_fallback() -> String {
    "all".to_owned()
}

pub const DEFAULT_APP_TTL: u32 = 30;

fn default_app_ttl() -> u32 {
    DEFAULT_APP_TTL
}

fn default_policy() -> String {
    "all".to_owned()
}

/// One entry of `apps[].targets`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub cluster: String,
    /// Share of answers (weighted policy); default 1. Optional so that a weight written
    /// under a policy that ignores it can be reported.
    #[serde(default, deserialize_with = "strict::opt_int")]
    pub weight: Option<u32>,
    /// Lower is preferred (failover policy); default 1.
    #[serde(default, deserialize_with = "strict::opt_int")]
    pub priority: Option<u32>,
    /// Stop answering this target (probes keep running).
    #[serde(default, deserialize_with = "strict::bool")]
    pub drain: bool,
    /// Override the probe result: "up" or "down".
    pub force: Option<String>,
    /// Probe this address instead of the cluster's (NAT / proxy setups).
    pub probe_address: Option<String>,
}

/// A target's weight and priority when the file sets none.
pub const DEFAULT_WEIGHT: u32 = 1;
pub const DEFAULT_PRIORITY: u32 = 1;

/// `[fleet]`: gtmd instances that gossip with each other (see `crate::fleet`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// This instance's name, unique in the fleet.
    pub node: String,
    /// The gossip UDP address ("ip:port"): bound, and where peers reach this instance.
    pub listen: String,
    /// Seed peers ("host:port"); any one reachable peer is enough to join.
    #[serde(default)]
    pub peers: Vec<String>,
    /// A file holding the fleet's shared key (at least 16 bytes).
    #[serde(default)]
    pub secret_file: Option<std::path::PathBuf>,
    /// Gossip without authentication: must be written explicitly to run without a key.
    #[serde(default, deserialize_with = "strict::opt_bool")]
    pub insecure: Option<bool>,
    /// How often this instance gossips ("1s").
    #[serde(default, with = "duration::option")]
    pub gossip_interval: Option<Duration>,
    /// A target is answered as up when at least this fraction of the instances with a
    /// fresh observation of it see it up (0.5: down only when a majority sees it down).
    #[serde(default, deserialize_with = "strict::opt_float")]
    pub up_fraction: Option<f64>,
    /// How many live instances probe each target (chosen by rendezvous hashing); unset:
    /// every instance probes every target.
    #[serde(default, deserialize_with = "strict::opt_int")]
    pub probes_per_target: Option<u32>,
}

/// `[health]`: the probe engine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Probes in flight at once, across all targets.
    #[serde(
        default = "default_max_concurrent_probes",
        deserialize_with = "strict::int"
    )]
    pub max_concurrent_probes: usize,
    /// Defaults for every app probe. Setting `kind` here probes every app.
    #[serde(default)]
    pub defaults: Option<ProbeConfig>,
    /// Where the verdict of every target is kept across restarts (unset: nowhere).
    #[serde(default)]
    pub state_file: Option<String>,
    /// A state file (or an entry of it) older than this is ignored at start.
    #[serde(default, with = "duration::option")]
    pub state_max_age: Option<Duration>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            max_concurrent_probes: default_max_concurrent_probes(),
            defaults: None,
            state_file: None,
            state_max_age: None,
        }
    }
}

/// Room for one probe in flight per target of a blackholed cluster of 10,000+ apps: such a
/// probe holds its slot for the whole timeout and is re-probed back to back, so a lower cap
/// queues the detection of the whole cluster behind the slots (1,024 took ~20 s per round
/// at 10,000 apps with a 2 s timeout, against a documented 13 s).
fn default_max_concurrent_probes() -> usize {
    16384
}

/// Probe settings. Every field is optional: an app probe is the merge of built-in defaults,
/// `[health.defaults]`, the cluster's `app_probe` and the app's `probe`, later layers
/// winning field by field.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// `http`, `https`, `tcp`, or `none` (not probed: always up).
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "strict::opt_int")]
    pub port: Option<u16>,
    pub path: Option<String>,
    /// `GET` or `HEAD`.
    pub method: Option<String>,
    /// Host header and TLS SNI; the app's hostname by default.
    pub host: Option<String>,
    /// Accepted status codes: numbers and ranges, e.g. `[200, "300-399"]`. Default 200-399.
    pub expect_status: Option<Vec<StatusSpec>>,
    /// A substring the response body must contain (first 64 KiB).
    pub expect_body: Option<String>,
    /// Extra request headers.
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    /// Verify the server certificate (https). Default true.
    #[serde(default, deserialize_with = "strict::opt_bool")]
    pub tls_verify: Option<bool>,
    /// PEM file of the CA(s) to trust instead of the system roots (https).
    pub ca_file: Option<String>,
    #[serde(default, with = "duration::option")]
    pub interval: Option<Duration>,
    #[serde(default, with = "duration::option")]
    pub timeout: Option<Duration>,
    /// Re-probe interval while a result disagrees with the state. Default interval / 5.
    #[serde(default, with = "duration::option")]
    pub fast_interval: Option<Duration>,
    #[serde(default, deserialize_with = "strict::opt_int")]
    pub rise: Option<u32>,
    #[serde(default, deserialize_with = "strict::opt_int")]
    pub fall: Option<u32>,
    /// State before the first probe settles: "up" (default) or "down".
    pub initial: Option<String>,
    /// More verdict changes than this within `flap_window` is flapping (0: no damping).
    #[serde(default, deserialize_with = "strict::opt_int")]
    pub flap_changes: Option<u32>,
    #[serde(default, with = "duration::option")]
    pub flap_window: Option<Duration>,
    /// Stability a flapping target needs before it is answered again.
    #[serde(default, with = "duration::option")]
    pub flap_hold: Option<Duration>,
    /// Keep-alive: `http` probes of one ingress address share a bounded pool of open
    /// connections (default true; false: a fresh connection per probe). See `health::pool`.
    #[serde(default, deserialize_with = "strict::opt_bool")]
    pub reuse_connections: Option<bool>,
}

/// One entry of `expect_status`: a code (`200`) or a range (`"200-399"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StatusSpec {
    Code(u64),
    Text(String),
}
