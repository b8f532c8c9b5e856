//! `[fleet]`: real gtmd processes on loopback that gossip with each other (membership,
//! authentication, configuration divergence). The shared verdicts are not built yet.

use std::{
    io::Write,
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use crate::{
    cli::{Served, free_port, serve_command, spawn_only},
    support::{http_get, wait_for},
};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/gtmd.toml");

/// The example config with a `[fleet]` keyed by `key` (a file), plus `extra` text: every
/// instance reads the same file, and its own identity comes from the environment (as a
/// StatefulSet's pods would from their name).
fn fleet_file(key: &std::path::Path, extra: &str) -> tempfile::NamedTempFile {
    example_with_fleet(&format!(
        "secret_file = {:?}\ngossip_interval = \"250ms\"\n{extra}",
        key.display().to_string()
    ))
}

/// The example config with `[fleet]` holding `fleet`, as a file.
fn example_with_fleet(fleet: &str) -> tempfile::NamedTempFile {
    let toml = format!(
        "{}\n[fleet]\n{fleet}",
        std::fs::read_to_string(EXAMPLE).unwrap()
    );
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(toml.as_bytes()).unwrap();
    f
}

fn key_file(key: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "{key}").unwrap();
    f
}

/// A gossip address on 127.0.0.1, below the ephemeral range (no outgoing socket takes it
/// meanwhile).
fn gossip_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

struct Instance {
    served: Served,
    admin: SocketAddr,
    gossip: SocketAddr,
}

/// `gtmd serve` of `config` as fleet node `node`, gossiping on `gossip`, seeded with
/// `peers`; returns once its admin endpoint answers.
fn start(
    config: &std::path::Path,
    node: &str,
    gossip: SocketAddr,
    peers: &[SocketAddr],
) -> Instance {
    let dns = free_port();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let peers: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
    let mut cmd = serve_command(config, &[]);
    cmd.env("GTMD__SERVER__LISTEN", format!("127.0.0.1:{dns}"))
        .env("GTMD__ADMIN__LISTEN", admin.to_string())
        .env("GTMD__FLEET__NODE", node)
        .env("GTMD__FLEET__LISTEN", gossip.to_string());
    if !peers.is_empty() {
        cmd.env("GTMD__FLEET__PEERS", peers.join(","));
    }
    let mut served = spawn_only(cmd);
    wait_for("the admin endpoint", Duration::from_secs(60), || {
        if let Ok(Some(status)) = served.0.try_wait() {
            panic!("gtmd {node} exited ({status}): {}", served.stderr());
        }
        std::net::TcpStream::connect(admin).is_ok()
    });
    Instance {
        served,
        admin,
        gossip,
    }
}

