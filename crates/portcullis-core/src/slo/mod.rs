//! SLOs: good/total counts in time buckets, error budget and burn rates (SPEC `[[slo]]`),
//! and the Prometheus rules and Grafana dashboard generated from them.
//!
//! # Example
//!
//! ```
//! use portcullis_core::config::{DurationValue, SloConfig};
//! use portcullis_core::route::RoutePattern;
//! use portcullis_core::slo::SloSet;
//! use std::time::Duration;
//!
//! let api = SloConfig {
//!     name: "api".into(),
//!     routes: vec![RoutePattern::parse("/api/*").unwrap()],
//!     objective: 99.0,
//!     latency: Some(DurationValue(Duration::from_millis(100))),
//!     window: DurationValue(Duration::from_secs(30 * 86_400)),
//! };
//! let slos = SloSet::new(&[api]);
//! let now = 1_700_000_000_000_000_000; // nanoseconds since the epoch, from the caller
//! slos.record(now, "/api/items", 200, Duration::from_millis(12)); // good
//! slos.record(now, "/api/items", 503, Duration::from_millis(12)); // bad: 5xx
//! slos.record(now, "/api/items", 429, Duration::from_millis(1)); // good: 4xx
//! slos.record(now, "/other", 500, Duration::from_millis(1)); // no SLO covers it
//!
//! let snap = &slos.snapshots(now)[0];
//! assert_eq!((snap.good, snap.total), (2, 3));
//! // 1 bad in 3 is 33.3 % bad, against the 1 % the objective allows: 33.3x.
//! assert!((snap.burn_rate("5m").unwrap() - 100.0 / 3.0).abs() < 1e-9);
//! ```
//!
//! - [`SloTracker`] counts one SLO (its bucket layout, window edges and thread model are
//!   in [`burn_rate`]); [`SloSet`] routes each request to the SLOs whose `routes` match
//!   its path. Each tracker is behind a lock; with [`SloSet::with_shards`], each thread
//!   tallies the current minute in a shard of its own and takes the tracker's lock only
//!   when its minute ends or a snapshot is read (see [`SloSet::record_on`]).
//! - [`rules::prometheus_rules`] writes the recording and multi-window, multi-burn-rate
//!   alerting rules (`portcullis slo rules`); [`dashboard::grafana_dashboard`] the
//!   Grafana dashboard (`portcullis slo dashboard`).
//!
//! The gateway's `/admin/slo` and the gauges `portcullis_slo_error_budget_remaining{slo}`
//! and `portcullis_slo_burn_rate{slo,window}` read [`SloSet::snapshots`]; the rules
//! compute the same ratios in Prometheus from `portcullis_requests_total` and
//! `portcullis_request_duration_seconds`, so alerts survive a gateway restart.

pub mod burn_rate;
pub mod dashboard;
pub mod rules;

#[cfg(test)]
mod tests;

pub use burn_rate::{SloSnapshot, SloTracker, BURN_WINDOWS};

use crate::config::SloConfig;
use crate::limit::Nanos;
use crate::route::{normalize, RoutePattern};
use burn_rate::MINUTE_NS;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// The configured SLOs, each with its tracker; shared by reference across threads.
#[derive(Debug, Default)]
pub struct SloSet {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    routes: Vec<RoutePattern>,
    /// The tracker's latency threshold, to judge a response without its lock.
    latency: Option<Duration>,
    tracker: Mutex<SloTracker>,
    /// Per-shard tallies of the current minute, not yet in `tracker`.
    tallies: Box<[Padded<Mutex<Tally>>]>,
}

/// A shard alone in its cache lines (128 bytes: adjacent-line prefetch pairs lines), so
/// that one thread's tally is not in a line another thread writes.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// Requests of one minute counted by one shard.
#[derive(Debug, Default)]
struct Tally {
    /// Minute number since the epoch, plus one (0: nothing counted yet).
    minute: u64,
    good: u64,
    total: u64,
}

// === impl SloSet ===

impl SloSet {
    /// Trackers for the configured SLOs, in file order, with no traffic yet, and one
    /// shard (see [`SloSet::with_shards`]).
    pub fn new(slos: &[SloConfig]) -> Self {
        Self::with_shards(slos, 1)
    }

    /// [`SloSet::new`] with `shards` shards for [`SloSet::record_on`]: one per thread
    /// that records (more threads than shards share them, still exact).
    ///
    /// Why shards: taken per request by every serving thread, one tracker's lock and
    /// the bucket it writes would move between the cores at every request. A shard's
    /// tally is written by its own thread only, and added to the tracker once a minute.
    pub fn with_shards(slos: &[SloConfig], shards: usize) -> Self {
        SloSet {
            entries: slos
                .iter()
                .map(|c| Entry {
                    routes: c.routes.clone(),
                    latency: c.latency.map(|d| d.0),
                    tracker: Mutex::new(SloTracker::new(c)),
                    tallies: (0..shards.max(1)).map(|_| Padded::default()).collect(),
                })
                .collect(),
        }
    }

