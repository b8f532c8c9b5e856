//! The admin HTTP endpoint: `/metrics`, `/healthz`, `/readyz`, `/api/v1/status` and
//! `/api/v1/explain`. Read-only, served on loopback unless configured otherwise.

mod conns;
mod explain;
mod fleet;
mod status;

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use arc_swap::ArcSwap;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Body, Bytes, Frame, Incoming, SizeHint},
    header::{CONTENT_TYPE, HeaderValue},
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

pub use status::{DEFAULT_LIMIT as STATUS_DEFAULT_LIMIT, MAX_LIMIT as STATUS_MAX_LIMIT};

use crate::{
    health::HealthShared, metrics::Metrics, model::AdminLimits, reload::Reloader,
    snapshot::Snapshot,
};

/// What the endpoints read.
pub struct AdminState {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub health: Arc<HealthShared>,
    pub metrics: Arc<Metrics>,
    pub ready: tokio::sync::watch::Receiver<bool>,
    pub reloader: Arc<Reloader>,
    /// True once a graceful stop began: `/readyz` answers 503 while DNS still answers.
    pub stopping: Arc<std::sync::atomic::AtomicBool>,
    /// `/api/v1/status`'s app order, cached per model.
    pub status_order: status::Order,
    /// Status pages built or being written at once (see [`LARGE_IN_FLIGHT`]).
    pub status_pages: Arc<tokio::sync::Semaphore>,
    /// `/metrics` texts built or being written at once (see [`LARGE_IN_FLIGHT`]).
    pub metrics_pages: Arc<tokio::sync::Semaphore>,
    /// `[fleet]`, for `/api/v1/fleet` (None: this instance runs alone).
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
}

/// Large responses of one path (`/api/v1/status` pages; `/metrics`, several MB with
/// thousands of apps) held at once, from building to the last chunk taken by hyper: a
/// client that does not read would otherwise keep one per connection. Over it the request
/// gets a 503 at once (`gtmd_admin_shed_total{path}`). Each path has its own budget, so
/// status clients cannot shut Prometheus out, and a response its client stops taking
/// ends within `admin.header_timeout` (write timeout), giving its place back.
pub const LARGE_IN_FLIGHT: usize = 4;

impl AdminState {
    pub fn new(
        snapshot: Arc<ArcSwap<Snapshot>>,
        health: Arc<HealthShared>,
        metrics: Arc<Metrics>,
        ready: tokio::sync::watch::Receiver<bool>,
        reloader: Arc<Reloader>,
    ) -> Self {
        Self {
            snapshot,
            health,
            metrics,
            ready,
            reloader,
            stopping: Default::default(),
            status_order: Default::default(),
            status_pages: Arc::new(tokio::sync::Semaphore::new(LARGE_IN_FLIGHT)),
            metrics_pages: Arc::new(tokio::sync::Semaphore::new(LARGE_IN_FLIGHT)),
            fleet: None,
        }
    }
}

/// Serves the admin endpoint until `cancel`, within `limits` (see [`conns`]).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    limits: AdminLimits,
    cancel: CancellationToken,
) {
    let slots = conns::Slots::new(limits.max_connections, state.metrics.clone());
    let mut backoff = crate::accept::Backoff::new();
    let accept_errors = state.metrics.accept_errors.with_label_values(&["admin"]);
    loop {
        let Some((stream, peer)) =
            crate::accept::next(&listener, &mut backoff, &accept_errors, "admin", &cancel).await
        else {
            return;
        };
        let Ok(slot) = slots.admit() else {
            debug!(%peer, "admin connection limit reached, every connection busy: closing the new one");
            state.metrics.admin_rejected.inc();
            continue;
        };
        // A fixed send buffer: on its own the kernel grows it to 4 MiB for a client that
        // does not read (on loopback, where segments are 64 KiB), kernel memory counted
        // against the pod and a response that never looks stalled.
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER);
        tokio::spawn(connection(
            stream,
            peer,
            slot,
            state.clone(),
            limits,
            cancel.clone(),
        ));
        // At the cap, let the new connection read its request (a real client's is usually
        // waiting in the socket already) before the next accept: under a storm, a burst
        // of accepts (tokio lets a task run 128 operations before it must yield) would
        // otherwise evict it as the oldest idle connection before it was ever read.
        if state.metrics.admin_connections.get() >= limits.max_connections as i64 {
            tokio::task::yield_now().await;
        }
    }
}

