//! The HTTP/1.1 client side of the proxy: one keep-alive connection to the upstream,
//! driven by the request that holds it.
//!
//! Why not hyper's client connection: it runs every connection as a task of its own
//! and hands each request to it, and each response and body chunk back, through
//! channels, so one proxied request costs several wake-ups between tasks. Here the
//! request's own task writes the request, reads the response head, and (through
//! [`ResponseDecoder`]) the body: one task, no channels.
//!
//! What it accepts from the upstream follows RFC 9112 strictly, because a response
//! misframed here would be handed to the next client on the same connection: one
//! `Content-Length` value (repeats must agree), `Transfer-Encoding` winning over
//! `Content-Length` and the connection then closed, chunk lines ending in CRLF, bytes
//! beyond a response's end never taken as the next response. Anything else is an
//! invalid response (502) and the connection is closed.

use super::body::{BoxError, ProxyRequestBody};
use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use http_body::Body;
use std::future::{poll_fn, Future as _};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

/// The largest response head accepted (status line and header fields).
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most interim (1xx) responses skipped before a final one.
const MAX_INTERIM: usize = 16;
/// The most header fields accepted in a response head.
const MAX_HEADERS: usize = 128;
/// How much room each read asks for.
const READ_CHUNK: usize = 8 * 1024;
/// The longest chunk-size line (with extensions) and the most trailer bytes accepted.
const MAX_CHUNK_LINE: usize = 4 * 1024;
const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Request body frames up to this size are copied next to their chunk framing and
/// written with one call; larger ones are written as they are.
const COALESCE_BYTES: usize = 16 * 1024;

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) enum ExchangeError {
    /// The connection failed or closed before a single byte of a response arrived:
    /// nothing was answered, so a request that may be repeated can be sent again.
    Closed(io::Error),
    /// The upstream sent something that is not a valid HTTP/1.1 response, or the
    /// connection failed in the middle of one.
    Invalid(String),
    /// The request body failed on its way (the client's upload broke, or went over the
    /// length limit).
    Body(BoxError),
}

impl std::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExchangeError::Closed(e) => write!(f, "connection closed before a response: {e}"),
            ExchangeError::Invalid(why) => write!(f, "invalid response: {why}"),
            ExchangeError::Body(e) => write!(f, "request body: {e}"),
        }
    }
}

/// Header fields a caller writes into the request head itself, in place of any of the
/// same names the request carries.
pub(crate) trait ExtraFields {
    /// Whether the request's own field `name` is left out.
    fn replaces(&self, name: &HeaderName) -> bool;
    /// Writes the fields, each line ending in CRLF; `headers` are the request's own.
    fn write(&self, headers: &HeaderMap, buf: &mut Vec<u8>);
}

/// How a response body is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body: a HEAD request, or a 204 or 304.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the upstream closes the connection.
    UntilClose,
    /// 101 Switching Protocols: the connection now belongs to the upgraded protocol.
    Upgrade,
}

/// A response head read from the upstream.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    pub(crate) framing: Framing,
    /// Whether the connection may carry another request once the body has ended.
    pub(crate) keep_alive: bool,
}

