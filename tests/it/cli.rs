//! The `gtmd` binary: `--version`, `check`, and `serve` start-up and shutdown.

use std::{
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hickory_proto::{op::ResponseCode, rr::RecordType};

use crate::support::{BOTH, ask, query};

const BIN: &str = env!("CARGO_BIN_EXE_gtmd");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/gtmd.toml");

fn gtmd(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run gtmd")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A loopback port free for both UDP and TCP, for a `gtmd` child process to listen on.
pub fn free_port() -> u16 {
    crate::support::free_port_on(std::net::Ipv4Addr::LOCALHOST.into())
}

/// The example config, listening on `port` instead of 5353 and stopping at once on
/// SIGTERM (no shutdown grace: tests that stop it need not wait).
pub fn example_on_port(port: u16) -> tempfile::NamedTempFile {
    example_with_grace(port, "0s")
}

/// The example config, listening on `port`, with `server.shutdown_grace = grace`.
pub fn example_with_grace(port: u16, grace: &str) -> tempfile::NamedTempFile {
    let toml = std::fs::read_to_string(EXAMPLE).unwrap().replace(
        r#"listen = ["127.0.0.1:5353", "[::1]:5353"]"#,
        &format!("listen = [\"127.0.0.1:{port}\"]\nshutdown_grace = \"{grace}\""),
    );
    assert!(toml.contains(&format!("127.0.0.1:{port}")));
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(toml.as_bytes()).unwrap();
    f
}

/// A running `gtmd serve`, killed on drop if still running; its stderr is collected.
pub struct Served(pub Child, pub Arc<Mutex<String>>);

impl Served {
    pub fn stderr(&self) -> String {
        self.1.lock().unwrap().clone()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `gtmd serve` on `config` and waits until it answers on `addr`.
pub fn serve(config: &std::path::Path, addr: SocketAddr) -> Served {
    serve_with(config, addr, &[])
}

/// [`serve`] with extra arguments.
pub fn serve_with(config: &std::path::Path, addr: SocketAddr, args: &[&str]) -> Served {
    serve_with_env(config, addr, args, &[])
}

/// [`serve_with`] with extra environment variables.
pub fn serve_with_env(
    config: &std::path::Path,
    addr: SocketAddr,
    args: &[&str],
    env: &[(&str, &str)],
) -> Served {
    let mut cmd = serve_command(config, args);
    cmd.envs(env.iter().copied());
    spawn_serve(cmd, addr)
}

/// [`serve_with`] as an unprivileged user (nobody) when the tests run as root: root reads
/// a file whatever its mode, so a permission problem shows only to another user. The
/// config's directory and file must be readable by everyone.
pub fn serve_unprivileged(config: &std::path::Path, addr: SocketAddr, args: &[&str]) -> Served {
    use std::os::unix::process::CommandExt;
    let mut cmd = serve_command(config, args);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.uid(65534).gid(65534);
    }
    spawn_serve(cmd, addr)
}

/// `gtmd serve --config <config> <args>` logging at info level, without colours.
pub fn serve_command(config: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--config"])
        .arg(config)
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Starts `cmd` and waits until it answers on `addr`.
fn spawn_serve(cmd: Command, addr: SocketAddr) -> Served {
    let served = spawn_only(cmd);
    let deadline = Instant::now() + Duration::from_secs(20);
    let probe = query("shop.apps.example.com.", RecordType::A)
        .to_vec()
        .unwrap();
    while Instant::now() < deadline {
        if crate::support::udp_raw_timeout(addr, &probe, Duration::from_millis(200)).is_some() {
            return served;
        }
    }
    panic!("gtmd serve did not answer on {addr} within 20 s");
}

/// Starts `cmd` (a [`serve_command`]) and collects its stderr, without waiting for it to
/// answer (a test that checks the very first answer sends the first query itself).
pub fn spawn_only(mut cmd: Command) -> Served {
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot start {BIN} (run as nobody when the tests run as root: every directory \
             on its path must be searchable by everyone): {e}"
        )
    });
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
    Served(child, log)
}

#[test]
fn version_prints_the_crate_version() {
    let out = gtmd(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("gtmd {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_accepts_the_example_with_a_summary_line() {
    let out = gtmd(&["check", "--config", EXAMPLE]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains("ok: 1 zone, 13 records, 3 apps, 3 clusters"),
        "{stdout}"
    );
    // The example means what it says: no setting it makes is ignored.
    assert_eq!(text(&out.stderr), "", "warnings on the example");
}

/// Issue 13 point 7: a weight under `policy = "all"` (the old example) is ignored by every
/// answer; `gtmd check` says so, naming the field, and still accepts the file.
#[test]
fn check_warns_about_weights_the_policy_ignores() {
    let toml = std::fs::read_to_string(EXAMPLE).unwrap().replace(
        r#"targets = [{ cluster = "east" }, { cluster = "west" }]"#,
        r#"targets = [{ cluster = "east", weight = 80 }, { cluster = "west", weight = 20 }]"#,
    );
    assert!(toml.contains("weight = 80"));
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(toml.as_bytes()).unwrap();
    let path = f.path().to_str().unwrap();
    let out = gtmd(&["check", "--config", path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let warnings: Vec<&str> = stderr.lines().collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    assert_eq!(
        warnings[0],
        format!(
            "{path}: warning: apps[0].targets[0].weight: is ignored: policy \"all\" does not use \
             weights, only the weighted policy does (app shop.apps.example.com)"
        )
    );
    assert!(
        warnings[1].contains("apps[0].targets[1].weight: is ignored"),
        "{stderr}"
    );
}

#[test]
fn check_lists_every_error_with_its_path_and_fails() {
    let toml = std::fs::read_to_string(EXAMPLE)
        .unwrap()
        .replace(r#"{ cluster = "west" }"#, r#"{ cluster = "west2" }"#)
        .replace("203.0.113.30", "203.0.113.300")
        .replace(
            "hostname = \"api.apps.example.com\"",
            "hostname = \"api.example.org\"",
        );
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(toml.as_bytes()).unwrap();
    let path = f.path().to_str().unwrap();
    let out = gtmd(&["check", "--config", path]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    for expected in [
        format!("{path}: clusters[2].ingress[0]: invalid IP address \"203.0.113.300\""),
        format!("{path}: apps[0].targets[1].cluster: unknown cluster \"west2\""),
        format!("{path}: apps[1].hostname: api.example.org. is not inside any configured zone"),
        format!("{path}: 3 errors"),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn serve_fails_with_one_line_when_the_port_is_taken() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = example_on_port(port);
    let out = gtmd(&["serve", "--config", config.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on UDP 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn serve_fails_with_one_line_when_the_file_is_unreadable() {
    let out = gtmd(&["serve", "--config", "/nonexistent/gtmd.toml"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("/nonexistent/gtmd.toml: cannot read file"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
}

#[test]
fn serve_answers_and_stops_cleanly_on_sigterm() {
    let port = free_port();
    let config = example_on_port(port);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut served = serve(config.path(), addr);
    for proto in BOTH {
        let r = ask(addr, proto, &query("shop.apps.example.com.", RecordType::A));
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.metadata.authoritative);
        assert_eq!(r.answers.len(), 2);
    }
    let pid = served.0.id();
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = served.0.try_wait().unwrap() {
            assert!(status.success(), "exit status after SIGTERM: {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gtmd did not exit within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A config answering shop.apps.example.com (unprobed, always up) on `port`, the admin
/// endpoint on `admin`, with `server.shutdown_grace = grace`.
fn graceful_config(port: u16, admin: u16, grace: &str) -> tempfile::NamedTempFile {
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:{port}"]
shutdown_grace = "{grace}"
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
ingress = ["192.0.2.1"]
[[apps]]
hostname = "shop.apps.example.com"
targets = [{{ cluster = "east" }}]
"#
    );
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(toml.as_bytes()).unwrap();
    f
}

fn kill(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits (at most `limit`, a failure bound) for the child to exit; returns its status.
fn wait_exit(served: &mut Served, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = served.0.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "gtmd did not exit within {limit:?}:\n{}",
            served.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_turns_readyz_503_while_dns_keeps_answering_for_the_grace_then_exits_0() {
    let port = free_port();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // Long enough that the checks below fit in it on a loaded machine; the test waits
    // on events (the 503, the log lines, the exit), never on the clock.
    let config = graceful_config(port, admin.port(), "8s");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut served = serve(config.path(), addr);
    crate::support::wait_for("readyz 200", Duration::from_secs(20), || {
        crate::support::http_get(admin, "/readyz").0 == 200
    });
    kill(&served.0, "-TERM");
    crate::support::wait_for("readyz 503", Duration::from_secs(20), || {
        crate::support::http_get(admin, "/readyz").0 == 503
    });
    let (code, body) = crate::support::http_get(admin, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("shutting down"), "{body}");
    let (_, metrics) = crate::support::http_get(admin, "/metrics");
    assert!(metrics.contains("\ngtmd_ready 0\n"), "{metrics}");
    for proto in BOTH {
        let r = ask(addr, proto, &query("shop.apps.example.com.", RecordType::A));
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(r.answers.len(), 1);
    }
    let status = wait_exit(&mut served, Duration::from_secs(40));
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let log = served.stderr();
    assert!(
        log.contains("shutting down: /readyz now answers 503"),
        "{log}"
    );
    assert!(log.contains("shutdown grace period over"), "{log}");
}

#[test]
fn a_second_sigterm_ends_the_shutdown_grace_at_once() {
    let port = free_port();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // A grace no test could wait out: only the second signal can end it.
    let config = graceful_config(port, admin.port(), "10m");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut served = serve(config.path(), addr);
    kill(&served.0, "-TERM");
    crate::support::wait_for("readyz 503", Duration::from_secs(20), || {
        crate::support::http_get(admin, "/readyz").0 == 503
    });
    kill(&served.0, "-TERM");
    let status = wait_exit(&mut served, Duration::from_secs(30));
    assert!(status.success(), "exit status after two SIGTERMs: {status}");
    assert!(
        served
            .stderr()
            .contains("second stop signal during the shutdown grace period"),
        "{}",
        served.stderr()
    );
}

#[test]
fn a_reloaded_shutdown_grace_applies_to_the_next_stop() {
    let port = free_port();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = graceful_config(port, admin.port(), "0s");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut served = serve_with(config.path(), addr, &["--no-watch"]);
    crate::support::wait_for("readyz 200", Duration::from_secs(20), || {
        crate::support::http_get(admin, "/readyz").0 == 200
    });
    // Raised to a grace no test could wait out: the stop must now wait for a second signal.
    let longer = graceful_config(port, admin.port(), "10m");
    std::fs::copy(longer.path(), config.path()).unwrap();
    kill(&served.0, "-HUP");
    crate::support::wait_for("the reload", Duration::from_secs(20), || {
        served.stderr().contains("config reloaded")
    });
    kill(&served.0, "-TERM");
    crate::support::wait_for("readyz 503", Duration::from_secs(20), || {
        crate::support::http_get(admin, "/readyz").0 == 503
    });
    crate::support::wait_for("the stop's log line", Duration::from_secs(20), || {
        served.stderr().contains("shutting down:")
    });
    let log = served.stderr();
    assert!(
        log.contains("shutting down: /readyz now answers 503") && !log.contains("stopping at once"),
        "the reloaded grace was not applied:\n{log}"
    );
    assert!(served.0.try_wait().unwrap().is_none(), "{log}");
    let r = ask(
        addr,
        crate::support::Proto::Udp,
        &query("shop.apps.example.com.", RecordType::A),
    );
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    kill(&served.0, "-TERM");
    let status = wait_exit(&mut served, Duration::from_secs(30));
    assert!(status.success(), "exit status after two SIGTERMs: {status}");
}

/// Issue 13 point 7: the environment wins over the file, and says so. The file listens on
/// one port, `GTMD__SERVER__LISTEN` on another: gtmd serves the environment's, and both
/// `gtmd check` and the start log name the override that replaced the file's value.
#[test]
fn the_environment_wins_over_the_file_and_says_so() {
    let (file_port, env_port) = (free_port(), free_port());
    let config = example_on_port(file_port);
    let env_listen = format!("127.0.0.1:{env_port}");
    let path = config.path().to_str().unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", path])
        .env_remove("RUST_LOG")
        .env("GTMD__SERVER__LISTEN", &env_listen)
        .env("GTMD__SERVER__TCP_MAX_QUERIES", "100")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{path}: warning: server.listen: the file's value is not used: the environment \
             variable GTMD__SERVER__LISTEN overrides it (the environment wins over the file)"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{path}: note: server.tcp_max_queries: set by the environment variable \
             GTMD__SERVER__TCP_MAX_QUERIES"
        )),
        "{stderr}"
    );
    let addr: SocketAddr = env_listen.parse().unwrap();
    let served = serve_with_env(
        config.path(),
        addr,
        &[],
        &[("GTMD__SERVER__LISTEN", env_listen.as_str())],
    );
    let r = ask(
        addr,
        crate::support::Proto::Udp,
        &query("shop.apps.example.com.", RecordType::A),
    );
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    let log = served.stderr();
    assert!(
        log.contains("WARN") && log.contains("server.listen: the file's value is not used"),
        "{log}"
    );
}

#[test]
fn serve_logs_each_transition_once_with_its_reason() {
    use crate::backend::{Backend, Mode};
    let backend = Backend::http("127.0.0.21");
    let port = free_port();
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:{port}"]
[admin]
listen = "127.0.0.1:0"
[[zones]]
origin = "apps.example.com"
nameservers = ["ns.outside.net"]
[zones.soa]
mname = "ns.outside.net"
rname = "h.example.com"
[[clusters]]
name = "east"
ingress = ["127.0.0.21"]
[[apps]]
hostname = "shop.apps.example.com"
# Flap damping off: a return soon after a loss would wait for flap_hold.
probe = {{ kind = "http", port = {bport}, interval = "250ms", timeout = "100ms", fast_interval = "50ms", flap_changes = 0 }}
targets = [{{ cluster = "east" }}]
"#,
        bport = backend.addr.port()
    );
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(toml.as_bytes()).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let served = serve(f.path(), addr);
    let wait = |what: &str, needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !served.stderr().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {what} in log:\n{}",
                served.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait("first round line", "first probe round complete");
    backend.set(Mode::Closed);
    wait("down transition", "to=down");
    backend.set(Mode::Ok);
    wait("up transition", "to=up");
    let log = served.stderr();
    let transitions: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("health transition"))
        .collect();
    assert_eq!(transitions.len(), 2, "{log}");
    assert!(transitions[0].contains("INFO"), "{log}");
    assert!(
        transitions[0].contains(
            "app=shop.apps.example.com. cluster=east from=up to=down reason=connection refused"
        ),
        "{log}"
    );
    assert!(
        transitions[1].contains("from=down to=up reason=status 200"),
        "{log}"
    );
    assert!(
        log.contains("no target is up: answering the fallback"),
        "{log}"
    );
}

/// Makes a FIFO (named pipe) at `path`.
pub fn mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only reads it.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

/// Runs gtmd with `args`, killed after `limit`, with its address space capped at 1 GiB (a
/// gtmd that reads `/dev/zero` fails instead of exhausting the machine's memory).
fn gtmd_bounded(args: &[&str], limit: Duration) -> (Option<std::process::ExitStatus>, String) {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe and touches nothing of the parent.
    unsafe {
        cmd.pre_exec(|| {
            let cap = libc::rlimit {
                rlim_cur: 1 << 30,
                rlim_max: 1 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &cap) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().unwrap())
}

#[test]
fn check_and_serve_refuse_a_fifo_a_device_or_a_directory_with_a_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.toml");
    mkfifo(&fifo);
    let zero = dir.path().join("zero.toml");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let cases = [
        (
            fifo.as_path(),
            "it is a FIFO (named pipe), not a regular file",
        ),
        (
            zero.as_path(),
            "it is a character device (a symlink to /dev/zero), not a regular file",
        ),
        (dir.path(), "it is a directory, not a regular file"),
    ];
    for (path, what) in cases {
        let p = path.to_str().unwrap();
        for command in ["check", "serve"] {
            let (status, stderr) = gtmd_bounded(&[command, "--config", p], Duration::from_secs(20));
            let status =
                status.unwrap_or_else(|| panic!("`gtmd {command}` on {p} still ran after 20 s"));
            assert!(!status.success(), "{command} {p}: {stderr}");
            assert!(
                stderr.contains(&format!("{p}: cannot read file: {what}")),
                "{command} {p}: {stderr}"
            );
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
    }
}
