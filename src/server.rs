//! Sockets and the serving loop.
//!
//! [`Listeners`] are bound before [`run`] is called so that a bind failure is reported
//! before anything starts, and so tests can bind port 0 and run many servers in one process.

use std::{
    future::Future,
    io,
    net::{SocketAddr, TcpListener, UdpSocket},
    sync::Arc,
};

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use tracing::{debug, info, warn};

use tokio_util::sync::CancellationToken;

use crate::{
    Loaded,
    admin::AdminState,
    dns::{DnsHandler, udp::Workers},
    health::{HealthEngine, HealthShared},
    metrics::Metrics,
    reload::Reloader,
    snapshot::Snapshot,
};

/// A failure to open a listening socket, naming the address and the protocol.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {proto} {addr}: {source}")]
pub struct BindError {
    pub proto: &'static str,
    pub addr: SocketAddr,
    #[source]
    pub source: io::Error,
}

/// Bound sockets: each DNS address serves UDP and TCP; the admin endpoint is optional.
#[derive(Debug)]
pub struct Listeners {
    pub udp: Vec<UdpSocket>,
    pub tcp: Vec<TcpListener>,
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds UDP and TCP on every DNS address, and the admin endpoint if configured.
    pub fn bind(server: &crate::model::ServerModel) -> Result<Self, BindError> {
        let mut out = Listeners {
            udp: Vec::new(),
            tcp: Vec::new(),
            admin: None,
        };
        for &addr in &server.listen {
            // One socket per worker thread: the kernel spreads packets over them.
            let (udp, tcp) = bind_pair(addr, server.udp_workers)?;
            out.udp.extend(udp);
            out.tcp.push(tcp);
        }
        if let Some(addr) = server.admin {
            out.admin = Some(bind_tcp(addr).map_err(|e| BindError {
                proto: "HTTP (admin)",
                ..e
            })?);
        }
        Ok(out)
    }

