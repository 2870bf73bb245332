//! Reading and judging the first request head of a connection.

use super::HeadLimits;
use crate::stack::GatewayService;
use crate::telemetry::LogThrottle;
use bytes::BytesMut;
use portcullis_core::headers::{latency_ms, server_timing};
use portcullis_core::problem::{reason_phrase, Problem, CONTENT_TYPE};
use portcullis_tower::observe::{ObserveHook, RequestRecord};
use portcullis_tower::RequestId;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// As many header fields as hyper accepts.
pub(crate) const MAX_HEADERS: usize = 100;

pub(crate) enum FirstHead {
    /// A well-formed HTTP/1.x head (and whatever followed it).
    Http1(BytesMut),
    /// The HTTP/2 connection preface.
    Http2(BytesMut),
    /// The peer went away (or never said anything) before a head arrived.
    Closed,
    /// The head is answered with an error and the connection closed.
    Rejected(Rejection),
}

pub(crate) struct Rejection {
    status: u16,
    code: &'static str,
    detail: String,
    method: Option<String>,
    path: Option<String>,
    started: Instant,
}

impl Rejection {
    /// 408: a head that began to arrive at `started` was not complete in time.
    pub(crate) fn head_timeout(limits: HeadLimits, started: Instant) -> Self {
        Rejection {
            status: 408,
            code: "request_header_timeout",
            detail: format!(
                "request head not received within {}ms",
                limits.header_read_timeout.as_millis()
            ),
            method: None,
            path: None,
            started,
        }
    }

    /// 400: a head that parsed but cannot be made into a request (its target, say).
    pub(crate) fn malformed(
        detail: String,
        head: &[u8],
        parsed: &ParsedHead,
        started: Instant,
    ) -> Self {
        let text =
            |(start, end): (usize, usize)| String::from_utf8_lossy(&head[start..end]).into_owned();
        Rejection {
            status: 400,
            code: "bad_request",
            detail,
            method: Some(text(parsed.method)),
            path: Some(text(parsed.target)),
            started,
        }
    }
}

enum Inspection {
    Partial,
    Http1,
    Http2,
    Bad(Rejection),
}

/// Where one header field of a parsed head lies in the buffer it was parsed from.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FieldSpan {
    pub(crate) name: (usize, usize),
    pub(crate) value: (usize, usize),
}

/// The header fields of one head, as spans (as many as a head may have).
pub(crate) type FieldSpans = [FieldSpan; MAX_HEADERS];

/// A well-formed HTTP/1.x request head, as spans of the buffer it was parsed from, so
/// the caller can cut its parts out of that buffer without copying them.
#[derive(Debug)]
pub(crate) struct ParsedHead {
    /// Bytes of the head, up to and including the empty line.
    pub(crate) len: usize,
    pub(crate) method: (usize, usize),
    pub(crate) target: (usize, usize),
    /// HTTP/1.1 (else HTTP/1.0).
    pub(crate) http11: bool,
    /// How many of the spans hold header fields.
    pub(crate) fields: usize,
}

/// What [`parse_head`] made of the bytes received so far.
pub(crate) enum Parsed {
    Partial,
    Complete(ParsedHead),
    Bad(Rejection),
}

pub(crate) async fn read_first_head(stream: &mut TcpStream, limits: HeadLimits) -> FirstHead {
    let started = Instant::now();
    let mut buf = BytesMut::with_capacity(4096);
    let deadline = tokio::time::sleep(limits.header_read_timeout);
    tokio::pin!(deadline);
    loop {
        buf.reserve(4096);
        let read = tokio::select! {
            read = stream.read_buf(&mut buf) => read,
            _ = &mut deadline => {
                if buf.is_empty() {
                    return FirstHead::Closed;
                }
                return FirstHead::Rejected(Rejection::head_timeout(limits, started));
            }
        };
        match read {
            Ok(0) | Err(_) => return FirstHead::Closed,
            Ok(_) => {}
        }
        match inspect(&buf, limits.max_header_bytes, started) {
            Inspection::Partial => continue,
            Inspection::Http1 => return FirstHead::Http1(buf),
            Inspection::Http2 => return FirstHead::Http2(buf),
            Inspection::Bad(r) => return FirstHead::Rejected(r),
        }
    }
}

