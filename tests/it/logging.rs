//! Logging never takes down or stalls a task: with stderr closed or full, probes still
//! change verdicts, SIGHUP still reloads and SIGTERM still exits 0.

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::fd::AsRawFd,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use hickory_proto::{
    op::Message,
    rr::{RData, RecordType},
};

use crate::{
    backend::{Backend, Mode},
    cli::free_port,
    support::{http_get, query, udp_raw_timeout, wait_for},
};

const BIN: &str = env!("CARGO_BIN_EXE_gtmd");

/// Two backends on one port (the probe port is per app), on two loopback addresses.
fn backends(east: &str, west: &str) -> (Backend, Backend) {
    let one = Backend::http(east);
    let two = Backend::http_on(&format!("{west}:{}", one.addr.port()));
    (one, two)
}

/// An app served by two clusters, probed every 250 ms; DNS on `port`, admin on `admin`.
fn config(
    port: u16,
    admin: u16,
    backends: &(Backend, Backend),
    extra: &str,
) -> tempfile::NamedTempFile {
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:{port}"]
shutdown_grace = "0s"
{extra}
[admin]
listen = "127.0.0.1:{admin}"
[[zones]]
origin = "apps.example.com"
nameservers = ["ns.outside.net"]
[zones.soa]
mname = "ns.outside.net"
rname = "h.example.com"
[[clusters]]
name = "east"
ingress = ["{east}"]
[[clusters]]
name = "west"
ingress = ["{west}"]
[[apps]]
hostname = "shop.apps.example.com"
# Flap damping off: a return soon after a loss would wait for flap_hold.
probe = {{ kind = "http", port = {bport}, interval = "250ms", timeout = "100ms", fast_interval = "50ms", flap_changes = 0 }}
targets = [{{ cluster = "east" }}, {{ cluster = "west" }}]
"#,
        east = backends.0.addr.ip(),
        west = backends.1.addr.ip(),
        bport = backends.0.addr.port(),
    );
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(toml.as_bytes()).unwrap();
    f
}

/// `gtmd serve --no-watch` with stderr a pipe the test controls; killed on drop.
struct Gtmd(Child);

