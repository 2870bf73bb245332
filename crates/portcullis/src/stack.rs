//! The one place the request path is assembled from tower layers.
//!
//! Order matters: the layer listed first sees the request first. Layers 1 to 5 run as
//! one service, `FrontLayer`: the same layers' code, without the cost of passing the
//! request and the response through five services.
//!
//! The layers that add response fields are built `with_head_lines()`: our HTTP/1.1
//! connection writes those lines after the response's map fields, and the hyper path
//! (`server::serve_connection`) puts them in the map before hyper writes it.
//!
//! 1. `ClientIdentityLayer` — every later layer (and the log) needs the client IP and
//!    whether the request came over HTTPS.
//! 2. `RequestIdLayer` — the id must exist before anything can fail, so every problem
//!    body and log line carries it.
//! 3. `ObserveLayer` — sees the final status and the full body, gateway errors included.
//! 4. `LatencyLayer` — times everything below it.
//! 5. `SecurityHeadersLayer` — adds headers to upstream responses and gateway errors alike.
//! 6. `RateLimitLayer` — 429 before the request costs anything else; matches the route.
//! 7. `LoadShedLayer` — above `[server] max_inflight`, 503 at once instead of queueing.
//! 8. `BodyLimitLayer` — refuses oversize bodies before the upstream is contacted.
//! 9. `WebhookLayer` — on `[[webhook]]` paths only: reads the body (capped by the
//!    layer above), verifies its signature and replay id, 401 / 409 before the
//!    upstream sees it; every other request streams through.
//! 10. `Proxy` — forwards.

use crate::health::UpstreamHealth;
use crate::limits::Limiter;
use crate::proxy::{Proxy, ProxyBody};
use crate::server::RequestBody;
use crate::telemetry::Telemetry;
use crate::webhook::{WebhookLayer, Webhooks};
use portcullis_core::config::Config;
use portcullis_core::headers::SecurityHeaders;
use portcullis_core::identity::TrustedProxies;
use portcullis_tower::load_shed::SlotBody;
use portcullis_tower::observe::ObservedBody;
use portcullis_tower::{
    BodyLimitLayer, ClientIdentityLayer, FrontLayer, LatencyLayer, LoadShedLayer, ObserveLayer,
    RateLimitLayer, RequestIdLayer, SecurityHeadersLayer,
};
use std::convert::Infallible;
use std::sync::Arc;
use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;

/// The gateway's request service, type-erased once so the rest of the app can name it.
pub(crate) type Stack = BoxCloneSyncService<
    http::Request<RequestBody>,
    http::Response<ObservedBody<SlotBody<ProxyBody>, Arc<Telemetry>>>,
    Infallible,
>;

/// Headers the gateway writes on responses it builds outside the stack (rejected heads).
pub(crate) struct Synthetic {
    pub(crate) expose_request_id: bool,
    pub(crate) latency: bool,
    pub(crate) security: SecurityHeaders,
}

/// Everything a connection needs.
#[derive(Clone)]
pub(crate) struct GatewayService {
    pub(crate) stack: Stack,
    /// This thread's own `Arc` around the shared telemetry: the per-request clone of the
    /// hook then touches no count another thread writes (a `Telemetry` clone is four
    /// shared ones).
    pub(crate) hook: Arc<Telemetry>,
    pub(crate) synthetic: Arc<Synthetic>,
}

/// The in-flight limits of `[server] max_inflight` and each route's `max_inflight`. Built
/// once and cloned into every serving thread's stack: clones share their counters, so
/// the limits hold for the whole process.
pub(crate) fn load_shed(config: &Config) -> LoadShedLayer {
    LoadShedLayer::new(config.server.max_inflight).with_routes(
        config
            .route
            .iter()
            .map(|r| (Arc::from(r.path.get_ref().as_str()), r.max_inflight)),
    )
}

/// One serving thread's stack. Everything with process-wide state (telemetry, upstream
/// health, the limiter and its store, `load_shed`) is shared; the upstream connection
/// pool in the proxy is the stack's own.
pub(crate) fn build(
    config: &Config,
    telemetry: Telemetry,
    health: Arc<UpstreamHealth>,
    limiter: Arc<Limiter>,
    load_shed: LoadShedLayer,
) -> Result<GatewayService, String> {
    let server = &config.server;
    let security = SecurityHeaders::from_config(&config.headers.security);
    let security_layer = SecurityHeadersLayer::new(&security)
        .map_err(|e| format!("invalid value in [headers.security]: {e}"))?;
    let proxy = Proxy::new(
        &server.upstream.authority,
        server.request_timeout.0,
        server.max_body_bytes,
        health,
    )?;
    let webhooks = Webhooks {
        routes: crate::webhook::routes(config)?,
        store: limiter.store.clone(),
        on_error: config.store.on_error,
        metrics: telemetry.metrics.clone(),
        max_body_bytes: server.max_body_bytes,
        body_timeout: server.request_timeout.0,
    };
    let trusted = TrustedProxies::new(server.trusted_proxies.iter().map(|c| c.0).collect());
    let latency = config.headers.latency;
    let hook = Arc::new(telemetry);
    let stack = ServiceBuilder::new()
        .layer(FrontLayer::new(
            ClientIdentityLayer::new(trusted),
            RequestIdLayer::new(config.headers.accept_request_id, config.headers.request_id)
                .with_head_lines(),
            ObserveLayer::new(hook.clone()),
            LatencyLayer::new(latency).with_head_lines(),
            security_layer.with_head_lines(),
        ))
        .layer(RateLimitLayer::new(limiter).with_head_lines())
        .layer(load_shed)
        .layer(BodyLimitLayer::new(server.max_body_bytes))
        .layer(WebhookLayer::new(webhooks))
        .service(proxy);
    Ok(GatewayService {
        stack: BoxCloneSyncService::new(stack),
        hook,
        synthetic: Arc::new(Synthetic {
            expose_request_id: config.headers.request_id,
            latency,
            security,
        }),
    })
}
