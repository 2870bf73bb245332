//! Rendering of the response-header contract: request ids, latency, security headers.

pub mod ratelimit;
mod security;

pub use security::SecurityHeaders;

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Which client-sent `X-Request-ID` values are kept (`[headers] accept_request_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AcceptRequestId {
    /// Keep the client's id when it is a hyphenated UUID (any version, any case).
    #[default]
    Uuid,
    /// Keep 1 to 128 characters of `[A-Za-z0-9._:-]`.
    Safe,
    /// Always make a new id.
    Never,
}

impl AcceptRequestId {
    /// Whether a client-sent id is kept as it is.
    pub fn accepts(self, value: &[u8]) -> bool {
        match self {
            AcceptRequestId::Never => false,
            AcceptRequestId::Uuid => is_hyphenated_uuid(value),
            AcceptRequestId::Safe => {
                (1..=128).contains(&value.len())
                    && value
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(b))
            }
        }
    }
}

fn is_hyphenated_uuid(v: &[u8]) -> bool {
    v.len() == 36
        && v.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// `X-Latency-MS`: whole milliseconds, rounded up, never 0.
pub fn latency_ms(elapsed: Duration) -> u64 {
    // In u64 (a whole second is a whole number of milliseconds): no 128-bit division.
    elapsed
        .as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(elapsed.subsec_nanos().div_ceil(1_000_000)))
        .max(1)
}

/// `Server-Timing: gw;dur=<ms>, upstream;dur=<ms>`, the gateway's total and the part
/// spent waiting for the upstream's response headers (0 when no upstream was asked).
pub fn server_timing(gateway: Duration, upstream: Option<Duration>) -> String {
    // Room for the latency header's value too (the latency layer appends it).
    let mut out = String::with_capacity(64);
    out.push_str("gw;dur=");
    push_ms(&mut out, gateway);
    out.push_str(", upstream;dur=");
    push_ms(&mut out, upstream.unwrap_or_default());
    out
}

fn push_ms(out: &mut String, d: Duration) {
    // In u64: no 128-bit division.
    let micros = d.subsec_micros();
    let ms = d
        .as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(micros / 1000));
    crate::json::push_u64(out, ms);
    let frac = (micros % 1000) as u16;
    out.push('.');
    for digit in [frac / 100, frac / 10 % 10, frac % 10] {
        out.push(char::from(b'0' + digit as u8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The u64 arithmetic of the latency and Retry-After values gives what the exact
    /// 128-bit formulas give.
    #[test]
    fn duration_arithmetic_in_u64_matches_the_exact_formulas() {
        let cases: [u64; 14] = [
            0,
            1,
            999,
            1_000,
            999_999,
            1_000_000,
            1_000_001,
            999_999_999,
            1_000_000_000,
            1_000_000_001,
            59_999_999_999,
            60_000_000_000,
            86_400_000_000_123,
            1_000_000_000_000_000_007,
        ];
        for ns in cases {
            let d = Duration::from_nanos(ns);
            let ms = u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
            assert_eq!(latency_ms(d), ms.max(1), "{ns} ns");
            let secs = u64::try_from(d.as_nanos().div_ceil(1_000_000_000)).unwrap_or(u64::MAX);
            assert_eq!(crate::limit::retry_after_secs(d), secs.max(1), "{ns} ns");
            let mut text = String::new();
            push_ms(&mut text, d);
            let micros = d.as_micros();
            assert_eq!(
                text,
                format!("{}.{:03}", micros / 1000, micros % 1000),
                "{ns} ns"
            );
        }
    }

    #[test]
    fn request_id_acceptance() {
        let id = b"0f8fad5b-d9cb-469f-a165-70867728950e";
        assert!(AcceptRequestId::Uuid.accepts(id));
        assert!(AcceptRequestId::Uuid.accepts(b"0F8FAD5B-D9CB-469F-A165-70867728950E"));
        assert!(!AcceptRequestId::Uuid.accepts(b"0f8fad5bd9cb469fa16570867728950e"));
        assert!(!AcceptRequestId::Uuid.accepts(b"not a uuid"));
        assert!(AcceptRequestId::Safe.accepts(b"req-42.a:b_c"));
        assert!(!AcceptRequestId::Safe.accepts(b"req 42"));
        assert!(!AcceptRequestId::Safe.accepts(b""));
        assert!(!AcceptRequestId::Safe.accepts(&[b'a'; 129]));
        assert!(!AcceptRequestId::Never.accepts(id));
    }

    #[test]
    fn latency_rounds_up_and_is_never_zero() {
        assert_eq!(latency_ms(Duration::ZERO), 1);
        assert_eq!(latency_ms(Duration::from_nanos(1)), 1);
        assert_eq!(latency_ms(Duration::from_micros(1000)), 1);
        assert_eq!(latency_ms(Duration::from_micros(1001)), 2);
    }

    #[test]
    fn server_timing_format() {
        assert_eq!(
            server_timing(
                Duration::from_micros(12_345),
                Some(Duration::from_micros(10_002))
            ),
            "gw;dur=12.345, upstream;dur=10.002"
        );
        assert_eq!(
            server_timing(Duration::from_micros(5), None),
            "gw;dur=0.005, upstream;dur=0.000"
        );
    }
}
