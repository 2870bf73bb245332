use super::h1::{Decoded, ResponseDecoder};
use super::pool::Lease;
use crate::server::RequestBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project! {
    /// The gateway's response body: the upstream's, streamed, or one the gateway made.
    #[project = ProxyBodyProj]
    pub(crate) enum ProxyBody {
        Upstream { decoder: ResponseDecoder, lease: Option<Lease> },
        Full { #[pin] body: Full<Bytes> },
    }
}

impl ProxyBody {
    /// The upstream's body, read off the leased connection as `decoder` says. The
    /// connection returns to the pool when the body has ended (if the lease allows
    /// reuse); a body dropped before its end drops the lease, and with it the connection.
    pub(crate) fn upstream(decoder: ResponseDecoder, mut lease: Lease) -> Self {
        // A body that is over already (HEAD, 204, 304, `Content-Length: 0`), or that
        // arrived whole with the head: the connection goes back now, before the
        // response is written to the client, and the body is plain bytes.
        if let Some(whole) = decoder
            .remaining()
            .and_then(|n| lease.conn().take_buffered(n))
        {
            lease.release();
            return ProxyBody::full(whole);
        }
        ProxyBody::Upstream {
            decoder,
            lease: Some(lease),
        }
    }

    pub(crate) fn full(bytes: Bytes) -> Self {
        ProxyBody::Full {
            body: Full::new(bytes),
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.project() {
            ProxyBodyProj::Upstream { decoder, lease } => {
                let Some(held) = lease.as_mut() else {
                    return Poll::Ready(None);
                };
                let step = std::task::ready!(decoder.poll_next(held.conn(), cx));
                match step {
                    Ok(Decoded::Data(data)) => {
                        if decoder.is_done() {
                            // The last bytes: the server will not poll again.
                            if let Some(held) = lease.take() {
                                held.release();
                            }
                        }
                        Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                    Ok(Decoded::End) => {
                        if let Some(held) = lease.take() {
                            held.release();
                        }
                        Poll::Ready(None)
                    }
                    Err(e) => {
                        lease.take(); // a broken exchange: the connection is closed
                        Poll::Ready(Some(Err(e)))
                    }
                }
            }
            ProxyBodyProj::Full { body } => body
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|never| match never {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { decoder, .. } => decoder.is_done(),
            ProxyBody::Full { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { decoder, .. } => match decoder.remaining() {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
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
        Streaming { #[pin] body: http_body_util::Limited<RequestBody> },
        Buffered { bytes: Option<Bytes> },
    }
}

impl ProxyRequestBody {
    pub(crate) fn streaming(body: http_body_util::Limited<RequestBody>) -> Self {
        ProxyRequestBody::Streaming { body }
    }

    pub(crate) fn buffered(bytes: Bytes) -> Self {
        ProxyRequestBody::Buffered {
            bytes: (!bytes.is_empty()).then_some(bytes),
        }
    }

    /// The whole body, when it is already in memory (a webhook route's), taken out.
    pub(crate) fn take_buffered(&mut self) -> Option<Bytes> {
        match self {
            ProxyRequestBody::Buffered { bytes } => bytes.take(),
            ProxyRequestBody::Streaming { .. } => None,
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
            RequestBodyProj::Buffered { bytes } => {
                Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyRequestBody::Streaming { body } => body.is_end_stream(),
            ProxyRequestBody::Buffered { bytes } => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyRequestBody::Streaming { body } => body.size_hint(),
            ProxyRequestBody::Buffered { bytes } => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}
