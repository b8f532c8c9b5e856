//! The admin HTTP endpoint: `/metrics`, `/healthz`, `/readyz`, `/api/v1/status` and
//! `/api/v1/explain`. Read-only, served on loopback unless configured otherwise.

mod explain;
mod status;

use std::{convert::Infallible, sync::Arc};

use arc_swap::ArcSwap;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{CONTENT_TYPE, HeaderValue},
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::{health::HealthShared, metrics::Metrics, reload::Reloader, snapshot::Snapshot};

/// What the endpoints read.
pub struct AdminState {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub health: Arc<HealthShared>,
    pub metrics: Arc<Metrics>,
    pub ready: tokio::sync::watch::Receiver<bool>,
    pub reloader: Arc<Reloader>,
}

/// Serves the admin endpoint until `cancel`.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, cancel: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    debug!(error = %e, "admin accept failed");
                    continue;
                }
            },
        };
        let state = state.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = cancel.cancelled() => {}
                r = conn => if let Err(e) = r {
                    debug!(%peer, error = %e, "admin connection ended with an error");
                },
            }
        });
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_string_pretty(value).unwrap_or_default();
    body.push('\n');
    respond(status, "application/json", body)
}

fn route(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
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
            if *state.ready.borrow() {
                respond(StatusCode::OK, "text/plain", "ready\n".into())
            } else {
                respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "not ready: the first probe round is not complete\n".into(),
                )
            }
        }
        "/api/v1/status" => json(StatusCode::OK, &status::status(state)),
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
