//! Serving TCP: our own accept loop around the full path, so connections can be limited.
//!
//! At most `tcp_max_connections` at once, and at most `tcp_max_connections_per_ip` from one
//! client address (an IPv6 client: its /64), so one hostile address cannot hold every slot
//! while others wait; a connection over either limit is closed at once and counted in
//! `gtmd_tcp_rejected_total{reason}`. Each connection is closed after `tcp_idle_timeout`
//! without a complete query — a slowloris client sending a byte a second never completes
//! one — or when a reply is not taken within `tcp_idle_timeout` (a client that sends
//! queries and never reads would otherwise hold its slot for good), and after
//! `tcp_max_queries` queries. Pipelined queries are answered in order.
//!
//! A failed accept (out of file descriptors: the connection stays queued, so retrying at
//! once fails again) is counted in `gtmd_accept_errors_total{listener="dns_tcp"}` and
//! followed by a backoff that doubles from 10 ms to 1 s, rather than a busy loop.
//!
//! Queries of the common shape are answered by the same fast path as UDP (with no size
//! limit short of the buffer): a resolver retrying a truncated answer over TCP opens a
//! connection for one query, and the kernel's connection work already dominates its cost.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use hickory_server::{
    net::{NetError, xfer::Protocol},
    proto::rr::Record,
    server::{ResponseHandler, ResponseInfo},
    zone_handler::MessageResponse,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter},
    net::{TcpListener, TcpStream, tcp::OwnedWriteHalf},
    sync::{Mutex, Semaphore},
};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{
    DnsHandler,
    fast::{self, Fast},
    udp::{encode, full_path},
};
use crate::metrics::{Tally, Transport};

/// TCP limits.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    pub max_connections: usize,
    /// Connections at once from one client address (IPv6: one /64).
    pub max_per_ip: usize,
    pub idle_timeout: Duration,
    /// 0: no limit.
    pub max_queries: usize,
}

/// Writes length-prefixed responses to one connection (buffered: flushed when no more
/// pipelined queries are waiting).
#[derive(Clone)]
struct TcpReply {
    writer: Arc<Mutex<BufWriter<OwnedWriteHalf>>>,
    /// How long the client may take to accept a write (`tcp_idle_timeout`).
    timeout: Duration,
    /// Set when a write failed or timed out: the connection is then closed.
    broken: Arc<AtomicBool>,
    /// `gtmd_tcp_timeouts_total{direction="write"}`.
    write_timeouts: prometheus::IntCounter,
    /// `gtmd_dns_dropped_total{reason="send_error"}`.
    send_errors: prometheus::IntCounter,
}

impl TcpReply {
    /// Buffers (and, when the buffer is full, sends) `bytes`; an error when the client does
    /// not take them within the timeout.
    async fn write(&self, bytes: &[u8]) -> io::Result<()> {
        self.timed(async { self.writer.lock().await.write_all(bytes).await })
            .await
    }

    /// Sends what is buffered, within the timeout.
    async fn flush(&self) -> io::Result<()> {
        self.timed(async { self.writer.lock().await.flush().await })
            .await
    }

    async fn timed(&self, op: impl Future<Output = io::Result<()>>) -> io::Result<()> {
        let result = match tokio::time::timeout(self.timeout, op).await {
            Ok(r) => r,
            Err(_) => {
                // Counted once per connection: it closes on the first.
                if !self.broken.swap(true, Ordering::Relaxed) {
                    self.write_timeouts.inc();
                }
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client did not take a reply within tcp_idle_timeout",
                ))
            }
        };
        if result.is_err() {
            self.broken.store(true, Ordering::Relaxed);
        }
        result
    }

    fn broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }
}

