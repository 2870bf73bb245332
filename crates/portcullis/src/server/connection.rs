//! Our own HTTP/1.1 server connection, for the requests that make up most API traffic:
//! HTTP/1.1 requests without a body and without an upgrade.
//!
//! hyper's server connection (dispatcher, body channel, head encoding) cost 10–12k
//! instructions per request, a third of what the gateway spends on a request it rejects.
//! This one reads a head, calls the stack, writes the response, and waits for the next
//! head, in one task with one reusable read buffer, one write buffer and one timer.
//!
//! It serves only what it can serve simply. The first request that has a body (a
//! `Content-Length` other than 0, or `Transfer-Encoding`), asks for an upgrade or
//! `Expect`, uses CONNECT or speaks HTTP/1.0 hands the connection, with every byte read
//! so far, to hyper for the rest of its life ([`Outcome::HandOff`]): request bodies,
//! `100 Continue` and protocol switches stay with hyper's code. Every head, the first
//! and the later ones, is judged by [`head::parse_head`], so a malformed, oversize or
//! slow head gets the gateway's problem+json answer wherever it comes.

use super::head::{self, FieldSpan, FieldSpans, Parsed, ParsedHead, Rejection, MAX_HEADERS};
use super::{call_ready, HeadLimits, RequestBody};
use crate::proxy::connection_tokens;
use crate::stack::{GatewayService, Stack};
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};
use http_body::{Body, SizeHint};
use portcullis_tower::{HeadLines, PeerAddr};
use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::{Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// How a connection served here ended.
pub(crate) enum Outcome {
    /// Closed, by the client or after a response that closed it.
    Done,
    /// A request this connection does not serve arrived: hyper serves the connection
    /// from here, starting with these bytes (that request's head and what followed it).
    HandOff(Bytes, TcpStream),
}

/// Read this much at a time; a head larger than that is read in several.
const READ_CHUNK: usize = 8 * 1024;
/// Body bytes gathered behind a response head before they are written.
const WRITE_GATHER: usize = 64 * 1024;
/// The write buffer a connection keeps between responses.
const KEEP_WRITE_BUFFER: usize = 8 * 1024;

/// Serves the connection from `buf`, which holds at least one complete head.
pub(crate) async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    service: &GatewayService,
    limits: HeadLimits,
    shutdown: &watch::Receiver<bool>,
    mut buf: BytesMut,
) -> Outcome {
    // One clone of the stack per connection (as for hyper's connections).
    let mut stack = service.stack.clone();
    let mut spans: FieldSpans = [FieldSpan::default(); MAX_HEADERS];
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    // The connection's one timer: each wait for a head moves its deadline later, which
    // costs a compare-and-swap while it is armed (see `timer.rs`).
    let mut deadline = pin!(tokio::time::sleep(limits.header_read_timeout));
    let mut stop_signal = shutdown.clone();
    let mut stop = pin!(stop_signal.changed());
    let mut stopping = false;
    loop {
        // 1. A complete head: parsed from what is buffered, else read (in time).
        let mut waiting_since: Option<Instant> = None;
        let parsed = loop {
            skip_empty_lines(&mut buf);
            if !buf.is_empty() {
                match head::parse_head(&buf, limits.max_header_bytes, waiting_since, &mut spans) {
                    Parsed::Complete(parsed) => break parsed,
                    Parsed::Bad(rejection) => {
                        head::answer_rejection(stream, peer, rejection, service).await;
                        return Outcome::Done;
                    }
                    Parsed::Partial => {}
                }
            }
            let since = *waiting_since.get_or_insert_with(|| {
                let now = tokio::time::Instant::now();
                deadline.as_mut().reset(now + limits.header_read_timeout);
                now.into_std()
            });
            reserve(&mut buf);
            tokio::select! {
                biased;
                read = stream.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => return Outcome::Done,
                    Ok(_) => {}
                },
                () = &mut deadline => {
                    if !buf.is_empty() {
                        let rejection = Rejection::head_timeout(limits, since);
                        head::answer_rejection(stream, peer, rejection, service).await;
                    }
                    return Outcome::Done;
                }
                _ = &mut stop, if !stopping => {
                    stopping = true;
                    if buf.is_empty() {
                        return Outcome::Done;
                    }
                }
            }
        };

        // 2. The request, or the hand-off to hyper.
        let raw = buf.split_to(parsed.len).freeze();
        let (req, shape) = match build_request(&raw, &parsed, &spans[..parsed.fields], peer) {
            Ok(built) => built,
            Err(detail) => {
                let started = waiting_since.unwrap_or_else(Instant::now);
                let rejection = Rejection::malformed(detail, &raw, &parsed, started);
                head::answer_rejection(stream, peer, rejection, service).await;
                return Outcome::Done;
            }
        };
        if shape.hand_off {
            let mut prefix = BytesMut::with_capacity(raw.len() + buf.len());
            prefix.extend_from_slice(&raw);
            prefix.extend_from_slice(&buf);
            return Outcome::HandOff(prefix.freeze(), stream);
        }
        drop(raw);

        // 3. The response. While it is worked on, a client that closes its connection
        // cancels the request (as hyper does), unless it has already sent more.
        let future = call_ready(&mut stack, &service.stack, req);
        let Some(response) = answer(future, &mut stream, &mut buf).await else {
            return Outcome::Done;
        };
        stopping = stopping || shutdown.has_changed().unwrap_or(true);
        let keep_alive = !shape.close && !stopping;
        let written = write_response(
            &mut stream,
            &mut out,
            &mut buf,
            response,
            shape.is_head,
            keep_alive,
        )
        .await;
        if out.capacity() > KEEP_WRITE_BUFFER {
            // A large response's buffer is not kept by an idle connection.
            out = Vec::with_capacity(1024);
        }
        match written {
            Ok(true) => {}
            Ok(false) => {
                let _ = stream.shutdown().await;
                return Outcome::Done;
            }
            Err(()) => return Outcome::Done,
        }
    }
}

