//! Switchable local HTTP(S) backends standing in for cluster ingresses.
//!
//! Each backend listens on its own loopback address and port and answers according to its
//! current [`Mode`]; tests flip the mode and watch gtmd's DNS answers follow.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
    sync::Notify,
};

/// How a backend answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// 200 with body "ok".
    Ok,
    Status(u16),
    /// Holds every request until the mode is changed (at most two minutes), then answers
    /// 200: "before the first result" without betting on how fast the machine is.
    Hold,
    /// 200 with this body.
    Body(String),
    /// The listening socket is closed: connections are refused.
    Closed,
    /// Alternates 200 and 503 on every request.
    Flap,
    /// 503 for `half`, then 200 for `half`, and so on from `from`, by the backend's clock
    /// (so the pattern does not depend on how fast or late gtmd probes).
    Bursts {
        half: Duration,
        from: std::time::Instant,
    },
    /// 200 with this many bytes of extra headers (in headers of at most 8 KiB each).
    LargeHead(usize),
}

struct State {
    mode: Mode,
    /// Statuses to answer first, before the mode applies (one per request).
    script: VecDeque<u16>,
    /// Answer 404 unless the Host header (without port) is this.
    only_host: Option<String>,
    hosts_seen: Vec<String>,
    flap: bool,
    /// Answer 503 to requests whose User-Agent contains one of these (a broken path
    /// from one gtmd instance of a fleet: its probes name it).
    blocked_agents: Vec<String>,
    /// The User-Agent of each request, in order (cleared by `take_agents`).
    agents_seen: Vec<String>,
}

pub struct Backend {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    hits: Arc<AtomicUsize>,
    changed: Arc<Notify>,
    stop: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

/// TLS settings of an HTTPS backend: its certificate and the SNI names it saw.
pub struct Tls {
    pub config: Arc<tokio_rustls::rustls::ServerConfig>,
    pub sni_seen: Arc<Mutex<Vec<String>>>,
}

impl Backend {
    /// An HTTP backend on `ip` (port chosen by the OS).
    pub fn http(ip: &str) -> Self {
        Self::start(ip, None)
    }

    /// An HTTPS backend with a self-signed certificate for `names`; returns the backend,
    /// the certificate PEM (to use as a CA file) and the SNI log.
    pub fn https(ip: &str, names: &[&str]) -> (Self, String, Arc<Mutex<Vec<String>>>) {
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let ck = rcgen::generate_simple_self_signed(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let pem = ck.cert.pem();
        let key = tokio_rustls::rustls::pki_types::PrivateKeyDer::try_from(
            ck.signing_key.serialize_der(),
        )
        .unwrap();
        let config = tokio_rustls::rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .unwrap();
        let sni_seen = Arc::new(Mutex::new(Vec::new()));
        let tls = Tls {
            config: Arc::new(config),
            sni_seen: sni_seen.clone(),
        };
        (Self::start(ip, Some(tls)), pem, sni_seen)
    }

    /// An HTTP backend on an exact address (e.g. the same port on another loopback IP).
    pub fn http_on(addr: &str) -> Self {
        Self::start_at(addr.parse().unwrap(), None)
    }

    fn start(ip: &str, tls: Option<Tls>) -> Self {
        // The server closes and reopens its socket (Mode::Refuse): a port outside the
        // ephemeral range cannot be taken meanwhile by a probe's outgoing connection.
        let ip: std::net::IpAddr = ip.parse().unwrap();
        let addr = SocketAddr::new(ip, crate::support::free_port_on(ip));
        Self::start_at(addr, tls)
    }

    fn start_at(addr: SocketAddr, tls: Option<Tls>) -> Self {
        let state = Arc::new(Mutex::new(State {
            mode: Mode::Ok,
            script: VecDeque::new(),
            only_host: None,
            hosts_seen: Vec::new(),
            flap: false,
            blocked_agents: Vec::new(),
            agents_seen: Vec::new(),
        }));
        let hits = Arc::new(AtomicUsize::new(0));
        let changed = Arc::new(Notify::new());
        let stop = Arc::new(Notify::new());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let (state, hits, changed, stop) =
                (state.clone(), hits.clone(), changed.clone(), stop.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(serve(addr, state, hits, changed, stop, tls, ready_tx));
            })
        };
        ready_rx.recv().unwrap();
        Self {
            addr,
            state,
            hits,
            changed,
            stop,
            thread: Some(thread),
        }
    }

    pub fn set(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
        self.changed.notify_one();
        // Give the server loop a moment to close or reopen the socket.
        std::thread::sleep(Duration::from_millis(20));
    }

    /// Answers these statuses to the next requests, then follows the mode again.
    pub fn script(&self, statuses: &[u16]) {
        self.state.lock().unwrap().script.extend(statuses);
    }

    pub fn only_host(&self, host: &str) {
        self.state.lock().unwrap().only_host = Some(host.to_owned());
    }

