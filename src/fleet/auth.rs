//! Authenticated gossip datagrams: each of chitchat's messages behind a small header and
//! followed by an HMAC-SHA256 tag under the fleet's shared key (`fleet.secret_file`).
//!
//! chitchat checks nothing of who sends what: any datagram that decodes is applied, and a
//! delta may rewrite any node's keys. So every datagram carries a tag over its header and
//! payload, and one without a valid tag (a stranger, another fleet's key, a truncated or
//! altered packet) is dropped before anything of it is decoded, and counted. A datagram
//! with a valid tag that does not decode (a peer of another version) is dropped and
//! counted too. Nothing a datagram holds stops the gossip: only a failure of the socket
//! itself ends `recv`.
//!
//! **Replays.** The tagged header holds the address the datagram was sent to and when it
//! was sent. A datagram sent to another member, or older (or newer) than [`MAX_SKEW`]
//! by the receiver's clock, is dropped: a recorded datagram cannot be reflected to another
//! member, and can be replayed to its own receiver only within that window. Members' clocks
//! must agree within it (NTP). Within the window a replay repeats what chitchat already
//! applied (its versions only grow), or draws one more reply to the sender's address.
//!
//! **Size.** chitchat fills a message up to the largest UDP payload over IPv4 (65,507
//! bytes, its constant) less a byte, whatever gtmd adds: a delta that catches a peer up
//! with a large state (shared observations during an outage) does not fit one datagram
//! with the header and tag. Such a message is sent in parts (at most [`MAX_PARTS`], each
//! tagged and checked like a whole datagram) and put together by the receiver, which keeps
//! at most [`MAX_PARTIAL`] unfinished messages for at most [`PART_WAIT`]; parts dropped
//! before their message completed are counted (`incomplete`): gossip repairs the loss.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use chitchat::{
    ChitchatMessage, Deserializable, Serializable,
    transport::{Socket, Transport},
};
use prometheus::{IntCounter, IntCounterVec};
use ring::hmac;
use tracing::{debug, warn};

/// The tag's length: a whole HMAC-SHA256.
pub const TAG_LEN: usize = 32;

/// The header before chitchat's message: a format byte, the destination (16 bytes of
/// address, IPv4 mapped, and 2 of port) and the send time (milliseconds since the epoch).
pub const HEADER_LEN: usize = 1 + 16 + 2 + 8;

const FORMAT: u8 = 1;
/// A part of a message too large for one datagram.
const FORMAT_PART: u8 = 2;

/// A part's header: the datagram header, then the message's id (4 bytes), the part's
/// index and the number of parts.
pub const PART_HEADER_LEN: usize = HEADER_LEN + 4 + 1 + 1;

/// Parts per message at most (chitchat's messages need two at most).
pub const MAX_PARTS: usize = 4;

/// Unfinished messages kept at once, and how long each waits for its other parts.
pub const MAX_PARTIAL: usize = 8;
pub const PART_WAIT: Duration = Duration::from_secs(5);

/// The message bytes one part carries at most.
const PART_PAYLOAD: usize = MAX_DATAGRAM - PART_HEADER_LEN - TAG_LEN;

/// The largest UDP payload over IPv4: nothing larger is sent.
pub const MAX_DATAGRAM: usize = 65_507;

/// How far a datagram's send time may be from the receiver's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(15);

/// What the tags' key is derived with, so that a key shared with something else (or a
/// later format) never validates these datagrams.
const CONTEXT: &[u8] = b"gtmd-gossip-v1";

/// The shortest shared key accepted (bytes of `fleet.secret_file`, surrounding whitespace
/// left out): 128 bits.
pub const MIN_SECRET: usize = 16;

/// Why a datagram was dropped: the values of `gtmd_fleet_packets_rejected_total{reason}`.
pub const REJECT_REASONS: [&str; 7] = [
    "short",
    "bad_tag",
    "misdirected",
    "stale",
    "malformed",
    "too_large",
    "incomplete",
];

