//! The admin listener (SPEC "Admin listener"): health, readiness, metrics, and the
//! bearer-protected `/admin/*` API for inspecting and resetting limits.

use crate::health::UpstreamHealth;
use crate::limits::Limiter;
use crate::telemetry::Telemetry;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use portcullis_core::config::StoreOnError;
use portcullis_core::identity::{client_key, identify, ForwardingHeaders, TrustedProxies};
use portcullis_core::limit::{Algorithm, Decision};
use portcullis_core::problem::Problem;
use portcullis_store::{Store, StoreKey};
use portcullis_tower::rate_limit::{constant_time_eq, Outcome};
use portcullis_tower::{ClientInfo, RequestId};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub(crate) struct AdminState {
    pub(crate) telemetry: Telemetry,
    pub(crate) health: Arc<UpstreamHealth>,
    pub(crate) limiter: Arc<Limiter>,
    pub(crate) trusted: TrustedProxies,
    pub(crate) admin_token: Option<String>,
    pub(crate) token_env: String,
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

type AdminResponse = Response<Full<Bytes>>;

fn json_response(status: StatusCode, body: Value) -> AdminResponse {
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

fn problem(req: &Request<Incoming>, p: Problem) -> AdminResponse {
    let id = RequestId::new_uuid();
    portcullis_tower::problem::response(
        p.with_instance(req.uri().path())
            .with_request_id(id.as_str()),
    )
}

async fn route(state: &AdminState, req: Request<Incoming>) -> AdminResponse {
    let path = req.uri().path().to_owned();
    if path.starts_with("/admin/") {
        if let Err(why) = authorize(state, &req) {
            let mut res = problem(&req, Problem::new(401, "unauthorized", why));
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return res;
        }
        return match (req.method().clone(), path.as_str()) {
            (Method::GET, "/admin/limits") => limits(state, &req, false).await,
            (Method::DELETE, "/admin/limits") => limits(state, &req, true).await,
            (Method::GET, "/admin/explain") => explain(state, &req).await,
            (Method::GET, "/admin/slo") => json_response(
                StatusCode::OK,
                json!({ "slos": state.telemetry.slo_snapshots() }),
            ),
            (_, "/admin/limits" | "/admin/explain" | "/admin/slo") => problem(
                &req,
                Problem::new(
                    405,
                    "method_not_allowed",
                    "use GET (or DELETE for /admin/limits)",
                ),
            ),
            _ => problem(
                &req,
                Problem::new(404, "not_found", format!("no admin endpoint at {path}")),
            ),
        };
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return problem(
            &req,
            Problem::new(405, "method_not_allowed", "the health endpoints answer GET"),
        );
    }
    match path.as_str() {
        "/healthz" => json_response(StatusCode::OK, json!({"status": "ok"})),
        "/readyz" => readyz(state).await,
        "/health" => health(state),
        "/metrics" => {
            let mut res = Response::new(Full::new(Bytes::from(state.telemetry.encode_metrics())));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            res
        }
        _ => problem(
            &req,
            Problem::new(404, "not_found", format!("no admin endpoint at {path}")),
        ),
    }
}

/// Bearer token check, constant-time (digests are compared, so lengths do not leak).
fn authorize(state: &AdminState, req: &Request<Incoming>) -> Result<(), String> {
    let Some(expected) = &state.admin_token else {
        return Err(format!(
            "the admin API is disabled: set {} to a bearer token",
            state.token_env
        ));
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or_else(|| "missing bearer token".to_owned())?;
    let a: [u8; 32] = Sha256::digest(expected.as_bytes()).into();
    let b: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    if constant_time_eq(&a, &b) {
        Ok(())
    } else {
        Err("wrong bearer token".into())
    }
}

async fn readyz(state: &AdminState) -> AdminResponse {
    let reachable = if state.health.probed() {
        state.health.is_reachable()
    } else {
        state.health.probe().await
    };
    let mut reasons = Vec::new();
    if !reachable {
        reasons.push(format!("upstream {} is unreachable", state.upstream_url));
    }
    // With `local` or `allow` the gateway still serves while the store is down.
    if let Some((h, StoreOnError::Deny)) = state.limiter.store.redis_health() {
        if h.down {
            reasons.push("store unreachable".to_owned());
        }
    }
    if reasons.is_empty() {
        json_response(StatusCode::OK, json!({"status": "ready"}))
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "unready", "reasons": reasons}),
        )
    }
}

fn health(state: &AdminState) -> AdminResponse {
    let metrics = &state.telemetry.metrics;
    let mut policies = Map::new();
    for p in &state.limiter.policies.policies {
        let n = |o| metrics.decisions_of(&p.name, o);
        policies.insert(
            p.name.to_string(),
            json!({
                "allowed": n(Outcome::Allowed),
                "limited": n(Outcome::Limited),
                "shadow_limited": n(Outcome::ShadowLimited),
                "bypassed": n(Outcome::Bypassed),
            }),
        );
    }
    let store = &state.limiter.store;
    let (reachable, down, fallback) = match store.redis_health() {
        None => (true, false, false),
        Some((h, on_error)) => (
            h.reachable,
            h.down,
            h.down && on_error == StoreOnError::Local,
        ),
    };
    json_response(
        StatusCode::OK,
        json!({
            "status": if down { "degraded" } else { "ok" },
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": state.started.elapsed().as_secs(),
            "store": {
                "kind": store.kind(),
                "reachable": reachable,
                "fallback_active": fallback,
                "errors": metrics.store_errors(),
                "keys": store.key_count(),
            },
            "upstream": {"url": state.upstream_url, "reachable": state.health.is_reachable(), "circuit": "closed"},
            "policies": policies,
        }),
    )
}

