//! Operations over the admin endpoint: every metric family present and moving, health and
//! readiness, the status view and explanations.

use std::{collections::HashMap, time::Duration};

use hickory_proto::rr::RecordType;

use crate::{
    backend::{Backend, Mode},
    support::wait_for,
    support::{BOTH, Proto, TestServer, ask, http_get, plain_query, query},
};

/// Parses the text exposition format strictly enough to catch broken output: every sample
/// line is `name{labels} value`, every family has HELP and TYPE. Returns samples by their
/// full series text.
pub fn parse_exposition(text: &str) -> HashMap<String, f64> {
    let mut help = std::collections::HashSet::new();
    let mut types = std::collections::HashSet::new();
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help.insert(rest.split_whitespace().next().unwrap().to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().unwrap().to_owned();
            let kind = parts.next().unwrap();
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            types.insert(name);
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line}");
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            assert!(
                labels.starts_with('{') && labels.ends_with('}'),
                "bad labels {line}"
            );
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.contains(*f)))
            .unwrap_or(name);
        assert!(
            help.contains(family) && types.contains(family),
            "no HELP/TYPE for {family}"
        );
        samples.insert(series.to_owned(), value);
    }
    samples
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples.get(series).unwrap_or_else(|| {
        panic!(
            "no series {series}; have: {:#?}",
            samples.keys().collect::<Vec<_>>()
        )
    })
}

const C1: &str = "127.0.0.41";
const C2: &str = "127.0.0.42";

/// Two probed apps. The probe timeout is generous (1.5 s): on a loaded machine a 503 can take
/// longer than 150 ms to arrive, and a timeout instead of a status would change the counts.
fn probed(backend_port: u16, extra: &str) -> String {
    format!(
        r#"
[[zones]]
origin = "o.test"
nameservers = ["ns.outside.net"]
[zones.soa]
mname = "ns.outside.net"
rname = "h.o.test"
[[clusters]]
name = "one"
ingress = ["{C1}"]
[[clusters]]
name = "two"
ingress = ["{C2}"]
[[apps]]
hostname = "shop.o.test"
probe = {{ kind = "http", port = {backend_port}, interval = "2s", timeout = "1500ms", fast_interval = "50ms", rise = 2, fall = 2 }}
targets = [{{ cluster = "one" }}, {{ cluster = "two", probe_address = "{C1}" }}]
[[apps]]
hostname = "solo.o.test"
probe = {{ kind = "http", port = {backend_port}, interval = "2s", timeout = "1500ms", fast_interval = "50ms", rise = 2, fall = 2 }}
targets = [{{ cluster = "one" }}]
{extra}
"#
    )
}

