//! Health probes driving DNS answers, over real sockets: local backends are switched between
//! healthy, failing, slow, closed and flapping, and gtmd's answers are watched through DNS.

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use hickory_proto::{
    op::ResponseCode,
    rr::{RData, RecordType},
};

use crate::{
    backend::{Backend, Mode},
    support::wait_for,
    support::{Proto, TestServer, ask, query},
};

/// Probe timing for tests: fast re-probes, so transitions take about a second, with a
/// timeout no loaded machine makes a healthy local backend miss (150 ms once did). Flap
/// damping is off: these tests time rise and fall, and a return soon after a loss would
/// otherwise wait for `flap_hold` (damping has its own tests in flap.rs).
const FAST: &str = r#"interval = "1s"
timeout = "900ms"
fast_interval = "50ms"
rise = 2
fall = 3
flap_changes = 0"#;

const ZONE: &str = r#"
[[zones]]
origin = "h.test"
nameservers = ["ns.outside.net"]
[zones.soa]
mname = "ns.outside.net"
rname = "hostmaster.h.test"
minimum = 5
"#;

/// Two clusters on 127.0.0.11 and 127.0.0.12, their app probes sent to their backends.
struct Fixture {
    b1: Backend,
    b2: Backend,
    server: TestServer,
}

const C1: &str = "127.0.0.11";
const C2: &str = "127.0.0.12";
const C3: &str = "127.0.0.13";

/// Starts backends on C1 and C2 and gtmd with `apps` (TOML), probe defaults `defaults`
/// (TOML lines of `[health.defaults]`) and `extra` cluster settings for c1.
fn fixture(defaults: &str, c1_extra: &str, apps: &str) -> Fixture {
    let b1 = Backend::http(C1);
    let b2 = Backend::http(C2);
    let toml = format!(
        r#"
[health.defaults]
{defaults}
{ZONE}
[[clusters]]
name = "c1"
ingress = ["{C1}"]
app_probe = {{ port = {p1} }}
{c1_extra}
[[clusters]]
name = "c2"
ingress = ["{C2}"]
app_probe = {{ port = {p2} }}
[[clusters]]
name = "c3"
ingress = ["{C3}"]
{apps}
"#,
        p1 = b1.addr.port(),
        p2 = b2.addr.port(),
    );
    let server = TestServer::start(&toml);
    Fixture { b1, b2, server }
}

fn answers(addr: SocketAddr, name: &str) -> BTreeSet<String> {
    let r = ask(addr, Proto::Udp, &query(name, RecordType::A));
    assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{name}");
    r.answers
        .iter()
        .filter_map(|a| match &a.data {
            RData::A(ip) => Some(ip.to_string()),
            _ => None,
        })
        .collect()
}

fn set(ips: &[&str]) -> BTreeSet<String> {
    ips.iter().map(|s| s.to_string()).collect()
}

fn wait_ready(s: &TestServer) {
    let mut rx = s.first_round.clone();
    wait_for("the first probe round", Duration::from_secs(20), || {
        *rx.borrow_and_update()
    });
}

/// The detail gtmd records for target `t` of app `app` (index in config order).
fn detail(s: &TestServer, app: usize, t: usize) -> String {
    s.snapshot.load().apps()[app].targets[t].detail.to_string()
}

const TWO: &str = r#"
[[apps]]
hostname = "shop.h.test"
targets = [{ cluster = "c1" }, { cluster = "c2" }]
"#;

#[test]
fn failing_backend_leaves_after_fall_failures_and_returns_after_rise() {
    let f = fixture(&format!("kind = \"http\"\n{FAST}"), "", TWO);
    wait_ready(&f.server);
    let a = f.server.addr;
    assert_eq!(answers(a, "shop.h.test."), set(&[C1, C2]));

    let before = f.b1.hits();
    f.b1.set(Mode::Status(503));
    wait_for("c1 to leave", Duration::from_secs(20), || {
        answers(a, "shop.h.test.") == set(&[C2])
    });
    let failures = f.b1.hits() - before;
    assert!(failures >= 3, "down after {failures} probes with fall = 3");
    assert_eq!(detail(&f.server, 0, 0), "status 503");

    let before = f.b1.hits();
    f.b1.set(Mode::Ok);
    wait_for("c1 to return", Duration::from_secs(20), || {
        answers(a, "shop.h.test.") == set(&[C1, C2])
    });
    let successes = f.b1.hits() - before;
    assert!(successes >= 2, "up after {successes} probes with rise = 2");
    assert!(f.b2.hits() > 0, "c2 is probed too");
}

