//! Fixed window: one counter per window aligned to multiples of `window` since the epoch.

use super::{dur, BucketState, Decision, Nanos, Quota};

pub(super) fn decide(
    quota: &Quota,
    state: &BucketState,
    now: Nanos,
    cost: u64,
) -> (Decision, Option<BucketState>) {
    let w = quota.window_ns();
    let start = now - now % w;
    let until_end = dur(u128::from(start) + u128::from(w) - u128::from(now));
    let count = match state {
        BucketState::Fixed {
            window_start,
            count,
        } if *window_start == start => *count,
        _ => 0,
    };
    let capacity = quota.capacity();
    let after = count.saturating_add(cost);
    if after <= capacity {
        let decision = Decision {
            allowed: true,
            remaining: capacity - after,
            reset_after: if after == 0 { dur(0) } else { until_end },
            retry_after: None,
            window_after: until_end,
            never_fits: false,
        };
        let next = (cost > 0).then_some(BucketState::Fixed {
            window_start: start,
            count: after,
        });
        return (decision, next);
    }
    let never_fits = cost > capacity;
    let decision = Decision {
        allowed: false,
        remaining: capacity.saturating_sub(count),
        reset_after: until_end,
        retry_after: Some(until_end),
        window_after: until_end,
        never_fits,
    };
    (decision, None)
}