#[test]
fn every_metric_family_is_present_and_moves() {
    let backend = Backend::http(C1);
    let s = TestServer::start(&probed(backend.addr.port(), ""));
    wait_for("readiness", Duration::from_secs(10), || {
        http_get(s.admin, "/readyz").0 == 200
    });
    let m = parse_exposition(&http_get(s.admin, "/metrics").1);
    assert_eq!(
        value(&m, r#"gtmd_app_fallback_active{app="solo.o.test."}"#),
        0.0
    );
    for proto in BOTH {
        ask(s.addr, proto, &query("shop.o.test.", RecordType::A));
        ask(s.addr, proto, &plain_query("nope.o.test.", RecordType::MX));
        ask(s.addr, proto, &query("example.org.", RecordType::A));
    }
    backend.set(Mode::Status(503));
    // The verdict first, then the snapshot holding it (published after a batch window).
    wait_for(
        "the transition to down, published",
        Duration::from_secs(20),
        || {
            s.snapshot
                .load()
                .apps()
                .iter()
                .any(|a| a.hostname.to_string() == "solo.o.test." && a.fallback_active)
        },
    );
    // solo has one target, now down: its fallback answers.
    ask(s.addr, Proto::Udp, &query("solo.o.test.", RecordType::A));
    // A reply is counted just after it is sent: the client can have it first. Its duration
    // is the last thing recorded, and the fallback answer the one this query adds.
    wait_for("the last reply counted", Duration::from_secs(20), || {
        let m = parse_exposition(&http_get(s.admin, "/metrics").1);
        m.get("gtmd_dns_request_duration_seconds_count") == Some(&7.0)
            && m.get(r#"gtmd_fallback_answers_total{app="solo.o.test."}"#) == Some(&1.0)
    });
    let (status, text) = http_get(s.admin, "/metrics");
    assert_eq!(status, 200);
    let m = parse_exposition(&text);
    assert_eq!(
        value(&m, r#"gtmd_dns_requests_total{proto="udp",qtype="A"}"#),
        3.0
    );
    assert_eq!(
        value(&m, r#"gtmd_dns_requests_total{proto="tcp",qtype="MX"}"#),
        1.0
    );
    assert_eq!(
        value(&m, r#"gtmd_dns_responses_total{rcode="NXDOMAIN"}"#),
        2.0
    );
    assert_eq!(
        value(&m, r#"gtmd_dns_responses_total{rcode="REFUSED"}"#),
        2.0
    );
    assert_eq!(
        value(&m, r#"gtmd_dns_responses_total{rcode="NOERROR"}"#),
        3.0
    );
    assert_eq!(value(&m, "gtmd_dns_request_duration_seconds_count"), 7.0);
    assert_eq!(
        value(
            &m,
            r#"gtmd_answers_total{app="shop.o.test.",cluster="one"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            r#"gtmd_answers_total{app="shop.o.test.",cluster="two"}"#
        ),
        2.0
    );
    assert_eq!(
        value(&m, r#"gtmd_fallback_answers_total{app="solo.o.test."}"#),
        1.0
    );
    // Each transition (solo's and shop's behind the backend, shop's in cluster two, whose
    // address serves nothing) rebuilt the one app that reads it, batches joining some.
    let transitions: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("gtmd_health_transitions_total{"))
        .map(|(_, v)| v)
        .sum();
    let publications = value(&m, "gtmd_health_publications_total");
    let rebuilt = value(&m, "gtmd_health_published_apps_total");
    assert!(
        publications >= 1.0 && publications <= rebuilt && rebuilt <= transitions,
        "{publications} publications rebuilding {rebuilt} apps for {transitions} transitions"
    );
    assert_eq!(
        value(&m, "gtmd_health_publish_delay_seconds_count"),
        publications
    );
    // Set with the snapshot the transition published.
    assert_eq!(
        value(&m, r#"gtmd_app_fallback_active{app="solo.o.test."}"#),
        1.0
    );
    assert!(value(&m, r#"gtmd_probe_duration_seconds_count{cluster="one"}"#) >= 3.0);
    assert!(
        value(
            &m,
            r#"gtmd_probe_failures_total{app="solo.o.test.",cluster="one",reason="status"}"#
        ) >= 2.0
    );
    assert_eq!(
        value(
            &m,
            r#"gtmd_health_transitions_total{app="solo.o.test.",cluster="one",to="down"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&m, r#"gtmd_config_reloads_total{result="success"}"#),
        0.0
    );
    assert!(value(&m, "gtmd_config_last_reload_success_timestamp_seconds") > 1.7e9);
    assert!(
        m.keys()
            .any(|k| k.starts_with(r#"gtmd_config_info{generation="1",hash="#))
    );
    assert_eq!(
        value(
            &m,
            &format!(
                r#"gtmd_build_info{{version="{}"}}"#,
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
    assert_eq!(value(&m, "gtmd_ready"), 1.0);
    // No client addresses anywhere in the labels.
    assert!(!text.contains("127.0.0.1\""), "client address in a label");
}

#[test]
fn healthz_readyz_and_other_paths() {
    let backend = Backend::http(C1);
    // The first probe is held until the test lets it finish: no result before then.
    backend.set(Mode::Hold);
    let toml = probed(backend.addr.port(), "")
        .replace("timeout = \"1500ms\"", "timeout = \"20s\"")
        .replace("interval = \"2s\"", "interval = \"21s\"");
    let s = TestServer::start(&toml);
    assert_eq!(http_get(s.admin, "/healthz"), (200, "ok\n".to_owned()));
    let (status, body) = http_get(s.admin, "/readyz");
    assert_eq!(
        status, 503,
        "not ready before the first probe round: {body}"
    );
    backend.set(Mode::Ok);
    // The first probe starts at a random point of the 21 s interval.
    wait_for("readiness", Duration::from_secs(60), || {
        http_get(s.admin, "/readyz").0 == 200
    });
    assert_eq!(http_get(s.admin, "/nope").0, 404);
}

#[test]
fn status_shows_every_app_and_cluster() {
    let backend = Backend::http(C1);
    let s = TestServer::start(&probed(
        backend.addr.port(),
        "[[apps]]\nhostname = \"drained.o.test\"\ntargets = [{ cluster = \"one\", drain = true, weight = 3 }, { cluster = \"two\", force = \"down\" }]",
    ));
    wait_for("readiness", Duration::from_secs(10), || {
        http_get(s.admin, "/readyz").0 == 200
    });
    let (status, body) = http_get(s.admin, "/api/v1/status");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], true);
    assert_eq!(v["config"]["generation"], 1);
    let apps = v["apps"].as_array().unwrap();
    assert_eq!(apps.len(), 3);
    // In DNS canonical order, one page (the default page holds 100 apps).
    let names: Vec<&str> = apps
        .iter()
        .map(|a| a["hostname"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["drained.o.test.", "shop.o.test.", "solo.o.test."]);
    assert_eq!(v["next"], serde_json::Value::Null);
    // Every target of drained.o.test is out by the operator: NODATA, which is no answer by
    // the fallback (it was counted as one).
    let r = ask(s.addr, Proto::Udp, &query("drained.o.test.", RecordType::A));
    assert_eq!(
        r.metadata.response_code,
        hickory_proto::op::ResponseCode::NoError
    );
    assert!(r.answers.is_empty(), "{r:?}");
    let m = parse_exposition(&http_get(s.admin, "/metrics").1);
    let key = r#"gtmd_fallback_answers_total{app="drained.o.test."}"#;
    assert_eq!(m.get(key).copied().unwrap_or(0.0), 0.0, "{key}");
    let shop = &apps[1];
    assert_eq!(shop["hostname"], "shop.o.test.");
    assert_eq!(shop["targets"][0]["cluster"], "one");
    assert_eq!(shop["targets"][0]["state"], "up");
    assert_eq!(shop["targets"][0]["health"]["up"], true);
    assert!(shop["targets"][0]["health"]["last_result"]["reason"] == "status 200");
    // Healthy since start: the verdict is still the initial state, and the last probe
    // result says what the probe saw, when and how long it took.
    let target = &shop["targets"][0];
    assert_eq!(target["verdict"]["reason"], "initial state", "{target}");
    assert_eq!(target["verdict"]["up"], true, "{target}");
    assert!(target["verdict"]["since"].as_u64().unwrap() > 1_700_000_000);
    let last = &target["last_probe"];
    assert_eq!(last["probe"], "app", "{target}");
    assert_eq!(last["ok"], true, "{target}");
    assert_eq!(last["reason"], "status 200", "{target}");
    assert!(last["at"].as_u64().unwrap() >= target["verdict"]["since"].as_u64().unwrap());
    assert!(last["duration_ms"].as_f64().unwrap() >= 0.0, "{target}");
    assert_eq!(
        shop["targets"][1]["probe"]["address"],
        format!("{C1}:{}", backend.addr.port())
    );
    let drained = &apps[0];
    assert_eq!(drained["targets"][0]["state"], "drained");
    assert_eq!(drained["targets"][0]["weight"], 3);
    assert_eq!(drained["targets"][1]["force"], "down");
    assert_eq!(drained["targets"][1]["state"], "down");
    assert_eq!(drained["fallback_active"], true);
    assert_eq!(v["clusters"].as_array().unwrap().len(), 2);
}

#[test]
fn explain_says_why_a_client_gets_its_answer() {
    let s = TestServer::start(&crate::policy::toml(""));
    let (status, body) = http_get(
        s.admin,
        "/api/v1/explain?name=geo.p.test&client=10.9.9.9&ecs=192.0.2.0%2F24",
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["answer"], serde_json::json!(["127.0.0.31"]));
    assert_eq!(v["location"]["country"], "DE");
    assert_eq!(v["ecs_scope"], 24);
    let steps: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        steps.iter().any(|s| s.contains("ECS 192.0.2.0/24 is used")),
        "{steps:?}"
    );
    assert!(
        steps
            .iter()
            .any(|s| s.contains("rule 0 (continent:EU) matched: pools eu, us")),
        "{steps:?}"
    );
    assert!(
        steps
            .iter()
            .any(|s| s.contains("pool eu has healthy targets")),
        "{steps:?}"
    );
    // The explanation matches what DNS answers the same client.
    let r = ask(
        s.addr,
        Proto::Udp,
        &crate::policy::with_ecs("geo.p.test.", "192.0.2.0/24"),
    );
    assert_eq!(r.answers[0].data.to_string(), "127.0.0.31");
    // The fenced app with its EU target forced down explains the fence.
    let (_, body) = http_get(
        s.admin,
        "/api/v1/explain?name=fenced-none.p.test&client=192.0.2.1",
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let steps = v["steps"].to_string();
    assert!(steps.contains("eu is out: down (forced down)"), "{steps}");
    assert!(steps.contains("within the fenced pools"), "{steps}");
    assert_eq!(v["answer"], serde_json::json!([]));
    // Bad input is a 400 with usage.
    assert_eq!(http_get(s.admin, "/api/v1/explain?name=geo.p.test").0, 400);
    // Not an app: the static answer.
    let (_, body) = http_get(s.admin, "/api/v1/explain?name=nope.p.test&client=192.0.2.1");
    assert!(
        body.contains("NXDomain") || body.contains("Non-Existent"),
        "{body}"
    );
}

/// Starts a server with a probed app and some traffic, for the external tools below.
fn busy_server() -> (TestServer, Backend) {
    let backend = Backend::http(C1);
    let s = TestServer::start(&probed(backend.addr.port(), ""));
    wait_for("readiness", Duration::from_secs(10), || {
        http_get(s.admin, "/readyz").0 == 200
    });
    ask(s.addr, Proto::Udp, &query("shop.o.test.", RecordType::A));
    ask(s.addr, Proto::Tcp, &query("nope.o.test.", RecordType::A));
    (s, backend)
}

#[test]
#[ignore = "needs promtool (Debian package prometheus)"]
fn promtool_accepts_the_exposition() {
    use std::io::Write;
    let (s, _backend) = busy_server();
    let (_, text) = http_get(s.admin, "/metrics");
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{report}"
    );
    assert!(
        report.trim().is_empty(),
        "promtool has remarks (lint):\n{report}"
    );
}

#[test]
#[ignore = "needs prometheus (Debian package prometheus)"]
fn a_real_prometheus_scrapes_gtmd() {
    let (s, _backend) = busy_server();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: gtmd\n    static_configs:\n      - targets: ['{}']\n",
            s.admin
        ),
    )
    .unwrap();
    let port = crate::cli::free_port();
    let mut prom = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prometheus is installed");
    let api: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut found = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(api).is_ok() {
            let (status, body) = http_get(api, "/api/v1/query?query=gtmd_probe_up");
            if status == 200 && body.contains("\"shop.o.test.\"") {
                found = body;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = prom.kill();
    let _ = prom.wait();
    assert!(
        !found.is_empty(),
        "prometheus never returned gtmd_probe_up series"
    );
    let v: serde_json::Value = serde_json::from_str(&found).unwrap();
    assert_eq!(v["status"], "success");
    let series = v["data"]["result"].as_array().unwrap();
    assert!(series.len() >= 3, "{found}");
    assert!(series.iter().all(|s| s["metric"]["job"] == "gtmd"));
}

/// A zone where static records lead to an app: a CNAME to it and an SRV whose target it is.
fn aliased(dns: u16, admin: u16, generation: u32) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:{dns}"]
[admin]
listen = "127.0.0.1:{admin}"
[[zones]]
origin = "o.test"
nameservers = ["ns.outside.net"]
[zones.soa]
mname = "ns.outside.net"
rname = "h.o.test"
[[zones.records]]
name = "www"
type = "CNAME"
value = "shop"
[[zones.records]]
name = "_https._tcp"
type = "SRV"
value = "1 1 443 shop"
[[zones.records]]
name = "gen"
type = "TXT"
value = "generation {generation}"
[[clusters]]
name = "one"
ingress = ["{C1}"]
[[clusters]]
name = "two"
ingress = ["{C2}"]
[[apps]]
hostname = "shop.o.test"
targets = [{{ cluster = "one" }}, {{ cluster = "two", force = "down" }}]
# Down by its probe (nothing listens on port 1), so its fallback fails open and answers
# (a target forced down would answer nothing: NODATA is no fallback answer).
[[apps]]
hostname = "gone.o.test"
probe = {{ kind = "tcp", port = 1, initial = "down" }}
targets = [{{ cluster = "two" }}]
[[zones.records]]
name = "old"
type = "CNAME"
value = "gone"
"#
    )
}

/// Sum of every sample of `family` (all label sets).
fn family_sum(samples: &HashMap<String, f64>, family: &str) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{family}{{")))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn only_answers_sent_count_never_snapshot_builds_reloads_or_explanations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gtmd.toml");
    let (dns, admin) = (crate::cli::free_port(), crate::cli::free_port());
    std::fs::write(&path, aliased(dns, admin, 1)).unwrap();
    let dns_addr: std::net::SocketAddr = format!("127.0.0.1:{dns}").parse().unwrap();
    let admin_addr: std::net::SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let served = crate::cli::serve_with(&path, dns_addr, &["--no-watch"]);
    let metrics = || parse_exposition(&http_get(admin_addr, "/metrics").1);
    let answers = |m: &HashMap<String, f64>| {
        (
            family_sum(m, "gtmd_answers_total"),
            family_sum(m, "gtmd_fallback_answers_total"),
        )
    };
    assert_eq!(answers(&metrics()), (0.0, 0.0), "nothing answered yet");
    // Reloads build snapshots (and their fast-path index, which looks up every static
    // name); explanations look names up too. None of it is an answer.
    for generation in 2..=4 {
        std::fs::write(&path, aliased(dns, admin, generation)).unwrap();
        let status = std::process::Command::new("kill")
            .args(["-HUP", &served.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        wait_for("the reload", Duration::from_secs(20), || {
            metrics().get(r#"gtmd_config_reloads_total{result="success"}"#)
                == Some(&f64::from(generation - 1))
        });
    }
    for name in [
        "www.o.test",
        "old.o.test",
        "shop.o.test",
        "gone.o.test",
        "_https._tcp.o.test",
    ] {
        let (status, body) = http_get(
            admin_addr,
            &format!("/api/v1/explain?name={name}&client=192.0.2.1"),
        );
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(
        answers(&metrics()),
        (0.0, 0.0),
        "reloads and explanations counted as answers"
    );
    // Queries through the CNAMEs (over both transports) and the SRV count exactly the
    // answers sent: shop answers cluster one, gone its fallback.
    for proto in BOTH {
        let r = ask(dns_addr, proto, &query("www.o.test.", RecordType::A));
        assert_eq!(r.answers.len(), 2, "{r:?}");
        ask(dns_addr, proto, &query("old.o.test.", RecordType::A));
    }
    ask(
        dns_addr,
        Proto::Udp,
        &query("_https._tcp.o.test.", RecordType::SRV),
    );
    // A reply is counted just after it is sent: the client can have it first.
    wait_for("the answers sent counted", Duration::from_secs(20), || {
        answers(&metrics()) >= (2.0, 2.0)
    });
    let m = metrics();
    assert_eq!(
        value(
            &m,
            r#"gtmd_answers_total{app="shop.o.test.",cluster="one"}"#
        ),
        2.0
    );
    assert_eq!(
        value(&m, r#"gtmd_fallback_answers_total{app="gone.o.test."}"#),
        2.0
    );
    assert_eq!(answers(&m), (2.0, 2.0), "{m:?}");
}

/// Two apps on two clusters; `targets` is the TOML of app shop's targets.
fn overridden(dns: u16, admin: u16, targets: &str, with_other: bool) -> String {
    let other = if with_other {
        "[[apps]]\nhostname = \"other.o.test\"\ntargets = [{ cluster = \"two\", force = \"down\" }]\n"
    } else {
        ""
    };
    format!(
        r#"
[server]
listen = ["127.0.0.1:{dns}"]
[admin]
listen = "127.0.0.1:{admin}"
[[zones]]
origin = "o.test"
nameservers = ["ns.outside.net"]
[zones.soa]
mname = "ns.outside.net"
rname = "h.o.test"
[[clusters]]
name = "one"
ingress = ["{C1}"]
[[clusters]]
name = "two"
ingress = ["{C2}"]
[[apps]]
hostname = "shop.o.test"
targets = [{targets}]
{other}"#
    )
}

#[test]
fn fallback_override_and_reload_gauges_follow_the_published_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gtmd.toml");
    let (dns, admin) = (crate::cli::free_port(), crate::cli::free_port());
    let both_out = r#"{ cluster = "one", drain = true }, { cluster = "two", force = "down" }"#;
    std::fs::write(&path, overridden(dns, admin, both_out, true)).unwrap();
    let dns_addr: std::net::SocketAddr = format!("127.0.0.1:{dns}").parse().unwrap();
    let admin_addr: std::net::SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let served = crate::cli::serve_with(&path, dns_addr, &["--no-watch"]);
    let metrics = || parse_exposition(&http_get(admin_addr, "/metrics").1);
    let reload = |text: &str, result: &str, count: f64| {
        std::fs::write(&path, text).unwrap();
        let status = std::process::Command::new("kill")
            .args(["-HUP", &served.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let series = format!(r#"gtmd_config_reloads_total{{result="{result}"}}"#);
        wait_for("the reload", Duration::from_secs(20), || {
            metrics().get(&series) == Some(&count)
        });
    };
    let overrides = |m: &HashMap<String, f64>| {
        let mut v: Vec<String> = m
            .iter()
            .filter(|(k, _)| k.starts_with("gtmd_target_override{"))
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        v.sort();
        v
    };
    let m = metrics();
    assert_eq!(
        overrides(&m),
        [
            r#"gtmd_target_override{app="other.o.test.",cluster="two",override="force_down"} 1"#,
            r#"gtmd_target_override{app="shop.o.test.",cluster="one",override="drain"} 1"#,
            r#"gtmd_target_override{app="shop.o.test.",cluster="two",override="force_down"} 1"#,
        ]
    );
    assert_eq!(
        value(&m, r#"gtmd_app_fallback_active{app="shop.o.test."}"#),
        1.0
    );
    assert_eq!(
        value(&m, r#"gtmd_app_fallback_active{app="other.o.test."}"#),
        1.0
    );
    assert_eq!(value(&m, "gtmd_config_last_reload_successful"), 1.0);
    // GtmdAppAllTargetsDown counts an app's targets by these: one series per configured
    // target from the start, answered or not.
    for cluster in ["one", "two"] {
        let series = format!(r#"gtmd_answers_total{{app="shop.o.test.",cluster="{cluster}"}}"#);
        assert_eq!(value(&m, &series), 0.0);
    }
    // The standard process metrics are there too.
    for family in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(value(&m, family) >= 0.0, "{family}");
    }

    // The overrides are lifted and the other app removed: their series go.
    let lifted = r#"{ cluster = "one" }, { cluster = "two", force = "up" }"#;
    reload(&overridden(dns, admin, lifted, false), "success", 1.0);
    let m = metrics();
    assert_eq!(
        overrides(&m),
        [r#"gtmd_target_override{app="shop.o.test.",cluster="two",override="force_up"} 1"#]
    );
    assert_eq!(
        value(&m, r#"gtmd_app_fallback_active{app="shop.o.test."}"#),
        0.0
    );
    assert!(
        !m.contains_key(r#"gtmd_app_fallback_active{app="other.o.test."}"#),
        "a removed app keeps its series"
    );

    // A rejected file: 0 until a reload succeeds, however long it stays on disk.
    reload("not toml", "failure", 1.0);
    assert_eq!(value(&metrics(), "gtmd_config_last_reload_successful"), 0.0);
    // The gauge is set before the counter moves: no wait needed beyond the counter's.
    reload(&overridden(dns, admin, lifted, false), "success", 2.0);
    assert_eq!(value(&metrics(), "gtmd_config_last_reload_successful"), 1.0);
}

#[test]
#[ignore = "needs promtool (Debian package prometheus)"]
fn alert_rules_pass_their_unit_tests() {
    // Every alert fires where it must and stays quiet where it must not (e.g. one outage of
    // a cluster of many apps, a planned drain, a rejected file left on disk).
    let tests = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/prometheus/gtmd-alerts.test.yaml"
    );
    let out = std::process::Command::new("promtool")
        .args(["test", "rules", tests])
        .output()
        .expect("promtool is installed");
    assert!(
        out.status.success(),
        "promtool test rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_reply_truncated_for_size_counts_no_answer() {
    // www is a CNAME to an app of 40 addresses: over UDP without EDNS (512 bytes) the full
    // path sends TC=1 with no answer, which must not count; the retry over TCP counts once.
    let ingress: Vec<String> = (1..=40).map(|i| format!("\"10.0.0.{i}\"")).collect();
    let toml = format!(
        r#"
[[zones]]
origin = "o.test"
nameservers = ["ns.outside.net"]
[zones.soa]
mname = "ns.outside.net"
rname = "h.o.test"
[[zones.records]]
name = "www"
type = "CNAME"
value = "big"
[[clusters]]
name = "one"
ingress = [{}]
[[apps]]
hostname = "big.o.test"
max_answers = 40
targets = [{{ cluster = "one" }}]
"#,
        ingress.join(", ")
    );
    let s = TestServer::start(&toml);
    let series = r#"gtmd_answers_total{app="big.o.test.",cluster="one"}"#;
    let r = ask(
        s.addr,
        Proto::Udp,
        &plain_query("www.o.test.", RecordType::A),
    );
    assert!(r.metadata.truncation && r.answers.is_empty(), "{r:?}");
    // The response is counted after the send: wait for it, then the answers are final.
    wait_for(
        "the response to be counted",
        Duration::from_secs(20),
        || {
            parse_exposition(&http_get(s.admin, "/metrics").1)
                .get(r#"gtmd_dns_responses_total{rcode="NOERROR"}"#)
                == Some(&1.0)
        },
    );
    let m = parse_exposition(&http_get(s.admin, "/metrics").1);
    assert_eq!(value(&m, series), 0.0, "a truncated reply counted");
    let r = ask(
        s.addr,
        Proto::Tcp,
        &plain_query("www.o.test.", RecordType::A),
    );
    assert_eq!(r.answers.len(), 41, "the CNAME and 40 addresses");
    wait_for(
        "the TCP answer to be counted",
        Duration::from_secs(20),
        || parse_exposition(&http_get(s.admin, "/metrics").1).get(series) == Some(&1.0),
    );
}
