//! `[fleet]`, validated: who this instance is in the fleet and how it gossips.

use std::{io::Read, net::SocketAddr, time::Duration};

use crate::{config::file::FleetConfig, fleet::auth::FleetKey};

use super::Errors;

/// The gossip interval when `fleet.gossip_interval` is not set.
pub const DEFAULT_GOSSIP_INTERVAL: Duration = Duration::from_secs(1);

/// A shared key file larger than this is not a key (it is read whole).
const MAX_SECRET_FILE: u64 = 4096;

#[derive(Clone)]
pub struct FleetModel {
    pub node: String,
    pub listen: SocketAddr,
    pub peers: Vec<String>,
    /// None only with `insecure = true`.
    pub key: Option<FleetKey>,
    pub gossip_interval: Duration,
    /// `fleet.up_fraction`.
    pub up_fraction: f64,
    /// `fleet.probes_per_target`: None, every instance probes every target.
    pub probes_per_target: Option<usize>,
}

/// `fleet.up_fraction` when not set: a target is down only when a majority of the
/// instances that observe it see it down.
pub const DEFAULT_UP_FRACTION: f64 = 0.5;

impl FleetModel {
    /// The same gossip settings, the key compared by its bytes' fingerprint.
    pub fn same_settings(&self, other: &Self) -> bool {
        self.node == other.node
            && self.listen == other.listen
            && self.peers == other.peers
            && self.gossip_interval == other.gossip_interval
            && self.up_fraction == other.up_fraction
            && self.probes_per_target == other.probes_per_target
            && self.key.as_ref().map(FleetKey::fingerprint)
                == other.key.as_ref().map(FleetKey::fingerprint)
    }
}

impl std::fmt::Debug for FleetModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("FleetModel")
            .field("node", &self.node)
            .field("listen", &self.listen)
            .field("peers", &self.peers)
            .field("authenticated", &self.key.is_some())
            .field("gossip_interval", &self.gossip_interval)
            .field("up_fraction", &self.up_fraction)
            .field("probes_per_target", &self.probes_per_target)
            .finish()
    }
}

pub fn validate(cfg: &FleetConfig, errors: &mut Errors) -> Option<FleetModel> {
    let node = cfg.node.trim();
    if node.is_empty() || node.len() > 63 || !node.bytes().all(|b| b.is_ascii_graphic()) {
        errors.push(
            "fleet.node",
            format!(
                "{:?}: a name of 1 to 63 visible ASCII characters is needed",
                cfg.node
            ),
        );
    }
    let listen = match cfg.listen.parse::<SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => {
            errors.push(
                "fleet.listen",
                format!(
                    "{}: peers reach this instance at this address, so it must be a real one, not a wildcard",
                    cfg.listen
                ),
            );
            None
        }
        Ok(a) if a.port() == 0 => {
            errors.push("fleet.listen", format!("{}: a port is needed", cfg.listen));
            None
        }
        Ok(a) => Some(a),
        Err(_) => {
            errors.push(
                "fleet.listen",
                format!(
                    "{:?} is not an address and port (\"10.0.0.5:7946\")",
                    cfg.listen
                ),
            );
            None
        }
    };
    // Trimmed, and empty entries left out (`GTMD__FLEET__PEERS=""`, "a:1, b:2").
    let peers: Vec<String> = cfg
        .peers
        .iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    for (i, peer) in peers.iter().enumerate() {
        let ok = peer.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !ok {
            errors.push(
                format!("fleet.peers[{i}]"),
                format!("{peer:?} is not \"host:port\""),
            );
        }
    }
    let insecure = cfg.insecure.unwrap_or(false);
    let key = match (&cfg.secret_file, insecure) {
        (Some(path), false) => match read_secret(path) {
            Ok(k) => Some(k),
            Err(e) => {
                errors.push("fleet.secret_file", format!("{}: {e}", path.display()));
                None
            }
        },
        (Some(_), true) => {
            errors.push(
                "fleet.insecure",
                "true together with secret_file: choose one (the key authenticates every gossip packet)",
            );
            None
        }
        (None, true) => None,
        (None, false) => {
            errors.push(
                "fleet.secret_file",
                "missing: every gossip packet is authenticated with a shared key; write \
                 `insecure = true` to run a fleet without one (anyone who can send UDP to \
                 fleet.listen could then change the answers)",
            );
            None
        }
    };
    let gossip_interval = cfg.gossip_interval.unwrap_or(DEFAULT_GOSSIP_INTERVAL);
    if !(Duration::from_millis(50)..=Duration::from_secs(60)).contains(&gossip_interval) {
        errors.push(
            "fleet.gossip_interval",
            format!("{gossip_interval:?} is out of range 50ms..=60s"),
        );
    }
    let up_fraction = cfg.up_fraction.unwrap_or(DEFAULT_UP_FRACTION);
    if !(up_fraction > 0.0 && up_fraction <= 1.0) {
        errors.push(
            "fleet.up_fraction",
            format!(
                "{up_fraction} is out of range: more than 0 (0 would never take a target \
                 out) and at most 1 (every instance that observes it must see it up)"
            ),
        );
    }
    if cfg.probes_per_target == Some(0) {
        errors.push(
            "fleet.probes_per_target",
            "0: at least one instance must probe each target (leave it out for all of them)",
        );
    }
    Some(FleetModel {
        node: node.to_owned(),
        listen: listen?,
        peers,
        key,
        gossip_interval,
        up_fraction,
        probes_per_target: cfg.probes_per_target.map(|k| k as usize),
    })
}

