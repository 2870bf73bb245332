use super::{DecisionHook, RateLimiter, RouteLabels, Verdict};
use crate::head_lines::{self, HeadLines, Precedence};
use crate::observe::MatchedRoute;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use portcullis_core::headers::ratelimit::{self, RenderedHeaders};
use portcullis_core::problem::Problem;
use portcullis_store::Store;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
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
///
/// Make one layer per serving thread: each holds its own copies of the route patterns
/// ([`RouteLabels`]) that it puts on requests and responses.
pub struct RateLimitLayer<St, H> {
    limiter: Arc<RateLimiter<St, H>>,
    labels: RouteLabels,
    lines: bool,
}

impl<St, H> Clone for RateLimitLayer<St, H> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            limiter: self.limiter.clone(),
            labels: self.labels.clone(),
            lines: self.lines,
        }
    }
}

impl<St: Store, H: DecisionHook> RateLimitLayer<St, H> {
    /// Limits with `limiter` (shared with the admin API, which reads and resets buckets).
    pub fn new(limiter: Arc<RateLimiter<St, H>>) -> Self {
        RateLimitLayer {
            labels: limiter.route_labels(),
            limiter,
            lines: false,
        }
    }
}

impl<St, H> RateLimitLayer<St, H> {
    /// Adds the rate-limit headers (and `Retry-After`) as [`HeadLines`] instead of map
    /// fields.
    pub fn with_head_lines(mut self) -> Self {
        self.lines = true;
        self
    }
}

impl<S, St, H> Layer<S> for RateLimitLayer<St, H> {
    type Service = RateLimit<S, St, H>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
            labels: self.labels.clone(),
            lines: self.lines,
        }
    }
}

/// The service of [`RateLimitLayer`].
pub struct RateLimit<S, St, H> {
    inner: S,
    limiter: Arc<RateLimiter<St, H>>,
    labels: RouteLabels,
    lines: bool,
}

impl<S: Clone, St, H> Clone for RateLimit<S, St, H> {
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
            labels: self.labels.clone(),
            lines: self.lines,
        }
    }
}

/// Puts the rendered rate-limit headers on a response: as [`HeadLines`] when `lines`,
/// else map fields whose values are slices of one shared buffer (one allocation for
/// all of them), under a prebuilt name.
fn add_headers<B>(res: &mut Response<B>, headers: RenderedHeaders, lines: bool) {
    static NAMES: [HeaderName; 5] = [
        HeaderName::from_static(ratelimit::NAMES[0]),
        HeaderName::from_static(ratelimit::NAMES[1]),
        HeaderName::from_static(ratelimit::NAMES[2]),
        HeaderName::from_static(ratelimit::NAMES[3]),
        HeaderName::from_static(ratelimit::NAMES[4]),
    ];
    if headers.is_empty() {
        return;
    }
    let spans = headers.spans();
    if lines {
        let lines = res.extensions_mut().get_or_insert_default::<HeadLines>();
        let text = headers.into_text();
        for (name, range) in spans {
            if let (Some(name), Some(value)) = (NAMES.get(name), text.as_bytes().get(range)) {
                lines.push(name, value, Precedence::Replace);
            }
        }
        return;
    }
    let text = Bytes::from(headers.into_text());
    for (name, range) in spans {
        if range.start > range.end || range.end > text.len() {
            continue; // cannot happen (spans come from the text), and never a panic
        }
        if let (Some(name), Ok(value)) = (
            NAMES.get(name),
            HeaderValue::from_maybe_shared(text.slice(range)),
        ) {
            res.headers_mut().insert(name.clone(), value);
        }
    }
}

/// What a verdict means for the request: answer it here, or forward it and put the
/// rate-limit headers and the summary on the upstream's response.
// Returned and matched at once; boxing the request would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Applied<B, RB> {
    Answer(Response<RB>),
    Forward {
        req: Request<B>,
        headers: Option<RenderedHeaders>,
        summary: RateLimitSummary,
    },
}