impl Drop for Gtmd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(config: &std::path::Path, rust_log: &str) -> Gtmd {
    Gtmd(
        Command::new(BIN)
            .args(["serve", "--no-watch", "--config"])
            .arg(config)
            .env("RUST_LOG", rust_log)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// The A records of the app, or None without a reply.
fn addresses(dns: SocketAddr) -> Option<BTreeSet<Ipv4Addr>> {
    let q = query("shop.apps.example.com.", RecordType::A)
        .to_vec()
        .unwrap();
    let reply = udp_raw_timeout(dns, &q, Duration::from_millis(500))?;
    let msg = Message::from_vec(&reply).ok()?;
    Some(
        msg.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect(),
    )
}

fn ip4(b: &Backend) -> Ipv4Addr {
    match b.addr.ip() {
        std::net::IpAddr::V4(v4) => v4,
        std::net::IpAddr::V6(_) => unreachable!("backends are on IPv4 loopback"),
    }
}

fn metric(admin: SocketAddr, series: &str) -> f64 {
    let (_, text) = http_get(admin, "/metrics");
    crate::ops::parse_exposition(&text)
        .get(series)
        .copied()
        .unwrap_or(0.0)
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for the exit after SIGTERM; the exit status must be success.
fn terminate(mut g: Gtmd) {
    signal(&g.0, "-TERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = g.0.try_wait().unwrap() {
            assert!(status.success(), "exit status after SIGTERM: {status}");
            return;
        }
        assert!(Instant::now() < deadline, "no exit within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_closed_stderr_stops_neither_probes_nor_reloads_nor_shutdown() {
    let pair = backends("127.0.0.81", "127.0.0.82");
    let (port, admin) = (free_port(), free_port());
    let f = config(port, admin, &pair, "");
    let dns: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let mut g = spawn(f.path(), "info");
    // Read the start-up lines up to the first probe round, then close the read end: every
    // later log line meets a broken pipe.
    let stderr = g.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stderr);
        let mut line = String::new();
        while lines.read_line(&mut line).unwrap_or(0) > 0 {
            if line.contains("first probe round complete") {
                let _ = tx.send(());
                return; // drops the read end
            }
            line.clear();
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the first probe round line");
    let both = BTreeSet::from([ip4(&pair.0), ip4(&pair.1)]);
    wait_for("both clusters in answers", Duration::from_secs(20), || {
        addresses(dns) == Some(both.clone())
    });

    // The probe task logs the transition into the closed pipe, and goes on.
    pair.0.set(Mode::Closed);
    let west = BTreeSet::from([ip4(&pair.1)]);
    wait_for(
        "the dead cluster to leave the answers",
        Duration::from_secs(20),
        || addresses(dns) == Some(west.clone()),
    );
    wait_for(
        "the dropped line to be counted",
        Duration::from_secs(20),
        || metric(admin, "gtmd_log_dropped_total") >= 1.0,
    );

    // SIGHUP: the reload task logs too, and still reloads.
    let reloads = r#"gtmd_config_reloads_total{result="success"}"#;
    let before = metric(admin, reloads);
    signal(&g.0, "-HUP");
    wait_for("a reload after SIGHUP", Duration::from_secs(20), || {
        metric(admin, reloads) > before
    });
    // Probes still run after the reload.
    pair.0.set(Mode::Ok);
    wait_for("the cluster to come back", Duration::from_secs(20), || {
        addresses(dns) == Some(both.clone())
    });
    terminate(g);
}

/// Bytes waiting in a pipe, and its capacity.
fn pipe_fill(fd: i32) -> (i32, i32) {
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int to the pointer; F_GETPIPE_SZ takes no argument.
    let (r, size) = unsafe {
        (
            libc::ioctl(fd, libc::FIONREAD, &mut queued),
            libc::fcntl(fd, libc::F_GETPIPE_SZ),
        )
    };
    assert!(r == 0 && size > 0, "pipe state of fd {fd}");
    (queued, size)
}

#[test]
fn a_full_stderr_stops_neither_probes_nor_shutdown() {
    let pair = backends("127.0.0.83", "127.0.0.84");
    let (port, admin) = (free_port(), free_port());
    // One TCP connection at a time, held open: every further one is turned away with a
    // debug line, which is how this test fills the pipe.
    let f = config(
        port,
        admin,
        &pair,
        "tcp_max_connections = 1\ntcp_idle_timeout = \"1h\"",
    );
    let dns: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let g = spawn(f.path(), "debug");
    let fd = g.0.stderr.as_ref().unwrap().as_raw_fd();
    // A one-page pipe fills after a few dozen lines (if the kernel refuses, the default
    // size takes more lines, still bounded below).
    // SAFETY: F_SETPIPE_SZ takes an int; the fd is our end of the child's stderr pipe.
    unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, 4096) };
    let both = BTreeSet::from([ip4(&pair.0), ip4(&pair.1)]);
    wait_for("both clusters in answers", Duration::from_secs(20), || {
        addresses(dns) == Some(both.clone())
    });
    let _held = TcpStream::connect(dns).unwrap();
    let start = Instant::now();
    loop {
        let (queued, size) = pipe_fill(fd);
        if queued + 512 > size {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "stderr not full after 20 s ({queued} of {size} bytes)"
        );
        let _ = TcpStream::connect_timeout(&dns, Duration::from_millis(200));
    }
    // Nobody reads stderr: the probe's next log lines have nowhere to go.
    pair.0.set(Mode::Closed);
    let west = BTreeSet::from([ip4(&pair.1)]);
    wait_for(
        "the dead cluster to leave the answers",
        Duration::from_secs(20),
        || addresses(dns) == Some(west.clone()),
    );
    wait_for(
        "dropped lines to be counted",
        Duration::from_secs(20),
        || {
            let _ = TcpStream::connect_timeout(&dns, Duration::from_millis(200));
            metric(admin, "gtmd_log_dropped_total") >= 1.0
        },
    );
    terminate(g);
}
