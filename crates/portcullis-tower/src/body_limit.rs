//! Request body limit: 413 problem+json for a declared `Content-Length` over the limit,
//! and a cap on every other body (chunked, HTTP/2) while it streams.
//!
//! Nothing is buffered: the inner service receives the body wrapped in
//! [`http_body_util::Limited`], which fails with
//! [`http_body_util::LengthLimitError`] as soon as more than the limit has passed. The
//! inner service decides how to answer that failure (the gateway's proxy answers 413);
//! [`is_length_limit_error`] recognises it in an error's source chain.

use bytes::Bytes;
use http::{header, Request, Response};
use http_body_util::Limited;
use pin_project_lite::pin_project;
use portcullis_core::problem::Problem;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Caps request bodies at `max` bytes.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimitLayer {
    max: u64,
}

impl BodyLimitLayer {
    /// Bodies longer than `max` bytes are refused.
    pub fn new(max: u64) -> Self {
        BodyLimitLayer { max }
    }
}

impl<S> Layer<S> for BodyLimitLayer {
    type Service = BodyLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BodyLimit {
            inner,
            max: self.max,
        }
    }
}

/// The service of [`BodyLimitLayer`].
#[derive(Debug, Clone)]
pub struct BodyLimit<S> {
    inner: S,
    max: u64,
}

/// The problem for a body over `max` bytes.
pub fn too_large(max: u64) -> Problem {
    Problem::new(
        413,
        "body_too_large",
        format!("request body exceeds {max} bytes"),
    )
}

/// Whether `err` or one of its sources is the length limit of [`BodyLimitLayer`].
pub fn is_length_limit_error(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = e.source();
    }
    false
}

impl<S, B, RB> Service<Request<B>> for BodyLimit<S>
where
    S: Service<Request<Limited<B>>, Response = Response<RB>>,
    RB: From<Bytes>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BodyLimitFuture<S::Future, RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max) {
            return BodyLimitFuture::Refused {
                response: Some(Box::new(crate::problem::for_request(
                    &req,
                    too_large(self.max),
                ))),
            };
        }
        let limit = usize::try_from(self.max).unwrap_or(usize::MAX);
        BodyLimitFuture::Inner {
            inner: self.inner.call(req.map(|b| Limited::new(b, limit))),
        }
    }
}

pin_project! {
    /// Response future of [`BodyLimit`].
    #[project = BodyLimitProj]
    #[allow(missing_docs)]
    pub enum BodyLimitFuture<F, RB> {
        /// Passed on.
        Inner { #[pin] inner: F },
        /// Refused by its declared length (boxed: a rare answer, and the future, moved
        /// into every layer above, stays small).
        Refused { response: Option<Box<Response<RB>>> },
    }
}

impl<F, RB, E> Future for BodyLimitFuture<F, RB>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            BodyLimitProj::Inner { inner } => inner.poll(cx),
            BodyLimitProj::Refused { response } => match response.take() {
                Some(r) => Poll::Ready(Ok(*r)),
                None => Poll::Pending,
            },
        }
    }
}
