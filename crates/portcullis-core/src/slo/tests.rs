//! SLO arithmetic on an injected clock: every `now` below is a plain number.

use super::*;
use crate::config::DurationValue;

/// 2023-11-14T00:00:00Z: a whole number of days (so of hours and minutes) since the epoch.
const BASE_S: u64 = 19_675 * 86_400;
const SEC: u64 = 1_000_000_000;
const MIN: u64 = 60;
const HOUR: u64 = 3_600;
const DAY: u64 = 86_400;

/// `secs` seconds after [`BASE_S`], in nanoseconds since the epoch.
fn at(secs: u64) -> Nanos {
    (BASE_S + secs) * SEC
}

fn config(
    name: &str,
    routes: &[&str],
    objective: f64,
    window_s: u64,
    latency_ms: Option<u64>,
) -> SloConfig {
    SloConfig {
        name: name.to_owned(),
        routes: routes
            .iter()
            .map(|r| RoutePattern::parse(r).unwrap())
            .collect(),
        objective,
        latency: latency_ms.map(|ms| DurationValue(Duration::from_millis(ms))),
        window: DurationValue(Duration::from_secs(window_s)),
    }
}

fn tracker(objective: f64, window_s: u64) -> SloTracker {
    SloTracker::new(&config("t", &["/*"], objective, window_s, None))
}

/// Records `total` requests at `t`, the first `bad` of them bad.
fn record(t: &mut SloTracker, now: Nanos, total: u64, bad: u64) {
    for i in 0..total {
        t.record(now, i >= bad);
    }
}

#[track_caller]
fn close(actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() < 1e-9,
        "expected {expected}, got {actual}"
    );
}

#[track_caller]
fn rates(snap: &SloSnapshot, expected: [f64; 7]) {
    for ((label, actual), expected) in snap.burn_rates.iter().zip(expected) {
        assert!(
            (actual - expected).abs() < 1e-9,
            "burn rate over {label}: expected {expected}, got {actual}"
        );
    }
}

#[test]
fn good_is_anything_but_5xx_within_the_threshold() {
    let ms = Duration::from_millis;
    let t = Some(ms(100));
    assert!(SloTracker::is_good(200, ms(5), None));
    assert!(
        SloTracker::is_good(200, ms(100), t),
        "at the threshold is good"
    );
    assert!(
        !SloTracker::is_good(200, ms(101), t),
        "slower than it is not"
    );
    assert!(SloTracker::is_good(200, Duration::from_secs(3_600), None));
    assert!(
        SloTracker::is_good(429, ms(1), t),
        "429: the service did its job"
    );
    assert!(SloTracker::is_good(404, ms(1), t));
    assert!(SloTracker::is_good(499, ms(1), t));
    for status in [500, 502, 503, 504, 599] {
        assert!(!SloTracker::is_good(status, ms(1), t), "{status}");
        assert!(!SloTracker::is_good(status, ms(1), None), "{status}");
    }
    assert!(SloTracker::is_good(301, ms(1), t));
}

#[test]
fn burn_rates_and_budget_equal_hand_computed_values() {
    // objective 99 %: the budget allows 1 − 99/100 = 0.01 of requests to be bad.
    let mut t = tracker(99.0, 30 * DAY);
    let now = at(3 * HOUR); // minute 180 of the test
    record(&mut t, at(178 * MIN + 30), 200, 4); //  1.5 min ago: in every window
    record(&mut t, at(160 * MIN), 100, 10); //     20 min ago: 30m and up
    record(&mut t, at(100 * MIN), 300, 0); //      80 min ago: 2h and up
    record(&mut t, at(0), 400, 40); //            180 min ago: 6h and up
    let snap = t.snapshot(now);
    // 5m  (minutes 176..=180):  4 bad / 200        = 0.02    → 0.02 / 0.01  = 2
    // 30m (minutes 151..=180): 14 bad / 300        = 0.04667 → 4.6667
    // 1h  (minutes 121..=180): the same 14 / 300             → 4.6667
    // 2h  (minutes  61..=180): 14 bad / 600        = 0.02333 → 2.3333
    // 6h, 1d, 3d:              54 bad / 1000       = 0.054   → 5.4
    rates(
        &snap,
        [
            2.0,
            14.0 / 300.0 / 0.01,
            14.0 / 300.0 / 0.01,
            14.0 / 600.0 / 0.01,
            5.4,
            5.4,
            5.4,
        ],
    );
    close(snap.burn_rate("30m").unwrap(), 4.666_666_666_666_667);
    // Budget over 30d: 54 bad of 1000 = 0.054 of requests, 5.4 times the 0.01 allowed:
    // 1 − 5.4 = −4.4 (overspent 4.4 times).
    assert_eq!((snap.good, snap.total), (946, 1000));
    close(snap.error_budget_remaining, -4.4);
    close(snap.objective, 99.0);
    assert_eq!(snap.window_seconds, 30 * DAY);
}