fn inspect(buf: &[u8], max: usize, started: Instant) -> Inspection {
    let preface_len = buf.len().min(H2_PREFACE.len());
    if buf[..preface_len] == H2_PREFACE[..preface_len] {
        return if buf.len() >= H2_PREFACE.len() {
            Inspection::Http2
        } else {
            Inspection::Partial
        };
    }
    let mut spans = [FieldSpan::default(); MAX_HEADERS];
    match parse_head(buf, max, Some(started), &mut spans) {
        Parsed::Partial => Inspection::Partial,
        Parsed::Complete(_) => Inspection::Http1,
        Parsed::Bad(r) => Inspection::Bad(r),
    }
}

/// Parses and judges one HTTP/1.x request head at the start of `buf`: a head over `max`
/// bytes is 431, a malformed one (framing and `Host` included, see [`validate`]) 400.
/// `started` is when the head began to arrive, for the rejection's log record (now, when
/// not known: the clock is read only for a rejection).
pub(crate) fn parse_head(
    buf: &[u8],
    max: usize,
    started: Option<Instant>,
    spans: &mut FieldSpans,
) -> Parsed {
    let bad = |status, code, detail: String, method: Option<&str>, path: Option<&str>| {
        Parsed::Bad(Rejection {
            status,
            code,
            detail,
            method: method.map(str::to_owned),
            path: path.map(str::to_owned),
            started: started.unwrap_or_else(Instant::now),
        })
    };
    let too_large = || format!("request head exceeds {max} bytes");
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            if n > max {
                return bad(431, "headers_too_large", too_large(), req.method, req.path);
            }
            if let Err(detail) = validate(&req) {
                return bad(400, "bad_request", detail, req.method, req.path);
            }
            let span = |part: &[u8]| {
                let start = part.as_ptr() as usize - buf.as_ptr() as usize;
                (start, start + part.len())
            };
            for (slot, h) in spans.iter_mut().zip(req.headers.iter()) {
                *slot = FieldSpan {
                    name: span(h.name.as_bytes()),
                    value: span(h.value),
                };
            }
            Parsed::Complete(ParsedHead {
                len: n,
                method: span(req.method.unwrap_or_default().as_bytes()),
                target: span(req.path.unwrap_or_default().as_bytes()),
                http11: req.version == Some(1),
                fields: req.headers.len(),
            })
        }
        Ok(httparse::Status::Partial) if buf.len() >= max => {
            bad(431, "headers_too_large", too_large(), req.method, req.path)
        }
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => bad(
            431,
            "headers_too_large",
            format!("more than {MAX_HEADERS} header fields"),
            None,
            None,
        ),
        Err(e) => bad(
            400,
            "bad_request",
            format!("malformed request: {e}"),
            None,
            None,
        ),
    }
}

/// Checks httparse leaves to the application: message framing (RFC 9112 §6) and Host.
fn validate(req: &httparse::Request<'_, '_>) -> Result<(), String> {
    let mut content_length: Option<&[u8]> = None;
    let mut transfer_encoding = false;
    let mut host = 0usize;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = h.value.trim_ascii();
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
                return Err("invalid Content-Length".into());
            }
            if content_length.is_some_and(|prev| prev != v) {
                return Err("conflicting Content-Length headers".into());
            }
            content_length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            let last = h.value.rsplit(|b| *b == b',').next().unwrap_or_default();
            if !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err("Transfer-Encoding must end with chunked".into());
            }
        } else if h.name.eq_ignore_ascii_case("host") {
            host += 1;
        }
    }
    if transfer_encoding && req.version == Some(0) {
        // RFC 9112 §6.1: HTTP/1.0 has no chunked framing; such a body cannot be delimited.
        return Err("Transfer-Encoding in an HTTP/1.0 request".into());
    }
    if transfer_encoding && content_length.is_some() {
        return Err("both Transfer-Encoding and Content-Length".into());
    }
    if req.version == Some(1) && host != 1 {
        return Err("HTTP/1.1 requests need exactly one Host header".into());
    }
    Ok(())
}

