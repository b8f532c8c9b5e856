//! HTTP(S) probes sent to a pinned address with the app's hostname as Host and SNI.
//!
//! Ingress controllers and OpenShift routers route by host, so a probe must reach the
//! cluster's own ingress address (not whatever DNS says) while presenting the app hostname:
//! the probe connects to that address itself, sends the hostname as SNI (checked against the
//! certificate) and as the Host header.
//!
//! Every probe opens a fresh connection (no keep-alive pool), like HAProxy and gdnsd checks:
//! a reused connection would hide a router that no longer accepts. Redirects are not
//! followed; at most 64 KiB of body is read, only when a body match is configured.
//!
//! The exchange is written by hand ([`response`]): the request is rendered once when the
//! probe is prepared, and the response is read through one small buffer. A general client
//! (hyper) cost most of the engine's user CPU at 10,000 probes a second, and ~1 KiB of
//! header map per prepared probe. A response head (status line and headers) over
//! [`HEADER_LIMIT`] or [`response::MAX_HEADERS`] fails the probe with reason `protocol`:
//! a hostile or broken ingress sending ~400 KB of headers per response must not make 1,000
//! probes hold hundreds of MB.

pub mod response;

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

use self::response::{Failure, Response};
use super::outcome::{Outcome, Reason};
use crate::model::{HttpMethod, ProbeKind, ProbeSpec};

/// How much of a response body is searched for `expect_body`.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The largest response head (status line and headers) a probe accepts. Ingress health
/// answers carry a few hundred bytes of headers; 16 KiB is the largest request head common
/// servers accept (nginx's large_client_header_buffers is 4 × 8 KiB per line).
pub const HEADER_LIMIT: usize = 16 * 1024;

const AGENT: &str = concat!("gtmd/", env!("CARGO_PKG_VERSION"), " health-probe");

/// TLS for one https probe: the shared client settings and the name sent as SNI and
/// checked against the certificate.
struct Tls {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

/// One prepared HTTP(S) probe.
pub struct HttpProbe {
    addr: SocketAddr,
    tls: Option<Tls>,
    /// The whole request (request line, headers, blank line), rendered once.
    request: Box<[u8]>,
    /// A HEAD request: no body follows the response head.
    head: bool,
    expect_status: Box<[(u16, u16)]>,
    expect_body: Option<Box<[u8]>>,
    timeout: Duration,
}

impl HttpProbe {
    /// `tls`: the client settings of an https probe (None for http).
    pub fn new(spec: &ProbeSpec, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Self, String> {
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
        Ok(Self {
            addr: spec.addr,
            tls,
            request: render_request(spec)?.into_boxed_slice(),
            head: spec.method == HttpMethod::Head,
            expect_status: spec.expect_status.clone().into_boxed_slice(),
            expect_body: spec
                .expect_body
                .as_ref()
                .map(|b| b.as_bytes().to_vec().into_boxed_slice()),
            timeout: spec.timeout,
        })
    }

    /// Runs the probe once; never takes longer than the timeout.
    pub async fn run(&self) -> Outcome {
        let start = Instant::now();
        let reason = match tokio::time::timeout(self.timeout, self.exchange()).await {
            Ok(r) => r,
            Err(_) => Reason::Timeout(self.timeout),
        };
        let up = match &reason {
            Reason::Status(code) => self.status_ok(*code),
            _ => false,
        };
        Outcome {
            up,
            reason,
            duration: start.elapsed(),
        }
    }

    fn status_ok(&self, code: u16) -> bool {
        self.expect_status
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&code))
    }

    /// Connects (and shakes hands), then runs the request.
    async fn exchange(&self) -> Reason {
        let mut tcp = match TcpStream::connect(self.addr).await {
            Ok(s) => s,
            Err(e) => return connect_failure(&e, self.timeout),
        };
        match &self.tls {
            None => {
                let reason = self.request(&mut tcp).await;
                reset_on_close(&tcp);
                reason
            }
            Some(tls) => match tls.connector.connect(tls.name.clone(), tcp).await {
                Ok(mut stream) => {
                    let reason = self.request(&mut stream).await;
                    reset_on_close(stream.get_ref().0);
                    reason
                }
                Err(e) => {
                    classify_io(&e, self.timeout).unwrap_or_else(|| Reason::Connect(e.to_string()))
                }
            },
        }
    }

