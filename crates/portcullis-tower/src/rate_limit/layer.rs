use super::{DecisionHook, RateLimiter, Verdict};
use crate::observe::MatchedRoute;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use portcullis_core::problem::Problem;
use portcullis_store::Store;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// What the limiter decided, for the access log (response extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSummary {
    /// The tightest enforcing policy, if any applied.
    pub policy: Option<Arc<str>>,
    /// `allowed`, `limited`, `bypassed`, or `None` when no policy applied.
    pub decision: Option<&'static str>,
}

/// Applies a [`RateLimiter`] to every request.
pub struct RateLimitLayer<St, H> {
    limiter: Arc<RateLimiter<St, H>>,
}

impl<St, H> Clone for RateLimitLayer<St, H> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            limiter: self.limiter.clone(),
        }
    }
}

impl<St, H> RateLimitLayer<St, H> {
    /// Limits with `limiter` (shared with the admin API, which reads and resets buckets).
    pub fn new(limiter: Arc<RateLimiter<St, H>>) -> Self {
        RateLimitLayer { limiter }
    }
}

impl<S, St, H> Layer<S> for RateLimitLayer<St, H> {
    type Service = RateLimit<S, St, H>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

/// The service of [`RateLimitLayer`].
pub struct RateLimit<S, St, H> {
    inner: S,
    limiter: Arc<RateLimiter<St, H>>,
}

impl<S: Clone, St, H> Clone for RateLimit<S, St, H> {
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
        }
    }
}

fn add_headers<B>(res: &mut Response<B>, headers: Vec<(&'static str, String)>) {
    static NAMES: [HeaderName; 5] = [
        HeaderName::from_static("x-ratelimit-limit"),
        HeaderName::from_static("x-ratelimit-remaining"),
        HeaderName::from_static("x-ratelimit-reset"),
        HeaderName::from_static("ratelimit-policy"),
        HeaderName::from_static("ratelimit"),
    ];
    for (name, value) in headers {
        // A prebuilt name (parsing one costs more than the insert), and the `String`'s
        // own buffer as the value, no copy.
        let name = NAMES
            .iter()
            .find(|n| n.as_str() == name)
            .cloned()
            .unwrap_or_else(|| HeaderName::from_static(name));
        if let Ok(v) = HeaderValue::try_from(value) {
            res.headers_mut().insert(name, v);
        }
    }
}

impl<S, St, H, B, RB> Service<Request<B>> for RateLimit<S, St, H>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    B: Send + 'static,
    RB: From<Bytes> + Send + 'static,
    St: Store,
    H: DecisionHook,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RB>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The clone is ready (tower's "take the ready service" idiom).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limiter = self.limiter.clone();
        let plan = limiter.plan(&req);
        let mut req = req;
        if let Some(route) = plan.route() {
            // Inner layers (per-route load shedding) key on the matched route too.
            req.extensions_mut().insert(MatchedRoute(route));
        }
        Box::pin(async move {
            let (verdict, route) = limiter.execute(plan).await;
            let mut summary = RateLimitSummary {
                policy: None,
                decision: None,
            };
            let mut res = match verdict {
                Verdict::Unlimited => inner.call(req).await?,
                Verdict::Bypassed => {
                    summary.decision = Some("bypassed");
                    inner.call(req).await?
                }
                Verdict::Allowed { headers, policy } => {
                    summary = RateLimitSummary {
                        policy,
                        decision: Some("allowed"),
                    };
                    let mut res = inner.call(req).await?;
                    add_headers(&mut res, headers);
                    res
                }
                Verdict::Limited {
                    headers,
                    policy,
                    limit,
                    window,
                    violated,
                    retry_after,
                } => {
                    let names: Vec<&str> = violated.iter().map(|n| &**n).collect();
                    let problem =
                        Problem::quota_exceeded(&policy, limit, &window, &names, retry_after);
                    let mut res: Response<RB> = crate::problem::for_request(&req, problem);
                    add_headers(&mut res, headers);
                    res.headers_mut()
                        .insert(http::header::RETRY_AFTER, HeaderValue::from(retry_after));
                    summary = RateLimitSummary {
                        policy: Some(policy),
                        decision: Some("limited"),
                    };
                    res
                }
                Verdict::MissingKey { policy, source } => {
                    let problem = Problem::new(
                        400,
                        "missing_rate_limit_key",
                        format!("policy '{policy}' needs {source} on this request"),
                    );
                    summary.policy = Some(policy);
                    crate::problem::for_request(&req, problem)
                }
                Verdict::StoreDown => {
                    let problem = Problem::new(
                        503,
                        "store_unavailable",
                        "the rate-limit store is unavailable; retry shortly",
                    );
                    let mut res: Response<RB> = crate::problem::for_request(&req, problem);
                    res.headers_mut()
                        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
                    res
                }
            };
            if let Some(route) = route {
                res.extensions_mut().insert(MatchedRoute(route));
            }
            res.extensions_mut().insert(summary);
            Ok(res)
        })
    }
}