/// Serves one connection until the client closes it, it breaks a limit, a newer
/// connection takes its place, or `cancel`.
async fn connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    slot: conns::Slot,
    state: Arc<AdminState>,
    limits: AdminLimits,
    cancel: CancellationToken,
) {
    let activity = slot.activity();
    let timeouts = &state.metrics.admin_timeouts;
    let (header_timeouts, lifetime_ends, write_timeouts) = (
        timeouts.with_label_values(&["header"]),
        timeouts.with_label_values(&["lifetime"]),
        timeouts.with_label_values(&["write"]),
    );
    let busy_activity = activity.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        let busy = conns::Busy::new(busy_activity.clone());
        async move {
            let path = req.uri().path();
            let budget = match path {
                "/api/v1/status" => Some(&state.status_pages),
                "/metrics" => Some(&state.metrics_pages),
                _ => None,
            };
            let mut page = None;
            if let Some(budget) = budget {
                match budget.clone().try_acquire_owned() {
                    Ok(permit) => page = Some(permit),
                    Err(_) => {
                        state.metrics.admin_shed.with_label_values(&[path]).inc();
                        let shed = respond(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "text/plain",
                            format!(
                                "busy: {LARGE_IN_FLIGHT} responses of {path} are in flight; retry\n"
                            ),
                        );
                        return Ok(shed.map(|body| Tracked::new(body, busy, None)));
                    }
                }
            }
            Ok::<_, Infallible>(route(&state, req).map(|body| Tracked::new(body, busy, page)))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // hyper starts this timer when it waits for a request head: at the start of the
    // connection and again when a response is done, so it is the idle keep-alive timeout
    // too.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(CONN_BUFFER);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let end = |r: hyper::Result<()>| {
        if let Err(e) = r {
            if e.is_timeout() {
                header_timeouts.inc();
            }
            debug!(%peer, error = %e, "admin connection ended with an error");
        }
    };
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = slot.evicted.cancelled() => return,
        r = conn.as_mut() => return end(r),
        _ = stalled(&activity, limits.header_timeout) => {
            write_timeouts.inc();
            debug!(%peer, "admin connection closed: its client took nothing of the response in time");
            return;
        }
        _ = tokio::time::sleep(limits.connection_lifetime) => {}
    }
    // Past its lifetime: no new request; the one in progress gets `header_timeout` more.
    lifetime_ends.inc();
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = slot.evicted.cancelled() => {}
        r = conn.as_mut() => end(r),
        _ = tokio::time::sleep(limits.header_timeout) => {
            debug!(%peer, "admin connection closed at the end of its lifetime");
        }
    }
}

/// Completes once a request in progress has had its response not taken from for `limit`
/// (checked every quarter of it): a client that asks and never reads.
async fn stalled(activity: &conns::Activity, limit: std::time::Duration) {
    let every = (limit / 4).max(std::time::Duration::from_millis(25));
    loop {
        tokio::time::sleep(every).await;
        if activity.stalled_for().is_some_and(|d| d >= limit) {
            return;
        }
    }
}

