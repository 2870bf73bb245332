//! Security headers (CSP, nosniff, frame options, ...) on responses that lack them.
//!
//! A header the inner service already set is never overridden. HSTS is only added when
//! the request's [`ClientInfo`] says it reached the service over HTTPS (RFC 6797 §7.2),
//! so run [`crate::ClientIdentityLayer`] before this layer.

use crate::client_identity::ClientInfo;
use http::{HeaderName, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use portcullis_core::headers::SecurityHeaders;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tower::{Layer, Service};

#[derive(Debug)]
struct Compiled {
    always: Vec<(HeaderName, HeaderValue)>,
    hsts: Option<HeaderValue>,
}

/// Adds the configured security headers.
#[derive(Debug, Clone)]
pub struct SecurityHeadersLayer {
    compiled: Arc<Compiled>,
}

impl SecurityHeadersLayer {
    /// Fails when a configured value is not a valid header value (e.g. has a newline).
    pub fn new(headers: &SecurityHeaders) -> Result<Self, http::header::InvalidHeaderValue> {
        let always = headers
            .always
            .iter()
            .map(|(k, v)| Ok((HeaderName::from_static(k), HeaderValue::from_str(v)?)))
            .collect::<Result<_, http::header::InvalidHeaderValue>>()?;
        let hsts = headers
            .hsts
            .as_deref()
            .map(HeaderValue::from_str)
            .transpose()?;
        Ok(SecurityHeadersLayer {
            compiled: Arc::new(Compiled { always, hsts }),
        })
    }
}

impl<S> Layer<S> for SecurityHeadersLayer {
    type Service = SecurityHeadersService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        SecurityHeadersService {
            inner,
            compiled: self.compiled.clone(),
        }
    }
}

/// The service of [`SecurityHeadersLayer`].
#[derive(Debug, Clone)]
pub struct SecurityHeadersService<S> {
    inner: S,
    compiled: Arc<Compiled>,
}

impl<S, B, RB> Service<Request<B>> for SecurityHeadersService<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = SecurityHeadersFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let https = req
            .extensions()
            .get::<ClientInfo>()
            .is_some_and(|c| c.identity.https);
        SecurityHeadersFuture {
            inner: self.inner.call(req),
            compiled: self.compiled.clone(),
            https,
        }
    }
}

pin_project! {
    /// Response future of [`SecurityHeadersService`].
    pub struct SecurityHeadersFuture<F> {
        #[pin]
        inner: F,
        compiled: Arc<Compiled>,
        https: bool,
    }
}

impl<F, RB, E> Future for SecurityHeadersFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.inner.poll(cx))?;
        let headers = res.headers_mut();
        // One lookup each: the entry is filled only when the upstream left it empty.
        for (name, value) in &this.compiled.always {
            headers.entry(name).or_insert_with(|| value.clone());
        }
        if let (true, Some(hsts)) = (*this.https, &this.compiled.hsts) {
            headers
                .entry(http::header::STRICT_TRANSPORT_SECURITY)
                .or_insert_with(|| hsts.clone());
        }
        Poll::Ready(Ok(res))
    }
}
