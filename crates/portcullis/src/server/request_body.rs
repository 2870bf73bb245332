//! The body of a request as the gateway's stack sees it, whichever connection read it.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A request body: none at all (a request our own HTTP/1.1 connection read, which takes
/// only requests without one), or the body hyper reads (HTTP/2, and HTTP/1.1 requests
/// with a body or an upgrade).
#[derive(Debug)]
pub(crate) enum RequestBody {
    Empty,
    Hyper(Incoming),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Hyper(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Hyper(body) => body.size_hint(),
        }
    }
}
