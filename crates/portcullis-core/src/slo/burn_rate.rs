//! [`SloTracker`]: good/total counts of one SLO in time buckets, and the
//! [`SloSnapshot`] (error budget remaining, burn rates) computed from them.
//!
//! # Bucket layout
//!
//! - **Minute ring:** 4 320 one-minute buckets (3 days), always present. Burn rates over
//!   5m, 30m, 1h, 2h, 6h, 1d and 3d read it, and so does the budget when the SLO window is
//!   3 days or shorter (the window rounded up to whole minutes).
//! - **Hour ring:** one-hour buckets covering the SLO window (rounded up to whole hours),
//!   present only when the window is longer than 3 days: 720 buckets for `30d`. Windows
//!   longer than 400 days are counted over their last 400 days.
//!
//! A bucket is 24 bytes (a stamp and two counters), so a `30d` SLO holds about
//! 4 320 × 24 + 720 × 24 ≈ 121 KB whatever the traffic, allocated once in
//! [`SloTracker::new`].
//!
//! # Window edges
//!
//! A window of `n` buckets at `now` is the bucket holding `now` plus the `n − 1` before
//! it. So a request recorded in minute `m` (the minute starting at `m · 60 s` since the
//! epoch) counts in the 5m burn rate until, and not at, the start of minute `m + 5`:
//! windows move a whole bucket at a time, like Prometheus' `rate()` over a range moves a
//! scrape at a time.
//!
//! # Time
//!
//! `now` is [`Nanos`], nanoseconds since the Unix epoch, passed in by the caller (core
//! never reads a clock). A record whose time is more than a ring behind the newest data
//! in its bucket is dropped; a snapshot ignores buckets newer than its `now`, so callers
//! on several threads whose clock readings race by a few microseconds lose nothing.
//!
//! # Threads
//!
//! `SloTracker` is a plain value: [`SloTracker::record`] takes `&mut self`, is O(1) and
//! never allocates, so the caller wraps it in a `Mutex` ([`super::SloSet`] does, and
//! takes it once a minute per thread: each thread tallies the current minute apart and
//! adds the tally with [`SloTracker::record_counts`]). Atomics were the
//! alternative, but resetting a reused bucket and incrementing it cannot be one atomic
//! step without packing the stamp and both counters into one word, which would cap the
//! counters; a short uncontended lock is as cheap and exact.

use crate::config::SloConfig;
use crate::limit::Nanos;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use std::time::Duration;

/// Nanoseconds in a minute.
pub(crate) const MINUTE_NS: u64 = 60 * 1_000_000_000;
/// Nanoseconds in an hour.
const HOUR_NS: u64 = 60 * MINUTE_NS;
/// Minutes in the minute ring (3 days: the longest burn-rate window).
const MINUTE_SLOTS: u64 = 3 * 24 * 60;
/// The longest budget window kept: 400 days of hours (about 230 KB).
const MAX_HOUR_SLOTS: u64 = 400 * 24;

/// The burn-rate windows: label (the `window` metric label) and length in minutes.
pub const BURN_WINDOWS: [(&str, u64); 7] = [
    ("5m", 5),
    ("30m", 30),
    ("1h", 60),
    ("2h", 120),
    ("6h", 6 * 60),
    ("1d", 24 * 60),
    ("3d", 3 * 24 * 60),
];

/// Counts of one bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Bucket {
    /// Bucket number since the epoch, plus one (0: never used).
    stamp: u64,
    good: u64,
    total: u64,
}

/// Good/total counts over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    good: u64,
    total: u64,
}

impl Counts {
    fn bad(self) -> u64 {
        self.total - self.good
    }
}

/// A ring of equal-width buckets, indexed by bucket number modulo its length.
#[derive(Debug, Clone)]
struct Ring {
    width: u64,
    slots: Box<[Bucket]>,
}

// === impl Ring ===

impl Ring {
    fn new(width: u64, len: u64) -> Self {
        let len = usize::try_from(len.max(1)).unwrap_or(usize::MAX);
        Ring {
            width,
            slots: vec![Bucket::default(); len].into_boxed_slice(),
        }
    }

