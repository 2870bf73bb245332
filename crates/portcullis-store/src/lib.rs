//! Where rate-limit buckets live.
//!
//! A [`Store`] decides a whole request atomically: every policy of the request is
//! checked, and units are taken from all of them only if all allow (a request denied
//! by one policy takes nothing from the others). The arithmetic is
//! [`portcullis_core::limit::decide`]; stores only keep state and supply the clock.
//!
//! - [`memory::MemoryStore`]: embedded, sharded, bounded by `max_keys`.
//! - `redis::RedisStore` (feature `redis`): shared by every gateway instance.

pub mod clock;
pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;
pub mod replay;

use portcullis_core::limit::{Algorithm, Decision, Quota};
use std::future::Future;
use std::time::Duration;

/// What a store is told about a bucket: a hash of the policy name and key (never the
/// key itself), and the rules to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    /// The bucket's identity.
    pub key: StoreKey,
    /// Its algorithm.
    pub algorithm: Algorithm,
    /// Its quota (per-key overrides already applied).
    pub quota: Quota,
    /// Units this request takes (0: only look).
    pub cost: u64,
}

/// 128 bits of SHA-256 over the policy name and the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreKey(pub [u8; 16]);

impl StoreKey {
    /// Lower-case hex, as shown by `/admin/explain` and used in Redis key names.
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(32);
        self.push_hex(&mut out);
        out
    }

    /// [`StoreKey::to_hex`] appended to `out` (every Redis decision names its keys: a
    /// `format!` per byte was 32 allocations a decision).
    pub fn push_hex(&self, out: &mut String) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for b in self.0 {
            out.push(char::from(DIGITS[usize::from(b >> 4)]));
            out.push(char::from(DIGITS[usize::from(b & 0xf)]));
        }
    }
}

/// The decisions of one request, and the store-clock instant they were made at (what
/// `X-RateLimit-Reset` is computed from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// Nanoseconds since the Unix epoch, on the store's clock.
    pub at: u64,
    /// One decision per check, in order.
    pub decisions: Decisions,
}

/// One decision per check: inline for a request with one policy (most of them), so
/// deciding it allocates nothing.
pub type Decisions = smallvec::SmallVec<[Decision; 1]>;

/// Why a store call failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The store cannot be reached (connection refused, reset).
    Unavailable(String),
    /// The store did not answer within the configured timeout.
    Timeout,
    /// The store answered something unexpected (a script error): retrying will not help.
    Protocol(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Unavailable(why) => write!(f, "store unavailable: {why}"),
            StoreError::Timeout => f.write_str("store call timed out"),
            StoreError::Protocol(why) => write!(f, "store protocol error: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// The contract every store keeps.
pub trait Store: Send + Sync + 'static {
    /// Decides all `checks` of one request at one instant of the store's clock. If all
    /// allow, each bucket gives its `cost`; otherwise nothing is taken, denied checks
    /// carry their wait, and the others report their state as it is (cost 0).
    fn decide(&self, checks: &[Check]) -> impl Future<Output = Result<Decided, StoreError>> + Send;

    /// [`Store::decide`] without waiting, for a store that decides in memory: `None`
    /// when deciding needs I/O (the caller then awaits `decide`). A store answers
    /// either always or never. Lets a layer decide inside `call`, with no future to
    /// allocate for the decision.
    fn decide_now(&self, _checks: &[Check]) -> Option<Result<Decided, StoreError>> {
        None
    }

    /// Whether [`Store::decide_now`] answers (so a caller builds its checks for it only
    /// then).
    fn decides_now(&self) -> bool {
        false
    }

    /// Forgets a bucket (it is full again).
    fn reset(&self, key: StoreKey) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The store's current time, in nanoseconds since the Unix epoch.
    fn now(&self) -> u64;

    /// How many buckets the store holds, when it knows (`None` for shared stores).
    fn key_count(&self) -> Option<u64>;

    /// Remembers `key` for `ttl` (webhook replay protection): `Ok(true)` the first time
    /// within the TTL, `Ok(false)` when it is already remembered. Atomic across every
    /// user of the store (Redis: `SET NX PX`), so two instances racing on one id see
    /// one `true`.
    fn remember(
        &self,
        key: StoreKey,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Forgets a remembered key, so the same id is accepted again.
    fn forget(&self, key: StoreKey) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Keys spread like real hashes (both halves vary), for the store's own tests.
#[cfg(test)]
pub(crate) fn test_key(n: u64) -> StoreKey {
    let a = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let b = n.wrapping_mul(0xC2B2_AE3D_27D4_EB4F) ^ 0x1234;
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&a.to_le_bytes());
    k[8..].copy_from_slice(&b.to_le_bytes());
    StoreKey(k)
}