/// One connection to the upstream.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    read_buf: BytesMut,
    /// The request head being written (kept to reuse its allocation).
    write_buf: Vec<u8>,
    /// Scratch for parsing response heads (kept to reuse its allocation).
    spans: Vec<Span>,
    /// The deadline of the exchange under way, kept from one exchange to the next (see
    /// [`Conn::timer_until`]).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Conn {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Conn {
            stream,
            read_buf: BytesMut::new(),
            write_buf: Vec::with_capacity(1024),
            spans: Vec::new(),
            timer: None,
        }
    }

    /// The connection's timer, set to `deadline`; give it back with [`Conn::keep_timer`].
    ///
    /// A timer made for each request registers in tokio's timer wheel and leaves it again
    /// (each a lock and a list operation). This one stays registered from one exchange to
    /// the next: a later deadline is one compare-and-swap while it is armed. When an old
    /// deadline passes while the connection idles, tokio wakes the task that last waited
    /// on it once for nothing, and the next exchange registers the timer again.
    pub(crate) fn timer_until(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Pin<Box<tokio::time::Sleep>> {
        match self.timer.take() {
            Some(mut timer) => {
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    pub(crate) fn keep_timer(&mut self, timer: Pin<Box<tokio::time::Sleep>>) {
        self.timer = Some(timer);
    }

    /// Hands the socket over (to a protocol switch) with the bytes already read from it.
    pub(crate) fn into_parts(self) -> (TcpStream, Bytes) {
        (self.stream, self.read_buf.freeze())
    }

    /// The next `len` bytes, when they have all been read already.
    pub(crate) fn take_buffered(&mut self, len: u64) -> Option<Bytes> {
        let len = usize::try_from(len)
            .ok()
            .filter(|&n| n <= self.read_buf.len())?;
        Some(self.read_buf.split_to(len).freeze())
    }

    /// Whether nothing has been read beyond what was consumed.
    pub(crate) fn is_drained(&self) -> bool {
        self.read_buf.is_empty()
    }

    /// Whether an idle connection can take a request: nothing arrived while it was idle
    /// (the upstream closing it, or sending unasked-for bytes, makes it unusable). Reads
    /// end short of the buffer, which clears the socket's readiness, so a connection
    /// with no readiness set has received nothing: answered without a system call.
    pub(crate) fn is_reusable(&mut self) -> bool {
        if !self.is_drained() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match std::pin::pin!(self.stream.ready(Interest::READABLE)).poll(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(ready)) if ready.is_read_closed() || ready.is_error() => false,
            // Readiness left over from a read that filled the buffer: look.
            Poll::Ready(Ok(_)) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Sends the request and reads the response head. The body, if any, is read through
    /// a [`ResponseDecoder`] afterwards.
    pub(crate) async fn exchange(
        &mut self,
        parts: &http::request::Parts,
        body: &mut ProxyRequestBody,
        extra: &impl ExtraFields,
    ) -> Result<ResponseHead, ExchangeError> {
        let length = request_length(body);
        self.write_buf.clear();
        encode_head(&mut self.write_buf, parts, extra, length);
        if let Some(bytes) = body.take_buffered() {
            self.write_buf.extend_from_slice(&bytes);
        }
        let sent = match self.stream.write_all(&self.write_buf).await {
            Err(e) => return Err(ExchangeError::Closed(e)),
            Ok(()) if body.is_end_stream() => Ok(()),
            Ok(()) => match self.send_body(body, length.is_none()).await {
                Err(SendError::Body(e)) => return Err(ExchangeError::Body(e)),
                Err(SendError::Io(e)) => Err(e),
                Err(SendError::Answered) => Err(io::Error::other("answered before the body ended")),
                Ok(()) => Ok(()),
            },
        };
        let head = self.read_head(parts.method == Method::HEAD).await;
        match (sent, head) {
            // A 2xx to CONNECT would turn the connection into a tunnel: never reused.
            (Ok(()), Ok(mut head)) if parts.method == Method::CONNECT => {
                head.keep_alive = false;
                Ok(head)
            }
            (Ok(()), head) => head,
            // An upstream may answer before it has read the whole body (413, say), and
            // close or stop reading: its answer stands, and the connection is not reused.
            (Err(_), Ok(mut head)) => {
                head.keep_alive = false;
                Ok(head)
            }
            (Err(e), Err(_)) => Err(ExchangeError::Invalid(format!(
                "the upstream stopped reading the request body: {e}"
            ))),
        }
    }

    /// Streams the request body, chunked when its length is not known, while watching
    /// the connection: an upstream may give its final answer (a 413, a 401) before it has
    /// read the body, and stop reading. The upload stops there and the answer stands
    /// (waiting on would hold the request until its timeout). Interim answers (100
    /// Continue) are passed over.
    async fn send_body(
        &mut self,
        body: &mut ProxyRequestBody,
        chunked: bool,
    ) -> Result<(), SendError> {
        let Conn {
            stream,
            read_buf,
            write_buf,
            ..
        } = self;
        let (mut reader, mut writer) = stream.split();
        let mut upload = std::pin::pin!(upload(&mut writer, write_buf, body, chunked));
        loop {
            read_buf.reserve(READ_CHUNK);
            tokio::select! {
                biased;
                done = &mut upload => return done,
                read = tokio::io::AsyncReadExt::read_buf(&mut reader, read_buf) => match read {
                    Ok(0) => return Err(SendError::Io(io::ErrorKind::UnexpectedEof.into())),
                    Err(e) => return Err(SendError::Io(e)),
                    Ok(_) if final_answer_begun(read_buf) => return Err(SendError::Answered),
                    Ok(_) => {}
                },
            }
        }
    }

    /// Reads until a final response head is complete; interim 1xx responses other than
    /// 101 are skipped.
    async fn read_head(&mut self, head_request: bool) -> Result<ResponseHead, ExchangeError> {
        let mut received = false;
        let mut interim = 0;
        loop {
            if !self.read_buf.is_empty() {
                let parsed = parse_head(
                    &mut self.read_buf,
                    &mut self.spans,
                    &mut interim,
                    head_request,
                )?;
                if let Some(head) = parsed {
                    return Ok(head);
                }
                if self.read_buf.len() >= MAX_HEAD_BYTES {
                    return Err(ExchangeError::Invalid(format!(
                        "response head larger than {MAX_HEAD_BYTES} bytes"
                    )));
                }
            }
            self.read_buf.reserve(READ_CHUNK);
            let read = poll_fn(|cx| poll_read(&mut self.stream, &mut self.read_buf, cx)).await;
            match read {
                Ok(0) if !received => {
                    return Err(ExchangeError::Closed(io::ErrorKind::UnexpectedEof.into()))
                }
                Ok(0) => {
                    return Err(ExchangeError::Invalid(
                        "connection closed in the middle of the response head".into(),
                    ))
                }
                Ok(_) => received = true,
                Err(e) if !received => return Err(ExchangeError::Closed(e)),
                Err(e) => return Err(ExchangeError::Invalid(e.to_string())),
            }
        }
    }
}

enum SendError {
    Io(io::Error),
    Body(BoxError),
    /// The upstream gave its final answer before the body was all sent.
    Answered,
}

/// Writes the request body, chunked when its length is not known.
async fn upload(
    writer: &mut (impl tokio::io::AsyncWrite + Unpin),
    buf: &mut Vec<u8>,
    body: &mut ProxyRequestBody,
    chunked: bool,
) -> Result<(), SendError> {
    let mut body = Pin::new(body);
    while let Some(frame) = poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let frame = frame.map_err(SendError::Body)?;
        // Trailers are not forwarded (hop-by-hop in practice, and rarely sent).
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        if !chunked {
            writer.write_all(&data).await?;
            continue;
        }
        buf.clear();
        push_chunk_size(buf, data.len());
        if data.len() <= COALESCE_BYTES {
            buf.extend_from_slice(&data);
            buf.extend_from_slice(b"\r\n");
            writer.write_all(buf).await?;
        } else {
            writer.write_all(buf).await?;
            writer.write_all(&data).await?;
            writer.write_all(b"\r\n").await?;
        }
    }
    if chunked {
        writer.write_all(b"0\r\n\r\n").await?;
    }
    Ok(())
}

/// Whether `buf` (what the upstream sent while the request body was still going up)
/// begins a final response. Complete interim responses are taken off the front; twelve
/// bytes (`HTTP/1.1 1xx`) tell an interim response from a final one.
fn final_answer_begun(buf: &mut BytesMut) -> bool {
    loop {
        if buf.len() < 12 {
            return false;
        }
        if buf[9] != b'1' {
            return true;
        }
        let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let (response, parsed) = parse_response(buf, &mut fields);
        match parsed {
            Ok(httparse::Status::Complete(len)) if response.code != Some(101) => buf.advance(len),
            Ok(httparse::Status::Partial) => return false,
            // A switch, or bytes that are no response: the head reader decides.
            _ => return true,
        }
    }
}

impl From<io::Error> for SendError {
    fn from(e: io::Error) -> Self {
        SendError::Io(e)
    }
}

/// Reads what the socket has into `buf`'s spare room (reserved by the caller).
fn poll_read(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    // tokio's read_buf, inline: a short read clears the socket's readiness, which
    // `Conn::is_reusable` relies on.
    let mut read = std::pin::pin!(tokio::io::AsyncReadExt::read_buf(stream, buf));
    read.as_mut().poll(cx)
}

/// The request body's length when it is known (`None`: send it chunked). Only the body
/// says: a length limit reports an exact 0 when no byte may pass, for a body that is not
/// over, and such a body goes chunked (the limit then fails it, and the upstream never
/// sees a complete request).
fn request_length(body: &ProxyRequestBody) -> Option<u64> {
    if body.is_end_stream() {
        return Some(0);
    }
    body.size_hint().exact().filter(|&n| n > 0)
}

/// Writes the request line and header fields, with the framing field the body needs.
fn encode_head(
    buf: &mut Vec<u8>,
    parts: &http::request::Parts,
    extra: &impl ExtraFields,
    length: Option<u64>,
) {
    buf.extend_from_slice(parts.method.as_str().as_bytes());
    buf.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    buf.extend_from_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    buf.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        // The framing field is ours to write, from the body actually sent.
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || extra.replaces(name)
        {
            continue;
        }
        buf.extend_from_slice(name.as_str().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(value.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    extra.write(&parts.headers, buf);
    match length {
        // A request without a body carries no framing field, except where the method
        // implies a body and the upstream would otherwise wait for one.
        Some(0) => {
            if parts.headers.contains_key(header::CONTENT_LENGTH)
                || matches!(parts.method, Method::POST | Method::PUT | Method::PATCH)
            {
                buf.extend_from_slice(b"content-length: 0\r\n");
            }
        }
        Some(n) => {
            buf.extend_from_slice(b"content-length: ");
            buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
        None => buf.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    buf.extend_from_slice(b"\r\n");
}

fn push_chunk_size(buf: &mut Vec<u8>, len: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        buf.push(HEX[(len >> (i * 4)) & 0xf]);
    }
    buf.extend_from_slice(b"\r\n");
}

/// Parses the response head at the front of `buf`, its fields into `fields` (left
/// uninitialised: zeroing 128 of them cost more than the parse).
fn parse_response<'h, 'b>(
    buf: &'b [u8],
    fields: &'h mut [MaybeUninit<httparse::Header<'b>>],
) -> (httparse::Response<'h, 'b>, httparse::Result<usize>) {
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        fields,
    );
    (response, parsed)
}

/// Where a header field's name and value lie in a response head: (name offset, name
/// length, value offset, value length).
type Span = (usize, usize, usize, usize);

/// Parses a complete final response head off the front of `buf`; `Ok(None)` when more
/// bytes are needed. Interim responses (1xx other than 101) are consumed and skipped.
fn parse_head(
    buf: &mut BytesMut,
    spans: &mut Vec<Span>,
    interim: &mut usize,
    head_request: bool,
) -> Result<Option<ResponseHead>, ExchangeError> {
    loop {
        let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let (response, parsed) = parse_response(buf, &mut fields);
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(ExchangeError::Invalid(e.to_string())),
        };
        let code = response.code.unwrap_or_default();
        let status = StatusCode::from_u16(code)
            .map_err(|_| ExchangeError::Invalid(format!("status code {code}")))?;
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            *interim += 1;
            if *interim > MAX_INTERIM {
                return Err(ExchangeError::Invalid(format!(
                    "more than {MAX_INTERIM} interim responses"
                )));
            }
            buf.advance(len);
            continue;
        }
        let version = if response.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        // Where each field's name and value lie in the head, so the values can share
        // the head's bytes instead of each being copied.
        let base = buf.as_ptr() as usize;
        spans.clear();
        spans.extend(response.headers.iter().map(|field| {
            (
                field.name.as_ptr() as usize - base,
                field.name.len(),
                field.value.as_ptr() as usize - base,
                field.value.len(),
            )
        }));
        let head = buf.split_to(len).freeze();
        // No room for the fields the layers above add: on our HTTP/1.1 connection they
        // are head lines, not map fields, and room for sixteen more made the map a 2.5 kB
        // allocation (past the allocator's small sizes).
        let mut headers = HeaderMap::with_capacity(spans.len());
        let mut close = false;
        for &(name_at, name_len, value_at, value_len) in spans.iter() {
            let name = HeaderName::from_bytes(&head[name_at..name_at + name_len])
                .map_err(|_| ExchangeError::Invalid("invalid header name".into()))?;
            if name == header::CONNECTION {
                // Hop-by-hop, and never passed on: read here rather than added to the
                // map and taken out again, unless it names other fields to remove, or
                // asks for an upgrade (both left to the proxy's hop-by-hop stripping).
                if let Some(says_close) = keep_alive_or_close(&head[value_at..value_at + value_len])
                {
                    close |= says_close;
                    continue;
                }
            }
            let value = HeaderValue::from_maybe_shared(head.slice(value_at..value_at + value_len))
                .map_err(|_| ExchangeError::Invalid(format!("invalid value of {name}")))?;
            headers.append(name, value);
        }
        let (framing, framing_keep_alive) = framing(status, head_request, &mut headers)?;
        let keep_alive = framing_keep_alive
            && version == Version::HTTP_11
            && !close
            && !super::headers::connection_tokens(&headers)
                .any(|t| t.eq_ignore_ascii_case("close"));
        return Ok(Some(ResponseHead {
            status,
            version,
            headers,
            framing,
            keep_alive,
        }));
    }
}

/// How the body is delimited, and whether that framing lets the connection be reused.
fn framing(
    status: StatusCode,
    head_request: bool,
    headers: &mut HeaderMap,
) -> Result<(Framing, bool), ExchangeError> {
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Ok((Framing::Upgrade, false));
    }
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Empty, true));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        let chunked_last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .rfind(|t| !t.is_empty())
            .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        // Both fields at once: Transfer-Encoding wins, and the connection is not
        // trusted with another request (RFC 9112 section 6.3).
        let both = headers.remove(header::CONTENT_LENGTH).is_some();
        return Ok(if chunked_last {
            (Framing::Chunked, !both)
        } else {
            (Framing::UntilClose, false)
        });
    }
    let mut length = None;
    let mut repeated = false;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let n = parse_decimal(part.trim_ascii())
                .ok_or_else(|| ExchangeError::Invalid("invalid Content-Length".into()))?;
            if length.is_some_and(|l| l != n) {
                return Err(ExchangeError::Invalid("conflicting Content-Length".into()));
            }
            repeated |= length.is_some();
            length = Some(n);
        }
    }
    if let (true, Some(n)) = (repeated, length) {
        // The same length given more than once: passed on once (RFC 9110 section 8.6).
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    Ok(match length {
        Some(n) => (Framing::Length(n), true),
        None => (Framing::UntilClose, false),
    })
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

/// For a `Connection` value made only of `keep-alive` and `close` options: whether it
/// says `close`. `None` for any other value.
fn keep_alive_or_close(value: &[u8]) -> Option<bool> {
    let mut close = false;
    for option in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
        if option.eq_ignore_ascii_case(b"close") {
            close = true;
        } else if !option.is_empty() && !option.eq_ignore_ascii_case(b"keep-alive") {
            return None;
        }
    }
    Some(close)
}

