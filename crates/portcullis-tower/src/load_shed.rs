//! Load shedding: above `max` concurrent requests, answer 503 problem+json with
//! `Retry-After` instead of queueing.
//!
//! A request counts from the moment it reaches this layer until its response body has
//! ended (or was dropped), so long streaming responses keep their slot. Unlike
//! `tower::limit::ConcurrencyLimit`, which waits for a slot, an overloaded gateway
//! should say so at once and let clients back off.

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use portcullis_core::problem::Problem;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tower::{Layer, Service};

/// Sheds load above `max` concurrent requests (0 = unlimited).
#[derive(Debug, Clone)]
pub struct LoadShedLayer {
    max: u64,
    current: Arc<AtomicU64>,
}

impl LoadShedLayer {
    /// At most `max` requests at once; 0 disables the limit.
    pub fn new(max: u64) -> Self {
        LoadShedLayer {
            max,
            current: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;
    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            max: self.max,
            current: self.current.clone(),
        }
    }
}

/// The service of [`LoadShedLayer`].
#[derive(Debug, Clone)]
pub struct LoadShed<S> {
    inner: S,
    max: u64,
    current: Arc<AtomicU64>,
}

/// Holds one slot until dropped.
#[derive(Debug)]
pub struct Slot(Option<Arc<AtomicU64>>);

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.fetch_sub(1, Ordering::AcqRel);
        }
    }
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
        if self.max == 0 {
            return LoadShedFuture::Inner {
                inner: self.inner.call(req),
                slot: Some(Slot(None)),
            };
        }
        let previous = self.current.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(Some(self.current.clone()));
        if previous >= self.max {
            drop(slot);
            let problem = Problem::new(
                503,
                "overloaded",
                format!("more than {} requests in flight; retry shortly", self.max),
            );
            let mut res: Response<RB> = crate::problem::for_request(&req, problem);
            res.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
            return LoadShedFuture::Shed {
                response: Some(res),
            };
        }
        LoadShedFuture::Inner {
            inner: self.inner.call(req),
            slot: Some(slot),
        }
    }
}

pin_project! {
    /// Response future of [`LoadShed`].
    #[project = LoadShedProj]
    #[allow(missing_docs)]
    pub enum LoadShedFuture<F, RB> {
        Inner { #[pin] inner: F, slot: Option<Slot> },
        Shed { response: Option<Response<RB>> },
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
        slot: Option<Slot>,
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
