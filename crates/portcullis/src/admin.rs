//! The admin listener: `/healthz`, `/readyz`, `/health`, `/metrics` (SPEC "Admin listener").

use crate::health::UpstreamHealth;
use crate::telemetry::Telemetry;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use portcullis_core::problem::Problem;
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub(crate) struct AdminState {
    pub(crate) telemetry: Telemetry,
    pub(crate) health: Arc<UpstreamHealth>,
    pub(crate) upstream_url: String,
    pub(crate) started: Instant,
}

pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, req).await) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body.to_string())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

async fn route(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return crate_problem(
            Problem::new(405, "method_not_allowed", "the admin endpoints answer GET"),
            &req,
        );
    }
    match req.uri().path() {
        "/healthz" => json_response(StatusCode::OK, json!({"status": "ok"})),
        "/readyz" => {
            let reachable = if state.health.probed() {
                state.health.is_reachable()
            } else {
                state.health.probe().await
            };
            if reachable {
                json_response(StatusCode::OK, json!({"status": "ready"}))
            } else {
                json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"status": "unready", "reasons": [format!("upstream {} is unreachable", state.upstream_url)]}),
                )
            }
        }
        "/health" => {
            let reachable = state.health.is_reachable();
            json_response(
                StatusCode::OK,
                json!({
                    "status": "ok",
                    "version": env!("CARGO_PKG_VERSION"),
                    "uptime_s": state.started.elapsed().as_secs(),
                    "upstream": {"url": state.upstream_url, "reachable": reachable, "circuit": "closed"},
                }),
            )
        }
        "/metrics" => {
            let mut res = Response::new(Full::new(Bytes::from(state.telemetry.metrics.encode())));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            res
        }
        path => crate_problem(
            Problem::new(404, "not_found", format!("no admin endpoint at {path}")),
            &req,
        ),
    }
}

fn crate_problem(p: Problem, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let id = portcullis_tower::RequestId::new_uuid();
    portcullis_tower::problem::response(
        p.with_instance(req.uri().path())
            .with_request_id(id.as_str()),
    )
}
