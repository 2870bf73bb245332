//! Black-box tests of rate limiting, through the real binary over real sockets:
//! the three algorithms, the rate-limit headers and the 429 problem, honest
//! `Retry-After`, client identity (X-Forwarded-For, IPv6 prefixes, API keys,
//! header keys), shadow mode, bypass, overrides, cost, multi-policy routes,
//! `on_missing_key`, the admin endpoints and `portcullis check`.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::*;

/// The admin bearer token given to every gateway of this file.
const ADMIN_TOKEN: &str = "adm1n-t0ken-for-ratelimit-tests";

/// Every test of this file finishes within this.
const TEST_LIMIT: Duration = Duration::from_secs(120);

/// The rate-limit response headers of SPEC (and Retry-After).
const RL_HEADERS: [&str; 6] = [
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "ratelimit-policy",
    "ratelimit",
    "retry-after",
];

async fn bounded(fut: impl Future<Output = ()>) {
    within("the whole test", TEST_LIMIT, fut).await
}

fn now_f() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// A `[[policy]]` table; `extra` holds more `key = value` lines.
fn policy(name: &str, limit: u64, window: &str, extra: &str) -> String {
    format!("[[policy]]\nname = \"{name}\"\nlimit = {limit}\nwindow = \"{window}\"\n{extra}\n\n")
}

/// A `[[route]]` table; `extra` holds more `key = value` lines.
fn route(path: &str, policies: &[&str], extra: &str) -> String {
    let list = policies
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!("[[route]]\npath = \"{path}\"\npolicies = [{list}]\n{extra}\n\n")
}

async fn start(server_extra: &str, rest: &str) -> (Upstream, Gateway) {
    start_env(server_extra, rest, &[]).await
}

/// Starts an upstream and a gateway in front of it, with the admin token set.
async fn start_env(server_extra: &str, rest: &str, env: &[(&str, &str)]) -> (Upstream, Gateway) {
    let up = Upstream::start().await;
    let mut e = vec![("PORTCULLIS_ADMIN_TOKEN", ADMIN_TOKEN)];
    e.extend_from_slice(env);
    let gw = Gateway::start_with_env(&config(&up.url(), server_extra, rest), &e).await;
    (up, gw)
}

// ---------------------------------------------------------------------------
// Rate-limit headers
// ---------------------------------------------------------------------------

/// One member of a structured-field list: `"name";k=v;k=v`.
#[derive(Debug, Clone)]
struct SfItem {
    name: String,
    params: BTreeMap<String, String>,
}

impl SfItem {
    /// The sf-integer parameter `k` (digits only).
    fn int(&self, k: &str) -> u64 {
        let v = self
            .params
            .get(k)
            .unwrap_or_else(|| panic!("member {self:?} has no parameter {k:?}"));
        assert!(
            !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()),
            "parameter {k}={v:?} of {self:?} is not a non-negative sf-integer"
        );
        v.parse().unwrap()
    }
}

/// Parses a `RateLimit` / `RateLimit-Policy` field (names are sf-strings).
fn parse_sf_list(field: &str, v: &str) -> Vec<SfItem> {
    let mut out = Vec::new();
    for member in v.split(',') {
        let m = member.trim_matches(|c| c == ' ' || c == '\t');
        let rest = m.strip_prefix('"').unwrap_or_else(|| {
            panic!("{field}: member {m:?} of {v:?} is not a quoted string (sf-string name)")
        });
        let end = rest
            .find('"')
            .unwrap_or_else(|| panic!("{field}: unterminated string in {v:?}"));
        let name = rest[..end].to_string();
        assert!(!name.contains('\\'), "{field}: escaped name in {v:?}");
        let mut params = BTreeMap::new();
        let tail = &rest[end + 1..];
        if !tail.is_empty() {
            let tail = tail
                .strip_prefix(';')
                .unwrap_or_else(|| panic!("{field}: junk after the name in {v:?}"));
            for p in tail.split(';') {
                let p = p.trim_start_matches(' ');
                let (k, val) = p
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{field}: parameter {p:?} without a value in {v:?}"));
                assert!(
                    k.starts_with(|c: char| c.is_ascii_lowercase() || c == '*')
                        && k.chars().all(|c| c.is_ascii_lowercase()
                            || c.is_ascii_digit()
                            || "_-.*".contains(c)),
                    "{field}: {k:?} is not an sf-key in {v:?}"
                );
                params.insert(k.to_string(), val.to_string());
            }
        }
        out.push(SfItem { name, params });
    }
    out
}

/// The rate-limit headers of a response.
#[derive(Debug)]
struct Rl {
    limit: u64,
    remaining: u64,
    reset: u64,
    policy: Vec<SfItem>,
    state: Vec<SfItem>,
}

impl Rl {
    fn policy_item(&self, name: &str) -> &SfItem {
        self.policy
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("no {name:?} member in RateLimit-Policy {:?}", self.policy))
    }

    fn state_item(&self, name: &str) -> &SfItem {
        self.state
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("no {name:?} member in RateLimit {:?}", self.state))
    }

    fn names(&self) -> Vec<&str> {
        self.policy.iter().map(|i| i.name.as_str()).collect()
    }
}

/// The one value of header `name`.
fn one(r: &Reply, name: &str) -> String {
    let all = r.header_all(name);
    assert_eq!(
        all.len(),
        1,
        "exactly one {name} header (status {}): {:?}",
        r.status,
        r.headers
    );
    all[0].to_string()
}

fn uint(r: &Reply, name: &str) -> u64 {
    let v = one(r, name);
    assert!(
        !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()),
        "{name} is a non-negative integer: {v:?}"
    );
    v.parse().unwrap()
}

/// Reads and checks the syntax of all rate-limit headers of `r`.
fn rl(r: &Reply) -> Rl {
    let limit = uint(r, "x-ratelimit-limit");
    let remaining = uint(r, "x-ratelimit-remaining");
    let reset = uint(r, "x-ratelimit-reset");
    let policy = parse_sf_list("RateLimit-Policy", &one(r, "ratelimit-policy"));
    let state = parse_sf_list("RateLimit", &one(r, "ratelimit"));
    let pn: BTreeSet<&str> = policy.iter().map(|i| i.name.as_str()).collect();
    let sn: BTreeSet<&str> = state.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(
        pn, sn,
        "RateLimit-Policy and RateLimit name the same policies: {policy:?} / {state:?}"
    );
    assert_eq!(pn.len(), policy.len(), "one member per policy: {policy:?}");
    for i in &policy {
        i.int("q");
        assert!(i.int("w") >= 1, "RateLimit-Policy w: {i:?}");
    }
    for i in &state {
        i.int("r");
        i.int("t");
    }
    Rl {
        limit,
        remaining,
        reset,
        policy,
        state,
    }
}

/// Checks that `r` carries no rate-limit header at all.
fn assert_no_rl_headers(r: &Reply, why: &str) {
    for h in RL_HEADERS {
        assert!(
            r.header(h).is_none(),
            "{why}: no {h} header expected, got headers {:?}",
            r.headers
        );
    }
}

/// Checks a 429 of policy `policy` on path `instance` (problem body as SPEC's
/// example, Retry-After, RateLimit t, header contract). Returns Retry-After, the
/// problem and the rate-limit headers.
fn assert_limited(r: &Reply, instance: &str, policy: &str) -> (u64, Value, Rl) {
    assert_limited_v(r, instance, policy, Some(&[policy]))
}

/// [`assert_limited`] with `violated-policies` checked against `violated` when given.
fn assert_limited_v(
    r: &Reply,
    instance: &str,
    policy: &str,
    violated: Option<&[&str]>,
) -> (u64, Value, Rl) {
    assert_eq!(
        r.status,
        429,
        "expected a 429 from policy {policy:?}; headers {:?} body {:?}",
        r.headers,
        r.text()
    );
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.to_ascii_lowercase()
            .starts_with("application/problem+json"),
        "429 Content-Type is application/problem+json, got {ct:?}"
    );
    assert_contract_headers(r, None);
    let ra = uint(r, "retry-after");
    assert!(ra >= 1, "Retry-After is at least 1: {ra}");
    let p = r.json();
    let keys: BTreeSet<&str> = p
        .as_object()
        .unwrap_or_else(|| panic!("problem is an object: {p}"))
        .keys()
        .map(String::as_str)
        .collect();
    let expected: BTreeSet<&str> = [
        "type",
        "title",
        "status",
        "detail",
        "instance",
        "code",
        "request_id",
        "violated-policies",
        "policy",
        "retry_after",
    ]
    .into_iter()
    .collect();
    assert_eq!(keys, expected, "429 problem members as SPEC's example: {p}");
    assert_eq!(
        p["type"], "https://iana.org/assignments/http-problem-types#quota-exceeded",
        "{p}"
    );
    assert_eq!(p["title"], "Too Many Requests", "{p}");
    assert_eq!(p["status"], 429, "{p}");
    let detail = p["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains(policy),
        "detail names the policy {policy:?}: {p}"
    );
    assert_eq!(p["instance"], instance, "{p}");
    assert_eq!(p["code"], "rate_limited", "{p}");
    assert_eq!(
        p["request_id"].as_str(),
        Some(r.request_id().as_str()),
        "problem request_id equals X-Request-ID: {p}"
    );
    if let Some(v) = violated {
        assert_eq!(p["violated-policies"], json!(v), "{p}");
    }
    assert_eq!(p["policy"], policy, "{p}");
    assert_eq!(
        p["retry_after"],
        json!(ra),
        "retry_after equals Retry-After: {p}"
    );
    let h = rl(r);
    assert_eq!(
        h.state_item(policy).int("t"),
        ra,
        "RateLimit t of the denying policy equals Retry-After on a 429: {:?}",
        r.headers
    );
    (ra, p, h)
}