/// A response body, handed to hyper in copied chunks of [`CHUNK`] bytes, that keeps its
/// connection marked busy (not evictable while the client takes chunks), and a large
/// response its place among [`LARGE_IN_FLIGHT`], until hyper has taken its last chunk and
/// dropped it.
///
/// Copies, not slices: a slice would keep the whole page allocated until written, so a
/// client that does not read could hold a page after giving its place back. With copies,
/// what outlives the body is at most hyper's buffer ([`CONN_BUFFER`]).
struct Tracked {
    data: Bytes,
    offset: usize,
    _busy: conns::Busy,
    _page: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// The kernel's send buffer per admin connection.
const SEND_BUFFER: usize = 64 * 1024;

/// Bytes per body chunk.
const CHUNK: usize = 16 * 1024;
/// hyper's buffer per connection (reads and writes): admin requests have no body, and a
/// response is pulled from [`Tracked`] only as this drains.
const CONN_BUFFER: usize = 64 * 1024;

impl Tracked {
    fn new(
        data: Bytes,
        busy: conns::Busy,
        page: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Self {
        Self {
            data,
            offset: 0,
            _busy: busy,
            _page: page,
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let start = self.offset;
        if start >= self.data.len() {
            return Poll::Ready(None);
        }
        let end = (start + CHUNK).min(self.data.len());
        self.offset = end;
        self._busy.moved();
        let chunk = Bytes::copy_from_slice(&self.data[start..end]);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.offset >= self.data.len()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact((self.data.len() - self.offset) as u64)
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Bytes> {
    let mut r = Response::new(Bytes::from(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Bytes> {
    let mut body = serde_json::to_string_pretty(value).unwrap_or_default();
    body.push('\n');
    respond(status, "application/json", body)
}

fn route(state: &AdminState, req: Request<Incoming>) -> Response<Bytes> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET: the admin endpoint is read-only\n".into(),
        );
    }
    let query = req.uri().query().unwrap_or("");
    match req.uri().path() {
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            state.metrics.render(),
        ),
        "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            if state.stopping.load(std::sync::atomic::Ordering::Relaxed) {
                respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "not ready: shutting down (DNS still answers during server.shutdown_grace)\n"
                        .into(),
                )
            } else if *state.ready.borrow() {
                respond(StatusCode::OK, "text/plain", "ready\n".into())
            } else {
                respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "not ready: the first probe round is not complete\n".into(),
                )
            }
        }
        "/api/v1/fleet" => json(StatusCode::OK, &fleet::fleet_json(state)),
        "/api/v1/status" => match status::StatusQuery::parse(query) {
            Ok(q) => respond(
                StatusCode::OK,
                "application/json",
                status::status(state, &q),
            ),
            Err(e) => json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({
                    "error": format!("{}: {}", e.parameter, e.error),
                    "parameter": e.parameter,
                    "usage": "/api/v1/status[?app=NAME][&cluster=NAME][&state=up|down|drained][&limit=1..1000][&after=NEXT]",
                }),
            ),
        },
        "/api/v1/explain" => match explain::explain(state, query) {
            Ok(v) => json(StatusCode::OK, &v),
            Err(e) => json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({ "error": e, "usage": "/api/v1/explain?name=shop.apps.example.com&client=203.0.113.7[&ecs=198.51.100.0/24][&type=AAAA]" }),
            ),
        },
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz, /readyz, /api/v1/status, /api/v1/explain\n".into(),
        ),
    }
}

/// Seconds since the Unix epoch, for JSON.
fn unix(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_holds_its_page_place_and_busy_mark_until_its_last_chunk_is_taken() {
        let pages = Arc::new(tokio::sync::Semaphore::new(1));
        let activity = conns::Activity::new(std::time::Instant::now());
        let data: Bytes = (0..CHUNK * 3 + 5)
            .map(|i| i as u8)
            .collect::<Vec<u8>>()
            .into();
        let mut body = Tracked::new(
            data.clone(),
            conns::Busy::new(activity.clone()),
            Some(pages.clone().try_acquire_owned().unwrap()),
        );
        assert_eq!(body.size_hint().exact(), Some(data.len() as u64));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut out = Vec::new();
        while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) {
            let chunk = frame.into_data().unwrap();
            assert!(chunk.len() <= CHUNK);
            out.extend_from_slice(&chunk);
            // Taken and not yet dropped: the place is still held.
            assert_eq!(pages.available_permits(), 0);
            assert!(activity.stalled_for().is_some(), "busy");
        }
        assert_eq!(out, data);
        assert!(body.is_end_stream());
        drop(body);
        assert_eq!(pages.available_permits(), 1);
        assert!(activity.stalled_for().is_none(), "idle");
    }
}