/// Drops the empty lines a client may send between requests (RFC 9112 §2.2: a server
/// ignores at least one), so that they are neither a head nor a reason to wait for one.
fn skip_empty_lines(buf: &mut BytesMut) {
    let blank = buf
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    if blank > 0 {
        bytes::Buf::advance(buf, blank);
    }
}

/// Makes room for one more read, reusing the buffer's space once the heads cut from it
/// have been dropped.
fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 2 {
        buf.reserve(READ_CHUNK);
    }
}

type StackResponse = <Stack as tower::Service<Request<RequestBody>>>::Response;

type StackFuture = <Stack as tower::Service<Request<RequestBody>>>::Future;

/// The stack's answer; `None` when the client closed its connection before it.
///
/// A hand-written poll rather than `select!`: the response (some 300 bytes) is moved
/// once out of the stack's future instead of through the macro's output enum and the
/// `Result`s around it (each move a `memcpy`).
async fn answer(
    mut future: StackFuture,
    stream: &mut TcpStream,
    buf: &mut BytesMut,
) -> Option<StackResponse> {
    // While the buffer is empty, a read tells whether the client is still there; bytes
    // it reads are a pipelined request, kept for after this one.
    let mut watching = buf.is_empty();
    if watching {
        reserve(buf);
    }
    let mut read = pin!(stream.read_buf(buf));
    poll_fn(|cx| {
        if let Poll::Ready(answer) = future.as_mut().poll(cx) {
            // The stack's error is `Infallible`: another error type fails to compile
            // here instead of leaving the request waiting.
            let Ok(response) = answer;
            return Poll::Ready(Some(response));
        }
        if watching {
            match read.as_mut().poll(cx) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(None),
                Poll::Ready(Ok(_)) => watching = false,
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}

/// What the connection must know of a request besides the request itself.
#[derive(Debug, Default, PartialEq)]
struct Shape {
    /// The client asked to close after this response (`Connection: close`).
    close: bool,
    /// A HEAD request: the response has no body.
    is_head: bool,
    /// Not served here (see the module documentation).
    hand_off: bool,
}

/// Cuts the request out of its head's bytes, sharing them instead of copying.
fn build_request(
    raw: &Bytes,
    parsed: &ParsedHead,
    spans: &[FieldSpan],
    peer: SocketAddr,
) -> Result<(Request<RequestBody>, Shape), String> {
    let slice = |(start, end): (usize, usize)| raw.slice(start..end);
    let method = Method::from_bytes(&raw[parsed.method.0..parsed.method.1])
        .map_err(|_| "malformed request: invalid method".to_owned())?;
    let uri = Uri::from_maybe_shared(slice(parsed.target))
        .map_err(|e| format!("malformed request: invalid target: {e}"))?;
    let mut shape = Shape {
        is_head: method == Method::HEAD,
        hand_off: !parsed.http11 || method == Method::CONNECT,
        ..Shape::default()
    };
    // Room for the fields the layers add (X-Request-ID) without growing the map.
    let mut headers = HeaderMap::with_capacity(spans.len() + 4);
    let mut has_connection = false;
    for span in spans {
        let name = HeaderName::from_bytes(&raw[span.name.0..span.name.1])
            .map_err(|_| "malformed request: invalid header name".to_owned())?;
        let value = HeaderValue::from_maybe_shared(slice(span.value))
            .map_err(|_| format!("malformed request: invalid value of {name}"))?;
        match name {
            header::CONTENT_LENGTH => {
                // `parse_head` has checked it is digits, and that repeats agree.
                shape.hand_off |= value.as_bytes().iter().any(|b| *b != b'0');
            }
            header::TRANSFER_ENCODING | header::UPGRADE | header::EXPECT => shape.hand_off = true,
            header::CONNECTION => has_connection = true,
            _ => {}
        }
        headers.append(name, value);
    }
    if has_connection {
        for token in connection_tokens(&headers) {
            shape.close |= token.eq_ignore_ascii_case("close");
            shape.hand_off |= token.eq_ignore_ascii_case("upgrade");
        }
    }
    let mut req = Request::new(RequestBody::Empty);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    req.extensions_mut().insert(PeerAddr(peer));
    Ok((req, shape))
}

/// How a response body is delimited on the wire (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    /// No body is sent: HEAD, 1xx, 204, 304.
    None,
    Length(u64),
    Chunked,
}

/// Chooses the framing of a response, and the framing header to write for it (the
/// response's own `Content-Length` and `Transfer-Encoding` are never written as they
/// are). A `Content-Length` the response carries is kept (a HEAD or 304 answer
/// describes the body it did not send); else the body's exact size; else chunked.
fn framing(
    status: StatusCode,
    headers: &HeaderMap,
    size: &SizeHint,
    is_head: bool,
) -> (Framing, Option<u64>) {
    if status.is_informational() || status == StatusCode::NO_CONTENT {
        return (Framing::None, None);
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if is_head || status == StatusCode::NOT_MODIFIED {
        let length = declared.or(size.exact().filter(|n| is_head && *n > 0));
        return (Framing::None, length);
    }
    match declared.or(size.exact()) {
        Some(n) => (Framing::Length(n), Some(n)),
        None => (Framing::Chunked, None),
    }
}

/// Writes the response; `Ok(true)` when the connection can serve another request,
/// `Err` when it broke.
async fn write_response<B>(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    buf: &mut BytesMut,
    response: http::Response<B>,
    is_head: bool,
    keep_alive: bool,
) -> Result<bool, ()>
where
    B: Body<Data = Bytes>,
{
    let (mut parts, body) = response.into_parts();
    let (mut framing, mut length) =
        framing(parts.status, &parts.headers, &body.size_hint(), is_head);
    let closes = asks_to_close(&parts.headers);
    let mut keep_alive = keep_alive && !closes;
    if parts.status.is_informational() {
        // Only a 101 after an upgrade is a final 1xx, and upgrades are hyper's: a client
        // would take any other as interim and wait on. (As hyper does: a 500.)
        tracing::warn!(status = %parts.status, "a 1xx response outside an upgrade");
        parts.status = StatusCode::INTERNAL_SERVER_ERROR;
        (framing, length, keep_alive) = (Framing::None, Some(0), false);
    }
    out.clear();
    encode_head(out, &mut parts, framing, length, !keep_alive && !closes);
    if framing == Framing::None {
        drop(body);
        write_all(stream, out).await?;
        return Ok(keep_alive);
    }
    let complete = write_body(stream, out, buf, body, framing).await?;
    Ok(keep_alive && complete)
}

/// Whether a layer of ours asked for the connection to close after this response.
fn asks_to_close(headers: &HeaderMap) -> bool {
    connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("close"))
}

/// Writes the status line and fields (the map's, then the layers' [`HeadLines`]);
/// `add_close` adds `Connection: close` (beside any `Connection` field the response has,
/// which then reads as "..., close").
fn encode_head(
    out: &mut Vec<u8>,
    parts: &mut http::response::Parts,
    framing: Framing,
    length: Option<u64>,
    add_close: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut has_date = false;
    let mut lines = parts.extensions.get_mut::<HeadLines>();
    for (name, value) in &parts.headers {
        match *name {
            header::CONTENT_LENGTH | header::TRANSFER_ENCODING => continue,
            header::DATE => has_date = true,
            _ => {}
        }
        if lines.as_deref_mut().is_some_and(|l| l.shadows(name)) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(lines) = lines {
        lines.write_to(out);
    }
    if let Some(n) = length {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        out.extend_from_slice(b"\r\n");
    } else if framing == Framing::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        http_date(|date| out.extend_from_slice(date));
        out.extend_from_slice(b"\r\n");
    }
    if add_close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Calls `f` with the current time as an HTTP date, formatted once a second per thread
/// (as hyper does).
fn http_date(f: impl FnOnce(&[u8])) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != second {
            *at = second;
            *text = httpdate::fmt_http_date(now);
        }
        f(text.as_bytes());
    });
}

