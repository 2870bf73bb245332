//! The per-request metrics, kept per thread and added up when scraped.
//!
//! prometheus-client's `Histogram` takes a write lock per observation, and its `Counter`
//! and `Gauge` are one shared atomic each: every serving thread wrote the same cache
//! lines for every request (the in-flight gauge twice, a request counter, two histogram
//! locks, a decision counter), so those lines moved between the cores at every request,
//! and a thread preempted while holding a histogram's lock held up the others. Here each
//! thread writes a shard of its own, in cache lines no other thread writes; `/metrics`
//! and `/health` add the shards up, which costs only the reader.
//!
//! The sums are exact; a scrape taken while requests complete may see a histogram's
//! count and sum one observation apart, as any lock-free exposition can.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::{MetricType, TypedMetric};
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

// The request-duration buckets are the ones `portcullis slo rules` names in `le`.
use portcullis_core::slo::rules::LATENCY_BUCKETS;

/// A shard alone in its cache lines (128 bytes: adjacent-line prefetch pairs lines).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// One value per shard.
#[derive(Debug)]
struct Shards<T>(Box<[Padded<T>]>);

impl<T: Default> Shards<T> {
    fn new() -> Self {
        Shards((0..shard_count()).map(|_| Padded::default()).collect())
    }
}

impl<T> Shards<T> {
    /// The calling thread's shard.
    fn mine(&self) -> &T {
        let index = thread_index() & (self.0.len() - 1);
        &self.0[index].0
    }

    fn all(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|p| &p.0)
    }
}

/// Shards per metric: a power of two (the index is masked), at least one per serving
/// thread (one per CPU) and never fewer than four, so that on small machines the main
/// runtime's threads have shards of their own too. 128 bytes a shard: a counter series
/// takes 8 KB on a 64-CPU machine.
pub(crate) fn shard_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        cpus.next_power_of_two().max(4)
    })
}

/// A number for the calling thread, taken in turn by the threads as they first record.
/// Threads beyond the shard count share shards: still exact, only no longer private.
pub(crate) fn thread_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    INDEX.try_with(|i| *i).unwrap_or(0)
}

/// A counter.
#[derive(Debug, Clone)]
pub(crate) struct Counter(Arc<Shards<AtomicU64>>);

impl Default for Counter {
    fn default() -> Self {
        Counter(Arc::new(Shards::new()))
    }
}

impl Counter {
    pub(crate) fn inc(&self) {
        self.0.mine().fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0
            .all()
            .fold(0, |sum, n| sum.wrapping_add(n.load(Ordering::Relaxed)))
    }
}

impl TypedMetric for Counter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for Counter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        encoder.encode_counter::<(), _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A gauge moved up and down by the threads (a shard alone may go negative: a request
/// may start on one thread and end on another; the sum is what counts).
#[derive(Debug, Clone)]
pub(crate) struct Gauge(Arc<Shards<AtomicI64>>);

impl Default for Gauge {
    fn default() -> Self {
        Gauge(Arc::new(Shards::new()))
    }
}

impl Gauge {
    pub(crate) fn inc(&self) {
        self.0.mine().fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dec(&self) {
        self.0.mine().fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> i64 {
        self.0
            .all()
            .fold(0, |sum, n| sum.wrapping_add(n.load(Ordering::Relaxed)))
    }
}

impl TypedMetric for Gauge {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for Gauge {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        encoder.encode_gauge(&self.get())
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// One thread's observations: a count per bucket ([`LATENCY_BUCKETS`], then `+Inf`) and
/// the sum in nanoseconds (exact, and a plain add where an `f64` sum needs a
/// compare-and-swap loop; it wraps after 584 years of summed durations).
#[derive(Debug, Default)]
struct HistogramShard {
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

/// A histogram of durations over [`LATENCY_BUCKETS`].
#[derive(Debug, Clone)]
pub(crate) struct LatencyHistogram(Arc<Shards<HistogramShard>>);

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram(Arc::new(Shards::new()))
    }
}

impl LatencyHistogram {
    pub(crate) fn observe(&self, duration: Duration) {
        let secs = duration.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&upper| secs <= upper)
            .unwrap_or(LATENCY_BUCKETS.len());
        let shard = self.0.mine();
        if let Some(n) = shard.buckets.get(bucket) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        shard.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The count of each bucket (not cumulative), with its upper bound (`f64::MAX` for
    /// `+Inf`, as prometheus-client writes it), and the sum in seconds.
    fn totals(&self) -> (Vec<(f64, u64)>, f64) {
        let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .chain(&[f64::MAX])
            .map(|&upper| (upper, 0))
            .collect();
        let mut sum_nanos = 0u64;
        for shard in self.0.all() {
            for ((_, total), n) in buckets.iter_mut().zip(&shard.buckets) {
                *total = total.wrapping_add(n.load(Ordering::Relaxed));
            }
            sum_nanos = sum_nanos.wrapping_add(shard.sum_nanos.load(Ordering::Relaxed));
        }
        (buckets, sum_nanos as f64 / 1e9)
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let (buckets, sum) = self.totals();
        let count = buckets.iter().map(|(_, n)| n).sum();
        encoder.encode_histogram::<()>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use prometheus_client::registry::Registry;

    fn exposition(name: &str, metric: impl prometheus_client::registry::Metric) -> String {
        let mut registry = Registry::default();
        registry.register(name, "help", metric);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn threads_add_up() {
        let counter = Counter::default();
        let gauge = Gauge::default();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (counter, gauge) = (counter.clone(), gauge.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        counter.inc();
                        gauge.inc();
                    }
                    for _ in 0..400 {
                        gauge.dec();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(counter.get(), 8000);
        assert_eq!(gauge.get(), 8 * 600);
        assert!(exposition("hits", counter).contains("hits_total 8000\n"));
        assert!(exposition("busy", gauge).contains("busy 4800\n"));
    }

    #[test]
    fn a_gauge_moved_on_two_threads_sums_to_zero() {
        let gauge = Gauge::default();
        gauge.inc();
        let other = gauge.clone();
        std::thread::spawn(move || other.dec()).join().unwrap();
        assert_eq!(gauge.get(), 0);
    }

    #[test]
    fn histogram_exposition_is_prometheus_clients() {
        let ours = LatencyHistogram::default();
        let theirs =
            prometheus_client::metrics::histogram::Histogram::new(LATENCY_BUCKETS.into_iter());
        let observed = [0.0002, 0.0005, 0.0007, 0.003, 0.75, 2.5, 11.0, 60.0];
        let threads: Vec<_> = observed
            .iter()
            .map(|&secs| {
                let ours = ours.clone();
                std::thread::spawn(move || ours.observe(Duration::from_secs_f64(secs)))
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        for secs in observed {
            theirs.observe(Duration::from_secs_f64(secs).as_secs_f64());
        }
        let (ours, theirs) = (exposition("d", ours), exposition("d", theirs));
        // The bucket lines and the count are the same text; the sum the same value.
        let lines = |s: &str| -> Vec<String> {
            s.lines()
                .filter(|l| !l.starts_with("d_sum"))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(lines(&ours), lines(&theirs));
        assert!(ours.contains("d_bucket{le=\"0.0005\"} 2\n"), "{ours}");
        assert!(ours.contains("d_bucket{le=\"+Inf\"} 8\n"), "{ours}");
        let sum = |s: &str| -> f64 {
            let line = s.lines().find(|l| l.starts_with("d_sum")).unwrap();
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert!((sum(&ours) - sum(&theirs)).abs() < 1e-6);
    }
}
