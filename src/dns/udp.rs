//! Serving UDP: one blocking worker thread per socket (SO_REUSEPORT spreads packets over
//! them), the fast path inline, everything else handed to the full hickory path on the
//! async runtime. TCP stays with hickory's `Server`.
//!
//! Measured on this kind of machine (see `../shared/ARCHITECTURE.md`): hickory's UDP loop
//! peaks near 300k queries per CPU because it copies, spawns a task, decodes and encodes
//! per packet; a blocking loop with a hand parser approaches the kernel's ~450k.

use std::{
    io,
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use hickory_server::{
    net::{NetError, runtime::TokioTime, xfer::Protocol},
    proto::{rr::Record, serialize::binary::BinEncoder},
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::MessageResponse,
};
use tracing::debug;

use super::{
    DnsHandler,
    fast::{self, Fast},
};
use crate::{metrics::Metrics, snapshot::Snapshot};

/// Encodes a hickory response for UDP: limited to the OPT's payload, 512 without EDNS.
fn encode<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> Result<(ResponseInfo, Vec<u8>), NetError> {
    let max = response.edns().map_or(512, |e| e.max_payload().max(512));
    let mut buf = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut buf);
    encoder.set_max_size(max);
    let info = response
        .destructive_emit(&mut encoder)
        .map_err(|e| NetError::from(format!("encoding a response: {e}")))?;
    Ok((info, buf))
}

/// Sends full-path responses on the socket the query came in on.
#[derive(Clone)]
pub struct UdpReply {
    socket: Arc<UdpSocket>,
    dst: SocketAddr,
}

#[async_trait::async_trait]
impl ResponseHandler for UdpReply {
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
        let (info, bytes) = encode(response)?;
        self.socket.send_to(&bytes, self.dst)?;
        Ok(info)
    }
}

/// Keeps the reply instead of sending it (tests and benches compare the two paths).
#[derive(Clone, Default)]
pub struct Capture(pub Arc<std::sync::Mutex<Option<Vec<u8>>>>);

#[async_trait::async_trait]
impl ResponseHandler for Capture {
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
        let (info, bytes) = encode(response)?;
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(bytes);
        Ok(info)
    }
}

/// The full path for one UDP datagram, with the checks hickory's server does before its
/// handler: no reply to runts or responses (QR set), FORMERR to what does not parse.
pub async fn full_path<R: ResponseHandler>(
    handler: &DnsHandler,
    bytes: Vec<u8>,
    src: SocketAddr,
    reply: R,
    formerr: impl FnOnce(Vec<u8>),
) {
    if bytes.len() < 12 || bytes[2] & 0x80 != 0 {
        return;
    }
    let header = [bytes[0], bytes[1], bytes[2], bytes[3]];
    match Request::from_bytes(bytes, src, Protocol::Udp) {
        Ok(request) => {
            handler
                .handle_request::<R, TokioTime>(&request, reply)
                .await;
        }
        Err(e) => {
            debug!(%src, error = %e, "undecodable query: FORMERR");
            // ID, QR, the query's opcode and RD, RCODE 1, no sections.
            let flags = 0x80 | (header[2] & 0x79);
            formerr(vec![
                header[0], header[1], flags, 0x01, 0, 0, 0, 0, 0, 0, 0, 0,
            ]);
        }
    }
}

/// The UDP worker threads.
pub struct Workers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// One thread per socket. `runtime` runs the full path.
    pub fn spawn(
        sockets: Vec<UdpSocket>,
        snapshot: Arc<ArcSwap<Snapshot>>,
        metrics: Arc<Metrics>,
        handler: DnsHandler,
        runtime: tokio::runtime::Handle,
    ) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (i, socket) in sockets.into_iter().enumerate() {
            socket.set_nonblocking(false)?;
            // Wakes the thread now and then to see the stop flag.
            socket.set_read_timeout(Some(Duration::from_millis(200)))?;
            let socket = Arc::new(socket);
            let (snapshot, metrics, handler, runtime, stop) = (
                snapshot.clone(),
                metrics.clone(),
                handler.clone(),
                runtime.clone(),
                stop.clone(),
            );
            threads.push(
                std::thread::Builder::new()
                    .name(format!("gtmd-udp-{i}"))
                    .spawn(move || serve(socket, snapshot, metrics, handler, runtime, stop))?,
            );
        }
        Ok(Self { stop, threads })
    }

    /// Stops the threads (they notice within 200 ms).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn serve(
    socket: Arc<UdpSocket>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    handler: DnsHandler,
    runtime: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 4096];
    let mut out = vec![0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let (n, src) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                // e.g. ICMP port unreachable from an earlier reply: not fatal.
                debug!(error = %e, "UDP receive error");
                continue;
            }
        };
        if src.port() == 0 {
            continue; // cannot be answered
        }
        let started = Instant::now();
        let snap = snapshot.load();
        match fast::answer(&snap, &metrics, &buf[..n], src.ip(), &mut out) {
            Fast::Answered(len) => {
                let _ = socket.send_to(&out[..len], src);
                metrics
                    .request_duration
                    .observe(started.elapsed().as_secs_f64());
            }
            Fast::Drop => {}
            Fast::Slow => {
                let bytes = buf[..n].to_vec();
                let handler = handler.clone();
                let socket = socket.clone();
                runtime.spawn(async move {
                    let reply = UdpReply {
                        socket: socket.clone(),
                        dst: src,
                    };
                    full_path(&handler, bytes, src, reply, |formerr| {
                        let _ = socket.send_to(&formerr, src);
                    })
                    .await;
                });
            }
        }
    }
}