#[test]
fn budget_half_spent() {
    // objective 99.9 %: 0.001 allowed. 1000 requests a day for 10 days, 5 of them bad:
    // 5 / 10 000 = 0.0005 bad, half of 0.001: budget remaining 1 − 0.5 = 0.5.
    let mut t = tracker(99.9, 30 * DAY);
    for day in 0..10 {
        record(&mut t, at(day * DAY + 12 * HOUR), 1000, u64::from(day < 5));
    }
    let snap = t.snapshot(at(10 * DAY));
    assert_eq!((snap.good, snap.total), (9_995, 10_000));
    close(snap.error_budget_remaining, 0.5);
    // 3d (days 7, 8, 9 at noon; day 7 noon is 2.5 days ago): 0 bad.
    close(snap.burn_rate("3d").unwrap(), 0.0);
}

#[test]
fn no_traffic() {
    let t = tracker(99.9, 30 * DAY);
    let snap = t.snapshot(at(0));
    assert_eq!((snap.good, snap.total), (0, 0));
    close(snap.error_budget_remaining, 1.0);
    rates(&snap, [0.0; 7]);
    // And the same once traffic has aged out of every window.
    let mut t = tracker(99.9, 30 * DAY);
    record(&mut t, at(0), 10, 10);
    let snap = t.snapshot(at(30 * DAY));
    assert_eq!((snap.good, snap.total), (0, 0));
    close(snap.error_budget_remaining, 1.0);
    rates(&snap, [0.0; 7]);
}

#[test]
fn all_bad() {
    // Every request bad: 1.0 of requests against 0.001 allowed is a 1000x burn over every
    // window, and a budget of 1 − 1000 = −999.
    let mut t = tracker(99.9, 30 * DAY);
    for minute in 0..10 {
        record(&mut t, at(minute * MIN), 5, 5);
    }
    let snap = t.snapshot(at(10 * MIN));
    assert_eq!((snap.good, snap.total), (0, 50));
    rates(&snap, [1000.0; 7]);
    close(snap.error_budget_remaining, -999.0);
}

#[test]
fn hourly_traffic_rotates_through_days() {
    // objective 90 %: 0.1 allowed. One request at the start of every hour for 4 days,
    // every 4th hour's bad. The minute ring (4320 slots) wraps after 3 days, so hour 72
    // reuses hour 0's slot.
    let mut t = tracker(90.0, 30 * DAY);
    for h in 0..96 {
        t.record(at(h * HOUR), h % 4 != 0);
    }
    let snap = t.snapshot(at(96 * HOUR)); // minute 5760
                                          // 1d = minutes 4321..=5760: hours 73..=95 (hour 72 is minute 4320, exactly a day
                                          // old, and out): 23 requests, bad at 76, 80, 84, 88, 92: 5/23 / 0.1.
    close(snap.burn_rate("1d").unwrap(), 5.0 / 23.0 / 0.1);
    // 3d = minutes 1441..=5760: hours 25..=95: 71 requests, bad at 28..=92 step 4: 17.
    close(snap.burn_rate("3d").unwrap(), 17.0 / 71.0 / 0.1);
    // 6h = minutes 5401..=5760: hours 91..=95: bad at 92 only: 1/5 / 0.1 = 2.
    close(snap.burn_rate("6h").unwrap(), 2.0);
    // 5m, 30m, 1h (minutes 5701..=5760), 2h: hour 95 only (minute 5700) is in 2h, good.
    rates(
        &snap,
        [0.0, 0.0, 0.0, 0.0, 2.0, 5.0 / 23.0 / 0.1, 17.0 / 71.0 / 0.1],
    );
    // 30d budget from the hour ring: all 96, 24 bad: 0.25 / 0.1 = 2.5 → 1 − 2.5 = −1.5.
    assert_eq!((snap.good, snap.total), (72, 96));
    close(snap.error_budget_remaining, -1.5);
}

