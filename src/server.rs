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
use hickory_server::Server;
use socket2::{Domain, Protocol, Socket, Type};
use tracing::info;

use crate::{
    Loaded,
    dns::DnsHandler,
    health::{HealthEngine, HealthTable},
    snapshot::Snapshot,
};

/// How many responses may queue for one TCP connection (pipelined queries) before the
/// handler waits for the client to read.
const TCP_RESPONSE_QUEUE: usize = 64;

/// A failure to open a listening socket, naming the address and the protocol.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {proto} {addr}: {source}")]
pub struct BindError {
    pub proto: &'static str,
    pub addr: SocketAddr,
    #[source]
    pub source: io::Error,
}

/// Bound DNS sockets: each address serves UDP and TCP.
#[derive(Debug)]
pub struct Listeners {
    pub udp: Vec<UdpSocket>,
    pub tcp: Vec<TcpListener>,
}

impl Listeners {
    /// Binds UDP and TCP on every address.
    pub fn bind(addrs: &[SocketAddr]) -> Result<Self, BindError> {
        let mut out = Listeners {
            udp: Vec::new(),
            tcp: Vec::new(),
        };
        for &addr in addrs {
            let (udp, tcp) = bind_pair(addr)?;
            out.udp.push(udp);
            out.tcp.push(tcp);
        }
        Ok(out)
    }

    /// Binds UDP and TCP on one free port of `ip` (tests: port 0 picks it).
    pub fn bind_ephemeral(ip: std::net::IpAddr) -> Result<Self, BindError> {
        let mut last = None;
        for _ in 0..20 {
            let udp = bind_udp(SocketAddr::new(ip, 0))?;
            let port = udp
                .local_addr()
                .map_err(|source| BindError {
                    proto: "UDP",
                    addr: SocketAddr::new(ip, 0),
                    source,
                })?
                .port();
            match bind_tcp(SocketAddr::new(ip, port)) {
                Ok(tcp) => {
                    return Ok(Listeners {
                        udp: vec![udp],
                        tcp: vec![tcp],
                    });
                }
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

fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), BindError> {
    let udp = bind_udp(addr)?;
    // With port 0, TCP must take the port UDP got.
    let tcp_addr = udp.local_addr().unwrap_or(addr);
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

fn bind_udp(addr: SocketAddr) -> Result<UdpSocket, BindError> {
    let open = || -> io::Result<UdpSocket> {
        let s = socket(addr, Type::DGRAM, Protocol::UDP)?;
        s.bind(&addr.into())?;
        Ok(s.into())
    };
    open().map_err(|source| BindError {
        proto: "UDP",
        addr,
        source,
    })
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

/// A running gtmd: DNS on its listeners, probes updating the snapshot.
pub struct Running {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub health: HealthEngine,
    server: Server<DnsHandler>,
}

/// Starts serving `loaded` on `listeners` and probing its targets (inside a tokio runtime).
pub async fn start(loaded: Loaded, listeners: Listeners) -> Result<Running, StartError> {
    let model = Arc::new(loaded.model);
    let snapshot = Arc::new(ArcSwap::from_pointee(loaded.snapshot));
    let health = HealthEngine::start(
        model.clone(),
        HealthTable::initial(&model),
        snapshot.clone(),
    )
    .map_err(StartError::Health)?;
    let mut server = Server::new(DnsHandler::new(snapshot.clone()));
    for udp in listeners.udp {
        let addr = udp.local_addr()?;
        server.register_socket(tokio::net::UdpSocket::from_std(udp)?);
        info!(%addr, "serving DNS over UDP");
    }
    for tcp in listeners.tcp {
        let addr = tcp.local_addr()?;
        server.register_listener(
            tokio::net::TcpListener::from_std(tcp)?,
            model.server.tcp_idle_timeout,
            TCP_RESPONSE_QUEUE,
        );
        info!(%addr, "serving DNS over TCP");
    }
    Ok(Running {
        snapshot,
        health,
        server,
    })
}

impl Running {
    /// Stops probing and serving; in-flight queries finish.
    pub async fn stop(mut self) -> io::Result<()> {
        info!("shutting down");
        self.health.stop().await;
        self.server
            .shutdown_gracefully()
            .await
            .map_err(|e| io::Error::other(e.to_string()))
    }
}

/// Why gtmd could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("health probes: {0}")]
    Health(String),
}

/// Serves until `shutdown` completes, then stops cleanly.
pub async fn run(
    loaded: Loaded,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let running = start(loaded, listeners).await?;
    shutdown.await;
    running.stop().await?;
    Ok(())
}