fn read_secret(path: &std::path::Path) -> Result<FleetKey, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_SECRET_FILE {
        return Err(format!(
            "larger than {MAX_SECRET_FILE} bytes: not a key file"
        ));
    }
    FleetKey::new(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> FleetConfig {
        toml::from_str(&format!(
            "node = \"a\"\nlisten = \"127.0.0.1:7946\"\n{extra}"
        ))
        .unwrap()
    }

    fn errors_of(c: &FleetConfig) -> Vec<String> {
        let mut e = Errors::default();
        validate(c, &mut e);
        e.into_vec().iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn a_fleet_needs_a_key_unless_insecure_is_written() {
        let e = errors_of(&cfg(""));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("fleet.secret_file: missing"), "{e:?}");
        assert!(errors_of(&cfg("insecure = true")).is_empty());
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").unwrap();
        let with_key = cfg(&format!("secret_file = {:?}", key.display().to_string()));
        assert!(errors_of(&with_key).is_empty());
        let mut e = Errors::default();
        assert!(validate(&with_key, &mut e).unwrap().key.is_some());
        std::fs::write(&key, "short").unwrap();
        let e = errors_of(&with_key);
        assert!(e[0].contains("at least 16"), "{e:?}");
        let missing = cfg("secret_file = \"/nonexistent/key\"");
        assert!(errors_of(&missing)[0].starts_with("fleet.secret_file: /nonexistent/key"));
    }

    #[test]
    fn addresses_are_checked_with_their_paths() {
        let bad = |listen: &str, peers: &str| {
            let c: FleetConfig = toml::from_str(&format!(
                "node = \"a\"\nlisten = {listen:?}\npeers = {peers}\ninsecure = true"
            ))
            .unwrap();
            errors_of(&c)
        };
        assert!(bad("0.0.0.0:7946", "[]")[0].starts_with("fleet.listen: 0.0.0.0:7946"));
        assert!(bad("gtmd-0:7946", "[]")[0].starts_with("fleet.listen"));
        let fraction = |f: &str| errors_of(&cfg(&format!("insecure = true\nup_fraction = {f}")));
        assert!(fraction("0.5").is_empty() && fraction("1").is_empty());
        for f in ["0", "1.5", "-0.1", "nan"] {
            assert!(fraction(f)[0].starts_with("fleet.up_fraction"), "{f}");
        }
        let e = bad("127.0.0.1:7946", r#"["gtmd-1.gtmd:7946", "nope", "x:0"]"#);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("fleet.peers[1]"), "{e:?}");
        assert!(e[1].starts_with("fleet.peers[2]"), "{e:?}");
    }
}