#[test]
fn hour_ring_rotates_over_a_seven_day_window() {
    // 7d window = 168 hour buckets. One request per hour for 10 days; at hour 240 the
    // window is hours 73..=240, of which 73..=239 have a request: 167.
    let mut t = tracker(99.0, 7 * DAY);
    for h in 0..240 {
        t.record(at(h * HOUR + 59 * MIN), true);
    }
    let snap = t.snapshot(at(240 * HOUR));
    assert_eq!((snap.good, snap.total), (167, 167));
    close(snap.error_budget_remaining, 1.0);
}

#[test]
fn data_ages_out_exactly_at_window_edges() {
    for (label, minutes) in BURN_WINDOWS {
        let mut t = tracker(99.0, 30 * DAY);
        t.record(at(0), false);
        let edge = minutes * MIN;
        // A bad request in every window is 1/1 bad against 0.01 allowed: 100.
        close(t.snapshot(at(edge) - 1).burn_rate(label).unwrap(), 100.0);
        close(t.snapshot(at(edge)).burn_rate(label).unwrap(), 0.0);
    }
    // Windows move a bucket at a time: a request at the end of minute 0 leaves the 5m
    // window at the start of minute 5 too, 4 min 0.001 s after it was made.
    let mut t = tracker(99.0, 30 * DAY);
    t.record(at(59) + 999_000_000, false);
    close(t.snapshot(at(5 * MIN) - 1).burn_rate("5m").unwrap(), 100.0);
    close(t.snapshot(at(5 * MIN)).burn_rate("5m").unwrap(), 0.0);
}

#[test]
fn budget_ages_out_exactly_at_the_slo_window() {
    // Longer than 3 days: hour buckets. Shorter: minute buckets. Either way the request
    // of minute (or hour) 0 counts until the bucket a whole window later begins.
    for window in [30 * DAY, 4 * DAY, 3 * DAY, DAY, 90 * MIN, 5 * MIN] {
        let mut t = tracker(99.0, window);
        t.record(at(0), false);
        let before = t.snapshot(at(window) - 1);
        assert_eq!(before.total, 1, "window {window}s");
        close(before.error_budget_remaining, 1.0 - 100.0);
        let after = t.snapshot(at(window));
        assert_eq!(after.total, 0, "window {window}s");
        close(after.error_budget_remaining, 1.0);
    }
}

#[test]
fn a_window_that_is_not_whole_buckets_rounds_up() {
    // 4d 30m (6 030 minutes) is more than 3 days: 101 hour buckets, so the request of
    // hour 0 counts until hour 101 begins.
    let mut t = tracker(99.0, 6_030 * MIN);
    t.record(at(0), true);
    assert_eq!(t.snapshot(at(101 * HOUR) - 1).total, 1);
    assert_eq!(t.snapshot(at(101 * HOUR)).total, 0);
    // 90 s: two minute buckets.
    let mut t = tracker(99.0, 90);
    t.record(at(0), true);
    assert_eq!(t.snapshot(at(2 * MIN) - 1).total, 1);
    assert_eq!(t.snapshot(at(2 * MIN)).total, 0);
}

#[test]
fn late_and_early_records() {
    let mut t = tracker(99.0, 30 * DAY);
    let now = at(10 * DAY);
    t.record(now, true);
    // A record from exactly 3 days earlier lands in the same minute slot, which already
    // holds a newer minute: too old for the burn rates, dropped there; the hour ring
    // (720 slots) still has room for it, so the budget counts it.
    t.record(now - 3 * DAY * SEC, false);
    let snap = t.snapshot(now);
    rates(&snap, [0.0; 7]);
    assert_eq!((snap.good, snap.total), (1, 2));
    // A record from a thread whose clock runs an hour ahead is not in a snapshot taken
    // at `now` (neither ring counts buckets after `now`'s), and is once that hour comes.
    t.record(now + HOUR * SEC, false);
    assert_eq!(t.snapshot(now).total, 2);
    let later = t.snapshot(now + HOUR * SEC);
    assert_eq!(later.total, 3);
    // 5m at `now + 1h`: the one bad request, 1/1 against 0.01: 100.
    close(later.burn_rate("5m").unwrap(), 100.0);
}

#[test]
fn the_clock_at_the_epoch() {
    let mut t = tracker(99.0, 30 * DAY);
    t.record(0, false);
    let snap = t.snapshot(0);
    assert_eq!(snap.total, 1);
    close(snap.burn_rate("3d").unwrap(), 100.0);
}