/// The transport's counters.
#[derive(Clone)]
pub struct GossipMetrics {
    /// `gtmd_fleet_gossip_bytes_total{direction="sent"}`.
    pub sent: IntCounter,
    /// `{direction="received"}`: datagrams accepted (tag valid, decoded).
    pub received: IntCounter,
    /// `gtmd_fleet_packets_rejected_total{reason}` ([`REJECT_REASONS`]).
    pub rejected: IntCounterVec,
    /// `gtmd_fleet_work_seconds_total{part="transport"}`: sealing, checking and decoding.
    pub work: prometheus::Counter,
}

impl GossipMetrics {
    /// Handles registered nowhere (tests and the fuzz target).
    pub fn unregistered() -> Self {
        Self {
            sent: IntCounter::new("sent", "sent").unwrap(),
            received: IntCounter::new("received", "received").unwrap(),
            rejected: IntCounterVec::new(
                prometheus::Opts::new("rejected", "rejected"),
                &["reason"],
            )
            .unwrap(),
            work: prometheus::Counter::new("work", "work").unwrap(),
        }
    }

    fn reject(&self, reason: &'static str) {
        self.rejected.with_label_values(&[reason]).inc();
    }
}

/// The fleet's shared key, from the bytes of `fleet.secret_file`.
#[derive(Clone)]
pub struct FleetKey {
    /// Derived from the secret with [`CONTEXT`].
    tags: hmac::Key,
    fingerprint: [u8; 32],
}

impl FleetKey {
    /// The key of `secret` (surrounding whitespace left out, so that a file written with a
    /// final newline is the same key); an error if fewer than [`MIN_SECRET`] bytes remain.
    pub fn new(secret: &[u8]) -> Result<Self, String> {
        let secret = secret.trim_ascii();
        if secret.len() < MIN_SECRET {
            return Err(format!(
                "the shared key has {} bytes; at least {MIN_SECRET} are needed (e.g. 32 random \
                 bytes, base64-encoded)",
                secret.len()
            ));
        }
        let derived = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), CONTEXT);
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, secret).as_ref());
        Ok(Self {
            tags: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
            fingerprint,
        })
    }

    /// A digest of the key (to tell whether a reload changed it; never shown).
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    fn tag(&self, data: &[u8]) -> hmac::Tag {
        hmac::sign(&self.tags, data)
    }

    /// Constant time: ring compares the whole tag.
    fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        hmac::verify(&self.tags, data, tag).is_ok()
    }
}

