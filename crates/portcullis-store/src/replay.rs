//! Ids seen recently (webhook replay protection), bounded like the buckets.
//!
//! An entry is a [`StoreKey`] and the instant it expires. [`ReplaySet::remember_at`]
//! inserts a key unless it is present and unexpired: the answer says whether this is
//! the first time within the TTL. When a shard is full, expired entries are dropped
//! first; if none is, the sampled entry closest to expiry is evicted (the one whose
//! loss reopens the shortest replay window). Only deliveries that verified are ever
//! remembered, so filling the set needs the webhook secret.

use crate::StoreKey;
use indexmap::IndexMap;
use std::sync::{Mutex, MutexGuard};

const SHARDS: usize = 16;
/// Entries looked at per eviction.
const SAMPLE: usize = 8;

struct Shard {
    /// Key → expiry (nanoseconds since the Unix epoch).
    map: IndexMap<StoreKey, u64>,
    rng: u64,
}

impl Shard {
    fn next_random(&mut self) -> u64 {
        crate::memory::xorshift64star(&mut self.rng)
    }

    fn make_room(&mut self, now: u64) {
        let before = self.map.len();
        self.map.retain(|_, expires| *expires > now);
        if self.map.len() < before {
            return;
        }
        let len = self.map.len();
        if len == 0 {
            return;
        }
        let mut victim: Option<(usize, u64)> = None;
        for _ in 0..SAMPLE.min(len) {
            let i = (self.next_random() % len as u64) as usize;
            if let Some((_, &expires)) = self.map.get_index(i) {
                if victim.is_none_or(|(_, best)| expires < best) {
                    victim = Some((i, expires));
                }
            }
        }
        if let Some((i, _)) = victim {
            self.map.swap_remove_index(i);
        }
    }
}

/// A bounded set of recently seen keys with per-key expiry.
pub struct ReplaySet {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
}

impl std::fmt::Debug for ReplaySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplaySet")
            .field("per_shard", &self.per_shard)
            .finish_non_exhaustive()
    }
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // Every update is a single insert or remove: a poisoned lock is still consistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ReplaySet {
    /// Holds at most `max_keys` ids (rounded up to a multiple of the shard count).
    pub fn new(max_keys: u64) -> Self {
        let max = usize::try_from(max_keys).unwrap_or(usize::MAX).max(1);
        let shards = if max < SHARDS * 4 { 1 } else { SHARDS };
        let per_shard = max.div_ceil(shards);
        ReplaySet {
            shards: (0..shards)
                .map(|i| {
                    Mutex::new(Shard {
                        map: IndexMap::new(),
                        rng: 0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 7),
                    })
                })
                .collect(),
            per_shard,
        }
    }

    fn shard(&self, key: &StoreKey) -> &Mutex<Shard> {
        let mut b = [0u8; 8];
        b.copy_from_slice(&key.0[..8]);
        &self.shards[(u64::from_le_bytes(b) % self.shards.len() as u64) as usize]
    }

    /// Remembers `key` until `now + ttl_ns`. `true` when it was not already remembered
    /// (absent or expired): the first sighting.
    pub fn remember_at(&self, key: StoreKey, ttl_ns: u64, now: u64) -> bool {
        let mut shard = lock(self.shard(&key));
        let expires = now.saturating_add(ttl_ns.max(1));
        if let Some(e) = shard.map.get_mut(&key) {
            if *e > now {
                return false;
            }
            *e = expires;
            return true;
        }
        if shard.map.len() >= self.per_shard {
            shard.make_room(now);
        }
        shard.map.insert(key, expires);
        true
    }

    /// Forgets `key` (a delivery the upstream failed to take may be retried).
    pub fn forget(&self, key: &StoreKey) {
        lock(self.shard(key)).map.swap_remove(key);
    }

    /// Drops expired entries; returns how many.
    pub fn sweep(&self, now: u64) -> usize {
        let mut dropped = 0;
        for s in self.shards.iter() {
            let mut shard = lock(s);
            let before = shard.map.len();
            shard.map.retain(|_, expires| *expires > now);
            dropped += before - shard.map.len();
        }
        dropped
    }

    /// Ids held (expired ones included until swept or replaced).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_795_425_199_000_000_000;
    const SEC: u64 = 1_000_000_000;

    use crate::test_key as key;

    #[test]
    fn first_sighting_then_replay_until_expiry() {
        let set = ReplaySet::new(100);
        assert!(set.remember_at(key(1), 300 * SEC, T0));
        assert!(!set.remember_at(key(1), 300 * SEC, T0 + 299 * SEC));
        assert!(
            set.remember_at(key(2), 300 * SEC, T0),
            "other keys unaffected"
        );
        assert!(
            set.remember_at(key(1), 300 * SEC, T0 + 300 * SEC),
            "expired: first again"
        );
        assert!(!set.remember_at(key(1), 300 * SEC, T0 + 301 * SEC));
    }

    #[test]
    fn forget_allows_again() {
        let set = ReplaySet::new(100);
        assert!(set.remember_at(key(1), SEC, T0));
        set.forget(&key(1));
        assert!(set.remember_at(key(1), SEC, T0));
    }

    #[test]
    fn bounded_and_prefers_dropping_expired() {
        let set = ReplaySet::new(1000);
        for n in 0..100_000u64 {
            set.remember_at(key(n), SEC, T0 + n);
        }
        assert!(set.len() <= 1024, "bounded: {}", set.len());
        // A long-lived id survives a flood of short-lived ones that expire.
        let set = ReplaySet::new(64);
        assert!(set.remember_at(key(u64::MAX), 3600 * SEC, T0));
        for n in 0..10_000u64 {
            set.remember_at(key(n), 1, T0 + n);
        }
        assert!(!set.remember_at(key(u64::MAX), 3600 * SEC, T0 + 20_000));
        assert!(set.sweep(T0 + 20_000) > 0);
    }
}