/// Writes the head in `out` and the body after it; `Ok(false)` when the body ended
/// short of its `Content-Length` (the connection cannot be reused then).
async fn write_body<B>(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    buf: &mut BytesMut,
    body: B,
    framing: Framing,
) -> Result<bool, ()>
where
    B: Body<Data = Bytes>,
{
    let mut sent: u64 = 0;
    // The body lives in this block only: it is dropped before the last bytes go out, so
    // that its record (log line, metrics) is made before the client sees the response end
    // (the price: a last write that fails is still recorded as a complete response).
    {
        let mut body = pin!(body);
        loop {
            // Gather what the body has ready behind the head; write before waiting.
            let frame = match poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    write_all(stream, out).await?;
                    next_frame_unless_gone(stream, buf, body.as_mut()).await?
                }
            };
            let data = match frame {
                None => break,
                Some(Err(_)) => return Err(()),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    // Trailers are not forwarded.
                    Err(_) => continue,
                },
            };
            if data.is_empty() {
                continue;
            }
            sent += data.len() as u64;
            match framing {
                Framing::Length(n) if sent > n => return Err(()),
                Framing::Chunked => {
                    let mut hex = [0u8; 16];
                    out.extend_from_slice(chunk_size(data.len(), &mut hex));
                    out.extend_from_slice(b"\r\n");
                    gather(stream, out, &data).await?;
                    out.extend_from_slice(b"\r\n");
                }
                _ => gather(stream, out, &data).await?,
            }
            if body.is_end_stream() {
                break;
            }
        }
    }
    let complete = match framing {
        Framing::Length(n) => sent == n,
        Framing::Chunked => {
            out.extend_from_slice(b"0\r\n\r\n");
            true
        }
        Framing::None => true,
    };
    write_all(stream, out).await?;
    Ok(complete)
}

