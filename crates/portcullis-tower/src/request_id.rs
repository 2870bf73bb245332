//! `X-Request-ID`: keep an acceptable client id or make a UUID, send it upstream, return it.
//!
//! The id is also stored as a [`RequestId`] extension so logs and problem bodies carry
//! the same value.
//!
//! ```
//! use portcullis_core::headers::AcceptRequestId;
//! use portcullis_tower::RequestIdLayer;
//! let layer = RequestIdLayer::new(AcceptRequestId::Uuid, true);
//! # let _ = layer;
//! ```

use crate::head_lines::{self, Precedence};
use http::{HeaderName, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use portcullis_core::headers::AcceptRequestId;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tower::{Layer, Service};

/// `x-request-id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id (request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub HeaderValue);

impl RequestId {
    /// A fresh UUID v4.
    pub fn new_uuid() -> Self {
        let mut buf = uuid::Uuid::encode_buffer();
        let s = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
        RequestId(HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("-")))
    }

    /// The id as text (ids are always visible ASCII).
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or("-")
    }
}

/// Assigns every request an id.
#[derive(Debug, Clone, Copy)]
pub struct RequestIdLayer {
    accept: AcceptRequestId,
    expose: bool,
    lines: bool,
}

impl RequestIdLayer {
    /// `accept` decides which client ids are kept; with `expose` false the id is only
    /// used internally (logs, problem bodies) and never sent in a header.
    pub fn new(accept: AcceptRequestId, expose: bool) -> Self {
        RequestIdLayer {
            accept,
            expose,
            lines: false,
        }
    }

    /// Returns the id as a [`crate::HeadLines`] line instead of a map field.
    pub fn with_head_lines(mut self) -> Self {
        self.lines = true;
        self
    }
}

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestIdService {
            inner,
            layer: *self,
        }
    }
}

/// The service of [`RequestIdLayer`].
#[derive(Debug, Clone)]
pub struct RequestIdService<S> {
    inner: S,
    layer: RequestIdLayer,
}

impl<S, B, RB> Service<Request<B>> for RequestIdService<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RequestIdFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let header = self.layer.assign(&mut req);
        RequestIdFuture {
            inner: self.inner.call(req),
            header,
            lines: self.layer.lines,
        }
    }
}

impl RequestIdLayer {
    /// Gives `req` its id: the [`RequestId`] extension, and the header the upstream gets
    /// (or none). Returns the value the response carries, if the id is exposed.
    pub(crate) fn assign<B>(&self, req: &mut Request<B>) -> Option<HeaderValue> {
        let id = match req.headers().get(&X_REQUEST_ID) {
            Some(v) if self.accept.accepts(v.as_bytes()) => RequestId(v.clone()),
            _ => RequestId::new_uuid(),
        };
        if self.expose {
            req.headers_mut().insert(X_REQUEST_ID.clone(), id.0.clone());
        } else {
            req.headers_mut().remove(&X_REQUEST_ID);
        }
        let header = self.expose.then(|| id.0.clone());
        req.extensions_mut().insert(id);
        header
    }

    /// Whether the layer writes [`crate::HeadLines`].
    pub(crate) fn writes_lines(&self) -> bool {
        self.lines
    }
}

/// Puts the request's id (`value`, from [`RequestIdLayer::assign`]) on its response.
pub(crate) fn put_id<RB>(res: &mut Response<RB>, value: HeaderValue, lines: bool) {
    if lines {
        head_lines::set(
            res,
            true,
            &X_REQUEST_ID,
            value.as_bytes(),
            Precedence::Replace,
        );
    } else {
        res.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
}

pin_project! {
    /// Response future of [`RequestIdService`].
    pub struct RequestIdFuture<F> {
        #[pin]
        inner: F,
        header: Option<HeaderValue>,
        lines: bool,
    }
}

impl<F, RB, E> Future for RequestIdFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.inner.poll(cx))?;
        if let Some(v) = this.header.take() {
            put_id(&mut res, v, *this.lines);
        }
        Poll::Ready(Ok(res))
    }
}