/// A 200 from the upstream's /echo, with the header contract and no Retry-After.
fn assert_allowed(r: &Reply, what: &str) {
    assert_eq!(
        r.status,
        200,
        "{what}: expected 200, got headers {:?} body {:?}",
        r.headers,
        r.text()
    );
    assert_contract_headers(r, None);
    assert!(
        r.header("retry-after").is_none(),
        "{what}: no Retry-After on an allowed request: {:?}",
        r.headers
    );
}

/// `value` lies within [floor(lo), ceil(hi)].
fn within_f(value: u64, lo: f64, hi: f64) -> bool {
    (value as f64) >= lo.floor() && (value as f64) <= hi.ceil()
}

/// If fewer than `margin` seconds are left in the current aligned window of
/// `window` seconds, sleeps into the next one so a burst of requests stays in one.
async fn avoid_window_edge(window: u64, margin: f64) {
    let now = now_f();
    let w = window as f64;
    let into = now % w;
    if w - into < margin {
        let wait = w - into + 0.3;
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    }
}

/// The end (epoch seconds) of the aligned window of `window` seconds holding `t`.
fn window_end(t: f64, window: u64) -> u64 {
    ((t as u64) / window + 1) * window
}

/// Sends `n` GETs to `path` with `headers`, each expected to be allowed.
async fn allow_n(gw: &Gateway, path: &str, headers: &[(&str, &str)], n: usize, what: &str) {
    for i in 0..n {
        let r = get_h(gw.addr, path, headers).await;
        assert_allowed(&r, &format!("{what}, request {}", i + 1));
    }
}

/// `GET /admin/limits?policy=P&key=K` with the admin token; expects 200.
async fn limits(gw: &Gateway, policy: &str, key: &str) -> Value {
    let r = admin_call(
        gw,
        "GET",
        &format!("/admin/limits?policy={policy}&key={key}"),
        Some(ADMIN_TOKEN),
        &[],
    )
    .await;
    assert_eq!(
        r.status,
        200,
        "GET /admin/limits?policy={policy}&key={key}: {}",
        r.text()
    );
    r.json()
}

/// `GET /admin/explain?...` with the admin token and `headers`; expects 200.
async fn explain(gw: &Gateway, query: &str, headers: &[(&str, &str)]) -> Value {
    let r = admin_call(
        gw,
        "GET",
        &format!("/admin/explain?{query}"),
        Some(ADMIN_TOKEN),
        headers,
    )
    .await;
    assert_eq!(r.status, 200, "GET /admin/explain?{query}: {}", r.text());
    r.json()
}

fn explain_policy<'a>(e: &'a Value, name: &str) -> &'a Value {
    e["policies"]
        .as_array()
        .unwrap_or_else(|| panic!("explain has a policies array: {e}"))
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("explain lists policy {name:?}: {e}"))
}

fn explain_names(e: &Value) -> Vec<String> {
    e["policies"]
        .as_array()
        .unwrap_or_else(|| panic!("explain has a policies array: {e}"))
        .iter()
        .map(|p| p["name"].as_str().unwrap_or("").to_string())
        .collect()
}

