//! Black-box tests of webhook verification at the edge (SPEC "Webhooks"), through the
//! real `portcullis` binary in front of a real upstream, and of `portcullis webhook
//! sign` / `verify`.
//!
//! Signatures are computed here independently of the gateway (HMAC-SHA256 written out
//! over `sha2`, hex and base64 by hand), the way a sender would, so a bug shared by the
//! gateway's signer and verifier cannot hide. For every scheme: a valid delivery is
//! forwarded with identical body bytes (checked at the upstream's echo); a tampered
//! body, a wrong secret, a missing header, a malformed header and a stale timestamp
//! are 401 problem+json; a replay is 409; two secrets rotate. Replay protection holds
//! across two gateways sharing one private `redis-server`.

#![allow(clippy::unwrap_used)]

mod support;

use std::future::Future;
use std::io::Write;
use std::process::{Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sha2::{Digest, Sha256};
use support::redis::RedisServer;
use support::*;

const TEST_LIMIT: Duration = Duration::from_secs(90);

async fn bounded(fut: impl Future<Output = ()>) {
    within("the whole test", TEST_LIMIT, fut).await
}

// ---------------------------------------------------------------------------
// A sender's side, written out independently
// ---------------------------------------------------------------------------

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    for p in parts {
        inner.update(p);
    }
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                out.push(B64[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn b64_decode(s: &str) -> Vec<u8> {
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = B64.iter().position(|&b| b == c).unwrap() as u32;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
        }
    }
    out
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

type Headers = Vec<(String, String)>;

fn h(name: &str, value: String) -> (String, String) {
    (name.to_owned(), value)
}

/// `standard`: `webhook-signature: v1,<base64 HMAC of "id.ts.body">` under the bytes
/// after `whsec_`.
fn sign_standard(secret: &str, id: &str, ts: i64, body: &[u8]) -> Headers {
    let key = b64_decode(secret.strip_prefix("whsec_").unwrap());
    let sig = hmac(
        &key,
        &[id.as_bytes(), b".", ts.to_string().as_bytes(), b".", body],
    );
    vec![
        h("webhook-id", id.to_owned()),
        h("webhook-timestamp", ts.to_string()),
        h("webhook-signature", format!("v1,{}", b64(&sig))),
    ]
}

fn sign_github(secret: &str, body: &[u8]) -> Headers {
    vec![h(
        "X-Hub-Signature-256",
        format!("sha256={}", hex(&hmac(secret.as_bytes(), &[body]))),
    )]
}

fn sign_stripe(secret: &str, ts: i64, body: &[u8]) -> Headers {
    let sig = hmac(secret.as_bytes(), &[ts.to_string().as_bytes(), b".", body]);
    vec![h("Stripe-Signature", format!("t={ts},v1={}", hex(&sig)))]
}

fn sign_hmac(secret: &str, ts: Option<i64>, body: &[u8]) -> Headers {
    match ts {
        None => vec![h(
            "X-Signature",
            format!("sha256={}", hex(&hmac(secret.as_bytes(), &[body]))),
        )],
        Some(ts) => {
            let sig = hmac(secret.as_bytes(), &[ts.to_string().as_bytes(), b".", body]);
            vec![
                h("X-Signature", format!("sha256={}", hex(&sig))),
                h("X-Signature-Timestamp", ts.to_string()),
            ]
        }
    }
}

// ---------------------------------------------------------------------------
// Gateway helpers
// ---------------------------------------------------------------------------

const STD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const STD_OTHER: &str = "whsec_c2VjcmV0LW51bWJlci10d28tZm9yLXRlc3Rz";

fn hook(path: &str, scheme: &str, env: &str, tolerance: &str) -> String {
    format!(
        "[[webhook]]\npath = \"{path}\"\nscheme = \"{scheme}\"\nsecret_env = \"{env}\"\ntolerance = \"{tolerance}\"\n\n"
    )
}

/// A body whose exact bytes matter: multi-byte UTF-8, CRLF, trailing spaces.
fn body(n: u32) -> Vec<u8> {
    format!("{{\"event\":\"paid\",\"n\":{n},\"note\":\"héllo wörld ✓\"}}\r\n  ").into_bytes()
}

async fn deliver(gw: &Gateway, path: &str, headers: &Headers, body: &[u8]) -> Reply {
    let hs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    h1(gw.addr, "POST", path, &hs, body.to_vec()).await
}

/// A delivery that must arrive upstream byte for byte, its headers too.
fn assert_forwarded(r: &Reply, body: &[u8], headers: &Headers) {
    assert_eq!(r.status, 200, "forwarded: {}", r.text());
    let echo: Value = r.json();
    assert_eq!(echo["body_len"], body.len(), "{echo}");
    assert_eq!(
        echo["body"].as_str().unwrap().as_bytes(),
        body,
        "the upstream got the exact bytes"
    );
    for (k, v) in headers {
        assert_eq!(
            echo_header(&echo, k),
            vec![v.clone()],
            "header {k} forwarded unchanged"
        );
    }
}

fn without(headers: &Headers, name: &str) -> Headers {
    headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case(name))
        .cloned()
        .collect()
}

fn replaced(headers: &Headers, name: &str, value: &str) -> Headers {
    headers
        .iter()
        .map(|(k, v)| {
            if k.eq_ignore_ascii_case(name) {
                (k.clone(), value.to_owned())
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect()
}

fn tampered(body: &[u8]) -> Vec<u8> {
    let mut b = body.to_vec();
    b[2] ^= 0x01;
    b
}

/// How one scheme signs: `(secret, timestamp, id, body) -> headers`.
type Signer = fn(&str, i64, &str, &[u8]) -> Headers;

struct SchemeCase {
    scheme: &'static str,
    secret: &'static str,
    other_secret: &'static str,
    sign: Signer,
    /// The header whose absence is `signature_missing`.
    required: &'static str,
    /// A malformed value for it.
    malformed: &'static str,
    timestamped: bool,
}

/// Every judged case of one scheme against one gateway.
async fn exercise(case: SchemeCase) {
    let up = Upstream::start().await;
    let path = format!("/echo/hooks/{}", case.scheme);
    let env = "HOOK_SECRET";
    let toml = config(&up.url(), "", &hook(&path, case.scheme, env, "5m"));
    let gw = Gateway::start_with_env(&toml, &[(env, case.secret)]).await;
    let sign = case.sign;
    let t = now();

    // Valid: forwarded with identical bytes and headers; HTTP/2 as well.
    let b = body(1);
    let valid = sign(case.secret, t, "msg_valid_1", &b);
    let r = deliver(&gw, &path, &valid, &b).await;
    assert_forwarded(&r, &b, &valid);
    let b2 = body(2);
    let valid2 = sign(case.secret, t, "msg_valid_2", &b2);
    let hs: Vec<(&str, &str)> = valid2
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let r = h2(gw.addr, "POST", &path, &hs, b2.clone()).await;
    assert_forwarded(&r, &b2, &valid2);

    // Replay of the first delivery: 409, not forwarded.
    let r = deliver(&gw, &path, &valid, &b).await;
    let p = assert_problem(&r, 409, "webhook_replayed");
    assert_eq!(p["instance"], path.as_str(), "{p}");

    // Tampered body.
    let b3 = body(3);
    let signed = sign(case.secret, t, "msg_3", &b3);
    let r = deliver(&gw, &path, &signed, &tampered(&b3)).await;
    assert_problem(&r, 401, "signature_invalid");
    // Wrong secret.
    let wrong = sign(case.other_secret, t, "msg_4", &body(4));
    let r = deliver(&gw, &path, &wrong, &body(4)).await;
    assert_problem(&r, 401, "signature_invalid");
    // Missing header.
    let r = deliver(&gw, &path, &without(&signed, case.required), &b3).await;
    assert_problem(&r, 401, "signature_missing");
    // No headers at all.
    let r = deliver(&gw, &path, &Vec::new(), &b3).await;
    assert_problem(&r, 401, "signature_missing");
    // Malformed header.
    let r = deliver(
        &gw,
        &path,
        &replaced(&signed, case.required, case.malformed),
        &b3,
    )
    .await;
    assert_problem(&r, 401, "signature_malformed");
    // Stale (and future) timestamp, correctly signed.
    if case.timestamped {
        let stale = sign(case.secret, t - 3600, "msg_5", &body(5));
        let r = deliver(&gw, &path, &stale, &body(5)).await;
        assert_problem(&r, 401, "timestamp_outside_tolerance");
        let future = sign(case.secret, t + 3600, "msg_6", &body(6));
        let r = deliver(&gw, &path, &future, &body(6)).await;
        assert_problem(&r, 401, "timestamp_outside_tolerance");
    }
    // The failed delivery, now intact, still goes through (failures remember nothing).
    let r = deliver(&gw, &path, &signed, &b3).await;
    assert_forwarded(&r, &b3, &signed);

    assert_eq!(
        up.seen_target(&path).len(),
        3,
        "only the valid deliveries reached the upstream"
    );
    let m = metrics_text(&gw).await;
    let count = |outcome: &str| {
        metric_value(
            &m,
            "portcullis_webhook_verifications_total",
            &[("route", path.as_str()), ("outcome", outcome)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(count("verified"), 3.0, "{m}");
    assert_eq!(count("replayed"), 1.0, "{m}");
    assert_eq!(count("signature_invalid"), 2.0, "{m}");
    assert_eq!(count("signature_missing"), 2.0, "{m}");
    assert_eq!(count("signature_malformed"), 1.0, "{m}");
    if case.timestamped {
        assert_eq!(count("timestamp_outside_tolerance"), 2.0, "{m}");
    }
    // Other paths still stream through, unverified.
    let r = get(gw.addr, "/echo/plain").await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_webhooks_scheme() {
    bounded(exercise(SchemeCase {
        scheme: "standard",
        secret: STD_SECRET,
        other_secret: STD_OTHER,
        sign: |s, t, id, b| sign_standard(s, id, t, b),
        required: "webhook-signature",
        malformed: "v1,***not base64***",
        timestamped: true,
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_scheme() {
    bounded(exercise(SchemeCase {
        scheme: "github",
        secret: "It's a Secret to Everybody",
        other_secret: "another secret",
        sign: |s, _, _, b| sign_github(s, b),
        required: "X-Hub-Signature-256",
        malformed: "sha1=abc",
        timestamped: false,
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_scheme() {
    bounded(exercise(SchemeCase {
        scheme: "stripe",
        secret: "whsec_stripe_test_secret",
        other_secret: "whsec_some_other_secret",
        sign: |s, t, _, b| sign_stripe(s, t, b),
        required: "Stripe-Signature",
        malformed: "v1=zz,t=",
        timestamped: true,
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_sha256_scheme_with_timestamp() {
    bounded(exercise(SchemeCase {
        scheme: "hmac_sha256",
        secret: "s3cr3t-hmac",
        other_secret: "not-the-secret",
        sign: |s, t, _, b| sign_hmac(s, Some(t), b),
        required: "X-Signature",
        malformed: "sha256=xyz",
        timestamped: true,
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_sha256_scheme_without_timestamp() {
    bounded(exercise(SchemeCase {
        scheme: "hmac_sha256",
        secret: "s3cr3t-hmac",
        other_secret: "not-the-secret",
        sign: |s, _, _, b| sign_hmac(s, None, b),
        required: "X-Signature",
        malformed: "md5=0000",
        timestamped: false,
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_accepts_any_active_secret() {
    bounded(async {
        let up = Upstream::start().await;
        let toml = config(
            &up.url(),
            "",
            &format!(
                "{}{}",
                hook("/echo/std", "standard", "STD_SECRETS", "5m"),
                hook("/echo/hmac", "hmac_sha256", "HMAC_SECRETS", "5m")
            ),
        );
        let gw = Gateway::start_with_env(
            &toml,
            &[
                ("STD_SECRETS", &format!("{STD_SECRET}, {STD_OTHER}")),
                ("HMAC_SECRETS", "old-secret,new-secret"),
            ],
        )
        .await;
        let t = now();
        for (i, secret) in ["old-secret", "new-secret"].iter().enumerate() {
            let b = body(10 + i as u32);
            let hs = sign_hmac(secret, Some(t), &b);
            assert_forwarded(&deliver(&gw, "/echo/hmac", &hs, &b).await, &b, &hs);
        }
        let b = body(12);
        let r = deliver(&gw, "/echo/hmac", &sign_hmac("retired", Some(t), &b), &b).await;
        assert_problem(&r, 401, "signature_invalid");

        for (i, secret) in [STD_SECRET, STD_OTHER].iter().enumerate() {
            let b = body(20 + i as u32);
            let hs = sign_standard(secret, &format!("msg_rot_{i}"), t, &b);
            assert_forwarded(&deliver(&gw, "/echo/std", &hs, &b).await, &b, &hs);
        }
        // A sender mid-rotation attaches one signature per secret, space-separated.
        let b = body(22);
        let a = sign_standard(STD_OTHER, "msg_both", t, &b);
        let c = sign_standard(STD_SECRET, "msg_both", t, &b);
        let both = format!("v1,{} {} {}", b64(&[0; 32]), a[2].1, c[2].1);
        let hs = replaced(&a, "webhook-signature", &both);
        assert_forwarded(&deliver(&gw, "/echo/std", &hs, &b).await, &b, &hs);
        // Same id, re-signed later (a sender's retry of a delivered message): replay.
        let again = sign_standard(STD_SECRET, "msg_both", t + 1, &b);
        let r = deliver(&gw, "/echo/std", &again, &b).await;
        assert_problem(&r, 409, "webhook_replayed");
    })
    .await
}

/// A signed `POST /echo/hook` with a chunked body (one chunk per slice); `extra` is
/// more header lines, each ending in CRLF.
fn chunked_delivery(signature: &[(String, String)], chunks: &[&[u8]], extra: &str) -> Vec<u8> {
    let mut raw =
        String::from("POST /echo/hook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n");
    for (name, value) in signature {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    raw.push_str(extra);
    raw.push_str("\r\n");
    let mut raw = raw.into_bytes();
    for chunk in chunks {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limit_applies_while_buffering() {
    bounded(async {
        let up = Upstream::start().await;
        let toml = config(
            &up.url(),
            "max_body_bytes = 100",
            &hook("/echo/hook", "hmac_sha256", "S", "5m"),
        );
        let gw = Gateway::start_with_env(&toml, &[("S", "secret")]).await;
        let big = vec![b'x'; 200];
        let hs = sign_hmac("secret", Some(now()), &big);
        // Declared length over the limit.
        let r = deliver(&gw, "/echo/hook", &hs, &big).await;
        assert_problem(&r, 413, "body_too_large");
        // Chunked, no declared length: caught while buffering.
        let fifty: &[u8] = &[b'x'; 50];
        let raw = chunked_delivery(&hs, &[fifty; 4], "");
        let (r, _s) = raw_exchange(gw.addr, &raw).await;
        assert_problem(&r, 413, "body_too_large");
        assert!(up.seen_target("/echo/hook").is_empty());
        // At the limit, chunked: verified and forwarded.
        let ok = vec![b'y'; 100];
        let hs = sign_hmac("secret", Some(now()), &ok);
        let raw = chunked_delivery(&hs, &[&ok], "Connection: close\r\n");
        let (r, _s) = raw_exchange(gw.addr, &raw).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["body_len"], 100);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_deliveries_are_refused_before_their_body_is_read() {
    bounded(async {
        let up = Upstream::start().await;
        let toml = config(
            &up.url(),
            "request_timeout = \"20s\"",
            &hook("/echo/hook", "stripe", "S", "5m"),
        );
        let gw = Gateway::start_with_env(&toml, &[("S", "whsec_x")]).await;
        // A head announcing a megabyte, and not one byte of it: the answer must come
        // at once, not after the gateway waited for (and held) the body.
        for (extra, code) in [
            ("", "signature_missing"),
            ("Stripe-Signature: v1=zz\r\n", "signature_malformed"),
        ] {
            let head = format!(
                "POST /echo/hook HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n{extra}\r\n"
            );
            let mut s = raw_connect(gw.addr).await;
            raw_write(&mut s, head.as_bytes()).await;
            let r = raw_read_response_within(&mut s, Duration::from_secs(3)).await;
            let problem = assert_problem(&r, 401, code);
            // The sender's header value is not echoed back.
            assert!(!r.text().contains("zz"), "{problem}");
        }
        assert!(up.seen_target("/echo/hook").is_empty());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_failure_forgets_the_id_so_the_retry_passes() {
    bounded(async {
        let up = Upstream::start().await;
        let toml = config(&up.url(), "", &hook("/status/*", "github", "S", "5m"));
        let gw = Gateway::start_with_env(&toml, &[("S", "secret")]).await;
        let b = body(1);
        let hs = sign_github("secret", &b);
        let r = deliver(&gw, "/status/503", &hs, &b).await;
        assert_eq!(r.status, 503, "{}", r.text());
        let r = deliver(&gw, "/status/503", &hs, &b).await;
        assert_eq!(
            r.status,
            503,
            "the retry reached the upstream: {}",
            r.text()
        );
        let r = deliver(&gw, "/status/200", &hs, &b).await;
        assert_eq!(r.status, 200);
        let r = deliver(&gw, "/status/200", &hs, &b).await;
        assert_problem(&r, 409, "webhook_replayed");
        assert_eq!(up.seen_target("/status/").len(), 3);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_is_caught_across_two_gateways_sharing_redis() {
    bounded(async {
        let redis = RedisServer::start().await;
        let up = Upstream::start().await;
        let rest = format!(
            "[store]\nkind = \"redis\"\ntimeout = \"500ms\"\non_error = \"deny\"\n\n{}",
            hook("/echo/hook", "stripe", "S", "2m")
        );
        let toml = config(&up.url(), "", &rest);
        let env = [("REDIS_URL", redis.url()), ("S", "whsec_x".to_owned())];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let a = Gateway::start_with_env(&toml, &env).await;
        let b = Gateway::start_with_env(&toml, &env).await;
        let t = now();
        let d = body(1);
        let hs = sign_stripe("whsec_x", t, &d);
        assert_forwarded(&deliver(&a, "/echo/hook", &hs, &d).await, &d, &hs);
        let r = deliver(&b, "/echo/hook", &hs, &d).await;
        assert_problem(&r, 409, "webhook_replayed");
        let r = deliver(&a, "/echo/hook", &hs, &d).await;
        assert_problem(&r, 409, "webhook_replayed");
        let d2 = body(2);
        let hs2 = sign_stripe("whsec_x", t, &d2);
        assert_forwarded(&deliver(&b, "/echo/hook", &hs2, &d2).await, &d2, &hs2);
        assert_eq!(up.seen_target("/echo/hook").len(), 2);
        // Two hashed, hash-tagged ids, expiring within the tolerance window.
        let keys: Vec<String> = redis
            .keys()
            .await
            .into_iter()
            .filter(|k| k.ends_with(":id"))
            .collect();
        assert_eq!(keys.len(), 2, "{keys:?}");
        for k in &keys {
            assert!(k.starts_with("pc:{"), "{k}");
            let ttl = redis.pttl(k).await;
            // 2m tolerance, stamped now: kept until the stamp leaves the window, +1 s.
            assert!(ttl > 0 && ttl <= 121_000, "{k}: pttl {ttl}");
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_store_with_on_error_deny_answers_503() {
    bounded(async {
        let up = Upstream::start().await;
        let rest = format!(
            "[store]\nkind = \"redis\"\ntimeout = \"200ms\"\non_error = \"deny\"\n\n{}",
            hook("/echo/hook", "github", "S", "5m")
        );
        let toml = config(&up.url(), "", &rest);
        let url = format!("redis://127.0.0.1:{}", dead_port());
        let gw = Gateway::start_with_env(&toml, &[("REDIS_URL", &url), ("S", "k")]).await;
        let d = body(1);
        let r = deliver(&gw, "/echo/hook", &sign_github("k", &d), &d).await;
        assert_problem(&r, 503, "store_unavailable");
        assert_eq!(r.header("retry-after"), Some("1"));
        // A forgery is still a 401: verification comes first.
        let r = deliver(&gw, "/echo/hook", &sign_github("nope", &d), &d).await;
        assert_problem(&r, 401, "signature_invalid");
        assert!(up.seen_target("/echo/hook").is_empty());
    })
    .await
}

// ---------------------------------------------------------------------------
// Startup checks
// ---------------------------------------------------------------------------

fn serve_output(toml: &str, env: &[(&str, &str)]) -> Output {
    let dir = TempDir::new("webhook-serve");
    let path = dir.write("portcullis.toml", toml);
    let mut cmd = portcullis_command();
    cmd.arg("serve").arg("--config").arg(&path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().unwrap().wait_with_output().unwrap()
}

#[test]
fn a_missing_or_unusable_secret_stops_startup_with_one_line() {
    let toml = config(
        "http://127.0.0.1:9",
        "",
        &hook("/hooks/std", "standard", "MY_HOOK_SECRET", "5m"),
    );
    let out = serve_output(&toml, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("MY_HOOK_SECRET"), "{err}");

    let out = serve_output(&toml, &[("MY_HOOK_SECRET", "")]);
    assert_eq!(out.status.code(), Some(1));

    let bad = "whsec_!!!not-base64-SUPERSECRETVALUE";
    let out = serve_output(&toml, &[("MY_HOOK_SECRET", bad)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("MY_HOOK_SECRET"), "{err}");
    assert!(
        !err.contains("SUPERSECRETVALUE"),
        "never prints the secret: {err}"
    );
}

// ---------------------------------------------------------------------------
// The command line
// ---------------------------------------------------------------------------

fn cli(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut cmd = portcullis_command();
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    // A usage error may exit before reading stdin: a broken pipe is expected then.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn parse_lines(text: &str) -> Headers {
    text.lines()
        .map(|l| {
            let (k, v) = l.split_once(": ").unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[test]
fn sign_prints_what_a_sender_would_send() {
    let b = body(7);
    let env = [("SECRET", STD_SECRET)];
    let out = cli(
        &[
            "webhook",
            "sign",
            "--scheme",
            "standard",
            "--secret-env",
            "SECRET",
            "--id",
            "msg_42",
            "--timestamp",
            "1700000000",
        ],
        &env,
        &b,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        parse_lines(&stdout(&out)),
        sign_standard(STD_SECRET, "msg_42", 1_700_000_000, &b)
    );

    let env = [("SECRET", "topsecret")];
    for (scheme, expected) in [
        ("github", sign_github("topsecret", &b)),
        ("stripe", sign_stripe("topsecret", 1_700_000_000, &b)),
        (
            "hmac_sha256",
            sign_hmac("topsecret", Some(1_700_000_000), &b),
        ),
    ] {
        let out = cli(
            &[
                "webhook",
                "sign",
                "--scheme",
                scheme,
                "--secret-env",
                "SECRET",
                "--timestamp",
                "1700000000",
            ],
            &env,
            &b,
        );
        assert!(out.status.success(), "{scheme}: {}", stderr(&out));
        assert_eq!(parse_lines(&stdout(&out)), expected, "{scheme}");
    }
}

#[test]
fn verify_accepts_valid_and_rejects_with_one_reason_line() {
    let b = body(8);
    let t = now();
    let env = [("SECRETS", "old,new")];
    let signed = sign_stripe("new", t, &b);
    let header = format!("{}: {}", signed[0].0, signed[0].1);
    let args = [
        "webhook",
        "verify",
        "--scheme",
        "stripe",
        "--secret-env",
        "SECRETS",
        "--header",
        &header,
    ];
    let out = cli(&args, &env, &b);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("secret #2"), "{}", stdout(&out));

    let out = cli(&args, &env, &tampered(&b));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("signature_invalid"), "{err}");

    let stale = sign_stripe("new", t - 3600, &b);
    let stale = format!("Stripe-Signature: {}", stale[0].1);
    let mut a = args.to_vec();
    a[7] = &stale;
    let out = cli(&a, &env, &b);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("timestamp_outside_tolerance"));

    let out = cli(&args[..6], &env, &b);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("signature_missing"),
        "{}",
        stderr(&out)
    );

    let mut a = args.to_vec();
    a[7] = "no colon here";
    let out = cli(&a, &env, &b);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).trim().lines().count(), 1);
}

#[test]
fn usage_errors_are_one_readable_line() {
    for (args, env, needle) in [
        (
            vec![
                "webhook",
                "sign",
                "--scheme",
                "github",
                "--secret-env",
                "UNSET_VAR_X",
            ],
            vec![],
            "UNSET_VAR_X",
        ),
        (
            vec!["webhook", "sign", "--scheme", "sha1", "--secret-env", "S"],
            vec![("S", "k")],
            "sha1",
        ),
        (
            vec![
                "webhook",
                "verify",
                "--scheme",
                "nope",
                "--secret-env",
                "S",
                "--header",
                "A: b",
            ],
            vec![("S", "k")],
            "nope",
        ),
        (
            vec![
                "webhook",
                "sign",
                "--scheme",
                "standard",
                "--secret-env",
                "S",
            ],
            vec![("S", "whsec_%%%")],
            "not base64",
        ),
        (
            vec![
                "webhook",
                "sign",
                "--scheme",
                "stripe",
                "--secret-env",
                "S",
                "--timestamp",
                "yesterday",
            ],
            vec![("S", "k")],
            "timestamp",
        ),
    ] {
        let out = cli(&args, &env, b"{}");
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("whsec_%%%"), "never prints the secret: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_signature_is_accepted_by_the_gateway() {
    bounded(async {
        let up = Upstream::start().await;
        let toml = config(&up.url(), "", &hook("/echo/in", "standard", "S", "5m"));
        let gw = Gateway::start_with_env(&toml, &[("S", STD_SECRET)]).await;
        let b = body(9);
        let out = cli(
            &[
                "webhook",
                "sign",
                "--scheme",
                "standard",
                "--secret-env",
                "S",
            ],
            &[("S", STD_SECRET)],
            &b,
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let hs = parse_lines(&stdout(&out));
        assert_forwarded(&deliver(&gw, "/echo/in", &hs, &b).await, &b, &hs);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_store_with_on_error_local_or_allow_still_serves() {
    bounded(async {
        let up = Upstream::start().await;
        let url = format!("redis://127.0.0.1:{}", dead_port());
        for (on_error, second) in [("local", 409), ("allow", 200)] {
            let rest = format!(
                "[store]\nkind = \"redis\"\ntimeout = \"200ms\"\non_error = \"{on_error}\"\n\n{}",
                hook("/echo/hook", "hmac_sha256", "S", "5m")
            );
            let toml = config(&up.url(), "", &rest);
            let gw = Gateway::start_with_env(&toml, &[("REDIS_URL", &url), ("S", "k")]).await;
            let d = body(1);
            let hs = sign_hmac("k", Some(now()), &d);
            assert_forwarded(&deliver(&gw, "/echo/hook", &hs, &d).await, &d, &hs);
            let r = deliver(&gw, "/echo/hook", &hs, &d).await;
            if second == 409 {
                // `local`: the in-process fallback remembers the id.
                assert_problem(&r, 409, "webhook_replayed");
            } else {
                // `allow`: verified deliveries pass, unremembered.
                assert_eq!(r.status, 200, "{on_error}: {}", r.text());
            }
        }
    })
    .await
}