#[test]
fn fewer_failures_than_fall_change_nothing() {
    let f = fixture(&format!("kind = \"http\"\n{FAST}"), "", TWO);
    wait_ready(&f.server);
    let a = f.server.addr;
    for _ in 0..3 {
        let before = f.b1.hits();
        f.b1.script(&[503, 503]);
        wait_for(
            "the scripted failures and two more probes",
            Duration::from_secs(20),
            || {
                assert_eq!(
                    answers(a, "shop.h.test."),
                    set(&[C1, C2]),
                    "flipped on 2 failures"
                );
                f.b1.hits() >= before + 4
            },
        );
    }
}

#[test]
fn flapping_backend_never_changes_the_answer() {
    let f = fixture(&format!("kind = \"http\"\n{FAST}"), "", TWO);
    wait_ready(&f.server);
    let a = f.server.addr;
    let before = f.b1.hits();
    f.b1.set(Mode::Flap);
    // Ten alternating results, however long they take to come.
    wait_for(
        "ten probes of the flapping backend",
        Duration::from_secs(60),
        || {
            assert_eq!(answers(a, "shop.h.test."), set(&[C1, C2]));
            f.b1.hits() - before >= 10
        },
    );
}

#[test]
fn timeouts_refusals_and_body_mismatches_are_failures_with_reasons() {
    let defaults = format!("kind = \"http\"\nexpect_body = \"ok\"\n{FAST}");
    let f = fixture(&defaults, "", TWO);
    wait_ready(&f.server);
    let a = f.server.addr;
    let both = set(&[C1, C2]);
    let only_c2 = set(&[C2]);
    let cases: [(Mode, &str); 3] = [
        (Mode::Hold, "timeout after 900ms"),
        (Mode::Closed, "connection refused"),
        (
            Mode::Body("nope".into()),
            "body does not contain the expected text",
        ),
    ];
    for (mode, reason) in cases {
        f.b1.set(mode.clone());
        wait_for(
            &format!("c1 to leave on {mode:?}"),
            Duration::from_secs(20),
            || answers(a, "shop.h.test.") == only_c2,
        );
        assert_eq!(detail(&f.server, 0, 0), reason);
        f.b1.set(Mode::Ok);
        wait_for(
            &format!("c1 to return after {mode:?}"),
            Duration::from_secs(20),
            || answers(a, "shop.h.test.") == both,
        );
    }
}

#[test]
fn probes_carry_the_app_hostname_for_host_routing() {
    let apps = r#"
[[apps]]
hostname = "shop.h.test"
fallback = "none"
targets = [{ cluster = "c1" }]
[[apps]]
hostname = "other.h.test"
fallback = "none"
targets = [{ cluster = "c1" }]
"#;
    let f = fixture(&format!("kind = \"http\"\n{FAST}"), "", apps);
    f.b1.only_host("shop.h.test");
    wait_ready(&f.server);
    let a = f.server.addr;
    wait_for("other to go down on 404", Duration::from_secs(20), || {
        answers(a, "other.h.test.").is_empty()
    });
    assert_eq!(answers(a, "shop.h.test."), set(&[C1]));
    assert_eq!(detail(&f.server, 1, 0), "status 404");
    let port = f.b1.addr.port();
    let hosts = f.b1.hosts_seen();
    assert!(hosts.contains(&format!("shop.h.test:{port}")), "{hosts:?}");
    assert!(hosts.contains(&format!("other.h.test:{port}")), "{hosts:?}");
}