    /// Binds UDP and TCP on one free port of `ip` (tests: port 0 picks it).
    ///
    /// Getting one port for UDP *and* TCP (and a two-socket UDP group) takes several binds,
    /// with short gaps in which a socket elsewhere — typically a test client binding port
    /// 0 — can take the port. Any failure in the sequence starts over on a new port, so a
    /// lost race costs a retry instead of a failed test.
    pub fn bind_ephemeral(ip: std::net::IpAddr) -> Result<Self, BindError> {
        let attempt = || -> Result<Self, BindError> {
            let probe = bind_udp(SocketAddr::new(ip, 0))?;
            let port = probe
                .local_addr()
                .map_err(|source| BindError {
                    proto: "UDP",
                    addr: SocketAddr::new(ip, 0),
                    source,
                })?
                .port();
            let tcp = bind_tcp(SocketAddr::new(ip, port))?;
            drop(probe);
            let udp = bind_udp_group(SocketAddr::new(ip, port), 2)?;
            Ok(Listeners {
                udp,
                tcp: vec![tcp],
                admin: Some(bind_tcp(SocketAddr::new(ip, 0))?),
            })
        };
        let mut last = None;
        for _ in 0..50 {
            match attempt() {
                Ok(l) => return Ok(l),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// The addresses actually bound (UDP and TCP share them).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.udp
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }
}

fn bind_pair(addr: SocketAddr, n: usize) -> Result<(Vec<UdpSocket>, TcpListener), BindError> {
    let udp = bind_udp_group(addr, n)?;
    // With port 0, TCP must take the port UDP got.
    let tcp_addr = udp[0].local_addr().unwrap_or(addr);
    Ok((udp, bind_tcp(tcp_addr)?))
}

fn socket(addr: SocketAddr, ty: Type, proto: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        // So that 0.0.0.0:53 and [::]:53 can both be listed.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

fn bind_udp_with(addr: SocketAddr, reuse_port: bool) -> Result<UdpSocket, BindError> {
    let open = || -> io::Result<UdpSocket> {
        let s = socket(addr, Type::DGRAM, Protocol::UDP)?;
        s.set_reuse_port(reuse_port)?;
        // Room for bursts: a full buffer drops queries silently.
        let _ = s.set_recv_buffer_size(4 << 20);
        s.bind(&addr.into())?;
        Ok(s.into())
    };
    open().map_err(|source| BindError {
        proto: "UDP",
        addr,
        source,
    })
}

/// A plain (exclusive) UDP socket.
fn bind_udp(addr: SocketAddr) -> Result<UdpSocket, BindError> {
    bind_udp_with(addr, false)
}

/// `n` UDP sockets sharing `addr` (SO_REUSEPORT), one per worker thread.
///
/// SO_REUSEPORT would also let us join *another* process's group on the same port (a second
/// gtmd started by mistake, or, for port 0, whatever the kernel hands out), silently sharing
/// its traffic. So the address is first claimed with an exclusive socket — a port in use
/// fails here, loudly — and only then bound by the group.
fn bind_udp_group(addr: SocketAddr, n: usize) -> Result<Vec<UdpSocket>, BindError> {
    let exclusive = bind_udp(addr)?;
    if n <= 1 {
        return Ok(vec![exclusive]);
    }
    let bound = exclusive.local_addr().unwrap_or(addr);
    drop(exclusive);
    (0..n).map(|_| bind_udp_with(bound, true)).collect()
}

fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, BindError> {
    let open = || -> io::Result<TcpListener> {
        let s = socket(addr, Type::STREAM, Protocol::TCP)?;
        s.set_reuse_address(true)?;
        s.bind(&addr.into())?;
        s.listen(1024)?;
        Ok(s.into())
    };
    open().map_err(|source| BindError {
        proto: "TCP",
        addr,
        source,
    })
}

/// A running gtmd: DNS on its listeners, probes updating the snapshot, the admin endpoint,
/// and reloads on SIGHUP or a change in the config file's directory.
pub struct Running {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<HealthShared>,
    /// True once the first probe round is complete (readiness).
    pub first_round: tokio::sync::watch::Receiver<bool>,
    pub reloader: Arc<Reloader>,
    pub admin_addr: Option<SocketAddr>,
    /// Set at the start of a graceful stop: `/readyz` answers 503 from then on.
    pub stopping: Arc<std::sync::atomic::AtomicBool>,
    engine: Arc<tokio::sync::Mutex<HealthEngine>>,
    udp: Option<Workers>,
    background: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

/// Where the configuration came from, for reloads (None: no reloads, e.g. in tests that
/// build configs in memory).
#[derive(Debug, Clone, Default)]
pub struct ReloadSource {
    pub path: Option<std::path::PathBuf>,
    /// React to SIGHUP (only the real binary: tests run many servers in one process).
    pub sighup: bool,
    /// Watch the config file's directory.
    pub watch: bool,
}

/// The client connection caps in effect: the configured ones, unless their worst case
/// with the probes' would not fit the descriptor limit (see [`crate::fdbudget`]).
#[derive(Debug, Clone, Copy)]
struct ClientBudget {
    tcp_max_connections: usize,
    admin: crate::model::AdminLimits,
}

fn client_budget(model: &crate::model::Model, listeners: &Listeners) -> ClientBudget {
    let server = &model.server;
    let configured = ClientBudget {
        tcp_max_connections: server.tcp_max_connections,
        admin: server.admin_limits,
    };
    let limit = match crate::fdbudget::soft_limit() {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "cannot read the file descriptor limit: connection caps not checked against it");
            return configured;
        }
    };
    let admin_max = if listeners.admin.is_some() {
        server.admin_limits.max_connections as u64
    } else {
        0
    };
    let demand = crate::fdbudget::Demand {
        sockets: (listeners.udp.len()
            + listeners.tcp.len()
            + usize::from(listeners.admin.is_some())) as u64,
        tcp_listeners: listeners.tcp.len() as u64,
        tcp_max_connections: server.tcp_max_connections as u64,
        admin_max_connections: admin_max,
        probes: model.health.max_concurrent_probes as u64,
    };
    let b = crate::fdbudget::plan(limit, demand);
    if !b.lowered {
        debug!(
            limit,
            worst_case = demand.total(),
            "file descriptors: the connection caps fit the limit"
        );
        return configured;
    }
    warn!(
        limit,
        worst_case = demand.total(),
        probes = demand.probes,
        reserve = crate::fdbudget::RESERVE,
        tcp_max_connections = b.tcp_max_connections,
        admin_max_connections = b.admin_max_connections,
        "the file descriptor limit cannot hold every configured client connection besides the probes: \
         lowering server.tcp_max_connections from {} to {} (per TCP listener, {} listeners) and admin.max_connections from {} to {} \
         so clients cannot take the probes' descriptors (raise the hard limit, e.g. LimitNOFILE=, to keep them)",
        server.tcp_max_connections,
        b.tcp_max_connections,
        demand.tcp_listeners,
        admin_max,
        b.admin_max_connections,
    );
    if b.probes_exceed {
        warn!(
            limit,
            probes = demand.probes,
            "health.max_concurrent_probes with the reserve alone exceeds the file descriptor limit: probes may fail with \"Too many open files\"; lower it or raise the limit"
        );
    }
    ClientBudget {
        tcp_max_connections: b.tcp_max_connections as usize,
        admin: crate::model::AdminLimits {
            max_connections: (b.admin_max_connections as usize).max(1),
            ..server.admin_limits
        },
    }
}

/// Starts serving `loaded` on `listeners` and probing its targets (inside a tokio runtime).
pub async fn start(
    loaded: Loaded,
    listeners: Listeners,
    source: ReloadSource,
) -> Result<Running, StartError> {
    let metrics = Arc::new(Metrics::new());
    let model = Arc::new(loaded.model);
    let budget = client_budget(&model, &listeners);
    let fleet = match &model.fleet {
        Some(f) => Some(
            crate::fleet::Fleet::start(
                f,
                if loaded.fleet_hash.is_empty() {
                    &loaded.hash
                } else {
                    &loaded.fleet_hash
                },
                1,
                &metrics.registry,
            )
            .await
            .map_err(StartError::Fleet)?,
        ),
        None => None,
    };
    // Every target from its last verdict in the state file (if any) before the first
    // answer; read off the async workers.
    let mut restored = {
        let model = model.clone();
        tokio::task::spawn_blocking(move || {
            crate::health::persist::restore(&model, std::time::SystemTime::now())
        })
        .await
        .map_err(|e| StartError::Health(format!("reading the health state file: {e}")))?
    };
    // In a fleet, the first answer already holds what the peers see (warm start).
    let reader = match (&fleet, &model.fleet) {
        (Some(fleet), Some(settings)) => {
            let layout = Arc::new(crate::health::agree::layout::Layout::build(
                &crate::health::state::probes(&model),
            ));
            let (reader, complete) = fleet.warm_start(&layout).await;
            restored
                .table
                .set_agreement(Some(crate::health::agree::Agreement {
                    layout,
                    peers: Arc::new(reader.views()),
                    up_fraction: settings.up_fraction,
                }));
            Some((reader, complete))
        }
        _ => None,
    };
    let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::build(
        &model,
        &restored.table,
        &metrics,
    )));
    metrics.config_applied(&loaded.hash, 1);
    metrics.state.publish_overrides(None, &model);
    let engine = HealthEngine::start(model.clone(), snapshot.clone(), metrics.clone(), restored)
        .map_err(StartError::Health)?;
    let first_round = engine.first_round();
    crate::heap::release_freed();
    let health = engine.shared();
    if let (Some(fleet), Some((reader, complete))) = (&fleet, reader) {
        fleet.share(health.clone(), reader);
        if complete {
            health.ready_from_fleet();
        }
    }
    let engine = Arc::new(tokio::sync::Mutex::new(engine));
    let handler = DnsHandler::new(snapshot.clone(), metrics.clone());
    let background = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut udp_addrs: Vec<SocketAddr> = listeners
        .udp
        .iter()
        .filter_map(|s| s.local_addr().ok())
        .collect();
    let sockets = listeners.udp.len();
    udp_addrs.dedup();
    let udp = Workers::spawn(
        listeners.udp,
        crate::dns::udp::Serving {
            snapshot: snapshot.clone(),
            metrics: metrics.clone(),
            handler: handler.clone(),
            runtime: tokio::runtime::Handle::current(),
            rrl: model
                .server
                .rrl
                .clone()
                .map(|s| Arc::new(crate::dns::rrl::Rrl::new(s))),
            queue: model.server.full_path_queue,
        },
    )?;
    for addr in udp_addrs {
        info!(%addr, "serving DNS over UDP");
    }
    debug!(sockets, "UDP worker threads started");
    metrics
        .connection_limit
        .with_label_values(&["dns_tcp"])
        .set(budget.tcp_max_connections as i64);
    let limits = crate::dns::tcp::TcpLimits {
        max_connections: budget.tcp_max_connections,
        max_per_ip: model.server.tcp_max_connections_per_ip,
        idle_timeout: model.server.tcp_idle_timeout,
        max_queries: model.server.tcp_max_queries,
    };
    for tcp in listeners.tcp {
        let addr = tcp.local_addr()?;
        tasks.spawn(crate::dns::tcp::serve(
            tokio::net::TcpListener::from_std(tcp)?,
            handler.clone(),
            limits,
            background.clone(),
        ));
        info!(%addr, "serving DNS over TCP");
    }
    let reloader = Arc::new(
        Reloader::new(
            source.path.clone(),
            engine.clone(),
            metrics.clone(),
            model.clone(),
            loaded.hash.clone(),
        )
        .with_fleet(fleet.clone()),
    );
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let admin_addr = match listeners.admin {
        Some(l) => {
            let addr = l.local_addr()?;
            let mut state = AdminState::new(
                snapshot.clone(),
                health.clone(),
                metrics.clone(),
                first_round.clone(),
                reloader.clone(),
            );
            state.stopping = stopping.clone();
            state.fleet = fleet.clone();
            let state = Arc::new(state);
            metrics
                .connection_limit
                .with_label_values(&["admin"])
                .set(budget.admin.max_connections as i64);
            let listener = tokio::net::TcpListener::from_std(l)?;
            tasks.spawn(crate::admin::serve(
                listener,
                state,
                budget.admin,
                background.clone(),
            ));
            info!(%addr, "serving admin HTTP (/metrics, /healthz, /readyz, /api/v1/status, /api/v1/explain)");
            Some(addr)
        }
        None => None,
    };
    {
        let mut ready = first_round.clone();
        let metrics = metrics.clone();
        let cancel = background.clone();
        let stopping = stopping.clone();
        tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = ready.wait_for(|r| *r) => {
                    // A first round that completes during the shutdown grace leaves it 0.
                    if !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                        metrics.ready.set(1);
                    }
                    // What the first round allocated and freed (the set of probes
                    // still pending, first verdicts) goes back too.
                    crate::heap::release_freed();
                }
            }
        });
    }
    if source.path.is_some() {
        crate::reload::spawn_triggers(&mut tasks, reloader.clone(), &source, background.clone())
            .map_err(StartError::Reload)?;
    }
    Ok(Running {
        snapshot,
        metrics,
        health,
        first_round,
        reloader,
        admin_addr,
        stopping,
        engine,
        udp: Some(udp),
        background,
        tasks,
    })
}

