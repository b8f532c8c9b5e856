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
//! A response head (status line and headers) over [`HEADER_LIMIT`] fails the probe with
//! reason `protocol`. hyper's HTTP/1 client buffers a head of up to ~408 KiB by default, and
//! reqwest has no setting for that buffer: a hostile or broken ingress sending ~400 KB of
//! headers per response made 1,000 probes hold ~440 MB. So probes speak HTTP/1.1 through
//! hyper's connection API directly, with the read buffer capped at 16 KiB per probe.

use std::{
    error::Error as _,
    io,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use http_body_util::{BodyExt, Empty};
use hyper::{
    HeaderMap, Method, Request, Uri,
    body::Bytes,
    header::{ACCEPT, HOST, HeaderName, HeaderValue, USER_AGENT},
};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

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
    method: Method,
    /// Origin form: path and query.
    target: Uri,
    headers: HeaderMap,
    expect_status: Vec<(u16, u16)>,
    expect_body: Option<String>,
    timeout: Duration,
}

impl HttpProbe {
    /// `tls`: the client settings of an https probe (None for http).
    pub fn new(spec: &ProbeSpec, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Self, String> {
        let mut headers = HeaderMap::new();
        headers.insert(USER_AGENT, HeaderValue::from_static(AGENT));
        headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
        // Host: the app hostname (or the address), with the port unless it is the
        // scheme's default, as a browser would send it.
        let default_port = if spec.kind == ProbeKind::Https {
            443
        } else {
            80
        };
        let authority = spec
            .host
            .clone()
            .unwrap_or_else(|| spec.addr.ip().to_string());
        let authority = match (spec.host.is_some(), spec.addr) {
            (false, SocketAddr::V6(_)) => format!("[{authority}]"),
            _ => authority,
        };
        let host = if spec.addr.port() == default_port {
            authority
        } else {
            format!("{authority}:{}", spec.addr.port())
        };
        headers.insert(
            HOST,
            HeaderValue::from_str(&host).map_err(|e| format!("host {host}: {e}"))?,
        );
        // Configured headers last: they override the defaults, Host included.
        for (k, v) in &spec.headers {
            let name =
                HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("header {k}: {e}"))?;
            let value = HeaderValue::from_str(v).map_err(|e| format!("header {k}: {e}"))?;
            headers.insert(name, value);
        }
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
        let target = Uri::try_from(spec.path.as_str())
            .map_err(|e| format!("probe path {}: {e}", spec.path))?;
        Ok(Self {
            addr: spec.addr,
            tls,
            method: match spec.method {
                HttpMethod::Get => Method::GET,
                HttpMethod::Head => Method::HEAD,
            },
            target,
            headers,
            expect_status: spec.expect_status.clone(),
            expect_body: spec.expect_body.clone(),
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
        let tcp = match TcpStream::connect(self.addr).await {
            Ok(s) => s,
            Err(e) => return connect_failure(&e, self.timeout),
        };
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => self.request(tcp).await,
            Some(tls) => match tls.connector.connect(tls.name.clone(), tcp).await {
                Ok(stream) => self.request(stream).await,
                Err(e) => {
                    classify_io(&e, self.timeout).unwrap_or_else(|| Reason::Connect(e.to_string()))
                }
            },
        }
    }

    /// One HTTP/1.1 request on `io`, with the connection driven in this task (so the
    /// probe's timeout drops both).
    async fn request<T>(&self, io: T) -> Reason
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let handshake = hyper::client::conn::http1::Builder::new()
            .max_buf_size(HEADER_LIMIT)
            .handshake::<_, Empty<Bytes>>(TokioIo::new(io))
            .await;
        let (mut sender, connection) = match handshake {
            Ok(h) => h,
            Err(e) => return classify(&e, self.timeout),
        };
        let mut request = Request::new(Empty::new());
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.target.clone();
        *request.headers_mut() = self.headers.clone();
        let response = async {
            match sender.send_request(request).await {
                Ok(response) => self.judge(response).await,
                Err(e) => classify(&e, self.timeout),
            }
        };
        tokio::pin!(response, connection);
        let mut connection_done = false;
        loop {
            tokio::select! {
                reason = &mut response => return reason,
                // The connection's own error (a head over the limit, say) reaches the
                // response too; it is taken from whichever reports it first.
                done = &mut connection, if !connection_done => match done {
                    Ok(()) => connection_done = true,
                    Err(e) => return classify(&e, self.timeout),
                },
            }
        }
    }

    /// The verdict on a response: its status, and the body match if one is configured.
    async fn judge(&self, mut response: hyper::Response<hyper::body::Incoming>) -> Reason {
        let code = response.status().as_u16();
        let Some(needle) = &self.expect_body else {
            return Reason::Status(code);
        };
        if !self.status_ok(code) {
            return Reason::Status(code);
        }
        let mut body: Vec<u8> = Vec::new();
        loop {
            match response.body_mut().frame().await {
                Some(Ok(frame)) => {
                    let Ok(chunk) = frame.into_data() else {
                        continue; // trailers
                    };
                    let room = BODY_LIMIT - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if contains(&body, needle.as_bytes()) {
                        return Reason::Status(code);
                    }
                    if body.len() >= BODY_LIMIT {
                        return Reason::BodyMismatch;
                    }
                }
                None => return Reason::BodyMismatch,
                Some(Err(e)) => return classify(&e, self.timeout),
            }
        }
    }
}

/// A failed TCP connect.
fn connect_failure(e: &io::Error, timeout: Duration) -> Reason {
    classify_io(e, timeout).unwrap_or_else(|| Reason::Connect(e.to_string()))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Turns an HTTP error into the reason an operator reads in the log.
fn classify(e: &hyper::Error, timeout: Duration) -> Reason {
    if e.is_parse_too_large() {
        return Reason::Protocol(format!(
            "response head over {} KiB (or over 100 headers)",
            HEADER_LIMIT / 1024
        ));
    }
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(tls) = s.downcast_ref::<rustls::Error>() {
            return Reason::Tls(tls.to_string());
        }
        if let Some(io) = s.downcast_ref::<io::Error>()
            && let Some(reason) = classify_io(io, timeout)
        {
            return reason;
        }
        source = s.source();
    }
    Reason::Protocol(innermost(e))
}

/// io errors nest (hyper wraps the TLS stream's io error, which wraps rustls's error) and
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

/// The most specific message in an error chain (the top level says little).
fn innermost(e: &hyper::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg = s.to_string();
        source = s.source();
    }
    msg
}
