//! One [`RequestRecord`] per request, handed to an [`ObserveHook`] when the response
//! body has ended (or was dropped, e.g. the client went away).
//!
//! This is where access logs and metrics come from, without the library depending on a
//! log or metrics crate. Place it after [`crate::RequestIdLayer`] and
//! [`crate::ClientIdentityLayer`] (it reads their extensions) and before the layers
//! whose responses should be counted.

use crate::client_identity::ClientInfo;
use crate::latency::UpstreamTiming;
use crate::request_id::RequestId;
use bytes::Buf;
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tower::{Layer, Service};

/// What happened to one request.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// The request id.
    pub request_id: String,
    /// The method.
    pub method: Method,
    /// Path and query as requested (not yet redacted).
    pub path: String,
    /// The matched route pattern, if any.
    pub route: Option<std::sync::Arc<str>>,
    /// Response status.
    pub status: u16,
    /// Time until response headers.
    pub latency: Duration,
    /// Time the upstream took to send its response headers, if it was asked.
    pub upstream: Option<Duration>,
    /// Time until the response body ended (zero when the hook does not want it:
    /// [`ObserveHook::wants_duration`]).
    pub duration: Duration,
    /// Client IP after the trusted-proxy rule.
    pub client: Option<IpAddr>,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// The tightest rate-limit policy, if any applied.
    pub policy: Option<std::sync::Arc<str>>,
    /// The rate-limit decision (`allowed`, `limited`, `bypassed`), if any.
    pub decision: Option<&'static str>,
}

/// The matched route pattern, set by routing layers as a request extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedRoute(pub std::sync::Arc<str>);

/// Receives request records.
pub trait ObserveHook: Clone + Send + Sync + 'static {
    /// A request started (before the inner service sees it).
    fn on_start(&self) {}
    /// A request's response has ended.
    fn on_complete(&self, record: RequestRecord);
    /// Whether records carry [`RequestRecord::duration`]: a clock reading per request,
    /// skipped for a hook that never reads it.
    fn wants_duration(&self) -> bool {
        true
    }
}

/// A hook shared through an `Arc`: each request's clone is one count. Give every
/// serving thread an `Arc` of its own around a hook that several threads share, and
/// that count stays in its thread's cache instead of moving between cores at every
/// request (as the shared hook's own counts would).
impl<H: ObserveHook> ObserveHook for std::sync::Arc<H> {
    fn on_start(&self) {
        H::on_start(self);
    }

    fn on_complete(&self, record: RequestRecord) {
        H::on_complete(self, record);
    }

    fn wants_duration(&self) -> bool {
        H::wants_duration(self)
    }
}

/// Produces a [`RequestRecord`] per request.
#[derive(Debug, Clone)]
pub struct ObserveLayer<H> {
    hook: H,
}

impl<H> ObserveLayer<H> {
    /// Hands records to `hook`.
    pub fn new(hook: H) -> Self {
        ObserveLayer { hook }
    }

    /// The hook.
    pub(crate) fn into_hook(self) -> H {
        self.hook
    }
}

impl<S, H: Clone> Layer<S> for ObserveLayer<H> {
    type Service = Observe<S, H>;
    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            hook: self.hook.clone(),
        }
    }
}

/// The service of [`ObserveLayer`].
#[derive(Debug, Clone)]
pub struct Observe<S, H> {
    inner: S,
    hook: H,
}

impl<S, H, B, RB> Service<Request<B>> for Observe<S, H>
where
    S: Service<Request<B>, Response = Response<RB>>,
    H: ObserveHook,
{
    type Response = Response<ObservedBody<RB, H>>;
    type Error = S::Error;
    type Future = ObserveFuture<S::Future, H>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let pending = Completion::begin(&self.hook, &req, Instant::now());
        ObserveFuture {
            inner: self.inner.call(req),
            pending: Some(pending),
        }
    }
}

pin_project! {
    /// Response future of [`Observe`].
    pub struct ObserveFuture<F, H: ObserveHook> {
        #[pin]
        inner: F,
        // Boxed (see `Completion::begin`).
        pending: Option<Box<Completion<H>>>,
    }
}

