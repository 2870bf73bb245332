//! Webhook signature verification at the edge (SPEC "Webhooks").
//!
//! [`WebhookLayer`] sits between the body limit and the proxy. A request whose
//! normalised path matches a `[[webhook]]` path (any method) has its body read whole —
//! at most `[server] max_body_bytes`, which the body-limit layer below enforces while
//! the bytes arrive (413 `body_too_large` beyond it) — then verified by
//! [`portcullis_core::webhook::verify`] against the route's active secrets, then its
//! replay id is remembered in the gateway's store (memory, or Redis so it holds across
//! instances). Only then are the very bytes received forwarded upstream. Every other
//! request streams through untouched.
//!
//! Answers of its own, problem+json like every gateway error:
//!
//! - 401 with the [`VerifyError::code`] (`signature_missing`, `signature_malformed`,
//!   `signature_invalid`, `timestamp_outside_tolerance`);
//! - 409 `webhook_replayed` for an id already remembered;
//! - 413 `body_too_large`, 400 `bad_request` (the body could not be read), 408
//!   `body_timeout` (the body took longer than `[server] request_timeout`);
//! - while the store fails: `on_error = "local"` uses the in-process fallback (the Redis
//!   store does that itself), `allow` forwards the verified delivery unremembered,
//!   `deny` answers 503 `store_unavailable` with `Retry-After: 1`.
//!
//! A remembered id is kept for the route's `tolerance`, and for a signed timestamp at
//! least until that timestamp leaves the tolerance window (so a delivery stamped in the
//! future cannot be replayed once the first copy's id expired). When the upstream answers
//! 5xx (or the gateway does: 502, 504) the id is forgotten again, so the sender's retry
//! of a delivery that was never taken is not mistaken for a replay.

use crate::limits::GatewayStore;
use crate::proxy::{ProxyBody, ProxyRequestBody};
use crate::server::RequestBody;
use crate::telemetry::Metrics;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Limited};
use pin_project_lite::pin_project;
use portcullis_core::config::{Config, StoreOnError};
use portcullis_core::problem::Problem;
use portcullis_core::route::{normalize, RoutePattern};
use portcullis_core::webhook::{self, Scheme, Secrets, VerifyError};
use portcullis_store::{Store, StoreKey};
use portcullis_tower::body_limit::{is_length_limit_error, too_large};
use portcullis_tower::problem;
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tower::{Layer, Service};

/// One `[[webhook]]`, with its secrets read from the environment.
pub(crate) struct WebhookRoute {
    pattern: RoutePattern,
    scheme: Scheme,
    secrets: Secrets,
    tolerance: Duration,
}

/// The `[[webhook]]` routes of a configuration, their secrets read from the
/// environment and checked: a variable that is unset or empty, or a secret the scheme
/// cannot use, is an error naming the variable (never the secret).
pub(crate) fn routes(config: &Config) -> Result<Vec<WebhookRoute>, String> {
    config
        .webhook
        .iter()
        .map(|w| {
            let secrets = load_secrets(&w.secret_env, "secret_env", w.scheme)
                .map_err(|e| format!("[[webhook]] path = \"{}\": {e}", w.path.as_str()))?;
            Ok(WebhookRoute {
                pattern: w.path.clone(),
                scheme: w.scheme,
                secrets,
                tolerance: w.tolerance.0,
            })
        })
        .collect()
}

/// The secrets in the environment variable `var` (`what` names where it was given, for
/// the error), checked for `scheme`. Errors name the variable, never a secret.
pub(crate) fn load_secrets(var: &str, what: &str, scheme: Scheme) -> Result<Secrets, String> {
    let value = std::env::var(var).unwrap_or_default();
    if value.trim().is_empty() {
        return Err(format!(
            "the environment variable {var} ({what}) is not set or empty"
        ));
    }
    let secrets = Secrets::parse(&value);
    secrets
        .validate(scheme)
        .map_err(|e| format!("{var} ({what}): {e}"))?;
    Ok(secrets)
}

/// What the layer shares between requests.
pub(crate) struct Webhooks {
    pub(crate) routes: Vec<WebhookRoute>,
    pub(crate) store: GatewayStore,
    pub(crate) on_error: StoreOnError,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) max_body_bytes: u64,
    pub(crate) body_timeout: Duration,
}

