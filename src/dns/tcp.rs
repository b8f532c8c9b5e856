//! Serving TCP: our own accept loop around the full path, so connections can be limited.
//!
//! At most `tcp_max_connections` at once (a connection over the limit is closed at once, so
//! a flood of idle connections cannot starve real clients for long: the idle ones time
//! out); each connection is closed after `tcp_idle_timeout` without a complete query — a
//! slowloris client sending a byte a second never completes one — and after
//! `tcp_max_queries` queries. Pipelined queries are answered in order.
//!
//! Queries of the common shape are answered by the same fast path as UDP (with no size
//! limit short of the buffer): a resolver retrying a truncated answer over TCP opens a
//! connection for one query, and the kernel's connection work already dominates its cost.

use std::{net::SocketAddr, sync::Arc, time::Duration};

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
    pub idle_timeout: Duration,
    /// 0: no limit.
    pub max_queries: usize,
}

/// Writes length-prefixed responses to one connection (buffered: flushed when no more
/// pipelined queries are waiting).
#[derive(Clone)]
struct TcpReply {
    writer: Arc<Mutex<BufWriter<OwnedWriteHalf>>>,
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
        let (info, msg) = encode(response, u16::MAX)?;
        let mut framed = Vec::with_capacity(msg.len() + 2);
        framed.extend_from_slice(&(msg.len() as u16).to_be_bytes());
        framed.extend_from_slice(&msg);
        self.writer.lock().await.write_all(&framed).await?;
        Ok(info)
    }
}

/// One open connection: holds its slot under the cap and counts in
/// `gtmd_tcp_connections`; both are given back when it is dropped, however the
/// connection's task ends.
struct Open {
    handler: DnsHandler,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Open {
    fn new(handler: DnsHandler, slot: tokio::sync::OwnedSemaphorePermit) -> Self {
        handler.metrics().tcp_connections.inc();
        Self {
            handler,
            _slot: slot,
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.handler.metrics().tcp_connections.dec();
    }
}

/// Accepts and serves connections on `listener` until `cancel`.
pub async fn serve(
    listener: TcpListener,
    handler: DnsHandler,
    limits: TcpLimits,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    debug!(error = %e, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "TCP connection limit reached: closing the new connection");
            handler.metrics().tcp_rejected.inc();
            drop(stream);
            continue;
        };
        let open = Open::new(handler.clone(), slot);
        let (handler, cancel) = (handler.clone(), cancel.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
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
    };
    queries(reader, peer, &handler, limits, &reply).await;
    let _ = reply.writer.lock().await.flush().await;
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
        if reader.buffer().is_empty() && reply.writer.lock().await.flush().await.is_err() {
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
            _ => {
                let _ = reply.writer.lock().await.flush().await;
                return; // idle, slow, closed, or an empty message
            }
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
            if reply
                .writer
                .lock()
                .await
                .write_all(&out[..2 + len])
                .await
                .is_err()
            {
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
            if reply.writer.lock().await.write_all(&framed).await.is_err() {
                return;
            }
        }
    }
    let _ = reply.writer.lock().await.flush().await;
    debug!(%peer, "TCP connection reached its query limit");
}