/// Writes the problem+json answer, records the request, and closes politely: the
/// client's unread bytes are drained for a moment so the kernel does not reset the
/// connection before the answer is read.
pub(crate) async fn answer_rejection(
    mut stream: TcpStream,
    peer: SocketAddr,
    r: Rejection,
    service: &GatewayService,
) {
    let hook = &service.hook;
    hook.on_start();
    let id = RequestId::new_uuid();
    // What nginx logs as "client sent invalid header": enough to find the client's bug.
    // The target may carry tokens; the diagnostics writer redacts it.
    static REJECTIONS: LogThrottle = LogThrottle::new(20);
    if REJECTIONS.allow() {
        tracing::warn!(
            request_id = %id.as_str(),
            status = r.status,
            code = r.code,
            detail = %r.detail,
            method = r.method.as_deref().unwrap_or("-"),
            target = r.path.as_deref().unwrap_or("-"),
            "rejected a malformed request head"
        );
    }
    let mut problem = Problem::new(r.status, r.code, r.detail).with_request_id(id.as_str());
    if let Some(path) = &r.path {
        problem = problem.with_instance(path.split('?').next().unwrap_or(path).to_owned());
    }
    let body = problem.to_json();
    let elapsed = r.started.elapsed();
    let mut head = String::with_capacity(512);
    let _ = write!(
        head,
        "HTTP/1.1 {} {}\r\ncontent-type: {CONTENT_TYPE}\r\ncontent-length: {}\r\nconnection: close\r\n",
        r.status,
        reason_phrase(r.status),
        body.len()
    );
    let synthetic = &service.synthetic;
    if synthetic.expose_request_id {
        let _ = write!(head, "x-request-id: {}\r\n", id.as_str());
    }
    if synthetic.latency {
        let _ = write!(
            head,
            "x-latency-ms: {}\r\nserver-timing: {}\r\n",
            latency_ms(elapsed),
            server_timing(elapsed, None)
        );
    }
    for (name, value) in &synthetic.security.always {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    head.push_str(&body);
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(head.as_bytes())).await;
    let _ = stream.shutdown().await;
    hook.on_complete(RequestRecord {
        request_id: id.as_str().to_owned(),
        method: r
            .method
            .as_deref()
            .and_then(|m| http::Method::from_bytes(m.as_bytes()).ok())
            .unwrap_or_else(|| http::Method::from_bytes(b"-").unwrap_or_default()),
        path: r.path.unwrap_or_default(),
        route: None,
        status: r.status,
        latency: elapsed,
        upstream: None,
        duration: r.started.elapsed(),
        client: Some(portcullis_core::identity::canonical_ip(peer.ip())),
        bytes_out: body.len() as u64,
        policy: None,
        decision: None,
    });
    let mut sink = [0u8; 8192];
    let mut drained = 0usize;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while drained < (1 << 20) {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(raw: &[u8]) -> Result<&'static str, u16> {
        match inspect(raw, 1024, Instant::now()) {
            Inspection::Partial => Ok("partial"),
            Inspection::Http1 => Ok("h1"),
            Inspection::Http2 => Ok("h2"),
            Inspection::Bad(r) => Err(r.status),
        }
    }

    #[test]
    fn sorts_heads() {
        assert_eq!(judge(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Ok("h1"));
        assert_eq!(judge(b"GET / HTTP/1.1\r\nHost: a\r\n"), Ok("partial"));
        assert_eq!(judge(b"PRI * HTTP/2.0\r\n"), Ok("partial"));
        assert_eq!(judge(H2_PREFACE), Ok("h2"));
        assert_eq!(judge(b"GET / HTTP/1.0\r\n\r\n"), Ok("h1"));
    }

    #[test]
    fn rejects_malformed_heads() {
        assert_eq!(judge(b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), Err(400));
        assert_eq!(judge(b"G@T / HTTP/1.1\r\n\r\n"), Err(400));
        assert_eq!(
            judge(b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-ID: a\rb\r\n\r\n"),
            Err(400)
        );
        assert_eq!(
            judge(b"GET / HTTP/1.1\r\nHost: a\r\nnocolon\r\n\r\n"),
            Err(400)
        );
        assert_eq!(judge(b"GET / HTTP/1.1\r\n\r\n"), Err(400), "no Host");
        assert_eq!(
            judge(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(400),
            "chunked in HTTP/1.0"
        );
        assert_eq!(
            judge(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(400)
        );
        assert_eq!(
            judge(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(400)
        );
        assert_eq!(
            judge(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"),
            Err(400)
        );
        let big = [
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".as_slice(),
            &[b'a'; 2000],
        ]
        .concat();
        assert_eq!(judge(&big), Err(431));
    }
}