#[test]
fn set_routes_requests_to_matching_slos() {
    let set = SloSet::new(&[
        config("api", &["/api/*"], 99.0, 30 * DAY, None),
        config(
            "items",
            &["/api/items/{id}", "/orders"],
            99.0,
            30 * DAY,
            Some(100),
        ),
        config("all", &["/*"], 99.0, DAY, None),
    ]);
    assert_eq!(set.len(), 3);
    assert_eq!(set.matching("/api/items/42"), [0, 1, 2]);
    assert_eq!(
        set.matching("/api/items/{id}"),
        [0, 1, 2],
        "a route pattern as a path"
    );
    assert_eq!(set.matching("/api/items"), [0, 2]);
    assert_eq!(set.matching("/api/items/42/x"), [0, 2]);
    assert_eq!(set.matching("/orders/"), [1, 2]);
    assert_eq!(
        set.matching("//api/./%61bc"),
        [0, 2],
        "normalised like routes"
    );
    assert_eq!(set.matching("/health"), [2]);

    let now = at(0);
    let ms = Duration::from_millis;
    set.record(now, "/api/items/7", 200, ms(150)); // items: slow, bad; api, all: good
    set.record(now, "/api/other", 503, ms(1)); // api, all: bad
    set.record(now, "/orders", 429, ms(1)); // items, all: good
    set.record(now, "/elsewhere", 200, ms(1)); // all: good
    let snaps = set.snapshots(now);
    let counts: Vec<(&str, u64, u64)> = snaps
        .iter()
        .map(|s| (s.name.as_str(), s.good, s.total))
        .collect();
    assert_eq!(counts, [("api", 1, 2), ("items", 1, 2), ("all", 3, 4)]);

    set.record_at(2, now, false);
    set.record_at(9, now, false); // out of range: ignored
    assert_eq!(set.snapshots(now)[2].total, 5);
}

#[test]
fn an_empty_set_records_nothing() {
    let set = SloSet::new(&[]);
    assert!(set.is_empty());
    set.record(at(0), "/api", 500, Duration::ZERO);
    assert!(set.matching("/api").is_empty());
    assert!(set.snapshots(at(0)).is_empty());
}

#[test]
fn reload_keeps_counts_of_unchanged_slos() {
    let before = SloSet::new(&[
        config("api", &["/api/*"], 99.0, 30 * DAY, None),
        config("web", &["/web/*"], 99.0, 30 * DAY, None),
    ]);
    before.record(at(0), "/api/x", 500, Duration::ZERO);
    before.record(at(0), "/web/x", 500, Duration::ZERO);
    let after = before.reconfigured(&[
        config("api", &["/api/v2/*"], 99.9, 30 * DAY, Some(50)), // same name and window
        config("web", &["/web/*"], 99.0, 7 * DAY, None),         // window changed
        config("new", &["/*"], 99.0, 30 * DAY, None),
    ]);
    let snaps = after.snapshots(at(0));
    assert_eq!((snaps[0].total, snaps[1].total, snaps[2].total), (1, 0, 0));
    // The new objective applies to the kept counts: 1/1 bad against 0.001: 1 − 1000.
    close(snaps[0].objective, 99.9);
    close(snaps[0].error_budget_remaining, -999.0);
    // And the new routes and threshold to new requests.
    after.record(at(0), "/api/v2/y", 200, Duration::from_millis(60));
    after.record(at(0), "/api/x", 500, Duration::ZERO);
    assert_eq!(after.snapshots(at(0))[0].total, 2);
}

#[test]
fn snapshot_json() {
    let mut t = tracker(99.0, 30 * DAY);
    record(&mut t, at(0), 100, 1);
    let json = serde_json::to_value(t.snapshot(at(0))).unwrap();
    let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "name",
            "objective",
            "window_seconds",
            "good",
            "total",
            "error_budget_remaining",
            "burn_rates"
        ]
    );
    assert_eq!(json["name"], "t");
    assert_eq!(json["objective"], 99.0);
    assert_eq!(json["window_seconds"], 2_592_000);
    assert_eq!(
        (json["good"].as_u64(), json["total"].as_u64()),
        (Some(99), Some(100))
    );
    // 1/100 bad against 0.01 allowed: burning at exactly 1 everywhere, budget spent.
    close(json["error_budget_remaining"].as_f64().unwrap(), 0.0);
    let rates = json["burn_rates"].as_object().unwrap();
    let labels: Vec<&String> = rates.keys().collect();
    assert_eq!(labels, ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]);
    for rate in rates.values() {
        close(rate.as_f64().unwrap(), 1.0);
    }
}

