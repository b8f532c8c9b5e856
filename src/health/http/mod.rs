//! HTTP(S) probes sent to a pinned address with the app's hostname as Host and SNI.
//!
//! Ingress controllers and OpenShift routers route by host, so a probe must reach the
//! cluster's own ingress address (not whatever DNS says) while presenting the app hostname:
//! the probe connects to that address itself, sends the hostname as SNI (checked against the
//! certificate) and as the Host header.
//!
//! By default every probe opens a fresh connection, like HAProxy and gdnsd checks: a reused
//! connection alone would hide a router that no longer accepts. With `reuse_connections`
//! an `http` probe may use a kept-alive connection of its address instead, under the rules
//! of [`super::pool`] that keep such a router detected. Redirects are not followed; at
//! most 64 KiB of body is read, only when a body match is configured (or, to reuse the
//! connection, to find where a small body ends).
//!
//! The exchange is written by hand ([`response`]): the request is rendered once when the
//! probe is prepared, and the response is read through one small buffer. A general client
//! (hyper) cost most of the engine's user CPU at 10,000 probes a second, and ~1 KiB of
//! header map per prepared probe. A response head (status line and headers) over
//! [`HEADER_LIMIT`] or [`response::MAX_HEADERS`] fails the probe with reason `protocol`:
//! a hostile or broken ingress sending ~400 KB of headers per response must not make 1,000
//! probes hold hundreds of MB.

pub mod response;
#[cfg(test)]
mod reuse_tests;