impl Running {
    /// The first part of a graceful stop: `/readyz` turns 503 (and `gtmd_ready` 0) at once
    /// while DNS keeps answering, for `server.shutdown_grace` or until `hurry` completes
    /// (a second SIGTERM), whichever is first. Load balancers and Kubernetes see the
    /// instance leave by its readiness and stop sending queries before the sockets close,
    /// so a rolling update of gtmd loses none.
    pub async fn drain(&self, hurry: impl Future<Output = ()>) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.metrics.ready.set(0);
        // From the config in effect: a reload that changed it applies (an operator raises it
        // with terminationGracePeriodSeconds and expects the new value at the next stop).
        let grace = self.health.model().server.shutdown_grace;
        if grace.is_zero() {
            info!("shutting down: server.shutdown_grace is 0, stopping at once");
            return;
        }
        info!(
            grace = ?grace,
            "shutting down: /readyz now answers 503; DNS keeps answering for server.shutdown_grace \
             (a second SIGTERM or SIGINT stops at once)"
        );
        tokio::select! {
            _ = tokio::time::sleep(grace) => {
                info!(grace = ?grace, "shutdown grace period over: closing the DNS listeners");
            }
            _ = hurry => {
                info!("second stop signal during the shutdown grace period: closing the DNS listeners now");
            }
        }
    }

    /// Stops probing, reloading and serving: no new queries are accepted, in-flight ones
    /// finish.
    pub async fn stop(mut self) -> io::Result<()> {
        if let Some(udp) = self.udp.take() {
            let _ = tokio::task::spawn_blocking(move || udp.stop()).await;
        }
        self.background.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.engine.lock().await.stop().await;
        Ok(())
    }
}

/// Why gtmd could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("health probes: {0}")]
    Health(String),
    #[error("config reload: {0}")]
    Reload(String),
    #[error("{0}")]
    Fleet(String),
}

/// Serves until the first stop signal arrives on `signals`, keeps answering DNS for the
/// shutdown grace (ended early by a second signal, see [`Running::drain`]), then stops
/// cleanly. A closed channel counts as a signal.
pub async fn run(
    loaded: Loaded,
    listeners: Listeners,
    source: ReloadSource,
    mut signals: tokio::sync::mpsc::Receiver<()>,
) -> Result<(), StartError> {
    let running = start(loaded, listeners, source).await?;
    signals.recv().await;
    running
        .drain(async {
            signals.recv().await;
        })
        .await;
    running.stop().await?;
    info!("stopped");
    Ok(())
}