    /// One HTTP/1.1 request on `io` and the verdict on its response: the status, and the
    /// body match if one is configured.
    async fn request<T>(&self, io: &mut T) -> Reason
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        // One write: the whole request leaves in one segment (no Nagle delay to avoid, so
        // no TCP_NODELAY call either). The flush pushes TLS records out.
        if let Err(e) = async {
            io.write_all(&self.request).await?;
            io.flush().await
        }
        .await
        {
            return self.failure(Failure::Io(e));
        }
        let mut response = Response::new(io);
        let head = match response.head(self.head).await {
            Ok(h) => h,
            Err(f) => return self.failure(f),
        };
        let Some(needle) = &self.expect_body else {
            return Reason::Status(head.status);
        };
        if !self.status_ok(head.status) {
            return Reason::Status(head.status);
        }
        match response.body_contains(head.body, needle).await {
            Ok(true) => Reason::Status(head.status),
            Ok(false) => Reason::BodyMismatch,
            Err(f) => self.failure(f),
        }
    }

    /// Turns a failed read or write into the reason an operator reads in the log.
    fn failure(&self, f: Failure) -> Reason {
        match f {
            Failure::TooLarge => Reason::Protocol(format!(
                "response head over {} KiB (or over {} headers)",
                HEADER_LIMIT / 1024,
                response::MAX_HEADERS
            )),
            Failure::Protocol(why) => Reason::Protocol(why.to_owned()),
            Failure::Io(e) => {
                classify_io(&e, self.timeout).unwrap_or_else(|| Reason::Protocol(e.to_string()))
            }
        }
    }
}

/// The request bytes of `spec`: Host (the app hostname, or the address; with the port
/// unless it is the scheme's default, as a browser sends it), User-Agent and Accept, then
/// the configured headers, which override the defaults (Host included).
fn render_request(spec: &ProbeSpec) -> Result<Vec<u8>, String> {
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
    let host = if spec.addr.port() == default_port {
        authority
    } else {
        format!("{authority}:{}", spec.addr.port())
    };
    let target = hyper::Uri::try_from(spec.path.as_str())
        .map_err(|e| format!("probe path {}: {e}", spec.path))?;
    let target = target.path_and_query().map_or("/", |p| p.as_str());
    // Checked as hyper checks them: no CR, LF or other control characters can reach the
    // wire through a configured header.
    let mut configured: Vec<(&str, &str)> = Vec::new();
    for (k, v) in &spec.headers {
        HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("header {k}: {e}"))?;
        HeaderValue::from_str(v).map_err(|e| format!("header {k}: {e}"))?;
        // The last of two spellings of one name wins, as a header map insert did.
        configured.retain(|(name, _)| !name.eq_ignore_ascii_case(k));
        configured.push((k, v));
    }
    HeaderValue::from_str(&host).map_err(|e| format!("host {host}: {e}"))?;
    let method = match spec.method {
        HttpMethod::Get => "GET",
        HttpMethod::Head => "HEAD",
    };
    let mut out = format!("{method} {target} HTTP/1.1\r\n");
    for (name, value) in [
        ("Host", host.as_str()),
        ("User-Agent", AGENT),
        ("Accept", "*/*"),
    ] {
        if !configured.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)) {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    for (name, value) in configured {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    Ok(out.into_bytes())
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

    fn spec(extra: &str) -> ProbeSpec {
        let text = format!(
            r#"
[[zones]]
origin = "t.test"
nameservers = ["ns.outside.net"]
[zones.soa]
mname = "ns.outside.net"
rname = "h.t.test"
[[clusters]]
name = "a"
ingress = ["192.0.2.10"]
[[apps]]
hostname = "x.t.test"
probe = {{ kind = "http", port = 8080, path = "/healthz?full=1" {extra} }}
targets = [{{ cluster = "a" }}]
"#
        );
        let model = crate::from_text(std::path::Path::new("t.toml"), &text)
            .unwrap()
            .model;
        model.apps[0].targets[0].probe.clone().unwrap()
    }

    #[test]
    fn the_request_is_rendered_once_with_host_and_configured_headers() {
        let request =
            |extra: &str| String::from_utf8(render_request(&spec(extra)).unwrap()).unwrap();
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
