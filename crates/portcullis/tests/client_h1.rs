//! The gateway's own HTTP/1.1 connection, seen from raw client sockets: keep-alive,
//! pipelining, HEAD, `Connection: close`, the hand-off to hyper when a request has a
//! body, a malformed later head, and a client that leaves before its answer.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn setup() -> (Upstream, Gateway) {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), "", "")).await;
    (up, gw)
}

/// One response cut from `buf`: status, lower-case head text and body; `None` until
/// `buf` holds all of it. Knows the framings the gateway uses (length and chunked).
fn cut_response(buf: &mut Vec<u8>) -> Option<(u16, String, Vec<u8>)> {
    let end = find(buf, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status: u16 = head[9..12].parse().unwrap();
    let field = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
    };
    let body_len = if let Some(len) = field("content-length") {
        let len: usize = len.trim().parse().unwrap();
        (buf.len() >= end + len).then_some(len)?
    } else if field("transfer-encoding").is_some() {
        let last = find(&buf[end..], b"0\r\n\r\n")?;
        last + 5
    } else {
        0
    };
    let body = buf[end..end + body_len].to_vec();
    buf.drain(..end + body_len);
    Some((status, head, body))
}

/// Reads `n` whole responses, in order, from the connection.
async fn read_responses(s: &mut TcpStream, n: usize) -> Vec<(u16, String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while out.len() < n {
        if let Some(r) = cut_response(&mut buf) {
            out.push(r);
            continue;
        }
        let got = read_more(s, &mut buf, Duration::from_secs(10)).await;
        assert!(got > 0, "closed after {} of {n} responses", out.len());
    }
    assert!(buf.is_empty(), "bytes after the responses: {buf:?}");
    out
}