/// The body's next frame; `Err` when the client closes its connection first (as hyper
/// does: a streaming response to a client that left is dropped at once, not at its next
/// chunk). Bytes the client sends meanwhile are kept in `buf` for the next request.
async fn next_frame_unless_gone<B: Body>(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    mut body: Pin<&mut B>,
) -> Result<Option<Result<http_body::Frame<B::Data>, B::Error>>, ()> {
    if !buf.is_empty() {
        return Ok(poll_fn(|cx| body.as_mut().poll_frame(cx)).await);
    }
    reserve(buf);
    tokio::select! {
        biased;
        frame = poll_fn(|cx| body.as_mut().poll_frame(cx)) => Ok(frame),
        read = stream.read_buf(buf) => match read {
            Ok(0) | Err(_) => Err(()),
            Ok(_) => Ok(poll_fn(|cx| body.as_mut().poll_frame(cx)).await),
        },
    }
}

/// `len` in hexadecimal, as a chunk size line begins.
fn chunk_size(len: usize, hex: &mut [u8; 16]) -> &[u8] {
    let mut at = hex.len();
    let mut rest = len;
    loop {
        at -= 1;
        hex[at] = b"0123456789abcdef"[rest & 0xf];
        rest >>= 4;
        if rest == 0 {
            return &hex[at..];
        }
    }
}

