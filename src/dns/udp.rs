//! Serving UDP: one blocking worker thread per socket (SO_REUSEPORT spreads packets over
//! them), the fast path inline, everything else handed to the full hickory path.
//!
//! The full path has a fixed work budget: one full-path thread per socket behind a queue of
//! `server.full_path_queue` queries. A query whose rate-limit budget is already spent is
//! dropped (or slipped) at the door, before it is queued; when the queue is full, new work
//! is dropped and counted (`gtmd_dns_dropped_total{reason="overload"}`) rather than
//! answered seconds late. So no flood of NXDOMAIN, ANY or odd-EDNS queries can grow memory
//! (a spawned task per datagram grew to 1.9 GB at 130k qps) or slow the fast path, which
//! keeps answering the app names on the worker thread itself.
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
    DnsHandler, door,
    fast::{self, Fast},
    rrl::{Rrl, Verdict, budget, plain_question, slip_reply},
};
use crate::{
    metrics::{Dropped, Metrics, Sent, Tally, Transport},
    snapshot::Snapshot,
};

/// The size limit of a UDP response: the OPT's payload, 512 without EDNS.
fn udp_max<'a>(
    response: &MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> u16 {
    response.edns().map_or(512, |e| e.max_payload().max(512))
}

/// Encodes a hickory response into its own buffer (compression offsets count from the
/// message start), at most `max` bytes.
pub(super) fn encode<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    max: u16,
) -> Result<(ResponseInfo, Vec<u8>), NetError> {
    let mut buf = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut buf);
    encoder.set_max_size(max);
    let info = response
        .destructive_emit(&mut encoder)
        .map_err(|e| NetError::from(format!("encoding a response: {e}")))?;
    Ok((info, buf))
}

/// Sends full-path responses on the socket the query came in on, through rate limiting.
#[derive(Clone)]
pub struct UdpReply {
    socket: Arc<UdpSocket>,
    dst: SocketAddr,
    metrics: Arc<Metrics>,
    limit: Option<Limit>,
}

/// What rate limiting needs to judge a full-path reply.
#[derive(Clone)]
struct Limit {
    rrl: Arc<Rrl>,
    query: Arc<[u8]>,
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
        let max = udp_max(&response);
        let (info, bytes) = match encode(response, max) {
            Ok(encoded) => encoded,
            Err(e) => {
                self.metrics.dropped(Dropped::SendError).inc();
                return Err(e);
            }
        };
        match send_limited(
            &self.socket,
            self.dst,
            &self.metrics,
            self.limit.as_ref(),
            &bytes,
        ) {
            // The handler counts it, by its rcode.
            Fate::Sent => Ok(info),
            // Counted by `send_limited`: the handler must not count it again.
            Fate::Slipped => Err(NetError::from(
                "sent as an empty TC=1 reply by rate limiting",
            )),
            Fate::Dropped => Err(NetError::from("not sent: rate limited or a socket error")),
        }
    }
}

/// What became of a full-path reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Sent as it is: the caller counts it by its rcode.
    Sent,
    /// Rate limiting sent an empty TC=1 reply instead (counted as a NOERROR response).
    Slipped,
    /// Not sent (counted as dropped: rate limiting, or the socket failed).
    Dropped,
}

/// Sends a full-path reply (an answer, or the FORMERR to an undecodable query) through
/// rate limiting: sent, slipped as an empty TC=1 reply, or dropped. Everything but a reply
/// sent as it is gets counted here.
fn send_limited(
    socket: &UdpSocket,
    dst: SocketAddr,
    metrics: &Metrics,
    limit: Option<&Limit>,
    bytes: &[u8],
) -> Fate {
    let verdict = match limit {
        Some(l) => judge(&l.rrl, dst, &l.query, bytes),
        None => Verdict::Send,
    };
    let send = |bytes: &[u8]| match socket.send_to(bytes, dst) {
        Ok(_) => true,
        Err(e) => {
            debug!(%dst, error = %e, "UDP send failed");
            metrics.dropped(Dropped::SendError).inc();
            false
        }
    };
    match (verdict, limit) {
        (Verdict::Send, _) | (_, None) => {
            if send(bytes) {
                Fate::Sent
            } else {
                Fate::Dropped
            }
        }
        (Verdict::Slip, Some(l)) => {
            let mut tc = [0u8; 512];
            match slip_reply(&l.query, &mut tc) {
                Some(len) if send(&tc[..len]) => {
                    metrics.rrl_slipped.inc();
                    metrics.response(hickory_server::proto::op::ResponseCode::NoError);
                    Fate::Slipped
                }
                Some(_) => Fate::Dropped,
                None => {
                    metrics.dropped(Dropped::Rrl).inc();
                    Fate::Dropped
                }
            }
        }
        (Verdict::Drop, Some(_)) => {
            metrics.dropped(Dropped::Rrl).inc();
            Fate::Dropped
        }
    }
}