#[test]
fn https_probes_send_sni_and_check_certificates() {
    let (backend, pem, sni) = Backend::https(C1, &["secure.h.test"]);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let port = backend.addr.port();
    let toml = format!(
        r#"
[health.defaults]
kind = "https"
port = {port}
{FAST}
{ZONE}
[[clusters]]
name = "c1"
ingress = ["{C1}"]

[[apps]]
hostname = "secure.h.test"
fallback = "none"
probe = {{ tls_verify = false }}
targets = [{{ cluster = "c1" }}]
[[apps]]
hostname = "ca.h.test"
fallback = "none"
probe = {{ host = "secure.h.test", ca_file = "{ca}" }}
targets = [{{ cluster = "c1" }}]
[[apps]]
hostname = "system.h.test"
fallback = "none"
probe = {{ host = "secure.h.test" }}
targets = [{{ cluster = "c1" }}]
"#,
        ca = ca.display()
    );
    let s = TestServer::start(&toml);
    wait_ready(&s);
    let a = s.addr;
    wait_for(
        "the unverifiable probe to fail",
        Duration::from_secs(20),
        || answers(a, "system.h.test.").is_empty(),
    );
    assert!(
        detail(&s, 2, 0).starts_with("TLS error"),
        "{}",
        detail(&s, 2, 0)
    );
    assert_eq!(answers(a, "secure.h.test."), set(&[C1]));
    assert_eq!(answers(a, "ca.h.test."), set(&[C1]));
    assert!(sni.lock().unwrap().iter().all(|n| n == "secure.h.test"));
    assert!(!sni.lock().unwrap().is_empty());
}

#[test]
fn a_down_cluster_probe_takes_every_app_there_down() {
    let router = Backend::http(C1);
    let c1_extra = format!(
        "probe = {{ kind = \"http\", port = {}, path = \"/healthz/ready\", {} }}",
        router.addr.port(),
        FAST.replace('\n', ", ")
    );
    let apps = r#"
[[apps]]
hostname = "shop.h.test"
targets = [{ cluster = "c1" }, { cluster = "c2" }]
[[apps]]
hostname = "api.h.test"
targets = [{ cluster = "c1" }, { cluster = "c2" }]
"#;
    let f = fixture(&format!("kind = \"http\"\n{FAST}"), &c1_extra, apps);
    wait_ready(&f.server);
    let a = f.server.addr;
    router.set(Mode::Status(503));
    wait_for("both apps to leave c1", Duration::from_secs(20), || {
        answers(a, "shop.h.test.") == set(&[C2]) && answers(a, "api.h.test.") == set(&[C2])
    });
    assert_eq!(detail(&f.server, 0, 0), "cluster c1 probe down: status 503");
    router.set(Mode::Ok);
    wait_for("both apps to return to c1", Duration::from_secs(20), || {
        answers(a, "shop.h.test.") == set(&[C1, C2]) && answers(a, "api.h.test.") == set(&[C1, C2])
    });
    assert!(f.b1.hits() > 0);
}

#[test]
fn drain_and_force_override_probes() {
    let apps = r#"
[[apps]]
hostname = "drained.h.test"
targets = [{ cluster = "c1", drain = true }, { cluster = "c2" }]
[[apps]]
hostname = "forced-down.h.test"
targets = [{ cluster = "c1", force = "down" }, { cluster = "c2" }]
[[apps]]
hostname = "forced-up.h.test"
targets = [{ cluster = "c1", force = "up" }, { cluster = "c2" }]
"#;
    let f = fixture(&format!("kind = \"http\"\n{FAST}"), "", apps);
    wait_ready(&f.server);
    let a = f.server.addr;
    assert_eq!(answers(a, "drained.h.test."), set(&[C2]));
    assert_eq!(answers(a, "forced-down.h.test."), set(&[C2]));
    assert_eq!(answers(a, "forced-up.h.test."), set(&[C1, C2]));
    // Forced up stays up with a dead backend; drained targets are still probed.
    let before = f.b1.hits();
    f.b1.set(Mode::Status(500));
    wait_for(
        "probes of the drained target to go on",
        Duration::from_secs(20),
        || f.b1.hits() >= before + 8,
    );
    assert_eq!(answers(a, "forced-up.h.test."), set(&[C1, C2]));
    assert_eq!(answers(a, "drained.h.test."), set(&[C2]));
    assert_eq!(detail(&f.server, 0, 0), "target drained");
    assert_eq!(detail(&f.server, 2, 0), "forced up");
}

#[test]
fn cluster_drain_and_force() {
    let apps = r#"
[[apps]]
hostname = "shop.h.test"
targets = [{ cluster = "c1" }, { cluster = "c2" }]
"#;
    let f = fixture(&format!("kind = \"http\"\n{FAST}"), "drain = true", apps);
    wait_ready(&f.server);
    assert_eq!(answers(f.server.addr, "shop.h.test."), set(&[C2]));
    assert_eq!(detail(&f.server, 0, 0), "cluster c1 drained");
    let g = fixture(
        &format!("kind = \"http\"\n{FAST}"),
        "force = \"down\"",
        apps,
    );
    wait_ready(&g.server);
    assert_eq!(answers(g.server.addr, "shop.h.test."), set(&[C2]));
    assert_eq!(detail(&g.server, 0, 0), "cluster c1 forced down");
}