/// Verifies requests to `[[webhook]]` paths before the proxy sees them.
#[derive(Clone)]
pub(crate) struct WebhookLayer {
    hooks: Arc<Webhooks>,
}

impl WebhookLayer {
    pub(crate) fn new(hooks: Webhooks) -> Self {
        WebhookLayer {
            hooks: Arc::new(hooks),
        }
    }
}

impl<S> Layer<S> for WebhookLayer {
    type Service = WebhookService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        WebhookService {
            inner,
            hooks: self.hooks.clone(),
        }
    }
}

/// The service of [`WebhookLayer`].
#[derive(Clone)]
pub(crate) struct WebhookService<S> {
    inner: S,
    hooks: Arc<Webhooks>,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

pin_project! {
    /// Response future of [`WebhookService`]: the proxy's own for ordinary requests.
    #[project = WebhookFutureProj]
    pub(crate) enum WebhookFuture<F> {
        Pass { #[pin] inner: F },
        Verify { #[pin] inner: BoxFuture },
    }
}

impl<F> Future for WebhookFuture<F>
where
    F: Future<Output = Result<Response<ProxyBody>, Infallible>>,
{
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            WebhookFutureProj::Pass { inner } => inner.poll(cx),
            WebhookFutureProj::Verify { inner } => inner.poll(cx),
        }
    }
}

impl<S> Service<Request<Limited<RequestBody>>> for WebhookService<S>
where
    S: Service<Request<ProxyRequestBody>, Response = Response<ProxyBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = WebhookFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Limited<RequestBody>>) -> Self::Future {
        let matched = self.hooks.matching(req.uri().path());
        let Some(index) = matched else {
            return WebhookFuture::Pass {
                inner: self.inner.call(req.map(ProxyRequestBody::streaming)),
            };
        };
        // The ready service answers this request; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let hooks = self.hooks.clone();
        WebhookFuture::Verify {
            inner: Box::pin(async move { Ok(hooks.handle(index, req, inner).await) }),
        }
    }
}

impl Webhooks {
    /// The first `[[webhook]]` whose path matches `path`, normalised.
    fn matching(&self, path: &str) -> Option<usize> {
        if self.routes.is_empty() {
            return None;
        }
        let segments = normalize(path);
        self.routes
            .iter()
            .position(|r| r.pattern.matches_segments(&segments))
    }

    async fn handle<S>(
        &self,
        index: usize,
        req: Request<Limited<RequestBody>>,
        mut inner: S,
    ) -> Response<ProxyBody>
    where
        S: Service<Request<ProxyRequestBody>, Response = Response<ProxyBody>, Error = Infallible>,
    {
        let route = &self.routes[index];
        let label = route.pattern.as_str();
        let (parts, body) = req.into_parts();
        let answer = |p: Problem| -> Response<ProxyBody> { problem::for_parts(&parts, p) };

        // A delivery without well-formed signature headers is refused before its body
        // is read, so unauthenticated senders cannot make the gateway hold bodies.
        {
            let headers = &parts.headers;
            let lookup = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
            if let Err(e) = webhook::check_headers(route.scheme, &route.secrets, &lookup) {
                self.metrics.webhook_verification(label, e.code());
                return answer(verify_problem(&e));
            }
        }

        let body = match tokio::time::timeout(self.body_timeout, body.collect()).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) if is_length_limit_error(&*e) => {
                return answer(too_large(self.max_body_bytes))
            }
            Ok(Err(_)) => {
                return answer(Problem::new(
                    400,
                    "bad_request",
                    "the request body could not be read",
                ))
            }
            Err(_) => {
                return answer(Problem::new(
                    408,
                    "body_timeout",
                    format!(
                        "the webhook body did not arrive within {}ms",
                        self.body_timeout.as_millis()
                    ),
                ))
            }
        };

        let now = unix_now();
        let headers = &parts.headers;
        let lookup = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let verified = match webhook::verify(
            route.scheme,
            &route.secrets,
            &lookup,
            &body,
            now,
            route.tolerance,
        ) {
            Ok(v) => v,
            Err(e) => {
                self.metrics.webhook_verification(label, e.code());
                if !e.is_client_error() {
                    tracing::error!(route = label, error = %e, "webhook cannot be verified");
                }
                return answer(verify_problem(&e));
            }
        };

        let key = replay_key(label, &verified.replay_id);
        let ttl = replay_ttl(route.tolerance, verified.timestamp, now);
        let remembered = match self.store.remember(key, ttl).await {
            Ok(true) => true,
            Ok(false) => {
                self.metrics.webhook_verification(label, "replayed");
                return answer(Problem::new(
                    409,
                    "webhook_replayed",
                    format!(
                        "this webhook delivery was already received within the tolerance of {}s",
                        route.tolerance.as_secs()
                    ),
                ));
            }
            Err(e) => match self.on_error {
                StoreOnError::Deny => {
                    self.metrics
                        .webhook_verification(label, "store_unavailable");
                    let mut res = answer(Problem::new(
                        503,
                        "store_unavailable",
                        "the replay store is unavailable; retry shortly",
                    ));
                    res.headers_mut()
                        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
                    return res;
                }
                StoreOnError::Allow | StoreOnError::Local => {
                    tracing::warn!(route = label, error = %e,
                        "replay store failed; forwarding the verified webhook unremembered");
                    false
                }
            },
        };
        self.metrics.webhook_verification(label, "verified");
        tracing::debug!(
            route = label,
            secret_index = verified.secret_index,
            "webhook verified"
        );

        let req = Request::from_parts(parts, ProxyRequestBody::buffered(body));
        let res = match inner.call(req).await {
            Ok(res) => res,
            Err(never) => match never {},
        };
        if remembered && res.status().is_server_error() {
            if let Err(e) = self.store.forget(key).await {
                tracing::warn!(route = label, error = %e, "could not forget a webhook id");
            }
        }
        res
    }
}