fn fleet(i: &Instance) -> serde_json::Value {
    let (status, body) = http_get(i.admin, "/api/v1/fleet");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn peer_names(v: &serde_json::Value) -> Vec<String> {
    v["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["node"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits (at most a minute) until `i` sees exactly `nodes` live; returns its view.
fn until_peers(i: &Instance, nodes: &[&str]) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    wait_for(&format!("peers {nodes:?}"), Duration::from_secs(60), || {
        last = fleet(i);
        peer_names(&last) == nodes
    });
    last
}

fn metric(i: &Instance, line_start: &str) -> f64 {
    let (_, text) = http_get(i.admin, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in /metrics"))
}

/// Two instances reading the same file find each other from one seed, see the same
/// configuration; a third with another key never joins, and its gossip is counted as
/// rejected; garbage on the gossip port changes nothing.
#[test]
fn instances_with_the_key_meet_and_others_stay_out() {
    let key = key_file("0123456789abcdef0123456789abcdef");
    let config = fleet_file(key.path(), "");
    let a = start(config.path(), "a", gossip_addr(), &[]);
    let b = start(config.path(), "b", gossip_addr(), &[a.gossip]);
    let seen = until_peers(&a, &["b"]);
    assert_eq!(seen["node"], "a");
    assert_eq!(seen["authenticated"], true);
    assert_eq!(seen["peers"][0]["gossip"], b.gossip.to_string());
    assert_eq!(seen["peers"][0]["same_config"], true, "{seen}");
    assert_eq!(seen["config_divergent_peers"], 0);
    until_peers(&b, &["a"]);
    wait_for("gtmd_fleet_peers 1", Duration::from_secs(60), || {
        metric(&a, "gtmd_fleet_peers ") == 1.0
    });
    assert_eq!(metric(&a, "gtmd_fleet_gossip_up "), 1.0);

    // Another key: seeded with a, it is never seen, and a counts its packets.
    let other = key_file("another fleet's key of 32 bytes!");
    let other_config = fleet_file(other.path(), "");
    let c = start(other_config.path(), "c", gossip_addr(), &[a.gossip]);
    let bad_tag = "gtmd_fleet_packets_rejected_total{reason=\"bad_tag\"} ";
    wait_for("c's packets rejected by a", Duration::from_secs(60), || {
        metric(&a, bad_tag) > 0.0
    });
    // Garbage: too short for a tag, and random bytes (not the fleet's tag).
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    let bad_before = metric(&a, bad_tag);
    junk.send_to(b"x", a.gossip).unwrap();
    junk.send_to(&[0x5a; 512], a.gossip).unwrap();
    let short = "gtmd_fleet_packets_rejected_total{reason=\"short\"} ";
    wait_for("the garbage counted", Duration::from_secs(60), || {
        metric(&a, short) > 0.0 && metric(&a, bad_tag) > bad_before
    });
    // c joined neither side, and a and b still see each other.
    until_peers(&a, &["b"]);
    until_peers(&b, &["a"]);
    assert_eq!(peer_names(&fleet(&c)), Vec::<String>::new());
    let _keep = (&a.served, &b.served, &c.served);
}

/// Two instances running different files: each shows the other as divergent, counts it,
/// and keeps answering from its own configuration.
#[test]
fn a_peer_with_another_configuration_is_shown_as_divergent() {
    let key = key_file("0123456789abcdef0123456789abcdef");
    let first = fleet_file(key.path(), "");
    let second = fleet_file(key.path(), "# another revision of the file\n");
    let a = start(first.path(), "a", gossip_addr(), &[]);
    let b = start(second.path(), "b", gossip_addr(), &[a.gossip]);
    let mut view = serde_json::Value::Null;
    wait_for("b seen with its own hash", Duration::from_secs(60), || {
        view = fleet(&a);
        view["peers"][0]["config_hash"].is_string()
    });
    assert_eq!(view["peers"][0]["same_config"], false, "{view}");
    assert_ne!(view["peers"][0]["config_hash"], view["config_hash"]);
    assert_eq!(view["config_divergent_peers"], 1);
    wait_for("the divergence counted", Duration::from_secs(60), || {
        metric(&a, "gtmd_fleet_config_divergent_peers ") == 1.0
    });
    // b's file becomes a's (as a rollout of the same revision would): b reloads it (the
    // file is watched), and a sees the same configuration from then on.
    std::fs::write(second.path(), std::fs::read(first.path()).unwrap()).unwrap();
    wait_for("b's new hash seen by a", Duration::from_secs(60), || {
        let v = fleet(&a);
        v["peers"][0]["same_config"] == true && v["config_divergent_peers"] == 0
    });
    wait_for("no divergence counted", Duration::from_secs(60), || {
        metric(&a, "gtmd_fleet_config_divergent_peers ") == 0.0
    });
    // A reload that changes [fleet] itself is refused (the gossip node is started once):
    // b keeps its configuration and says so.
    let changed = std::fs::read_to_string(first.path())
        .unwrap()
        .replace("gossip_interval = \"250ms\"", "gossip_interval = \"2s\"");
    std::fs::write(second.path(), changed).unwrap();
    wait_for("the reload refused", Duration::from_secs(60), || {
        b.served
            .stderr()
            .contains("[fleet] changed: restart gtmd to apply it")
    });
    wait_for(
        "b still on a's configuration",
        Duration::from_secs(60),
        || fleet(&a)["peers"][0]["same_config"] == true,
    );
    let _keep = (&a.served, &b.served);
}

/// A fleet without a key is refused at start, with the reason and the way out.
#[test]
fn a_fleet_without_a_key_is_refused_unless_insecure_is_written() {
    let file = example_with_fleet("node = \"a\"\nlisten = \"127.0.0.1:7946\"\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gtmd"))
        .args(["check", "--config"])
        .arg(file.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("fleet.secret_file: missing"), "{text}");
    assert!(text.contains("insecure = true"), "{text}");
}

/// `insecure = true` runs a fleet without a key, and says so.
#[test]
fn an_insecure_fleet_runs_and_warns() {
    let file = example_with_fleet("insecure = true\ngossip_interval = \"250ms\"\n");
    let a = start(file.path(), "a", gossip_addr(), &[]);
    let b = start(file.path(), "b", gossip_addr(), &[a.gossip]);
    let seen = until_peers(&a, &["b"]);
    assert_eq!(seen["authenticated"], false);
    assert!(a.served.stderr().contains("WITHOUT authentication"));
    let _keep = &b.served;
}
