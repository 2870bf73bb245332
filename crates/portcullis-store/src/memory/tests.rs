use super::*;
use crate::clock::ManualClock;
use std::time::Duration;

const T0: u64 = 1_795_425_199_000_000_000;

use crate::test_key as key;

fn check(n: u64, limit: u64, cost: u64) -> Check {
    Check {
        key: key(n),
        algorithm: Algorithm::Gcra,
        quota: Quota::new(limit, 0, Duration::from_secs(60)).unwrap(),
        cost,
    }
}

#[test]
fn a_limited_client_stays_limited_while_100k_keys_churn() {
    let clock = ManualClock::new(T0);
    let store = MemoryStore::new(1000, clock.clone());
    let attacker = check(u64::MAX, 5, 1);
    for _ in 0..5 {
        assert!(store.decide_at(&[attacker], clock.now())[0].allowed);
    }
    assert!(
        !store.decide_at(&[attacker], clock.now())[0].allowed,
        "limited"
    );
    for n in 0..100_000u64 {
        if n % 1000 == 0 {
            clock.advance(Duration::from_millis(1));
        }
        store.decide_at(&[check(n, 100, 1)], clock.now());
        assert!(store.key_count() <= store.capacity(), "bounded");
    }
    assert!(
        store.capacity() <= 1000 + 64,
        "the bound is max_keys (rounded per shard)"
    );
    let d = store.decide_at(&[attacker], clock.now())[0];
    assert!(
        !d.allowed,
        "churn must not hand the limited client a fresh bucket"
    );
}

#[test]
fn memory_is_bounded_by_max_keys() {
    let clock = ManualClock::new(T0);
    let store = MemoryStore::new(10_000, clock.clone());
    for n in 0..200_000u64 {
        store.decide_at(&[check(n, 10, 1)], clock.now());
    }
    assert!(store.key_count() <= store.capacity());
    assert!(store.capacity() <= 10_000 + 64);
}

#[test]
fn denied_request_takes_nothing_from_other_policies() {
    let clock = ManualClock::new(T0);
    let store = MemoryStore::new(1000, clock.clone());
    let wide = check(1, 100, 1);
    let narrow = check(2, 2, 1);
    for _ in 0..2 {
        let d = store.decide_at(&[wide, narrow], clock.now());
        assert!(d.iter().all(|d| d.allowed));
    }
    for _ in 0..5 {
        let d = store.decide_at(&[wide, narrow], clock.now());
        assert!(d[0].allowed && !d[1].allowed);
        assert_eq!(d[0].remaining, 98, "the wide bucket was not charged");
    }
}

#[test]
fn refilled_buckets_are_swept() {
    let clock = ManualClock::new(T0);
    let store = MemoryStore::new(1000, clock.clone());
    for n in 0..100 {
        store.decide_at(&[check(n, 10, 1)], clock.now());
    }
    assert_eq!(store.key_count(), 100);
    clock.advance(Duration::from_secs(5));
    assert_eq!(store.sweep(), 0, "one unit of 10/min takes 6 s to refill");
    clock.advance(Duration::from_secs(1));
    assert_eq!(store.sweep(), 100);
    assert_eq!(store.key_count(), 0);
}

#[tokio::test]
async fn reset_forgets_a_bucket() {
    let clock = ManualClock::new(T0);
    let store = Arc::new(MemoryStore::new(1000, clock));
    let c = check(7, 1, 1);
    assert!(store.decide(&[c]).await.unwrap().decisions[0].allowed);
    assert!(!store.decide(&[c]).await.unwrap().decisions[0].allowed);
    store.reset(c.key).await.unwrap();
    assert!(store.decide(&[c]).await.unwrap().decisions[0].allowed);
}