/// `lines`: the layer writes [`HeadLines`].
fn apply<B, RB: From<Bytes>>(verdict: Verdict, mut req: Request<B>, lines: bool) -> Applied<B, RB> {
    let forward = |req, headers, summary| Applied::Forward {
        req,
        headers,
        summary,
    };
    let mut summary = RateLimitSummary {
        policy: None,
        decision: None,
    };
    let res = match verdict {
        Verdict::Unlimited => return forward(req, None, summary),
        Verdict::Bypassed => {
            summary.decision = Some("bypassed");
            return forward(req, None, summary);
        }
        Verdict::Allowed { headers, policy } => {
            summary = RateLimitSummary {
                policy,
                decision: Some("allowed"),
            };
            return forward(req, Some(headers), summary);
        }
        Verdict::Limited {
            headers,
            policy,
            limit,
            window,
            violated,
            retry_after,
        } => {
            let id = req.extensions().get::<crate::RequestId>();
            let body = portcullis_core::problem::quota_exceeded_json(
                &policy,
                limit,
                window,
                violated.as_slice(),
                retry_after,
                req.uri().path(),
                id.map_or("", |id| id.as_str()),
            );
            let mut res: Response<RB> =
                crate::problem::with_body(StatusCode::TOO_MANY_REQUESTS, body);
            *res.extensions_mut() = crate::problem::recycled_extensions(req.extensions_mut());
            add_headers(&mut res, headers, lines);
            head_lines::set(
                &mut res,
                lines,
                &http::header::RETRY_AFTER,
                itoa::Buffer::new().format(retry_after).as_bytes(),
                Precedence::Replace,
            );
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
            head_lines::set(
                &mut res,
                lines,
                &http::header::RETRY_AFTER,
                b"1",
                Precedence::Replace,
            );
            res
        }
    };
    Applied::Answer(finish(res, None, summary, lines))
}

/// The response extensions (and headers) every outcome carries.
fn finish<RB>(
    mut res: Response<RB>,
    headers: Option<RenderedHeaders>,
    summary: RateLimitSummary,
    lines: bool,
) -> Response<RB> {
    if let Some(headers) = headers {
        add_headers(&mut res, headers, lines);
    }
    res.extensions_mut().insert(summary);
    res
}

/// The matched route on the response too (the log and the metrics read it there).
fn with_route<RB>(mut res: Response<RB>, route: Option<Arc<str>>) -> Response<RB> {
    if let Some(route) = route {
        res.extensions_mut().insert(MatchedRoute(route));
    }
    res
}

pin_project! {
    /// Response future of [`RateLimit`]. The fields are what the response still needs:
    /// the answer until it is taken; or the inner call's future, the rate-limit headers,
    /// the summary and the matched route to put on its response; or the boxed decision
    /// and inner call.
    #[project = RateLimitProj]
    #[allow(missing_docs)]
    pub enum RateLimitFuture<F, RB, E> {
        /// Decided in `call` and answered there (429, 400, 503).
        Answered {
            res: Option<Response<RB>>,
        },
        /// Decided in `call` and forwarded: the inner call is under way.
        Forwarded {
            #[pin]
            inner: F,
            headers: Option<RenderedHeaders>,
            summary: Option<RateLimitSummary>,
            route: Option<Arc<str>>,
            lines: bool,
        },
        /// The store needs I/O: decided, then forwarded, in one boxed future.
        Waiting {
            #[pin]
            inner: Pin<Box<dyn Future<Output = Result<Response<RB>, E>> + Send>>,
        },
    }
}

impl<F, RB, E> Future for RateLimitFuture<F, RB, E>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<RB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RateLimitProj::Answered { res } => match res.take() {
                Some(res) => Poll::Ready(Ok(res)),
                None => Poll::Pending,
            },
            RateLimitProj::Forwarded {
                inner,
                headers,
                summary,
                route,
                lines,
            } => {
                let res = ready!(inner.poll(cx))?;
                let summary = summary.take().unwrap_or(RateLimitSummary {
                    policy: None,
                    decision: None,
                });
                let res = finish(res, headers.take(), summary, *lines);
                Poll::Ready(Ok(with_route(res, route.take())))
            }
            RateLimitProj::Waiting { inner } => inner.poll(cx),
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
    type Future = RateLimitFuture<S::Future, RB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let plan = self.limiter.plan(&req);
        let route = self.labels.get(plan.route());
        if let Some(route) = &route {
            // Inner layers (per-route load shedding) key on the matched route too.
            req.extensions_mut().insert(MatchedRoute(route.clone()));
        }
        // A store that decides in memory decides here: no future to allocate, and the
        // inner service (ready, as `poll_ready` said) is called at once.
        let plan = match self.limiter.execute_now(plan) {
            Ok((verdict, _)) => {
                return match apply(verdict, req, self.lines) {
                    Applied::Answer(res) => RateLimitFuture::Answered {
                        res: Some(with_route(res, route)),
                    },
                    Applied::Forward {
                        req,
                        headers,
                        summary,
                    } => RateLimitFuture::Forwarded {
                        inner: self.inner.call(req),
                        headers,
                        summary: Some(summary),
                        route,
                        lines: self.lines,
                    },
                }
            }
            Err(plan) => plan,
        };
        // The clone is ready (tower's "take the ready service" idiom).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limiter = self.limiter.clone();
        let lines = self.lines;
        RateLimitFuture::Waiting {
            inner: Box::pin(async move {
                let (verdict, _) = limiter.execute(plan).await;
                let res = match apply(verdict, req, lines) {
                    Applied::Answer(res) => res,
                    Applied::Forward {
                        req,
                        headers,
                        summary,
                    } => finish(inner.call(req).await?, headers, summary, lines),
                };
                Ok(with_route(res, route))
            }),
        }
    }
}
