//! GCRA (a token bucket of `limit + burst` units refilled at `limit` per `window`).
//!
//! The emission interval `T = ⌈window / limit⌉` is rounded up so the refill is never
//! faster than the quota: the bound `limit + burst + ⌊limit·t/window⌋` holds exactly.

use super::{dur, BucketState, Decision, Nanos, Quota};

pub(super) fn decide(
    quota: &Quota,
    state: &BucketState,
    now: Nanos,
    cost: u64,
) -> (Decision, Option<BucketState>) {
    let t = u128::from(quota.window_ns().div_ceil(quota.limit));
    let capacity = u128::from(quota.capacity());
    let now128 = u128::from(now);
    let tat = match state {
        BucketState::Gcra { tat } => u128::from(*tat).max(now128),
        _ => now128,
    };
    let horizon = now128 + capacity * t; // the latest TAT the bucket tolerates
    let new_tat = tat + u128::from(cost) * t;
    if new_tat <= horizon {
        let available = (horizon - new_tat) / t;
        let window_after = if available >= capacity {
            0
        } else {
            (available + 1) * t - (horizon - new_tat)
        };
        let decision = Decision {
            allowed: true,
            remaining: available as u64,
            reset_after: dur(new_tat - now128),
            retry_after: None,
            window_after: dur(window_after),
            never_fits: false,
        };
        let next = (cost > 0).then(|| BucketState::Gcra {
            tat: u64::try_from(new_tat).unwrap_or(u64::MAX),
        });
        return (decision, next);
    }
    let never_fits = u128::from(cost) > capacity;
    let wait = if never_fits {
        tat - now128 + capacity * t
    } else {
        new_tat - horizon
    };
    let decision = Decision {
        allowed: false,
        remaining: (horizon - tat.min(horizon)).checked_div(t).unwrap_or(0) as u64,
        reset_after: dur(tat - now128),
        retry_after: Some(dur(wait)),
        window_after: dur(wait),
        never_fits,
    };
    (decision, None)
}
