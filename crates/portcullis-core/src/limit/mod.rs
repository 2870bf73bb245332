//! The limiter algorithms: pure functions of (quota, bucket state, now, cost).
//!
//! Time is nanoseconds since the Unix epoch, passed in by the caller (never read here),
//! so property tests can run a day of traffic in a millisecond, and the Redis store's
//! Lua twin can run the same arithmetic on the server's clock.
//!
//! Every algorithm admits `limit + burst` units to a fresh key at once and holds the
//! bounds of SPEC "Keys and limits, exactly":
//!
//! | algorithm | bound |
//! |---|---|
//! | [`Algorithm::Gcra`] | over any interval of length t: `limit + burst + ⌊limit·t/window⌋` |
//! | [`Algorithm::SlidingWindow`] | `limit + burst` per aligned window, `2·(limit + burst)` per any `window`-long interval |
//! | [`Algorithm::FixedWindow`] | `limit + burst` per aligned window |
//!
//! A denial carries the exact wait until the same request fits if nothing else consumes
//! the bucket meanwhile (what an honest `Retry-After` needs).

mod fixed_window;
mod gcra;
mod sliding_window;

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Nanoseconds since the Unix epoch.
pub type Nanos = u64;

/// How many units a key may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Units per window.
    pub limit: u64,
    /// Extra units allowed at once, beyond `limit`.
    pub burst: u64,
    /// The window.
    pub window: Duration,
}

/// Why a quota is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaError {
    /// `limit = 0` admits nothing; use a route without the policy, or deny elsewhere.
    ZeroLimit,
    /// Windows shorter than a millisecond are not meaningful for HTTP clients.
    WindowTooShort,
}

impl std::fmt::Display for QuotaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuotaError::ZeroLimit => f.write_str("limit must be at least 1"),
            QuotaError::WindowTooShort => f.write_str("window must be at least 1ms"),
        }
    }
}

impl Quota {
    /// Validates the quota.
    pub fn new(limit: u64, burst: u64, window: Duration) -> Result<Self, QuotaError> {
        if limit == 0 {
            return Err(QuotaError::ZeroLimit);
        }
        if window < Duration::from_millis(1) {
            return Err(QuotaError::WindowTooShort);
        }
        Ok(Quota {
            limit,
            burst,
            window,
        })
    }

    /// `limit + burst`: what a fresh key admits at once.
    pub fn capacity(&self) -> u64 {
        self.limit.saturating_add(self.burst)
    }

    fn window_ns(&self) -> u64 {
        u64::try_from(self.window.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// The limiter algorithm of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Generic cell rate algorithm: a token bucket refilled continuously.
    #[default]
    Gcra,
    /// Weighted count of the current and previous aligned windows.
    SlidingWindow,
    /// One counter per aligned window.
    FixedWindow,
}

/// What a store keeps per key. `Fresh` is a key never seen (or forgotten: a bucket that
/// has refilled is equivalent to a fresh one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BucketState {
    /// No state: a full bucket.
    #[default]
    Fresh,
    /// GCRA: the theoretical arrival time.
    Gcra {
        /// When the bucket would be full again at the current rate.
        tat: Nanos,
    },
    /// Fixed window counter.
    Fixed {
        /// Start of the aligned window `count` belongs to.
        window_start: Nanos,
        /// Units admitted in that window.
        count: u64,
    },
    /// Sliding window counters.
    Sliding {
        /// Start of the aligned window `current` belongs to.
        window_start: Nanos,
        /// Units admitted in that window.
        current: u64,
        /// Units admitted in the window before it.
        previous: u64,
    },
}

/// The outcome of one request against one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether all `cost` units fit (and were taken).
    pub allowed: bool,
    /// Units left after this request, burst included.
    pub remaining: u64,
    /// Until the bucket is full again (the `X-RateLimit-Reset` instant is now + this).
    pub reset_after: Duration,
    /// On a denial, the exact wait until the same request fits; `None` when allowed.
    pub retry_after: Option<Duration>,
    /// `t` of the `RateLimit` field: on a denial the retry wait; otherwise how long
    /// until `remaining` grows (end of the aligned window, or the next refilled unit).
    pub window_after: Duration,
    /// The cost exceeds `limit + burst`: this request can never fit.
    pub never_fits: bool,
}

/// Decides one request of `cost` units at `now`. Returns the decision and, when the
/// request was admitted, the bucket's new state (a denial changes nothing).
///
/// `cost = 0` is a peek: always allowed, nothing taken.
pub fn decide(
    algorithm: Algorithm,
    quota: &Quota,
    state: &BucketState,
    now: Nanos,
    cost: u64,
) -> (Decision, Option<BucketState>) {
    match algorithm {
        Algorithm::Gcra => gcra::decide(quota, state, now, cost),
        Algorithm::SlidingWindow => sliding_window::decide(quota, state, now, cost),
        Algorithm::FixedWindow => fixed_window::decide(quota, state, now, cost),
    }
}

/// When a bucket in `state` is full again (and may be forgotten), as of `now`.
pub fn full_at(algorithm: Algorithm, quota: &Quota, state: &BucketState, now: Nanos) -> Nanos {
    let (d, _) = decide(algorithm, quota, state, now, 0);
    now.saturating_add(ns(d.reset_after))
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn dur(ns: u128) -> Duration {
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

/// Whole seconds, rounded up, at least 1: the `Retry-After` of a wait.
pub fn retry_after_secs(wait: Duration) -> u64 {
    ceil_secs(wait).max(1)
}

/// Whole seconds, rounded up (in u64: no 128-bit division).
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

#[cfg(test)]
mod tests;
