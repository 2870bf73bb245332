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
//!   its path, each behind its own short lock.
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
    tracker: Mutex<SloTracker>,
}

// === impl SloSet ===

impl SloSet {
    /// Trackers for the configured SLOs, in file order, with no traffic yet.
    pub fn new(slos: &[SloConfig]) -> Self {
        SloSet {
            entries: slos
                .iter()
                .map(|c| Entry {
                    routes: c.routes.clone(),
                    tracker: Mutex::new(SloTracker::new(c)),
                })
                .collect(),
        }
    }

    /// The set for a reloaded configuration: an SLO whose name and window are unchanged
    /// keeps its counts (classified under the thresholds of the time they were recorded);
    /// new or changed ones start empty.
    pub fn reconfigured(&self, slos: &[SloConfig]) -> Self {
        let mut next = SloSet::new(slos);
        for (entry, config) in next.entries.iter_mut().zip(slos) {
            let kept = self.entries.iter().find_map(|old| {
                let old = lock(&old.tracker);
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
    /// the epoch.
    pub fn record(&self, now: Nanos, path: &str, status: u16, latency: Duration) {
        if self.is_empty() {
            return;
        }
        self.record_segments(now, &normalize(path), status, latency);
    }

    /// [`SloSet::record`] for segments already split by [`normalize`].
    pub fn record_segments(
        &self,
        now: Nanos,
        segments: &[std::borrow::Cow<'_, str>],
        status: u16,
        latency: Duration,
    ) {
        for i in self.matching_segments(segments) {
            lock(&self.entries[i].tracker).record_response(now, status, latency);
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
            .map(|e| lock(&e.tracker).snapshot(now))
            .collect()
    }
}

/// Counting never leaves a tracker half-updated, so a lock poisoned by a panic elsewhere
/// still guards consistent counts.
fn lock(m: &Mutex<SloTracker>) -> MutexGuard<'_, SloTracker> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
