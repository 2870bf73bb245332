//! What redacting one access-log line costs: a typical clean line, and a worst case
//! full of secrets and near misses, as `Redactor::redact_json` sees them in the gateway.
// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use portcullis_core::config::{LogConfig, Redaction};
use portcullis_core::redact::Redactor;
use serde_json::{json, Value};
use std::hint::black_box;

/// The gateway's access-log line for an ordinary request: nothing to redact.
fn typical() -> Value {
    json!({
        "ts": "2026-11-23T09:13:19.123Z",
        "request_id": "550e8400-e29b-41d4-a716-446655440000",
        "method": "GET",
        "route": "/api/v1/orders/{id}",
        "path": "/api/v1/orders/12345?page=2&per_page=50",
        "status": 200,
        "latency_ms": 3.25,
        "upstream_ms": 2.75,
        "client": "h:3f2a9c0b1d4e5f60",
        "policy": "default",
        "decision": "allow",
        "bytes_out": 5120,
        "duration_ms": 3.5,
    })
}

/// A line full of secrets, and of text that comes close to every detector.
fn worst() -> Value {
    json!({
        "ts": "2026-11-23T09:13:19.123Z",
        "request_id": "550e8400-e29b-41d4-a716-446655440000",
        "method": "POST",
        "route": "/api/v1/users/{id}",
        "path": "/api/v1/users/ann.smith+tag@example.co.uk/cards/4111111111111111?token=s3cret&api_key=k-123&page=2&email=bob%40example.org",
        "status": 502,
        "client": "h:3f2a9c0b1d4e5f60",
        "error": "upstream 10.0.0.7:8080 refused Bearer 9f8e7d6c5b4a39281706 for user@localhost: \
                  order 4111111111111112 card 4242 4242 4242 4242 ts 1732354399123 \
                  key AKIAIOSFODNN7EXAMPLE aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY \
                  jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlMTIz eyJ not-a-jwt \
                  sk_live_4eC39HqLyjWDarjtT1zdp7dc ghp_short sk_test_ task_live_1234567890abcdef \
                  xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx Basic dXNlcjpwYXNz \
                  Bearer of bad news at 2026-11-23 09:13:19 from @ann, see a.b@c and 5555-5555-5555-4444",
        "headers": {
            "authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlMTIz",
            "cookie": "session=abc123; theme=dark",
            "user-agent": "curl/8.5.0",
            "referer": "https://app.example.com/cb?code=1&access_token=ya29.a0AfH6SMBx&state=xyz",
        },
        "policy": "auth",
        "decision": "deny",
        "bytes_out": 312,
    })
}

fn bench(c: &mut Criterion) {
    let hash = Redactor::from_config(&LogConfig::default(), b"bench-key");
    let mask = Redactor::from_config(
        &LogConfig {
            redaction: Redaction::Mask,
            ..LogConfig::default()
        },
        b"bench-key",
    );
    let mut g = c.benchmark_group("redact");
    g.bench_function("typical line (json, clean)", |b| {
        b.iter_batched_ref(
            typical,
            |v| hash.redact_json(black_box(v)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("typical path (str, clean)", |b| {
        b.iter(|| {
            hash.redact_str(black_box("/api/v1/orders/12345?page=2&per_page=50"))
                .len()
        })
    });
    g.bench_function("worst line (json, hash)", |b| {
        b.iter_batched_ref(
            worst,
            |v| hash.redact_json(black_box(v)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("worst line (json, mask)", |b| {
        b.iter_batched_ref(
            worst,
            |v| mask.redact_json(black_box(v)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
