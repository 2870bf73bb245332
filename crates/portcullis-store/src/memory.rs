//! The embedded store: sharded maps behind short critical sections, bounded by
//! `max_keys`.
//!
//! Bounded memory without handing limited clients a fresh bucket: when a shard is
//! full, a few entries are sampled and the one whose loss matters least is evicted —
//! first a bucket that has refilled (it is equivalent to no entry at all), then the
//! least recently used bucket that still has room, and a bucket that is currently
//! limiting its client only when every sampled entry is limited (then the one closest
//! to refilled). A client cycling through millions of addresses therefore evicts its
//! own throw-away buckets, never the bucket of a client being limited; governor's keyed
//! limiter and Envoy's local limiter have no such rule.

use crate::clock::Clock;
use crate::replay::ReplaySet;
use crate::{Check, Decided, Decisions, Store, StoreError, StoreKey};
use indexmap::IndexMap;
use portcullis_core::limit::{decide, full_at, Algorithm, BucketState, Decision, Quota};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

const SHARDS: usize = 64;
/// Entries looked at per eviction.
const SAMPLE: usize = 8;

/// The store keys are already uniform hashes: use 8 of their bytes as the map hash.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(buf);
        }
    }
}

type Map = IndexMap<StoreKey, Entry, BuildHasherDefault<KeyHasher>>;

#[derive(Debug, Clone, Copy)]
struct Entry {
    state: BucketState,
    algorithm: Algorithm,
    quota: Quota,
    last_seen: u64,
    full_at: u64,
}