/// The problem for a delivery that did not verify: 401 with the error's code (500 for a
/// gateway without a usable secret, which startup checks prevent).
fn verify_problem(e: &VerifyError) -> Problem {
    let detail = match e {
        // The value is the sender's own header (it may hold a valid signature next to
        // the broken part): name the header and what is wrong, do not echo it.
        VerifyError::MalformedHeader { header, reason, .. } => {
            format!("malformed `{header}` header ({reason})")
        }
        VerifyError::NoSecret => "the webhook route has no usable secret".into(),
        other => other.to_string(),
    };
    Problem::new(e.status(), e.code(), detail)
}

/// The store key of a replay id: 128 bits of SHA-256 over the route and the id, so
/// ids of different webhook routes never collide and raw ids never reach the store.
fn replay_key(route: &str, replay_id: &str) -> StoreKey {
    let mut h = Sha256::new();
    h.update(b"portcullis webhook replay\0");
    h.update(route.as_bytes());
    h.update(b"\0");
    h.update(replay_id.as_bytes());
    let digest = h.finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    StoreKey(key)
}

/// How long an id is remembered: `tolerance`, and for a signed timestamp at least until
/// it falls outside the tolerance (plus a second for rounding); never under a second.
fn replay_ttl(tolerance: Duration, timestamp: Option<i64>, now: i64) -> Duration {
    let mut ttl = tolerance.max(Duration::from_secs(1));
    if let Some(ts) = timestamp {
        let tol = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
        let until = ts.saturating_add(tol).saturating_add(1).saturating_sub(now);
        if let Ok(secs) = u64::try_from(until) {
            ttl = ttl.max(Duration::from_secs(secs));
        }
    }
    ttl
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_covers_the_tolerance_window_of_the_timestamp() {
        let tol = Duration::from_secs(300);
        assert_eq!(replay_ttl(tol, None, 1000), tol);
        assert_eq!(replay_ttl(tol, Some(1000), 1000), Duration::from_secs(301));
        // Stamped 300 s in the future: valid until ts + 300, i.e. 600 s from now.
        assert_eq!(replay_ttl(tol, Some(1300), 1000), Duration::from_secs(601));
        assert_eq!(replay_ttl(Duration::ZERO, None, 0), Duration::from_secs(1));
        assert_eq!(replay_ttl(tol, Some(i64::MIN), i64::MAX), tol);
    }

    #[test]
    fn replay_keys_differ_by_route_and_id() {
        let a = replay_key("/a", "msg_1");
        assert_eq!(a, replay_key("/a", "msg_1"));
        assert_ne!(a, replay_key("/b", "msg_1"));
        assert_ne!(a, replay_key("/a", "msg_2"));
    }
}