#[test]
fn memory_is_bounded_by_the_layout() {
    assert_eq!(tracker(99.0, 30 * DAY).layout(), (4_320, Some(720)));
    assert_eq!(tracker(99.0, 3 * DAY).layout(), (4_320, None));
    assert_eq!(
        tracker(99.0, 100_000 * DAY).layout(),
        (4_320, Some(400 * 24))
    );
}

// === SloSet shards ===

/// A set of one SLO over `/api/*`, 99 % with a 100 ms threshold, 30-day window.
fn sharded(shards: usize) -> SloSet {
    SloSet::with_shards(
        &[config("api", &["/api/*"], 99.0, 30 * DAY, Some(100))],
        shards,
    )
}

fn good_total(slos: &SloSet, now: Nanos) -> (u64, u64) {
    let snap = &slos.snapshots(now)[0];
    (snap.good, snap.total)
}

#[test]
fn tallies_of_every_shard_are_in_a_snapshot_within_the_minute() {
    let slos = sharded(4);
    let ms = Duration::from_millis;
    slos.record_on(0, at(10), "/api/a", 200, ms(5));
    slos.record_on(1, at(11), "/api/a", 503, ms(5));
    slos.record_on(2, at(12), "/api/b", 200, ms(500)); // too slow: bad
    slos.record_on(7, at(13), "/api/b", 429, ms(1)); // shard 7 is shard 3
    slos.record_on(3, at(14), "/other", 500, ms(1)); // no SLO covers it
    assert_eq!(good_total(&slos, at(15)), (2, 4));
    // A snapshot moves the tallies into the tracker: read twice, counted once.
    assert_eq!(good_total(&slos, at(16)), (2, 4));
    let snap = &slos.snapshots(at(16))[0];
    // 2 bad in 4 is 50 % bad against the 1 % allowed.
    close(snap.burn_rate("5m").unwrap(), 50.0);
}

#[test]
fn a_tally_lands_in_the_minute_it_counted() {
    let slos = sharded(2);
    let ms = Duration::from_millis(1);
    // Minute 0: two good on shard 0; minute 6: one bad on shard 0 moves them in.
    slos.record_on(0, at(5), "/api/x", 200, ms);
    slos.record_on(0, at(50), "/api/x", 200, ms);
    slos.record_on(0, at(6 * MIN + 1), "/api/x", 500, ms);
    let snap = &slos.snapshots(at(6 * MIN + 2))[0];
    assert_eq!((snap.good, snap.total), (2, 3));
    // The 5m window at minute 6 holds minutes 2..=6: only the bad one.
    close(snap.burn_rate("5m").unwrap(), 100.0);
    close(snap.burn_rate("30m").unwrap(), 100.0 / 3.0);
}

#[test]
fn a_clock_behind_the_tally_still_counts() {
    let slos = sharded(1);
    let ms = Duration::from_millis(1);
    slos.record_on(0, at(2 * MIN), "/api/x", 200, ms);
    // Another thread's reading, a minute earlier, on the same shard.
    slos.record_on(0, at(MIN + 59), "/api/x", 500, ms);
    slos.record_on(0, at(2 * MIN + 1), "/api/x", 200, ms);
    assert_eq!(good_total(&slos, at(2 * MIN + 2)), (2, 3));
}

#[test]
fn threads_recording_on_their_own_shards_lose_nothing() {
    let slos = std::sync::Arc::new(sharded(4));
    let ms = Duration::from_millis(1);
    let threads: Vec<_> = (0..4)
        .map(|shard| {
            let slos = slos.clone();
            std::thread::spawn(move || {
                for i in 0..5_000u64 {
                    // Two minutes, so tallies are moved in while the others record.
                    let status = if i % 10 == 0 { 502 } else { 200 };
                    slos.record_on(shard, at(i * 120 / 5_000), "/api/x", status, ms);
                    if shard == 0 && i % 1000 == 0 {
                        let _ = slos.snapshots(at(i * 120 / 5_000));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(good_total(&slos, at(121)), (4 * 4_500, 4 * 5_000));
}

#[test]
fn a_reconfigured_set_keeps_the_tallies() {
    let slos = sharded(2);
    slos.record_on(1, at(3), "/api/x", 500, Duration::from_millis(1));
    let next = slos.reconfigured(&[config("api", &["/api/*"], 99.9, 30 * DAY, None)]);
    assert_eq!(next.shards(), 2);
    assert_eq!(good_total(&next, at(4)), (0, 1));
}