#[async_trait::async_trait]
impl ResponseHandler for TcpReply {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let sent = async {
            let (info, msg) = encode(response, u16::MAX)?;
            let mut framed = Vec::with_capacity(msg.len() + 2);
            framed.extend_from_slice(&(msg.len() as u16).to_be_bytes());
            framed.extend_from_slice(&msg);
            self.write(&framed).await?;
            Ok(info)
        }
        .await;
        if sent.is_err() {
            // Not counted as a response by the handler: a drop.
            self.send_errors.inc();
        }
        sent
    }
}

/// Open connections per client address, so that one address cannot take every slot.
///
/// Locked once per accept and once per close, never on the query path. Memory is bounded
/// by the connection cap: an address has an entry only while it has a connection open.
struct PerIp {
    max: usize,
    open: std::sync::Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The address a client is counted under: an IPv4 address (also when written as
    /// IPv4-mapped IPv6) or an IPv6 /64, the smallest block one subscriber usually holds.
    fn key(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
            },
        }
    }

    /// A slot for one more connection from `ip`, or None when it has `max` open.
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let key = Self::key(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(key).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            per_ip: self.clone(),
            key,
        })
    }
}

/// One connection counted under its client address until dropped.
struct IpSlot {
    per_ip: Arc<PerIp>,
    key: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.per_ip.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// One open connection: holds its slot under the cap and under its address's limit, and
/// counts in `gtmd_tcp_connections`; all are given back when it is dropped, however the
/// connection's task ends.
struct Open {
    handler: DnsHandler,
    _slot: tokio::sync::OwnedSemaphorePermit,
    _ip_slot: IpSlot,
}

impl Open {
    fn new(handler: DnsHandler, slot: tokio::sync::OwnedSemaphorePermit, ip_slot: IpSlot) -> Self {
        handler.metrics().tcp_connections.inc();
        Self {
            handler,
            _slot: slot,
            _ip_slot: ip_slot,
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.handler.metrics().tcp_connections.dec();
    }
}

/// At shutdown, after the listener is closed, how long the connections still open get to
/// finish the queries they carry before they are closed: in-flight answers go out, while
/// an idle connection cannot hold the stop for longer than this.
pub const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Accepts and serves connections on `listener` until `cancel`; then closes the listener
/// and gives the open connections [`CLOSE_GRACE`] to finish.
pub async fn serve(
    listener: TcpListener,
    handler: DnsHandler,
    limits: TcpLimits,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip = PerIp::new(limits.max_per_ip);
    let metrics = handler.metrics();
    let rejected_total = metrics.tcp_rejected.with_label_values(&["total"]);
    let rejected_per_ip = metrics.tcp_rejected.with_label_values(&["per_ip"]);
    let accept_errors = metrics.accept_errors.with_label_values(&["dns_tcp"]);
    let mut backoff = crate::accept::Backoff::new();
    // Closes the connections, once the listener is closed and they had their grace.
    let close = CancellationToken::new();
    loop {
        let Some((stream, peer)) =
            crate::accept::next(&listener, &mut backoff, &accept_errors, "DNS TCP", &cancel).await
        else {
            drop(listener);
            // Every slot back: no connection is open any more.
            let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
            let _ = tokio::time::timeout(CLOSE_GRACE, slots.acquire_many(all)).await;
            close.cancel();
            return;
        };
        // The per-address limit first: a hostile address over it is turned away without
        // taking a slot that others could use.
        let Some(ip_slot) = per_ip.take(peer.ip()) else {
            debug!(%peer, "TCP connection limit per address reached: closing the new connection");
            rejected_per_ip.inc();
            drop(stream);
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "TCP connection limit reached: closing the new connection");
            rejected_total.inc();
            drop(stream);
            continue;
        };
        let open = Open::new(handler.clone(), slot, ip_slot);
        let (handler, close) = (handler.clone(), close.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = close.cancelled() => {}
                _ = connection(stream, peer, handler, limits) => {}
            }
            drop(open);
        });
    }
}