/// Appends `data` behind what `out` holds, or, when that would make it large, writes
/// `out` and then `data` as it is.
async fn gather(stream: &mut TcpStream, out: &mut Vec<u8>, data: &[u8]) -> Result<(), ()> {
    if out.len() + data.len() <= WRITE_GATHER {
        out.extend_from_slice(data);
        return Ok(());
    }
    write_all(stream, out).await?;
    stream.write_all(data).await.map_err(|_| ())
}

/// Writes and empties `out`.
async fn write_all(stream: &mut TcpStream, out: &mut Vec<u8>) -> Result<(), ()> {
    if out.is_empty() {
        return Ok(());
    }
    let written = stream.write_all(out).await.map_err(|_| ());
    out.clear();
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_tower::head_lines::Precedence;

    fn parse(raw: &'static [u8]) -> Result<(Request<RequestBody>, Shape), String> {
        let mut spans = [FieldSpan::default(); MAX_HEADERS];
        let Parsed::Complete(parsed) = head::parse_head(raw, 8192, None, &mut spans) else {
            panic!("not a complete head");
        };
        let raw = Bytes::from_static(raw);
        build_request(
            &raw,
            &parsed,
            &spans[..parsed.fields],
            "127.0.0.1:9".parse().unwrap(),
        )
    }

    #[test]
    fn builds_the_request_from_the_head() {
        let (req, shape) =
            parse(b"GET /a/b?c=d HTTP/1.1\r\nHost: x.test\r\nX-Two: 1\r\nx-two: 2\r\n\r\n")
                .unwrap();
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri().path(), "/a/b");
        assert_eq!(req.uri().query(), Some("c=d"));
        assert_eq!(req.headers()["host"], "x.test");
        let twos: Vec<_> = req.headers().get_all("x-two").iter().collect();
        assert_eq!(twos, ["1", "2"]);
        assert!(req.body().is_end_stream());
        assert_eq!(shape, Shape::default());
        assert!(req.extensions().get::<PeerAddr>().is_some());
    }

    #[test]
    fn hands_off_what_it_does_not_serve() {
        let hand_off = |raw: &'static [u8]| parse(raw).unwrap().1.hand_off;
        assert!(hand_off(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n"
        ));
        assert!(hand_off(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(hand_off(
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        ));
        assert!(hand_off(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, upgrade\r\n\r\n"
        ));
        assert!(hand_off(
            b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n"
        ));
        assert!(hand_off(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(hand_off(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"));
        assert!(!hand_off(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 00\r\n\r\n"
        ));
        assert!(!hand_off(b"DELETE /x HTTP/1.1\r\nHost: a\r\n\r\n"));
    }

    #[test]
    fn notes_close_and_head() {
        let (_, shape) =
            parse(b"HEAD / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\n\r\n").unwrap();
        assert!(shape.close && shape.is_head && !shape.hand_off);
    }

    #[test]
    fn a_target_that_is_no_uri_is_an_error() {
        assert!(parse(b"GET http://[::1 HTTP/1.1\r\nHost: a\r\n\r\n").is_err());
    }

    #[test]
    fn frames_responses() {
        let mut headers = HeaderMap::new();
        let exact = SizeHint::with_exact(5);
        let unknown = SizeHint::default();
        let ok = StatusCode::OK;
        assert_eq!(
            framing(ok, &headers, &exact, false),
            (Framing::Length(5), Some(5))
        );
        assert_eq!(
            framing(ok, &headers, &unknown, false),
            (Framing::Chunked, None)
        );
        assert_eq!(
            framing(ok, &headers, &exact, true),
            (Framing::None, Some(5))
        );
        assert_eq!(
            framing(ok, &headers, &SizeHint::with_exact(0), true),
            (Framing::None, None),
            "a HEAD answer whose body is known to be empty claims no length"
        );
        assert_eq!(
            framing(StatusCode::NO_CONTENT, &headers, &exact, false),
            (Framing::None, None)
        );
        assert_eq!(
            framing(StatusCode::NOT_MODIFIED, &headers, &exact, false),
            (Framing::None, None),
            "a 304 says no length it was not given"
        );
        assert_eq!(
            framing(StatusCode::CONTINUE, &headers, &exact, false),
            (Framing::None, None)
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("42"));
        assert_eq!(
            framing(ok, &headers, &unknown, false),
            (Framing::Length(42), Some(42))
        );
        assert_eq!(
            framing(
                StatusCode::NOT_MODIFIED,
                &headers,
                &SizeHint::with_exact(0),
                false
            ),
            (Framing::None, Some(42))
        );
        assert_eq!(
            framing(ok, &headers, &SizeHint::with_exact(0), true),
            (Framing::None, Some(42))
        );
    }

    #[test]
    fn writes_chunk_sizes_in_hex() {
        let mut hex = [0u8; 16];
        assert_eq!(chunk_size(0, &mut hex), b"0");
        assert_eq!(chunk_size(255, &mut hex), b"ff");
        assert_eq!(chunk_size(65536, &mut hex), b"10000");
    }

    #[test]
    fn encodes_the_head_with_date_and_close() {
        let mut res = http::Response::new(());
        *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        res.headers_mut()
            .insert("x-a", HeaderValue::from_static("1"));
        res.headers_mut()
            .insert("x-b", HeaderValue::from_static("upstream"));
        res.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("7"));
        // The layers' lines: x-a replaces the map's, x-b only where there is none.
        let mut lines = HeadLines::default();
        lines.push(&HeaderName::from_static("x-a"), b"2", Precedence::Replace);
        lines.push(&HeaderName::from_static("x-b"), b"3", Precedence::Default);
        lines.push(&HeaderName::from_static("x-c"), b"4", Precedence::Default);
        res.extensions_mut().insert(lines);
        let (mut parts, ()) = res.into_parts();
        let mut out = Vec::new();
        encode_head(&mut out, &mut parts, Framing::Length(7), Some(7), true);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(
                "HTTP/1.1 429 Too Many Requests\r\nx-b: upstream\r\nx-a: 2\r\nx-c: 4\r\ncontent-length: 7\r\ndate: "
            ),
            "{text}"
        );
        assert!(
            text.ends_with(" GMT\r\nconnection: close\r\n\r\n"),
            "{text}"
        );
        assert_eq!(text.matches("content-length").count(), 1);
    }
}