/// xorshift64*: cheap, and good enough to pick eviction samples.
pub(crate) fn xorshift64star(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

struct Shard {
    map: Map,
    rng: u64,
}

impl Shard {
    fn next_random(&mut self) -> u64 {
        xorshift64star(&mut self.rng)
    }

    /// Makes room for one more entry.
    fn evict_one(&mut self, now: u64) {
        let len = self.map.len();
        if len == 0 {
            return;
        }
        let mut victim: Option<(usize, (u8, u64))> = None;
        for _ in 0..SAMPLE.min(len) {
            let i = (self.next_random() % len as u64) as usize;
            let Some((_, e)) = self.map.get_index(i) else {
                continue;
            };
            let rank = if e.full_at <= now {
                (0, e.last_seen)
            } else if decide(e.algorithm, &e.quota, &e.state, now, 0).0.remaining > 0 {
                (1, e.last_seen)
            } else {
                (2, e.full_at)
            };
            if victim.is_none_or(|(_, best)| rank < best) {
                victim = Some((i, rank));
            }
        }
        if let Some((i, _)) = victim {
            self.map.swap_remove_index(i);
        }
    }
}

/// The embedded store.
pub struct MemoryStore<C: Clock> {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    clock: C,
    /// Webhook ids seen recently, bounded by `max_keys` too (separately).
    replay: ReplaySet,
}

impl<C: Clock> std::fmt::Debug for MemoryStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("per_shard", &self.per_shard)
            .finish_non_exhaustive()
    }
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic while holding the lock cannot leave a shard inconsistent (every update
    // is a single insert), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<C: Clock> MemoryStore<C> {
    /// Holds at most `max_keys` buckets (rounded up to a multiple of the shard count).
    pub fn new(max_keys: u64, clock: C) -> Self {
        let max = usize::try_from(max_keys).unwrap_or(usize::MAX).max(1);
        let shards = if max < SHARDS * 4 { 1 } else { SHARDS };
        let per_shard = max.div_ceil(shards);
        let shards = (0..shards)
            .map(|i| {
                Mutex::new(Shard {
                    map: Map::default(),
                    rng: 0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1),
                })
            })
            .collect();
        MemoryStore {
            shards,
            per_shard,
            clock,
            replay: ReplaySet::new(max_keys),
        }
    }

    fn shard_of(&self, key: &StoreKey) -> usize {
        let mut b = [0u8; 8];
        b.copy_from_slice(&key.0[8..16]);
        (u64::from_le_bytes(b) % self.shards.len() as u64) as usize
    }

    /// Decides at an explicit instant (tests drive time by hand through this).
    pub fn decide_at(&self, checks: &[Check], now: u64) -> Decisions {
        if let [check] = checks {
            let mut shard = lock(&self.shards[self.shard_of(&check.key)]);
            let (d, next) = self.step(&shard, check, now);
            if let Some(next) = next {
                self.store(&mut shard, check, next, now);
            }
            return smallvec::smallvec![d];
        }
        // Several policies: lock their shards in index order (no deadlock), decide all,
        // then commit all or nothing.
        let mut ids: Vec<usize> = checks.iter().map(|c| self.shard_of(&c.key)).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut guards: Vec<(usize, MutexGuard<'_, Shard>)> =
            ids.iter().map(|&i| (i, lock(&self.shards[i]))).collect();
        let mut decisions = Decisions::with_capacity(checks.len());
        let mut updates = Vec::with_capacity(checks.len());
        for check in checks {
            let shard = self.guard(&mut guards, check);
            // A key listed twice sees its own pending update.
            let pending = updates
                .iter()
                .rev()
                .find(|(c, _): &&(Check, BucketState)| c.key == check.key)
                .map(|(_, s)| *s);
            let (d, next) = match pending {
                Some(state) => decide(check.algorithm, &check.quota, &state, now, check.cost),
                None => self.step(shard, check, now),
            };
            decisions.push(d);
            if let Some(next) = next {
                updates.push((*check, next));
            }
        }
        if decisions.iter().all(|d| d.allowed) {
            for (check, next) in updates {
                let shard = self.guard(&mut guards, &check);
                self.store(shard, &check, next, now);
            }
        } else {
            for (check, d) in checks.iter().zip(decisions.iter_mut()) {
                if d.allowed {
                    let shard = self.guard(&mut guards, check);
                    let look = Check { cost: 0, ..*check };
                    *d = self.step(shard, &look, now).0;
                }
            }
        }
        decisions
    }

    fn guard<'g, 'a>(
        &self,
        guards: &'g mut [(usize, MutexGuard<'a, Shard>)],
        check: &Check,
    ) -> &'g mut Shard {
        let id = self.shard_of(&check.key);
        let pos = guards.partition_point(|(i, _)| *i < id);
        &mut guards[pos].1
    }

    fn step(&self, shard: &Shard, check: &Check, now: u64) -> (Decision, Option<BucketState>) {
        let state = match shard.map.get(&check.key) {
            // A policy whose algorithm changed (reload) starts its buckets afresh.
            Some(e) if e.algorithm == check.algorithm => e.state,
            _ => BucketState::Fresh,
        };
        decide(check.algorithm, &check.quota, &state, now, check.cost)
    }

    fn store(&self, shard: &mut Shard, check: &Check, state: BucketState, now: u64) {
        let entry = Entry {
            state,
            algorithm: check.algorithm,
            quota: check.quota,
            last_seen: now,
            full_at: full_at(check.algorithm, &check.quota, &state, now),
        };
        if let Some(e) = shard.map.get_mut(&check.key) {
            *e = entry;
            return;
        }
        if shard.map.len() >= self.per_shard {
            shard.evict_one(now);
        }
        shard.map.insert(check.key, entry);
    }

    /// Remembers a webhook id at an explicit instant (see [`Store::remember`]).
    pub fn remember_at(&self, key: StoreKey, ttl: std::time::Duration, now: u64) -> bool {
        let ttl = u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX);
        self.replay.remember_at(key, ttl, now)
    }

    /// Forgets a remembered webhook id.
    pub fn forget_id(&self, key: &StoreKey) {
        self.replay.forget(key);
    }

    /// Webhook ids held.
    pub fn replay_count(&self) -> usize {
        self.replay.len()
    }

    /// Drops every bucket that has refilled (idle keys) and every expired webhook id;
    /// returns how many.
    pub fn sweep(&self) -> usize {
        let now = self.clock.now();
        let mut dropped = self.replay.sweep(now);
        for s in self.shards.iter() {
            let mut shard = lock(s);
            let before = shard.map.len();
            shard.map.retain(|_, e| e.full_at > now);
            dropped += before - shard.map.len();
        }
        dropped
    }

    /// Buckets held.
    pub fn key_count(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }

    /// The most buckets this store will hold.
    pub fn capacity(&self) -> usize {
        self.per_shard * self.shards.len()
    }
}

impl<C: Clock> Store for Arc<MemoryStore<C>> {
    async fn decide(&self, checks: &[Check]) -> Result<Decided, StoreError> {
        let at = self.clock.now();
        Ok(Decided {
            at,
            decisions: self.decide_at(checks, at),
        })
    }

    fn decides_now(&self) -> bool {
        true
    }

    fn decide_now(&self, checks: &[Check]) -> Option<Result<Decided, StoreError>> {
        let at = self.clock.now();
        Some(Ok(Decided {
            at,
            decisions: self.decide_at(checks, at),
        }))
    }

    async fn reset(&self, key: StoreKey) -> Result<(), StoreError> {
        lock(&self.shards[self.shard_of(&key)])
            .map
            .swap_remove(&key);
        Ok(())
    }

    fn now(&self) -> u64 {
        self.clock.now()
    }

    fn key_count(&self) -> Option<u64> {
        Some(MemoryStore::key_count(self) as u64)
    }

    async fn remember(&self, key: StoreKey, ttl: std::time::Duration) -> Result<bool, StoreError> {
        Ok(self.remember_at(key, ttl, self.clock.now()))
    }

    async fn forget(&self, key: StoreKey) -> Result<(), StoreError> {
        self.forget_id(&key);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
