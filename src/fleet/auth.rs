//! Authenticated gossip datagrams: each of chitchat's messages followed by an HMAC-SHA256
//! tag under the fleet's shared key (`fleet.secret_file`).
//!
//! chitchat checks nothing of who sends what: any datagram that decodes is applied, and a
//! delta may rewrite any node's keys. So every datagram carries a tag over its payload, and
//! one without a valid tag (a stranger, another fleet's key, a truncated or altered
//! packet) is dropped before it is decoded, and counted. A datagram with a valid tag that
//! does not decode (a peer of another version) is dropped and counted too. Nothing a
//! datagram holds stops the gossip: only a failure of the socket itself ends `recv`.
//!
//! Replays of a recorded datagram pass the tag check; chitchat's versions (each node's
//! keys carry a version that only grows, and its heartbeat) make an old delta a no-op.
//!
//! **Size.** chitchat fills a datagram up to the largest UDP payload over IPv4 (65,507
//! bytes, its constant) less a byte of header; with the tag a nearly full message does not
//! fit. Such a message is not sent (counted as `too_large`): the state must be gossiped in
//! keys small enough that its deltas stay well below that (the fleet packs verdicts).

use std::{io, net::SocketAddr};

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

/// The largest UDP payload over IPv4: nothing larger is sent or expected.
pub const MAX_DATAGRAM: usize = 65_507;

/// Bound into every tag, so that a key shared with something else (or a later format)
/// never validates these datagrams.
const CONTEXT: &[u8] = b"gtmd-gossip-v1\0";

/// The shortest shared key accepted (bytes of `fleet.secret_file`, surrounding whitespace
/// left out): 128 bits.
pub const MIN_SECRET: usize = 16;

/// Why a datagram was dropped: the values of `gtmd_fleet_packets_rejected_total{reason}`.
pub const REJECT_REASONS: [&str; 4] = ["short", "bad_tag", "malformed", "too_large"];

/// The transport's counters.
#[derive(Clone)]
pub struct GossipMetrics {
    /// `gtmd_fleet_gossip_bytes_total{direction="sent"}`.
    pub sent: IntCounter,
    /// `{direction="received"}`: datagrams accepted (tag valid, decoded).
    pub received: IntCounter,
    /// `gtmd_fleet_packets_rejected_total{reason}` ([`REJECT_REASONS`]).
    pub rejected: IntCounterVec,
}

impl GossipMetrics {
    /// Handles registered nowhere (tests).
    pub fn unregistered() -> Self {
        Self {
            sent: IntCounter::new("sent", "sent").unwrap(),
            received: IntCounter::new("received", "received").unwrap(),
            rejected: IntCounterVec::new(
                prometheus::Opts::new("rejected", "rejected"),
                &["reason"],
            )
            .unwrap(),
        }
    }

    fn reject(&self, reason: &'static str) {
        self.rejected.with_label_values(&[reason]).inc();
    }
}

/// The fleet's shared key, from the bytes of `fleet.secret_file`.
#[derive(Clone)]
pub struct FleetKey(hmac::Key, [u8; 32]);

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
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, secret).as_ref());
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, secret), fingerprint))
    }

    /// A digest of the key (to tell whether a reload changed it; never shown).
    pub fn fingerprint(&self) -> [u8; 32] {
        self.1
    }

    fn tag(&self, payload: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(CONTEXT);
        ctx.update(payload);
        ctx.sign()
    }

    fn verify(&self, payload: &[u8], tag: &[u8]) -> bool {
        // Constant time: ring compares the whole tag.
        let mut with_context = Vec::with_capacity(CONTEXT.len() + payload.len());
        with_context.extend_from_slice(CONTEXT);
        with_context.extend_from_slice(payload);
        hmac::verify(&self.0, &with_context, tag).is_ok()
    }
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
    key: FleetKey,
    metrics: GossipMetrics,
    send_buf: Vec<u8>,
    recv_buf: Box<[u8]>,
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
        Ok(Self {
            socket,
            key,
            metrics,
            send_buf: Vec::with_capacity(MAX_DATAGRAM),
            // One byte more than the largest datagram: a longer one is seen as such.
            recv_buf: vec![0u8; MAX_DATAGRAM + 1].into_boxed_slice(),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The next datagram with a valid tag that decodes, if this one is; None if it was
    /// dropped (counted).
    async fn receive_one(&mut self) -> anyhow::Result<Option<(SocketAddr, ChitchatMessage)>> {
        let (len, from) = match self.socket.recv_from(&mut self.recv_buf).await {
            Ok(r) => r,
            // ICMP errors of earlier sends surface here on some systems: not fatal.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(anyhow::anyhow!("gossip socket: {e}")),
        };
        let datagram = &self.recv_buf[..len];
        if len <= TAG_LEN || len > MAX_DATAGRAM {
            self.metrics.reject("short");
            debug!(%from, len, "gossip datagram dropped: too short or too long for a tag");
            return Ok(None);
        }
        let (payload, tag) = datagram.split_at(len - TAG_LEN);
        if !self.key.verify(payload, tag) {
            self.metrics.reject("bad_tag");
            debug!(%from, len, "gossip datagram dropped: its tag is not the fleet key's");
            return Ok(None);
        }
        let mut reader = payload;
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
}

#[async_trait]
impl Socket for AuthSocket {
    async fn send(&mut self, to: SocketAddr, message: ChitchatMessage) -> anyhow::Result<()> {
        self.send_buf.clear();
        message.serialize(&mut self.send_buf);
        if self.send_buf.len() + TAG_LEN > MAX_DATAGRAM {
            self.metrics.reject("too_large");
            warn!(%to, len = self.send_buf.len(), "gossip message too large to send with its tag");
            return Ok(());
        }
        let tag = self.key.tag(&self.send_buf);
        self.send_buf.extend_from_slice(tag.as_ref());
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
        // Garbage too short to hold a tag, and garbage with a made-up tag.
        raw.send_to(b"junk", addr).await.unwrap();
        raw.send_to(&[7u8; 200], addr).await.unwrap();
        // A member's datagram altered in flight (one payload byte flipped).
        let mut payload = Vec::new();
        ChitchatMessage::BadCluster.serialize(&mut payload);
        let key = FleetKey::new(SECRET).unwrap();
        let mut altered = payload.clone();
        altered.extend_from_slice(key.tag(&payload).as_ref());
        altered[0] ^= 1;
        raw.send_to(&altered, addr).await.unwrap();
        // A valid tag over bytes that are not a chitchat message.
        let mut wrong = b"not a chitchat message".to_vec();
        let tag = key.tag(&wrong);
        wrong.extend_from_slice(tag.as_ref());
        raw.send_to(&wrong, addr).await.unwrap();
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
    }

    #[test]
    fn a_short_key_is_refused() {
        let e = FleetKey::new(b"short key\n").err().unwrap();
        assert!(e.contains("at least 16"), "{e}");
        assert!(FleetKey::new(&[b'k'; 16]).is_ok());
    }
}
