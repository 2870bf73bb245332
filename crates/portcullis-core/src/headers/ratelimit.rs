//! Rate-limit response headers: `X-RateLimit-*` and the IETF `RateLimit-Policy` /
//! `RateLimit` structured fields (draft-ietf-httpapi-ratelimit-headers-11).

use crate::config::RateLimitHeaders;
use crate::limit::{retry_after_secs, Decision, Nanos, Quota};
use std::time::Duration;

/// One enforcing policy's decision for a request.
#[derive(Debug, Clone, Copy)]
pub struct PolicyReport<'a> {
    /// The policy name.
    pub name: &'a str,
    /// The quota that applied (an override's, if the key has one).
    pub quota: Quota,
    /// What it decided.
    pub decision: Decision,
}

/// The policy reported in `X-RateLimit-*`: on a rejection the denying policy with the
/// longest wait, otherwise the one with the fewest units remaining.
pub fn tightest(reports: &[PolicyReport<'_>]) -> Option<usize> {
    let denied = reports
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.decision.allowed)
        .max_by_key(|(_, r)| r.decision.retry_after.unwrap_or_default());
    if let Some((i, _)) = denied {
        return Some(i);
    }
    reports
        .iter()
        .enumerate()
        .min_by_key(|(_, r)| r.decision.remaining)
        .map(|(i, _)| i)
}

/// Whole seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_nanos().div_ceil(1_000_000_000) as u64
}

/// `t` of the `RateLimit` field: on a rejection the `Retry-After` value, otherwise the
/// seconds (rounded up) until `r` grows.
pub fn effective_window_secs(d: &Decision) -> u64 {
    match d.retry_after {
        Some(wait) => retry_after_secs(wait),
        None => ceil_secs(d.window_after),
    }
}

/// A structured-field string: `"name"` with `\` and `"` escaped.
pub fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_sf_string(&mut out, s);
    out
}

fn push_sf_string(out: &mut String, s: &str) {
    out.push('"');
    if s.bytes().any(|b| b == b'"' || b == b'\\') {
        for c in s.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
    } else {
        out.push_str(s);
    }
    out.push('"');
}

use crate::json::push_u64;

fn u64_string(n: u64) -> String {
    let mut out = String::with_capacity(20);
    push_u64(&mut out, n);
    out
}

/// The rate-limit headers of a response, lower-case names first.
pub fn render(
    kind: RateLimitHeaders,
    reports: &[PolicyReport<'_>],
    now: Nanos,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::with_capacity(5);
    let Some(t) = tightest(reports) else {
        return out;
    };
    if matches!(kind, RateLimitHeaders::Legacy | RateLimitHeaders::Both) {
        let r = &reports[t];
        let reset_at = Duration::from_nanos(now) + r.decision.reset_after;
        out.push(("x-ratelimit-limit", u64_string(r.quota.limit)));
        out.push(("x-ratelimit-remaining", u64_string(r.decision.remaining)));
        out.push(("x-ratelimit-reset", u64_string(ceil_secs(reset_at))));
    }
    if matches!(kind, RateLimitHeaders::Ietf | RateLimitHeaders::Both) {
        let mut policy = String::with_capacity(40 * reports.len());
        let mut limit = String::with_capacity(40 * reports.len());
        for (i, r) in reports.iter().enumerate() {
            if i > 0 {
                policy.push_str(", ");
                limit.push_str(", ");
            }
            push_sf_string(&mut policy, r.name);
            policy.push_str(";q=");
            push_u64(&mut policy, r.quota.limit);
            policy.push_str(";w=");
            push_u64(&mut policy, ceil_secs(r.quota.window).max(1));
            push_sf_string(&mut limit, r.name);
            limit.push_str(";r=");
            push_u64(&mut limit, r.decision.remaining);
            limit.push_str(";t=");
            push_u64(&mut limit, effective_window_secs(&r.decision));
        }
        out.push(("ratelimit-policy", policy));
        out.push(("ratelimit", limit));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::{decide, Algorithm, BucketState};

    const NOW: Nanos = 1_795_425_199_250_000_000;

    fn report(
        name: &str,
        limit: u64,
        cost: u64,
        state: BucketState,
    ) -> (PolicyReport<'_>, BucketState) {
        let quota = Quota::new(limit, 0, Duration::from_secs(60)).unwrap();
        let (decision, next) = decide(Algorithm::Gcra, &quota, &state, NOW, cost);
        (
            PolicyReport {
                name,
                quota,
                decision,
            },
            next.unwrap_or(state),
        )
    }

    #[test]
    fn allowed_request_reports_each_policy_and_the_tightest() {
        let (a, _) = report("default", 100, 1, BucketState::Fresh);
        let (b, _) = report("auth", 10, 1, BucketState::Fresh);
        let h = render(RateLimitHeaders::Both, &[a, b], NOW);
        let get = |n: &str| h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("x-ratelimit-limit"), Some("10"));
        assert_eq!(get("x-ratelimit-remaining"), Some("9"));
        // One unit of 10/min refills in 6 s: full again at now + 6 s, rounded up.
        assert_eq!(get("x-ratelimit-reset"), Some("1795425206"));
        assert_eq!(
            get("ratelimit-policy"),
            Some("\"default\";q=100;w=60, \"auth\";q=10;w=60")
        );
        assert_eq!(
            get("ratelimit"),
            Some("\"default\";r=99;t=1, \"auth\";r=9;t=6")
        );
    }

    #[test]
    fn rejection_reports_the_denier_with_t_equal_to_retry_after() {
        let mut state = BucketState::Fresh;
        for _ in 0..2 {
            state = report("auth", 2, 1, state).1;
        }
        let (denied, _) = report("auth", 2, 1, state);
        let (other, _) = report("default", 100, 0, BucketState::Fresh);
        let h = render(RateLimitHeaders::Both, &[other, denied], NOW);
        let get = |n: &str| h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("x-ratelimit-limit"), Some("2"));
        assert_eq!(get("x-ratelimit-remaining"), Some("0"));
        assert_eq!(
            get("ratelimit"),
            Some("\"default\";r=100;t=0, \"auth\";r=0;t=30")
        );
        assert_eq!(tightest(&[other, denied]), Some(1));
        let legacy_only = render(RateLimitHeaders::Legacy, &[denied], NOW);
        assert_eq!(legacy_only.len(), 3);
        assert!(render(RateLimitHeaders::None, &[denied], NOW).is_empty());
    }

    #[test]
    fn names_are_quoted_and_escaped() {
        assert_eq!(sf_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }

    #[test]
    fn integers_are_written_like_display() {
        for n in [0, 1, 9, 10, 99, 100, 12_345, 1_000_000_007, u64::MAX] {
            assert_eq!(u64_string(n), n.to_string());
        }
    }
}