/// Query parameters, percent-decoded (`%7C` is `|` in `ws-42|203.0.113.7`).
fn query_param(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Window length in whole seconds (rounded up), as in `RateLimit-Policy`'s `w`.
fn window_secs(w: Duration) -> u64 {
    w.as_nanos().div_ceil(1_000_000_000) as u64
}

fn algorithm_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::Gcra => "gcra",
        Algorithm::SlidingWindow => "sliding_window",
        Algorithm::FixedWindow => "fixed_window",
    }
}

fn bucket_json(at: u64, decision: &Decision) -> (u64, bool) {
    let now = Duration::from_nanos(at) + decision.reset_after;
    (
        now.as_nanos().div_ceil(1_000_000_000) as u64,
        decision.remaining == 0,
    )
}

async fn limits(state: &AdminState, req: &Request<Incoming>, reset: bool) -> AdminResponse {
    let (Some(policy_name), Some(key)) = (query_param(req, "policy"), query_param(req, "key"))
    else {
        return problem(
            req,
            Problem::new(
                400,
                "bad_request",
                "both policy and key query parameters are required",
            ),
        );
    };
    let limiter = &state.limiter;
    let Some(index) = limiter
        .policies
        .policies
        .iter()
        .position(|p| *p.name == *policy_name)
    else {
        return problem(
            req,
            Problem::new(
                404,
                "unknown_policy",
                format!("no policy named {policy_name:?}"),
            ),
        );
    };
    let policy = &limiter.policies.policies[index];
    if reset {
        let _ = limiter.store.reset(StoreKey(policy.store_key(&key))).await;
    }
    match limiter.peek(index, &key).await {
        Ok((check, decision, at)) => {
            let (reset_at, limited) = bucket_json(at, &decision);
            json_response(
                StatusCode::OK,
                json!({
                    "policy": &*policy.name,
                    "key": key,
                    "store_key": check.key.to_hex(),
                    "algorithm": algorithm_name(policy.algorithm),
                    "limit": check.quota.limit,
                    "burst": check.quota.burst,
                    "window_s": window_secs(check.quota.window),
                    "remaining": decision.remaining,
                    "reset": reset_at,
                    "limited": limited,
                }),
            )
        }
        Err(e) => problem(req, Problem::new(503, "store_unavailable", e.to_string())),
    }
}

async fn explain(state: &AdminState, req: &Request<Incoming>) -> AdminResponse {
    let method = query_param(req, "method").unwrap_or_else(|| "GET".into());
    let path = query_param(req, "path").unwrap_or_else(|| "/".into());
    let Some(peer) = query_param(req, "peer") else {
        return problem(
            req,
            Problem::new(
                400,
                "bad_request",
                "the peer query parameter (an IP address) is required",
            ),
        );
    };
    let Ok(peer_ip) = peer.trim_matches(['[', ']']).parse::<IpAddr>() else {
        return problem(
            req,
            Problem::new(
                400,
                "bad_request",
                format!("peer {peer:?} is not an IP address"),
            ),
        );
    };
    let Ok(method) = Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
        return problem(req, Problem::new(400, "bad_request", "invalid method"));
    };
    let Ok(uri) = path.parse::<http::Uri>() else {
        return problem(req, Problem::new(400, "bad_request", "invalid path"));
    };
    // The simulated request carries the admin request's headers, except the admin's own
    // credentials.
    let mut sim = Request::builder()
        .method(method)
        .uri(uri)
        .body(())
        .unwrap_or_default();
    for (name, value) in req.headers() {
        if name != header::AUTHORIZATION {
            sim.headers_mut().append(name.clone(), value.clone());
        }
    }
    let values = |name: &str| -> Vec<&str> {
        sim.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    };
    let (xff, fwd, xfp) = (
        values("x-forwarded-for"),
        values("forwarded"),
        values("x-forwarded-proto"),
    );
    let identity = identify(
        peer_ip,
        false,
        &state.trusted,
        ForwardingHeaders {
            x_forwarded_for: &xff,
            forwarded: &fwd,
            x_forwarded_proto: &xfp,
        },
    );
    let limiter = &state.limiter;
    let mut sim = sim;
    let trusted_peer = state
        .trusted
        .contains(portcullis_core::identity::canonical_ip(peer_ip));
    sim.extensions_mut().insert(ClientInfo {
        peer: SocketAddr::new(peer_ip, 0),
        identity,
        trusted_peer,
    });
    let (route, bypassed, keyed) = limiter.keys_of(&sim);
    let mut policies = Vec::new();
    for k in keyed {
        let p = &limiter.policies.policies[k.index];
        let bucket = limiter.peek(k.index, &k.key).await.ok();
        policies.push(json!({
            "name": &*p.name,
            "mode": if p.enforces() { "enforce" } else { "shadow" },
            "algorithm": algorithm_name(p.algorithm),
            "limit": p.quota_for(&k.key).limit,
            "burst": p.quota_for(&k.key).burst,
            "window_s": window_secs(p.quota.window),
            "key": k.key,
            "store_key": k.store_key.to_hex(),
            "remaining": bucket.map(|(_, d, _)| d.remaining),
            "limited": bucket.map(|(_, d, _)| d.remaining == 0),
        }));
    }
    json_response(
        StatusCode::OK,
        json!({
            "client": {
                "peer": peer_ip.to_string(),
                "peer_trusted": trusted_peer,
                "ip": identity.ip.to_string(),
                "key": client_key(identity.ip, limiter.ipv6_prefix),
                "https": identity.https,
            },
            "route": route.as_deref(),
            "bypassed": bypassed,
            "policies": policies,
        }),
    )
}