/// `portcullis_ratelimit_decisions_total{policy,outcome}` (0 when absent).
fn decisions(metrics: &str, policy: &str, outcome: &str) -> f64 {
    metric_value(
        metrics,
        "portcullis_ratelimit_decisions_total",
        &[("policy", policy), ("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

/// A problem+json from the admin listener with `status` and `code`.
fn assert_admin_problem(r: &Reply, status: u16, code: &str) {
    assert_eq!(
        r.status,
        status,
        "admin status; headers {:?} body {:?}",
        r.headers,
        r.text()
    );
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.to_ascii_lowercase()
            .starts_with("application/problem+json"),
        "admin error Content-Type is application/problem+json, got {ct:?}"
    );
    let p = r.json();
    assert_eq!(p["status"], status, "{p}");
    assert_eq!(p["code"], code, "{p}");
    assert!(p["title"].is_string(), "{p}");
    assert!(p["type"].is_string(), "{p}");
}

// ---------------------------------------------------------------------------
// SHA-256 (to compute the api_key key form independently of the gateway)
// ---------------------------------------------------------------------------

fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_be_bytes());
    for chunk in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (slot, b) in w.iter_mut().zip(chunk.chunks_exact(4)) {
            *slot = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for (k, wi) in K.iter().zip(w.iter()) {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(*k)
                .wrapping_add(*wi);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 32];
    for (o, word) in out.chunks_exact_mut(4).zip(h) {
        o.copy_from_slice(&word.to_be_bytes());
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SPEC's api_key key form: the first 16 hex digits of SHA-256(credential).
fn api_key_form(credential: &str) -> String {
    hex(&sha256(credential.as_bytes()))[..16].to_string()
}

#[test]
fn sha256_helper_matches_known_vectors() {
    assert_eq!(
        hex(&sha256(b"abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        hex(&sha256(b"")),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let long = vec![b'a'; 1000];
    assert_eq!(
        hex(&sha256(&long)),
        "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3"
    );
}

#[test]
fn sf_list_parser_reads_spec_examples() {
    let items = parse_sf_list("RateLimit", "\"default\";r=42;t=18, \"auth\";r=0;t=7");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].name, "default");
    assert_eq!(items[0].int("r"), 42);
    assert_eq!(items[1].int("t"), 7);
    let text =
        "# HELP x y\nportcullis_ratelimit_decisions_total{policy=\"a,b\",outcome=\"limited\"} 5\n\
                portcullis_ratelimit_decisions_total{outcome=\"limited\",policy=\"c\"} 2\n";
    assert_eq!(
        metric_value(
            text,
            "portcullis_ratelimit_decisions_total",
            &[("policy", "c"), ("outcome", "limited")]
        ),
        Some(2.0)
    );
    assert_eq!(
        metric_value(
            text,
            "portcullis_ratelimit_decisions_total",
            &[("outcome", "limited")]
        ),
        Some(7.0)
    );
}

// ---------------------------------------------------------------------------
// 1. N + 5 requests: exactly 5 rejections, headers and problem, per algorithm
// ---------------------------------------------------------------------------

async fn n_plus_five(alg: &str) {
    const N: u64 = 10;
    let name = format!("tier_{alg}");
    let rest = policy(&name, N, "1m", &format!("burst = 0\nalgorithm = \"{alg}\""))
        + &route("/echo/*", &[&name], "");
    let (up, gw) = start("", &rest).await;
    if alg != "gcra" {
        avoid_window_edge(60, 10.0).await;
    }
    let t0 = now_f();
    let mut rejected = 0;
    let mut last_429_id = None;
    for i in 0..N + 5 {
        let before = now_f();
        let r = get(gw.addr, "/echo/rl").await;
        let after = now_f();
        let what = format!("{alg}: request {} of {}", i + 1, N + 5);
        assert_contract_headers(&r, None);
        let h = rl(&r);
        assert_eq!(h.limit, N, "{what}: X-RateLimit-Limit");
        assert_eq!(h.names(), vec![name.as_str()], "{what}: {:?}", r.headers);
        let pi = h.policy_item(&name);
        assert_eq!(
            (pi.int("q"), pi.int("w")),
            (N, 60),
            "{what}: RateLimit-Policy {:?}",
            r.header("ratelimit-policy")
        );
        let si = h.state_item(&name);
        assert_eq!(
            si.int("r"),
            h.remaining,
            "{what}: RateLimit r equals X-RateLimit-Remaining: {:?}",
            r.headers
        );
        let t = si.int("t");
        let end = window_end(before, 60);
        if i < N {
            assert_allowed(&r, &what);
            assert_eq!(h.remaining, N - 1 - i, "{what}: remaining counts down");
            match alg {
                "gcra" => {
                    // 10 per minute: a unit every 6 s; after k units the bucket is
                    // full again 6k s after the first one.
                    let k = (i + 1) as f64;
                    assert!((1..=6).contains(&t), "{what}: gcra t is the next unit: {t}");
                    assert!(
                        within_f(h.reset, t0 + 6.0 * k - 1.0, after + 6.0 * k + 1.0),
                        "{what}: gcra X-RateLimit-Reset {} not ~ now + {}s (now {after})",
                        h.reset,
                        6.0 * k
                    );
                }
                "fixed_window" => {
                    assert!(
                        within_f(t, end as f64 - after, end as f64 - before),
                        "{what}: fixed_window t is the end of the window: t={t}, end={end}, now={before}"
                    );
                    assert_eq!(h.reset, end, "{what}: fixed_window reset is the window end");
                }
                _ => {
                    assert!(t <= 60, "{what}: sliding_window t within the window: {t}");
                    assert!(
                        within_f(h.reset, before, after + 121.0),
                        "{what}: sliding_window reset {} (now {before})",
                        h.reset
                    );
                }
            }
        } else {
            rejected += 1;
            let (ra, _p, h) = assert_limited(&r, "/echo/rl", &name);
            assert_eq!(h.remaining, 0, "{what}: remaining on a 429");
            match alg {
                "gcra" => {
                    assert!((1..=6).contains(&ra), "{what}: gcra Retry-After {ra}");
                    assert!(
                        within_f(h.reset, t0 + 59.0, after + 61.0),
                        "{what}: gcra reset {} not ~ first request + 60 s",
                        h.reset
                    );
                }
                "fixed_window" => {
                    assert!(
                        within_f(ra, end as f64 - after, end as f64 - before),
                        "{what}: fixed_window Retry-After {ra} is the wait to the window end {end} (now {before})"
                    );
                    assert_eq!(h.reset, end, "{what}: fixed_window reset");
                }
                _ => {
                    // The previous window's 10 weigh (1 - f) in the next one: one more
                    // request fits once 10 (1 - f) + 1 <= 10, f >= 0.1: 6 s into it.
                    assert!(
                        within_f(ra, end as f64 - after + 6.0, end as f64 - before + 6.0),
                        "{what}: sliding_window Retry-After {ra}: expected the window end {end} + 6 s (now {before})"
                    );
                }
            }
            last_429_id = Some(r.request_id());
        }
    }
    assert_eq!(rejected, 5, "{alg}: exactly 5 rejections");
    assert_eq!(
        up.seen_target("/echo/rl").len(),
        N as usize,
        "{alg}: only the admitted requests reach the upstream"
    );
    let m = metrics_text(&gw).await;
    assert_eq!(decisions(&m, &name, "allowed"), N as f64, "{alg}: metrics");
    assert_eq!(decisions(&m, &name, "limited"), 5.0, "{alg}: metrics");
    let hj = health_json(&gw).await;
    assert_eq!(
        hj["policies"][&name]["allowed"], N,
        "{alg}: /health policies: {hj}"
    );
    assert_eq!(hj["policies"][&name]["limited"], 5, "{alg}: /health: {hj}");
    let st = &hj["store"];
    assert_eq!(st["kind"], "memory", "{alg}: /health store: {hj}");
    assert_eq!(st["reachable"], true, "{hj}");
    assert_eq!(st["fallback_active"], false, "{hj}");
    assert_eq!(st["errors"], 0, "{hj}");
    assert!(
        st["keys"].as_u64().is_some_and(|k| k >= 1),
        "the memory store holds the client's key: {hj}"
    );
    assert_eq!(
        metric_value(
            &m,
            "portcullis_requests_total",
            &[("route", "/echo/*"), ("status", "429")]
        ),
        Some(5.0),
        "{alg}: requests_total labelled with the route pattern:\n{m}"
    );
    let line = gw.wait_log(&last_429_id.unwrap()).await;
    assert_log_members(&line);
    assert_eq!(line["status"], 429, "{line}");
    assert_eq!(line["route"], "/echo/*", "{line}");
    assert_eq!(
        line["policy"],
        name.as_str(),
        "access log names the policy: {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_plus_five_gcra() {
    bounded(n_plus_five("gcra")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_plus_five_sliding_window() {
    bounded(n_plus_five("sliding_window")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_plus_five_fixed_window() {
    bounded(n_plus_five("fixed_window")).await;
}

// ---------------------------------------------------------------------------
// 2. Retry-After is honest
// ---------------------------------------------------------------------------

async fn honest_retry_after(gw: &Gateway, path: &str, name: &str) {
    let mut ra = None;
    for i in 0..6 {
        let r = get(gw.addr, path).await;
        if r.status == 429 {
            ra = Some(assert_limited(&r, path, name).0);
            break;
        }
        assert_allowed(&r, &format!("{name}: request {}", i + 1));
    }
    let ra = ra.unwrap_or_else(|| panic!("{name}: no 429 within 6 requests of a 2 per 2 s policy"));
    assert!(ra < 5, "{name}: Retry-After {ra} for a 2 per 2 s policy");
    tokio::time::sleep(Duration::from_secs(ra)).await;
    let r = get(gw.addr, path).await;
    assert_eq!(
        r.status,
        200,
        "{name}: waited Retry-After ({ra} s) and was still denied: {:?} {}",
        r.headers,
        r.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honest() {
    bounded(async {
        let mut rest = String::new();
        for alg in ["gcra", "sliding_window", "fixed_window"] {
            rest += &policy(alg, 2, "2s", &format!("algorithm = \"{alg}\""));
            rest += &route(&format!("/echo/{alg}/*"), &[alg], "");
        }
        let (_up, gw) = start("", &rest).await;
        tokio::join!(
            honest_retry_after(&gw, "/echo/gcra/x", "gcra"),
            honest_retry_after(&gw, "/echo/sliding_window/x", "sliding_window"),
            honest_retry_after(&gw, "/echo/fixed_window/x", "fixed_window"),
        );
    })
    .await;
}

// ---------------------------------------------------------------------------
// 3. X-Forwarded-For and trusted proxies
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xff_from_an_untrusted_peer_opens_no_new_bucket() {
    bounded(async {
        let (_up, gw) = start("", &policy("default", 3, "1m", "")).await;
        let xff = |ip: &'static str| [("x-forwarded-for", ip)];
        allow_n(&gw, "/echo/x", &xff("203.0.113.7"), 3, "untrusted").await;
        let r = get_h(gw.addr, "/echo/x", &xff("203.0.113.7")).await;
        assert_limited(&r, "/echo/x", "default");
        let r = get_h(gw.addr, "/echo/x", &xff("198.51.100.9")).await;
        assert_limited(&r, "/echo/x", "default");
        let r = get_h(gw.addr, "/echo/x", &[("forwarded", "for=198.51.100.10")]).await;
        assert_limited(&r, "/echo/x", "default");
        let r = get(gw.addr, "/echo/x").await;
        assert_limited(&r, "/echo/x", "default");
        let l = limits(&gw, "default", "127.0.0.1").await;
        assert_eq!(l["remaining"], 0, "the peer's bucket is the one used: {l}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xff_from_a_trusted_proxy_keys_by_the_client() {
    bounded(async {
        let (_up, gw) = start(
            "trusted_proxies = [\"127.0.0.0/8\"]",
            &policy("default", 3, "1m", ""),
        )
        .await;
        let a = [("x-forwarded-for", "203.0.113.7")];
        allow_n(&gw, "/echo/x", &a, 3, "client A").await;
        let r = get_h(gw.addr, "/echo/x", &a).await;
        assert_limited(&r, "/echo/x", "default");
        // The right-most address that is not a trusted proxy is the client.
        let r = get_h(
            gw.addr,
            "/echo/x",
            &[("x-forwarded-for", "203.0.113.7, 127.0.0.5")],
        )
        .await;
        assert_limited(&r, "/echo/x", "default");
        let r = get_h(gw.addr, "/echo/x", &[("x-forwarded-for", "198.51.100.9")]).await;
        assert_allowed(&r, "client B has its own bucket");
        assert_eq!(rl(&r).remaining, 2);
        let r = get(gw.addr, "/echo/x").await;
        assert_allowed(&r, "the proxy itself (no XFF) has its own bucket");
        assert_eq!(rl(&r).remaining, 2);
        assert_eq!(limits(&gw, "default", "203.0.113.7").await["remaining"], 0);
        assert_eq!(limits(&gw, "default", "198.51.100.9").await["remaining"], 2);
    })
    .await;
}

// ---------------------------------------------------------------------------
// 4. header keys
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_key_isolates_workspaces() {
    bounded(async {
        let rest = policy("ws", 3, "1m", "key = [\"header:X-Workspace-Id\"]")
            + &route("/echo/*", &["ws"], "");
        let (_up, gw) = start("", &rest).await;
        let ws1 = [("x-workspace-id", "ws-1")];
        allow_n(&gw, "/echo/w", &ws1, 3, "ws-1").await;
        let r = get_h(gw.addr, "/echo/w", &ws1).await;
        assert_limited(&r, "/echo/w", "ws");
        let r = get_h(gw.addr, "/echo/w", &[("X-Workspace-Id", "ws-2")]).await;
        assert_allowed(&r, "ws-2 is not limited by ws-1");
        assert_eq!(rl(&r).remaining, 2);
        let r = get_h(gw.addr, "/echo/w", &ws1).await;
        assert_limited(&r, "/echo/w", "ws");
        assert_eq!(limits(&gw, "ws", "ws-1").await["remaining"], 0);
        assert_eq!(limits(&gw, "ws", "ws-2").await["remaining"], 2);
    })
    .await;
}

// ---------------------------------------------------------------------------
// 5. shadow mode
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_never_rejects_and_counts() {
    bounded(async {
        let rest = policy("shadowy", 2, "1m", "mode = \"shadow\"")
            + &route("/echo/sh/*", &["shadowy"], "")
            + &policy("enf", 100, "1m", "")
            + &policy("shad2", 1, "1m", "mode = \"shadow\"")
            + &route("/echo/mixed/*", &["enf", "shad2"], "");
        let (_up, gw) = start("", &rest).await;
        for i in 0..5 {
            let r = get(gw.addr, "/echo/sh/x").await;
            assert_allowed(&r, &format!("shadow request {}", i + 1));
            assert_no_rl_headers(&r, "a shadow policy shows in no header");
        }
        for i in 0..3u64 {
            let r = get(gw.addr, "/echo/mixed/x").await;
            assert_allowed(&r, &format!("enforce + shadow request {}", i + 1));
            let h = rl(&r);
            assert_eq!(
                h.names(),
                vec!["enf"],
                "only the enforcing policy shows: {:?}",
                r.headers
            );
            assert_eq!(h.limit, 100, "the shadow policy is never the tightest");
            assert_eq!(h.remaining, 99 - i);
        }
        let m = metrics_text(&gw).await;
        let shadow = decisions(&m, "shadowy", "shadow_limited");
        assert!(
            shadow > 0.0,
            "portcullis_ratelimit_decisions_total{{policy=\"shadowy\",outcome=\"shadow_limited\"}} > 0:\n{m}"
        );
        assert_eq!(
            shadow + decisions(&m, "shadowy", "allowed"),
            5.0,
            "each request is one decision:\n{m}"
        );
        assert_eq!(decisions(&m, "shadowy", "limited"), 0.0);
        assert!(decisions(&m, "shad2", "shadow_limited") > 0.0, "{m}");
        let h = health_json(&gw).await;
        let p = &h["policies"]["shadowy"];
        assert!(
            p["shadow_limited"].as_u64().is_some_and(|n| n > 0),
            "/health policies.shadowy.shadow_limited > 0: {h}"
        );
        assert_eq!(p["limited"], 0, "{h}");
    })
    .await;
}

// ---------------------------------------------------------------------------
// 6. bypass
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bypass_cidrs_are_never_limited() {
    bounded(async {
        let rest = policy("default", 2, "1m", "")
            + &policy("other", 2, "1m", "")
            + &route("/echo/two/*", &["default", "other"], "")
            + "[bypass]\ncidrs = [\"127.0.0.0/8\"]\n";
        let (up, gw) = start("", &rest).await;
        for i in 0..5 {
            let r = get(gw.addr, "/echo/x").await;
            assert_allowed(&r, &format!("bypassed request {}", i + 1));
            assert_no_rl_headers(&r, "a bypassed request");
        }
        for i in 0..3 {
            let r = get(gw.addr, "/echo/two/x").await;
            assert_allowed(&r, &format!("bypassed two-policy request {}", i + 1));
            assert_no_rl_headers(&r, "a bypassed request");
        }
        assert_eq!(up.seen_target("/echo/").len(), 8);
        let m = metrics_text(&gw).await;
        assert_eq!(decisions(&m, "default", "bypassed"), 8.0, "{m}");
        assert_eq!(decisions(&m, "other", "bypassed"), 3.0, "{m}");
        assert_eq!(decisions(&m, "default", "limited"), 0.0, "{m}");
        let h = health_json(&gw).await;
        assert_eq!(h["policies"]["default"]["bypassed"], 8, "{h}");
        assert_eq!(h["policies"]["other"]["bypassed"], 3, "{h}");
        assert_eq!(h["policies"]["default"]["limited"], 0, "{h}");
        let e = explain(&gw, "method=GET&path=/echo/x&peer=127.0.0.1", &[]).await;
        assert_eq!(e["bypassed"], true, "{e}");
        let e = explain(&gw, "method=GET&path=/echo/x&peer=203.0.113.7", &[]).await;
        assert_eq!(e["bypassed"], false, "{e}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bypass_token_is_never_limited_and_a_wrong_one_is() {
    bounded(async {
        let token = "byp4ss-t0ken-0123456789";
        let (_up, gw) = start_env(
            "",
            &policy("default", 2, "1m", ""),
            &[("PORTCULLIS_BYPASS_TOKEN", token)],
        )
        .await;
        allow_n(&gw, "/echo/x", &[], 2, "plain").await;
        let r = get(gw.addr, "/echo/x").await;
        assert_limited(&r, "/echo/x", "default");
        for i in 0..3 {
            let r = get_h(gw.addr, "/echo/x", &[("x-bypass-token", token)]).await;
            assert_allowed(&r, &format!("bypass token request {}", i + 1));
            assert_no_rl_headers(&r, "a bypassed request");
        }
        let r = get_h(
            gw.addr,
            "/echo/x",
            &[("x-bypass-token", "byp4ss-t0ken-wrong")],
        )
        .await;
        assert_limited(&r, "/echo/x", "default");
        let r = get_h(gw.addr, "/echo/x", &[("x-bypass-token", "")]).await;
        assert_limited(&r, "/echo/x", "default");
        let h = health_json(&gw).await;
        assert_eq!(h["policies"]["default"]["bypassed"], 3, "{h}");
        assert_eq!(h["policies"]["default"]["allowed"], 2, "{h}");
        assert_eq!(h["policies"]["default"]["limited"], 3, "{h}");
    })
    .await;
}

// ---------------------------------------------------------------------------
// 7. overrides
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_give_a_key_its_own_limit() {
    bounded(async {
        let rest = policy(
            "ws",
            2,
            "1m",
            "key = [\"header:X-Workspace-Id\"]\n\
             overrides = [ { key = \"ws-big\", limit = 5 }, { key = \"ws-burst\", limit = 3, burst = 2 } ]",
        ) + &route("/echo/*", &["ws"], "");
        let (_up, gw) = start("", &rest).await;
        let big = [("x-workspace-id", "ws-big")];
        for i in 0..5u64 {
            let r = get_h(gw.addr, "/echo/o", &big).await;
            assert_allowed(&r, &format!("ws-big request {}", i + 1));
            let h = rl(&r);
            assert_eq!(h.remaining, 4 - i, "ws-big remaining");
            assert_eq!(h.limit, 5, "ws-big's limit is its override");
        }
        let r = get_h(gw.addr, "/echo/o", &big).await;
        assert_limited(&r, "/echo/o", "ws");
        let small = [("x-workspace-id", "ws-small")];
        for i in 0..2u64 {
            let r = get_h(gw.addr, "/echo/o", &small).await;
            assert_allowed(&r, &format!("ws-small request {}", i + 1));
            let h = rl(&r);
            assert_eq!(h.remaining, 1 - i);
            assert_eq!(h.limit, 2);
        }
        let r = get_h(gw.addr, "/echo/o", &small).await;
        assert_limited(&r, "/echo/o", "ws");
        let bursty = [("x-workspace-id", "ws-burst")];
        for i in 0..5u64 {
            let r = get_h(gw.addr, "/echo/o", &bursty).await;
            assert_allowed(&r, &format!("ws-burst request {}", i + 1));
            let h = rl(&r);
            assert_eq!((h.limit, h.remaining), (3, 4 - i), "override with burst");
        }
        let r = get_h(gw.addr, "/echo/o", &bursty).await;
        assert_limited(&r, "/echo/o", "ws");
    })
    .await;
}

// ---------------------------------------------------------------------------
// 8. cost
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_cost_takes_several_units() {
    bounded(async {
        let rest = policy("c6", 6, "1m", "")
            + &route("/echo/c6/*", &["c6"], "cost = 3")
            + &policy("c7", 7, "1m", "")
            + &route("/echo/c7/*", &["c7"], "cost = 3");
        let (_up, gw) = start("", &rest).await;
        for (i, left) in [3u64, 0].into_iter().enumerate() {
            let r = get(gw.addr, "/echo/c6/x").await;
            assert_allowed(&r, &format!("cost 3 of 6, request {}", i + 1));
            assert_eq!(rl(&r).remaining, left);
        }
        let r = get(gw.addr, "/echo/c6/x").await;
        let (ra, _, h) = assert_limited(&r, "/echo/c6/x", "c6");
        assert_eq!(h.remaining, 0);
        // gcra 6/min: 3 units take 30 s to refill.
        assert!(
            (29..=30).contains(&ra),
            "Retry-After for 3 units of a 6/min gcra: {ra}"
        );

        for (i, left) in [4u64, 1].into_iter().enumerate() {
            let r = get(gw.addr, "/echo/c7/x").await;
            assert_allowed(&r, &format!("cost 3 of 7, request {}", i + 1));
            assert_eq!(rl(&r).remaining, left);
        }
        // One unit left: a request of 3 does not fit and takes nothing.
        let r = get(gw.addr, "/echo/c7/x").await;
        let (ra, _, h) = assert_limited(&r, "/echo/c7/x", "c7");
        assert_eq!(h.remaining, 1, "a denied request takes nothing");
        // 2 missing units at 7/min: 17.1 s.
        assert!(
            (17..=18).contains(&ra),
            "Retry-After for 2 missing units of a 7/min gcra: {ra}"
        );
        assert_eq!(limits(&gw, "c7", "127.0.0.1").await["remaining"], 1);
    })
    .await;
}

// ---------------------------------------------------------------------------
// 9. two policies on one route
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_policies_the_tightest_is_reported_and_a_denial_takes_nothing() {
    bounded(async {
        let rest = policy("default", 100, "1m", "")
            + &policy("auth", 3, "1m", "")
            + &route("/echo/auth/*", &["default", "auth"], "");
        let (up, gw) = start("", &rest).await;
        for i in 0..3u64 {
            let r = get(gw.addr, "/echo/auth/login").await;
            assert_allowed(&r, &format!("auth request {}", i + 1));
            let h = rl(&r);
            assert_eq!(h.limit, 3, "auth is the tightest: {:?}", r.headers);
            assert_eq!(h.remaining, 2 - i);
            let mut names = h.names();
            names.sort();
            assert_eq!(names, vec!["auth", "default"], "{:?}", r.headers);
            let d = h.policy_item("default");
            assert_eq!((d.int("q"), d.int("w")), (100, 60));
            let a = h.policy_item("auth");
            assert_eq!((a.int("q"), a.int("w")), (3, 60));
            assert_eq!(h.state_item("default").int("r"), 99 - i);
            assert_eq!(h.state_item("auth").int("r"), 2 - i);
        }
        for _ in 0..3 {
            let r = get(gw.addr, "/echo/auth/login").await;
            let (_, p, h) = assert_limited(&r, "/echo/auth/login", "auth");
            assert_eq!(p["violated-policies"], json!(["auth"]));
            assert_eq!(h.limit, 3);
            assert_eq!(h.remaining, 0);
            assert_eq!(
                h.state_item("default").int("r"),
                97,
                "the denied request took nothing from default: {:?}",
                r.headers
            );
        }
        assert_eq!(up.seen_target("/echo/auth/").len(), 3);
        let l = limits(&gw, "default", "127.0.0.1").await;
        assert_eq!(
            l["remaining"], 97,
            "requests denied by auth take nothing from default: {l}"
        );
        assert_eq!(l["limit"], 100, "{l}");
        let l = limits(&gw, "auth", "127.0.0.1").await;
        assert_eq!(l["remaining"], 0, "{l}");
        // An unmatched request uses default only, from the same bucket.
        let r = get(gw.addr, "/echo/other").await;
        assert_allowed(&r, "unmatched");
        let h = rl(&r);
        assert_eq!(h.names(), vec!["default"]);
        assert_eq!(h.remaining, 96);
        let m = metrics_text(&gw).await;
        assert_eq!(decisions(&m, "auth", "limited"), 3.0, "{m}");
        assert_eq!(decisions(&m, "auth", "allowed"), 3.0, "{m}");
        assert_eq!(decisions(&m, "default", "limited"), 0.0, "{m}");
    })
    .await;
}

// ---------------------------------------------------------------------------
// 10. unmatched requests use `default`; `policies = []` is never limited
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_uses_default_and_empty_policies_are_never_limited() {
    bounded(async {
        let rest = policy("default", 2, "1m", "")
            + &policy("other", 50, "1m", "")
            + &route("/echo/free/*", &[], "")
            + &route("/echo/api/*", &["other"], "");
        let (_up, gw) = start("", &rest).await;
        for i in 0..2u64 {
            let r = get(gw.addr, "/echo/unmatched").await;
            assert_allowed(&r, &format!("unmatched request {}", i + 1));
            let h = rl(&r);
            assert_eq!(h.names(), vec!["default"], "{:?}", r.headers);
            assert_eq!((h.limit, h.remaining), (2, 1 - i));
        }
        let r = get(gw.addr, "/echo/unmatched").await;
        assert_limited(&r, "/echo/unmatched", "default");
        for i in 0..6 {
            let r = get(gw.addr, "/echo/free/x").await;
            assert_allowed(&r, &format!("policies = [] request {}", i + 1));
            assert_no_rl_headers(&r, "a route with policies = []");
        }
        let r = get(gw.addr, "/echo/api/x").await;
        assert_allowed(&r, "a route with its own policy");
        assert_eq!(rl(&r).names(), vec!["other"], "{:?}", r.headers);
        assert_eq!(rl(&r).remaining, 49);
    })
    .await;
}

// ---------------------------------------------------------------------------
// 11. on_missing_key
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_missing_key_deny_skip_ip() {
    bounded(async {
        let key = "key = [\"header:X-Workspace-Id\"]";
        let rest = policy("md", 2, "1m", &format!("{key}\non_missing_key = \"deny\""))
            + &route("/echo/deny/*", &["md"], "")
            + &policy("ms", 2, "1m", &format!("{key}\non_missing_key = \"skip\""))
            + &route("/echo/skip/*", &["ms"], "")
            + &policy("mi", 2, "1m", &format!("{key}\non_missing_key = \"ip\""))
            + &route("/echo/ip/*", &["mi"], "");
        let (up, gw) = start("", &rest).await;
        let ws = [("x-workspace-id", "ws-a")];

        // deny
        let r = get(gw.addr, "/echo/deny/x").await;
        let p = assert_problem(&r, 400, "missing_rate_limit_key");
        assert!(
            p["detail"]
                .as_str()
                .unwrap_or("")
                .to_ascii_lowercase()
                .contains("x-workspace-id"),
            "detail names the missing source: {p}"
        );
        assert!(up.seen_target("/echo/deny/").is_empty());
        let r = get_h(gw.addr, "/echo/deny/x", &ws).await;
        assert_allowed(&r, "deny policy with its key");
        assert_eq!(rl(&r).remaining, 1);

        // skip
        for i in 0..4 {
            let r = get(gw.addr, "/echo/skip/x").await;
            assert_allowed(&r, &format!("skip without key, request {}", i + 1));
            assert_no_rl_headers(&r, "a skipped policy decides nothing");
        }
        allow_n(&gw, "/echo/skip/x", &ws, 2, "skip with key").await;
        let r = get_h(gw.addr, "/echo/skip/x", &ws).await;
        assert_limited(&r, "/echo/skip/x", "ms");

        // ip
        allow_n(&gw, "/echo/ip/x", &[], 2, "ip fallback").await;
        let r = get(gw.addr, "/echo/ip/x").await;
        assert_limited(&r, "/echo/ip/x", "mi");
        let r = get_h(gw.addr, "/echo/ip/x", &ws).await;
        assert_allowed(&r, "with the header the key is the workspace");
        assert_eq!(limits(&gw, "mi", "127.0.0.1").await["remaining"], 0);
        assert_eq!(limits(&gw, "mi", "ws-a").await["remaining"], 1);
    })
    .await;
}

// ---------------------------------------------------------------------------
// 12. api_key keys
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_hashed_everywhere() {
    bounded(async {
        let raw1 = "rawkeyZq8xT4Lm9PwV2nC7qqHj3";
        let raw2 = "rawkeyWm5bN1cR8yK4tE6uuAp0";
        let k1 = api_key_form(raw1);
        let k2 = api_key_form(raw2);
        let rest =
            policy("keys", 2, "1m", "key = [\"api_key\"]") + &route("/echo/*", &["keys"], "");
        let (_up, gw) = start("", &rest).await;
        allow_n(&gw, "/echo/k", &[("x-api-key", raw1)], 2, "X-API-Key").await;
        let bearer1 = format!("Bearer {raw1}");
        let r = get_h(gw.addr, "/echo/k", &[("authorization", &bearer1)]).await;
        let (_, p, _) = assert_limited(&r, "/echo/k", "keys");
        assert!(!p.to_string().contains(raw1), "{p}");
        let bearer2 = format!("Bearer {raw2}");
        let r = get_h(gw.addr, "/echo/k", &[("authorization", &bearer2)]).await;
        assert_allowed(&r, "another credential has its own bucket");
        assert_eq!(rl(&r).remaining, 1);
        let r = get_h(gw.addr, "/echo/k", &[("x-api-key", raw2)]).await;
        assert_allowed(&r, "the same credential via X-API-Key");
        assert_eq!(rl(&r).remaining, 0);
        let last_id = r.request_id();

        let l = limits(&gw, "keys", &k1).await;
        assert_eq!(l["remaining"], 0, "{l}");
        assert_eq!(l["key"], k1.as_str(), "{l}");
        assert_eq!(limits(&gw, "keys", &k2).await["remaining"], 0);

        let r = admin_call(
            &gw,
            "GET",
            "/admin/explain?method=GET&path=/echo/k&peer=203.0.113.7",
            Some(ADMIN_TOKEN),
            &[("x-api-key", raw1)],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let text = r.text();
        assert!(!text.contains(raw1), "explain leaks the raw key: {text}");
        let e = r.json();
        let p = explain_policy(&e, "keys");
        assert_eq!(p["key"], k1.as_str(), "explain shows the hashed key: {e}");
        assert!(
            p["key"]
                .as_str()
                .is_some_and(|k| k.len() == 16 && k.chars().all(|c| c.is_ascii_hexdigit())),
            "{e}"
        );
        assert_eq!(p["remaining"], 0, "{e}");

        let m = metrics_text(&gw).await;
        for raw in [raw1, raw2] {
            assert!(!m.contains(raw), "the raw key appears in /metrics");
        }
        // Let the access log catch up, then look at everything the process wrote.
        gw.wait_log(&last_id).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        for line in gw.stdout_lines().iter().chain(gw.stderr_lines().iter()) {
            for raw in [raw1, raw2] {
                assert!(
                    !line.contains(raw),
                    "the raw key appears in the logs: {line}"
                );
            }
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// 13. admin endpoints
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_requires_the_bearer_token() {
    bounded(async {
        let (_up, gw) = start("", &policy("default", 3, "1m", "")).await;
        for path in [
            "/admin/limits?policy=default&key=127.0.0.1",
            "/admin/explain?method=GET&path=/echo/x&peer=127.0.0.1",
        ] {
            let r = admin_call(&gw, "GET", path, None, &[]).await;
            assert_admin_problem(&r, 401, "unauthorized");
            let r = admin_call(&gw, "GET", path, Some("not-the-token"), &[]).await;
            assert_admin_problem(&r, 401, "unauthorized");
            let r = admin_call(&gw, "GET", path, Some(&format!("{ADMIN_TOKEN}x")), &[]).await;
            assert_admin_problem(&r, 401, "unauthorized");
            let r = admin_call(&gw, "GET", path, Some(ADMIN_TOKEN), &[]).await;
            assert_eq!(r.status, 200, "{path} with the token: {}", r.text());
        }
        let r = admin_call(
            &gw,
            "DELETE",
            "/admin/limits?policy=default&key=127.0.0.1",
            Some("nope"),
            &[],
        )
        .await;
        assert_admin_problem(&r, 401, "unauthorized");

        // No token configured: every bearer is refused.
        let up = Upstream::start().await;
        let gw2 = Gateway::start(&config(&up.url(), "", &policy("default", 3, "1m", ""))).await;
        let r = admin_call(
            &gw2,
            "GET",
            "/admin/limits?policy=default&key=127.0.0.1",
            Some(ADMIN_TOKEN),
            &[],
        )
        .await;
        assert_admin_problem(&r, 401, "unauthorized");
        let r = admin_call(
            &gw2,
            "GET",
            "/admin/limits?policy=default&key=x",
            Some(""),
            &[],
        )
        .await;
        assert_admin_problem(&r, 401, "unauthorized");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_limits_get_and_delete() {
    bounded(async {
        let (_up, gw) = start("", &policy("default", 3, "1m", "")).await;
        allow_n(&gw, "/echo/x", &[], 3, "default").await;
        let r = get(gw.addr, "/echo/x").await;
        assert_limited(&r, "/echo/x", "default");

        let l = limits(&gw, "default", "127.0.0.1").await;
        assert_eq!(l["policy"], "default", "{l}");
        assert_eq!(l["key"], "127.0.0.1", "{l}");
        assert_eq!(l["algorithm"], "gcra", "{l}");
        assert_eq!(l["limit"], 3, "{l}");
        assert_eq!(l["burst"], 0, "{l}");
        assert_eq!(l["window_s"], 60, "{l}");
        assert_eq!(l["remaining"], 0, "{l}");
        assert!(l["reset"].is_u64(), "reset is epoch seconds: {l}");
        assert!(l["limited"].is_boolean(), "{l}");

        let r = admin_call(
            &gw,
            "DELETE",
            "/admin/limits?policy=default&key=127.0.0.1",
            Some(ADMIN_TOKEN),
            &[],
        )
        .await;
        assert_eq!(r.status, 200, "DELETE /admin/limits: {}", r.text());
        let d = r.json();
        assert_eq!(d["remaining"], 3, "state after the reset: {d}");
        assert_eq!(d["limited"], false, "{d}");

        let r = get(gw.addr, "/echo/x").await;
        assert_allowed(&r, "a reset key is allowed again");
        assert_eq!(rl(&r).remaining, 2);
        assert_eq!(limits(&gw, "default", "127.0.0.1").await["remaining"], 2);

        let fresh = limits(&gw, "default", "198.51.100.77").await;
        assert_eq!(fresh["remaining"], 3, "a key never seen is full: {fresh}");
        assert_eq!(fresh["limited"], false, "{fresh}");

        let r = admin_call(
            &gw,
            "GET",
            "/admin/limits?policy=nope&key=127.0.0.1",
            Some(ADMIN_TOKEN),
            &[],
        )
        .await;
        assert_admin_problem(&r, 404, "unknown_policy");
        let r = admin_call(
            &gw,
            "GET",
            "/admin/limits?policy=default",
            Some(ADMIN_TOKEN),
            &[],
        )
        .await;
        assert_admin_problem(&r, 400, "bad_request");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_explain_shows_identity_route_and_policies() {
    bounded(async {
        let rest = policy("default", 3, "1m", "")
            + &policy("auth", 10, "1m", "")
            + &route("/api/*", &["default", "auth"], "");
        let (_up, gw) = start("trusted_proxies = [\"10.0.0.0/8\"]", &rest).await;

        // A trusted proxy: the right-most untrusted X-Forwarded-For address.
        let e = explain(
            &gw,
            "method=GET&path=/api/x&peer=10.1.2.3",
            &[("x-forwarded-for", "203.0.113.7, 10.9.9.9")],
        )
        .await;
        assert_eq!(e["client"]["peer"], "10.1.2.3", "{e}");
        assert_eq!(e["client"]["ip"], "203.0.113.7", "{e}");
        assert_eq!(e["client"]["key"], "203.0.113.7", "{e}");
        assert_eq!(e["client"]["peer_trusted"], true, "{e}");
        assert_eq!(e["client"]["https"], false, "{e}");
        assert_eq!(e["route"], "/api/*", "{e}");
        assert_eq!(e["bypassed"], false, "{e}");
        assert_eq!(explain_names(&e), vec!["default", "auth"], "{e}");
        for (name, limit) in [("default", 3), ("auth", 10)] {
            let p = explain_policy(&e, name);
            assert_eq!(p["mode"], "enforce", "{e}");
            assert_eq!(p["algorithm"], "gcra", "{e}");
            assert_eq!(p["limit"], limit, "{e}");
            assert_eq!(p["burst"], 0, "{e}");
            assert_eq!(p["window_s"], 60, "{e}");
            assert_eq!(p["key"], "203.0.113.7", "{e}");
            assert_eq!(p["remaining"], limit, "a fresh bucket: {e}");
            assert_eq!(p["limited"], false, "{e}");
            let sk = p["store_key"].as_str().unwrap_or("");
            assert!(
                !sk.is_empty() && sk.chars().all(|c| c.is_ascii_hexdigit()),
                "store_key is hex: {e}"
            );
        }
        assert_ne!(
            explain_policy(&e, "default")["store_key"],
            explain_policy(&e, "auth")["store_key"],
            "the store key hashes the policy name too: {e}"
        );

        // `Forwarded: for=` from the trusted proxy.
        let e = explain(
            &gw,
            "method=GET&path=/api/x&peer=10.1.2.3",
            &[("forwarded", "for=203.0.113.9;proto=http, for=10.7.7.7")],
        )
        .await;
        assert_eq!(e["client"]["ip"], "203.0.113.9", "Forwarded: for=: {e}");

        // With https from the trusted proxy.
        let e = explain(
            &gw,
            "method=GET&path=/api/x&peer=10.1.2.3",
            &[
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-proto", "HTTPS"),
            ],
        )
        .await;
        assert_eq!(e["client"]["https"], true, "{e}");

        // An untrusted peer: X-Forwarded-For is ignored.
        let e = explain(
            &gw,
            "method=GET&path=/api/x&peer=198.51.100.1",
            &[
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-proto", "https"),
            ],
        )
        .await;
        assert_eq!(e["client"]["ip"], "198.51.100.1", "{e}");
        assert_eq!(e["client"]["peer_trusted"], false, "{e}");
        assert_eq!(e["client"]["https"], false, "{e}");
        assert_eq!(explain_policy(&e, "auth")["key"], "198.51.100.1", "{e}");

        // Unmatched: no route, the default policy, with the live bucket state.
        allow_n(&gw, "/echo/y", &[], 1, "unmatched").await;
        let e = explain(&gw, "method=GET&path=/echo/y&peer=127.0.0.1", &[]).await;
        assert!(e["route"].is_null(), "{e}");
        assert_eq!(explain_names(&e), vec!["default"], "{e}");
        assert_eq!(explain_policy(&e, "default")["remaining"], 2, "{e}");
    })
    .await;
}

// ---------------------------------------------------------------------------
// 14. IPv6 prefixes
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_are_keyed_by_their_64_prefix() {
    bounded(async {
        let v6 = match std::net::TcpListener::bind("[::1]:0") {
            Ok(l) => {
                drop(l);
                true
            }
            Err(e) => {
                println!("IPv6 loopback unavailable ({e}): checking /admin/explain only");
                false
            }
        };
        let up = Upstream::start().await;
        let listen = if v6 { "[::1]:0" } else { "127.0.0.1:0" };
        let toml = format!(
            "[server]\nlisten = \"{listen}\"\nupstream = \"{}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n{}",
            up.url(),
            policy("default", 2, "1m", "")
        );
        let gw = Gateway::start_with_env(&toml, &[("PORTCULLIS_ADMIN_TOKEN", ADMIN_TOKEN)]).await;

        for peer in ["2001:db8:1:2:aaaa::1", "2001:db8:1:2::1", "2001:db8:1:2:ffff:1:2:3"] {
            let e = explain(&gw, &format!("method=GET&path=/echo/x&peer={peer}"), &[]).await;
            assert_eq!(
                explain_policy(&e, "default")["key"],
                "2001:db8:1:2::/64",
                "peer {peer}: {e}"
            );
            assert_eq!(e["client"]["key"], "2001:db8:1:2::/64", "peer {peer}: {e}");
        }
        let e = explain(&gw, "method=GET&path=/echo/x&peer=2001:db8:1:3::1", &[]).await;
        assert_eq!(explain_policy(&e, "default")["key"], "2001:db8:1:3::/64", "{e}");

        // Through a trusted proxy, and with another ipv6_prefix.
        let gw48 = Gateway::start_with_env(
            &config(
                &up.url(),
                "trusted_proxies = [\"10.0.0.0/8\"]\nipv6_prefix = 48",
                &policy("default", 2, "1m", ""),
            ),
            &[("PORTCULLIS_ADMIN_TOKEN", ADMIN_TOKEN)],
        )
        .await;
        let e = explain(
            &gw48,
            "method=GET&path=/echo/x&peer=10.0.0.1",
            &[("x-forwarded-for", "2001:db8:1:2:aaaa::1")],
        )
        .await;
        assert_eq!(e["client"]["ip"], "2001:db8:1:2:aaaa::1", "{e}");
        assert_eq!(
            explain_policy(&e, "default")["key"],
            "2001:db8:1::/48",
            "ipv6_prefix = 48: {e}"
        );
        let e = explain(
            &gw48,
            "method=GET&path=/echo/x&peer=10.0.0.1",
            &[("forwarded", "for=\"[2001:db8:5:6::9]:4711\"")],
        )
        .await;
        assert_eq!(
            explain_policy(&e, "default")["key"],
            "2001:db8:5::/48",
            "Forwarded: for=\"[v6]:port\": {e}"
        );
        let e = explain(&gw48, "method=GET&path=/echo/x&peer=203.0.113.5", &[]).await;
        assert_eq!(explain_policy(&e, "default")["key"], "203.0.113.5", "{e}");

        if v6 {
            assert!(gw.addr.is_ipv6(), "listening on {}", gw.addr);
            allow_n(&gw, "/echo/x", &[], 2, "from ::1").await;
            let r = get(gw.addr, "/echo/x").await;
            assert_limited(&r, "/echo/x", "default");
            let l = limits(&gw, "default", "::/64").await;
            assert_eq!(l["remaining"], 0, "::1 is keyed as ::/64: {l}");
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// 15. portcullis check
// ---------------------------------------------------------------------------

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_unknown_policies_and_shadowed_routes() {
    bounded(async {
        let toml = config(
            "http://127.0.0.1:8000",
            "",
            &(policy("default", 10, "1m", "") + &route("/api/*", &["default", "nope"], "")),
        );
        let line = toml.lines().position(|l| l.contains("\"nope\"")).unwrap() + 1;
        let (out, path, _dir) = run_check(&toml, &[]).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
        let prefix = format!("{}:{line}:", path.display());
        let l = stderr
            .lines()
            .find(|l| l.trim_start().starts_with(&prefix))
            .unwrap_or_else(|| panic!("no `{prefix}COL: ...` line in stderr: {stderr}"));
        let rest = &l.trim_start()[prefix.len()..];
        let (col, msg) = rest.split_once(':').unwrap();
        assert!(
            col.trim().parse::<usize>().is_ok_and(|c| c >= 1),
            "a column: {l}"
        );
        assert!(msg.contains("unknown policy"), "{l}");
        assert!(msg.contains("\"nope\""), "names the policy: {l}");

        let toml = config(
            "http://127.0.0.1:8000",
            "",
            &(policy("default", 10, "1m", "")
                + &policy("auth", 5, "1m", "")
                + &policy("spare", 5, "1m", "")
                + &route("/api/*", &["default"], "")
                + &route("/api/items", &["auth"], "")),
        );
        let (out, _path, _dir) = run_check(&toml, &[]).await;
        let stdout = text(&out.stdout);
        let stderr = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "warnings are not errors: {stderr}"
        );
        let warnings: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("warning:"))
            .collect();
        assert!(
            warnings.iter().any(|w| w.contains("/api/items")),
            "a warning names the shadowed route: {stderr}"
        );
        assert!(
            warnings.iter().any(|w| w.contains("spare")),
            "a warning names the unused policy: {stderr}"
        );
        assert!(
            stdout
                .lines()
                .any(|l| l.trim() == "route * /api/* -> default"),
            "route lines on stdout: {stdout}"
        );
        assert!(
            stdout.lines().any(|l| l.trim() == "unmatched -> default"),
            "the unmatched line on stdout: {stdout}"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------
// More of "Keys and limits, exactly": burst, key forms, methods, h2c, several
// policies denying at once, header modes
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_adds_to_a_fresh_key_for_every_algorithm() {
    bounded(async {
        let algs = ["gcra", "sliding_window", "fixed_window"];
        let mut rest = String::new();
        for alg in algs {
            rest += &policy(
                &format!("b_{alg}"),
                3,
                "1m",
                &format!("burst = 2\nalgorithm = \"{alg}\""),
            );
            rest += &route(&format!("/echo/{alg}/*"), &[&format!("b_{alg}")], "");
        }
        let (_up, gw) = start("", &rest).await;
        avoid_window_edge(60, 10.0).await;
        for alg in algs {
            let name = format!("b_{alg}");
            let path = format!("/echo/{alg}/x");
            for i in 0..5u64 {
                let r = get(gw.addr, &path).await;
                assert_allowed(&r, &format!("{alg} with burst, request {}", i + 1));
                let h = rl(&r);
                assert_eq!(h.limit, 3, "{alg}: X-RateLimit-Limit is the limit");
                assert_eq!(
                    h.remaining,
                    4 - i,
                    "{alg}: remaining counts the burst too (limit 3 + burst 2)"
                );
                let p = h.policy_item(&name);
                assert_eq!((p.int("q"), p.int("w")), (3, 60), "{alg}: q is the limit");
                assert_eq!(h.state_item(&name).int("r"), 4 - i, "{alg}: r counts burst");
            }
            let r = get(gw.addr, &path).await;
            assert_limited(&r, &path, &name);
            let l = limits(&gw, &name, "127.0.0.1").await;
            assert_eq!(l["burst"], 2, "{l}");
            assert_eq!(l["remaining"], 0, "{l}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_forms_combined_query_route_global() {
    bounded(async {
        let rest = policy(
            "combo",
            2,
            "1m",
            "key = [\"header:X-Workspace-Id\", \"ip\"]\n\
             overrides = [ { key = \"ws-42|203.0.113.7\", limit = 4 } ]",
        ) + &route("/echo/combo/*", &["combo"], "")
            + &policy("q", 2, "1m", "key = [\"query:tenant\"]")
            + &route("/echo/q/*", &["q"], "")
            + &policy("rt", 2, "1m", "key = [\"route\"]")
            + &route("/echo/rt/*", &["rt"], "")
            + &policy("g", 2, "1m", "key = [\"global\"]")
            + &route("/echo/g/*", &["g"], "");
        let (_up, gw) = start("trusted_proxies = [\"127.0.0.0/8\"]", &rest).await;

        // combined: `ws-42|203.0.113.7`, with an override in that form
        let a = [
            ("x-workspace-id", "ws-42"),
            ("x-forwarded-for", "203.0.113.7"),
        ];
        allow_n(&gw, "/echo/combo/x", &a, 4, "ws-42 from A (override 4)").await;
        let r = get_h(gw.addr, "/echo/combo/x", &a).await;
        assert_limited(&r, "/echo/combo/x", "combo");
        let b = [
            ("x-workspace-id", "ws-42"),
            ("x-forwarded-for", "198.51.100.1"),
        ];
        let r = get_h(gw.addr, "/echo/combo/x", &b).await;
        assert_allowed(&r, "ws-42 from B is another key");
        assert_eq!((rl(&r).limit, rl(&r).remaining), (2, 1));
        let l = limits(&gw, "combo", "ws-42%7C203.0.113.7").await;
        assert_eq!(l["remaining"], 0, "{l}");
        let e = explain(
            &gw,
            "method=GET&path=/echo/combo/x&peer=127.0.0.1",
            &[
                ("x-workspace-id", "ws-42"),
                ("x-forwarded-for", "203.0.113.7"),
            ],
        )
        .await;
        assert_eq!(
            explain_policy(&e, "combo")["key"],
            "ws-42|203.0.113.7",
            "{e}"
        );
        assert_eq!(explain_policy(&e, "combo")["limit"], 4, "the override: {e}");

        // query:tenant
        allow_n(&gw, "/echo/q/x?tenant=t1", &[], 2, "tenant t1").await;
        let r = get(gw.addr, "/echo/q/x?tenant=t1").await;
        assert_limited(&r, "/echo/q/x", "q");
        let r = get(gw.addr, "/echo/q/x?tenant=t2").await;
        assert_allowed(&r, "tenant t2 is another key");
        assert_eq!(limits(&gw, "q", "t1").await["remaining"], 0);
        assert_eq!(limits(&gw, "q", "t2").await["remaining"], 1);

        // route: every client of the route shares one bucket
        for ip in ["203.0.113.1", "203.0.113.2"] {
            let r = get_h(gw.addr, "/echo/rt/a", &[("x-forwarded-for", ip)]).await;
            assert_allowed(&r, "route key");
        }
        let r = get_h(gw.addr, "/echo/rt/b", &[("x-forwarded-for", "203.0.113.3")]).await;
        assert_limited(&r, "/echo/rt/b", "rt");
        assert_eq!(limits(&gw, "rt", "/echo/rt/*").await["remaining"], 0);

        // global: the empty key, shared by everyone
        for ip in ["203.0.113.1", "203.0.113.2"] {
            let r = get_h(gw.addr, "/echo/g/a", &[("x-forwarded-for", ip)]).await;
            assert_allowed(&r, "global key");
        }
        let r = get_h(gw.addr, "/echo/g/b", &[("x-forwarded-for", "203.0.113.3")]).await;
        assert_limited(&r, "/echo/g/b", "g");
        let e = explain(&gw, "method=GET&path=/echo/g/c&peer=198.51.100.7", &[]).await;
        assert_eq!(
            explain_policy(&e, "g")["key"],
            "",
            "global is the empty key: {e}"
        );
        assert_eq!(explain_policy(&e, "g")["remaining"], 0, "{e}");
        assert_eq!(limits(&gw, "g", "").await["remaining"], 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_methods_select_the_policies() {
    bounded(async {
        let rest = policy("default", 100, "1m", "")
            + &policy("auth", 2, "1m", "")
            + &route("/echo/auth/*", &["auth"], "methods = [\"POST\"]");
        let (_up, gw) = start("", &rest).await;
        for _ in 0..3 {
            let r = get(gw.addr, "/echo/auth/login").await;
            assert_allowed(&r, "GET does not match a POST route");
            assert_eq!(rl(&r).names(), vec!["default"], "{:?}", r.headers);
        }
        for i in 0..2u64 {
            let r = h1(gw.addr, "POST", "/echo/auth/login", &[], "x").await;
            assert_allowed(&r, "POST");
            let h = rl(&r);
            assert_eq!(h.names(), vec!["auth"], "{:?}", r.headers);
            assert_eq!(h.remaining, 1 - i);
        }
        let r = h1(gw.addr, "POST", "/echo/auth/login", &[], "x").await;
        assert_limited(&r, "/echo/auth/login", "auth");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_over_h2c_too() {
    bounded(async {
        let (_up, gw) = start("", &policy("default", 2, "1m", "")).await;
        let r = get(gw.addr, "/echo/x").await;
        assert_allowed(&r, "h1");
        let r = h2(gw.addr, "GET", "/echo/x", &[], "").await;
        assert_allowed(&r, "h2c");
        assert_eq!(rl(&r).remaining, 0, "h1 and h2c share the client's bucket");
        let r = h2(gw.addr, "GET", "/echo/x", &[], "").await;
        assert_limited(&r, "/echo/x", "default");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_denying_policies_report_the_longest_wait() {
    bounded(async {
        let rest = policy("slow", 2, "1m", "")
            + &policy("fast", 2, "10s", "")
            + &route("/echo/m/*", &["fast", "slow"], "");
        let (_up, gw) = start("", &rest).await;
        allow_n(&gw, "/echo/m/x", &[], 2, "both policies").await;
        let before = now_f();
        let r = get(gw.addr, "/echo/m/x").await;
        // Both deny: `slow` waits 30 s for a unit, `fast` 5 s.
        let (ra, p, h) = assert_limited_v(&r, "/echo/m/x", "slow", None);
        let violated: BTreeSet<&str> = p["violated-policies"]
            .as_array()
            .unwrap_or_else(|| panic!("violated-policies is an array: {p}"))
            .iter()
            .map(|v| v.as_str().unwrap_or(""))
            .collect();
        assert!(violated.contains("slow"), "{p}");
        assert!(
            violated.is_subset(&["slow", "fast"].into_iter().collect()),
            "{p}"
        );
        assert!(
            (29..=30).contains(&ra),
            "Retry-After is the longest wait (30 s): {ra}"
        );
        assert!(
            h.reset as f64 >= before + 50.0,
            "X-RateLimit-Reset is the tightest (1m) policy's: {} (now {before})",
            h.reset
        );
        assert!(
            h.state_item("fast").int("t") <= 5,
            "fast's own wait: {:?}",
            r.headers
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_modes_legacy_ietf_none() {
    bounded(async {
        let legacy = [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
        ];
        let ietf = ["ratelimit-policy", "ratelimit"];
        for mode in ["legacy", "ietf", "none"] {
            let rest =
                format!("[headers]\nratelimit = \"{mode}\"\n\n") + &policy("default", 1, "1m", "");
            let (_up, gw) = start("", &rest).await;
            let r = get(gw.addr, "/echo/x").await;
            assert_allowed(&r, mode);
            let r2 = get(gw.addr, "/echo/x").await;
            assert_eq!(r2.status, 429, "{mode}: {}", r2.text());
            let ra = uint(&r2, "retry-after");
            assert!(ra >= 1, "{mode}: Retry-After on every 429");
            assert_eq!(r2.json()["retry_after"], ra, "{mode}: {}", r2.text());
            assert_eq!(r2.json()["code"], "rate_limited");
            for resp in [&r, &r2] {
                for h in legacy {
                    assert_eq!(
                        resp.header(h).is_some(),
                        matches!(mode, "legacy"),
                        "{mode}: {h} in {:?}",
                        resp.headers
                    );
                }
                for h in ietf {
                    assert_eq!(
                        resp.header(h).is_some(),
                        matches!(mode, "ietf"),
                        "{mode}: {h} in {:?}",
                        resp.headers
                    );
                }
            }
        }
    })
    .await;
}
