//! `[server]` validation.

use std::{collections::HashSet, net::SocketAddr, time::Duration};

use super::ServerModel;
use crate::config::{
    Errors,
    file::{AdminConfig, ServerConfig},
};

/// Bounds on the admin endpoint's connections (`[admin]`; see the config keys' docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub connection_lifetime: Duration,
}

pub fn validate(cfg: &ServerConfig, admin_cfg: &AdminConfig, errors: &mut Errors) -> ServerModel {
    let mut listen = Vec::new();
    let mut seen = HashSet::new();
    if cfg.listen.is_empty() {
        errors.push("server.listen", "at least one listen address is needed");
    }
    for (i, text) in cfg.listen.iter().enumerate() {
        let path = format!("server.listen[{i}]");
        match text.trim().parse::<SocketAddr>() {
            Ok(addr) if !seen.insert(addr) => errors.push(path, format!("duplicate address {addr}")),
            Ok(addr) => listen.push(addr),
            Err(_) => errors.push(
                path,
                format!(
                    "invalid address {text:?}: expected IP:PORT, e.g. \"127.0.0.1:53\" or \"[::1]:53\""
                ),
            ),
        }
    }
    if !(512..=4096).contains(&cfg.max_udp_payload) {
        errors.push(
            "server.max_udp_payload",
            format!(
                "{} is out of range 512..=4096 (1232 avoids IP fragmentation)",
                cfg.max_udp_payload
            ),
        );
    }
    let t = cfg.tcp_idle_timeout;
    if t < Duration::from_millis(100) || t > Duration::from_secs(3600) {
        errors.push(
            "server.tcp_idle_timeout",
            format!("{t:?} is out of range 100ms..=1h"),
        );
    }
    if cfg.shutdown_grace > MAX_SHUTDOWN_GRACE {
        errors.push(
            "server.shutdown_grace",
            format!(
                "{:?} is out of range 0s..=10m (0 stops at once)",
                cfg.shutdown_grace
            ),
        );
    }
    let admin = if admin_cfg.enabled {
        match admin_cfg.listen.trim().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                errors.push(
                    "admin.listen",
                    format!(
                        "invalid address {:?}: expected IP:PORT, e.g. \"127.0.0.1:9153\"",
                        admin_cfg.listen
                    ),
                );
                None
            }
        }
    } else {
        None
    };
    if let Some(a) = admin
        && a.port() != 0
        && listen.iter().any(|l| {
            l.port() == a.port()
                && (l.ip() == a.ip() || l.ip().is_unspecified() || a.ip().is_unspecified())
        })
    {
        errors.push(
            "admin.listen",
            format!("{a} collides with a DNS listen address"),
        );
    }
    if cfg.udp_workers > 64 {
        errors.push(
            "server.udp_workers",
            format!(
                "{} is out of range 0..=64 (0: one per CPU)",
                cfg.udp_workers
            ),
        );
    }
    let udp_workers = match cfg.udp_workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(16)),
        n => n.min(64),
    };
    if !(1..=1_000_000).contains(&cfg.tcp_max_connections) {
        errors.push(
            "server.tcp_max_connections",
            format!("{} is out of range 1..=1000000", cfg.tcp_max_connections),
        );
    }
    if !(16..=65_536).contains(&cfg.full_path_queue) {
        errors.push(
            "server.full_path_queue",
            format!("{} is out of range 16..=65536", cfg.full_path_queue),
        );
    }
    if !(1..=1_000_000).contains(&cfg.tcp_max_connections_per_ip) {
        errors.push(
            "server.tcp_max_connections_per_ip",
            format!(
                "{} is out of range 1..=1000000",
                cfg.tcp_max_connections_per_ip
            ),
        );
    }
    if !(1..=100_000).contains(&admin_cfg.max_connections) {
        errors.push(
            "admin.max_connections",
            format!("{} is out of range 1..=100000", admin_cfg.max_connections),
        );
    }
    for (key, t) in [
        ("admin.header_timeout", admin_cfg.header_timeout),
        ("admin.connection_lifetime", admin_cfg.connection_lifetime),
    ] {
        if t < Duration::from_millis(100) || t > Duration::from_secs(86_400) {
            errors.push(key, format!("{t:?} is out of range 100ms..=24h"));
        }
    }
    let admin_limits = AdminLimits {
        max_connections: admin_cfg.max_connections.max(1),
        header_timeout: admin_cfg.header_timeout,
        connection_lifetime: admin_cfg.connection_lifetime,
    };
    ServerModel {
        listen,
        admin,
        admin_limits,
        udp_workers,
        tcp_max_connections: cfg.tcp_max_connections.max(1),
        tcp_max_connections_per_ip: cfg.tcp_max_connections_per_ip.max(1),
        tcp_max_queries: cfg.tcp_max_queries,
        full_path_queue: cfg.full_path_queue.clamp(16, 65_536),
        rrl: None,
        tcp_idle_timeout: cfg.tcp_idle_timeout,
        max_udp_payload: cfg.max_udp_payload,
        shutdown_grace: cfg.shutdown_grace.min(MAX_SHUTDOWN_GRACE),
    }
}

/// A stop is bounded: the supervisor (systemd's TimeoutStopSec, Kubernetes'
/// terminationGracePeriodSeconds) must wait longer than this, so it stays short.
pub const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(600);

/// `[rrl]`: None when disabled.
pub fn validate_rrl(
    cfg: &crate::config::file::RrlConfig,
    errors: &mut Errors,
) -> Option<crate::dns::rrl::RrlSettings> {
    if !(1..=1_000_000).contains(&cfg.responses_per_second) {
        errors.push(
            "rrl.responses_per_second",
            format!("{} is out of range 1..=1000000", cfg.responses_per_second),
        );
    }
    if cfg.slip > 100 {
        errors.push("rrl.slip", format!("{} is out of range 0..=100", cfg.slip));
    }
    if !(8..=32).contains(&cfg.ipv4_prefix) {
        errors.push(
            "rrl.ipv4_prefix",
            format!("{} is out of range 8..=32", cfg.ipv4_prefix),
        );
    }
    if !(16..=128).contains(&cfg.ipv6_prefix) {
        errors.push(
            "rrl.ipv6_prefix",
            format!("{} is out of range 16..=128", cfg.ipv6_prefix),
        );
    }
    let exempt = cfg
        .exempt
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            n.trim()
                .parse::<ipnet::IpNet>()
                .map_err(|_| {
                    errors.push(
                        format!("rrl.exempt[{i}]"),
                        format!("invalid network {n:?} (expected CIDR, e.g. 10.0.0.0/8)"),
                    )
                })
                .ok()
        })
        .map(|n| n.trunc())
        .collect();
    cfg.enabled.then_some(crate::dns::rrl::RrlSettings {
        responses_per_second: cfg.responses_per_second,
        slip: cfg.slip,
        ipv4_prefix: cfg.ipv4_prefix,
        ipv6_prefix: cfg.ipv6_prefix,
        exempt,
    })
}