/// What a worker does with one datagram after [`on_datagram`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Send the first `len` bytes of the slot back (a fast-path answer or an RRL slip).
    Reply(usize),
    /// Send nothing (not a query, or dropped by rate limiting).
    Nothing,
    /// Hand the datagram to [`full_path`].
    Full,
}

/// The inline part of serving one datagram from `src`: the fast path, then rate limiting
/// of its answer. `slot` receives the reply; `tally` the worker's counts.
pub fn on_datagram(
    snap: &Snapshot,
    tally: &mut Tally,
    rrl: Option<&Rrl>,
    packet: &[u8],
    src: SocketAddr,
    slot: &mut [u8],
) -> Step {
    match fast::answer(snap, tally, packet, src.ip(), slot) {
        Fast::Answered(len) => match rrl.map(|r| judge(r, src, packet, &slot[..len])) {
            None | Some(Verdict::Send) => {
                tally.commit(snap, Sent::Full);
                Step::Reply(len)
            }
            Some(Verdict::Slip) => {
                tally.commit(snap, Sent::Truncated);
                slip_reply(packet, slot).map_or(Step::Nothing, Step::Reply)
            }
            Some(Verdict::Drop) => {
                tally.commit(snap, Sent::Nothing);
                Step::Nothing
            }
        },
        Fast::Drop => {
            tally.shed(door::question_type(packet), Dropped::Malformed);
            Step::Nothing
        }
        Fast::Slow => Step::Full,
    }
}

/// The rate-limit verdict for `reply` to `query` from `src`.
pub fn judge(rrl: &Rrl, src: SocketAddr, query: &[u8], reply: &[u8]) -> Verdict {
    let mut buf = [0u8; 256];
    let (class, key) = budget(query, reply, &mut buf);
    rrl.check(src.ip(), class, key)
}

/// Keeps the reply instead of sending it (tests and benches compare the two paths);
/// `.1`: encode it as for TCP (never truncated) instead of UDP.
#[derive(Clone, Default)]
pub struct Capture(pub Arc<std::sync::Mutex<Option<Vec<u8>>>>, pub bool);

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
        let max = if self.1 { u16::MAX } else { udp_max(&response) };
        let (info, bytes) = encode(response, max)?;
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(bytes);
        Ok(info)
    }
}