    /// Answers 503 to requests whose User-Agent contains `agent` (until unblocked).
    pub fn block_agent(&self, agent: &str) {
        self.state
            .lock()
            .unwrap()
            .blocked_agents
            .push(agent.to_owned());
    }

    /// The User-Agents of the requests since the last call.
    pub fn take_agents(&self) -> Vec<String> {
        std::mem::take(&mut self.state.lock().unwrap().agents_seen)
    }

    pub fn hosts_seen(&self) -> Vec<String> {
        self.state.lock().unwrap().hosts_seen.clone()
    }

    /// Requests answered so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    hits: Arc<AtomicUsize>,
    changed: Arc<Notify>,
    stop: Arc<Notify>,
    tls: Option<Tls>,
    ready: std::sync::mpsc::Sender<()>,
) {
    let acceptor = tls
        .as_ref()
        .map(|t| tokio_rustls::TlsAcceptor::from(t.config.clone()));
    let sni_seen = tls.as_ref().map(|t| t.sni_seen.clone());
    let mut ready = Some(ready);
    loop {
        let closed = state.lock().unwrap().mode == Mode::Closed;
        if closed {
            if let Some(r) = ready.take() {
                let _ = r.send(());
            }
            tokio::select! {
                _ = changed.notified() => continue,
                _ = stop.notified() => return,
            }
        }
        let listener = bind(addr).await;
        if let Some(r) = ready.take() {
            let _ = r.send(());
        }
        loop {
            tokio::select! {
                _ = stop.notified() => return,
                _ = changed.notified() => {
                    if state.lock().unwrap().mode == Mode::Closed {
                        break; // drops the listener: connections are refused
                    }
                }
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let (state, hits) = (state.clone(), hits.clone());
                    match (&acceptor, &sni_seen) {
                        (Some(acceptor), Some(sni)) => {
                            let (acceptor, sni) = (acceptor.clone(), sni.clone());
                            tokio::spawn(async move {
                                let Ok(tls) = acceptor.accept(stream).await else { return };
                                if let Some(name) = tls.get_ref().1.server_name() {
                                    sni.lock().unwrap().push(name.to_owned());
                                }
                                answer(tls, state, hits).await;
                            });
                        }
                        _ => {
                            tokio::spawn(answer(stream, state, hits));
                        }
                    }
                }
            }
        }
    }
}

async fn bind(addr: SocketAddr) -> TcpListener {
    for _ in 0..100 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        if socket.bind(addr).is_ok()
            && let Ok(l) = socket.listen(1024)
        {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cannot rebind backend {addr}");
}

async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    state: Arc<Mutex<State>>,
    hits: Arc<AtomicUsize>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 16 * 1024 {
            return;
        }
    }
    let request = String::from_utf8_lossy(&buf).into_owned();
    let host = request
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("host").then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    let agent = request
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("user-agent")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    let host_only = host
        .rsplit_once(':')
        .map_or(host.as_str(), |(h, _)| h)
        .to_owned();
    let mut padding = String::new();
    let (status, body) = {
        let mut s = state.lock().unwrap();
        s.hosts_seen.push(host.clone());
        s.agents_seen.push(agent.clone());
        if s.blocked_agents.iter().any(|a| agent.contains(a.as_str())) {
            (503, "blocked".to_owned())
        } else if let Some(code) = s.script.pop_front() {
            (code, "scripted".to_owned())
        } else if s.only_host.as_ref().is_some_and(|h| *h != host_only) {
            (404, "no such route".to_owned())
        } else {
            match s.mode.clone() {
                Mode::Ok | Mode::Closed | Mode::Hold => (200, "ok".to_owned()),
                Mode::Status(c) => (c, "status".to_owned()),
                Mode::Body(b) => (200, b),
                Mode::LargeHead(n) => {
                    let mut i = 0;
                    while padding.len() < n {
                        let room = (n - padding.len()).min(8 * 1024);
                        let name = format!("X-Pad-{i}: ");
                        let fill = room.saturating_sub(name.len() + 2).max(1);
                        padding.push_str(&name);
                        padding.push_str(&"a".repeat(fill));
                        padding.push_str("\r\n");
                        i += 1;
                    }
                    (200, "ok".to_owned())
                }
                Mode::Bursts { half, from } => {
                    let n = from.elapsed().as_nanos() / half.as_nanos().max(1);
                    (if n % 2 == 0 { 503 } else { 200 }, "bursts".to_owned())
                }
                Mode::Flap => {
                    s.flap = !s.flap;
                    (if s.flap { 503 } else { 200 }, "flap".to_owned())
                }
            }
        }
    };
    let held_since = std::time::Instant::now();
    while matches!(state.lock().unwrap().mode, Mode::Hold)
        && held_since.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    hits.fetch_add(1, Ordering::SeqCst);
    let response = format!(
        "HTTP/1.1 {status} X\r\n{padding}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
