//! Serving TCP: our own accept loop around the full path, so connections can be limited.
//!
//! At most `tcp_max_connections` at once (a connection over the limit is closed at once, so
//! a flood of idle connections cannot starve real clients for long: the idle ones time
//! out); each connection is closed after `tcp_idle_timeout` without a complete query — a
//! slowloris client sending a byte a second never completes one — and after
//! `tcp_max_queries` queries. Pipelined queries are answered in order.

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
    udp::{encode, full_path},
};

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
    // Buffered both ways: pipelined queries cost one read and one write per batch.
    let mut reader = BufReader::with_capacity(16 * 1024, reader);
    let reply = TcpReply {
        writer: Arc::new(Mutex::new(BufWriter::with_capacity(16 * 1024, writer))),
    };
    let max = if limits.max_queries == 0 {
        usize::MAX
    } else {
        limits.max_queries
    };
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
        let writer = reply.writer.clone();
        full_path(
            &handler,
            body,
            peer,
            Protocol::Tcp,
            reply.clone(),
            |formerr| {
                tokio::spawn(async move {
                    let mut framed = (formerr.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&formerr);
                    let _ = writer.lock().await.write_all(&framed).await;
                });
            },
        )
        .await;
    }
    let _ = reply.writer.lock().await.flush().await;
    debug!(%peer, "TCP connection reached its query limit");
}