    fn len(&self) -> u64 {
        self.slots.len() as u64
    }

    fn record(&mut self, now: Nanos, good: u64, total: u64) {
        let stamp = now / self.width + 1;
        let len = self.len();
        let slot = &mut self.slots[(stamp % len) as usize];
        if slot.stamp < stamp {
            // A bucket a whole ring old (or never used): reuse it.
            *slot = Bucket {
                stamp,
                good: 0,
                total: 0,
            };
        } else if slot.stamp > stamp {
            // The slot already holds a newer bucket: this record is older than the ring.
            return;
        }
        slot.total += total;
        slot.good += good;
    }

    /// Counts over the last `lengths[i]` buckets at `now` (each at most the ring's length),
    /// in one pass; `lengths` ascending.
    fn sums<const N: usize>(&self, now: Nanos, lengths: [u64; N]) -> [Counts; N] {
        let current = now / self.width + 1;
        let len = self.len();
        let mut out = [Counts::default(); N];
        let mut acc = Counts::default();
        let mut age = 0;
        for (i, &n) in lengths.iter().enumerate() {
            let n = n.min(len);
            while age < n && age < current {
                let stamp = current - age;
                let slot = &self.slots[(stamp % len) as usize];
                if slot.stamp == stamp {
                    acc.good += slot.good;
                    acc.total += slot.total;
                }
                age += 1;
            }
            out[i] = acc;
        }
        out
    }
}

/// Good/total counts of one SLO in time buckets (see the module docs for the layout).
#[derive(Debug, Clone)]
pub struct SloTracker {
    name: String,
    objective: f64,
    latency: Option<Duration>,
    window: Duration,
    minutes: Ring,
    /// Buckets of the budget window when it is served by the minute ring.
    window_minutes: u64,
    /// The budget window's ring when the window is longer than the minute ring.
    hours: Option<Ring>,
}

// === impl SloTracker ===

impl SloTracker {
    /// A tracker for one `[[slo]]`, with no traffic yet.
    ///
    /// `objective` is taken as validated by the configuration (strictly between 0 and
    /// 100); a window of zero counts as one bucket.
    pub fn new(config: &SloConfig) -> Self {
        let window = config.window.0;
        let window_ns = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        let window_minutes = window_ns.div_ceil(MINUTE_NS).max(1);
        let hours = (window_minutes > MINUTE_SLOTS)
            .then(|| Ring::new(HOUR_NS, window_ns.div_ceil(HOUR_NS).min(MAX_HOUR_SLOTS)));
        SloTracker {
            name: config.name.clone(),
            objective: config.objective,
            latency: config.latency.map(|d| d.0),
            window,
            minutes: Ring::new(MINUTE_NS, MINUTE_SLOTS),
            window_minutes,
            hours,
        }
    }

    /// The SLO's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The latency threshold: a request slower than this is not good.
    pub fn latency(&self) -> Option<Duration> {
        self.latency
    }

    /// The SLO window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Whether a response counts as good: anything but a 5xx, and, with a threshold,
    /// no slower than it. 429 and other 4xx are good: the service did its job.
    pub fn is_good(status: u16, latency: Duration, threshold: Option<Duration>) -> bool {
        !(500..=599).contains(&status) && threshold.is_none_or(|t| latency <= t)
    }

    /// Records one request at `now` (nanoseconds since the epoch). O(1), no allocation.
    pub fn record(&mut self, now: Nanos, good: bool) {
        self.record_counts(now, u64::from(good), 1);
    }

    /// Records `total` requests at `now`, `good` of them good (at most `total`): a
    /// tally gathered elsewhere and added at once. O(1), no allocation.
    pub fn record_counts(&mut self, now: Nanos, good: u64, total: u64) {
        let good = good.min(total);
        self.minutes.record(now, good, total);
        if let Some(hours) = &mut self.hours {
            hours.record(now, good, total);
        }
    }

