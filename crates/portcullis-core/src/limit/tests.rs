//! The bounds of SPEC "Keys and limits, exactly", checked over arbitrary schedules.

use super::*;
use proptest::prelude::*;

const ALGORITHMS: [Algorithm; 3] = [
    Algorithm::Gcra,
    Algorithm::SlidingWindow,
    Algorithm::FixedWindow,
];
const MS: u64 = 1_000_000;
const EPOCH: Nanos = 1_795_425_199_123_456_789; // an arbitrary, unaligned "now"

fn quota(limit: u64, burst: u64, window_ms: u64) -> Quota {
    Quota::new(limit, burst, Duration::from_millis(window_ms)).unwrap()
}

/// Runs a schedule of (gap, cost) requests; returns the admitted (time, cost) pairs.
fn run(alg: Algorithm, q: &Quota, schedule: &[(u64, u64)]) -> Vec<(Nanos, u64)> {
    let mut state = BucketState::Fresh;
    let mut now = EPOCH;
    let mut admitted = Vec::new();
    for &(gap, cost) in schedule {
        now += gap;
        let (d, next) = decide(alg, q, &state, now, cost);
        assert_eq!(
            d.allowed,
            next.is_some(),
            "state changes exactly when admitted"
        );
        if let Some(next) = next {
            state = next;
            admitted.push((now, cost));
        }
    }
    admitted
}

fn arb_quota() -> impl Strategy<Value = Quota> {
    (1u64..20, 0u64..6, 1_000_000u64..5_000_000_000)
        .prop_map(|(l, b, w)| Quota::new(l, b, Duration::from_nanos(w)).unwrap())
}

/// A quota and a schedule of (gap, cost) requests: gaps often 0 (bursts) or exactly
/// the naive emission interval `window / limit` (where rounding errors would show).
fn arb_case() -> impl Strategy<Value = (Quota, Vec<(u64, u64)>)> {
    arb_quota().prop_flat_map(|q| {
        let naive = q.window_ns() / q.limit;
        let gap = prop_oneof![
            Just(0u64),
            Just(naive),
            Just(naive + 1),
            0u64..3_000 * MS,
            0u64..50 * MS
        ];
        (Just(q), prop::collection::vec((gap, 1u64..=3), 1..150))
    })
}

#[test]
fn fresh_key_admits_limit_plus_burst_at_once() {
    for alg in ALGORITHMS {
        let q = quota(10, 5, 60_000);
        let schedule = vec![(0, 1); 20];
        let admitted = run(alg, &q, &schedule);
        assert_eq!(admitted.len(), 15, "{alg:?}");
    }
}