use std::{
    io,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use hyper::header::{HeaderName, HeaderValue};
use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

use self::response::{Body, Failure, Response, Rest};
use super::{
    outcome::{Outcome, Reason},
    pool::{Connecting, KeptExchange, Pool},
};
use crate::model::{HttpMethod, ProbeKind, ProbeSpec};

/// How much of a response body is searched for `expect_body`.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The largest response head (status line and headers) a probe accepts. Ingress health
/// answers carry a few hundred bytes of headers; 16 KiB is the largest request head common
/// servers accept (nginx's large_client_header_buffers is 4 × 8 KiB per line).
pub const HEADER_LIMIT: usize = 16 * 1024;

use crate::model::probe::DEFAULT_AGENT as AGENT;

/// TLS for one https probe: the shared client settings and the name sent as SNI and
/// checked against the certificate.
struct Tls {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

/// One prepared HTTP(S) probe: the TLS settings of an https probe; everything else is
/// read from the probe's settings at each run.
///
/// The request is rendered at each run (a few hundred nanoseconds, into the buffer the
/// response is then read into), not kept: 50,000 prepared requests and their copies of
/// the settings were ~15 MB.
pub struct HttpProbe {
    tls: Option<Tls>,
    /// The shared keep-alive pool, for an http probe with `reuse_connections`.
    pool: Option<Arc<Pool>>,
}

impl HttpProbe {
    /// `tls`: the client settings of an https probe (None for http). Checks what the
    /// request is made of, so that rendering it cannot fail later.
    pub fn new(spec: &ProbeSpec, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Self, String> {
        check_request(spec)?;
        let tls = match (spec.kind, tls) {
            (ProbeKind::Https, Some(config)) => {
                let name = match &spec.host {
                    Some(host) => ServerName::try_from(host.clone())
                        .map_err(|e| format!("TLS server name {host}: {e}"))?,
                    None => ServerName::IpAddress(spec.addr.ip().into()),
                };
                Some(Tls {
                    connector: tokio_rustls::TlsConnector::from(config),
                    name,
                })
            }
            (ProbeKind::Https, None) => return Err("https probe without TLS settings".into()),
            _ => None,
        };
        Ok(Self { tls, pool: None })
    }

    /// Lets an http probe with `reuse_connections` use `pool` (others ignore it).
    pub fn with_pool(mut self, spec: &ProbeSpec, pool: &Arc<Pool>) -> Self {
        if spec.reuse_connections && spec.kind == ProbeKind::Http {
            self.pool = Some(pool.clone());
        }
        self
    }

    /// Runs the probe of `spec` (the settings it was prepared with) once; never takes
    /// longer than the timeout.
    pub async fn run(&self, spec: &ProbeSpec) -> Outcome {
        self.run_kept(spec).await.0
    }

    /// [`Self::run`], and with `reuse_connections` the kept connection the verdict came
    /// from, if it came from one: a success on it may be put in doubt later
    /// ([`KeptExchange::in_doubt`]).
    pub async fn run_kept(&self, spec: &ProbeSpec) -> (Outcome, Option<KeptExchange>) {
        let start = Instant::now();
        let (reason, kept) = match &self.pool {
            Some(pool) => reusing(pool, spec, start + spec.timeout).await,
            None => match tokio::time::timeout(spec.timeout, self.exchange(spec)).await {
                Ok(r) => (r, None),
                Err(_) => (Reason::Timeout(spec.timeout), None),
            },
        };
        let up = match &reason {
            Reason::Status(code) => status_ok(spec, *code),
            _ => false,
        };
        let outcome = Outcome {
            up,
            reason,
            duration: start.elapsed(),
        };
        (outcome, kept)
    }

    /// Connects (and shakes hands), then runs the request.
    async fn exchange(&self, spec: &ProbeSpec) -> Reason {
        let mut tcp = match TcpStream::connect(spec.addr).await {
            Ok(s) => s,
            Err(e) => return connect_failure(&e, spec.timeout),
        };
        match &self.tls {
            None => {
                let reason = request(&mut tcp, spec).await;
                reset_on_close(&tcp);
                reason
            }
            // Boxed: the handshake's state (~2.5 KiB, the TLS session inside) would
            // otherwise be part of every http probe's future too, and 10,000 probes of a
            // blackholed cluster hold theirs for the whole timeout.
            Some(tls) => Box::pin(tls_exchange(tls, tcp, spec)).await,
        }
    }
}

/// The handshake and the request of an https probe.
async fn tls_exchange(tls: &Tls, tcp: TcpStream, spec: &ProbeSpec) -> Reason {
    match tls.connector.connect(tls.name.clone(), tcp).await {
        Ok(mut stream) => {
            let reason = request(&mut stream, spec).await;
            reset_on_close(stream.get_ref().0);
            reason
        }
        Err(e) => classify_io(&e, spec.timeout).unwrap_or_else(|| Reason::Connect(e.to_string())),
    }
}

/// A probe with `reuse_connections`: on a pooled connection when [`Pool::take`] gives one,
/// else on a fresh one; a pooled connection that fails before any byte of a response (the
/// server closed it while idle) is replaced by a fresh one, once. Every step ends by
/// `deadline` (the probe's timeout), and the connection goes back to the pool only after a
/// response read to its known end. The verdict comes with the kept connection it came
/// from, if it came from one.
async fn reusing(
    pool: &Pool,
    spec: &ProbeSpec,
    deadline: Instant,
) -> (Reason, Option<KeptExchange>) {
    let timed_out = || Reason::Timeout(spec.timeout);
    let deadline = tokio::time::Instant::from_std(deadline);
    let mut pooled = pool.take(spec.addr, spec.fast_interval);
    loop {
        // For a fresh connection: tells the pool whether the address still accepts.
        let mut connecting = None;
        let (mut tcp, kept) = match pooled.take() {
            Some((tcp, kept)) => (tcp, Some(kept)),
            None => {
                let fresh = Connecting::new(pool, spec.addr);
                match tokio::time::timeout_at(deadline, TcpStream::connect(spec.addr)).await {
                    Err(_) => return (timed_out(), None),
                    Ok(Err(e)) => return (connect_failure(&e, spec.timeout), None),
                    Ok(Ok(tcp)) => {
                        fresh.connected();
                        connecting = Some(fresh);
                        reset_on_close(&tcp);
                        (tcp, None)
                    }
                }
            }
        };
        let mut verdict = None;
        let ended =
            tokio::time::timeout_at(deadline, keep_alive(&mut tcp, spec, &mut verdict)).await;
        let answered = matches!(ended, Ok(Ended::Reusable | Ended::Closed)) || verdict.is_some();
        if let Some(fresh) = connecting {
            fresh.finish(answered);
        }
        match ended {
            Ok(Ended::Reusable) => {
                pool.put(spec.addr, tcp);
                return (verdict.unwrap_or_else(timed_out), kept);
            }
            // The server closed the kept connection: the next turn connects fresh (so
            // this happens once at most).
            Ok(Ended::NoResponse(_)) if kept.is_some() => pool.stale(),
            Ok(Ended::NoResponse(reason)) => return (reason, None),
            Ok(Ended::Closed) => return (verdict.unwrap_or_else(timed_out), kept),
            // Out of time while finding where the response ends: the verdict stands, the
            // connection is not kept.
            Err(_) => return (verdict.unwrap_or_else(timed_out), kept),
        }
    }
}

/// How an exchange on a kept-alive connection ended.
enum Ended {
    /// The verdict is in; the response was read to its end and the connection may carry
    /// another request.
    Reusable,
    /// The verdict is in; the connection must be closed.
    Closed,
    /// The connection failed before any byte of a response arrived: why.
    NoResponse(Reason),
}

/// [`request`] on a connection that may be kept: sets `verdict` as soon as it is known,
/// then reads the rest of the response to its end if that end is known and near.
async fn keep_alive(tcp: &mut TcpStream, spec: &ProbeSpec, verdict: &mut Option<Reason>) -> Ended {
    let mut buf = Vec::with_capacity(response::FIRST_READ);
    render_request(spec, &mut buf);
    if let Err(e) = tcp.write_all(&buf).await {
        return Ended::NoResponse(failure(Failure::Io(e), spec.timeout));
    }
    let mut response = Response::with_buffer(tcp, buf);
    let head = match response.head(spec.method == HttpMethod::Head).await {
        Ok(h) => h,
        Err(f) => {
            let reason = failure(f, spec.timeout);
            if response.received() {
                *verdict = Some(reason);
                return Ended::Closed;
            }
            return Ended::NoResponse(reason);
        }
    };
    let mut rest = Rest::from(head.body);
    *verdict = Some(match &spec.expect_body {
        Some(needle) if status_ok(spec, head.status) => {
            match response.find(&mut rest, needle.as_bytes()).await {
                Ok(true) => Reason::Status(head.status),
                Ok(false) => Reason::BodyMismatch,
                Err(f) => {
                    *verdict = Some(failure(f, spec.timeout));
                    return Ended::Closed;
                }
            }
        }
        _ => Reason::Status(head.status),
    });
    if !head.keep_alive || head.body == Body::UntilClose {
        return Ended::Closed;
    }
    // The end of a small body is read (and discarded); a larger one is not worth it.
    match response.drain(&mut rest, BODY_LIMIT as u64).await {
        Ok(true) if !response.leftover() => Ended::Reusable,
        _ => Ended::Closed,
    }
}

fn status_ok(spec: &ProbeSpec, code: u16) -> bool {
    spec.expect_status
        .iter()
        .any(|&(lo, hi)| (lo..=hi).contains(&code))
}

/// One HTTP/1.1 request on `io` and the verdict on its response: the status, and the body
/// match if one is configured.
async fn request<T>(io: &mut T, spec: &ProbeSpec) -> Reason
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(response::FIRST_READ);
    render_request(spec, &mut buf);
    // One write: the whole request leaves in one segment (no Nagle delay to avoid, so no
    // TCP_NODELAY call either). The flush pushes TLS records out.
    if let Err(e) = async {
        io.write_all(&buf).await?;
        io.flush().await
    }
    .await
    {
        return failure(Failure::Io(e), spec.timeout);
    }
    let mut response = Response::with_buffer(io, buf);
    let head = match response.head(spec.method == HttpMethod::Head).await {
        Ok(h) => h,
        Err(f) => return failure(f, spec.timeout),
    };
    let Some(needle) = &spec.expect_body else {
        return Reason::Status(head.status);
    };
    if !status_ok(spec, head.status) {
        return Reason::Status(head.status);
    }
    match response.body_contains(head.body, needle.as_bytes()).await {
        Ok(true) => Reason::Status(head.status),
        Ok(false) => Reason::BodyMismatch,
        Err(f) => failure(f, spec.timeout),
    }
}

/// Turns a failed read or write into the reason an operator reads in the log.
fn failure(f: Failure, timeout: Duration) -> Reason {
    match f {
        Failure::TooLarge => Reason::Protocol(format!(
            "response head over {} KiB (or over {} headers)",
            HEADER_LIMIT / 1024,
            response::MAX_HEADERS
        )),
        Failure::Protocol(why) => Reason::Protocol(why.to_owned()),
        Failure::Io(e) => {
            classify_io(&e, timeout).unwrap_or_else(|| Reason::Protocol(e.to_string()))
        }
    }
}

/// Checks what the request of `spec` is made of as hyper checks it: the path is a valid
/// request target, and no CR, LF or other control character can reach the wire through
/// the Host or a configured header.
fn check_request(spec: &ProbeSpec) -> Result<(), String> {
    hyper::Uri::try_from(spec.path.as_str())
        .map_err(|e| format!("probe path {}: {e}", spec.path))?;
    for (k, v) in &spec.headers {
        HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("header {k}: {e}"))?;
        HeaderValue::from_str(v).map_err(|e| format!("header {k}: {e}"))?;
    }
    let host = host(spec);
    HeaderValue::from_str(&host).map_err(|e| format!("host {host}: {e}"))?;
    Ok(())
}

/// The Host header: the app hostname (or the address), with the port unless it is the
/// scheme's default, as a browser sends it.
fn host(spec: &ProbeSpec) -> String {
    let default_port = if spec.kind == ProbeKind::Https {
        443
    } else {
        80
    };
    let authority = match (&spec.host, spec.addr) {
        (Some(host), _) => host.clone(),
        (None, SocketAddr::V6(a)) => format!("[{}]", a.ip()),
        (None, SocketAddr::V4(a)) => a.ip().to_string(),
    };
    if spec.addr.port() == default_port {
        authority
    } else {
        format!("{authority}:{}", spec.addr.port())
    }
}

/// Appends the request bytes of `spec` (checked by [`check_request`]) to `out`: Host,
/// User-Agent and Accept, then the configured headers, which override the defaults (Host
/// included; of two spellings of one name the last wins).
fn render_request(spec: &ProbeSpec, out: &mut Vec<u8>) {
    use std::io::Write;
    let method = match spec.method {
        HttpMethod::Get => "GET",
        HttpMethod::Head => "HEAD",
    };
    // The target as hyper sent it: the path and query, without a fragment.
    let target = spec.path.split('#').next().unwrap_or("/");
    let _ = write!(out, "{method} {target} HTTP/1.1\r\n");
    let configured = |name: &str| {
        spec.headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(name))
    };
    if !configured("host") {
        let _ = write!(out, "Host: {}\r\n", host(spec));
    }
    let agent = spec.agent.as_deref().unwrap_or(AGENT);
    for (name, value) in [("User-Agent", agent), ("Accept", "*/*")] {
        if !configured(name) {
            let _ = write!(out, "{name}: {value}\r\n");
        }
    }
    for (i, (name, value)) in spec.headers.iter().enumerate() {
        let overridden = spec.headers[i + 1..]
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(name));
        if !overridden {
            let _ = write!(out, "{name}: {value}\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Makes the close of a probe's connection send a reset (SO_LINGER 0) instead of the FIN
/// handshake, once the exchange is over.
///
/// A normal close leaves the closing side's socket in TIME_WAIT for a minute: at 10,000
/// probes a second towards one ingress address that is ~600,000 sockets, which exhausts the
/// ephemeral ports towards that address (28,000 by default) and costs kernel memory and
/// CPU on both ends. HAProxy's health checks close the same way. Nothing is lost: the
/// response has been read as far as the probe needs, and the reset tells the server at
/// once that the connection is gone. Best effort: if the option cannot be set, the close
/// is an ordinary one.
fn reset_on_close(tcp: &TcpStream) {
    let _ = socket2::SockRef::from(tcp).set_linger(Some(Duration::ZERO));
}

/// A failed TCP connect.
fn connect_failure(e: &io::Error, timeout: Duration) -> Reason {
    classify_io(e, timeout).unwrap_or_else(|| Reason::Connect(e.to_string()))
}

/// io errors nest (the TLS stream's io error wraps rustls's error) and
/// `io::Error::source` skips the wrapped error itself, so walk `get_ref` by hand.
fn classify_io(io: &io::Error, timeout: Duration) -> Option<Reason> {
    match io.kind() {
        io::ErrorKind::ConnectionRefused => return Some(Reason::ConnectionRefused),
        io::ErrorKind::TimedOut => return Some(Reason::Timeout(timeout)),
        _ => {}
    }
    let inner = io.get_ref()?;
    if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
        return Some(Reason::Tls(tls.to_string()));
    }
    classify_io(inner.downcast_ref::<io::Error>()?, timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probe of one app on one cluster at `ingress`, with the probe's `fields`.
    pub(super) fn probe_spec(ingress: std::net::IpAddr, fields: &str) -> ProbeSpec {
        let text = format!(
            r#"{zone}[[clusters]]
name = "a"
ingress = ["{ingress}"]
[[apps]]
hostname = "x.t.test"
probe = {{ {fields} }}
targets = [{{ cluster = "a" }}]
"#,
            zone = crate::test_support::ZONE,
        );
        let model = crate::from_text(std::path::Path::new("t.toml"), &text)
            .unwrap()
            .model;
        (*model.apps[0].targets[0].probe.clone().unwrap()).clone()
    }

    fn spec(extra: &str) -> ProbeSpec {
        probe_spec(
            [192, 0, 2, 10].into(),
            &format!(r#"kind = "http", port = 8080, path = "/healthz?full=1" {extra}"#),
        )
    }

    /// A probe in flight holds its future for up to its timeout, and a blackholed cluster
    /// of 10,000 apps keeps 10,000 of them: an http probe's must not carry an https
    /// handshake's state (it did: 2,912 bytes, ~20 MiB more RSS during such an outage).
    /// 1,032 bytes with or without a pool (the kept connection's doubt is part of it).
    #[test]
    fn an_http_probe_in_flight_stays_small() {
        let spec = spec("");
        let probe = HttpProbe::new(&spec, None).unwrap();
        let size = std::mem::size_of_val(&probe.run_kept(&spec));
        assert!(size <= 1100, "an http probe's future is {size} bytes");
    }

    /// The server's side of a probe's connection once the probe is done: a reset (no
    /// TIME_WAIT left behind by the probe) rather than an orderly close.
    #[tokio::test]
    async fn a_probe_closes_its_connection_with_a_reset_once_answered() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut spec = spec("");
        spec.addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request ended early");
                got.extend_from_slice(&buf[..n]);
            }
            // No body: nothing is left unread, which would make any close a reset.
            conn.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
            conn.read(&mut buf).await
        });
        let probe = HttpProbe::new(&spec, None).unwrap();
        let outcome = probe.run(&spec).await;
        assert_eq!(outcome.reason, Reason::Status(204));
        let after = server.await.unwrap();
        assert_eq!(
            after.as_ref().map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionReset),
            "{after:?}"
        );
    }

    #[test]
    fn the_request_is_rendered_once_with_host_and_configured_headers() {
        let request = |extra: &str| {
            let spec = spec(extra);
            check_request(&spec).unwrap();
            let mut out = Vec::new();
            render_request(&spec, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            request(""),
            format!(
                "GET /healthz?full=1 HTTP/1.1\r\nHost: x.t.test:8080\r\nUser-Agent: {AGENT}\r\nAccept: */*\r\n\r\n"
            )
        );
        // Configured headers override the defaults, Host included, whatever their case.
        let r =
            request(r#", method = "HEAD", headers = { host = "other.test", "X-Env" = "prod" }"#);
        assert!(
            r.starts_with("HEAD /healthz?full=1 HTTP/1.1\r\nUser-Agent: "),
            "{r}"
        );
        assert!(r.ends_with("\r\n\r\n"), "{r}");
        for line in [
            "\r\nAccept: */*\r\n",
            "\r\nhost: other.test\r\n",
            "\r\nX-Env: prod\r\n",
        ] {
            assert!(r.contains(line), "{line:?} in {r}");
        }
        assert!(!r.contains("x.t.test"), "{r}");
    }
}
