//! `X-Latency-MS` and `Server-Timing` on every response.
//!
//! Place it outside the layers whose time should count: the clock starts when this
//! layer is called and stops when the inner service yields response headers. An inner
//! proxy reports its share by inserting an [`UpstreamTiming`] response extension.

use crate::head_lines::{HeadLines, Precedence};
use http::{HeaderName, HeaderValue, Response};
use pin_project_lite::pin_project;
use portcullis_core::headers::{latency_ms, server_timing};
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tower::{Layer, Service};

/// Time spent waiting for the upstream's response headers (response extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTiming(pub Duration);

/// `x-latency-ms`.
pub static X_LATENCY_MS: HeaderName = HeaderName::from_static("x-latency-ms");
/// `server-timing`.
pub static SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// Adds the latency headers.
#[derive(Debug, Clone, Copy)]
pub struct LatencyLayer {
    enabled: bool,
    lines: bool,
}

impl LatencyLayer {
    /// Whether the headers are added at all, and as [`HeadLines`].
    pub(crate) fn settings(&self) -> (bool, bool) {
        (self.enabled, self.lines)
    }

    /// With `enabled` false the layer passes responses through untouched (so a
    /// configuration switch does not change the service's type).
    pub fn new(enabled: bool) -> Self {
        LatencyLayer {
            enabled,
            lines: false,
        }
    }

    /// Adds the headers as [`HeadLines`] instead of map fields.
    pub fn with_head_lines(mut self) -> Self {
        self.lines = true;
        self
    }
}

impl<S> Layer<S> for LatencyLayer {
    type Service = Latency<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Latency {
            inner,
            enabled: self.enabled,
            lines: self.lines,
        }
    }
}

/// The service of [`LatencyLayer`].
#[derive(Debug, Clone)]
pub struct Latency<S> {
    inner: S,
    enabled: bool,
    lines: bool,
}

impl<S, Req, RB> Service<Req> for Latency<S>
where
    S: Service<Req, Response = Response<RB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = LatencyFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        LatencyFuture {
            start: self.enabled.then(Instant::now),
            inner: self.inner.call(req),
            lines: self.lines,
        }
    }
}

pin_project! {
    /// Response future of [`Latency`].
    pub struct LatencyFuture<F> {
        #[pin]
        inner: F,
        start: Option<Instant>,
        lines: bool,
    }
}

impl<F, RB, E> Future for LatencyFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.inner.poll(cx))?;
        let Some(start) = this.start else {
            return Poll::Ready(Ok(res));
        };
        put_latency(&mut res, start.elapsed(), *this.lines);
        Poll::Ready(Ok(res))
    }
}

/// Puts `X-Latency-MS` and `Server-Timing` for `elapsed` (and the response's
/// [`UpstreamTiming`]) on `res`: as [`HeadLines`] when `lines`, else map fields.
pub(crate) fn put_latency<RB>(res: &mut Response<RB>, elapsed: Duration, lines: bool) {
    let upstream = res.extensions().get::<UpstreamTiming>().map(|t| t.0);
    // Both values written into one buffer, each header a slice of it: one
    // allocation for the two.
    let mut text = server_timing(elapsed, upstream);
    let timing_end = text.len();
    portcullis_core::json::push_u64(&mut text, latency_ms(elapsed));
    if lines {
        let lines = res.extensions_mut().get_or_insert_default::<HeadLines>();
        let (timing, ms) = text.as_bytes().split_at(timing_end);
        lines.push(&X_LATENCY_MS, ms, Precedence::Replace);
        lines.push(&SERVER_TIMING, timing, Precedence::Replace);
        return;
    }
    let headers = res.headers_mut();
    let text = bytes::Bytes::from(text);
    if let Ok(v) = HeaderValue::from_maybe_shared(text.slice(timing_end..)) {
        headers.insert(X_LATENCY_MS.clone(), v);
    }
    if let Ok(v) = HeaderValue::from_maybe_shared(text.slice(..timing_end)) {
        headers.insert(SERVER_TIMING.clone(), v);
    }
}