#[test]
fn n_plus_5_requests_meet_exactly_5_rejections() {
    for alg in ALGORITHMS {
        let q = quota(10, 0, 60_000);
        let admitted = run(alg, &q, &[(0, 1); 15]);
        assert_eq!(15 - admitted.len(), 5, "{alg:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn gcra_bound((q, schedule) in arb_case()) {
        let admitted = run(Algorithm::Gcra, &q, &schedule);
        let w = u128::from(q.window_ns());
        for i in 0..admitted.len() {
            let mut sum = 0u128;
            for &(t, cost) in &admitted[i..] {
                sum += u128::from(cost);
                let span = u128::from(t - admitted[i].0);
                let bound = u128::from(q.capacity()) + u128::from(q.limit) * span / w;
                prop_assert!(sum <= bound, "{} units in {} ns > {}", sum, span, bound);
            }
        }
    }

    #[test]
    fn window_bounds((q, schedule) in arb_case(), sliding in any::<bool>()) {
        let alg = if sliding { Algorithm::SlidingWindow } else { Algorithm::FixedWindow };
        let admitted = run(alg, &q, &schedule);
        let w = q.window_ns();
        let cap = q.capacity();
        let mut per_window = std::collections::HashMap::<u64, u64>::new();
        for &(t, cost) in &admitted {
            *per_window.entry(t / w).or_default() += cost;
        }
        for (window, sum) in per_window {
            prop_assert!(sum <= cap, "{:?}: {} units in aligned window {}", alg, sum, window);
        }
        if sliding {
            for i in 0..admitted.len() {
                let start = admitted[i].0;
                let sum: u64 = admitted[i..].iter().take_while(|(t, _)| *t < start + w).map(|(_, c)| c).sum();
                prop_assert!(sum <= 2 * cap, "{} units within one window length", sum);
            }
        }
    }

    /// After a denial, the same request at now + retry_after is admitted, and not a
    /// nanosecond earlier (the wait is exact).
    #[test]
    fn retry_after_is_exact((q, schedule) in arb_case(), alg_i in 0usize..3, cost in 1u64..=3) {
        let alg = ALGORITHMS[alg_i];
        let mut state = BucketState::Fresh;
        let mut now = EPOCH;
        for &(gap, c) in &schedule {
            now += gap;
            if let (_, Some(next)) = decide(alg, &q, &state, now, c) {
                state = next;
            }
        }
        let (d, next) = decide(alg, &q, &state, now, cost);
        if d.allowed {
            prop_assert!(next.is_some());
            return Ok(());
        }
        let wait = ns(d.retry_after.unwrap());
        prop_assert!(d.window_after == d.retry_after.unwrap());
        if d.never_fits {
            prop_assert!(cost > q.capacity());
            return Ok(());
        }
        prop_assert!(wait > 0);
        let (later, _) = decide(alg, &q, &state, now + wait, cost);
        prop_assert!(later.allowed, "{:?}: denied again after waiting {} ns", alg, wait);
        let (earlier, _) = decide(alg, &q, &state, now + wait - 1, cost);
        prop_assert!(!earlier.allowed, "{:?}: allowed 1 ns before retry_after {}", alg, wait);
        prop_assert!(retry_after_secs(d.retry_after.unwrap()) * 1_000_000_000 >= wait);
    }

    /// `remaining` is exact: that many unit requests fit right now, and no more.
    #[test]
    fn remaining_is_exact((q, schedule) in arb_case(), alg_i in 0usize..3) {
        let alg = ALGORITHMS[alg_i];
        let mut state = BucketState::Fresh;
        let mut now = EPOCH;
        let mut last = None;
        for &(gap, c) in &schedule {
            now += gap;
            let (d, next) = decide(alg, &q, &state, now, c);
            prop_assert!(d.remaining <= q.capacity());
            if let Some(next) = next {
                state = next;
                last = Some(d);
            }
        }
        if let Some(d) = last {
            let (peek, _) = decide(alg, &q, &state, now, 0);
            prop_assert!(peek.remaining >= d.remaining, "time only refills");
            let r = peek.remaining;
            for i in 0..r {
                let (step, next) = decide(alg, &q, &state, now, 1);
                prop_assert!(step.allowed, "{:?}: unit {} of {} remaining denied", alg, i + 1, r);
                state = next.unwrap();
            }
            let (over, _) = decide(alg, &q, &state, now, 1);
            prop_assert!(!over.allowed, "{:?}: more than remaining={} admitted", alg, r);
        }
    }

    /// Once `reset_after` has passed with no traffic, the bucket is full.
    #[test]
    fn reset_after_means_full((q, schedule) in arb_case(), alg_i in 0usize..3) {
        let alg = ALGORITHMS[alg_i];
        let mut state = BucketState::Fresh;
        let mut now = EPOCH;
        for &(gap, c) in &schedule {
            now += gap;
            if let (_, Some(next)) = decide(alg, &q, &state, now, c) {
                state = next;
            }
        }
        let full = full_at(alg, &q, &state, now);
        let (d, _) = decide(alg, &q, &state, full, 0);
        prop_assert_eq!(d.remaining, q.capacity(), "{:?}", alg);
    }
}

#[test]
fn gcra_window_after_is_the_next_refilled_unit() {
    let q = quota(60, 0, 60_000); // one unit per second
    let (d, s) = decide(Algorithm::Gcra, &q, &BucketState::Fresh, EPOCH, 1);
    assert!(d.allowed);
    assert_eq!(d.remaining, 59);
    assert_eq!(d.window_after, Duration::from_secs(1));
    let (full, _) = decide(Algorithm::Gcra, &q, &BucketState::Fresh, EPOCH, 0);
    assert_eq!(full.window_after, Duration::ZERO, "a full bucket has t = 0");
    let (half, _) = decide(Algorithm::Gcra, &q, &s.unwrap(), EPOCH + 400 * MS, 0);
    assert_eq!(half.window_after, Duration::from_millis(600));
}

#[test]
fn cost_beyond_capacity_never_fits() {
    for alg in ALGORITHMS {
        let q = quota(3, 1, 1000);
        let (d, next) = decide(alg, &q, &BucketState::Fresh, EPOCH, 5);
        assert!(!d.allowed && d.never_fits && next.is_none(), "{alg:?}");
    }
}

#[test]
fn retry_after_rounds_up_to_whole_seconds() {
    assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
    assert_eq!(retry_after_secs(Duration::ZERO), 1);
    assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
    assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
}
