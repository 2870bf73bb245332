//! The Redis store against a private `redis-server` (never a fake): the same contract
//! as the memory store.

use super::*;
use std::process::{Child, Command, Stdio};

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

async fn redis_server() -> Server {
    let port = free_port();
    let mut child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (scripts/test installs it)");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Server { child, port };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("redis-server did not start on port {port}");
}

async fn store(port: u16, on_error: StoreOnError) -> RedisStore {
    RedisStore::start(
        RedisSettings {
            target: RedisTarget::parse(&format!("redis://127.0.0.1:{port}")).unwrap(),
            timeout: Duration::from_millis(200),
            on_error,
            local_share: 1,
            local_max_keys: 1000,
        },
        None,
    )
    .await
}

fn check(key: u8, algorithm: Algorithm, limit: u64, window: Duration, cost: u64) -> Check {
    let mut k = [0u8; 16];
    k[0] = key;
    k[15] = rand_byte();
    Check {
        key: StoreKey(k),
        algorithm,
        quota: Quota::new(limit, 0, window).unwrap(),
        cost,
    }
}

/// Distinct keys per test run, so parallel tests never share buckets.
fn rand_byte() -> u8 {
    static N: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[tokio::test]
async fn n_plus_5_meet_exactly_5_rejections_for_each_algorithm() {
    let server = redis_server().await;
    let s = store(server.port, StoreOnError::Deny).await;
    for (i, alg) in [
        Algorithm::Gcra,
        Algorithm::SlidingWindow,
        Algorithm::FixedWindow,
    ]
    .into_iter()
    .enumerate()
    {
        let c = check(i as u8, alg, 10, Duration::from_secs(3600), 1);
        let mut denied = 0;
        let mut remaining = Vec::new();
        for _ in 0..15 {
            let d = s.decide(&[c]).await.unwrap().decisions[0];
            if d.allowed {
                remaining.push(d.remaining);
            } else {
                denied += 1;
                assert!(d.retry_after.unwrap() > Duration::ZERO);
            }
        }
        assert_eq!(denied, 5, "{alg:?}");
        assert_eq!(remaining, (0..10).rev().collect::<Vec<_>>(), "{alg:?}");
    }
}

#[tokio::test]
async fn a_denial_takes_nothing_from_the_other_policies() {
    let server = redis_server().await;
    let s = store(server.port, StoreOnError::Deny).await;
    let wide = check(10, Algorithm::Gcra, 100, Duration::from_secs(60), 1);
    let narrow = check(11, Algorithm::SlidingWindow, 2, Duration::from_secs(60), 1);
    for _ in 0..2 {
        assert!(s
            .decide(&[wide, narrow])
            .await
            .unwrap()
            .decisions
            .iter()
            .all(|d| d.allowed));
    }
    for _ in 0..3 {
        let d = s.decide(&[wide, narrow]).await.unwrap().decisions;
        assert!(d[0].allowed && !d[1].allowed);
    }
    // Past the blocked-key cache: ask Redis directly for the wide bucket.
    let d = s
        .decide(&[Check { cost: 0, ..wide }])
        .await
        .unwrap()
        .decisions[0];
    assert_eq!(
        d.remaining, 98,
        "the wide bucket paid only for admitted requests"
    );
}

#[tokio::test]
async fn retry_after_is_honest_on_the_server_clock() {
    let server = redis_server().await;
    let s = store(server.port, StoreOnError::Deny).await;
    for alg in [
        Algorithm::Gcra,
        Algorithm::SlidingWindow,
        Algorithm::FixedWindow,
    ] {
        let c = check(20, alg, 2, Duration::from_millis(300), 1);
        let c = Check {
            key: StoreKey([20 + alg as u8; 16]),
            ..c
        };
        let mut wait = None;
        for _ in 0..3 {
            let d = s.decide(&[c]).await.unwrap().decisions[0];
            if !d.allowed {
                wait = d.retry_after;
            }
        }
        let wait = wait.expect("the third request is denied");
        assert!(wait <= Duration::from_millis(600), "{alg:?}: {wait:?}");
        tokio::time::sleep(wait + Duration::from_millis(5)).await;
        // The blocked-key cache expires at the same instant.
        let d = s.decide(&[c]).await.unwrap().decisions[0];
        assert!(d.allowed, "{alg:?}: denied after waiting {wait:?}");
    }
}

#[tokio::test]
async fn keys_are_hash_tagged_and_expire() {
    let server = redis_server().await;
    let s = store(server.port, StoreOnError::Deny).await;
    let c = check(30, Algorithm::Gcra, 10, Duration::from_secs(60), 1);
    s.decide(&[c]).await.unwrap();
    let client = redis::Client::open(format!("redis://127.0.0.1:{}", server.port)).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let name = redis_key(&c.key);
    assert!(name.starts_with("pc:{") && name.ends_with('}'));
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&name)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        ttl > 0 && ttl <= 6_000 + 1_000,
        "one unit of 10/min refills in 6 s: ttl {ttl}"
    );
}