/// The full path for one UDP datagram, with the checks hickory's server does before its
/// handler: no reply to runts or responses (QR set), FORMERR to what does not parse.
/// `formerr` sends that FORMERR and says whether it went out. Every message is counted
/// once as a request, and as a response only if one was sent.
pub async fn full_path<R: ResponseHandler>(
    handler: &DnsHandler,
    bytes: Vec<u8>,
    src: SocketAddr,
    protocol: Protocol,
    reply: R,
    formerr: impl FnOnce(Vec<u8>) -> bool,
) {
    let metrics = handler.metrics();
    let transport = match protocol {
        Protocol::Udp => Transport::Udp,
        _ => Transport::Tcp,
    };
    // What does not decode is counted by the type its question asks, if that much reads
    // (as the UDP worker counts what it drops before the full path).
    let qtype = door::question_type(&bytes);
    let count_request = || match qtype {
        Some(t) => metrics.request(transport, t.into()),
        None => metrics.request_invalid(transport),
    };
    if bytes.len() < 12 || bytes[2] & 0x80 != 0 {
        count_request();
        metrics.dropped(Dropped::Malformed).inc();
        return;
    }
    let header = [bytes[0], bytes[1], bytes[2], bytes[3]];
    let request = if bytes[4..6] == [0, 1] && plain_question(&bytes).is_none() {
        // hickory would decode a compressed question, then echo its raw bytes, pointer and
        // all, into a reply where the pointer means something else: a reply that does not
        // parse. (Nothing precedes the first question but the header, so a pointer there
        // is never valid anyway.)
        Err("the question is not one plain name".to_owned())
    } else {
        Request::from_bytes(bytes, src, protocol).map_err(|e| e.to_string())
    };
    match request {
        Ok(request) => {
            handler
                .handle_request::<R, TokioTime>(&request, reply)
                .await;
        }
        Err(e) => {
            debug!(%src, error = %e, "undecodable query: FORMERR");
            count_request();
            // ID, QR, the query's opcode and RD, RCODE 1, no sections.
            let flags = 0x80 | (header[2] & 0x79);
            if formerr(vec![
                header[0], header[1], flags, 0x01, 0, 0, 0, 0, 0, 0, 0, 0,
            ]) {
                metrics.response(hickory_server::proto::op::ResponseCode::FormErr);
            }
        }
    }
}

/// The UDP worker threads, each with its full-path thread.
pub struct Workers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// What a worker needs besides its socket.
#[derive(Clone)]
pub struct Serving {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<Metrics>,
    pub handler: DnsHandler,
    /// Drives the full path's (async) handler on the full-path threads.
    pub runtime: tokio::runtime::Handle,
    pub rrl: Option<Arc<Rrl>>,
    /// Queries waiting for the full path, per socket (`server.full_path_queue`).
    pub queue: usize,
}

/// A query handed to the full path.
struct Job {
    bytes: Vec<u8>,
    src: SocketAddr,
}

impl Workers {
    /// One worker thread and one full-path thread per socket.
    pub fn spawn(sockets: Vec<UdpSocket>, serving: Serving) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (i, socket) in sockets.into_iter().enumerate() {
            socket.set_nonblocking(false)?;
            // Wakes the thread now and then to see the stop flag.
            socket.set_read_timeout(Some(Duration::from_millis(200)))?;
            let socket = Arc::new(socket);
            // Bounded: a full queue sheds new work at the door. The worker owns the only
            // sender, so the full-path thread ends when the worker does.
            let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(serving.queue);
            let (full_socket, full_serving) = (socket.clone(), serving.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("gtmd-full-{i}"))
                    .spawn(move || full_path_worker(full_socket, full_serving, rx))?,
            );
            let (serving, stop) = (serving.clone(), stop.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("gtmd-udp-{i}"))
                    .spawn(move || serve(socket, serving, stop, tx))?,
            );
        }
        Ok(Self { stop, threads })
    }

    /// Stops the threads (they notice within 200 ms; queued full-path work is finished).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Answers queued queries by the full path, one at a time, until the worker is gone.
fn full_path_worker(socket: Arc<UdpSocket>, serving: Serving, rx: std::sync::mpsc::Receiver<Job>) {
    lower_priority();
    while let Ok(Job { bytes, src }) = rx.recv() {
        let limit = serving.rrl.as_ref().map(|r| Limit {
            rrl: r.clone(),
            query: Arc::from(&bytes[..]),
        });
        let reply = UdpReply {
            socket: socket.clone(),
            dst: src,
            metrics: serving.metrics.clone(),
            limit: limit.clone(),
        };
        // The handler never waits on anything but the send, which is a plain socket
        // write here: driving it on this thread keeps it off the runtime's workers, where
        // it would compete with probes and the admin endpoint.
        serving.runtime.block_on(full_path(
            &serving.handler,
            bytes,
            src,
            Protocol::Udp,
            reply,
            |formerr| {
                send_limited(&socket, src, &serving.metrics, limit.as_ref(), &formerr) == Fate::Sent
            },
        ));
    }
}