/// The destination as the header holds it.
fn address_bytes(addr: SocketAddr) -> [u8; 18] {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let mut out = [0u8; 18];
    out[..16].copy_from_slice(&ip.octets());
    out[16..].copy_from_slice(&addr.port().to_be_bytes());
    out
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// chitchat's UDP transport with every datagram tagged and checked.
pub struct AuthTransport {
    pub key: FleetKey,
    pub metrics: GossipMetrics,
}

#[async_trait]
impl Transport for AuthTransport {
    async fn open(&self, listen: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        Ok(Box::new(
            AuthSocket::bind(listen, self.key.clone(), self.metrics.clone()).await?,
        ))
    }
}

/// One gossip socket.
pub struct AuthSocket {
    socket: tokio::net::UdpSocket,
    /// The address peers send to (the header of what this socket accepts).
    me: [u8; 18],
    key: FleetKey,
    metrics: GossipMetrics,
    send_buf: Vec<u8>,
    recv_buf: Box<[u8]>,
    /// Messages of which some parts arrived.
    partial: Vec<Partial>,
}

/// A message of which some parts arrived.
struct Partial {
    from: SocketAddr,
    id: u32,
    parts: Vec<Option<Vec<u8>>>,
    first: std::time::Instant,
}

impl AuthSocket {
    pub async fn bind(
        listen: SocketAddr,
        key: FleetKey,
        metrics: GossipMetrics,
    ) -> anyhow::Result<Self> {
        let socket = tokio::net::UdpSocket::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("fleet.listen: binding {listen}/udp for gossip: {e}"))?;
        let me = address_bytes(socket.local_addr()?);
        Ok(Self {
            socket,
            me,
            key,
            metrics,
            send_buf: Vec::with_capacity(MAX_DATAGRAM),
            // One byte more than the largest datagram: a longer one is seen as such.
            recv_buf: vec![0u8; MAX_DATAGRAM + 1].into_boxed_slice(),
            partial: Vec::new(),
        })
    }

    /// Checks and decodes `datagram` as if it had arrived from `from` (what `recv` does
    /// with each datagram; for the fuzz target and tests).
    pub fn accept(&mut self, datagram: &[u8], from: SocketAddr) -> Option<ChitchatMessage> {
        let len = datagram.len().min(self.recv_buf.len());
        self.recv_buf[..len].copy_from_slice(&datagram[..len]);
        self.check(Ok((datagram.len(), from)))
            .ok()
            .flatten()
            .map(|(_, m)| m)
    }

    /// Messages of which some parts are held (at most [`MAX_PARTIAL`]).
    pub fn partial_messages(&self) -> usize {
        self.partial.len()
    }

    /// A datagram to this socket as a member would send it now: `format` (1 whole, 2 a
    /// part), then `body`, tagged with `key` (for the fuzz target and tests: whatever a
    /// key holder sends is checked past the tag).
    pub fn tagged(&self, key: &FleetKey, format: u8, body: &[u8]) -> Vec<u8> {
        let mut d = vec![format];
        d.extend_from_slice(&self.me);
        d.extend_from_slice(&now_ms().to_be_bytes());
        d.extend_from_slice(body);
        let tag = key.tag(&d);
        d.extend_from_slice(tag.as_ref());
        d
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The message of the next datagram, if it is tagged with the fleet key, sent to this
    /// socket lately and decodes; None if it was dropped (counted).
    async fn receive_one(&mut self) -> anyhow::Result<Option<(SocketAddr, ChitchatMessage)>> {
        let received = self.socket.recv_from(&mut self.recv_buf).await;
        let started = super::share::cpu_time();
        let out = self.check(received);
        let spent = super::share::cpu_time().saturating_sub(started);
        self.metrics.work.inc_by(spent.as_secs_f64());
        out
    }

    /// A datagram received (or the error): checked and decoded, see [`Self::receive_one`].
    fn check(
        &mut self,
        received: io::Result<(usize, SocketAddr)>,
    ) -> anyhow::Result<Option<(SocketAddr, ChitchatMessage)>> {
        let (len, from) = match received {
            Ok(r) => r,
            // ICMP errors of earlier sends surface here on some systems, and a burst can
            // leave the kernel short of memory for a moment: not the socket's end.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::OutOfMemory
                        | io::ErrorKind::Interrupted
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(anyhow::anyhow!("gossip socket: {e}")),
        };
        if len <= HEADER_LEN + TAG_LEN || len > MAX_DATAGRAM {
            self.metrics.reject("short");
            debug!(%from, len, "gossip datagram dropped: no room for a header and a tag");
            return Ok(None);
        }
        let (data, tag) = self.recv_buf[..len].split_at(len - TAG_LEN);
        if !self.key.verify(data, tag) {
            self.metrics.reject("bad_tag");
            debug!(%from, len, "gossip datagram dropped: its tag is not the fleet key's");
            return Ok(None);
        }
        let (header, payload) = data.split_at(HEADER_LEN);
        if header[0] != FORMAT && header[0] != FORMAT_PART {
            self.metrics.reject("malformed");
            return Ok(None);
        }
        if header[1..19] != self.me {
            self.metrics.reject("misdirected");
            debug!(%from, "gossip datagram dropped: sent to another member (a reflection?)");
            return Ok(None);
        }
        let sent = u64::from_be_bytes(header[19..27].try_into().expect("8 bytes"));
        if now_ms().abs_diff(sent) > MAX_SKEW.as_millis() as u64 {
            self.metrics.reject("stale");
            debug!(%from, "gossip datagram dropped: sent too long ago or in the future (a replay, or clocks apart)");
            return Ok(None);
        }
        let whole;
        let message_bytes: &[u8] = if header[0] == FORMAT_PART {
            match take_part(&mut self.partial, &self.metrics, from, payload) {
                Some(bytes) => {
                    whole = bytes;
                    &whole
                }
                None => return Ok(None),
            }
        } else {
            payload
        };
        let mut reader = message_bytes;
        match ChitchatMessage::deserialize(&mut reader) {
            Ok(message) => {
                self.metrics.received.inc_by(len as u64);
                Ok(Some((from, message)))
            }
            Err(e) => {
                self.metrics.reject("malformed");
                warn!(%from, len, error = %e, "gossip datagram from a fleet member does not decode (another gtmd version?)");
                Ok(None)
            }
        }
    }

    /// The datagrams of a message too large for one: each part behind its header, tagged.
    fn seal_parts(&mut self, to: SocketAddr) -> Option<Vec<Vec<u8>>> {
        let message = &self.send_buf[HEADER_LEN..];
        let count = message.len().div_ceil(PART_PAYLOAD);
        if count > MAX_PARTS {
            return None;
        }
        let id: u32 = rand::random();
        let sent = now_ms();
        Some(
            message
                .chunks(PART_PAYLOAD)
                .enumerate()
                .map(|(i, chunk)| {
                    let mut d = Vec::with_capacity(PART_HEADER_LEN + chunk.len() + TAG_LEN);
                    d.push(FORMAT_PART);
                    d.extend_from_slice(&address_bytes(to));
                    d.extend_from_slice(&sent.to_be_bytes());
                    d.extend_from_slice(&id.to_be_bytes());
                    d.push(i as u8);
                    d.push(count as u8);
                    d.extend_from_slice(chunk);
                    let tag = self.key.tag(&d);
                    d.extend_from_slice(tag.as_ref());
                    d
                })
                .collect(),
        )
    }

    /// The datagram for `message` to `to`: header, message, tag.
    fn seal(&mut self, to: SocketAddr, message: &ChitchatMessage) -> bool {
        self.send_buf.clear();
        self.send_buf.push(FORMAT);
        self.send_buf.extend_from_slice(&address_bytes(to));
        self.send_buf.extend_from_slice(&now_ms().to_be_bytes());
        message.serialize(&mut self.send_buf);
        if self.send_buf.len() + TAG_LEN > MAX_DATAGRAM {
            return false;
        }
        let tag = self.key.tag(&self.send_buf);
        self.send_buf.extend_from_slice(tag.as_ref());
        true
    }
}

/// Keeps a part (`body`: id, index, count, bytes); the whole message once every part
/// arrived.
fn take_part(
    partial: &mut Vec<Partial>,
    metrics: &GossipMetrics,
    from: SocketAddr,
    body: &[u8],
) -> Option<Vec<u8>> {
    let now = std::time::Instant::now();
    let before = partial.len();
    partial.retain(|p| now.duration_since(p.first) <= PART_WAIT);
    let expired = before - partial.len();
    if expired > 0 {
        metrics
            .rejected
            .with_label_values(&["incomplete"])
            .inc_by(expired as u64);
    }
    if body.len() < 7 {
        metrics.reject("malformed");
        return None;
    }
    let id = u32::from_be_bytes(body[..4].try_into().expect("4 bytes"));
    let (index, count) = (body[4] as usize, body[5] as usize);
    if !(2..=MAX_PARTS).contains(&count) || index >= count {
        metrics.reject("malformed");
        return None;
    }
    let at = match partial.iter().position(|p| p.from == from && p.id == id) {
        Some(at) if partial[at].parts.len() == count => at,
        Some(_) => {
            metrics.reject("malformed");
            return None;
        }
        None => {
            if partial.len() == MAX_PARTIAL {
                // The oldest unfinished message gives way.
                partial.remove(0);
                metrics.reject("incomplete");
            }
            partial.push(Partial {
                from,
                id,
                parts: vec![None; count],
                first: now,
            });
            partial.len() - 1
        }
    };
    let p = &mut partial[at];
    p.parts[index] = Some(body[6..].to_vec());
    if p.parts.iter().any(Option::is_none) {
        return None;
    }
    let p = partial.remove(at);
    Some(p.parts.into_iter().flatten().flatten().collect())
}

#[async_trait]
impl Socket for AuthSocket {
    async fn send(&mut self, to: SocketAddr, message: ChitchatMessage) -> anyhow::Result<()> {
        let started = super::share::cpu_time();
        let whole = self.seal(to, &message);
        let parts = if whole { None } else { self.seal_parts(to) };
        let spent = super::share::cpu_time().saturating_sub(started);
        self.metrics.work.inc_by(spent.as_secs_f64());
        if !whole {
            let Some(parts) = parts else {
                self.metrics.reject("too_large");
                warn!(%to, len = self.send_buf.len(), "gossip message too large to send even in parts");
                return Ok(());
            };
            for part in parts {
                match self.socket.send_to(&part, to).await {
                    Ok(n) => self.metrics.sent.inc_by(n as u64),
                    Err(e) => debug!(%to, error = %e, "gossip send failed"),
                }
            }
            return Ok(());
        }
        // A send that fails (no route, buffer full) is gossip lost, which the protocol
        // repairs: never a reason to stop.
        match self.socket.send_to(&self.send_buf, to).await {
            Ok(n) => self.metrics.sent.inc_by(n as u64),
            Err(e) => debug!(%to, error = %e, "gossip send failed"),
        }
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        loop {
            if let Some(received) = self.receive_one().await? {
                return Ok(received);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef\n";

    async fn socket(secret: &[u8]) -> (AuthSocket, GossipMetrics) {
        let metrics = GossipMetrics::unregistered();
        let s = AuthSocket::bind(
            "127.0.0.1:0".parse().unwrap(),
            FleetKey::new(secret).unwrap(),
            metrics.clone(),
        )
        .await
        .unwrap();
        (s, metrics)
    }

    fn rejected(m: &GossipMetrics, reason: &str) -> u64 {
        m.rejected.with_label_values(&[reason]).get()
    }

    /// Waits for the next accepted message (the test fails rather than hangs).
    async fn next(s: &mut AuthSocket) -> (SocketAddr, ChitchatMessage) {
        tokio::time::timeout(Duration::from_secs(30), s.recv())
            .await
            .expect("a datagram within 30 s")
            .unwrap()
    }

    #[tokio::test]
    async fn members_with_the_key_hear_each_other() {
        let (mut a, a_metrics) = socket(SECRET).await;
        let (mut b, b_metrics) = socket(b"  0123456789abcdef0123456789abcdef").await;
        let b_addr = b.local_addr().unwrap();
        a.send(b_addr, ChitchatMessage::BadCluster).await.unwrap();
        let (from, message) = next(&mut b).await;
        assert_eq!(from, a.local_addr().unwrap());
        assert_eq!(message, ChitchatMessage::BadCluster);
        assert_eq!(a_metrics.sent.get(), b_metrics.received.get());
        assert!(a_metrics.sent.get() > TAG_LEN as u64);
    }

    /// Datagrams without the fleet's tag are dropped before they are decoded, each counted
    /// by why, and the socket goes on: the next good one is received.
    #[tokio::test]
    async fn strangers_garbage_and_altered_datagrams_are_dropped_and_counted() {
        let (mut member, metrics) = socket(SECRET).await;
        let addr = member.local_addr().unwrap();
        let (mut stranger, _) = socket(b"another fleet's key, 32 bytes!!!").await;
        let (mut friend, _) = socket(SECRET).await;
        let raw = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // Another key.
        stranger
            .send(addr, ChitchatMessage::BadCluster)
            .await
            .unwrap();
        // Garbage too short to hold a header and a tag, and garbage with a made-up tag.
        raw.send_to(b"junk", addr).await.unwrap();
        raw.send_to(&[7u8; 200], addr).await.unwrap();
        // A member's datagram altered in flight (one byte of its message flipped).
        let key = FleetKey::new(SECRET).unwrap();
        let (mut sealer, _) = socket(SECRET).await;
        assert!(sealer.seal(addr, &ChitchatMessage::BadCluster));
        let mut altered = sealer.send_buf.clone();
        altered[HEADER_LEN] ^= 1;
        raw.send_to(&altered, addr).await.unwrap();
        // A valid tag over a header and bytes that are not a chitchat message.
        let mut wrong = sealer.send_buf[..HEADER_LEN].to_vec();
        wrong.extend_from_slice(b"not a chitchat message");
        let tag = key.tag(&wrong);
        wrong.extend_from_slice(tag.as_ref());
        raw.send_to(&wrong, addr).await.unwrap();
        // A member's datagram for another member, reflected here.
        let elsewhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert!(sealer.seal(elsewhere, &ChitchatMessage::BadCluster));
        raw.send_to(&sealer.send_buf, addr).await.unwrap();
        // A member's datagram sent longer ago than MAX_SKEW (a replay): the time rewritten
        // and the tag made again, as only a member could.
        assert!(sealer.seal(addr, &ChitchatMessage::BadCluster));
        let mut old = sealer.send_buf[..sealer.send_buf.len() - TAG_LEN].to_vec();
        let then = now_ms() - MAX_SKEW.as_millis() as u64 - 1_000;
        old[19..27].copy_from_slice(&then.to_be_bytes());
        let tag = key.tag(&old);
        old.extend_from_slice(tag.as_ref());
        raw.send_to(&old, addr).await.unwrap();
        // Then a member's message: the only one received.
        friend
            .send(addr, ChitchatMessage::BadCluster)
            .await
            .unwrap();
        let (from, message) = next(&mut member).await;
        assert_eq!(from, friend.local_addr().unwrap());
        assert_eq!(message, ChitchatMessage::BadCluster);
        assert_eq!(rejected(&metrics, "short"), 1);
        assert_eq!(rejected(&metrics, "bad_tag"), 3);
        assert_eq!(rejected(&metrics, "malformed"), 1);
        assert_eq!(rejected(&metrics, "misdirected"), 1);
        assert_eq!(rejected(&metrics, "stale"), 1);
    }

    /// A message larger than a datagram (a catch-up delta of a large state) arrives whole,
    /// in parts; parts that never complete their message are dropped and counted, and a
    /// flood of unfinished messages keeps at most MAX_PARTIAL of them.
    #[tokio::test]
    async fn a_message_larger_than_a_datagram_arrives_in_parts() {
        let (mut a, _) = socket(SECRET).await;
        let (mut b, b_metrics) = socket(SECRET).await;
        let b_addr = b.local_addr().unwrap();
        let big = big_message(65_500);
        assert!(!a.seal(b_addr, &big), "the message needs parts");
        a.send(b_addr, big_message(65_500)).await.unwrap();
        let (_, received) = next(&mut b).await;
        assert_eq!(received, big);
        // Only the first part of ten more messages: eight are kept, the two oldest give
        // way (counted), then a whole one still arrives.
        for _ in 0..10 {
            a.seal(b_addr, &big);
            let parts = a.seal_parts(b_addr).unwrap();
            assert_eq!(parts.len(), 2);
            assert!(parts.iter().all(|p| p.len() <= MAX_DATAGRAM));
            a.socket.send_to(&parts[0], b_addr).await.unwrap();
            // Received before the next (a burst of large datagrams overflows the socket's
            // buffer): a whole message behind it arrives after it.
            a.send(b_addr, ChitchatMessage::BadCluster).await.unwrap();
            assert_eq!(next(&mut b).await.1, ChitchatMessage::BadCluster);
        }
        assert_eq!(b.partial.len(), MAX_PARTIAL);
        assert_eq!(rejected(&b_metrics, "incomplete"), 2);
        // A part claiming an impossible count is malformed.
        a.seal(b_addr, &big);
        let mut part = a.seal_parts(b_addr).unwrap().remove(0);
        let count_at = PART_HEADER_LEN - 1;
        part.truncate(part.len() - TAG_LEN);
        part[count_at] = 9;
        let tag = FleetKey::new(SECRET).unwrap().tag(&part);
        part.extend_from_slice(tag.as_ref());
        a.socket.send_to(&part, b_addr).await.unwrap();
        a.send(b_addr, ChitchatMessage::BadCluster).await.unwrap();
        next(&mut b).await;
        assert_eq!(rejected(&b_metrics, "malformed"), 1);
    }

    /// A chitchat message of about `bytes` bytes (its cluster id holds up to 65,535).
    fn big_message(bytes: usize) -> ChitchatMessage {
        ChitchatMessage::Syn {
            cluster_id: "x".repeat(bytes),
            digest: Default::default(),
        }
    }

    #[test]
    fn a_short_key_is_refused() {
        let e = FleetKey::new(b"short key\n").err().unwrap();
        assert!(e.contains("at least 16"), "{e}");
        assert!(FleetKey::new(&[b'k'; 16]).is_ok());
    }
}
