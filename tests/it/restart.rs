//! Warm restart with the real binary: the health state file (`[health] state_file`) keeps
//! every target's verdict across a restart, so the very first answer after it already
//! leaves a dead cluster out; a file that cannot be trusted is ignored with one warning.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use hickory_proto::{
    op::Message,
    rr::{RData, RecordType},
};

use crate::{
    backend::{Backend, Mode},
    cli::{Served, free_port, serve_command, spawn_only},
    support::{http_get, query, wait_for},
};

const ONE: &str = "127.0.0.71";
const TWO: &str = "127.0.0.72";

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
    state: PathBuf,
    dns: SocketAddr,
    admin: SocketAddr,
    b1: Backend,
    b2: Backend,
}

/// shop.w.test in clusters one (backend on ONE) and two (backend on TWO), both probed,
/// `initial = "up"` (the default), with a state file in a temporary directory.
fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gtmd.toml");
    let state = dir.path().join("health-state");
    let (dns_port, admin_port) = (free_port(), free_port());
    let b1 = Backend::http(ONE);
    let b2 = Backend::http(TWO);
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = ["127.0.0.1:{dns_port}"]
[admin]
listen = "127.0.0.1:{admin_port}"
[health]
state_file = "{state}"
[health.defaults]
kind = "http"
# A timeout no loaded machine makes the healthy backend miss, and no flap hold: a false
# loss of the live cluster must not decide what the restart restores.
interval = "1s"
timeout = "900ms"
fast_interval = "50ms"
rise = 2
fall = 2
flap_changes = 0
[[zones]]
origin = "w.test"
nameservers = ["ns.outside.net"]
[zones.soa]
mname = "ns.outside.net"
rname = "h.w.test"
[[clusters]]
name = "one"
ingress = ["{ONE}"]
app_probe = {{ port = {p1} }}
[[clusters]]
name = "two"
ingress = ["{TWO}"]
app_probe = {{ port = {p2} }}
[[apps]]
hostname = "shop.w.test"
targets = [{{ cluster = "one" }}, {{ cluster = "two" }}]
"#,
            state = state.display(),
            p1 = b1.addr.port(),
            p2 = b2.addr.port(),
        ),
    )
    .unwrap();
    Setup {
        _dir: dir,
        config,
        state,
        dns: format!("127.0.0.1:{dns_port}").parse().unwrap(),
        admin: format!("127.0.0.1:{admin_port}").parse().unwrap(),
        b1,
        b2,
    }
}

