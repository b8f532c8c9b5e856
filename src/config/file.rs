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

use super::duration;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
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
    #[serde(default = "default_max_udp_payload")]
    pub max_udp_payload: u16,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            tcp_idle_timeout: default_tcp_idle_timeout(),
            max_udp_payload: default_max_udp_payload(),
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

/// `[[zones]]`: one zone gtmd is authoritative for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// The zone apex, e.g. `apps.example.com` (a trailing dot is optional).
    pub origin: String,
    /// TTL for records that do not set their own.
    #[serde(default = "default_zone_ttl")]
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
    #[serde(default = "default_serial")]
    pub serial: u32,
    #[serde(default = "default_refresh")]
    pub refresh: u32,
    #[serde(default = "default_retry")]
    pub retry: u32,
    #[serde(default = "default_expire")]
    pub expire: u32,
    /// Negative-caching TTL (RFC 2308): NXDOMAIN/NODATA answers carry the SOA with
    /// TTL = min(SOA TTL, minimum).
    #[serde(default = "default_minimum")]
    pub minimum: u32,
    /// TTL of the SOA record itself; the zone TTL when absent.
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
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    /// Ingress (router / load balancer) addresses, IPv4 and/or IPv6.
    #[serde(default)]
    pub ingress: Vec<String>,
}

/// `[[apps]]`: one application hostname steered over clusters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub hostname: String,
    #[serde(default = "default_app_ttl")]
    pub ttl: u32,
    #[serde(default = "default_policy")]
    pub policy: String,
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    /// Health probe settings (consumed by the probe engine).
    #[serde(default)]
    pub probe: Option<ProbeConfig>,
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
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Lower is preferred (used by the failover policy).
    #[serde(default = "default_priority")]
    pub priority: u32,
}

fn default_weight() -> u32 {
    1
}
fn default_priority() -> u32 {
    1
}

/// `apps[].probe`: how the health of the app in each cluster is checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// `http`, `https` or `tcp`.
    #[serde(default = "default_probe_kind")]
    pub kind: String,
    pub port: Option<u16>,
    #[serde(default = "default_probe_path")]
    pub path: String,
    #[serde(default = "default_probe_interval", with = "duration")]
    pub interval: Duration,
    #[serde(default = "default_probe_timeout", with = "duration")]
    pub timeout: Duration,
    #[serde(default = "default_rise")]
    pub rise: u32,
    #[serde(default = "default_fall")]
    pub fall: u32,
}

fn default_probe_kind() -> String {
    "http".to_owned()
}
fn default_probe_path() -> String {
    "/".to_owned()
}
fn default_probe_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_probe_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}
