//! Black-box tests of the proxy path: proxying, streaming, h2c, upgrades,
//! hop-by-hop headers, X-Forwarded-*, client identity, request ids, the
//! response-header contract and the access log.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use support::*;

async fn setup_with(server_extra: &str, rest: &str) -> (Upstream, Gateway) {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), server_extra, rest)).await;
    (up, gw)
}

async fn setup() -> (Upstream, Gateway) {
    setup_with("", "").await
}

const TRUSTED_LOCAL: &str = "trusted_proxies = [\"127.0.0.1/32\"]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_a_get_with_the_header_contract() {
    let (up, gw) = setup().await;
    let r = get_h(
        gw.addr,
        "/echo/items?x=1",
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_contract_headers(&r, None);
    let echo = r.json();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["target"], "/echo/items?x=1");
    assert_eq!(echo_header(&echo, "accept"), vec!["application/json"]);
    let id = r.request_id();
    assert!(is_uuid_v4(&id), "a new request id is a UUID v4: {id}");
    assert_eq!(
        echo_header(&echo, "x-request-id"),
        vec![id.clone()],
        "the same id is sent upstream"
    );
    assert_eq!(up.seen_target("/echo/items").len(), 1);
    let line = gw.wait_log(&id).await;
    assert_log_members(&line);
    assert_eq!(line["method"], "GET");
    assert_eq!(line["status"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_request_bodies_over_h1_and_h2c() {
    let (_up, gw) = setup().await;
    let headers = [("content-type", "text/plain")];
    let r = h1(gw.addr, "POST", "/echo", &headers, "hello over h1").await;
    assert_eq!(r.status, 200);
    assert_contract_headers(&r, None);
    let echo = r.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body"], "hello over h1");

    let r = h2(gw.addr, "PUT", "/echo", &headers, "hello over h2c").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.version, "HTTP/2.0");
    assert_contract_headers(&r, None);
    let echo = r.json();
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["body"], "hello over h2c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_status_and_body_pass_through() {
    let (_up, gw) = setup().await;
    for code in [201u16, 404, 503] {
        let r = get(gw.addr, &format!("/status/{code}")).await;
        assert_eq!(r.status, code);
        assert_eq!(r.text(), format!("upstream status {code}"));
        assert_eq!(r.header("content-type"), Some("text/plain"));
        assert_contract_headers(&r, None);
    }
}

/// Asserts the `/stream` answer arrived chunk by chunk.
async fn assert_streamed(resp: hyper::Response<hyper::body::Incoming>, sent: Instant) {
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
    let headers_at = sent.elapsed();
    let frames = collect_timed(resp.into_body(), sent).await;
    let text: String = frames
        .iter()
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .collect();
    let expected: String = (0..5).map(|i| format!("data: chunk {i}\n\n")).collect();
    assert_eq!(text, expected);
    let first = frames.first().unwrap().0;
    let last = frames.last().unwrap().0;
    let timeline: Vec<u128> = frames.iter().map(|(t, _)| t.as_millis()).collect();
    assert!(
        first.saturating_sub(headers_at) < Duration::from_millis(500),
        "first chunk {first:?} came long after the headers {headers_at:?}: {timeline:?}"
    );
    assert!(
        last >= Duration::from_millis(800),
        "the upstream needs 800 ms for all chunks: {timeline:?}"
    );
    assert!(
        last - first >= Duration::from_millis(500),
        "the first chunk reached the client long before the last one was produced: {timeline:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_body_streams_chunk_by_chunk_h1() {
    let (_up, gw) = setup().await;
    let sent = Instant::now();
    let resp = h1_send(gw.addr, "GET", "/stream", &[], "").await;
    assert_streamed(resp, sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_body_streams_chunk_by_chunk_h2c() {
    let (_up, gw) = setup().await;
    let sent = Instant::now();
    let resp = h2_send(gw.addr, "GET", "/stream", &[], "").await;
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_streamed(resp, sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_body_streams_to_the_upstream() {
    let (_up, gw) = setup().await;
    let mut s = raw_connect(gw.addr).await;
    raw_write(
        &mut s,
        b"POST /upload-timing HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    raw_write(&mut s, b"6\r\nsecond\r\n0\r\n\r\n").await;
    let r = raw_read_response(&mut s).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_contract_headers(&r, None);
    let v = r.json();
    assert_eq!(v["bytes"], 11);
    let first = v["first_ms"].as_u64().unwrap();
    let last = v["last_ms"].as_u64().unwrap();
    assert!(
        last >= first + 400,
        "the upstream got the first body chunk before the client sent the second \
         (not buffered): first {first} ms, last {last} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_is_proxied_over_http1() {
    let (_up, gw) = setup().await;
    let client_id = "9F1C2B3A-1111-4222-8333-444455556666";
    let r = h2(
        gw.addr,
        "GET",
        "/echo/h2?q=1",
        &[("x-request-id", client_id)],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.version, "HTTP/2.0");
    assert_contract_headers(&r, None);
    assert!(r.request_id().eq_ignore_ascii_case(client_id));
    let echo = r.json();
    assert_eq!(echo["version"], "HTTP/1.1", "upstream is spoken to over h1");
    assert_eq!(echo["target"], "/echo/h2?q=1");
    assert_eq!(
        echo_header_joined(&echo, "x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(echo_header(&echo, "x-forwarded-proto"), vec!["http"]);
    assert_eq!(
        echo_header(&echo, "x-forwarded-host"),
        vec![gw.addr.to_string()]
    );
    assert!(echo_header(&echo, "x-request-id")[0].eq_ignore_ascii_case(client_id));
    // several streams on one connection
    let mut tasks = Vec::new();
    for i in 0..4 {
        let addr = gw.addr;
        tasks.push(tokio::spawn(async move {
            h2(addr, "GET", &format!("/echo/{i}"), &[], "").await
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        assert_contract_headers(&r, None);
    }
}

async fn run_curl(args: &[&str]) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(args).kill_on_drop(true);
    let out = within("curl", Duration::from_secs(20), cmd.output())
        .await
        .expect("run curl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn curl_header<'a>(out: &'a str, name: &str) -> Option<&'a str> {
    out.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then_some(v.trim().trim_end_matches('\r'))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http1_request() {
    let (_up, gw) = setup().await;
    let url = format!("http://{}/echo/curl", gw.addr);
    let id = "0b0a2c7e-5d6f-4a1b-9c8d-7e6f5a4b3c2d";
    let (ok, out, err) = run_curl(&[
        "-sS",
        "-i",
        "--http1.1",
        "--max-time",
        "10",
        "-H",
        &format!("X-Request-ID: {id}"),
        &url,
    ])
    .await;
    assert!(ok, "curl failed: {err}");
    assert!(out.starts_with("HTTP/1.1 200"), "curl output:\n{out}");
    assert_eq!(curl_header(&out, "x-request-id"), Some(id));
    let lat = curl_header(&out, "x-latency-ms").expect("X-Latency-MS");
    assert!(lat.parse::<u64>().unwrap() >= 1);
    assert!(curl_header(&out, "server-timing").is_some());
    assert_eq!(curl_header(&out, "x-content-type-options"), Some("nosniff"));
    assert!(out.contains("\"target\":\"/echo/curl\""), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_h2c_prior_knowledge_request() {
    let (_ok, version, _) = run_curl(&["--version"]).await;
    let features = version
        .lines()
        .find(|l| l.starts_with("Features:"))
        .unwrap_or("");
    if !features.split_whitespace().any(|f| f == "HTTP2") {
        eprintln!("curl lacks HTTP2 support ({features:?}); skipping the h2c curl check");
        return;
    }
    let (_up, gw) = setup().await;
    let url = format!("http://{}/echo/curl2", gw.addr);
    let (ok, out, err) = run_curl(&[
        "-sS",
        "-i",
        "--http2-prior-knowledge",
        "--max-time",
        "10",
        &url,
    ])
    .await;
    assert!(ok, "curl --http2-prior-knowledge failed: {err}");
    assert!(out.starts_with("HTTP/2 200"), "curl output:\n{out}");
    let id = curl_header(&out, "x-request-id").expect("X-Request-ID");
    assert!(is_uuid(id));
    assert!(curl_header(&out, "x-latency-ms").is_some());
    assert!(curl_header(&out, "server-timing").is_some());
    assert_eq!(curl_header(&out, "x-frame-options"), Some("DENY"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passes_through() {
    let (up, gw) = setup().await;
    let (r, mut s) = open_websocket(gw.addr).await;
    assert!(r
        .header("upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket")));
    let id = r.request_id();
    assert!(is_uuid(&id));
    let seen = up.wait_seen("/ws").await;
    assert_eq!(seen.header("x-request-id"), Some(id.as_str()));
    assert!(seen
        .header("upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket")));

    use tokio::io::AsyncWriteExt;
    for msg in [
        &b"hello through the gateway"[..],
        b"\x00\x01binary\xff second",
    ] {
        assert_echoed(&mut s, msg).await;
    }
    s.shutdown().await.unwrap();
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await,
        "closing one side closes the tunnel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_request_headers_are_not_forwarded() {
    let (_up, gw) = setup().await;
    let (r, _s) = raw_exchange(
        gw.addr,
        b"GET /echo/hop HTTP/1.1\r\nHost: gw.test\r\n\
          Connection: keep-alive, X-Hop-Custom\r\nX-Hop-Custom: secret\r\n\
          Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\n\
          Proxy-Authorization: Basic dXNlcjpwYXNz\r\nX-Keep-Me: yes\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_contract_headers(&r, None);
    let echo = r.json();
    assert_eq!(echo_header(&echo, "x-keep-me"), vec!["yes"]);
    for h in [
        "x-hop-custom",
        "keep-alive",
        "te",
        "proxy-connection",
        "proxy-authorization",
        "trailer",
        "upgrade",
    ] {
        assert!(
            echo_header(&echo, h).is_empty(),
            "hop-by-hop {h} reached the upstream: {echo}"
        );
    }
    for v in echo_header(&echo, "connection") {
        assert!(
            !v.to_ascii_lowercase().contains("x-hop-custom"),
            "client Connection header forwarded: {v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_header_outside_an_upgrade_is_not_forwarded() {
    let (_up, gw) = setup().await;
    // Upgrade without the "upgrade" connection option is no upgrade request
    // (RFC 9110 7.8): a plain request whose Upgrade header is hop-by-hop.
    let (r, _s) = raw_exchange(
        gw.addr,
        b"GET /echo/upg HTTP/1.1\r\nHost: gw.test\r\nUpgrade: foo/1\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_contract_headers(&r, None);
    let echo = r.json();
    assert!(
        echo_header(&echo, "upgrade").is_empty(),
        "Upgrade outside an upgrade reached the upstream: {echo}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connections_are_kept_alive() {
    let (_up, gw) = setup().await;
    let mut s = raw_connect(gw.addr).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let req = format!("GET /echo/ka/{i} HTTP/1.1\r\nHost: gw.test\r\n\r\n");
        raw_write(&mut s, req.as_bytes()).await;
        let r = raw_read_response(&mut s).await;
        assert_eq!(r.status, 200, "request {i} on one connection");
        assert_contract_headers(&r, None);
        assert_eq!(r.json()["target"], format!("/echo/ka/{i}"));
        ids.push(r.request_id());
    }
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), 3, "one request id per request: {ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_headers_are_not_forwarded() {
    let (up, gw) = setup().await;
    // The upstream really sends them.
    let direct = get(up.addr, "/hop-response").await;
    assert_eq!(direct.header("keep-alive"), Some("timeout=5"));
    assert_eq!(direct.header("x-upstream-hop"), Some("1"));
    assert!(direct.header("proxy-authenticate").is_some());
    assert_eq!(direct.header("upgrade"), Some("foo/1"));

    for r in [
        get(gw.addr, "/hop-response").await,
        h2(gw.addr, "GET", "/hop-response", &[], "").await,
    ] {
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "hop");
        assert_contract_headers(&r, None);
        assert_eq!(r.header("x-upstream-normal"), Some("yes"));
        for h in [
            "x-upstream-hop",
            "keep-alive",
            "proxy-authenticate",
            "upgrade",
        ] {
            assert!(
                r.header(h).is_none(),
                "hop-by-hop {h} reached the client ({}): {:?}",
                r.version,
                r.headers
            );
        }
        for v in r.header_all("connection") {
            assert!(!v.to_ascii_lowercase().contains("x-upstream-hop"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_from_an_untrusted_peer() {
    let (_up, gw) = setup().await;
    let r = get_h(
        gw.addr,
        "/echo/fwd",
        &[
            ("host", "api.example.test"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            (
                "forwarded",
                "for=198.51.100.7;proto=https;host=evil.example",
            ),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_contract_headers(&r, None); // claimed https from an untrusted peer: no HSTS
    let echo = r.json();
    assert_eq!(
        echo_header_joined(&echo, "x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1"),
        "X-Forwarded-For is appended"
    );
    assert_eq!(
        echo_header(&echo, "x-forwarded-proto"),
        vec!["http"],
        "X-Forwarded-Proto replaced"
    );
    assert_eq!(
        echo_header(&echo, "x-forwarded-host"),
        vec!["api.example.test"]
    );
    assert_eq!(
        echo_header(&echo, "forwarded"),
        Vec::<String>::new(),
        "a client's Forwarded claims do not reach the upstream"
    );
    let spoofed = gw.wait_log(&r.request_id()).await;

    let r = get_h(gw.addr, "/echo/plain", &[("host", "api.example.test")]).await;
    let echo = r.json();
    assert_eq!(
        echo_header_joined(&echo, "x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(echo_header(&echo, "x-forwarded-proto"), vec!["http"]);
    let plain = gw.wait_log(&r.request_id()).await;
    assert!(plain["client"].is_string(), "client in the log: {plain}");
    assert_eq!(
        spoofed["client"], plain["client"],
        "an untrusted peer cannot choose its client identity"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_follows_the_trusted_proxy_rule() {
    let (_up, gw) = setup_with(TRUSTED_LOCAL, "").await;
    async fn client_of(gw: &Gateway, headers: &[(&str, &str)]) -> (Value, Value) {
        let r = get_h(gw.addr, "/echo/ip", headers).await;
        assert_eq!(r.status, 200);
        let line = gw.wait_log(&r.request_id()).await;
        (line["client"].clone(), r.json())
    }
    let (a, echo) = client_of(&gw, &[("x-forwarded-for", "203.0.113.9")]).await;
    assert!(a.is_string(), "client in the log");
    assert_eq!(
        echo_header_joined(&echo, "x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    let (b, echo) = client_of(&gw, &[("x-forwarded-for", "198.51.100.1, 203.0.113.9")]).await;
    assert_eq!(
        echo_header_joined(&echo, "x-forwarded-for").as_deref(),
        Some("198.51.100.1, 203.0.113.9, 127.0.0.1")
    );
    let (c, _) = client_of(&gw, &[("x-forwarded-for", "203.0.113.9, 127.0.0.1")]).await;
    let (d, _) = client_of(&gw, &[("x-forwarded-for", "203.0.113.10")]).await;
    let (e, _) = client_of(&gw, &[]).await;
    let (f, echo) = client_of(&gw, &[("forwarded", "for=203.0.113.9;proto=http")]).await;
    assert_eq!(
        echo_header(&echo, "forwarded"),
        vec!["for=203.0.113.9;proto=http"],
        "a trusted proxy's Forwarded passes on"
    );
    let (g, _) = client_of(&gw, &[("x-forwarded-for", "127.0.0.1")]).await;
    assert_eq!(a, b, "right-most address that is not a trusted proxy");
    assert_eq!(a, c, "trusted proxies in the chain are skipped");
    assert_eq!(a, f, "Forwarded: for= is believed from a trusted proxy");
    assert_ne!(a, d, "different client, different identity");
    assert_ne!(a, e, "without X-Forwarded-For the client is the peer");
    assert_ne!(d, e);
    assert_eq!(e, g, "only trusted addresses: the peer itself");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_only_for_https_via_a_trusted_proxy() {
    let (_up, gw) = setup_with(TRUSTED_LOCAL, "").await;
    let cases: [(&[(&str, &str)], bool); 7] = [
        (&[("x-forwarded-proto", "https")], true),
        (&[("x-forwarded-proto", "HTTPS")], true),
        (&[("x-forwarded-proto", "http, https")], true),
        (&[("x-forwarded-proto", "https, http")], false),
        (&[("x-forwarded-proto", "http")], false),
        (&[("forwarded", "for=203.0.113.9;proto=https")], true),
        (&[], false),
    ];
    for (headers, https) in cases {
        let r = get_h(gw.addr, "/echo/hsts", headers).await;
        assert_eq!(r.status, 200);
        assert_contract_headers(&r, https.then_some(HSTS_DEFAULT));
        let echo = r.json();
        assert_eq!(
            echo_header(&echo, "x-forwarded-proto"),
            vec![if https { "https" } else { "http" }],
            "X-Forwarded-Proto upstream for {headers:?}"
        );
    }
    // Over h2c too.
    let r = h2(
        gw.addr,
        "GET",
        "/echo/hsts2",
        &[("x-forwarded-proto", "https")],
        "",
    )
    .await;
    assert_contract_headers(&r, Some(HSTS_DEFAULT));
    // Any response to such a request, e.g. an upstream 204 without a body.
    let r = get_h(gw.addr, "/status/204", &[("x-forwarded-proto", "https")]).await;
    assert_eq!(r.status, 204);
    assert_contract_headers(&r, Some(HSTS_DEFAULT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_set_by_the_upstream_are_not_overridden() {
    let (up, gw) = setup().await;
    let direct = get(up.addr, "/custom-headers").await;
    assert_eq!(
        direct.header("strict-transport-security"),
        Some("max-age=5")
    );
    let r = get(gw.addr, "/custom-headers").await;
    assert_eq!(r.status, 200);
    assert_timing_headers(&r);
    assert_eq!(r.header_all("x-frame-options"), vec!["SAMEORIGIN"]);
    assert_eq!(
        r.header_all("content-security-policy"),
        vec!["default-src 'self'"]
    );
    assert_eq!(r.header_all("referrer-policy"), vec!["origin"]);
    assert_eq!(
        r.header_all("strict-transport-security"),
        vec!["max-age=5"],
        "an upstream HSTS passes through unchanged, even over plain HTTP"
    );
    assert_security_defaults(
        &r,
        &[
            "x-frame-options",
            "content-security-policy",
            "referrer-policy",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_own_fields_replace_the_upstreams_over_either_server() {
    let (up, gw) = setup_with(
        "",
        "[[policy]]\nname = \"default\"\nlimit = 100\nwindow = \"1m\"\nkey = [\"ip\"]\n",
    )
    .await;
    let direct = get(up.addr, "/custom-headers").await;
    assert_eq!(direct.header("x-request-id"), Some("upstream-id"));
    // A GET is written by the gateway's own HTTP/1.1 connection (head lines); a POST
    // with a body is handed to hyper (the lines put in the header map).
    for (method, body) in [("GET", ""), ("POST", "body")] {
        let r = h1(gw.addr, method, "/custom-headers", &[], body).await;
        assert_eq!(r.status, 200, "{method}");
        let ms = assert_timing_headers(&r);
        assert!(ms < 999_999, "{method}: the gateway's X-Latency-MS");
        assert_eq!(r.header_all("server-timing").len(), 1, "{method}");
        assert!(!r.header("server-timing").unwrap_or("").contains("999999"));
        assert_eq!(
            r.header_all("ratelimit-policy"),
            vec!["\"default\";q=100;w=60"],
            "{method}"
        );
        let ratelimit = r.header_all("ratelimit");
        assert_eq!(ratelimit.len(), 1, "{method}: {ratelimit:?}");
        assert!(
            ratelimit[0].starts_with("\"default\""),
            "{method}: {ratelimit:?}"
        );
        // A security header the upstream set is kept, the others are added once.
        assert_eq!(
            r.header_all("x-frame-options"),
            vec!["SAMEORIGIN"],
            "{method}"
        );
        assert_security_defaults(
            &r,
            &[
                "x-frame-options",
                "content-security-policy",
                "referrer-policy",
            ],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_headers_are_configurable() {
    let (_up, gw) = setup_with(
        TRUSTED_LOCAL,
        "[headers.security]\nx_frame_options = \"\"\n\
         permissions_policy = \"geolocation=()\"\n\
         content_security_policy = \"default-src 'self'\"\n\
         strict_transport_security = \"max-age=60\"\n",
    )
    .await;
    let r = get_h(gw.addr, "/echo/sec", &[("x-forwarded-proto", "https")]).await;
    assert_eq!(r.status, 200);
    assert_timing_headers(&r);
    assert!(r.header("x-frame-options").is_none(), "\"\" omits it");
    assert_eq!(r.header_all("permissions-policy"), vec!["geolocation=()"]);
    assert_eq!(
        r.header_all("content-security-policy"),
        vec!["default-src 'self'"]
    );
    assert_eq!(
        r.header_all("strict-transport-security"),
        vec!["max-age=60"]
    );
    assert_eq!(r.header_all("x-content-type-options"), vec!["nosniff"]);
    assert_eq!(r.header_all("referrer-policy"), vec!["no-referrer"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_headers_measure_the_exchange() {
    let (_up, gw) = setup().await;
    let r = get(gw.addr, "/slow?ms=300").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "slow done");
    let ms = assert_timing_headers(&r);
    assert!(ms >= 300, "X-Latency-MS {ms} covers the 300 ms upstream");
    let (gw_dur, up_dur) = server_timing(&r);
    assert!(up_dur >= 290.0, "upstream;dur {up_dur}");
    assert!(gw_dur >= 0.0);
    let line = gw.wait_log(&r.request_id()).await;
    assert!(
        line["latency_ms"].as_f64().is_some_and(|v| v >= 290.0),
        "{line}"
    );
    assert!(
        line["upstream_ms"].as_f64().is_some_and(|v| v >= 290.0),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_uuid_mode_keeps_uuids_and_replaces_others() {
    let (up, gw) = setup().await;
    for kept in [
        "123e4567-e89b-42d3-a456-426614174000",
        "123E4567-E89B-42D3-A456-426614174000",
        // Its first 16 digits read as a card number (Luhn-valid, starts with 4): the id
        // is still logged as it is, the same id as in the headers (SPEC).
        "40001234-5678-4000-8abc-def012345678",
    ] {
        let r = get_h(gw.addr, "/echo/rid", &[("x-request-id", kept)]).await;
        assert!(r.request_id().eq_ignore_ascii_case(kept), "kept {kept}");
        let echo = r.json();
        assert!(echo_header(&echo, "x-request-id")[0].eq_ignore_ascii_case(kept));
        let line = gw.wait_log(&r.request_id()).await;
        assert_eq!(line["request_id"], r.request_id().as_str());
    }
    for replaced in ["abc-123", "123e4567e89b42d3a456426614174000", "x y", ""] {
        let r = get_h(gw.addr, "/echo/rid2", &[("x-request-id", replaced)]).await;
        assert_eq!(r.status, 200);
        let id = r.request_id();
        assert!(
            is_uuid_v4(&id),
            "{replaced:?} replaced by a new UUID, got {id}"
        );
        let echo = r.json();
        assert_eq!(
            echo_header(&echo, "x-request-id"),
            vec![id.clone()],
            "only the new id goes upstream"
        );
        let line = gw.wait_log(&id).await;
        assert_eq!(line["request_id"], id.as_str());
    }
    // distinct ids per request
    let ids: HashSet<String> = up
        .seen_target("/echo/rid2")
        .iter()
        .map(|s| s.header("x-request-id").unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_safe_mode() {
    let (_up, gw) = setup_with("", "[headers]\naccept_request_id = \"safe\"\n").await;
    let max = "a".repeat(128);
    for kept in ["abc-123", "req.42:x_y-Z", max.as_str()] {
        let r = get_h(gw.addr, "/echo/safe", &[("x-request-id", kept)]).await;
        assert_eq!(r.request_id(), kept);
        assert_eq!(echo_header(&r.json(), "x-request-id"), vec![kept]);
        gw.wait_log(kept).await;
    }
    let too_long = "a".repeat(129);
    for replaced in ["has space", "semi;colon", "slash/x", too_long.as_str()] {
        let r = get_h(gw.addr, "/echo/safe", &[("x-request-id", replaced)]).await;
        let id = r.request_id();
        assert!(is_uuid_v4(&id), "{replaced:?} replaced, got {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_never_mode() {
    let (_up, gw) = setup_with("", "[headers]\naccept_request_id = \"never\"\n").await;
    let client = "123e4567-e89b-42d3-a456-426614174000";
    let r = get_h(gw.addr, "/echo/never", &[("x-request-id", client)]).await;
    let id = r.request_id();
    assert!(is_uuid_v4(&id));
    assert!(!id.eq_ignore_ascii_case(client), "never keeps a client id");
    assert_eq!(echo_header(&r.json(), "x-request-id"), vec![id.clone()]);
    gw.wait_log(&id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_json_line_per_request() {
    let (_up, gw) = setup().await;
    let mut ids = Vec::new();
    for path in [
        "/echo/log?token=supersecret123&x=1",
        "/status/404",
        "/echo/log2",
    ] {
        let r = get(gw.addr, path).await;
        ids.push((r.request_id(), r.status, r.body.len(), path));
    }
    let r = h1(gw.addr, "POST", "/echo/log3", &[], "payload").await;
    ids.push((r.request_id(), r.status, r.body.len(), "/echo/log3"));
    for (id, status, len, path) in &ids {
        gw.wait_log(id).await;
        // let late duplicates show up, if any
        tokio::time::sleep(Duration::from_millis(100)).await;
        let lines = gw.log_lines_for(id);
        assert_eq!(lines.len(), 1, "exactly one log line for {path}: {lines:?}");
        let line = &lines[0];
        assert_log_members(line);
        assert_eq!(line["status"], *status);
        assert!(line["ts"].is_string() || line["ts"].is_number(), "{line}");
        assert!(line["latency_ms"].is_number(), "{line}");
        assert!(line["bytes_out"].as_u64().is_some_and(|b| b >= *len as u64));
        let logged_path = line["path"].as_str().unwrap();
        let bare = path.split('?').next().unwrap();
        assert!(logged_path.starts_with(bare), "{logged_path} vs {path}");
    }
    assert_eq!(gw.log_lines_for(&ids[3].0)[0]["method"], "POST");
}

/// SPEC "Access log": `path` has its query redacted and `client` is hashed with
/// the default `redaction = "hash"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_redacts_query_secrets_and_hashes_the_client() {
    let (_up, gw) = setup().await;
    let r = get(gw.addr, "/echo/log?token=supersecret123&x=1").await;
    assert_eq!(r.status, 200);
    let line = gw.wait_log(&r.request_id()).await;
    let logged_path = line["path"].as_str().unwrap();
    assert!(logged_path.starts_with("/echo/log"), "{line}");
    assert!(
        !logged_path.contains("supersecret123"),
        "query secrets are redacted: {logged_path}"
    );
    let all = gw.stdout_lines().join("\n");
    assert!(!all.contains("supersecret123"), "secret in the log:\n{all}");
    let client = line["client"].as_str().expect("client is a string");
    assert!(
        !client.contains("127.0.0.1"),
        "client is hashed by default (redaction = \"hash\"): {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused_after_every_kind_of_body() {
    let (up, gw) = setup().await;
    // Content-Length bodies, an empty 204, HEAD, and a chunked stream: after each, the
    // upstream connection goes back to the pool and serves the next request.
    let kinds = ["/echo/k", "/status/204", "/stream", "/echo/k2"];
    for round in 0..3 {
        for path in kinds {
            let r = h1(gw.addr, "GET", path, &[], Bytes::new()).await;
            assert!(r.status == 200 || r.status == 204, "{path}: {}", r.status);
        }
        let r = h1(gw.addr, "HEAD", "/echo/head", &[], Bytes::new()).await;
        assert_eq!(r.status, 200, "HEAD round {round}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One connection per serving thread at most (the gateway runs one per CPU).
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let conns: HashSet<usize> = up.seen().iter().map(|s| s.conn).collect();
    assert!(
        conns.len() <= threads,
        "15 sequential requests used {} upstream connections for {threads} serving threads",
        conns.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_kept_alive() {
    let (up, gw) = setup().await;
    for i in 0..8 {
        let r = get(gw.addr, &format!("/echo/pool/{i}")).await;
        assert_eq!(r.status, 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let conns: HashSet<usize> = up
        .seen_target("/echo/pool/")
        .iter()
        .map(|s| s.conn)
        .collect();
    assert!(
        conns.len() <= 3,
        "8 sequential requests used {} upstream connections (no keep-alive pool?)",
        conns.len()
    );
}