#[tokio::test]
async fn a_dead_redis_follows_on_error_without_waiting_each_time() {
    let server = redis_server().await;
    let port = server.port;
    let s = store(port, StoreOnError::Local).await;
    let c = check(40, Algorithm::Gcra, 3, Duration::from_secs(60), 1);
    assert!(s.decide(&[c]).await.unwrap().decisions[0].allowed);
    drop(server);
    let started = Instant::now();
    let mut admitted = 0;
    for _ in 0..20 {
        if s.decide(&[c]).await.unwrap().decisions[0].allowed {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 3, "the local fallback enforces the limit");
    assert!(s.health().down);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let deny = store(port, StoreOnError::Deny).await;
    assert!(deny.decide(&[c]).await.is_err());
}

#[tokio::test]
async fn remember_is_once_per_ttl_across_stores_and_follows_on_error() {
    let server = redis_server().await;
    let a = store(server.port, StoreOnError::Deny).await;
    let b = store(server.port, StoreOnError::Deny).await;
    let k = StoreKey([7; 16]);
    assert!(a.remember(k, Duration::from_millis(400)).await.unwrap());
    assert!(!b.remember(k, Duration::from_millis(400)).await.unwrap());
    assert!(!a.remember(k, Duration::from_millis(400)).await.unwrap());
    let client = redis::Client::open(format!("redis://127.0.0.1:{}", server.port)).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let name = replay_key(&k);
    assert!(name.starts_with("pc:{") && name.ends_with("}:id"), "{name}");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&name)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 400, "ttl {ttl}");
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(
        b.remember(k, Duration::from_secs(60)).await.unwrap(),
        "expired"
    );
    b.forget(k).await.unwrap();
    assert!(
        a.remember(k, Duration::from_secs(60)).await.unwrap(),
        "forgotten"
    );

    let local = store(server.port, StoreOnError::Local).await;
    drop(server);
    let k2 = StoreKey([9; 16]);
    assert!(
        a.remember(k2, Duration::from_secs(60)).await.is_err(),
        "deny: error"
    );
    assert!(local.remember(k2, Duration::from_secs(60)).await.unwrap());
    assert!(
        !local.remember(k2, Duration::from_secs(60)).await.unwrap(),
        "local: the fallback remembers"
    );
}

#[test]
fn key_names_are_the_key_in_lower_case_hex_hash_tagged() {
    let mut bytes = [0u8; 16];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(0x0f);
    }
    let key = StoreKey(bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(key.to_hex(), hex);
    assert_eq!(redis_key(&key), format!("pc:{{{hex}}}"));
    assert_eq!(replay_key(&key), format!("pc:{{{hex}}}:id"));
    assert_eq!(StoreKey([0xff; 16]).to_hex(), "ff".repeat(16));
}