#[test]
fn all_down_uses_the_configured_fallback() {
    let apps = r#"
[[apps]]
hostname = "open.h.test"
targets = [{ cluster = "c1" }, { cluster = "c2" }]
[[apps]]
hostname = "open-drained.h.test"
targets = [{ cluster = "c1", drain = true }, { cluster = "c2" }]
[[apps]]
hostname = "closed.h.test"
fallback = "none"
targets = [{ cluster = "c1" }, { cluster = "c2" }]
[[apps]]
hostname = "sorry.h.test"
fallback = "cluster:c3"
targets = [{ cluster = "c1" }, { cluster = "c2" }]
"#;
    let f = fixture(&format!("kind = \"http\"\n{FAST}"), "", apps);
    wait_ready(&f.server);
    let a = f.server.addr;
    assert_eq!(answers(a, "sorry.h.test."), set(&[C1, C2]));
    f.b1.set(Mode::Status(503));
    f.b2.set(Mode::Status(503));
    // Each app probes its own targets, so they fall back one by one.
    wait_for("every app to fall back", Duration::from_secs(20), || {
        f.server
            .snapshot
            .load()
            .apps()
            .iter()
            .all(|app| app.fallback_active)
    });
    assert!(answers(a, "closed.h.test.").is_empty());
    assert_eq!(answers(a, "sorry.h.test."), set(&[C3]));
    // Fail open: every target that is not drained.
    assert_eq!(answers(a, "open.h.test."), set(&[C1, C2]));
    assert_eq!(answers(a, "open-drained.h.test."), set(&[C2]));
    let r = ask(a, Proto::Udp, &query("closed.h.test.", RecordType::A));
    assert_eq!(r.authorities.len(), 1, "NODATA carries the SOA");
    f.b2.set(Mode::Ok);
    wait_for(
        "c2 to come back everywhere",
        Duration::from_secs(20),
        || {
            f.server
                .snapshot
                .load()
                .apps()
                .iter()
                .all(|app| !app.fallback_active)
        },
    );
    for name in ["open", "open-drained", "closed", "sorry"] {
        assert_eq!(answers(a, &format!("{name}.h.test.")), set(&[C2]), "{name}");
    }
}