/// Lowers the calling thread's scheduling priority (nice 10), so that when the CPU is
/// short the kernel runs the fast path, the probes and the admin endpoint first and a flood
/// of full-path queries only slows itself down.
fn lower_priority() {
    // SAFETY: plain system calls on the calling thread's own id.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
    if rc != 0 {
        debug!(error = %io::Error::last_os_error(), "could not lower the full-path thread's priority");
    }
}

/// Packets per `recvmmsg`/`sendmmsg` call: under load one system call moves a batch,
/// which is most of what separates a user-space DNS server from the kernel's limit.
const BATCH: usize = 32;
const BUF: usize = 4096;

fn serve(
    socket: Arc<UdpSocket>,
    serving: Serving,
    stop: Arc<AtomicBool>,
    full: std::sync::mpsc::SyncSender<Job>,
) {
    let Serving {
        snapshot,
        metrics,
        rrl,
        ..
    } = serving;
    let mut batch = mmsg::Batch::new(BATCH, BUF);
    let mut out = vec![0u8; BATCH * BUF];
    let mut replies: Vec<(usize, usize)> = Vec::with_capacity(BATCH);
    let mut tally = Tally::new(&metrics);
    while !stop.load(Ordering::Relaxed) {
        let n = match batch.recv(&socket) {
            Ok(n) => n,
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
        let snap = snapshot.load();
        replies.clear();
        fast::prefetch(&snap, (0..n).map(|i| batch.packet(i).0));
        for i in 0..n {
            let (packet, src) = batch.packet(i);
            let Some(src) = src.filter(|s| s.port() != 0) else {
                // Cannot be answered.
                tally.shed(door::question_type(packet), Dropped::Malformed);
                continue;
            };
            let started = Instant::now();
            let slot = &mut out[i * BUF..(i + 1) * BUF];
            match on_datagram(&snap, &mut tally, rrl.as_deref(), packet, src, slot) {
                Step::Reply(len) => {
                    tally.observe(started.elapsed().as_secs_f64());
                    replies.push((i, len));
                }
                Step::Nothing => {}
                Step::Full => {
                    if let Some(len) =
                        at_the_door(&snap, &mut tally, rrl.as_deref(), &full, packet, src, slot)
                    {
                        replies.push((i, len));
                    }
                }
            }
        }
        batch.send(&socket, &out, BUF, &replies);
        // Counted against the snapshot the batch was answered from.
        tally.flush(&metrics, &snap);
    }
}

/// Hands a query that missed the fast path to the full path, unless its rate-limit budget
/// is already spent (dropped, or slipped: the TC=1 reply is written to `slot` and its
/// length returned) or the queue is full (dropped).
fn at_the_door(
    snap: &Snapshot,
    tally: &mut Tally,
    rrl: Option<&Rrl>,
    full: &std::sync::mpsc::SyncSender<Job>,
    packet: &[u8],
    src: SocketAddr,
    slot: &mut [u8],
) -> Option<usize> {
    let qtype = door::question_type(packet);
    if let Some(rrl) = rrl {
        let mut buf = [0u8; 256];
        let (class, key) = door::predict(snap, packet, &mut buf);
        match rrl.peek(src.ip(), class, key) {
            Verdict::Send => {}
            Verdict::Slip => {
                let len = slip_reply(packet, slot);
                match len {
                    Some(_) => tally.slipped(qtype),
                    None => tally.shed(qtype, Dropped::Rrl),
                }
                return len;
            }
            Verdict::Drop => {
                tally.shed(qtype, Dropped::Rrl);
                return None;
            }
        }
    }
    let job = Job {
        bytes: packet.to_vec(),
        src,
    };
    if full.try_send(job).is_err() {
        tally.shed(qtype, Dropped::Overload);
    }
    None
}

/// `recvmmsg`/`sendmmsg` over a std socket (Linux).
mod mmsg {
    use std::{
        io,
        mem::{size_of, zeroed},
        net::{SocketAddr, UdpSocket},
        os::fd::AsRawFd,
    };

    /// Reads a socket address the kernel wrote (IPv4 or IPv6; anything else is None).
    fn to_socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
        match i32::from(storage.ss_family) {
            libc::AF_INET => {
                // SAFETY: the family says this storage holds a sockaddr_in.
                let a: &libc::sockaddr_in =
                    unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
                Some(SocketAddr::from((
                    u32::from_be(a.sin_addr.s_addr).to_be_bytes(),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says this storage holds a sockaddr_in6.
                let a: &libc::sockaddr_in6 =
                    unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
                Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                    a.sin6_addr.s6_addr.into(),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    pub struct Batch {
        bufs: Vec<u8>,
        size: usize,
        addrs: Vec<libc::sockaddr_storage>,
        iovecs: Vec<libc::iovec>,
        hdrs: Vec<libc::mmsghdr>,
        lens: Vec<usize>,
    }

    // The raw pointers inside only ever point into the batch's own vectors.
    unsafe impl Send for Batch {}

    impl Batch {
        pub fn new(n: usize, size: usize) -> Self {
            Self {
                bufs: vec![0u8; n * size],
                size,
                // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs for
                // which all-zero bytes are a valid value.
                addrs: (0..n).map(|_| unsafe { zeroed() }).collect(),
                iovecs: (0..n).map(|_| unsafe { zeroed() }).collect(),
                hdrs: (0..n).map(|_| unsafe { zeroed() }).collect(),
                lens: vec![0; n],
            }
        }

        /// Receives up to a batch: blocks for the first packet (or the socket's read
        /// timeout), then takes whatever else is already queued.
        pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
            let n = self.hdrs.len();
            for i in 0..n {
                self.iovecs[i] = libc::iovec {
                    iov_base: self.bufs[i * self.size..].as_mut_ptr().cast(),
                    iov_len: self.size,
                };
                let h = &mut self.hdrs[i];
                h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
                h.msg_hdr.msg_iov = &mut self.iovecs[i];
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_control = std::ptr::null_mut();
                h.msg_hdr.msg_controllen = 0;
                h.msg_hdr.msg_flags = 0;
                h.msg_len = 0;
            }
            // SAFETY: every header points into buffers owned by `self`, sized as declared.
            let got = unsafe {
                libc::recvmmsg(
                    socket.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    n as u32,
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            if got < 0 {
                return Err(io::Error::last_os_error());
            }
            let got = got as usize;
            for i in 0..got {
                self.lens[i] = self.hdrs[i].msg_len as usize;
            }
            Ok(got)
        }

        /// Packet `i` of the last receive and its sender.
        pub fn packet(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
            let data = &self.bufs[i * self.size..i * self.size + self.lens[i]];
            (data, to_socket_addr(&self.addrs[i]))
        }

        /// Sends `replies` (packet index, length in `out`) to their senders in as few
        /// calls as the kernel allows.
        pub fn send(
            &mut self,
            socket: &UdpSocket,
            out: &[u8],
            size: usize,
            replies: &[(usize, usize)],
        ) {
            if replies.is_empty() {
                return;
            }
            let mut iovecs: Vec<libc::iovec> = Vec::with_capacity(replies.len());
            let mut hdrs: Vec<libc::mmsghdr> = Vec::with_capacity(replies.len());
            for &(i, len) in replies {
                iovecs.push(libc::iovec {
                    iov_base: out[i * size..].as_ptr() as *mut libc::c_void,
                    iov_len: len,
                });
            }
            for (k, &(i, _)) in replies.iter().enumerate() {
                // SAFETY: all-zero is a valid mmsghdr.
                let mut h: libc::mmsghdr = unsafe { zeroed() };
                h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_namelen = self.hdrs[i].msg_hdr.msg_namelen;
                h.msg_hdr.msg_iov = &mut iovecs[k];
                h.msg_hdr.msg_iovlen = 1;
                hdrs.push(h);
            }
            let mut sent = 0;
            while sent < hdrs.len() {
                // SAFETY: headers point at `out` and `self.addrs`, alive for the call.
                let r = unsafe {
                    libc::sendmmsg(
                        socket.as_raw_fd(),
                        hdrs[sent..].as_mut_ptr(),
                        (hdrs.len() - sent) as u32,
                        0,
                    )
                };
                if r <= 0 {
                    // A reply that cannot be sent (e.g. ICMP error pending): skip it.
                    sent += 1;
                } else {
                    sent += r as usize;
                }
            }
        }
    }
}
