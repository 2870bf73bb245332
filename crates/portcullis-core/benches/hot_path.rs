//! The pure pieces every request goes through, so a regression in any of them shows:
//! the limiter decision of each algorithm, route resolution over the seed tiers, the
//! client-IP rule (direct peer, and behind a trusted proxy), and rendering the
//! rate-limit headers. `cargo bench -p portcullis-core --bench hot_path`.
// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis_core::config::RateLimitHeaders;
use portcullis_core::headers::ratelimit::{render, PolicyReport};
use portcullis_core::identity::{identify, ForwardingHeaders, TrustedProxies};
use portcullis_core::limit::{decide, Algorithm, BucketState, Quota};
use portcullis_core::policy::PolicySet;
use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

/// An arbitrary, unaligned instant (nanoseconds since the epoch).
const NOW: u64 = 1_795_425_199_123_456_789;

fn limiter(c: &mut Criterion) {
    let quota = Quota::new(100, 10, Duration::from_secs(60)).expect("quota");
    let mut g = c.benchmark_group("limiter decision");
    for (name, algorithm) in [
        ("gcra", Algorithm::Gcra),
        ("sliding_window", Algorithm::SlidingWindow),
        ("fixed_window", Algorithm::FixedWindow),
    ] {
        // A bucket that has been used: the common case, neither fresh nor empty.
        let (_, used) = decide(algorithm, &quota, &BucketState::default(), NOW, 40);
        let state = used.expect("admitted");
        g.bench_function(name, |b| {
            b.iter(|| decide(algorithm, &quota, black_box(&state), black_box(NOW + 1), 1));
        });
    }
    g.finish();
}

fn routes(c: &mut Criterion) {
    let text = include_str!("../../../examples/tiers.toml");
    let config = portcullis_core::config::load("examples/tiers.toml", Some(text), Vec::new())
        .expect("the seed tiers load");
    let set = PolicySet::from_config(&config);
    let mut g = c.benchmark_group("route resolution (seed tiers)");
    g.bench_function("first route", |b| {
        b.iter(|| {
            set.resolve(black_box("POST"), black_box("/api/auth/login"))
                .cost
        });
    });
    g.bench_function("param route", |b| {
        b.iter(|| {
            set.resolve(black_box("GET"), black_box("/api/items/42"))
                .cost
        });
    });
    g.bench_function("no route (default)", |b| {
        b.iter(|| {
            set.resolve(black_box("GET"), black_box("/static/app/main.js"))
                .cost
        });
    });
    g.finish();
}

fn client_ip(c: &mut Criterion) {
    let trusted = TrustedProxies::new(vec![
        "10.0.0.0/8".parse().expect("cidr"),
        "192.168.0.0/16".parse().expect("cidr"),
    ]);
    let direct: IpAddr = "203.0.113.7".parse().expect("ip");
    let proxy: IpAddr = "10.1.2.3".parse().expect("ip");
    let none = ForwardingHeaders {
        x_forwarded_for: &[],
        forwarded: &[],
        x_forwarded_proto: &[],
    };
    let xff = ["198.51.100.9, 203.0.113.7, 10.9.9.9"];
    let proto = ["https"];
    let behind = ForwardingHeaders {
        x_forwarded_for: &xff,
        forwarded: &[],
        x_forwarded_proto: &proto,
    };
    let mut g = c.benchmark_group("client ip");
    g.bench_function("untrusted peer", |b| {
        b.iter(|| identify(black_box(direct), false, &trusted, black_box(none)));
    });
    g.bench_function("trusted proxy, 3-hop X-Forwarded-For", |b| {
        b.iter(|| identify(black_box(proxy), false, &trusted, black_box(behind)));
    });
    g.finish();
}

fn headers(c: &mut Criterion) {
    let quota = Quota::new(100, 0, Duration::from_secs(60)).expect("quota");
    let auth = Quota::new(10, 0, Duration::from_secs(60)).expect("quota");
    let (d1, _) = decide(Algorithm::Gcra, &quota, &BucketState::default(), NOW, 1);
    let (d2, _) = decide(
        Algorithm::FixedWindow,
        &auth,
        &BucketState::default(),
        NOW,
        1,
    );
    let reports = [
        PolicyReport {
            name: "default",
            quota,
            decision: d1,
        },
        PolicyReport {
            name: "auth",
            quota: auth,
            decision: d2,
        },
    ];
    let mut g = c.benchmark_group("rate-limit headers");
    g.bench_function("one policy, both families", |b| {
        b.iter(|| render(RateLimitHeaders::Both, black_box(&reports[..1]), NOW));
    });
    g.bench_function("two policies, both families", |b| {
        b.iter(|| render(RateLimitHeaders::Both, black_box(&reports), NOW));
    });
    g.finish();
}

criterion_group!(benches, limiter, routes, client_ip, headers);
criterion_main!(benches);