#[test]
fn tcp_probes_check_that_a_port_accepts() {
    let listener = std::net::TcpListener::bind(format!("{C1}:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let toml = format!(
        r#"
{ZONE}
[[clusters]]
name = "c1"
ingress = ["{C1}"]
[[clusters]]
name = "c2"
ingress = ["{C2}"]
[[apps]]
hostname = "db.h.test"
probe = {{ kind = "tcp", port = {port}, {fast} }}
targets = [{{ cluster = "c1" }}, {{ cluster = "c2", probe_address = "{C1}" }}]
"#,
        fast = FAST.replace('\n', ", ")
    );
    let s = TestServer::start(&toml);
    wait_ready(&s);
    assert_eq!(answers(s.addr, "db.h.test."), set(&[C1, C2]));
    assert_eq!(detail(&s, 0, 0), "initial state");
    drop(listener);
    wait_for(
        "both targets down (fail open answers both)",
        Duration::from_secs(20),
        || s.snapshot.load().apps()[0].fallback_active,
    );
    assert_eq!(detail(&s, 0, 1), "connection refused");
}

#[test]
fn initial_down_waits_for_rise_successes() {
    let b = Backend::http(C1);
    // Every probe is held until the test lets it through: no result before then.
    b.set(Mode::Hold);
    let toml = format!(
        r#"
{ZONE}
[[clusters]]
name = "c1"
ingress = ["{C1}"]
[[apps]]
hostname = "late.h.test"
fallback = "none"
probe = {{ kind = "http", port = {port}, interval = "21s", timeout = "20s", fast_interval = "100ms", initial = "down" }}
targets = [{{ cluster = "c1" }}]
"#,
        port = b.addr.port()
    );
    let s = TestServer::start(&toml);
    // No probe has answered yet (the backend holds them): down until rise = 2.
    assert!(answers(s.addr, "late.h.test.").is_empty());
    assert!(!*s.first_round.borrow());
    b.set(Mode::Ok);
    // The first probe starts at a random point of the 21 s interval.
    wait_for("rise successes", Duration::from_secs(60), || {
        answers(s.addr, "late.h.test.") == set(&[C1])
    });
    wait_ready(&s);
    assert!(b.hits() >= 2);
}

#[test]
fn a_response_head_over_16_kib_fails_the_probe_with_reason_protocol() {
    let f = fixture(&format!("kind = \"http\"\n{FAST}"), "", TWO);
    wait_ready(&f.server);
    let a = f.server.addr;
    let both = set(&[C1, C2]);
    assert_eq!(answers(a, "shop.h.test."), both);
    // 12 KiB of headers is under the cap: more probes than `fall` pass, c1 stays.
    f.b1.set(Mode::LargeHead(12 * 1024));
    let hits = f.b1.hits();
    wait_for(
        "five probes of the 12 KiB head",
        Duration::from_secs(20),
        || f.b1.hits() >= hits + 5,
    );
    assert_eq!(answers(a, "shop.h.test."), both);
    // 100 KiB of headers on a 200: over the cap, a protocol failure.
    f.b1.set(Mode::LargeHead(100 * 1024));
    wait_for(
        "c1 to leave on a 100 KiB head",
        Duration::from_secs(20),
        || answers(a, "shop.h.test.") == set(&[C2]),
    );
    let detail = detail(&f.server, 0, 0);
    assert!(
        detail.starts_with("protocol error: response head over 16 KiB"),
        "{detail}"
    );
    f.b1.set(Mode::Ok);
    wait_for("c1 to return", Duration::from_secs(20), || {
        answers(a, "shop.h.test.") == both
    });
}

#[test]
fn a_cluster_outage_is_one_publication_that_rebuilds_only_the_apps_in_that_cluster() {
    let router = Backend::http(C1);
    let c1_extra = format!(
        "probe = {{ kind = \"http\", port = {}, {} }}",
        router.addr.port(),
        FAST.replace('\n', ", ")
    );
    // 60 apps in c1 (and c2), 40 apps elsewhere: only the 60 read c1's verdict.
    let mut apps = String::new();
    for i in 0..60 {
        apps.push_str(&format!(
            "[[apps]]\nhostname = \"in{i}.h.test\"\ntargets = [{{ cluster = \"c1\" }}, {{ cluster = \"c2\" }}]\n"
        ));
    }
    for i in 0..40 {
        apps.push_str(&format!(
            "[[apps]]\nhostname = \"out{i}.h.test\"\ntargets = [{{ cluster = \"c2\" }}, {{ cluster = \"c3\" }}]\n"
        ));
    }
    // No app probes: the cluster probe is the only one.
    let f = fixture("", &c1_extra, &apps);
    wait_ready(&f.server);
    let s = &f.server;
    let publications = || metric(s, "gtmd_health_publications_total");
    let rebuilt = || metric(s, "gtmd_health_published_apps_total");
    assert_eq!(
        (publications(), rebuilt()),
        (0.0, 0.0),
        "nothing changed yet"
    );
    router.set(Mode::Status(503));
    wait_for("the outage's publication", Duration::from_secs(20), || {
        publications() >= 1.0
    });
    for i in 0..60 {
        assert_eq!(answers(s.addr, &format!("in{i}.h.test.")), set(&[C2]));
    }
    for i in 0..40 {
        assert_eq!(answers(s.addr, &format!("out{i}.h.test.")), set(&[C2, C3]));
    }
    // One verdict change: one snapshot, with the 60 apps that read it rebuilt, not 100.
    assert_eq!((publications(), rebuilt()), (1.0, 60.0));
    assert_eq!(metric(s, "gtmd_health_publish_delay_seconds_count"), 1.0);
    router.set(Mode::Ok);
    wait_for("the return's publication", Duration::from_secs(20), || {
        publications() >= 2.0
    });
    assert_eq!(answers(s.addr, "in0.h.test."), set(&[C1, C2]));
    assert_eq!((publications(), rebuilt()), (2.0, 120.0));
}

/// One metric of the server's exposition (0 when absent).
fn metric(s: &TestServer, series: &str) -> f64 {
    let (_, text) = crate::support::http_get(s.admin, "/metrics");
    crate::ops::parse_exposition(&text)
        .get(series)
        .copied()
        .unwrap_or(0.0)
}