/// Reads a response body off its connection, frame by frame, as its framing says.
#[derive(Debug)]
pub(crate) struct ResponseDecoder {
    state: Decode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decode {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers(usize),
    UntilClose,
    Done,
}

/// What one step of decoding gives.
pub(crate) enum Decoded {
    Data(Bytes),
    /// The body has ended.
    End,
}

impl ResponseDecoder {
    pub(crate) fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Length(0) | Framing::Empty | Framing::Upgrade => Decode::Done,
            Framing::Length(n) => Decode::Length(n),
            Framing::Chunked => Decode::ChunkSize,
            Framing::UntilClose => Decode::UntilClose,
        };
        ResponseDecoder { state }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state == Decode::Done
    }

    /// The body's remaining length, when it is known.
    pub(crate) fn remaining(&self) -> Option<u64> {
        match self.state {
            Decode::Length(n) => Some(n),
            Decode::Done => Some(0),
            _ => None,
        }
    }

    /// The next piece of the body, reading from the connection when what is buffered
    /// does not make one.
    pub(crate) fn poll_next(
        &mut self,
        conn: &mut Conn,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Decoded, io::Error>> {
        loop {
            if let Some(step) = self.decode(&mut conn.read_buf)? {
                return Poll::Ready(Ok(step));
            }
            conn.read_buf.reserve(READ_CHUNK);
            let n = std::task::ready!(poll_read(&mut conn.stream, &mut conn.read_buf, cx))?;
            if n == 0 {
                if self.state == Decode::UntilClose {
                    self.state = Decode::Done;
                    return Poll::Ready(Ok(Decoded::End));
                }
                return Poll::Ready(Err(invalid("the upstream closed the connection mid-body")));
            }
        }
    }

    /// One step over the buffered bytes; `None` when more must be read.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, io::Error> {
        loop {
            match self.state {
                Decode::Done => return Ok(Some(Decoded::End)),
                Decode::Length(remaining) | Decode::ChunkData(remaining) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let take = remaining.min(buf.len() as u64);
                    let left = remaining - take;
                    self.state = match self.state {
                        Decode::Length(_) if left == 0 => Decode::Done,
                        Decode::Length(_) => Decode::Length(left),
                        _ if left == 0 => Decode::ChunkDataEnd,
                        _ => Decode::ChunkData(left),
                    };
                    // `take` is at most buf.len(), a usize.
                    let data = buf.split_to(take as usize).freeze();
                    return Ok(Some(Decoded::Data(data)));
                }
                Decode::UntilClose => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    return Ok(Some(Decoded::Data(buf.split().freeze())));
                }
                Decode::ChunkSize => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(None);
                    };
                    let size = parse_chunk_size(&line)?;
                    self.state = if size == 0 {
                        Decode::Trailers(0)
                    } else {
                        Decode::ChunkData(size)
                    };
                }
                Decode::ChunkDataEnd => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(invalid("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = Decode::ChunkSize;
                }
                Decode::Trailers(seen) => {
                    let Some(line) = take_line(buf, MAX_TRAILER_BYTES - seen)? else {
                        return Ok(None);
                    };
                    self.state = if line.is_empty() {
                        Decode::Done
                    } else {
                        Decode::Trailers(seen + line.len() + 2)
                    };
                }
            }
        }
    }
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_owned())
}