fn ips(reply: &Message) -> Vec<String> {
    let mut v: Vec<String> = reply
        .answers
        .iter()
        .filter_map(|a| match &a.data {
            RData::A(ip) => Some(ip.to_string()),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// Starts gtmd on `s` and returns it with the addresses of the very first answer it
/// gives: nothing else asks it anything, and every query goes out from one socket that
/// stays open, so a reply to an earlier query that comes late is still the one seen first.
fn start_and_first_answer(s: &Setup) -> (Served, Vec<String>) {
    start_and_first_answer_with(s, &["--no-watch"])
}

fn start_and_first_answer_with(s: &Setup, args: &[&str]) -> (Served, Vec<String>) {
    let served = spawn_only(serve_command(&s.config, args));
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut id = 0u16;
    while Instant::now() < deadline {
        id += 1;
        let mut q = query("shop.w.test.", RecordType::A);
        q.metadata.id = id;
        // Refused (ICMP) while nothing listens yet: try again.
        let _ = sock.send_to(&q.to_vec().unwrap(), s.dns);
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            return (served, ips(&Message::from_vec(&buf[..n]).unwrap()));
        }
    }
    panic!("gtmd did not answer within 20 s:\n{}", served.stderr());
}

/// The verdict of shop.w.test. in `cluster` in the state file, if it has one.
fn stored(state: &Path, cluster: &str) -> Option<bool> {
    let text = std::fs::read_to_string(state).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["targets"]
        .as_array()?
        .iter()
        .find(|t| t["app"] == "shop.w.test." && t["cluster"] == cluster)?["up"]
        .as_bool()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A state file as gtmd writes it: written `age` ago for `zones`, holding "down" for
/// each (app, cluster) of `down`.
fn state_file(age: Duration, zones: &[&str], down: &[(&str, &str)]) -> String {
    let at = now_ms() - age.as_millis() as u64;
    let targets: Vec<serde_json::Value> = down
        .iter()
        .map(|(app, cluster)| {
            serde_json::json!({
                "app": app, "cluster": cluster, "up": false,
                "reason": "connection refused", "since": at - 5000, "as_of": at,
            })
        })
        .collect();
    serde_json::json!({
        "format": "gtmd-health-state", "version": 1, "written_at": at,
        "zones": zones, "targets": targets, "clusters": [],
    })
    .to_string()
}

#[test]
fn after_a_restart_the_very_first_answer_leaves_a_dead_cluster_out() {
    let s = setup();
    s.b1.set(Mode::Closed);
    let (served, _) = start_and_first_answer(&s);
    wait_for(
        "the dead cluster's verdict in the state file",
        Duration::from_secs(20),
        || stored(&s.state, "one") == Some(false),
    );
    // A crash: no shutdown write, only what was written on the transition.
    drop(served);
    assert_eq!(stored(&s.state, "one"), Some(false));

    // initial = "up", the backend still dead: without the state file, the first answer
    // would hold both clusters until the probes caught up.
    let (served, first) = start_and_first_answer(&s);
    assert_eq!(first, [TWO], "the very first answer after the restart");
    // Logged before the first answer, but read from the pipe by another thread.
    wait_for("the restore line", Duration::from_secs(20), || {
        let log = served.stderr();
        log.contains("health state restored")
            && log.contains("down: app shop.w.test. in cluster one")
    });
    let (_, status) = http_get(s.admin, "/api/v1/status");
    assert!(
        status.contains("restored from state file (age"),
        "/api/v1/status shows the restored verdict: {status}"
    );
    // The restored verdict stands until probes say otherwise: a few more rounds, still out,
    // with no transition (it was down before the restart too).
    wait_for(
        "probe rounds of the dead cluster",
        Duration::from_secs(20),
        || {
            let (_, m) = http_get(s.admin, "/metrics");
            crate::ops::parse_exposition(&m)
            .get(r#"gtmd_probe_failures_total{app="shop.w.test.",cluster="one",reason="refused"}"#)
            .is_some_and(|&n| n >= 4.0)
        },
    );
    let q = query("shop.w.test.", RecordType::A);
    let r = crate::support::ask(s.dns, crate::support::Proto::Udp, &q);
    assert_eq!(ips(&r), [TWO]);
    assert!(
        !served.stderr().contains("health transition"),
        "{}",
        served.stderr()
    );

    // A clean stop writes the file once more; a restart after the backend is back starts
    // from "down" and needs rise successes, logged as a real down->up transition.
    let written_at = |path: &Path| -> u64 {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        v["written_at"].as_u64().unwrap()
    };
    // Every probe's first verdict was written long ago (one gap after it); nothing changed
    // since, so only the shutdown writes again.
    let before = written_at(&s.state);
    let pid = served.0.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let mut served = served;
    served.0.wait().unwrap();
    assert!(
        written_at(&s.state) > before,
        "written at shutdown:\n{}",
        served.stderr()
    );
    assert_eq!(stored(&s.state, "one"), Some(false));
    s.b1.set(Mode::Ok);
    let (served, _) = start_and_first_answer(&s);
    // Whether the first answer comes before the probes' first successes is a race here
    // (the backend is up); the log says what the target started from.
    wait_for("the restore", Duration::from_secs(20), || {
        served
            .stderr()
            .contains("down: app shop.w.test. in cluster one")
    });
    wait_for("the cluster to return", Duration::from_secs(20), || {
        served.stderr().contains("from=down to=up")
    });
    wait_for("its verdict in the file", Duration::from_secs(20), || {
        stored(&s.state, "one") == Some(true)
    });
}

/// Starts gtmd with `text` as its state file (backends healthy): the first answer and the
/// log.
fn start_with_state(s: &Setup, text: &str) -> (Served, Vec<String>) {
    std::fs::write(&s.state, text).unwrap();
    start_and_first_answer(s)
}

fn ignored_with_warning(text: &str, why: &str) {
    let s = setup();
    let (served, first) = start_with_state(&s, text);
    assert_eq!(first, [ONE, TWO], "every target from its initial state");
    wait_for("the warning", Duration::from_secs(20), || {
        served.stderr().contains("health state file ignored")
    });
    let log = served.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("health state file ignored"))
        .unwrap();
    assert!(
        line.contains("WARN")
            && line.contains(&s.state.display().to_string())
            && line.contains(why),
        "{line}"
    );
    assert_eq!(log.matches("health state file ignored").count(), 1, "{log}");
}

#[test]
fn the_state_file_of_another_deployment_is_ignored_with_a_warning() {
    ignored_with_warning(
        &state_file(
            Duration::from_secs(5),
            &["other.test."],
            &[("shop.w.test.", "one")],
        ),
        "written for another deployment: none of its zones (other.test.) is served by this configuration (w.test.)",
    );
}

#[test]
fn a_state_file_older_than_state_max_age_is_ignored_with_a_warning() {
    ignored_with_warning(
        &state_file(
            Duration::from_secs(11 * 60),
            &["w.test."],
            &[("shop.w.test.", "one")],
        ),
        "longer than health.state_max_age (10m)",
    );
}

#[test]
fn a_corrupt_state_file_is_ignored_with_a_warning() {
    let good = state_file(
        Duration::from_secs(5),
        &["w.test."],
        &[("shop.w.test.", "one")],
    );
    ignored_with_warning(&good[..good.len() / 2], "corrupt");
    ignored_with_warning(
        &good.replace("\"version\":1", "\"version\":2"),
        "format version 2, this gtmd reads version 1",
    );
}

#[test]
fn entries_of_apps_no_longer_configured_are_ignored_and_the_rest_restored() {
    let s = setup();
    s.b2.set(Mode::Closed);
    let (served, first) = start_with_state(
        &s,
        &state_file(
            Duration::from_secs(5),
            &["w.test."],
            &[("gone.w.test.", "one"), ("shop.w.test.", "two")],
        ),
    );
    // Two was down when the file was written, and still is: out from the first answer
    // (from its initial state it would be in it).
    assert_eq!(first, [ONE]);
    wait_for("the restore line", Duration::from_secs(20), || {
        served.stderr().contains("health state restored")
    });
    let log = served.stderr();
    assert!(
        log.contains("restored=1") && log.contains("not_configured=1"),
        "{log}"
    );
    assert!(!log.contains("health state file ignored"), "{log}");
}

#[test]
fn a_reload_cannot_move_the_state_file() {
    let s = setup();
    let (served, _) = start_and_first_answer_with(&s, &[]);
    wait_for("the directory watch", Duration::from_secs(20), || {
        served
            .stderr()
            .contains("watching the config directory for changes")
    });
    let text = std::fs::read_to_string(&s.config).unwrap();
    let moved = text.replace("health-state", "elsewhere");
    assert_ne!(moved, text);
    let tmp = s.config.with_extension("tmp");
    std::fs::write(&tmp, moved).unwrap();
    std::fs::rename(&tmp, &s.config).unwrap();
    wait_for("the refusal", Duration::from_secs(20), || {
        served
            .stderr()
            .contains("health.state_file changed: restart gtmd to apply it")
    });
}

#[test]
fn state_file_settings_are_checked_and_can_come_from_the_environment() {
    let base = r#"
[[zones]]
origin = "w.test"
nameservers = ["ns.outside.net"]
[zones.soa]
mname = "ns.outside.net"
rname = "h.w.test"
"#;
    let load = |health: &str, env: &[(&str, &str)]| {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let p = Path::new("t.toml");
        gtmd::config::parse_with_env(p, &format!("[health]\n{health}\n{base}"), env)
            .and_then(|c| gtmd::from_config(p, &c))
    };
    let m = load("", &[]).unwrap().model;
    assert_eq!(m.health.state_file, None, "unset by default");
    assert_eq!(m.health.state_max_age, Duration::from_secs(600));
    let m = load(
        "state_max_age = \"1h\"",
        &[("GTMD__HEALTH__STATE_FILE", "/var/lib/gtmd/health-state")],
    )
    .unwrap()
    .model;
    assert_eq!(
        m.health.state_file.as_deref(),
        Some(Path::new("/var/lib/gtmd/health-state"))
    );
    assert_eq!(m.health.state_max_age, Duration::from_secs(3600));
    for (health, expected) in [
        (
            "state_file = \"\"",
            "health.state_file: \"\" is not a file path",
        ),
        (
            "state_file = \"/var/lib/gtmd/\"",
            "health.state_file: \"/var/lib/gtmd/\" is not a file path",
        ),
        (
            "state_max_age = \"0s\"",
            "health.state_max_age: 0s is out of range",
        ),
        (
            "state_max_age = \"8days\"",
            "health.state_max_age: 8days is out of range: more than 0s, at most 7 days",
        ),
    ] {
        let Err(e) = load(health, &[]) else {
            panic!("{health} is accepted");
        };
        let text = e.to_string();
        assert!(text.contains(expected), "{health}: {text}");
    }
}
