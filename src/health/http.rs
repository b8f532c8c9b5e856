//! HTTP(S) probes sent to a pinned address with the app's hostname as Host and SNI.
//!
//! Ingress controllers and OpenShift routers route by host, so a probe must reach the
//! cluster's own ingress address (not whatever DNS says) while presenting the app hostname.
//! Plain HTTP probes share one client and set the Host header; HTTPS probes need the
//! hostname in the URL for SNI and certificate checks, so each gets a client whose resolver
//! pins that hostname to the probed address (reqwest's `resolve`).
//!
//! Every probe opens a fresh connection (no keep-alive pool), like HAProxy and gdnsd checks:
//! a reused connection would hide a router that no longer accepts. Redirects are not
//! followed; at most 64 KiB of body is read, only when a body match is configured.

use std::{
    error::Error as _,
    io,
    sync::Arc,
    time::{Duration, Instant},
};

use reqwest::{
    Client, Method, Url,
    header::{HOST, HeaderMap, HeaderName, HeaderValue},
    redirect,
};

use super::outcome::{Outcome, Reason};
use crate::model::{HttpMethod, ProbeKind, ProbeSpec};

/// How much of a response body is searched for `expect_body`.
pub const BODY_LIMIT: usize = 64 * 1024;

const USER_AGENT: &str = concat!("gtmd/", env!("CARGO_PKG_VERSION"), " health-probe");

/// A client builder with the settings every probe client shares.
fn base_builder() -> reqwest::ClientBuilder {
    Client::builder()
        .redirect(redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .user_agent(USER_AGENT)
}

/// The client shared by all plain-HTTP probes.
pub fn shared_http_client() -> Result<Client, String> {
    base_builder()
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// One prepared HTTP(S) probe.
pub struct HttpProbe {
    client: Client,
    url: Url,
    method: Method,
    headers: HeaderMap,
    expect_status: Vec<(u16, u16)>,
    expect_body: Option<String>,
    timeout: Duration,
}

impl HttpProbe {
    pub fn new(
        spec: &ProbeSpec,
        shared_http: &Client,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self, String> {
        let mut headers = HeaderMap::new();
        for (k, v) in &spec.headers {
            let name =
                HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("header {k}: {e}"))?;
            let value = HeaderValue::from_str(v).map_err(|e| format!("header {k}: {e}"))?;
            headers.insert(name, value);
        }
        let (client, url) = match (spec.kind, &spec.host) {
            (ProbeKind::Https, Some(host)) => {
                let mut b = base_builder().resolve(host, spec.addr);
                if let Some(tls) = tls {
                    b = b.tls_backend_preconfigured((*tls).clone());
                }
                let client = b.build().map_err(|e| format!("HTTPS client: {e}"))?;
                let url = format!("https://{host}:{}{}", spec.addr.port(), spec.path);
                (client, url)
            }
            (ProbeKind::Https, None) => {
                let mut b = base_builder();
                if let Some(tls) = tls {
                    b = b.tls_backend_preconfigured((*tls).clone());
                }
                let client = b.build().map_err(|e| format!("HTTPS client: {e}"))?;
                (client, format!("https://{}{}", spec.addr, spec.path))
            }
            (_, host) => {
                if let Some(host) = host
                    && !headers.contains_key(HOST)
                {
                    let value = if spec.addr.port() == 80 {
                        host.clone()
                    } else {
                        format!("{host}:{}", spec.addr.port())
                    };
                    headers.insert(
                        HOST,
                        HeaderValue::from_str(&value).map_err(|e| format!("host {host}: {e}"))?,
                    );
                }
                (
                    shared_http.clone(),
                    format!("http://{}{}", spec.addr, spec.path),
                )
            }
        };
        let url = Url::parse(&url).map_err(|e| format!("probe URL {url}: {e}"))?;
        Ok(Self {
            client,
            url,
            method: match spec.method {
                HttpMethod::Get => Method::GET,
                HttpMethod::Head => Method::HEAD,
            },
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

    async fn exchange(&self) -> Reason {
        let request = self
            .client
            .request(self.method.clone(), self.url.clone())
            .headers(self.headers.clone())
            .timeout(self.timeout);
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => return classify(&e, self.timeout),
        };
        let code = response.status().as_u16();
        let Some(needle) = &self.expect_body else {
            return Reason::Status(code);
        };
        if !self.status_ok(code) {
            return Reason::Status(code);
        }
        let mut body: Vec<u8> = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = BODY_LIMIT - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if contains(&body, needle.as_bytes()) {
                        return Reason::Status(code);
                    }
                    if body.len() >= BODY_LIMIT {
                        return Reason::BodyMismatch;
                    }
                }
                Ok(None) => return Reason::BodyMismatch,
                Err(e) => return classify(&e, self.timeout),
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Turns a reqwest error into the reason an operator reads in the log.
fn classify(e: &reqwest::Error, timeout: Duration) -> Reason {
    if e.is_timeout() {
        return Reason::Timeout(timeout);
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
    let detail = innermost(e);
    if e.is_connect() {
        Reason::Connect(detail)
    } else {
        Reason::Protocol(detail)
    }
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

/// The most specific message in an error chain (reqwest's top level says little).
fn innermost(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg = s.to_string();
        source = s.source();
    }
    msg
}