async fn connection(stream: TcpStream, peer: SocketAddr, handler: DnsHandler, limits: TcpLimits) {
    let _ = stream.set_nodelay(true);
    let (reader, writer) = stream.into_split();
    let reply = TcpReply {
        writer: Arc::new(Mutex::new(BufWriter::with_capacity(16 * 1024, writer))),
        timeout: limits.idle_timeout,
        broken: Arc::new(AtomicBool::new(false)),
        write_timeouts: handler.metrics().tcp_timeouts.with_label_values(&["write"]),
        send_errors: handler
            .metrics()
            .dropped(crate::metrics::Dropped::SendError)
            .clone(),
    };
    queries(reader, peer, &handler, limits, &reply).await;
    if !reply.broken() {
        let _ = reply.flush().await;
    }
    // Close without a separate shutdown(2): dropping the write half would send one, a
    // system call per connection that the close right after makes redundant. (Every
    // reply is written by now, so the writer has no other owner.)
    if let Ok(writer) = Arc::try_unwrap(reply.writer) {
        writer.into_inner().into_inner().forget();
    }
}

/// Reads and answers queries until the client closes, stalls or reaches the query limit.
async fn queries(
    reader: tokio::net::tcp::OwnedReadHalf,
    peer: SocketAddr,
    handler: &DnsHandler,
    limits: TcpLimits,
    reply: &TcpReply,
) {
    // Buffered both ways: pipelined queries cost one read and one write per batch.
    let mut reader = BufReader::with_capacity(16 * 1024, reader);
    let max = if limits.max_queries == 0 {
        usize::MAX
    } else {
        limits.max_queries
    };
    let mut tally = Tally::for_transport(handler.metrics(), Transport::Tcp);
    // Length prefix + a fast-path reply (longer replies go to the full path).
    let mut out = vec![0u8; 2 + 4096];
    for _ in 0..max {
        if reply.broken() || (reader.buffer().is_empty() && reply.flush().await.is_err()) {
            debug!(%peer, "TCP client does not take its replies: closing");
            return;
        }
        // The whole message (length and body) must arrive within the idle timeout.
        let read = tokio::time::timeout(limits.idle_timeout, async {
            let len = reader.read_u16().await? as usize;
            let mut body = vec![0u8; len];
            reader.read_exact(&mut body).await?;
            Ok::<_, std::io::Error>(body)
        })
        .await;
        let body = match read {
            Ok(Ok(body)) if !body.is_empty() => body,
            Err(_) => {
                // Idle or slow: no whole query within the timeout.
                handler
                    .metrics()
                    .tcp_timeouts
                    .with_label_values(&["read"])
                    .inc();
                return;
            }
            _ => return, // closed, or an empty message (flushed by the caller)
        };
        let started = std::time::Instant::now();
        let fast = {
            // Not held across an await: a snapshot guard is meant to be short-lived.
            let snapshot = handler.snapshot();
            let fast = fast::answer_tcp(&snapshot, &mut tally, &body, peer.ip(), &mut out[2..]);
            if let Fast::Answered(_) = fast {
                tally.observe(started.elapsed().as_secs_f64());
                tally.flush(handler.metrics(), &snapshot);
            }
            fast
        };
        if let Fast::Answered(len) = fast {
            out[..2].copy_from_slice(&(len as u16).to_be_bytes());
            if reply.write(&out[..2 + len]).await.is_err() {
                return;
            }
            continue;
        }
        // A FORMERR (a message hickory cannot decode) is written here, in turn: sent from
        // a task of its own it could pass a later pipelined reply, wait in the buffer
        // until the next query, or be lost when the connection closes.
        let mut formerr = None;
        full_path(handler, body, peer, Protocol::Tcp, reply.clone(), |reply| {
            formerr = Some(reply);
            true
        })
        .await;
        if let Some(formerr) = formerr {
            let mut framed = (formerr.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&formerr);
            if reply.write(&framed).await.is_err() {
                return;
            }
        }
    }
    debug!(%peer, "TCP connection reached its query limit");
}