/// The access-log line of the first request whose path starts with `prefix`, once written.
async fn log_line_of(gw: &Gateway, prefix: &str) -> serde_json::Value {
    within("the log line", Duration::from_secs(10), async {
        loop {
            let found = gw
                .log_lines()
                .into_iter()
                .find(|l| l["path"].as_str().is_some_and(|p| p.starts_with(prefix)));
            if let Some(line) = found {
                return line;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

fn echoed(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let (_up, gw) = setup().await;
    let mut s = raw_connect(gw.addr).await;
    let mut burst = Vec::new();
    for i in 0..5 {
        burst.extend_from_slice(
            format!("GET /echo/{i} HTTP/1.1\r\nHost: gw.test\r\n\r\n").as_bytes(),
        );
    }
    raw_write(&mut s, &burst).await;
    let answers = read_responses(&mut s, 5).await;
    let mut ids = Vec::new();
    for (i, (status, head, body)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "{head}");
        assert_eq!(echoed(body)["target"], format!("/echo/{i}"));
        assert!(head.contains("\r\ndate: "), "a Date field: {head}");
        ids.push(
            head.lines()
                .find(|l| l.starts_with("x-request-id:"))
                .unwrap()
                .to_owned(),
        );
    }
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), 5, "one request id each: {ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_a_body_mid_connection_is_served_and_so_are_the_next() {
    let (_up, gw) = setup().await;
    let mut s = raw_connect(gw.addr).await;
    raw_write(&mut s, b"GET /echo/one HTTP/1.1\r\nHost: gw.test\r\n\r\n").await;
    let first = read_responses(&mut s, 1).await;
    assert_eq!(echoed(&first[0].2)["target"], "/echo/one");
    // A body (hyper's connection takes over from here), pipelined with a GET after it.
    raw_write(
        &mut s,
        b"POST /echo/two HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\n\r\nhello\
          GET /echo/three HTTP/1.1\r\nHost: gw.test\r\n\r\n",
    )
    .await;
    let rest = read_responses(&mut s, 2).await;
    assert_eq!(echoed(&rest[0].2)["body"], "hello");
    assert_eq!(echoed(&rest[0].2)["method"], "POST");
    assert_eq!(echoed(&rest[1].2)["target"], "/echo/three");
    assert_eq!(echoed(&rest[1].2)["body_len"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_gets_the_fields_of_get_and_no_body() {
    let (_up, gw) = setup().await;
    let mut s = raw_connect(gw.addr).await;
    raw_write(
        &mut s,
        b"HEAD /status/200 HTTP/1.1\r\nHost: gw.test\r\n\r\n",
    )
    .await;
    let mut buf = Vec::new();
    read_until(&mut s, &mut buf, |b| find(b, b"\r\n\r\n").is_some()).await;
    let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200 ok\r\n"), "{text}");
    assert!(
        text.contains("\r\ncontent-length: 19\r\n"),
        "the GET's length: {text}"
    );
    assert!(
        text.ends_with("\r\n\r\n"),
        "no body after the head: {text:?}"
    );
    // And the connection still serves: the next answer starts right after that head.
    raw_write(&mut s, b"GET /status/200 HTTP/1.1\r\nHost: gw.test\r\n\r\n").await;
    let next = read_responses(&mut s, 1).await;
    assert_eq!(next[0].2, b"upstream status 200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_is_answered_and_closed() {
    let (_up, gw) = setup().await;
    let mut s = raw_connect(gw.addr).await;
    raw_write(
        &mut s,
        b"GET /echo HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    let r = read_responses(&mut s, 1).await;
    assert!(r[0].1.contains("\r\nconnection: close\r\n"), "{}", r[0].1);
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_later_head_is_a_problem_and_closes() {
    let (up, gw) = setup().await;
    let mut s = raw_connect(gw.addr).await;
    raw_write(&mut s, b"GET /echo HTTP/1.1\r\nHost: gw.test\r\n\r\n").await;
    assert_eq!(read_responses(&mut s, 1).await[0].0, 200);
    raw_write(
        &mut s,
        b"GET /echo/smuggle HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    )
    .await;
    let r = raw_read_response(&mut s).await;
    let p = assert_problem(&r, 400, "bad_request");
    assert_eq!(p["instance"], "/echo/smuggle");
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);
    assert!(up.seen_target("/echo/smuggle").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_upstream_answer_streams_through() {
    let (_up, gw) = setup().await;
    let mut s = raw_connect(gw.addr).await;
    let t0 = Instant::now();
    raw_write(&mut s, b"GET /stream HTTP/1.1\r\nHost: gw.test\r\n\r\n").await;
    // The head and the first chunk come before the upstream has sent the rest.
    let mut buf = Vec::new();
    read_until(&mut s, &mut buf, |b| find(b, b"chunk 0").is_some()).await;
    assert!(
        t0.elapsed() < Duration::from_millis(700),
        "{:?}",
        t0.elapsed()
    );
    read_until(&mut s, &mut buf, |b| b.ends_with(b"0\r\n\r\n")).await;
    let mut rest = buf;
    let (status, head, body) = cut_response(&mut rest).unwrap();
    assert_eq!(status, 200);
    assert!(
        head.contains("\r\ntransfer-encoding: chunked\r\n"),
        "{head}"
    );
    assert!(String::from_utf8_lossy(&body).contains("chunk 4"));
    // The connection is reusable after the last chunk.
    raw_write(&mut s, b"GET /echo/after HTTP/1.1\r\nHost: gw.test\r\n\r\n").await;
    assert_eq!(read_responses(&mut s, 1).await[0].0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_cancels_its_request() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), "", "")).await;
    let mut s = raw_connect(gw.addr).await;
    raw_write(
        &mut s,
        b"GET /slow?ms=3000 HTTP/1.1\r\nHost: gw.test\r\n\r\n",
    )
    .await;
    up.wait_seen("/slow").await;
    s.shutdown().await.unwrap();
    drop(s);
    // The gateway logs the request as ended by the client well before the upstream
    // would have answered.
    let t0 = Instant::now();
    let line = log_line_of(&gw, "/slow").await;
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(line["status"], 499, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_a_body_sent_while_another_is_answered_is_served() {
    let (_up, gw) = setup().await;
    let mut s = raw_connect(gw.addr).await;
    raw_write(
        &mut s,
        b"GET /slow?ms=300 HTTP/1.1\r\nHost: gw.test\r\n\r\n",
    )
    .await;
    // Arrives while the first request is with the upstream: read then, kept, and handed
    // to hyper with the rest of the connection once the first answer is written.
    tokio::time::sleep(Duration::from_millis(100)).await;
    raw_write(
        &mut s,
        b"POST /echo/late HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 4\r\n\r\nlate",
    )
    .await;
    let answers = read_responses(&mut s, 2).await;
    assert_eq!(answers[0].2, b"slow done");
    assert_eq!(echoed(&answers[1].2)["body"], "late");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_lines_between_requests_are_ignored() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), "header_read_timeout = \"1s\"", "")).await;
    let mut s = raw_connect(gw.addr).await;
    raw_write(
        &mut s,
        b"GET /echo/a HTTP/1.1\r\nHost: gw.test\r\n\r\n\r\n\r\nGET /echo/b HTTP/1.1\r\nHost: gw.test\r\n\r\n\r\n",
    )
    .await;
    let answers = read_responses(&mut s, 2).await;
    assert_eq!(echoed(&answers[1].2)["target"], "/echo/b");
    // The trailing empty line is no partial head: the idle connection closes after the
    // timeout without a 408.
    let mut rest = Vec::new();
    let _ = within("close", Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_a_streaming_response_ends_it() {
    let (_up, gw) = setup().await;
    let mut s = raw_connect(gw.addr).await;
    raw_write(
        &mut s,
        b"GET /stream?gap_ms=3000 HTTP/1.1\r\nHost: gw.test\r\n\r\n",
    )
    .await;
    let mut buf = Vec::new();
    read_until(&mut s, &mut buf, |b| find(b, b"chunk 0").is_some()).await;
    drop(s);
    // The response ends (and is logged) when the client leaves, not at the upstream's
    // next chunk 3 s later.
    let t0 = Instant::now();
    log_line_of(&gw, "/stream").await;
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_http_1_0_is_a_problem() {
    let (up, gw) = setup().await;
    let (r, mut s) = raw_exchange(
        gw.addr,
        b"POST /echo/old HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert_problem(&r, 400, "bad_request");
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);
    assert!(up.seen_target("/echo/old").is_empty());
}
