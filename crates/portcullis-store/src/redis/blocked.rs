//! Keys Redis denied, remembered until the instant they could be admitted.

use crate::{Check, Decided, StoreKey};
use portcullis_core::limit::Decision;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(super) struct BlockedKeys {
    max: usize,
    /// The latest instant any entry blocks until, in nanoseconds since `base`. Every
    /// Redis decision asks `answer` first, so the common case (nobody blocked any more)
    /// is one atomic load, not a lock both cores contend for.
    latest: AtomicU64,
    base: Instant,
    map: Mutex<HashMap<StoreKey, (Instant, Decision)>>,
}

impl BlockedKeys {
    pub(super) fn new(max: usize) -> Self {
        BlockedKeys {
            max,
            latest: AtomicU64::new(0),
            base: Instant::now(),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// A denial without calling Redis, when one of the request's keys is still blocked.
    pub(super) fn answer(&self, checks: &[Check]) -> Option<Decided> {
        let now = Instant::now();
        if self.since_base(now) >= self.latest.load(Ordering::Acquire) {
            return None;
        }
        let map = self.map.lock().ok()?;
        let blocked = checks
            .iter()
            .any(|c| c.cost > 0 && map.get(&c.key).is_some_and(|(until, _)| *until > now));
        if !blocked {
            return None;
        }
        let decisions = checks
            .iter()
            .map(|c| match map.get(&c.key) {
                Some((until, last)) if *until > now => {
                    let wait = *until - now;
                    Decision {
                        allowed: false,
                        remaining: 0,
                        reset_after: last.reset_after.saturating_sub(Duration::ZERO).max(wait),
                        retry_after: Some(wait),
                        window_after: wait,
                        never_fits: false,
                    }
                }
                // Not blocked itself: its state is unknown here; report it as it was
                // last seen (or full), without taking anything.
                _ => Decision {
                    allowed: true,
                    remaining: c.quota.capacity(),
                    reset_after: Duration::ZERO,
                    retry_after: None,
                    window_after: Duration::ZERO,
                    never_fits: false,
                },
            })
            .collect();
        Some(Decided {
            at: crate::clock::Clock::now(&crate::clock::SystemClock),
            decisions,
        })
    }

    /// Remembers the keys a Redis decision denied, until their retry instant.
    pub(super) fn remember(&self, checks: &[Check], decided: &Decided) {
        let denied: Vec<(StoreKey, Decision)> = checks
            .iter()
            .zip(&decided.decisions)
            .filter(|(_, d)| !d.allowed && !d.never_fits)
            .map(|(c, d)| (c.key, *d))
            .collect();
        if denied.is_empty() {
            return;
        }
        let Ok(mut map) = self.map.lock() else { return };
        let now = Instant::now();
        if map.len() >= self.max {
            map.retain(|_, (until, _)| *until > now);
            if map.len() >= self.max {
                map.clear();
            }
        }
        for (key, d) in denied {
            if let Some(wait) = d.retry_after {
                map.insert(key, (now + wait, d));
                self.latest
                    .fetch_max(self.since_base(now + wait), Ordering::AcqRel);
            }
        }
    }

    fn since_base(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    pub(super) fn forget(&self, key: &StoreKey) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(key);
        }
    }
}
