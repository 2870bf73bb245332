//! Security headers (CSP, nosniff, frame options, ...) on responses that lack them.
//!
//! A header the inner service already set is never overridden. HSTS is only added when
//! the request's [`ClientInfo`] says it reached the service over HTTPS (RFC 6797 §7.2),
//! so run [`crate::ClientIdentityLayer`] before this layer. Built `with_head_lines()`,
//! it adds them as one prepared block of [`HeadLines`].

use crate::client_identity::ClientInfo;
use crate::head_lines::{HeadLines, Precedence};
use http::{HeaderName, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use portcullis_core::headers::SecurityHeaders;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tower::{Layer, Service};

#[derive(Debug)]
pub(crate) struct Compiled {
    always: Vec<(HeaderName, HeaderValue)>,
    hsts: Option<HeaderValue>,
    /// `always` as lines, and `always` with HSTS (without HSTS when there is none).
    lines: HeadLines,
    lines_https: HeadLines,
}

/// Adds the configured security headers.
#[derive(Debug, Clone)]
pub struct SecurityHeadersLayer {
    compiled: Arc<Compiled>,
    lines: bool,
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
        let always: Vec<(HeaderName, HeaderValue)> = always;
        let mut lines = HeadLines::default();
        for (name, value) in &always {
            lines.push(name, value.as_bytes(), Precedence::Default);
        }
        let mut lines_https = lines.clone();
        if let Some(hsts) = &hsts {
            lines_https.push(
                &http::header::STRICT_TRANSPORT_SECURITY,
                hsts.as_bytes(),
                Precedence::Default,
            );
        }
        Ok(SecurityHeadersLayer {
            compiled: Arc::new(Compiled {
                always,
                hsts,
                lines,
                lines_https,
            }),
            lines: false,
        })
    }

    /// Adds the headers as [`HeadLines`] instead of map fields.
    pub fn with_head_lines(mut self) -> Self {
        self.lines = true;
        self
    }

    /// The prepared headers, and whether they go out as [`HeadLines`].
    pub(crate) fn parts(&self) -> (Arc<Compiled>, bool) {
        (self.compiled.clone(), self.lines)
    }
}

impl<S> Layer<S> for SecurityHeadersLayer {
    type Service = SecurityHeadersService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        SecurityHeadersService {
            inner,
            compiled: self.compiled.clone(),
            lines: self.lines,
        }
    }
}

/// The service of [`SecurityHeadersLayer`].
#[derive(Debug, Clone)]
pub struct SecurityHeadersService<S> {
    inner: S,
    compiled: Arc<Compiled>,
    lines: bool,
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
            lines: self.lines,
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
        lines: bool,
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
        this.compiled.apply(&mut res, *this.https, *this.lines);
        Poll::Ready(Ok(res))
    }
}

impl Compiled {
    /// Adds the headers `res` lacks (HSTS only when `https`): as [`HeadLines`] when
    /// `lines`, else map fields.
    pub(crate) fn apply<RB>(&self, res: &mut Response<RB>, https: bool, lines: bool) {
        if lines {
            let prepared = if https {
                &self.lines_https
            } else {
                &self.lines
            };
            if !prepared.is_empty() {
                res.extensions_mut()
                    .get_or_insert_default::<HeadLines>()
                    .extend_from(prepared);
            }
            return;
        }
        let headers = res.headers_mut();
        // One lookup each: the entry is filled only when the upstream left it empty.
        for (name, value) in &self.always {
            headers.entry(name).or_insert_with(|| value.clone());
        }
        if let (true, Some(hsts)) = (https, &self.hsts) {
            headers
                .entry(http::header::STRICT_TRANSPORT_SECURITY)
                .or_insert_with(|| hsts.clone());
        }
    }
}