    /// The SLO's state at `now`: counts over the window, budget and burn rates.
    pub fn snapshot(&self, now: Nanos) -> SloSnapshot {
        let allowed = self.allowed_bad_fraction();
        let lengths = BURN_WINDOWS.map(|(_, minutes)| minutes);
        let burn = self.minutes.sums(now, lengths);
        let budget = match &self.hours {
            Some(hours) => hours.sums(now, [hours.len()])[0],
            None => self.minutes.sums(now, [self.window_minutes])[0],
        };
        let mut burn_rates = BURN_WINDOWS.map(|(label, _)| (label, 0.0));
        for (rate, counts) in burn_rates.iter_mut().zip(burn) {
            rate.1 = if counts.total == 0 {
                0.0
            } else {
                counts.bad() as f64 / counts.total as f64 / allowed
            };
        }
        let error_budget_remaining = if budget.total == 0 {
            1.0
        } else {
            1.0 - budget.bad() as f64 / budget.total as f64 / allowed
        };
        SloSnapshot {
            name: self.name.clone(),
            objective: self.objective,
            window_seconds: self.window.as_secs(),
            good: budget.good,
            total: budget.total,
            error_budget_remaining,
            burn_rates,
        }
    }

    /// Takes the objective and threshold of `fresh` (same name and window), keeping the
    /// counts: a configuration reload.
    pub(super) fn reconfigure(&mut self, fresh: &SloTracker) {
        self.objective = fresh.objective;
        self.latency = fresh.latency;
    }

    /// Slots of the minute ring and of the hour ring, if any.
    #[cfg(test)]
    pub(super) fn layout(&self) -> (usize, Option<usize>) {
        (
            self.minutes.slots.len(),
            self.hours.as_ref().map(|h| h.slots.len()),
        )
    }

    /// `1 − objective/100`: the fraction of requests the SLO allows to be bad.
    fn allowed_bad_fraction(&self) -> f64 {
        // Kept above zero so an objective of 100 (rejected by the configuration) cannot
        // divide by zero and produce values JSON cannot carry.
        (1.0 - self.objective / 100.0).max(f64::EPSILON)
    }
}

/// The state of one SLO at an instant (the `GET /admin/slo` body, one per SLO).
///
/// Serialises as
/// `{"name":"api","objective":99.9,"window_seconds":2592000,"good":999,"total":1000,
/// "error_budget_remaining":0.0,"burn_rates":{"5m":1.0,…,"3d":1.0}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloSnapshot {
    /// The SLO's name.
    pub name: String,
    /// Percent of requests that should be good.
    pub objective: f64,
    /// The SLO window, in seconds.
    pub window_seconds: u64,
    /// Good requests over the SLO window.
    pub good: u64,
    /// All requests over the SLO window.
    pub total: u64,
    /// `1 − (bad/total) / (1 − objective/100)` over the SLO window: 1.0 untouched (and
    /// with no traffic), 0.0 spent, negative overspent.
    pub error_budget_remaining: f64,
    /// `(window label, (bad/total over the window) / (1 − objective/100))` for each of
    /// [`BURN_WINDOWS`], in that order; 0.0 for a window with no traffic. 1.0 spends the
    /// budget exactly over the SLO window.
    #[serde(serialize_with = "burn_rates_as_map")]
    pub burn_rates: [(&'static str, f64); 7],
}

// === impl SloSnapshot ===

impl SloSnapshot {
    /// The burn rate over one window (`"5m"`, `"30m"`, `"1h"`, `"2h"`, `"6h"`, `"1d"`,
    /// `"3d"`).
    pub fn burn_rate(&self, window: &str) -> Option<f64> {
        self.burn_rates
            .iter()
            .find(|(label, _)| *label == window)
            .map(|&(_, rate)| rate)
    }
}

fn burn_rates_as_map<S: Serializer>(
    rates: &[(&'static str, f64); 7],
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(rates.len()))?;
    for (label, rate) in rates {
        map.serialize_entry(label, rate)?;
    }
    map.end()
}