/// Takes one CRLF-terminated line (without its CRLF) off the front of `buf`; `None`
/// when the line is not complete yet. Longer than `max`, or a bare LF: invalid.
fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, io::Error> {
    match buf.iter().take(max).position(|&b| b == b'\n') {
        Some(lf) => {
            if lf == 0 || buf[lf - 1] != b'\r' {
                return Err(invalid("line not ended by CRLF"));
            }
            let mut line = buf.split_to(lf + 1);
            line.truncate(lf - 1);
            Ok(Some(line))
        }
        None if buf.len() >= max => Err(invalid("chunk line or trailers too long")),
        None => Ok(None),
    }
}

/// `chunk-size [ chunk-ext ]`: hexadecimal digits, then nothing, or extensions after
/// optional whitespace and `;` (ignored).
fn parse_chunk_size(line: &[u8]) -> Result<u64, io::Error> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(invalid("invalid chunk size"));
    }
    let rest = line[digits..].trim_ascii_start();
    if !rest.is_empty() && rest[0] != b';' {
        return Err(invalid("invalid chunk size"));
    }
    let mut size = 0u64;
    for &d in &line[..digits] {
        let v = (d as char).to_digit(16).unwrap_or_default();
        size = (size << 4) | u64::from(v);
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decoded body, and whether the input ended exactly where the body did.
    fn decode_all(framing: Framing, input: &[u8]) -> Result<(Vec<u8>, bool), io::Error> {
        let mut decoder = ResponseDecoder::new(framing);
        let mut buf = BytesMut::from(input);
        let mut body = Vec::new();
        loop {
            match decoder.decode(&mut buf)? {
                Some(Decoded::Data(d)) => body.extend_from_slice(&d),
                Some(Decoded::End) => return Ok((body, buf.is_empty())),
                None => return Err(invalid("incomplete")),
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers() {
        let (body, clean) = decode_all(
            Framing::Chunked,
            b"5\r\nhello\r\n6;name=v\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n",
        )
        .unwrap();
        assert_eq!(body, b"hello world");
        assert!(clean);
    }

    #[test]
    fn bytes_after_the_body_leave_the_connection_unclean() {
        let (body, clean) = decode_all(Framing::Length(2), b"okHTTP/1.1 200 OK\r\n").unwrap();
        assert_eq!(body, b"ok");
        assert!(!clean);
    }

    #[test]
    fn malformed_chunk_framing_is_refused() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"zz\r\n",
            b"-5\r\nhello\r\n",
            b"5 junk\r\nhello\r\n",
            b"11111111111111111\r\n",
        ] {
            assert!(decode_all(Framing::Chunked, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn partial_input_asks_for_more() {
        let mut decoder = ResponseDecoder::new(Framing::Chunked);
        let mut buf = BytesMut::from(&b"5\r\nhel"[..]);
        assert!(matches!(decoder.decode(&mut buf), Ok(Some(Decoded::Data(d))) if d == "hel"));
        assert!(matches!(decoder.decode(&mut buf), Ok(None)));
        buf.extend_from_slice(b"lo\r");
        assert!(matches!(decoder.decode(&mut buf), Ok(Some(Decoded::Data(d))) if d == "lo"));
        assert!(matches!(decoder.decode(&mut buf), Ok(None)));
    }

    fn head(input: &[u8], head_request: bool) -> Result<Option<ResponseHead>, ExchangeError> {
        parse_head(
            &mut BytesMut::from(input),
            &mut Vec::new(),
            &mut 0,
            head_request,
        )
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = |s: &str| head(s.as_bytes(), false).unwrap().unwrap();
        let r = h("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n");
        assert_eq!((r.framing, r.keep_alive), (Framing::Length(3), true));
        let r = h("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\ncontent-length: 3\r\n\r\n");
        assert_eq!(r.framing, Framing::Length(3));
        let lengths: Vec<_> = r.headers.get_all("content-length").iter().collect();
        assert_eq!(lengths, ["3"], "repeats are passed on once");
        let r = h("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n");
        assert_eq!((r.framing, r.keep_alive), (Framing::Chunked, false));
        assert!(!r.headers.contains_key("content-length"));
        let r = h("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n");
        assert_eq!((r.framing, r.keep_alive), (Framing::UntilClose, false));
        let r = h("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((r.framing, r.keep_alive), (Framing::UntilClose, false));
        let r = h("HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!((r.framing, r.keep_alive), (Framing::Empty, true));
        let r = h("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n");
        assert!(!r.keep_alive);
        let r = h("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n");
        assert!(!r.keep_alive);
        let r = h("HTTP/1.1 200 OK\r\nConnection: Keep-Alive, CLOSE\r\ncontent-length: 1\r\n\r\n");
        assert!(!r.keep_alive);
        let r = h("HTTP/1.1 200 OK\r\nconnection: x-private, close\r\ncontent-length: 1\r\n\r\n");
        assert!(!r.keep_alive);
        let r = h("HTTP/1.1 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n");
        assert!(r.keep_alive);
        let r = head(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(r.framing, Framing::Empty);
        let r = h("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(r.status, 201);
        let endless = "HTTP/1.1 103 Early Hints\r\n\r\n".repeat(MAX_INTERIM + 1);
        assert!(
            head(endless.as_bytes(), false).is_err(),
            "interim responses are bounded"
        );
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +3\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        ] {
            assert!(head(bad.as_bytes(), false).is_err(), "{bad}");
        }
        assert!(head(b"HTTP/1.1 200 OK\r\ncontent-le", false)
            .unwrap()
            .is_none());
    }

    #[test]
    fn connection_is_kept_only_when_it_names_fields() {
        let h = |s: &str| head(s.as_bytes(), false).unwrap().unwrap().headers;
        assert!(!h("HTTP/1.1 200 OK\r\nconnection: keep-alive\r\n\r\n").contains_key("connection"));
        assert!(!h("HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n").contains_key("connection"));
        let named = h("HTTP/1.1 200 OK\r\nconnection: keep-alive, x-private\r\n\r\n");
        assert_eq!(
            named["connection"], "keep-alive, x-private",
            "left for the hop-by-hop strip"
        );
        let upgrade = h("HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\n\r\n");
        assert_eq!(upgrade["connection"], "upgrade");
    }

    #[test]
    fn header_values_keep_their_bytes() {
        let r = head(
            b"HTTP/1.1 200 OK\r\nX-A: one\r\nx-a: two\r\ncontent-length: 0\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        let values: Vec<_> = r.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["one", "two"]);
    }

    #[test]
    fn chunk_sizes_are_written_in_hex() {
        for (n, text) in [
            (0, "0\r\n"),
            (1, "1\r\n"),
            (255, "ff\r\n"),
            (4096, "1000\r\n"),
        ] {
            let mut buf = Vec::new();
            push_chunk_size(&mut buf, n);
            assert_eq!(buf, text.as_bytes());
        }
    }
}
