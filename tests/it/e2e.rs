//! End-to-end through the programs users really run: a recursive resolver (unbound) in
//! front of one and two gtmd instances, and a real Prometheus loading the alert rules.
//! Ignored by default; the README test command installs the programs and runs them.

use std::{
    collections::BTreeSet,
    io::Write,
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use hickory_proto::{
    op::ResponseCode,
    rr::{RData, RecordType},
};

use crate::{
    backend::{Backend, Mode},
    cli::free_port,
    support::wait_for,
    support::{Proto, TestServer, ask, http_get, plain_query},
};

const ONE: &str = "127.0.0.61";
const TWO: &str = "127.0.0.62";

fn gtmd_config(port: u16) -> String {
    format!(
        r#"
[[zones]]
origin = "e2e.test"
nameservers = ["ns1.e2e.test"]
[zones.soa]
mname = "ns1.e2e.test"
rname = "h.e2e.test"
minimum = 30
ttl = 300
[[zones.records]]
name = "ns1"
type = "A"
value = "127.0.0.1"
[[clusters]]
name = "one"
ingress = ["{ONE}"]
[[clusters]]
name = "two"
ingress = ["{TWO}"]
[[apps]]
hostname = "shop.e2e.test"
ttl = 1
# Flap damping off: a return soon after a loss would wait for flap_hold.
probe = {{ kind = "http", port = {port}, interval = "1s", timeout = "900ms", fast_interval = "50ms", rise = 2, fall = 2, flap_changes = 0 }}
targets = [{{ cluster = "one" }}, {{ cluster = "two", probe_address = "127.0.0.63" }}]
"#
    )
}

/// An unbound resolver on loopback with a stub zone pointing at `gtmds`, killed on drop.
struct Unbound {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Unbound {
    fn start(gtmds: &[SocketAddr]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let stubs: String = gtmds
            .iter()
            .map(|a| format!("  stub-addr: {}@{}\n", a.ip(), a.port()))
            .collect();
        let conf = format!(
            r#"server:
  interface: 127.0.0.1@{port}
  port: {port}
  do-ip6: no
  do-not-query-localhost: no
  username: ""
  chroot: ""
  directory: "{dir}"
  pidfile: "{dir}/unbound.pid"
  use-syslog: no
  logfile: ""
  verbosity: 0
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  cache-max-ttl: 1
  cache-min-ttl: 0
  infra-host-ttl: 2
  qname-minimisation: no
  minimal-responses: no
  # unbound serves "test." itself (RFC 6761): let our stub zone through.
  local-zone: "test." nodefault
stub-zone:
  name: "e2e.test"
{stubs}remote-control:
  control-enable: no
"#,
            dir = dir.path().display()
        );
        let path = dir.path().join("unbound.conf");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(conf.as_bytes())
            .unwrap();
        let child = Command::new("unbound")
            .args(["-d", "-c"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("unbound is installed (apt-get install unbound)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let u = Unbound {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        let probe = plain_query("ns1.e2e.test.", RecordType::A)
            .to_vec()
            .unwrap();
        while Instant::now() < deadline {
            if crate::support::udp_raw_timeout(addr, &probe, Duration::from_millis(300)).is_some() {
                return u;
            }
        }
        panic!("unbound did not start on {addr}");
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn resolve(resolver: SocketAddr, name: &str) -> (ResponseCode, BTreeSet<String>) {
    let mut q = plain_query(name, RecordType::A);
    q.metadata.recursion_desired = true;
    let r = ask(resolver, Proto::Udp, &q);
    let ips = r
        .answers
        .iter()
        .filter_map(|a| match &a.data {
            RData::A(ip) => Some(ip.to_string()),
            _ => None,
        })
        .collect();
    (r.metadata.response_code, ips)
}

fn set(ips: &[&str]) -> BTreeSet<String> {
    ips.iter().map(|s| s.to_string()).collect()
}

fn ready(s: &TestServer) {
    wait_for("gtmd readiness", Duration::from_secs(10), || {
        http_get(s.admin, "/readyz").0 == 200
    });
}

fn nxdomain_count(s: &TestServer) -> f64 {
    let (_, text) = http_get(s.admin, "/metrics");
    crate::ops::parse_exposition(&text)
        .get(r#"gtmd_dns_responses_total{rcode="NXDOMAIN"}"#)
        .copied()
        .unwrap_or(0.0)
}

#[test]
#[ignore = "needs unbound"]
fn failover_through_a_real_resolver_and_negative_caching() {
    let _exclusive = crate::support::exclusive();
    let one = Backend::http(ONE);
    let two = Backend::http("127.0.0.63");
    // Both backends must listen on the same port: the probe port is per app.
    let two = if two.addr.port() == one.addr.port() {
        two
    } else {
        drop(two);
        Backend::http_on(&format!("127.0.0.63:{}", one.addr.port()))
    };
    let g = TestServer::start(&gtmd_config(one.addr.port()));
    ready(&g);
    let u = Unbound::start(&[g.addr]);
    assert_eq!(
        resolve(u.addr, "shop.e2e.test."),
        (ResponseCode::NoError, set(&[ONE, TWO]))
    );

    one.set(Mode::Closed);
    let took = wait_for(
        "the resolver to stop returning the dead cluster",
        Duration::from_secs(20),
        || resolve(u.addr, "shop.e2e.test.") == (ResponseCode::NoError, set(&[TWO])),
    );
    eprintln!("through unbound: dead cluster gone after {took:?} (ttl 1 s, interval 1 s, fall 2)");
    // Detection (about 1.1 s) plus the 1 s TTL, with room for a loaded machine: a resolver
    // that kept the old answer for its whole cache lifetime would take far longer.
    assert!(
        took < Duration::from_secs(8),
        "ttl + failover time, took {took:?}"
    );
    one.set(Mode::Ok);
    wait_for("the cluster to come back", Duration::from_secs(10), || {
        resolve(u.addr, "shop.e2e.test.") == (ResponseCode::NoError, set(&[ONE, TWO]))
    });

    // NXDOMAIN is cached by the resolver per the SOA minimum (30 s): the second query
    // never reaches gtmd.
    let before = nxdomain_count(&g);
    assert_eq!(resolve(u.addr, "nope.e2e.test.").0, ResponseCode::NXDomain);
    // A response is counted once it is sent, so the resolver may have it first.
    wait_for(
        "the first NXDOMAIN counted",
        Duration::from_secs(10),
        || nxdomain_count(&g) > before,
    );
    let after_first = nxdomain_count(&g);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(resolve(u.addr, "nope.e2e.test.").0, ResponseCode::NXDomain);
    assert_eq!(
        nxdomain_count(&g),
        after_first,
        "answered from the resolver's negative cache"
    );
    drop(two);
}

#[test]
#[ignore = "needs unbound"]
fn two_instances_agree_and_survive_the_loss_of_one() {
    let _exclusive = crate::support::exclusive();
    let one = Backend::http(ONE);
    let _two = Backend::http_on(&format!("127.0.0.63:{}", one.addr.port()));
    // Two nameservers on two addresses, as in a real delegation (resolvers keep their
    // health state per server address).
    let a = TestServer::start_on(&gtmd_config(one.addr.port()), "127.0.0.71".parse().unwrap());
    let b = TestServer::start_on(&gtmd_config(one.addr.port()), "127.0.0.72".parse().unwrap());
    ready(&a);
    ready(&b);
    let u = Unbound::start(&[a.addr, b.addr]);
    // Both instances probe independently and see the same healthy set.
    one.set(Mode::Status(503));
    for s in [&a, &b] {
        wait_for(
            "each instance to drop cluster one",
            Duration::from_secs(10),
            || {
                let r = ask(
                    s.addr,
                    Proto::Udp,
                    &plain_query("shop.e2e.test.", RecordType::A),
                );
                r.answers.len() == 1
            },
        );
    }
    for _ in 0..20 {
        assert_eq!(
            resolve(u.addr, "shop.e2e.test."),
            (ResponseCode::NoError, set(&[TWO]))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Kill one instance: the resolver keeps resolving through the other. It may first try
    // the dead one and time out internally (it forgets what it learnt every 2 s here), so
    // each resolution gets up to 3 tries of 5 s, as a stub resolver's retries would; every
    // one of them must succeed.
    drop(a);
    let mut slowest = Duration::ZERO;
    let mut retried = 0;
    for i in 0..20 {
        let mut q = plain_query("shop.e2e.test.", RecordType::A);
        q.metadata.recursion_desired = true;
        q.metadata.id = 1000 + i;
        let started = Instant::now();
        let reply = (0..3)
            .find_map(|attempt| {
                retried += usize::from(attempt > 0);
                crate::support::udp_raw_timeout(
                    u.addr,
                    &q.to_vec().unwrap(),
                    Duration::from_secs(5),
                )
            })
            .unwrap_or_else(|| {
                panic!("resolution {i} after the loss of one instance got no answer in 3 tries")
            });
        slowest = slowest.max(started.elapsed());
        let r = hickory_proto::op::Message::from_vec(&reply).unwrap();
        assert_eq!(
            r.metadata.response_code,
            ResponseCode::NoError,
            "resolution {i}"
        );
        assert_eq!(r.answers.len(), 1, "resolution {i}: {r:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "20 resolutions after losing one instance, slowest {slowest:?}, {retried} client retries"
    );
    drop(b);
}

#[test]
#[ignore = "needs prometheus and promtool (Debian package prometheus)"]
fn prometheus_scrapes_and_loads_the_alert_rules() {
    let rules = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/prometheus/gtmd-alerts.yaml"
    );
    let check = Command::new("promtool")
        .args(["check", "rules", rules])
        .output()
        .expect("promtool is installed");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    let one = Backend::http(ONE);
    let _two = Backend::http_on(&format!("127.0.0.63:{}", one.addr.port()));
    let g = TestServer::start(&gtmd_config(one.addr.port()));
    ready(&g);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\nscrape_configs:\n  - job_name: gtmd\n    static_configs:\n      - targets: ['{}']\n",
            g.admin
        ),
    )
    .unwrap();
    let port = free_port();
    let mut prom = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus is installed");
    let api: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let up_of_one = || -> Option<String> {
        std::net::TcpStream::connect(api).ok()?;
        let (status, body) = http_get(
            api,
            "/api/v1/query?query=gtmd_probe_up%7Bapp%3D%22shop.e2e.test.%22%2Ccluster%3D%22one%22%7D",
        );
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (status == 200)
            .then(|| {
                v["data"]["result"][0]["value"][1]
                    .as_str()
                    .map(str::to_owned)
            })
            .flatten()
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(
            "prometheus to see the probe up",
            Duration::from_secs(60),
            || up_of_one().as_deref() == Some("1"),
        );
        one.set(Mode::Status(503));
        wait_for(
            "prometheus to see the probe down",
            Duration::from_secs(30),
            || up_of_one().as_deref() == Some("0"),
        );
        let (_, body) = http_get(api, "/api/v1/rules");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let group = &v["data"]["groups"][0];
        assert_eq!(group["name"], "gtmd", "{body}");
        let alerts = std::fs::read_to_string(rules)
            .unwrap()
            .matches("- alert: ")
            .count();
        assert_eq!(group["rules"].as_array().unwrap().len(), alerts, "{body}");
    }));
    let _ = prom.kill();
    let _ = prom.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
