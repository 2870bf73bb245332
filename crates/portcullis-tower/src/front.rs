//! The five outer layers of a gateway in one service: [`ClientIdentityLayer`],
//! [`RequestIdLayer`], [`ObserveLayer`], [`LatencyLayer`] and [`SecurityHeadersLayer`],
//! stacked in that order, do the same work here in one call and one response pass.
//!
//! Each layer of a tower stack costs a request a move of the request into it, its future
//! moved into the one above, and the response moved out of it again: for these five,
//! more than a tenth of the instructions of a request the gateway rejects, and two
//! more clock readings (the log's and the latency header's, which here are one). The
//! work itself is the layers' own code (`client_info`, `RequestIdLayer::assign`,
//! `Completion::begin`, `observed`, `put_latency`, `Compiled::apply`); a server that
//! wants the layers separately (or only some of them) stacks them as before.
//!
//! ```
//! use portcullis_core::headers::{AcceptRequestId, SecurityHeaders};
//! use portcullis_core::identity::TrustedProxies;
//! use portcullis_tower::front::FrontLayer;
//! use portcullis_tower::{
//!     ClientIdentityLayer, LatencyLayer, ObserveHook, ObserveLayer, RequestIdLayer,
//!     RequestRecord, SecurityHeadersLayer,
//! };
//! #[derive(Clone)]
//! struct Log;
//! impl ObserveHook for Log {
//!     fn on_complete(&self, _record: RequestRecord) {}
//! }
//! let front = FrontLayer::new(
//!     ClientIdentityLayer::new(TrustedProxies::new(vec![])),
//!     RequestIdLayer::new(AcceptRequestId::Uuid, true),
//!     ObserveLayer::new(Log),
//!     LatencyLayer::new(true),
//!     SecurityHeadersLayer::new(&SecurityHeaders::default()).unwrap(),
//! );
//! # let _ = front;
//! ```

use crate::client_identity::{client_info, ClientIdentityLayer};
use crate::latency::{put_latency, LatencyLayer};
use crate::observe::{observed, Completion, ObserveHook, ObserveLayer, ObservedBody};
use crate::request_id::{put_id, RequestIdLayer};
use crate::security_headers::{Compiled, SecurityHeadersLayer};
use http::{HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use portcullis_core::identity::TrustedProxies;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;
use tower::{Layer, Service};

/// The layers' settings, shared by every clone of the service.
#[derive(Debug)]
struct Settings {
    trusted: Arc<TrustedProxies>,
    request_id: RequestIdLayer,
    /// `X-Latency-MS` and `Server-Timing` are added.
    latency: bool,
    latency_lines: bool,
    security: Arc<Compiled>,
    security_lines: bool,
}

/// [`ClientIdentityLayer`], [`RequestIdLayer`], [`ObserveLayer`], [`LatencyLayer`] and
/// [`SecurityHeadersLayer`] as one layer (see the module documentation).
#[derive(Debug, Clone)]
pub struct FrontLayer<H> {
    settings: Arc<Settings>,
    hook: H,
}

impl<H> FrontLayer<H> {
    /// The five layers, configured as each would be on its own.
    pub fn new(
        identity: ClientIdentityLayer,
        request_id: RequestIdLayer,
        observe: ObserveLayer<H>,
        latency: LatencyLayer,
        security: SecurityHeadersLayer,
    ) -> Self {
        let (latency, latency_lines) = latency.settings();
        let (security, security_lines) = security.parts();
        FrontLayer {
            settings: Arc::new(Settings {
                trusted: identity.trusted(),
                request_id,
                latency,
                latency_lines,
                security,
                security_lines,
            }),
            hook: observe.into_hook(),
        }
    }
}

impl<S, H: Clone> Layer<S> for FrontLayer<H> {
    type Service = Front<S, H>;
    fn layer(&self, inner: S) -> Self::Service {
        Front {
            inner,
            settings: self.settings.clone(),
            hook: self.hook.clone(),
        }
    }
}

/// The service of [`FrontLayer`].
#[derive(Debug, Clone)]
pub struct Front<S, H> {
    inner: S,
    settings: Arc<Settings>,
    hook: H,
}

impl<S, H, B, RB> Service<Request<B>> for Front<S, H>
where
    S: Service<Request<B>, Response = Response<RB>>,
    H: ObserveHook,
{
    type Response = Response<ObservedBody<RB, H>>;
    type Error = S::Error;
    type Future = FrontFuture<S::Future, H>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let settings = &self.settings;
        let client = client_info(&req, &settings.trusted);
        req.extensions_mut().insert(client);
        let id = settings.request_id.assign(&mut req);
        let start = Instant::now();
        let completion = Completion::begin(&self.hook, &req, start);
        FrontFuture {
            inner: self.inner.call(req),
            settings: settings.clone(),
            https: client.identity.https,
            id,
            start,
            completion: Some(completion),
        }
    }
}

pin_project! {
    /// Response future of [`Front`].
    pub struct FrontFuture<F, H: ObserveHook> {
        #[pin]
        inner: F,
        settings: Arc<Settings>,
        https: bool,
        id: Option<HeaderValue>,
        start: Instant,
        completion: Option<Box<Completion<H>>>,
    }
}

impl<F, H, RB, E> Future for FrontFuture<F, H>
where
    F: Future<Output = Result<Response<RB>, E>>,
    H: ObserveHook,
{
    type Output = Result<Response<ObservedBody<RB, H>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.inner.poll(cx))?;
        let latency = this.start.elapsed();
        let settings = &**this.settings;
        // The order of the separate layers, innermost first.
        settings
            .security
            .apply(&mut res, *this.https, settings.security_lines);
        if settings.latency {
            put_latency(&mut res, latency, settings.latency_lines);
        }
        if let Some(id) = this.id.take() {
            put_id(&mut res, id, settings.request_id.writes_lines());
        }
        Poll::Ready(Ok(observed(res, this.completion.take(), latency)))
    }
}
