//! What a memory-store decision costs (SPEC's bar: under 100 ns): one hot key, keys
//! spread over many buckets, and a full store evicting on every new key.
//! `cargo bench -p portcullis-store --bench memory`.
// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis_core::limit::{Algorithm, Quota};
use portcullis_store::clock::ManualClock;
use portcullis_store::memory::MemoryStore;
use portcullis_store::{Check, StoreKey};
use std::hint::black_box;
use std::time::Duration;

const NOW: u64 = 1_795_425_199_123_456_789;

fn key(n: u64) -> StoreKey {
    // Spread like the SHA-256 keys the gateway makes.
    let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (n >> 7);
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&n.to_le_bytes());
    k[8..].copy_from_slice(&h.to_le_bytes());
    StoreKey(k)
}

fn check(n: u64) -> Check {
    Check {
        key: key(n),
        algorithm: Algorithm::Gcra,
        quota: Quota::new(100_000_000, 0, Duration::from_secs(60)).expect("quota"),
        cost: 1,
    }
}

fn decisions(c: &mut Criterion) {
    let mut g = c.benchmark_group("memory store decision");
    let store = MemoryStore::new(1_000_000, ManualClock::new(NOW));
    let hot = [check(1)];
    let mut now = NOW;
    g.bench_function("one hot key", |b| {
        b.iter(|| {
            now += 1_000;
            store.decide_at(black_box(&hot), now)
        });
    });

    let store = MemoryStore::new(1_000_000, ManualClock::new(NOW));
    for n in 0..100_000 {
        store.decide_at(&[check(n)], NOW);
    }
    let mut n = 0u64;
    g.bench_function("100k live keys, round robin", |b| {
        b.iter(|| {
            n = (n + 1) % 100_000;
            now += 1_000;
            store.decide_at(black_box(&[check(n)]), now)
        });
    });

    let store = MemoryStore::new(10_000, ManualClock::new(NOW));
    let mut fresh = 0u64;
    g.bench_function("full store (10k), a new key each time", |b| {
        b.iter(|| {
            fresh += 1;
            now += 1_000;
            store.decide_at(black_box(&[check(1 << 40 | fresh)]), now)
        });
    });
    g.finish();
}

criterion_group!(benches, decisions);
criterion_main!(benches);
