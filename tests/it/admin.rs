//! The admin endpoint under hostile clients: the connection cap, the header and idle
//! timeouts, the descriptor budget that keeps probes working through a connection storm,
//! and `/api/v1/status` filters and pages.

use std::{
    collections::HashSet,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use hickory_proto::rr::RecordType;
use serde_json::Value;

use crate::{
    backend::Backend,
    ops::parse_exposition,
    support::{Proto, TestServer, ask, http_get, query, wait_for},
};

fn metric(admin: SocketAddr, series: &str) -> Option<f64> {
    parse_exposition(&http_get(admin, "/metrics").1)
        .get(series)
        .copied()
}

fn status(admin: SocketAddr, q: &str) -> (u16, Value) {
    let (code, body) = http_get(admin, &format!("/api/v1/status{q}"));
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (code, v)
}

const ZONE: &str = r#"
[[zones]]
origin = "o.test"
nameservers = ["ns.outside.net"]
[zones.soa]
mname = "ns.outside.net"
rname = "h.o.test"
"#;

/// 250 unprobed apps on clusters one and two; on every tenth, two is forced down.
fn many_apps() -> String {
    let mut toml = format!(
        "{ZONE}[[clusters]]\nname = \"one\"\ningress = [\"127.0.0.61\"]\n[[clusters]]\nname = \"two\"\ningress = [\"127.0.0.62\"]\n"
    );
    for i in 0..250 {
        let force = if i % 10 == 0 {
            ", force = \"down\""
        } else {
            ""
        };
        toml.push_str(&format!(
            "[[apps]]\nhostname = \"app{i:03}.o.test\"\ntargets = [{{ cluster = \"one\" }}, {{ cluster = \"two\"{force} }}]\n"
        ));
    }
    toml
}

fn hostnames(v: &Value) -> Vec<String> {
    v["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["hostname"].as_str().unwrap().to_owned())
        .collect()
}

/// Walks every page of `q` with `limit`; the hostnames in order.
fn walk(admin: SocketAddr, q: &str, limit: usize) -> Vec<String> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..1000 {
        let cursor = after
            .as_ref()
            .map(|a| format!("&after={a}"))
            .unwrap_or_default();
        let (code, v) = status(admin, &format!("?limit={limit}{q}{cursor}"));
        assert_eq!(code, 200, "{v}");
        let page = hostnames(&v);
        assert!(page.len() <= limit);
        all.extend(page);
        match v["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => return all,
        }
    }
    panic!("more than 1000 pages");
}

#[test]
fn status_pages_list_every_app_exactly_once() {
    let s = TestServer::start(&many_apps());
    // The default page: 100 apps and a cursor.
    let (code, v) = status(s.admin, "");
    assert_eq!(code, 200);
    assert_eq!(hostnames(&v).len(), 100, "default page size");
    assert_eq!(v["next"], "app099.o.test.");
    assert_eq!(v["clusters"].as_array().unwrap().len(), 2);
    let expected: Vec<String> = (0..250).map(|i| format!("app{i:03}.o.test.")).collect();
    for limit in [1000, 100, 7, 1] {
        let all = walk(s.admin, "", limit);
        assert_eq!(all, expected, "limit={limit}");
    }
    // The largest page takes everything at once.
    let (_, v) = status(s.admin, "?limit=1000");
    assert_eq!(hostnames(&v).len(), 250);
    assert_eq!(v["next"], Value::Null);
}

#[test]
fn status_filters_by_app_cluster_and_state() {
    let s = TestServer::start(&many_apps());
    // app=: one app, the name with or without the dot, any case.
    for q in [
        "?app=app007.o.test",
        "?app=APP007.O.TEST.",
        "?app=app007.o.test&cluster=one",
    ] {
        let (code, v) = status(s.admin, q);
        assert_eq!(code, 200, "{q}: {v}");
        assert_eq!(hostnames(&v), ["app007.o.test."], "{q}");
        assert_eq!(v["next"], Value::Null);
    }
    assert!(hostnames(&status(s.admin, "?app=nope.o.test").1).is_empty());
    // state=down: the 25 apps with two forced down, showing only that target.
    let (_, v) = status(s.admin, "?state=down");
    let down = hostnames(&v);
    assert_eq!(down.len(), 25, "{down:?}");
    assert!(
        down.iter()
            .all(|h| h.starts_with("app") && h[3..6].ends_with('0'))
    );
    for app in v["apps"].as_array().unwrap() {
        let targets = app["targets"].as_array().unwrap();
        assert_eq!(targets.len(), 1, "{app}");
        assert_eq!(targets[0]["cluster"], "two");
        assert_eq!(targets[0]["state"], "down");
    }
    // state=up walks every app (each has one up target), in pages.
    assert_eq!(walk(s.admin, "&state=up", 40).len(), 250);
    // cluster=: only that cluster's targets and cluster entry.
    let (_, v) = status(s.admin, "?cluster=two&state=up&limit=1000");
    assert_eq!(hostnames(&v).len(), 225);
    assert!(
        v["apps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["targets"].as_array().unwrap().len() == 1
                && a["targets"][0]["cluster"] == "two")
    );
    let clusters = v["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 1);
    assert_eq!(clusters[0]["name"], "two");
    assert!(hostnames(&status(s.admin, "?cluster=three").1).is_empty());
    // Filters and pages together.
    let down_walk = walk(s.admin, "&state=down", 4);
    assert_eq!(down_walk, down);
}

#[test]
fn status_rejects_unknown_parameters_and_bad_values_naming_them() {
    let s = TestServer::start(&many_apps());
    for (q, parameter) in [
        ("?bogus=1", "bogus"),
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?limit=ten", "limit"),
        ("?state=sideways", "state"),
        ("?app=a..b", "app"),
        ("?after=", "after"),
        ("?cluster=", "cluster"),
        ("?limit=5&limit=6", "limit"),
    ] {
        let (code, v) = status(s.admin, q);
        assert_eq!(code, 400, "{q}: next {}", v["next"]);
        assert_eq!(v["parameter"], parameter, "{q}: {v}");
        assert!(
            v["error"].as_str().unwrap().starts_with(parameter),
            "{q}: {v}"
        );
    }
}

/// Clients that ask for big status pages and never read them hold at most
/// `LARGE_IN_FLIGHT` (4) pages: more requests get a 503 at once, counted, until the
/// pages are gone.
/// `apps` unprobed apps on 8 clusters after `admin`: with 1,000, status pages of several MB
/// and `/metrics` of over half a MB.
fn big_config(admin: &str, apps: usize) -> String {
    let mut toml = format!("{admin}{ZONE}");
    for c in 0..8 {
        toml.push_str(&format!(
            "[[clusters]]\nname = \"c{c}\"\ningress = [\"127.0.1.{c}\"]\n"
        ));
    }
    for i in 0..apps {
        let targets: Vec<String> = (0..8)
            .map(|c| format!("{{ cluster = \"c{c}\" }}"))
            .collect();
        toml.push_str(&format!(
            "[[apps]]\nhostname = \"app{i:04}.o.test\"\ntargets = [{}]\n",
            targets.join(", ")
        ));
    }
    toml
}

/// True if `/healthz` answers 200 (a connection closed at the cap is just false).
fn healthz_ok(admin: SocketAddr) -> bool {
    let Ok(mut c) = TcpStream::connect(admin) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reply = String::new();
    c.write_all(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")
        .is_ok()
        && c.read_to_string(&mut reply).is_ok()
        && reply.starts_with("HTTP/1.0 200") | reply.starts_with("HTTP/1.1 200")
}

/// A client with a tiny receive window that asks for `path` and never reads.
fn non_reader(admin: SocketAddr, path: &str) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&admin.into()).unwrap();
    let mut c: TcpStream = sock.into();
    write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    c
}

#[test]
fn status_pages_that_no_client_reads_are_capped() {
    let s = TestServer::start(&big_config("", 1000));
    // Four clients with a tiny receive window, each asking for a page of several MB.
    let stuck: Vec<TcpStream> = (0..4)
        .map(|_| non_reader(s.admin, "/api/v1/status?limit=1000"))
        .collect();
    wait_for(
        "a status request shed with 503",
        Duration::from_secs(60),
        || http_get(s.admin, "/api/v1/status?limit=1").0 == 503,
    );
    assert!(
        metric(s.admin, r#"gtmd_admin_shed_total{path="/api/v1/status"}"#)
            .is_some_and(|v| v >= 1.0)
    );
    // Other endpoints are not affected.
    assert_eq!(http_get(s.admin, "/healthz").0, 200);
    drop(stuck);
    wait_for("status pages again", Duration::from_secs(30), || {
        http_get(s.admin, "/api/v1/status?limit=1").0 == 200
    });
}

#[test]
fn clients_that_never_read_a_large_response_neither_lock_out_healthz_nor_stay() {
    let s = TestServer::start(&big_config(
        "[admin]\nlisten = \"127.0.0.1:0\"\nheader_timeout = \"2s\"\nmax_connections = 4\n",
        3000,
    ));
    let size = http_get(s.admin, "/metrics").1.len();
    assert!(
        size > 1024 * 1024,
        "/metrics is {size} bytes: more than the buffers hold"
    );
    // Every connection busy with a /metrics its client never reads: none is idle.
    let stuck: Vec<TcpStream> = (0..4).map(|_| non_reader(s.admin, "/metrics")).collect();
    // Their responses stall, so they make room for /healthz (before: busy connections were
    // never evicted, and every new one was closed until the lifetime, 120 s, ran out).
    wait_for(
        "/healthz answered at the cap",
        Duration::from_secs(30),
        || healthz_ok(s.admin),
    );
    drop(stuck);
    // Below the cap, a response nobody takes ends within header_timeout (2 s).
    let alone = non_reader(s.admin, "/metrics");
    wait_for("a write timeout", Duration::from_secs(30), || {
        metric(s.admin, r#"gtmd_admin_timeouts_total{reason="write"}"#).is_some_and(|v| v >= 1.0)
    });
    // /metrics still serves readers.
    assert_eq!(http_get(s.admin, "/metrics").0, 200);
    drop(alone);
}

/// A server with a 1 s header timeout and a cap of 4 admin connections.
fn strict_admin() -> TestServer {
    TestServer::start(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\nheader_timeout = \"1s\"\nmax_connections = 4\n{ZONE}"
    ))
}

/// Reads until the server closes the connection (Ok) or `limit` passes (Err).
fn wait_closed(s: &mut TcpStream, limit: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return Ok(start.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Ok(start.elapsed()),
        }
    }
    Err(format!("still open after {limit:?}"))
}

#[test]
fn a_slow_header_client_is_closed() {
    let s = strict_admin();
    let mut c = TcpStream::connect(s.admin).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // One byte every 200 ms of a request head that would take 60 s to send.
    let head = format!(
        "GET /healthz?{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(300)
    );
    let start = Instant::now();
    let mut buf = [0u8; 256];
    let mut closed = false;
    for b in head.bytes() {
        if c.write_all(&[b]).is_err() {
            closed = true;
            break;
        }
        // Doubles as the 200 ms pause.
        match c.read(&mut buf) {
            Ok(_) => {
                closed = true;
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                closed = true;
                break;
            }
            Err(_) => {}
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "a client sending a byte every 200 ms was not closed within 20 s (header_timeout 1s)"
        );
    }
    assert!(closed, "the whole slow request head was accepted");
    assert!(
        metric(s.admin, r#"gtmd_admin_timeouts_total{reason="header"}"#).is_some_and(|v| v >= 1.0)
    );
    // The endpoint still serves others.
    assert_eq!(http_get(s.admin, "/healthz").0, 200);
}

#[test]
fn an_idle_keep_alive_connection_is_closed() {
    let s = strict_admin();
    let mut c = TcpStream::connect(s.admin).unwrap();
    write!(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // The response arrives, then the connection stays open for a next request...
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1024];
    let n = c.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("connection: close"));
    // ... until the header timeout (1 s) passes without one.
    if let Err(e) = wait_closed(&mut c, Duration::from_secs(15)) {
        panic!("an idle keep-alive connection (header_timeout 1s) was {e}");
    }
    assert_eq!(
        metric(s.admin, r#"gtmd_admin_timeouts_total{reason="header"}"#),
        Some(1.0)
    );
}

#[test]
fn a_busy_keep_alive_connection_is_closed_at_the_end_of_its_lifetime() {
    let s = TestServer::start(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\nconnection_lifetime = \"1s\"\n{ZONE}"
    ));
    let mut c = TcpStream::connect(s.admin).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    // A request every 100 ms, each well within the header timeout (10 s by default).
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "a connection with connection_lifetime 1s was still served after 15 s"
        );
        if write!(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").is_err() {
            break;
        }
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    assert!(
        metric(s.admin, r#"gtmd_admin_timeouts_total{reason="lifetime"}"#)
            .is_some_and(|v| v >= 1.0)
    );
}

#[test]
fn idle_connections_over_the_cap_make_room_for_healthz() {
    let s = strict_admin();
    let mut idle: Vec<TcpStream> = (0..12)
        .map(|_| TcpStream::connect(s.admin).unwrap())
        .collect();
    // Every idle connection is accepted in turn, each new one past the cap of 4 taking the
    // place of the oldest.
    wait_for("evictions", Duration::from_secs(10), || {
        metric(s.admin, "gtmd_admin_evicted_total").is_some_and(|v| v >= 8.0)
    });
    assert_eq!(http_get(s.admin, "/healthz"), (200, "ok\n".to_owned()));
    let open = metric(s.admin, "gtmd_admin_connections").unwrap();
    assert!((1.0..=4.0).contains(&open), "{open} admin connections open");
    // The oldest ones were closed by gtmd.
    wait_closed(&mut idle[0], Duration::from_secs(10)).unwrap();
    assert_eq!(metric(s.admin, "gtmd_admin_rejected_total"), Some(0.0));
    idle.clear();
}

/// Starts `gtmd serve` on `config` with RLIMIT_NOFILE soft = hard = `nofile`.
fn serve_with_fd_limit(
    config: &std::path::Path,
    nofile: u64,
    dns: SocketAddr,
) -> crate::cli::Served {
    use std::{
        io::{BufRead, BufReader},
        os::unix::process::CommandExt,
        process::{Command, Stdio},
        sync::{Arc, Mutex},
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gtmd"));
    cmd.args(["serve", "--no-watch", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: nofile as libc::rlim_t,
                rlim_max: nofile as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut line = String::new();
        while stderr.read_line(&mut line).unwrap_or(0) > 0 {
            sink.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
    let mut served = crate::cli::Served(child, log);
    let probe = query("shop.o.test.", RecordType::A).to_vec().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while crate::support::udp_raw_timeout(dns, &probe, Duration::from_millis(200)).is_none() {
        if let Ok(Some(status)) = served.0.try_wait() {
            std::thread::sleep(Duration::from_millis(200));
            panic!("gtmd exited ({status}):\n{}", served.stderr());
        }
        assert!(
            Instant::now() < deadline,
            "gtmd did not answer on {dns} within 20 s:\n{}",
            served.stderr()
        );
    }
    served
}

/// Idle connections far beyond what 256 descriptors hold, on the admin endpoint and on
/// DNS over TCP at once: the client caps (lowered to fit the limit) leave the probes their
/// descriptors, so no probe fails, both clusters stay in the answer, and `/healthz` answers
/// throughout.
#[test]
fn a_connection_storm_under_a_low_fd_limit_changes_no_probe_verdict() {
    const C1: &str = "127.0.0.71";
    const C2: &str = "127.0.0.72";
    let b1 = Backend::http(C1);
    let _b2 = Backend::http_on(&format!("{C2}:{}", b1.addr.port()));
    let port = crate::cli::free_port();
    let admin_port = crate::cli::free_port();
    let dns: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let toml = format!(
        r#"
[server]
listen = ["{dns}"]
udp_workers = 1
tcp_idle_timeout = "120s"
[admin]
listen = "{admin}"
header_timeout = "120s"
[health]
max_concurrent_probes = 16
{ZONE}
[[clusters]]
name = "one"
ingress = ["{C1}"]
[[clusters]]
name = "two"
ingress = ["{C2}"]
[[apps]]
hostname = "shop.o.test"
probe = {{ kind = "http", port = {bport}, interval = "500ms", timeout = "400ms", fast_interval = "100ms", rise = 1, fall = 1 }}
targets = [{{ cluster = "one" }}, {{ cluster = "two" }}]
"#,
        bport = b1.addr.port()
    );
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(toml.as_bytes()).unwrap();
    let served = serve_with_fd_limit(f.path(), 256, dns);
    wait_for("readiness", Duration::from_secs(20), || {
        http_get(admin, "/readyz").0 == 200
    });
    let log = served.stderr();
    assert!(
        log.contains("soft raised to the hard limit") && log.contains("hard=256"),
        "{log}"
    );
    assert!(log.contains("lowering server.tcp_max_connections"), "{log}");
    // The caps in effect, visible: with the probes (16), the reserve (64) and the three
    // bound sockets they fit in 256.
    let m = parse_exposition(&http_get(admin, "/metrics").1);
    let tcp_cap = m[r#"gtmd_connection_limit{listener="dns_tcp"}"#];
    let admin_cap = m[r#"gtmd_connection_limit{listener="admin"}"#];
    assert!(tcp_cap >= 1.0 && admin_cap >= 1.0);
    assert!(
        tcp_cap + admin_cap + 16.0 + 64.0 + 3.0 <= 256.0,
        "{tcp_cap} + {admin_cap}"
    );
    let up = |cluster: &str| format!(r#"gtmd_probe_up{{app="shop.o.test.",cluster="{cluster}"}}"#);
    let probes = |m: &std::collections::HashMap<String, f64>| {
        ["one", "two"]
            .iter()
            .map(|c| {
                m.get(&format!(
                    r#"gtmd_probe_duration_seconds_count{{cluster="{c}"}}"#
                ))
                .copied()
                .unwrap_or(0.0)
            })
            .fold(f64::INFINITY, f64::min)
    };
    // The storm: 400 idle connections to each listener, held open.
    let mut storm = Vec::new();
    for _ in 0..400 {
        for addr in [admin, dns] {
            if let Ok(c) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                storm.push(c);
            }
        }
    }
    assert!(storm.len() >= 700, "only {} storm connections", storm.len());
    // gtmd has taken every one of them (kept, evicted or turned away)...
    wait_for("the storm to be accepted", Duration::from_secs(30), || {
        let m = parse_exposition(&http_get(admin, "/metrics").1);
        // Summed over any labels, and for TCP over every rejection counter (one per
        // reason, e.g. a per-address limit).
        let g = |matches: &dyn Fn(&str) -> bool| {
            m.iter()
                .filter(|(k, _)| matches(k.split('{').next().unwrap_or("")))
                .map(|(_, v)| v)
                .sum::<f64>()
        };
        let admin = g(&|f| f == "gtmd_admin_evicted_total" || f == "gtmd_admin_connections");
        let tcp = g(&|f| {
            f == "gtmd_tcp_connections"
                || (f.starts_with("gtmd_tcp_") && f.contains("reject") && f.ends_with("_total"))
        });
        admin >= 400.0 && tcp >= 400.0
    });
    // ... and, while it holds the rest, probes go on succeeding.
    let before = probes(&parse_exposition(&http_get(admin, "/metrics").1));
    wait_for(
        "ten more probes of each target",
        Duration::from_secs(30),
        || probes(&parse_exposition(&http_get(admin, "/metrics").1)) >= before + 10.0,
    );
    let (code, text) = http_get(admin, "/metrics");
    assert_eq!(code, 200);
    let m = parse_exposition(&text);
    for cluster in ["one", "two"] {
        assert_eq!(
            m.get(&up(cluster)),
            Some(&1.0),
            "{cluster} is down:\n{text}"
        );
    }
    let failures: Vec<&String> = m
        .iter()
        .filter(|(k, v)| k.starts_with("gtmd_probe_failures_total") && **v > 0.0)
        .map(|(k, _)| k)
        .collect();
    assert!(
        failures.is_empty(),
        "probes failed: {failures:?}\n{}",
        served.stderr()
    );
    // The admin accept loop did not spin on errors (the budget leaves it descriptors).
    let accept_errors = m
        .get(r#"gtmd_accept_errors_total{listener="admin"}"#)
        .copied()
        .unwrap();
    assert!(accept_errors <= 20.0, "{accept_errors} admin accept errors");
    assert!(m["gtmd_admin_connections"] <= 64.0);
    assert!(m["gtmd_tcp_connections"] < 256.0);
    // DNS still answers both clusters; /healthz answers.
    let r = ask(dns, Proto::Udp, &query("shop.o.test.", RecordType::A));
    let answers: HashSet<String> = r.answers.iter().map(|a| a.data.to_string()).collect();
    assert_eq!(answers, HashSet::from([C1.to_owned(), C2.to_owned()]));
    assert_eq!(http_get(admin, "/healthz"), (200, "ok\n".to_owned()));
    drop(storm);
}
