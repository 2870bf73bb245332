//! Sliding window counter: the current aligned window's count plus the previous one's,
//! weighted by the share of it still inside the sliding window.
//!
//! All arithmetic is in integers scaled by the window length, so the comparison
//! `previous·(W − e) + (current + cost)·W ≤ capacity·W` is exact.

use super::{dur, BucketState, Decision, Nanos, Quota};

pub(super) fn decide(
    quota: &Quota,
    state: &BucketState,
    now: Nanos,
    cost: u64,
) -> (Decision, Option<BucketState>) {
    let w = u128::from(quota.window_ns());
    let now128 = u128::from(now);
    let start = now128 - now128 % w;
    let elapsed = now128 - start;
    let left = w - elapsed; // time until the aligned window ends
    let (current, previous) = match state {
        BucketState::Sliding {
            window_start,
            current,
            previous,
        } => {
            let ws = u128::from(*window_start);
            if ws == start {
                (u128::from(*current), u128::from(*previous))
            } else if ws + w == start {
                (0, u128::from(*current))
            } else {
                (0, 0)
            }
        }
        _ => (0, 0),
    };
    let capacity = u128::from(quota.capacity());
    let cost128 = u128::from(cost);
    let budget = capacity * w;
    let used = previous * left + (current + cost128) * w;
    if used <= budget {
        let current = current + cost128;
        let reset = if current > 0 {
            left + w
        } else if previous > 0 {
            left
        } else {
            0
        };
        let decision = Decision {
            allowed: true,
            remaining: ((budget - used) / w) as u64,
            reset_after: dur(reset),
            retry_after: None,
            window_after: dur(left),
            never_fits: false,
        };
        let next = (cost > 0).then(|| BucketState::Sliding {
            window_start: u64::try_from(start).unwrap_or(u64::MAX),
            current: current as u64,
            previous: previous as u64,
        });
        return (decision, next);
    }
    let never_fits = cost128 > capacity;
    let wait = if never_fits {
        left + w
    } else {
        wait_until_fits(w, elapsed, current, previous, capacity, cost128)
    };
    let used_now = previous * left + current * w;
    let decision = Decision {
        allowed: false,
        remaining: (budget.saturating_sub(used_now) / w) as u64,
        reset_after: dur(if current > 0 { left + w } else { left }),
        retry_after: Some(dur(wait)),
        window_after: dur(wait),
        never_fits,
    };
    (decision, None)
}

/// The least `d` such that the request fits at `now + d` with no other consumption.
fn wait_until_fits(
    w: u128,
    elapsed: u128,
    current: u128,
    previous: u128,
    capacity: u128,
    cost: u128,
) -> u128 {
    let left = w - elapsed;
    // Still in this window: the previous window's weight shrinks as time passes.
    if current + cost <= capacity && previous > 0 {
        let spare = (capacity - current - cost) * w;
        // previous·(left − d) ≤ spare  ⇔  d ≥ left − spare/previous
        let need = previous * left - spare.min(previous * left);
        let d = need.div_ceil(previous);
        if d < left {
            return d;
        }
    }
    // In the next window, `current` becomes the previous count, weighted by (W − e').
    // current·(W − e') + cost·W ≤ capacity·W  ⇔  e' ≥ W − (capacity − cost)·W/current
    let e_next = if current == 0 {
        0
    } else {
        let over = (current * w).saturating_sub((capacity - cost) * w);
        over.div_ceil(current)
    };
    left + e_next
}
