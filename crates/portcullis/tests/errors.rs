//! Black-box tests of the gateway's own errors: malformed requests sent on raw
//! TCP sockets, limits, timeouts and an unreachable or slow upstream. Each error
//! is an RFC 9457 problem+json with `code` and `request_id`, carries the
//! response-header contract, is logged, and the gateway keeps serving.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

async fn setup_with(server_extra: &str) -> (Upstream, Gateway) {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), server_extra, "")).await;
    (up, gw)
}

/// The problem's request id is logged with the same status.
async fn assert_logged(gw: &Gateway, problem: &Value, status: u16) {
    let id = problem["request_id"].as_str().unwrap();
    let line = gw.wait_log(id).await;
    assert_log_members(&line);
    assert_eq!(line["status"], status, "{line}");
}

/// Sends a malformed head; expects a 400 `bad_request` and a closed connection.
async fn expect_bad_request(gw: &Gateway, raw: &[u8]) -> Value {
    let (r, mut s) = raw_exchange(gw.addr, raw).await;
    let p = assert_problem(&r, 400, "bad_request");
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await,
        "a 400 on the request head closes the connection"
    );
    assert_logged(gw, &p, 400).await;
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_line_is_400() {
    let (up, gw) = setup_with("").await;
    for raw in [
        &b"this is not http at all\r\n\r\n"[..],
        b"GET\r\nHost: gw.test\r\n\r\n",
        b"GE(T /echo HTTP/1.1\r\nHost: gw.test\r\n\r\n",
        b"GET /echo HTTP/1.1 trailing-junk\r\nHost: gw.test\r\n\r\n",
    ] {
        let p = expect_bad_request(&gw, raw).await;
        assert!(is_uuid_v4(p["request_id"].as_str().unwrap()));
    }
    assert!(
        up.seen().is_empty(),
        "malformed requests never reach the upstream: {:?}",
        up.seen()
    );
    assert_still_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_cr_in_a_request_id_is_400() {
    let (up, gw) = setup_with("").await;
    let p = expect_bad_request(
        &gw,
        b"GET /echo HTTP/1.1\r\nHost: gw.test\r\nX-Request-ID: abc\rdef\r\n\r\n",
    )
    .await;
    let id = p["request_id"].as_str().unwrap();
    assert!(is_uuid_v4(id), "a fresh id, not the client's: {id}");
    assert!(up.seen().is_empty(), "never forwarded: {:?}", up.seen());
    assert_still_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_line_without_colon_is_400() {
    let (up, gw) = setup_with("").await;
    expect_bad_request(
        &gw,
        b"GET /echo HTTP/1.1\r\nHost: gw.test\r\nThisLineHasNoColon\r\nAccept: */*\r\n\r\n",
    )
    .await;
    assert!(up.seen().is_empty(), "never forwarded: {:?}", up.seen());
    assert_still_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_headers_are_431() {
    let (up, gw) = setup_with("max_header_bytes = 4096").await;
    // Within the limit: fine.
    let small = "s".repeat(2000);
    let r = get_h(gw.addr, "/echo/small", &[("x-small", &small)]).await;
    assert_eq!(r.status, 200);

    let big = "b".repeat(8000);
    let raw = format!("GET /echo/big HTTP/1.1\r\nHost: gw.test\r\nX-Big: {big}\r\n\r\n");
    let (r, mut s) = raw_exchange(gw.addr, raw.as_bytes()).await;
    let p = assert_problem(&r, 431, "headers_too_large");
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await,
        "a 431 closes the connection"
    );
    assert_logged(&gw, &p, 431).await;

    // Many small headers count too.
    let many: String = (0..200).map(|i| format!("X-H{i}: {i:040}\r\n")).collect();
    let raw = format!("GET /echo/many HTTP/1.1\r\nHost: gw.test\r\n{many}\r\n");
    let (r, _s) = raw_exchange(gw.addr, raw.as_bytes()).await;
    assert_problem(&r, 431, "headers_too_large");

    assert!(up.seen_target("/echo/big").is_empty());
    assert!(up.seen_target("/echo/many").is_empty());
    assert_still_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_content_length_too_large_is_413() {
    let (_up, gw) = setup_with("max_body_bytes = 1024").await;
    // The body is never sent: the answer must not wait for it.
    let (r, _s) = raw_exchange(
        gw.addr,
        b"POST /echo HTTP/1.1\r\nHost: gw.test\r\nContent-Type: text/plain\r\nContent-Length: 5000\r\n\r\n",
    )
    .await;
    let p = assert_problem(&r, 413, "body_too_large");
    assert_eq!(p["instance"], "/echo", "{p}");
    assert_logged(&gw, &p, 413).await;

    // At the limit: fine.
    let body = "x".repeat(1024);
    let r = h1(gw.addr, "POST", "/echo", &[], body).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_len"], 1024);
    assert_still_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_chunked_body_is_413() {
    let (_up, gw) = setup_with("max_body_bytes = 1024").await;
    let mut raw =
        b"POST /echo HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        raw.extend_from_slice(b"3e8\r\n");
        raw.extend_from_slice(&[b'y'; 1000]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let (r, _s) = raw_exchange(gw.addr, &raw).await;
    let p = assert_problem(&r, 413, "body_too_large");
    assert_eq!(p["instance"], "/echo", "{p}");
    assert_logged(&gw, &p, 413).await;

    // Over h2c as well.
    let r = h2(gw.addr, "POST", "/echo", &[], vec![b'z'; 4096]).await;
    let p = assert_problem(&r, 413, "body_too_large");
    assert_eq!(p["instance"], "/echo", "{p}");

    // A chunked body within the limit is fine.
    let (r, _s) = raw_exchange(
        gw.addr,
        b"POST /echo HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body"], "hello world");
    assert_still_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_head_is_408() {
    let (up, gw) = setup_with("header_read_timeout = \"1s\"").await;
    let mut s = raw_connect(gw.addr).await;
    let start = Instant::now();
    raw_write(
        &mut s,
        b"GET /echo/slowloris HTTP/1.1\r\nHost: gw.test\r\nX-A: 1\r\n",
    )
    .await;
    let r = raw_read_response_within(&mut s, Duration::from_secs(8)).await;
    let waited = start.elapsed();
    let p = assert_problem(&r, 408, "request_header_timeout");
    assert!(
        waited >= Duration::from_millis(900),
        "408 only after header_read_timeout, got it after {waited:?}"
    );
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await,
        "a 408 closes the connection"
    );
    assert_logged(&gw, &p, 408).await;
    assert!(up.seen_target("/echo/slowloris").is_empty());
    assert_still_serves(&gw).await;
}

/// After the first request hyper times the heads (with the gateway's per-connection
/// timer): a keep-alive connection that sends part of a head, or nothing, is closed
/// after `header_read_timeout`; one that keeps sending requests is never cut, however
/// long it lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_heads_are_timed_too() {
    let (_up, gw) = setup_with("header_read_timeout = \"1s\"").await;
    let request = b"GET /echo HTTP/1.1\r\nHost: gw.test\r\n\r\n";
    let mut s = raw_connect(gw.addr).await;
    let start = Instant::now();
    let mut answered = 0;
    while start.elapsed() < Duration::from_millis(2600) {
        if answered > 0 {
            // Each pause is under the timeout; together they are well over it.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        raw_write(&mut s, request).await;
        let r = raw_read_response_within(&mut s, Duration::from_secs(5)).await;
        assert_eq!(r.status, 200, "request {answered} on a busy connection");
        answered += 1;
    }
    assert!(answered >= 6, "{answered}");

    // Part of a head: closed after the timeout, counted (as hyper counts it) from the
    // end of the previous response, not before.
    let partial = Instant::now();
    raw_write(&mut s, b"GET /echo HTTP/1.1\r\nHost: gw.test\r\n").await;
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);
    let waited = partial.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "a slow second head is cut after header_read_timeout, got {waited:?}"
    );

    // Nothing at all after a response: the same.
    let mut s = raw_connect(gw.addr).await;
    raw_write(&mut s, request).await;
    assert_eq!(
        raw_read_response_within(&mut s, Duration::from_secs(5))
            .await
            .status,
        200
    );
    let idle = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);
    let waited = idle.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "an idle keep-alive connection is closed after header_read_timeout, got {waited:?}"
    );
    assert_still_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_502() {
    let port = dead_port();
    let url = format!("http://127.0.0.1:{port}");
    let gw = Gateway::start(&config(
        &url,
        "trusted_proxies = [\"127.0.0.1/32\"]\nrequest_timeout = \"5s\"",
        "",
    ))
    .await;
    let start = Instant::now();
    let r = get(gw.addr, "/echo/down?x=1").await;
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "refused fails fast"
    );
    let p = assert_problem(&r, 502, "upstream_unreachable");
    assert_eq!(p["instance"], "/echo/down", "{p}");
    assert_logged(&gw, &p, 502).await;

    // Over h2c, and over HTTPS via a trusted proxy (HSTS on the error too).
    let r = h2(gw.addr, "GET", "/echo/down", &[], "").await;
    assert_problem(&r, 502, "upstream_unreachable");
    let r = get_h(gw.addr, "/echo/down", &[("x-forwarded-proto", "https")]).await;
    assert_problem_hsts(&r, 502, "upstream_unreachable", Some(HSTS_DEFAULT));

    // The gateway keeps serving: once the upstream is there, requests pass.
    let Ok(_up) = Upstream::start_on(port).await else {
        eprintln!("port {port} was taken meanwhile; skipping the recovery half");
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(gw.addr, "/echo/back").await;
        if r.status == 200 {
            assert_contract_headers(&r, None);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {} after the upstream came back: {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_is_504() {
    let (up, gw) = setup_with("request_timeout = \"1s\"").await;
    let start = Instant::now();
    let r = get(gw.addr, "/slow?ms=4000").await;
    let waited = start.elapsed();
    let p = assert_problem(&r, 504, "upstream_timeout");
    assert_eq!(p["instance"], "/slow", "{p}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(3500),
        "504 after request_timeout (1s), got it after {waited:?}"
    );
    let upstream_id = up.wait_seen("/slow").await;
    assert_eq!(
        upstream_id.header("x-request-id"),
        p["request_id"].as_str(),
        "the 504 carries the id the upstream was sent"
    );
    assert_logged(&gw, &p, 504).await;
    // A fast request is unaffected.
    let r = get(gw.addr, "/slow?ms=10").await;
    assert_eq!(r.status, 200);

    // On a pooled connection whose timer an earlier request armed, and which fired
    // while the connection sat idle: each request still gets its own full second.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    for _ in 0..2 {
        let r = get(gw.addr, "/slow?ms=600").await;
        assert_eq!(
            r.status,
            200,
            "600 ms is within the 1 s timeout: {}",
            r.text()
        );
    }
    let start = Instant::now();
    let r = get(gw.addr, "/slow?ms=4000").await;
    let waited = start.elapsed();
    assert_problem(&r, 504, "upstream_timeout");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(3500),
        "504 after request_timeout on a reused connection, got it after {waited:?}"
    );
    assert_still_serves(&gw).await;
}

/// `[server] max_inflight` and `[[route]] max_inflight`: above them, 503 problem+json
/// with Retry-After at once, and the slot frees when the response ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inflight_limits_shed_load_with_503() {
    let up = Upstream::start().await;
    let policies = "[[policy]]\nname = \"p\"\nlimit = 1000\nwindow = \"1m\"\n\n\
                    [[route]]\npath = \"/slow\"\npolicies = [\"p\"]\nmax_inflight = 1\n";
    let gw = Gateway::start(&config(&up.url(), "max_inflight = 3", policies)).await;
    let addr = gw.addr;
    // Route limit: one slow request holds the route's only slot.
    let slow = tokio::spawn(async move { get(addr, "/slow?ms=1500").await });
    up.wait_seen("/slow").await;
    let r = get(gw.addr, "/slow?ms=10").await;
    let p = assert_problem(&r, 503, "overloaded");
    assert_eq!(r.header("retry-after"), Some("1"), "{p}");
    // Other routes still have room under the global limit of 3.
    assert_eq!(get(gw.addr, "/echo/other").await.status, 200);
    assert_eq!(slow.await.unwrap().status, 200);
    // The slot is free again once the slow response has ended.
    assert_eq!(get(gw.addr, "/slow?ms=10").await.status, 200);
    assert_still_serves(&gw).await;
    // Global limit: a gateway without routes, two slow requests fill it, a third is shed.
    let gw2 = Gateway::start(&config(&up.url(), "max_inflight = 2", "")).await;
    let addr2 = gw2.addr;
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { get(addr2, "/slow?ms=1500").await }))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = get(gw2.addr, "/echo/x").await;
    assert_problem(&r, 503, "overloaded");
    for h in held {
        assert_eq!(h.await.unwrap().status, 200);
    }
    assert_still_serves(&gw2).await;
}
