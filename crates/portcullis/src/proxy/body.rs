use super::pool::Lease;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project! {
    /// The gateway's response body: the upstream's, streamed, or one the gateway made.
    #[project = ProxyBodyProj]
    pub(crate) enum ProxyBody {
        Upstream { #[pin] body: Incoming, lease: Option<Lease> },
        Full { #[pin] body: Full<Bytes> },
    }
}

impl ProxyBody {
    /// The upstream's body; its connection returns to the pool when the body has ended
    /// (`lease: None` for a connection that must not be reused). A body dropped before
    /// its end drops the lease, and with it the connection.
    pub(crate) fn upstream(body: Incoming, lease: Option<Lease>) -> Self {
        // An empty body (HEAD, 204, 304, `Content-Length: 0`) is over already: a server
        // that sees `is_end_stream` never polls it, so give the connection back now.
        let lease = match lease {
            Some(lease) if body.is_end_stream() => {
                lease.release();
                None
            }
            other => other,
        };
        ProxyBody::Upstream { body, lease }
    }

    pub(crate) fn full(bytes: Bytes) -> Self {
        ProxyBody::Full {
            body: Full::new(bytes),
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.project() {
            ProxyBodyProj::Upstream { mut body, lease } => {
                let frame = std::task::ready!(body.as_mut().poll_frame(cx));
                let ended = match &frame {
                    None => true,
                    Some(Ok(_)) => body.is_end_stream(),
                    Some(Err(_)) => {
                        lease.take(); // a broken exchange: the connection is not reused
                        false
                    }
                };
                if ended {
                    if let Some(lease) = lease.take() {
                        lease.release();
                    }
                }
                Poll::Ready(frame)
            }
            ProxyBodyProj::Full { body } => body
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|never| match never {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Full { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Full { body } => body.size_hint(),
        }
    }
}

/// Errors of a request body on its way upstream (the length limit's among them).
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project! {
    /// The body the proxy sends upstream: the client's, streamed through the length
    /// limit, or the bytes a webhook route buffered to verify (forwarded unchanged).
    #[project = RequestBodyProj]
    pub(crate) enum ProxyRequestBody {
        Streaming { #[pin] body: http_body_util::Limited<Incoming> },
        Buffered { #[pin] body: Full<Bytes> },
    }
}

impl ProxyRequestBody {
    pub(crate) fn streaming(body: http_body_util::Limited<Incoming>) -> Self {
        ProxyRequestBody::Streaming { body }
    }

    pub(crate) fn buffered(bytes: Bytes) -> Self {
        ProxyRequestBody::Buffered {
            body: Full::new(bytes),
        }
    }
}

impl Body for ProxyRequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            RequestBodyProj::Streaming { body } => body.poll_frame(cx),
            RequestBodyProj::Buffered { body } => body
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|never| match never {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyRequestBody::Streaming { body } => body.is_end_stream(),
            ProxyRequestBody::Buffered { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyRequestBody::Streaming { body } => body.size_hint(),
            ProxyRequestBody::Buffered { body } => body.size_hint(),
        }
    }
}