impl<F, H, RB, E> Future for ObserveFuture<F, H>
where
    F: Future<Output = Result<Response<RB>, E>>,
    H: ObserveHook,
{
    type Output = Result<Response<ObservedBody<RB, H>>, E>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.inner.poll(cx))?;
        let completion = this.pending.take();
        let latency = completion.as_ref().map(|c| c.start.elapsed());
        Poll::Ready(Ok(observed(res, completion, latency.unwrap_or_default())))
    }
}

/// The response with its body observed: the record takes the response's status, the
/// gateway's `latency`, and what the layers below left in its extensions (upstream
/// time, matched route, rate-limit decision).
pub(crate) fn observed<RB, H: ObserveHook>(
    res: Response<RB>,
    mut completion: Option<Box<Completion<H>>>,
    latency: Duration,
) -> Response<ObservedBody<RB, H>> {
    if let Some(record) = completion.as_mut().and_then(|c| c.record_mut()) {
        record.latency = latency;
        record.status = res.status().as_u16();
        record.upstream = res.extensions().get::<UpstreamTiming>().map(|t| t.0);
        if let Some(route) = res.extensions().get::<MatchedRoute>() {
            record.route = Some(route.0.clone());
        }
        if let Some(s) = res
            .extensions()
            .get::<crate::rate_limit::RateLimitSummary>()
        {
            record.policy = s.policy.clone();
            record.decision = s.decision;
        }
    }
    res.map(|body| ObservedBody {
        inner: body,
        completion,
    })
}

/// The status recorded for a request whose client went away before its response was
/// made (nginx's "client closed request"); it is never sent.
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

/// Fires the hook exactly once: when the body ends, or when it is dropped before.
#[derive(Debug)]
pub struct Completion<H: ObserveHook> {
    pending: Option<(H, RequestRecord)>,
    start: Instant,
}

impl<H: ObserveHook> Completion<H> {
    /// Starts the record of `req` at `start` (and tells the hook it started). Boxed: the
    /// response and its futures are moved through every layer above, and a pointer
    /// moves for less than the record's 200 bytes.
    pub(crate) fn begin<B>(hook: &H, req: &Request<B>, start: Instant) -> Box<Self> {
        hook.on_start();
        let ext = req.extensions();
        let record = RequestRecord {
            request_id: ext
                .get::<RequestId>()
                .map(|r| r.as_str().to_owned())
                .unwrap_or_default(),
            method: req.method().clone(),
            path: req
                .uri()
                .path_and_query()
                .map_or_else(|| req.uri().path().to_owned(), |pq| pq.as_str().to_owned()),
            route: ext.get::<MatchedRoute>().map(|r| r.0.clone()),
            status: 0,
            latency: Duration::ZERO,
            upstream: None,
            duration: Duration::ZERO,
            client: ext.get::<ClientInfo>().map(|c| c.identity.ip),
            bytes_out: 0,
            policy: None,
            decision: None,
        };
        Box::new(Completion {
            pending: Some((hook.clone(), record)),
            start,
        })
    }

    fn record_mut(&mut self) -> Option<&mut RequestRecord> {
        self.pending.as_mut().map(|(_, r)| r)
    }

    fn fire(&mut self) {
        if let Some((hook, mut record)) = self.pending.take() {
            if hook.wants_duration() {
                record.duration = self.start.elapsed();
            }
            if record.status == 0 {
                // No response was made: the client left first (nginx's 499).
                record.status = CLIENT_CLOSED_REQUEST;
            }
            hook.on_complete(record);
        }
    }
}

impl<H: ObserveHook> Drop for Completion<H> {
    fn drop(&mut self) {
        self.fire();
    }
}

pin_project! {
    /// A response body that counts its bytes and reports when it ends.
    pub struct ObservedBody<B, H: ObserveHook> {
        #[pin]
        inner: B,
        completion: Option<Box<Completion<H>>>,
    }
}

impl<B: Body, H: ObserveHook> Body for ObservedBody<B, H> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                let record = this.completion.as_mut().and_then(|c| c.record_mut());
                if let (Some(data), Some(record)) = (f.data_ref(), record) {
                    record.bytes_out += data.remaining() as u64;
                }
            }
            Some(Err(_)) | None => {
                if let Some(mut c) = this.completion.take() {
                    c.fire();
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
