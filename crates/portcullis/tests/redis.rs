//! Black-box tests of the Redis store (`[store] kind = "redis"`), through real
//! gateway processes and private `redis-server` processes on free loopback ports:
//! exact limits across instances (single node and a 3-master cluster, each
//! algorithm), one script call per decision (`INFO commandstats`), the local cache
//! of denied keys, hashed and expiring keys, Redis killed mid-load and restarted
//! under each `on_error`, a Redis that accepts but never answers, the store
//! metrics, and a missing `REDIS_URL`.

#![allow(clippy::unwrap_used)]

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::redis::{RedisCluster, RedisServer, SilentServer};
use support::*;

/// Every test of this file finishes within this.
const TEST_LIMIT: Duration = Duration::from_secs(90);

async fn bounded(fut: impl Future<Output = ()>) {
    within("the whole test", TEST_LIMIT, fut).await
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// A `[store]` table for Redis.
fn store(on_error: &str, timeout: &str) -> String {
    format!("[store]\nkind = \"redis\"\ntimeout = \"{timeout}\"\non_error = \"{on_error}\"\n\n")
}

/// A `[[policy]]` table; `extra` holds more `key = value` lines.
fn policy(name: &str, limit: u64, window: &str, extra: &str) -> String {
    format!("[[policy]]\nname = \"{name}\"\nlimit = {limit}\nwindow = \"{window}\"\n{extra}\n\n")
}

/// A `[[route]]` table.
fn route(path: &str, policies: &[&str]) -> String {
    let list = policies
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!("[[route]]\npath = \"{path}\"\npolicies = [{list}]\n\n")
}

/// Starts `n` gateways in front of `up`, all with `REDIS_URL = url`.
async fn gateways(n: usize, up: &Upstream, rest: &str, url: &str) -> Vec<Gateway> {
    let toml = config(&up.url(), "", rest);
    let mut gws = Vec::new();
    for _ in 0..n {
        gws.push(Gateway::start_with_env(&toml, &[("REDIS_URL", url)]).await);
    }
    gws
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn now_f() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Waits, when fewer than `margin` seconds remain in the current aligned minute,
/// until the next minute has begun (Redis runs on this host: same clock).
async fn avoid_minute_boundary(margin: f64) {
    let into = now_f() % 60.0;
    if 60.0 - into < margin {
        tokio::time::sleep(Duration::from_secs_f64(60.0 - into + 0.3)).await;
    }
}

/// Polls `/health` until `want` holds (up to `limit`), returning it.
async fn wait_health(
    gw: &Gateway,
    limit: Duration,
    what: &str,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let h = health_json(gw).await;
        if want(&h) {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "/health never showed {what} within {limit:?}; last: {h}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `GET path` on `addr` until `want` holds (up to `limit`).
async fn wait_get(
    addr: SocketAddr,
    path: &str,
    limit: Duration,
    what: &str,
    want: impl Fn(&Reply) -> bool,
) -> Reply {
    let deadline = Instant::now() + limit;
    loop {
        let r = get(addr, path).await;
        if want(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "GET {path} never showed {what} within {limit:?}; last: {} {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The store is down: unreachable, and `/health` says `degraded`.
fn store_down(h: &Value) -> bool {
    h["store"]["reachable"] == false && h["status"] == "degraded"
}

fn store_up(h: &Value) -> bool {
    h["store"]["reachable"] == true && h["store"]["fallback_active"] == false
}

/// One request of a load run.
#[derive(Debug, Clone)]
struct Shot {
    at: Instant,
    latency: Duration,
    status: u16,
    body: String,
}

/// A task sending `GET path` every 10 ms until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Shot>>,
}

impl Load {
    fn start(addr: SocketAddr, path: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let path = path.to_string();
        let task = tokio::spawn(async move {
            let mut shots = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !flag.load(Ordering::SeqCst) {
                tick.tick().await;
                let at = Instant::now();
                let r = get(addr, &path).await;
                shots.push(Shot {
                    at,
                    latency: at.elapsed(),
                    status: r.status,
                    body: r.text(),
                });
            }
            shots
        });
        Load { stop, task }
    }

    async fn finish(self) -> Vec<Shot> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("load task")
    }
}

/// No 5xx, every request under 1 s, and — once the first few requests after
/// `fault_at` have met the dead store — every request under 200 ms.
fn assert_bounded(shots: &[Shot], fault_at: Instant, what: &str) {
    assert!(!shots.is_empty(), "{what}: the load sent nothing");
    for s in shots {
        assert!(
            s.status < 500,
            "{what}: a {} during the Redis outage (on_error must not produce 5xx): {}",
            s.status,
            s.body
        );
        assert!(
            s.latency < Duration::from_secs(1),
            "{what}: a request took {:?} (status {})",
            s.latency,
            s.status
        );
    }
    let after: Vec<&Shot> = shots.iter().filter(|s| s.at >= fault_at).collect();
    assert!(
        after.len() >= 20,
        "{what}: only {} requests after the fault",
        after.len()
    );
    let slow: Vec<(usize, Duration)> = after
        .iter()
        .enumerate()
        .skip(5)
        .filter(|(_, s)| s.latency >= Duration::from_millis(200))
        .map(|(i, s)| (i, s.latency))
        .collect();
    assert!(
        slow.is_empty(),
        "{what}: requests after the first 5 following the fault must not wait for Redis \
         (known down: no per-request timeout); slow ones (index after fault, latency): {slow:?}"
    );
}

// ---------------------------------------------------------------------------
// 1. Exactness across instances
// ---------------------------------------------------------------------------

const ALGORITHMS: [&str; 3] = ["gcra", "sliding_window", "fixed_window"];
const EXACT_LIMIT: u64 = 50;

/// One policy per algorithm, 50 per minute on one global key, each on its route
/// `/echo/ex/<algorithm>/*`.
fn exactness_rest() -> String {
    let mut rest = store("deny", "1s");
    for a in ALGORITHMS {
        rest += &policy(
            &format!("ex_{a}"),
            EXACT_LIMIT,
            "1m",
            &format!("algorithm = \"{a}\"\nkey = [\"global\"]"),
        );
    }
    for a in ALGORITHMS {
        rest += &route(&format!("/echo/ex/{a}/*"), &[&format!("ex_{a}")]);
    }
    rest
}

/// 8 concurrent clients spread over `gws` send 200 requests in total to `path`.
/// Returns the statuses (with bodies of the odd ones) and the elapsed time.
async fn spread_burst(gws: &[Gateway], path: &str) -> (Vec<(u16, String)>, Duration) {
    let addrs: Vec<SocketAddr> = gws.iter().map(|g| g.addr).collect();
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..8 {
        let addr = addrs[i % addrs.len()];
        let path = path.to_string();
        set.spawn(async move {
            let mut out = Vec::new();
            for _ in 0..25 {
                let r = get(addr, &path).await;
                if r.status == 429 {
                    assert!(
                        r.header("retry-after").is_some(),
                        "a 429 carries Retry-After: {:?}",
                        r.headers
                    );
                }
                out.push((r.status, r.text()));
            }
            out
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r.expect("client task"));
    }
    (all, t0.elapsed())
}

async fn check_exact(gws: &[Gateway], algorithm: &str, what: &str) {
    let path = format!("/echo/ex/{algorithm}/x");
    let (all, elapsed) = spread_burst(gws, &path).await;
    assert_eq!(all.len(), 200);
    let admitted = all.iter().filter(|(s, _)| *s == 200).count() as u64;
    let limited = all.iter().filter(|(s, _)| *s == 429).count() as u64;
    let odd: Vec<&(u16, String)> = all.iter().filter(|(s, _)| *s != 200 && *s != 429).collect();
    assert!(
        odd.is_empty(),
        "{what} {algorithm}: only 200 and 429 expected, got {} others, e.g. {:?}",
        odd.len(),
        odd.first()
    );
    if algorithm == "gcra" {
        // SPEC bound over an interval t: limit + floor(limit * t / window); a
        // fresh bucket admits the whole limit at once.
        let bound =
            EXACT_LIMIT + (EXACT_LIMIT as f64 * elapsed.as_secs_f64() / 60.0).floor() as u64;
        assert!(
            (EXACT_LIMIT..=bound).contains(&admitted),
            "{what} gcra: {admitted} admitted (and {limited} limited) in {elapsed:?}; \
             expected between {EXACT_LIMIT} and {bound}"
        );
    } else {
        assert_eq!(
            admitted, EXACT_LIMIT,
            "{what} {algorithm}: exactly the limit is admitted within one aligned window \
             ({limited} limited, {elapsed:?})"
        );
    }
    assert_eq!(admitted + limited, 200);
}

async fn check_all_algorithms(gws: &[Gateway], what: &str) {
    check_exact(gws, "gcra", what).await;
    // The window algorithms: stay inside one aligned minute.
    avoid_minute_boundary(10.0).await;
    check_exact(gws, "sliding_window", what).await;
    avoid_minute_boundary(10.0).await;
    check_exact(gws, "fixed_window", what).await;
    for gw in gws {
        let h = health_json(gw).await;
        assert_eq!(h["store"]["kind"], "redis", "{h}");
        assert!(store_up(&h), "{what}: the store stayed up: {h}");
        assert_eq!(h["store"]["errors"], 0, "{what}: no store errors: {h}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_sharing_one_redis_admit_exactly_the_limit() {
    bounded(async {
        let redis = RedisServer::start().await;
        let up = Upstream::start().await;
        let gws = gateways(2, &up, &exactness_rest(), &redis.url()).await;
        check_all_algorithms(&gws, "single node").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_sharing_a_redis_cluster_admit_exactly_the_limit() {
    bounded(async {
        let cluster = RedisCluster::start().await;
        let up = Upstream::start().await;
        let gws = gateways(2, &up, &exactness_rest(), &cluster.seed_list()).await;
        check_all_algorithms(&gws, "3-master cluster").await;
        assert!(
            cluster.script_calls().await > 0,
            "the decisions ran as scripts on the cluster"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------
// 2. One script call per decision; denied keys are cached locally
// ---------------------------------------------------------------------------

/// `/echo/two/*`: two enforcing policies (per tenant and global), both roomy.
/// `/echo/small/*`: the per-tenant one plus one of 5 per minute per tenant.
fn commandstats_rest() -> String {
    let mut rest = store("deny", "1s");
    rest += &policy("tenant", 1000, "1m", "key = [\"header:X-Tenant\"]");
    rest += &policy("everyone", 1000, "1m", "key = [\"global\"]");
    rest += &policy("small", 5, "1m", "key = [\"header:X-Tenant\"]");
    rest += &route("/echo/two/*", &["tenant", "everyone"]);
    rest += &route("/echo/small/*", &["tenant", "small"]);
    rest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_script_call_per_decision_and_none_for_a_denied_key() {
    bounded(async {
        let redis = RedisServer::start().await;
        let up = Upstream::start().await;
        let gws = gateways(1, &up, &commandstats_rest(), &redis.url()).await;
        let gw = &gws[0];

        // Warm up (the script gets loaded), then count from zero.
        let r = get_h(gw.addr, "/echo/two/warm", &[("x-tenant", "warm-up")]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        redis.reset_stats().await;

        const N: u64 = 20;
        for i in 0..N {
            let r = get_h(gw.addr, &format!("/echo/two/{i}"), &[("x-tenant", "t-one")]).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        let stats = redis.commandstats().await;
        let calls = support::redis::script_calls_of(&stats);
        assert_eq!(
            calls, N,
            "{N} admitted requests on a route with two enforcing policies make exactly {N} \
             script calls (EVALSHA + EVAL); commandstats: {stats:?}"
        );
        let failed: u64 = ["evalsha", "eval"]
            .iter()
            .filter_map(|n| stats.get(*n))
            .map(|s| s.failed_calls)
            .sum();
        assert_eq!(failed, 0, "no script call failed: {stats:?}");

        // Exhaust `small` for one tenant: 5 admitted, one call each.
        redis.reset_stats().await;
        for i in 0..5 {
            let r = get_h(
                gw.addr,
                &format!("/echo/small/{i}"),
                &[("x-tenant", "t-two")],
            )
            .await;
            assert_eq!(r.status, 200, "request {i}: {}", r.text());
        }
        let exhausted = redis.script_calls().await;
        assert_eq!(exhausted, 5, "one script call per admitted request");
        // Ten more: the first denial comes from Redis, the rest from the local
        // cache of denied keys (denied until a future instant).
        for i in 0..10 {
            let r = get_h(
                gw.addr,
                &format!("/echo/small/more{i}"),
                &[("x-tenant", "t-two")],
            )
            .await;
            assert_eq!(r.status, 429, "request {i} after exhaustion: {}", r.text());
            assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
        }
        let after = redis.script_calls().await;
        assert!(
            after <= exhausted + 1,
            "requests for a key already denied until a future instant call no script: \
             {exhausted} calls at exhaustion, {after} after 10 denied requests"
        );

        // Keys: hashed and hash-tagged (`pc:{<32 hex>}`), each with an expiry no
        // longer than the window (+1 s margin); the raw key never appears.
        let keys = redis.keys().await;
        assert!(!keys.is_empty(), "the store wrote keys");
        for k in &keys {
            assert!(
                !k.contains("t-one") && !k.contains("t-two"),
                "raw key in {k:?}"
            );
            let hex = k
                .strip_prefix("pc:{")
                .and_then(|r| r.get(..33))
                .and_then(|r| r.strip_suffix('}'));
            assert!(
                hex.is_some_and(|h| h.len() == 32 && h.chars().all(|c| c.is_ascii_hexdigit())),
                "keys are pc:{{<32 hex>}}: {k:?}"
            );
            let ttl = redis.pttl(k).await;
            assert!(
                ttl > 0 && ttl <= 61_000,
                "key {k:?} has an expiry within window + 1 s, PTTL = {ttl}"
            );
        }

        // A flushed script cache (NOSCRIPT) is reloaded transparently: no error,
        // no fallback, and the buckets are still there.
        for i in 0..3 {
            let r = get_h(
                gw.addr,
                &format!("/echo/small/f{i}"),
                &[("x-tenant", "t-three")],
            )
            .await;
            assert_eq!(r.status, 200, "request {i}: {}", r.text());
        }
        let out = redis.cli(&["script", "flush"]).await;
        assert_eq!(out.trim(), "OK", "SCRIPT FLUSH answered {out:?}");
        let r = get_h(
            gw.addr,
            "/echo/small/after-flush",
            &[("x-tenant", "t-three")],
        )
        .await;
        assert_eq!(r.status, 200, "after SCRIPT FLUSH: {}", r.text());
        assert_eq!(
            r.header("x-ratelimit-remaining"),
            Some("1"),
            "the bucket (5 per minute, 4 taken) kept its state across the NOSCRIPT reload: {:?}",
            r.headers
        );
        let h = health_json(gw).await;
        assert!(store_up(&h), "NOSCRIPT is no store failure: {h}");
        assert_eq!(h["store"]["errors"], 0, "NOSCRIPT is no store error: {h}");
    })
    .await;
}

// ---------------------------------------------------------------------------
// 3, 4. Redis killed mid-load and restarted
// ---------------------------------------------------------------------------

/// `/echo/load/*`: a roomy global policy; `/echo/shared/*`: 5 per minute, global.
fn fault_rest(on_error: &str) -> String {
    let mut rest = store(on_error, "100ms");
    rest += &policy("load", 100_000, "1m", "key = [\"global\"]");
    rest += &policy("shared", 5, "1m", "key = [\"global\"]");
    rest += &route("/echo/load/*", &["load"]);
    rest += &route("/echo/shared/*", &["shared"]);
    rest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_error_local_survives_a_killed_redis_and_shares_limits_again_after_restart() {
    bounded(async {
        let mut redis = RedisServer::start().await;
        let up = Upstream::start().await;
        let gws = gateways(2, &up, &fault_rest("local"), &redis.url()).await;

        let loads: Vec<Load> = gws
            .iter()
            .map(|g| Load::start(g.addr, "/echo/load/x"))
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        for gw in &gws {
            let h = health_json(gw).await;
            assert!(store_up(&h), "healthy at first: {h}");
            assert_eq!(h["status"], "ok", "{h}");
        }

        let kill_at = Instant::now();
        redis.kill();
        for gw in &gws {
            let h = wait_health(
                gw,
                Duration::from_secs(5),
                "the store down (reachable false, status degraded)",
                |h| store_down(h) && h["store"]["fallback_active"] == true,
            )
            .await;
            assert_eq!(h["status"], "degraded", "{h}");
            let r = get(gw.admin, "/readyz").await;
            assert_eq!(
                r.status,
                200,
                "/readyz stays 200 with on_error = local: {}",
                r.text()
            );
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;

        redis.restart().await;
        let restarted = Instant::now();
        for gw in &gws {
            let h = wait_health(
                gw,
                Duration::from_secs(5).saturating_sub(restarted.elapsed()),
                "the store back within 5 s of the restart",
                store_up,
            )
            .await;
            assert_eq!(h["status"], "ok", "{h}");
            let r = get(gw.admin, "/readyz").await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;

        for (i, load) in loads.into_iter().enumerate() {
            let shots = load.finish().await;
            assert_bounded(&shots, kill_at, &format!("gateway {i}"));
            assert!(
                shots.iter().all(|s| s.status == 200),
                "gateway {i}: the roomy policy admits everything (locally while Redis is down)"
            );
        }

        // Limits are shared again: exhaust through one gateway, the other sees 429.
        for i in 0..5 {
            let r = get(gws[0].addr, &format!("/echo/shared/{i}")).await;
            assert_eq!(r.status, 200, "request {i}: {}", r.text());
        }
        let r = get(gws[1].addr, "/echo/shared/other").await;
        assert_eq!(
            r.status,
            429,
            "after the restart the other gateway sees the shared bucket: {}",
            r.text()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_error_allow_admits_while_redis_is_down() {
    bounded(async {
        let mut redis = RedisServer::start().await;
        let up = Upstream::start().await;
        let gws = gateways(1, &up, &fault_rest("allow"), &redis.url()).await;
        let gw = &gws[0];
        let load = Load::start(gw.addr, "/echo/load/x");
        tokio::time::sleep(Duration::from_millis(300)).await;

        let kill_at = Instant::now();
        redis.kill();
        let h = wait_health(
            gw,
            Duration::from_secs(5),
            "the store down (reachable false, status degraded)",
            store_down,
        )
        .await;
        assert_eq!(h["status"], "degraded", "{h}");
        let r = get(gw.admin, "/readyz").await;
        assert_eq!(
            r.status,
            200,
            "/readyz stays 200 with on_error = allow: {}",
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let shots = load.finish().await;
        assert_bounded(&shots, kill_at, "on_error = allow");
        assert!(
            shots.iter().all(|s| s.status == 200),
            "on_error = allow admits every request"
        );

        redis.restart().await;
        let h = wait_health(gw, Duration::from_secs(5), "the store back", store_up).await;
        assert_eq!(h["status"], "ok", "{h}");
        let r = get(gw.addr, "/echo/load/after").await;
        assert_eq!(r.status, 200, "{}", r.text());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_error_deny_answers_503_store_unavailable_and_recovers() {
    bounded(async {
        let mut redis = RedisServer::start().await;
        let up = Upstream::start().await;
        let gws = gateways(1, &up, &fault_rest("deny"), &redis.url()).await;
        let gw = &gws[0];
        for i in 0..3 {
            let r = get(gw.addr, &format!("/echo/load/{i}")).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        let r = get(gw.admin, "/readyz").await;
        assert_eq!(r.status, 200, "{}", r.text());

        redis.kill();
        for i in 0..10 {
            let t0 = Instant::now();
            let r = get(gw.addr, &format!("/echo/load/down{i}")).await;
            let took = t0.elapsed();
            assert!(took < Duration::from_secs(1), "request {i} took {took:?}");
            let p = assert_problem(&r, 503, "store_unavailable");
            assert_eq!(
                r.header("retry-after"),
                Some("1"),
                "store_unavailable carries Retry-After: 1 ({p})"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let r = wait_get(gw.admin, "/readyz", Duration::from_secs(3), "503", |r| {
            r.status == 503
        })
        .await;
        let body = r.json();
        assert_eq!(body["status"], "unready", "{body}");
        let reasons = body["reasons"].as_array().cloned().unwrap_or_default();
        assert!(
            reasons
                .iter()
                .any(|x| x.as_str().is_some_and(|s| s.contains("store unreachable"))),
            "/readyz names the store: {body}"
        );
        let h = health_json(gw).await;
        assert!(store_down(&h), "{h}");
        assert_eq!(h["status"], "degraded", "{h}");

        redis.restart().await;
        let restarted = Instant::now();
        wait_get(
            gw.admin,
            "/readyz",
            Duration::from_secs(5),
            "200 after the restart",
            |r| r.status == 200,
        )
        .await;
        wait_get(
            gw.addr,
            "/echo/load/back",
            Duration::from_secs(5).saturating_sub(restarted.elapsed()),
            "200 after the restart",
            |r| r.status == 200,
        )
        .await;
        let h = health_json(gw).await;
        assert!(store_up(&h), "{h}");
        assert_eq!(h["status"], "ok", "{h}");
    })
    .await;
}

// ---------------------------------------------------------------------------
// 5. A Redis that accepts connections and never answers
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_redis_costs_at_most_the_timeout() {
    bounded(async {
        let silent = SilentServer::start().await;
        let up = Upstream::start().await;
        let mut rest = store("allow", "100ms");
        rest += &policy("default", 1000, "1m", "");
        let gws = gateways(1, &up, &rest, &silent.url()).await;
        let gw = &gws[0];
        let before = health_json(gw).await["store"]["errors"]
            .as_u64()
            .unwrap_or(0);

        for i in 0..20 {
            let t0 = Instant::now();
            let r = get(gw.addr, &format!("/echo/silent/{i}")).await;
            let took = t0.elapsed();
            assert_eq!(r.status, 200, "on_error = allow admits: {}", r.text());
            assert!(
                took < Duration::from_secs(1),
                "request {i} took {took:?} against a silent Redis with timeout = 100ms"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            silent.accepted() > 0,
            "the gateway did connect to the silent Redis"
        );
        let h = wait_health(
            gw,
            Duration::from_secs(3),
            &format!(
                "the store down (reachable false, status degraded) and store.errors grown \
                 past {before} (timed-out calls count as errors)"
            ),
            |h| store_down(h) && h["store"]["errors"].as_u64().is_some_and(|e| e > before),
        )
        .await;
        assert!(h["store"]["errors"].as_u64().unwrap() >= 1, "{h}");
        let r = get(gw.admin, "/readyz").await;
        assert_eq!(
            r.status,
            200,
            "/readyz stays 200 with on_error = allow: {}",
            r.text()
        );
    })
    .await;
}

// ---------------------------------------------------------------------------
// 6. Metrics
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_store_calls_errors_and_fallback() {
    bounded(async {
        let mut redis = RedisServer::start().await;
        let up = Upstream::start().await;
        let gws = gateways(1, &up, &fault_rest("local"), &redis.url()).await;
        let gw = &gws[0];
        for i in 0..5 {
            let r = get(gw.addr, &format!("/echo/load/{i}")).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        let m = metrics_text(gw).await;
        assert!(
            m.contains("portcullis_store_duration_seconds"),
            "portcullis_store_duration_seconds is exposed:\n{m}"
        );
        let count = metric_value(&m, "portcullis_store_duration_seconds_count", &[]);
        assert!(
            count.is_some_and(|c| c >= 5.0),
            "the histogram counts the Redis calls (5 at least), got {count:?}:\n{m}"
        );
        assert_eq!(
            metric_value(&m, "portcullis_store_fallback_active", &[]),
            Some(0.0),
            "no fallback while Redis answers:\n{m}"
        );
        let errors0 = metric_value(&m, "portcullis_store_errors_total", &[("store", "redis")]).unwrap_or(0.0);
        assert_eq!(errors0, 0.0, "no store errors yet:\n{m}");

        redis.kill();
        for i in 0..5 {
            let r = get(gw.addr, &format!("/echo/load/down{i}")).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let m = metrics_text(gw).await;
            let errors = metric_value(&m, "portcullis_store_errors_total", &[("store", "redis")]);
            let fallback = metric_value(&m, "portcullis_store_fallback_active", &[]);
            if errors.is_some_and(|e| e >= 1.0) && fallback == Some(1.0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "portcullis_store_errors_total{{store=\"redis\"}} >= 1 and \
                 portcullis_store_fallback_active 1 while Redis is down; got {errors:?}, {fallback:?}:\n{m}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        redis.restart().await;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let m = metrics_text(gw).await;
            let fallback = metric_value(&m, "portcullis_store_fallback_active", &[]);
            if fallback == Some(0.0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "portcullis_store_fallback_active back to 0 within 5 s of the restart, got {fallback:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// 7. Missing REDIS_URL
// ---------------------------------------------------------------------------

/// Runs `portcullis serve` on `toml` without `var` in its environment; expects a
/// quick exit 1 with one readable line naming `var`.
async fn expect_startup_error_naming(toml: &str, var: &str) {
    let dir = TempDir::new("redis-missing-url");
    let path = dir.write("portcullis.toml", toml);
    let mut cmd = portcullis_command();
    cmd.arg("serve")
        .arg("--config")
        .arg(&path)
        .current_dir(dir.path())
        .env_remove(var)
        .env_remove("REDIS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let out = within(
        &format!("portcullis serve without {var} exits"),
        Duration::from_secs(10),
        cmd.output(),
    )
    .await
    .expect("run portcullis serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "kind = \"redis\" without {var}: exit 1; stderr:\n{stderr}"
    );
    let naming: Vec<&str> = stderr.lines().filter(|l| l.contains(var)).collect();
    assert_eq!(naming.len(), 1, "one line names {var}; stderr:\n{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "a readable error, not a panic:\n{stderr}"
    );
    assert!(
        !stderr.contains("\"message\":\"listening\""),
        "it never started listening:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_without_its_url_variable_is_a_startup_error() {
    bounded(async {
        let up = Upstream::start().await;
        let mut rest = store("local", "50ms");
        rest += &policy("default", 10, "1m", "");
        expect_startup_error_naming(&config(&up.url(), "", &rest), "REDIS_URL").await;

        let rest = format!(
            "[store]\nkind = \"redis\"\nurl_env = \"PC_TEST_REDIS_ENDPOINT\"\n\n{}",
            policy("default", 10, "1m", "")
        );
        expect_startup_error_naming(&config(&up.url(), "", &rest), "PC_TEST_REDIS_ENDPOINT").await;
    })
    .await;
}
