//! `[fleet]`: real gtmd processes on loopback that gossip with each other (membership,
//! authentication, configuration divergence) and answer from one agreed view of health:
//! an instance with a broken path to a cluster is overruled, a real outage is agreed by
//! all, a (re)started instance answers the fleet's view from its first answer, and a
//! partitioned one answers from its own probes until the cut heals.

use std::{
    io::Write,
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use hickory_proto::{
    op::Message,
    rr::{RData, RecordType},
};

use crate::{
    backend::{Backend, Mode},
    cli::{Served, free_port, serve_command, spawn_only},
    support::{http_get, query, udp_raw_timeout, wait_for},
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
    dns: SocketAddr,
}

/// `gtmd serve` of `config` as fleet node `node`, gossiping on `gossip`, seeded with
/// `peers`, not started yet; with its DNS and admin addresses.
fn command(
    config: &std::path::Path,
    node: &str,
    gossip: SocketAddr,
    peers: &[SocketAddr],
) -> (std::process::Command, SocketAddr, SocketAddr) {
    let dns: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let peers: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
    let mut cmd = serve_command(config, &[]);
    cmd.env("GTMD__SERVER__LISTEN", dns.to_string())
        .env("GTMD__ADMIN__LISTEN", admin.to_string())
        .env("GTMD__FLEET__NODE", node)
        .env("GTMD__FLEET__LISTEN", gossip.to_string());
    if !peers.is_empty() {
        cmd.env("GTMD__FLEET__PEERS", peers.join(","));
    }
    (cmd, dns, admin)
}

/// `gtmd serve` of `config` as fleet node `node`, gossiping on `gossip`, seeded with
/// `peers`; returns once its admin endpoint answers.
fn start(
    config: &std::path::Path,
    node: &str,
    gossip: SocketAddr,
    peers: &[SocketAddr],
) -> Instance {
    let (cmd, dns, admin) = command(config, node, gossip, peers);
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
        dns,
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
    // Another revision: the apex TXT record says so.
    let second = fleet_file(key.path(), "");
    let revised = std::fs::read_to_string(second.path()).unwrap().replace(
        r#"value = "gtmd example zone""#,
        r#"value = "gtmd example zone, revision 2""#,
    );
    std::fs::write(second.path(), revised).unwrap();
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
    // Each answers from its own configuration.
    let txt = |i: &Instance| -> String {
        let q = query("apps.example.com.", RecordType::TXT)
            .to_vec()
            .unwrap();
        let reply = udp_raw_timeout(i.dns, &q, Duration::from_secs(5)).expect("a TXT reply");
        Message::from_vec(&reply).unwrap().answers[0]
            .data
            .to_string()
    };
    assert!(txt(&a).contains("gtmd example zone") && !txt(&a).contains("revision 2"));
    assert!(
        txt(&b).contains("gtmd example zone, revision 2"),
        "{}",
        txt(&b)
    );
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

// ---- Three instances, three clusters: the agreed view ----

const ONE: &str = "127.0.0.81";
const TWO: &str = "127.0.0.82";
const THREE: &str = "127.0.0.83";
const APP: &str = "shop.w.test.";

/// Three clusters, each with its backend, and one file every instance reads.
struct Trio {
    _dir: tempfile::TempDir,
    _key: tempfile::NamedTempFile,
    config: std::path::PathBuf,
    backends: [Backend; 3],
}

/// shop.w.test on clusters one, two and three (policy all), probed over http every
/// second (fall 2, rise 2, no flap hold), gossip every 250 ms.
fn trio() -> Trio {
    trio_with("")
}

/// [`trio`] with `fleet` lines added to `[fleet]`.
fn trio_with(fleet: &str) -> Trio {
    trio_probing(
        r#"interval = "1s"
# No loaded machine makes a healthy backend miss this; no flap hold.
timeout = "900ms"
fast_interval = "100ms"
"#,
        fleet,
    )
}

/// [`trio`] with the probes' `timing` (interval, timeout, fast_interval) and `fleet` lines.
fn trio_probing(timing: &str, fleet: &str) -> Trio {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file("0123456789abcdef0123456789abcdef");
    let backends = [Backend::http(ONE), Backend::http(TWO), Backend::http(THREE)];
    let config = dir.path().join("gtmd.toml");
    let mut text = format!(
        r#"
[health.defaults]
kind = "http"
{timing}rise = 2
fall = 2
flap_changes = 0
[[zones]]
origin = "w.test"
nameservers = ["ns.outside.net"]
[zones.soa]
mname = "ns.outside.net"
rname = "h.w.test"
"#
    );
    for (name, b) in ["one", "two", "three"].iter().zip(&backends) {
        text.push_str(&format!(
            "[[clusters]]\nname = \"{name}\"\ningress = [\"{}\"]\napp_probe = {{ port = {} }}\n",
            b.addr.ip(),
            b.addr.port()
        ));
    }
    text.push_str(&format!(
        r#"[[apps]]
hostname = "shop.w.test"
policy = "all"
targets = [{{ cluster = "one" }}, {{ cluster = "two" }}, {{ cluster = "three" }}]
[fleet]
secret_file = {:?}
gossip_interval = "250ms"
{fleet}
"#,
        key.path().display().to_string()
    ));
    std::fs::write(&config, text).unwrap();
    Trio {
        _dir: dir,
        _key: key,
        config,
        backends,
    }
}

/// The A records of shop.w.test from `dns`, sorted (None without a reply).
fn answer(dns: SocketAddr) -> Option<Vec<String>> {
    let q = query(APP, RecordType::A).to_vec().unwrap();
    let reply = udp_raw_timeout(dns, &q, Duration::from_millis(500))?;
    Some(a_records(&Message::from_vec(&reply).ok()?))
}

/// The A records of a reply, sorted.
fn a_records(msg: &Message) -> Vec<String> {
    let mut ips: Vec<String> = msg
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    ips.sort();
    ips
}

fn all_three() -> Vec<String> {
    vec![ONE.to_owned(), TWO.to_owned(), THREE.to_owned()]
}

fn without(ip: &str) -> Vec<String> {
    all_three().into_iter().filter(|a| a != ip).collect()
}

/// The status of shop.w.test's target in `cluster` as `i` shows it.
fn target_status(i: &Instance, cluster: &str) -> serde_json::Value {
    let (status, body) = http_get(i.admin, "/api/v1/status?app=shop.w.test");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["apps"][0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["cluster"] == cluster)
        .cloned()
        .unwrap_or_else(|| panic!("no target in {cluster}: {v}"))
}

/// Waits until every instance answers `want`; returns when each first did, measured from
/// the call (a failure after a minute).
fn until_all_answer(instances: &[&Instance], want: &[String]) -> Vec<Duration> {
    let started = std::time::Instant::now();
    let mut when: Vec<Option<Duration>> = vec![None; instances.len()];
    wait_for(
        &format!("every instance answers {want:?}"),
        Duration::from_secs(60),
        || {
            for (i, inst) in instances.iter().enumerate() {
                let now = answer(inst.dns);
                match (&when[i], now.as_deref() == Some(want)) {
                    (None, true) => when[i] = Some(started.elapsed()),
                    (Some(_), false) => when[i] = None,
                    _ => {}
                }
            }
            when.iter().all(Option::is_some)
        },
    );
    when.into_iter().map(Option::unwrap).collect()
}

/// a, b and c, c and b seeded with a; returns once each sees the two others and holds
/// their observations of cluster one.
fn start_trio(t: &Trio) -> [Instance; 3] {
    start_trio_observing(t, 3)
}

/// [`start_trio`], waiting for `fresh` observations of cluster one at each instance.
fn start_trio_observing(t: &Trio, fresh: u64) -> [Instance; 3] {
    let a = start(&t.config, "a", gossip_addr(), &[]);
    let b = start(&t.config, "b", gossip_addr(), &[a.gossip]);
    let c = start(&t.config, "c", gossip_addr(), &[a.gossip]);
    until_peers(&a, &["b", "c"]);
    until_peers(&b, &["a", "c"]);
    until_peers(&c, &["a", "b"]);
    for i in [&a, &b, &c] {
        wait_for("three fresh observations", Duration::from_secs(60), || {
            target_status(i, "one")["fleet"]["fresh_observations"] == fresh
        });
    }
    [a, b, c]
}

/// One instance's path to cluster two breaks (its probes fail, the others' succeed): the
/// fleet overrules it and all three keep answering cluster two. Cluster two really dies:
/// all three drop it. It comes back: all three answer it again (c still overruled).
#[test]
fn a_broken_path_is_overruled_and_a_real_outage_is_agreed() {
    let t = trio();
    // c's probes of cluster two fail from the start (they name c in their User-Agent).
    t.backends[1].block_agent("(fleet node c)");
    let [a, b, c] = start_trio(&t);
    // Until c's own probe is down, and a's and b's observations reached it.
    let mut s = serde_json::Value::Null;
    wait_for(
        "c's own probe of two down, overruled",
        Duration::from_secs(60),
        || {
            s = target_status(&c, "two");
            s["fleet"]["own"] == "down (http)" && s["fleet"]["fresh_observations"] == 3
        },
    );
    assert_eq!(s["fleet"]["overruled"], true, "{s}");
    assert_eq!(s["health"]["up"], false, "c's own verdict: {s}");
    assert_eq!(s["fleet"]["answered"]["up"], true, "{s}");
    assert!(
        s["fleet"]["answered"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("fleet: 2 of 3 instances see it up (this instance: status 503)"),
        "{s}"
    );
    // What is answered follows (one batch publication later).
    wait_for(
        "c's answer plan from the agreed verdict",
        Duration::from_secs(60),
        || {
            let s = target_status(&c, "two");
            s["state"] == "up" && s["detail"].as_str().unwrap().starts_with("fleet: 2 of 3")
        },
    );
    for i in [&a, &b, &c] {
        assert_eq!(answer(i.dns).unwrap(), all_three(), "{}", i.served.stderr());
    }
    // explain says so.
    let (_, body) = http_get(c.admin, "/api/v1/explain?name=shop.w.test&client=127.0.0.1");
    let explained: serde_json::Value = serde_json::from_str(&body).unwrap();
    let steps = explained["steps"].to_string();
    assert!(
        steps.contains(
            "two: the fleet overrules this instance's own probes and counts it up: fleet: 2 of 3"
        ),
        "{explained}"
    );
    // a sees what c sees (once c's observation reached it), and is not overruled.
    let mut s = serde_json::Value::Null;
    wait_for("a sees c's observation", Duration::from_secs(60), || {
        s = target_status(&a, "two");
        s["fleet"]["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["node"] == "c" && p["sees"] == "down (http)")
            && s["fleet"]["fresh_observations"] == 3
    });
    assert_eq!(s["fleet"]["overruled"], false, "{s}");
    // The gauges (counted at each 5 s sweep): c is overruled on one target, a sees one
    // target with a dissenting observation, and each peer observes all three targets.
    wait_for("the fleet gauges", Duration::from_secs(60), || {
        metric(&c, "gtmd_fleet_overruled_targets ") == 1.0
            && metric(&a, "gtmd_fleet_disagreeing_targets ") == 1.0
            && metric(&a, "gtmd_fleet_overruled_targets ") == 0.0
    });
    assert_eq!(metric(&a, "gtmd_fleet_peer_observations{node=\"c\"} "), 3.0);
    assert_eq!(metric(&c, "gtmd_fleet_peer_observations{node=\"b\"} "), 3.0);

    // Cluster two dies for everyone.
    t.backends[1].set(Mode::Closed);
    let gone = until_all_answer(&[&a, &b, &c], &without(TWO));
    eprintln!("cluster two dropped by a, b, c after {gone:?}");
    // It comes back (c's path is still broken: it is overruled again).
    t.backends[1].set(Mode::Ok);
    let back = until_all_answer(&[&a, &b, &c], &all_three());
    eprintln!("cluster two answered again by a, b, c after {back:?}");
    assert_eq!(target_status(&c, "two")["fleet"]["overruled"], true);
}

/// Starts an instance and returns it with the very first answer it gives (queries sent
/// from one socket that stays open from before it listens, so the first reply is the
/// first answer).
fn start_and_first_answer(
    config: &std::path::Path,
    node: &str,
    gossip: SocketAddr,
    peers: &[SocketAddr],
) -> (Instance, Vec<String>) {
    let (cmd, dns, admin) = command(config, node, gossip, peers);
    let served = spawn_only(cmd);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut id = 0u16;
    while std::time::Instant::now() < deadline {
        id = id.wrapping_add(1);
        let mut q = query(APP, RecordType::A);
        q.metadata.id = id;
        // Refused (ICMP) while nothing listens yet: try again.
        let _ = sock.send_to(&q.to_vec().unwrap(), dns);
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let ips = a_records(&Message::from_vec(&buf[..n]).unwrap());
            let instance = Instance {
                served,
                admin,
                gossip,
                dns,
            };
            return (instance, ips);
        }
    }
    panic!("{node} did not answer within 60 s:\n{}", served.stderr());
}

/// Cluster three is dead for a and b, alive for c's probes (c's path is the odd one): a
/// (re)started c answers without it from its very first answer, before its own probes
/// could say anything, and goes on doing so when they say it is up (two of three see it
/// down).
#[test]
fn a_restarted_instance_answers_the_fleets_view_from_its_first_answer() {
    let t = trio();
    t.backends[2].block_agent("(fleet node a)");
    t.backends[2].block_agent("(fleet node b)");
    let a = start(&t.config, "a", gossip_addr(), &[]);
    let b = start(&t.config, "b", gossip_addr(), &[a.gossip]);
    until_peers(&a, &["b"]);
    // Both have seen it down themselves, and know it of each other.
    for i in [&a, &b] {
        wait_for(
            "two observations of three down",
            Duration::from_secs(60),
            || {
                let s = target_status(i, "three");
                s["fleet"]["own"] == "down (http)"
                    && s["fleet"]["fresh_observations"] == 2
                    && s["fleet"]["up_observations"] == 0
            },
        );
    }
    until_all_answer(&[&a, &b], &without(THREE));
    let c_gossip = gossip_addr();
    for round in ["start", "restart"] {
        let (c, first) = start_and_first_answer(&t.config, "c", c_gossip, &[a.gossip, b.gossip]);
        assert_eq!(first, without(THREE), "{round}: {}", c.served.stderr());
        // (The log is read from its pipe as it comes.)
        wait_for("c's log of its warm start", Duration::from_secs(60), || {
            c.served
                .stderr()
                .contains("fleet: started from the peers' observations")
        });
        // Its own probes find three up; the fleet keeps it out.
        let mut s = serde_json::Value::Null;
        wait_for("c's own probe of three", Duration::from_secs(60), || {
            s = target_status(&c, "three");
            s["fleet"]["own"] == "up" && s["fleet"]["fresh_observations"] == 3
        });
        assert_eq!(s["state"], "down", "{round}: {s}");
        assert_eq!(s["fleet"]["overruled"], true, "{round}: {s}");
        assert_eq!(answer(c.dns).unwrap(), without(THREE), "{round}");
        // Since when a has seen three down is a's own time, as a says it, not when c
        // (just started) heard of it.
        let a_since = target_status(&a, "three")["verdict"]["since"].clone();
        let peer_a = s["fleet"]["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["node"] == "a")
            .cloned()
            .unwrap_or_default();
        assert_eq!(peer_a["since"], a_since, "{round}: {s}");
        // Stopped (killed, by its PID: no goodbye to the peers) before the restart.
        drop(c);
    }
    let _keep = (&a.served, &b.served);
}

/// Moves this test's thread into a network namespace of its own, with its loopback up:
/// the processes and threads it starts from here on are in it too, and the firewall
/// rules it sets touch nothing outside. Needs root.
fn private_network() {
    // SAFETY: unshare has no memory-safety preconditions; it acts on this thread only.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET): {} (root is needed)",
        std::io::Error::last_os_error()
    );
    run("ip", &["link", "set", "lo", "up"]);
}

fn run(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (is it installed?)"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The gossip between c and the two others is cut (every datagram to or from c's gossip
/// port dropped, in this test's own network namespace): each side goes on alone, c
/// answering from its own probes; when the cut heals, all three agree again.
#[test]
#[ignore = "needs root (a network namespace of its own) and nftables (nft): scripts/test.sh runs it"]
fn a_partitioned_instance_answers_from_its_own_probes_until_the_cut_heals() {
    private_network();
    let t = trio();
    let [a, b, c] = start_trio(&t);
    until_all_answer(&[&a, &b, &c], &all_three());
    let port = c.gossip.port().to_string();
    run("nft", &["add", "table", "inet", "gtmd_test"]);
    run(
        "nft",
        &[
            "add",
            "chain",
            "inet",
            "gtmd_test",
            "input",
            "{ type filter hook input priority 0; }",
        ],
    );
    for dir in ["dport", "sport"] {
        run(
            "nft",
            &[
                "add",
                "rule",
                "inet",
                "gtmd_test",
                "input",
                "udp",
                dir,
                &port,
                "drop",
            ],
        );
    }
    // Each side sees the other dead.
    until_peers(&c, &[]);
    until_peers(&a, &["b"]);
    until_peers(&b, &["a"]);
    // Cluster two fails for c only: alone, c drops it; a and b keep it.
    t.backends[1].block_agent("(fleet node c)");
    until_all_answer(&[&c], &without(TWO));
    until_all_answer(&[&a, &b], &all_three());
    let s = target_status(&c, "two");
    assert_eq!(s["fleet"]["overruled"], false, "{s}");
    assert_eq!(
        s["fleet"]["peers"],
        serde_json::json!([]),
        "{s}\n{}",
        c.served.stderr()
    );
    // The cut heals: c is overruled again, and all three answer alike.
    run("nft", &["delete", "table", "inet", "gtmd_test"]);
    let healed = until_all_answer(&[&a, &b, &c], &all_three());
    eprintln!("after the cut healed, a, b, c answered alike after {healed:?}");
    assert_eq!(target_status(&c, "two")["fleet"]["overruled"], true);
}

/// Cluster one's health flips 100 times (down for everyone, then up), probed every
/// 300 ms: after each flip, once the change has propagated, the three instances give the
/// same answer. How long the last instance followed the first is printed.
#[test]
fn after_every_flip_the_three_instances_answer_alike() {
    let t = trio_probing(
        "interval = \"300ms\"\ntimeout = \"250ms\"\nfast_interval = \"50ms\"\n",
        "",
    );
    let [a, b, c] = start_trio(&t);
    let mut spreads = Vec::new();
    for flip in 0..100 {
        let (mode, want) = if flip % 2 == 0 {
            (Mode::Status(503), without(ONE))
        } else {
            (Mode::Ok, all_three())
        };
        t.backends[0].set(mode);
        let when = until_all_answer(&[&a, &b, &c], &want);
        let first = when.iter().min().unwrap();
        let last = when.iter().max().unwrap();
        spreads.push(*last - *first);
        // Settled: the three answer alike (same query, policy all).
        let answers: Vec<Vec<String>> = [&a, &b, &c]
            .iter()
            .map(|i| answer(i.dns).unwrap())
            .collect();
        assert!(
            answers.iter().all(|x| *x == want),
            "flip {flip}: {answers:?}"
        );
    }
    spreads.sort();
    let at = |p: usize| spreads[(spreads.len() * p / 100).min(spreads.len() - 1)];
    eprintln!(
        "first to last instance, over 100 flips: median {:?}, p90 {:?}, max {:?}",
        at(50),
        at(90),
        spreads.last().unwrap()
    );
}

/// The User-Agents of the next `n` requests `backend` receives (a failure after a minute).
fn agents(backend: &Backend, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    wait_for(&format!("{n} requests"), Duration::from_secs(60), || {
        seen.extend(backend.take_agents());
        seen.len() >= n
    });
    seen
}

/// `probes_per_target = 1`: each target is probed by one instance, the same one in every
/// instance's view; the others answer from its observation. When that instance dies,
/// another takes its targets over, and an outage is still seen by all.
#[test]
fn with_one_prober_per_target_a_dead_probers_targets_move() {
    let t = trio_with("probes_per_target = 1");
    let [a, b, c] = start_trio_observing(&t, 1);
    let probers = |i: &Instance, cluster: &str| -> Vec<String> {
        serde_json::from_value(target_status(i, cluster)["fleet"]["probed_by"].clone()).unwrap()
    };
    let prober = probers(&a, "two");
    assert_eq!(prober.len(), 1, "{prober:?}");
    for i in [&b, &c] {
        assert_eq!(probers(i, "two"), prober);
    }
    // Only that instance's probes reach cluster two, once the others have its observation
    // (until then, they probe too: nobody else observes it).
    let mine = format!("(fleet node {})", prober[0]);
    wait_for(
        "three probes of cluster two in a row from its prober",
        Duration::from_secs(60),
        || {
            t.backends[1].take_agents();
            agents(&t.backends[1], 3).iter().all(|a| a.contains(&mine))
        },
    );
    // The prober of cluster two dies: one of the others takes it over.
    let (gone, rest): (Vec<Instance>, Vec<Instance>) = [a, b, c]
        .into_iter()
        .partition(|i| fleet(i)["node"] == prober[0].as_str());
    drop(gone);
    for i in &rest {
        wait_for(
            "another prober of cluster two",
            Duration::from_secs(60),
            || {
                let p = probers(i, "two");
                p.len() == 1 && p != prober
            },
        );
    }
    let successor = probers(&rest[0], "two");
    assert_eq!(probers(&rest[1], "two"), successor);
    let theirs = format!("(fleet node {})", successor[0]);
    wait_for(
        "three probes of cluster two in a row from its successor",
        Duration::from_secs(60),
        || {
            t.backends[1].take_agents();
            agents(&t.backends[1], 3)
                .iter()
                .all(|a| a.contains(&theirs))
        },
    );
    // Cluster two dies: both remaining instances drop it, from the one observation.
    t.backends[1].set(Mode::Closed);
    until_all_answer(&[&rest[0], &rest[1]], &without(TWO));
    // An instance that does not probe a target is not "overruled" on it: only an own
    // fresh observation that says otherwise is (counted at each 5 s sweep).
    for i in &rest {
        wait_for("a sweep", Duration::from_secs(60), || {
            metric(i, "gtmd_fleet_disagreeing_targets ") == 0.0
        });
        assert_eq!(metric(i, "gtmd_fleet_overruled_targets "), 0.0);
    }
}

/// The whole fleet starts at once, cluster three dead, one prober per target: no instance
/// reports ready before every target has a fresh observation (its own or a peer's), so
/// none answers the dead cluster once ready, although every peer's `ready` key is there
/// early (with nothing observed yet).
#[test]
fn a_cold_started_fleet_is_ready_only_with_every_target_observed() {
    let t = trio_with("probes_per_target = 1");
    t.backends[2].set(Mode::Closed);
    let gossip = [gossip_addr(), gossip_addr(), gossip_addr()];
    let mut started = Vec::new();
    for (i, node) in ["a", "b", "c"].iter().enumerate() {
        let peers: Vec<SocketAddr> = gossip.iter().copied().filter(|g| *g != gossip[i]).collect();
        let (cmd, dns, admin) = command(&t.config, node, gossip[i], &peers);
        started.push(Instance {
            served: spawn_only(cmd),
            admin,
            gossip: gossip[i],
            dns,
        });
    }
    for i in &started {
        wait_for("ready", Duration::from_secs(60), || {
            std::net::TcpStream::connect(i.admin).is_ok() && http_get(i.admin, "/readyz").0 == 200
        });
        assert_eq!(
            answer(i.dns).unwrap(),
            without(THREE),
            "{}",
            i.served.stderr()
        );
    }
}
