//! Load shedding: above `max` concurrent requests, answer 503 problem+json with
//! `Retry-After` instead of queueing.
//!
//! A request counts from the moment it reaches this layer until its response body has
//! ended (or was dropped), so long streaming responses keep their slot. Unlike
//! `tower::limit::ConcurrencyLimit`, which waits for a slot, an overloaded gateway
//! should say so at once and let clients back off.

use crate::observe::MatchedRoute;
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use portcullis_core::problem::Problem;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tower::{Layer, Service};

/// A concurrency limit and its current count.
#[derive(Debug)]
struct Limit {
    max: u64,
    current: AtomicU64,
}

impl Limit {
    fn new(max: u64) -> Arc<Self> {
        Arc::new(Limit {
            max,
            current: AtomicU64::new(0),
        })
    }

    /// Takes a slot, or `None` when the limit is reached.
    fn acquire(self: &Arc<Self>) -> Option<Slot> {
        let previous = self.current.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(Some(self.clone()));
        (previous < self.max).then_some(slot)
    }
}

/// Sheds load above `max` concurrent requests (0 = unlimited), in total and per route.
#[derive(Debug, Clone)]
pub struct LoadShedLayer {
    global: Option<Arc<Limit>>,
    routes: Arc<HashMap<Arc<str>, Arc<Limit>>>,
}

impl LoadShedLayer {
    /// At most `max` requests at once; 0 disables the limit.
    pub fn new(max: u64) -> Self {
        LoadShedLayer {
            global: (max > 0).then(|| Limit::new(max)),
            routes: Arc::new(HashMap::new()),
        }
    }

    /// Adds per-route limits, by route pattern (the [`MatchedRoute`] request extension
    /// an outer routing layer sets); 0 means unlimited.
    pub fn with_routes(mut self, routes: impl IntoIterator<Item = (Arc<str>, u64)>) -> Self {
        self.routes = Arc::new(
            routes
                .into_iter()
                .filter(|(_, max)| *max > 0)
                .map(|(route, max)| (route, Limit::new(max)))
                .collect(),
        );
        self
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;
    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            global: self.global.clone(),
            routes: self.routes.clone(),
        }
    }
}

/// The service of [`LoadShedLayer`].
#[derive(Debug, Clone)]
pub struct LoadShed<S> {
    inner: S,
    global: Option<Arc<Limit>>,
    routes: Arc<HashMap<Arc<str>, Arc<Limit>>>,
}

/// Holds one slot until dropped.
#[derive(Debug)]
pub struct Slot(Option<Arc<Limit>>);

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(l) = self.0.take() {
            l.current.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The slots a request holds (global and route): two fields, not a `Vec`, so holding
/// them allocates nothing.
#[derive(Debug, Default)]
pub struct Slots {
    global: Option<Slot>,
    route: Option<Slot>,
}

fn overloaded<RB: From<Bytes>, B>(req: &Request<B>, what: String) -> Response<RB> {
    let problem = Problem::new(503, "overloaded", format!("{what}; retry shortly"));
    let mut res: Response<RB> = crate::problem::for_request(req, problem);
    res.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    res
}

impl<S, B, RB> Service<Request<B>> for LoadShed<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    RB: From<Bytes>,
{
    type Response = Response<SlotBody<RB>>;
    type Error = S::Error;
    type Future = LoadShedFuture<S::Future, RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let mut slots = Slots::default();
        if let Some(global) = &self.global {
            match global.acquire() {
                Some(slot) => slots.global = Some(slot),
                None => {
                    let what = format!("more than {} requests in flight", global.max);
                    return LoadShedFuture::Shed {
                        response: Some(Box::new(overloaded(&req, what))),
                    };
                }
            }
        }
        let route = req.extensions().get::<MatchedRoute>();
        if let Some(limit) = route.and_then(|r| self.routes.get(&r.0)) {
            match limit.acquire() {
                Some(slot) => slots.route = Some(slot),
                None => {
                    let what = format!("more than {} requests in flight on this route", limit.max);
                    return LoadShedFuture::Shed {
                        response: Some(Box::new(overloaded(&req, what))),
                    };
                }
            }
        }
        LoadShedFuture::Inner {
            inner: self.inner.call(req),
            slot: Some(slots),
        }
    }
}

pin_project! {
    /// Response future of [`LoadShed`].
    #[project = LoadShedProj]
    #[allow(missing_docs)]
    pub enum LoadShedFuture<F, RB> {
        Inner { #[pin] inner: F, slot: Option<Slots> },
        // Boxed: a rare answer, and the future (moved into every layer above) stays small.
        Shed { response: Option<Box<Response<RB>>> },
    }
}

impl<F, RB, E> Future for LoadShedFuture<F, RB>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<SlotBody<RB>>, E>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            LoadShedProj::Inner { inner, slot } => {
                let res = ready!(inner.poll(cx))?;
                let slot = slot.take();
                Poll::Ready(Ok(res.map(|inner| SlotBody { inner, slot })))
            }
            LoadShedProj::Shed { response } => match response.take() {
                Some(r) => Poll::Ready(Ok(r.map(|inner| SlotBody { inner, slot: None }))),
                None => Poll::Pending,
            },
        }
    }
}

pin_project! {
    /// A response body that keeps its request's slot until it ends.
    pub struct SlotBody<B> {
        #[pin]
        inner: B,
        slot: Option<Slots>,
    }
}

impl<B: From<Bytes>> From<Bytes> for SlotBody<B> {
    fn from(bytes: Bytes) -> Self {
        SlotBody {
            inner: B::from(bytes),
            slot: None,
        }
    }
}

impl<B: Body> Body for SlotBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) {
            this.slot.take();
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