    /// The set for a reloaded configuration: an SLO whose name and window are unchanged
    /// keeps its counts (classified under the thresholds of the time they were recorded);
    /// new or changed ones start empty.
    pub fn reconfigured(&self, slos: &[SloConfig]) -> Self {
        let mut next = SloSet::with_shards(slos, self.shards());
        for (entry, config) in next.entries.iter_mut().zip(slos) {
            let kept = self.entries.iter().find_map(|old| {
                let old = old.settled();
                (old.name() == config.name && old.window() == config.window.0).then(|| old.clone())
            });
            if let Some(mut tracker) = kept {
                let fresh = SloTracker::new(config);
                // Counts from before; objective and threshold from now.
                tracker.reconfigure(&fresh);
                entry.tracker = Mutex::new(tracker);
            }
        }
        next
    }

    /// Number of shards [`SloSet::record_on`] spreads over.
    pub fn shards(&self) -> usize {
        self.entries.first().map_or(1, |e| e.tallies.len())
    }

    /// Number of SLOs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no SLO is configured (then [`SloSet::record`] costs nothing).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Indices (file order) of the SLOs whose `routes` match a path. The path is a
    /// request's raw path (without query) or its matched route pattern; the raw path is
    /// exact, a pattern is matched as if it were a path (`/api/items/{id}` is matched by
    /// `/api/*` and `/api/items/{id}`, not by `/api/items/42`).
    pub fn matching(&self, path: &str) -> Vec<usize> {
        if self.is_empty() {
            return Vec::new();
        }
        let segments = normalize(path);
        self.matching_segments(&segments).collect()
    }

    /// [`SloSet::matching`] for segments already split by [`normalize`].
    pub fn matching_segments<'a>(
        &'a self,
        segments: &'a [std::borrow::Cow<'a, str>],
    ) -> impl Iterator<Item = usize> + 'a {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.routes.iter().any(|r| r.matches_segments(segments)))
            .map(|(i, _)| i)
    }

    /// Records a response in every SLO whose routes match `path`, each judging it against
    /// its own latency threshold ([`SloTracker::is_good`]). `now` is nanoseconds since
    /// the epoch. The same as [`SloSet::record_on`] shard 0.
    pub fn record(&self, now: Nanos, path: &str, status: u16, latency: Duration) {
        self.record_on(0, now, path, status, latency);
    }

    /// [`SloSet::record`] from the thread that owns shard `shard` (taken modulo the
    /// shard count): the response is counted in the shard's tally of the current
    /// minute, and the tracker's lock is taken only when the shard's minute changes.
    /// Snapshots include every tally, so nothing recorded is ever missing from them.
    pub fn record_on(&self, shard: usize, now: Nanos, path: &str, status: u16, latency: Duration) {
        if self.is_empty() {
            return;
        }
        let segments = normalize(path);
        for i in self.matching_segments(&segments) {
            let entry = &self.entries[i];
            let good = SloTracker::is_good(status, latency, entry.latency);
            entry.tally(shard, now, good);
        }
    }

    /// Records directly into the SLO at `index` (from [`SloSet::matching`]); out of
    /// range is ignored.
    pub fn record_at(&self, index: usize, now: Nanos, good: bool) {
        if let Some(entry) = self.entries.get(index) {
            lock(&entry.tracker).record(now, good);
        }
    }

    /// Every SLO's state at `now`, in file order.
    pub fn snapshots(&self, now: Nanos) -> Vec<SloSnapshot> {
        self.entries
            .iter()
            .map(|e| e.settled().snapshot(now))
            .collect()
    }
}

// === impl Entry ===

impl Entry {
    /// Counts one response in shard `shard`'s tally; a tally of an earlier minute goes
    /// into the tracker first. A clock that stepped back behind the tally's minute
    /// records straight into the tracker.
    fn tally(&self, shard: usize, now: Nanos, good: bool) {
        let minute = now / MINUTE_NS + 1;
        let mut tally = lock(&self.tallies[shard % self.tallies.len()].0);
        if tally.minute != minute {
            if minute < tally.minute {
                drop(tally);
                lock(&self.tracker).record(now, good);
                return;
            }
            self.add(&mut tally);
            tally.minute = minute;
        }
        tally.total += 1;
        tally.good += u64::from(good);
    }

    /// Moves a tally's counts into the tracker. Lock order: a tally, then the tracker.
    fn add(&self, tally: &mut Tally) {
        if tally.total > 0 {
            let at = (tally.minute - 1) * MINUTE_NS;
            lock(&self.tracker).record_counts(at, tally.good, tally.total);
        }
        tally.good = 0;
        tally.total = 0;
    }

    /// The tracker with every shard's tally added.
    fn settled(&self) -> MutexGuard<'_, SloTracker> {
        for tally in self.tallies.iter() {
            self.add(&mut lock(&tally.0));
        }
        lock(&self.tracker)
    }
}

/// Counting never leaves a tracker or a tally half-updated, so a lock poisoned by a panic
/// elsewhere still guards consistent counts.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
