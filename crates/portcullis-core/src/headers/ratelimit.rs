//! Rate-limit response headers: `X-RateLimit-*` and the IETF `RateLimit-Policy` /
//! `RateLimit` structured fields (draft-ietf-httpapi-ratelimit-headers-11).

use crate::config::RateLimitHeaders;
use crate::limit::{ceil_secs, retry_after_secs, Decision, Nanos, Quota};
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

#[cfg(test)]
fn u64_string(n: u64) -> String {
    let mut out = String::with_capacity(20);
    push_u64(&mut out, n);
    out
}

/// The five rate-limit header names, in the order [`render`] writes them.
pub const NAMES: [&str; 5] = [
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "ratelimit-policy",
    "ratelimit",
];

/// The rate-limit headers of one response, written into one string: a response costs
/// one buffer (and, on the wire side, one shared allocation) instead of one per value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderedHeaders {
    text: String,
    /// For each header written: its index in [`NAMES`] and where its value ends in
    /// `text` (values are contiguous, each starts where the previous one ended).
    fields: [(u8, u32); 5],
    len: u8,
}

impl RenderedHeaders {
    fn push(&mut self, name: usize) {
        let end = u32::try_from(self.text.len()).unwrap_or(u32::MAX);
        // `name` < 5 and at most five fields (a sixth would be dropped, never panic).
        if let Some(field) = self.fields.get_mut(usize::from(self.len)) {
            *field = (u8::try_from(name).unwrap_or(u8::MAX), end);
            self.len += 1;
        }
    }

    /// How many headers there are.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `(index into NAMES, byte range of the value in text)` for each header.
    pub fn spans(&self) -> impl Iterator<Item = (usize, std::ops::Range<usize>)> + 'static {
        let fields = self.fields;
        let mut start = 0usize;
        (0..self.len()).map(move |i| {
            let (name, end) = fields[i];
            let range = start..end as usize;
            start = end as usize;
            (usize::from(name), range)
        })
    }

    /// `(name, value)` for each header.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        self.spans()
            .filter_map(|(name, range)| Some((*NAMES.get(name)?, self.text.get(range)?)))
    }

    /// The value of `name`, if it was written.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The text every value is a slice of (see [`Self::spans`]).
    pub fn into_text(self) -> String {
        self.text
    }
}

/// `"name";a=1;b=2, "other";a=3;b=4`: one list member per policy, the shape of both
/// `RateLimit-Policy` and `RateLimit`.
fn push_list(
    text: &mut String,
    reports: &[PolicyReport<'_>],
    params: impl Fn(&PolicyReport<'_>) -> [(&'static str, u64); 2],
) {
    for (i, r) in reports.iter().enumerate() {
        if i > 0 {
            text.push_str(", ");
        }
        push_sf_string(text, r.name);
        for (key, value) in params(r) {
            text.push(';');
            text.push_str(key);
            text.push('=');
            push_u64(text, value);
        }
    }
}

/// The rate-limit headers of a response.
pub fn render(kind: RateLimitHeaders, reports: &[PolicyReport<'_>], now: Nanos) -> RenderedHeaders {
    let mut out = RenderedHeaders::default();
    let Some(t) = tightest(reports).filter(|_| kind != RateLimitHeaders::None) else {
        return out;
    };
    out.text = String::with_capacity(48 + 80 * reports.len());
    let text = &mut out.text;
    if matches!(kind, RateLimitHeaders::Legacy | RateLimitHeaders::Both) {
        let r = &reports[t];
        let reset_at = Duration::from_nanos(now) + r.decision.reset_after;
        push_u64(text, r.quota.limit);
        out.push(0);
        push_u64(&mut out.text, r.decision.remaining);
        out.push(1);
        push_u64(&mut out.text, ceil_secs(reset_at));
        out.push(2);
    }
    if matches!(kind, RateLimitHeaders::Ietf | RateLimitHeaders::Both) {
        push_list(&mut out.text, reports, |r| {
            [
                ("q", r.quota.limit),
                ("w", ceil_secs(r.quota.window).max(1)),
            ]
        });
        out.push(3);
        push_list(&mut out.text, reports, |r| {
            [
                ("r", r.decision.remaining),
                ("t", effective_window_secs(&r.decision)),
            ]
        });
        out.push(4);
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
        let get = |n: &str| h.get(n);
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
        let get = |n: &str| h.get(n);
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
    fn values_are_contiguous_slices_of_one_text() {
        let (a, _) = report("default", 100, 1, BucketState::Fresh);
        let (b, _) = report("auth", 10, 1, BucketState::Fresh);
        for kind in [
            RateLimitHeaders::Both,
            RateLimitHeaders::Legacy,
            RateLimitHeaders::Ietf,
        ] {
            let h = render(kind, &[a, b], NOW);
            let names: Vec<&str> = h.iter().map(|(n, _)| n).collect();
            let expected: &[&str] = match kind {
                RateLimitHeaders::Legacy => &NAMES[..3],
                RateLimitHeaders::Ietf => &NAMES[3..],
                _ => &NAMES,
            };
            assert_eq!(names, expected, "{kind:?}");
            let joined: String = h.iter().map(|(_, v)| v).collect();
            let mut next = 0;
            for (_, range) in h.spans() {
                assert_eq!(range.start, next, "{kind:?}: no gap, no overlap");
                next = range.end;
            }
            assert_eq!(joined, h.clone().into_text(), "{kind:?}");
        }
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
