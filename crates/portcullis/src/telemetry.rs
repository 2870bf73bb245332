//! Metrics (contract names, in one place) and the JSON access log, fed by the
//! [`ObserveHook`] of the request stack.

use portcullis_core::config::{Config, Redaction, StoreKind};
use portcullis_core::redact::Redactor;
use portcullis_core::slo::SloSet;
use portcullis_store::redis::RedisObserver;
use portcullis_store::StoreError;
use portcullis_tower::observe::{ObserveHook, RequestRecord};
use portcullis_tower::rate_limit::{DecisionHook, Outcome};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::io::Write;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};

mod shards;

/// Route label for requests that matched no configured route.
pub(crate) const UNMATCHED: &str = "unmatched";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    policy: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    route: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SloLabels {
    slo: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BurnLabels {
    slo: String,
    window: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

/// A gauge holding a float.
type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    store: &'static str,
}

/// The gateway's metrics. The ones every request updates are [`shards`]: each thread
/// writes its own.
pub(crate) struct Metrics {
    pub(crate) registry: Registry,
    requests: Family<RequestLabels, shards::Counter>,
    request_duration: Family<RouteLabels, shards::LatencyHistogram>,
    upstream_duration: Family<RouteLabels, shards::LatencyHistogram>,
    inflight: shards::Gauge,
    decisions: Family<DecisionLabels, shards::Counter>,
    /// The `decisions` series of each configured policy, by outcome (in the order of
    /// [`OUTCOMES`]): looked up by name without building labels on every decision.
    policy_decisions: Vec<(String, [shards::Counter; 4])>,
    store_errors: Family<StoreLabels, Counter>,
    store_duration: Histogram,
    fallback_active: Gauge,
    webhook_verifications: Family<WebhookLabels, Counter>,
    slo_budget: Family<SloLabels, FloatGauge>,
    slo_burn: Family<BurnLabels, FloatGauge>,
    store_kind: &'static str,
}

impl Metrics {
    fn new(config: &Config) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, shards::Counter>::default();
        let request_duration = Family::<RouteLabels, shards::LatencyHistogram>::default();
        let upstream_duration = Family::<RouteLabels, shards::LatencyHistogram>::default();
        let inflight = shards::Gauge::default();
        registry.register(
            "portcullis_requests",
            "Requests answered, by route pattern, method and status",
            requests.clone(),
        );
        registry.register(
            "portcullis_request_duration_seconds",
            "Time from request to response headers, by route pattern",
            request_duration.clone(),
        );
        registry.register(
            "portcullis_upstream_duration_seconds",
            "Time the upstream took to send response headers, by route pattern",
            upstream_duration.clone(),
        );
        registry.register(
            "portcullis_inflight_requests",
            "Requests being served (until their response body ends)",
            inflight.clone(),
        );
        let decisions = Family::<DecisionLabels, shards::Counter>::default();
        registry.register(
            "portcullis_ratelimit_decisions",
            "Rate-limit decisions, by policy and outcome",
            decisions.clone(),
        );
        let store_errors = Family::<StoreLabels, Counter>::default();
        registry.register(
            "portcullis_store_errors",
            "Store calls that failed or timed out",
            store_errors.clone(),
        );
        let store_duration = Histogram::new(
            [
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
            ]
            .into_iter(),
        );
        registry.register(
            "portcullis_store_duration_seconds",
            "Duration of rate-limit store calls",
            store_duration.clone(),
        );
        let fallback_active = Gauge::default();
        registry.register(
            "portcullis_store_fallback_active",
            "1 while the store is down and decisions follow [store] on_error",
            fallback_active.clone(),
        );
        let webhook_verifications = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "portcullis_webhook_verifications",
            "Webhook deliveries checked at the edge, by webhook path pattern and outcome",
            webhook_verifications.clone(),
        );
        let slo_budget = Family::<SloLabels, FloatGauge>::default();
        registry.register(
            "portcullis_slo_error_budget_remaining",
            "Share of the SLO's error budget left over its window (1 untouched, 0 spent, negative overspent)",
            slo_budget.clone(),
        );
        let slo_burn = Family::<BurnLabels, FloatGauge>::default();
        registry.register(
            "portcullis_slo_burn_rate",
            "Error-budget burn rate of the SLO over the window (1 spends the budget exactly over the SLO window)",
            slo_burn.clone(),
        );
        // There is no circuit breaker in this build: the upstream circuit is always
        // closed, as `/health` says, and the series is there for dashboards and alerts.
        let circuit = Family::<UpstreamLabels, Gauge>::default();
        circuit
            .get_or_create(&UpstreamLabels {
                upstream: config.server.upstream.to_string(),
            })
            .set(0);
        registry.register(
            "portcullis_circuit_state",
            "Upstream circuit breaker state: 0 closed, 1 half-open, 2 open",
            circuit,
        );
        let policy_decisions = config
            .policy
            .iter()
            .map(|p| {
                let name = p.name.get_ref().clone();
                let series = OUTCOMES.map(|outcome| {
                    decisions
                        .get_or_create(&DecisionLabels {
                            policy: name.clone(),
                            outcome: outcome.as_str(),
                        })
                        .clone()
                });
                (name, series)
            })
            .collect();
        Metrics {
            registry,
            policy_decisions,
            webhook_verifications,
            slo_budget,
            slo_burn,
            requests,
            request_duration,
            upstream_duration,
            inflight,
            decisions,
            store_errors,
            store_duration,
            fallback_active,
            store_kind: match config.store.kind.get_ref() {
                StoreKind::Memory => "memory",
                StoreKind::Redis => "redis",
            },
        }
    }

    /// How many times `policy` decided `outcome` (the `/health` counts, read from the
    /// same counter `/metrics` exports rather than kept twice).
    pub(crate) fn decisions_of(&self, policy: &str, outcome: Outcome) -> u64 {
        self.decisions
            .get_or_create(&DecisionLabels {
                policy: policy.to_owned(),
                outcome: outcome.as_str(),
            })
            .get()
    }

    /// Counts one webhook delivery checked on the `[[webhook]]` whose path pattern is
    /// `route`. `outcome` is `verified`, `replayed` or a [`VerifyError`] code
    /// (`signature_invalid`, ...): a fixed set, so the label stays bounded.
    ///
    /// [`VerifyError`]: portcullis_core::webhook::VerifyError
    pub(crate) fn webhook_verification(&self, route: &str, outcome: &'static str) {
        self.webhook_verifications
            .get_or_create(&WebhookLabels {
                route: route.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Failed or timed-out store calls (`store.errors` in `/health`).
    pub(crate) fn store_errors(&self) -> u64 {
        self.store_errors
            .get_or_create(&StoreLabels {
                store: self.store_kind,
            })
            .get()
    }

    /// Sets the SLO gauges from the trackers' state at `now` (done at each scrape, so
    /// the gauges never lag behind `/admin/slo`).
    fn set_slo_gauges(&self, slos: &SloSet, now: u64) {
        for snap in slos.snapshots(now) {
            self.slo_budget
                .get_or_create(&SloLabels {
                    slo: snap.name.clone(),
                })
                .set(snap.error_budget_remaining);
            for (window, rate) in snap.burn_rates {
                self.slo_burn
                    .get_or_create(&BurnLabels {
                        slo: snap.name.clone(),
                        window,
                    })
                    .set(rate);
            }
        }
    }

    /// The Prometheus text exposition.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The series one response updates, looked up once per thread and kept.
#[derive(Clone)]
struct RouteHandles {
    requests: shards::Counter,
    request_duration: shards::LatencyHistogram,
    upstream_duration: shards::LatencyHistogram,
}

/// Which [`Metrics`] (by address), route (by pointer: routes are `Arc`s from the
/// configuration), method (by the address of its static label) and status a
/// [`RouteHandles`] entry is for.
type HandleKey = (usize, usize, usize, u16);

/// Hashes a [`HandleKey`]: addresses and a status, none of them chosen by a client, so a
/// multiply-and-rotate hash serves where SipHash (built to resist chosen keys) cost
/// more than the rest of the lookup.
#[derive(Default)]
struct HandleKeyHasher(u64);

impl HandleKeyHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl std::hash::Hasher for HandleKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.add(u64::from(b));
        }
    }
    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

type HandleMap = std::collections::HashMap<
    HandleKey,
    RouteHandles,
    std::hash::BuildHasherDefault<HandleKeyHasher>,
>;

thread_local! {
    /// Per serving thread: the label sets seen so far and their series. Bounded like the
    /// labels themselves (configured routes × methods × statuses), and without the
    /// label strings, hashing and lock that `Family::get_or_create` costs per call.
    static ROUTE_HANDLES: std::cell::RefCell<HandleMap> = std::cell::RefCell::new(HandleMap::default());
}

impl Metrics {
    fn with_route_handles(
        &self,
        route: Option<&Arc<str>>,
        method: &'static str,
        status: u16,
        f: impl Fn(&RouteHandles),
    ) {
        let key = (
            self as *const Metrics as usize,
            route.map_or(0, |r| Arc::as_ptr(r).cast::<u8>() as usize),
            method.as_ptr() as usize,
            status,
        );
        let create = || {
            let route = route.map_or(UNMATCHED, |r| &**r).to_owned();
            let labels = RouteLabels {
                route: route.clone(),
            };
            RouteHandles {
                requests: self
                    .requests
                    .get_or_create(&RequestLabels {
                        route,
                        method: method.to_owned(),
                        status,
                    })
                    .clone(),
                request_duration: self.request_duration.get_or_create(&labels).clone(),
                upstream_duration: self.upstream_duration.get_or_create(&labels).clone(),
            }
        };
        let f = &f;
        let cached = ROUTE_HANDLES.try_with(|cell| {
            let Ok(mut handles) = cell.try_borrow_mut() else {
                return false;
            };
            // A pointer could be reused by another route after a reload: bound the map
            // by starting over past any sensible number of live label sets.
            if handles.len() >= 4096 && !handles.contains_key(&key) {
                handles.clear();
            }
            f(handles.entry(key).or_insert_with(create));
            true
        });
        if cached != Ok(true) {
            f(&create());
        }
    }
}

/// Methods outside this list are counted as `OTHER`, so a client cannot grow the label set.
fn method_label(m: &http::Method) -> &'static str {
    match m.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "OTHER",
    }
}

enum LogMessage {
    Line(String),
    Flush(mpsc::SyncSender<()>),
}

/// Writes access log lines on stdout from a thread of its own, so a slow terminal or
/// pipe never blocks a request task.
pub(crate) struct AccessLog {
    tx: mpsc::Sender<LogMessage>,
}

/// How long the writer gathers lines before writing them, while lines keep coming. A
/// writer that woke for every line cost each request a futex wake in its serving thread
/// and a context switch here (together ~5 µs of CPU a request under load); one that
/// sleeps this long between batches is asleep when a line is sent, so sending is a
/// queue push. Lines reach stdout at most this late; an idle writer blocks and costs
/// nothing.
const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(10);

impl AccessLog {
    fn start() -> Self {
        let (tx, rx) = mpsc::channel::<LogMessage>();
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
                let write = |msg: LogMessage, out: &mut std::io::BufWriter<_>| match msg {
                    LogMessage::Line(line) => {
                        let _ = out.write_all(line.as_bytes());
                        let _ = out.write_all(b"\n");
                    }
                    LogMessage::Flush(done) => {
                        let _ = out.flush();
                        let _ = done.send(());
                    }
                };
                // Blocks only while no line comes.
                while let Ok(first) = rx.recv() {
                    write(first, &mut out);
                    loop {
                        while let Ok(msg) = rx.try_recv() {
                            write(msg, &mut out);
                        }
                        let _ = out.flush();
                        std::thread::sleep(BATCH_WINDOW);
                        match rx.try_recv() {
                            Ok(msg) => write(msg, &mut out),
                            Err(mpsc::TryRecvError::Empty) => break,
                            Err(mpsc::TryRecvError::Disconnected) => return,
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the access log writer");
        }
        AccessLog { tx }
    }

    /// Waits until every line sent so far is written.
    pub(crate) fn flush(&self) {
        let (done, wait) = mpsc::sync_channel(1);
        if self.tx.send(LogMessage::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(std::time::Duration::from_secs(2));
        }
    }
}

/// The access log line of a request, written straight into JSON text. Every string that
/// can carry what a client sent (request id, extension method, route, path) goes through
/// the value detectors and query-name rules of the redactor first; the client address is
/// replaced outright (a keyed hash, or the mask). One pass per string and no
/// intermediate `Value`: this runs for every request.
pub(crate) fn access_log_line(r: &RequestRecord, now_unix_ms: u128, redactor: &Redactor) -> String {
    use portcullis_core::headers::latency_ms;
    use portcullis_core::json::push_str;
    let mut out = String::with_capacity(256 + r.path.len());
    let text = |out: &mut String, s: &str| push_str(out, &redactor.redact_str(s));
    let number = portcullis_core::json::push_u64;
    out.push_str("{\"ts\":");
    out.push('"');
    push_rfc3339_millis(&mut out, now_unix_ms);
    out.push('"');
    out.push_str(",\"request_id\":");
    text(&mut out, &r.request_id);
    out.push_str(",\"method\":");
    match method_label(&r.method) {
        // A standard method is one of nine fixed tokens: nothing to redact.
        "OTHER" => text(&mut out, r.method.as_str()),
        standard => push_str(&mut out, standard),
    }
    out.push_str(",\"route\":");
    text(&mut out, r.route.as_deref().unwrap_or(UNMATCHED));
    out.push_str(",\"path\":");
    text(&mut out, &r.path);
    out.push_str(",\"status\":");
    number(&mut out, u64::from(r.status));
    out.push_str(",\"latency_ms\":");
    number(&mut out, latency_ms(r.latency));
    out.push_str(",\"upstream_ms\":");
    match r.upstream {
        Some(u) => number(&mut out, latency_ms(u)),
        None => out.push_str("null"),
    }
    out.push_str(",\"client\":");
    match r.client {
        Some(c) => push_str(&mut out, &client_token(redactor, c)),
        None => out.push_str("null"),
    }
    out.push_str(",\"policy\":");
    match r.policy.as_deref() {
        Some(p) => text(&mut out, p),
        None => out.push_str("null"),
    }
    out.push_str(",\"decision\":");
    match r.decision {
        // One of the limiter's own words.
        Some(d) => push_str(&mut out, d),
        None => out.push_str("null"),
    }
    out.push_str(",\"bytes_out\":");
    number(&mut out, r.bytes_out);
    out.push_str(",\"duration_ms\":");
    number(&mut out, latency_ms(r.duration));
    out.push('}');
    out
}

/// A bound on how many diagnostics one call site writes per second, so a client that
/// can trigger a log line (malformed heads, requests while overloaded) cannot turn the
/// gateway's stderr into its bottleneck. The access log still records every request.
pub(crate) struct LogThrottle {
    second: AtomicU64,
    written: AtomicU64,
    per_second: u64,
}

impl LogThrottle {
    pub(crate) const fn new(per_second: u64) -> Self {
        LogThrottle {
            second: AtomicU64::new(0),
            written: AtomicU64::new(0),
            per_second,
        }
    }

    /// Whether one more line may be written this second.
    pub(crate) fn allow(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let now = unix_nanos() / 1_000_000_000;
        if self.second.swap(now, Relaxed) != now {
            self.written.store(0, Relaxed);
        }
        self.written.fetch_add(1, Relaxed) < self.per_second
    }
}

/// Nanoseconds since the Unix epoch (0 if the clock is before it).
fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

thread_local! {
    /// Per serving thread: the log token of recent client addresses. A keyed hash is
    /// the same every time for one address, and a client sends many requests, so it is
    /// computed once per address rather than once per line (bounded: cleared when full).
    static CLIENT_TOKENS: std::cell::RefCell<(usize, std::collections::HashMap<std::net::IpAddr, Arc<str>>)> =
        std::cell::RefCell::new((0, std::collections::HashMap::new()));
}

/// `client` of the access log: the address replaced by the redactor (its keyed hash, or
/// the mask), cached per thread for the redactor it was made with.
fn client_token(redactor: &Redactor, ip: std::net::IpAddr) -> Arc<str> {
    let owner = redactor as *const Redactor as usize;
    let make = || Arc::<str>::from(redactor.replace(&ip.to_string()));
    CLIENT_TOKENS
        .try_with(|cell| {
            let Ok(mut cache) = cell.try_borrow_mut() else {
                return make();
            };
            let (cached_for, tokens) = &mut *cache;
            if *cached_for != owner || tokens.len() >= 4096 {
                tokens.clear();
                *cached_for = owner;
            }
            tokens.entry(ip).or_insert_with(make).clone()
        })
        .unwrap_or_else(|_| make())
}

/// `2026-11-23T09:13:19.123Z` from Unix milliseconds (civil-from-days, Howard Hinnant).
#[cfg(test)]
fn rfc3339_millis(unix_ms: u128) -> String {
    let mut out = String::with_capacity(24);
    push_rfc3339_millis(&mut out, unix_ms);
    out
}

/// An RFC 3339 UTC time with milliseconds (`2026-11-23T09:13:19.123Z`) appended to
/// `out`, digit by digit (every access log line has one:
/// `format!` cost a fifth of writing the line).
fn push_rfc3339_millis(out: &mut String, unix_ms: u128) {
    let ms = unix_ms % 1000;
    let secs = unix_ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let sod = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // Fixed-width fields, zero-padded; the year is 4 digits from 0 to 9999.
    fn digits(out: &mut String, n: i64, width: u32) {
        for i in (0..width).rev() {
            let digit = (n / 10i64.pow(i)) % 10;
            out.push(char::from(b'0' + digit as u8));
        }
    }
    digits(out, y.clamp(0, 9999), 4);
    // Both below 86 400 000.
    let (sod, ms) = (sod as i64, ms as i64);
    let fields = [
        (b'-', m, 2),
        (b'-', d, 2),
        (b'T', sod / 3600, 2),
        (b':', (sod / 60) % 60, 2),
        (b':', sod % 60, 2),
        (b'.', ms, 3),
    ];
    for (sep, n, width) in fields {
        out.push(char::from(sep));
        digits(out, n, width);
    }
    out.push('Z');
}

/// The log redactor, keyed from `[log] hash_key_env` (a random per-process key when
/// that variable is unset: hashes then correlate within one run only).
fn redactor(config: &Config) -> Redactor {
    let log = &config.log;
    let key = match std::env::var(&log.hash_key_env) {
        Ok(k) if !k.is_empty() => k.into_bytes(),
        _ => {
            let mut key = Vec::with_capacity(32);
            key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
            key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
            key
        }
    };
    Redactor::from_config(log, &key)
}

static LOG_REDACTOR: OnceLock<Arc<Redactor>> = OnceLock::new();

/// The process's log redactor, built from the first configuration it is asked for: the
/// access log and the diagnostics on stderr share it, so one secret hashes to one token
/// in both (with a random key too).
pub(crate) fn log_redactor(config: &Config) -> Arc<Redactor> {
    LOG_REDACTOR
        .get_or_init(|| Arc::new(redactor(config)))
        .clone()
}

/// The diagnostics writer: each event the `tracing` formatter writes is collected, run
/// through the log redactor, then written to stderr in one piece. Error messages carry
/// request targets, header values and upstream errors, so they get the same redaction
/// as the access log.
#[derive(Clone)]
pub(crate) struct RedactingStderr(pub(crate) Arc<Redactor>);

/// One event's text, redacted and written when dropped.
pub(crate) struct RedactedEvent {
    redactor: Arc<Redactor>,
    buf: Vec<u8>,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactingStderr {
    type Writer = RedactedEvent;

    fn make_writer(&'a self) -> RedactedEvent {
        RedactedEvent {
            redactor: self.0.clone(),
            buf: Vec::with_capacity(256),
        }
    }
}

impl Write for RedactedEvent {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactedEvent {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.buf);
        let redacted = self.redactor.redact_str(&text);
        let _ = std::io::stderr().lock().write_all(redacted.as_bytes());
    }
}

/// Metrics and access log, shared by every request.
#[derive(Clone)]
pub(crate) struct Telemetry {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) access_log: Option<Arc<AccessLog>>,
    pub(crate) slos: Arc<SloSet>,
    redactor: Arc<Redactor>,
}

impl Telemetry {
    pub(crate) fn new(config: &Config) -> Self {
        let log = &config.log;
        if log.redaction == Redaction::Hash
            && std::env::var(&log.hash_key_env).map_or(true, |k| k.is_empty())
        {
            tracing::warn!(
                variable = %log.hash_key_env,
                "log hash key not set: using a random key for this process"
            );
        }
        Telemetry {
            metrics: Arc::new(Metrics::new(config)),
            access_log: config.log.access_log.then(|| Arc::new(AccessLog::start())),
            slos: Arc::new(SloSet::with_shards(&config.slo, shards::shard_count())),
            redactor: log_redactor(config),
        }
    }

    /// The `/metrics` body, with the SLO gauges brought up to date first.
    pub(crate) fn encode_metrics(&self) -> String {
        self.metrics.set_slo_gauges(&self.slos, unix_nanos());
        self.metrics.encode()
    }

    /// Every SLO's state now (`GET /admin/slo`).
    pub(crate) fn slo_snapshots(&self) -> Vec<portcullis_core::slo::SloSnapshot> {
        self.slos.snapshots(unix_nanos())
    }

    pub(crate) fn flush(&self) {
        if let Some(log) = &self.access_log {
            log.flush();
        }
    }
}

impl ObserveHook for Telemetry {
    fn on_start(&self) {
        self.metrics.inflight.inc();
    }

    /// Only the access log's `duration_ms` reads it.
    fn wants_duration(&self) -> bool {
        self.access_log.is_some()
    }

    fn on_complete(&self, record: RequestRecord) {
        let m = &self.metrics;
        m.inflight.dec();
        let method = method_label(&record.method);
        m.with_route_handles(record.route.as_ref(), method, record.status, |h| {
            h.requests.inc();
            h.request_duration.observe(record.latency);
            if let Some(upstream) = record.upstream {
                h.upstream_duration.observe(upstream);
            }
        });
        static GATEWAY_FAILURES: LogThrottle = LogThrottle::new(20);
        if record.status >= 500 && record.upstream.is_none() && GATEWAY_FAILURES.allow() {
            // The gateway's own failures (502, 503, 504) have no upstream line to read:
            // say which request failed. The writer redacts the target.
            tracing::warn!(
                request_id = %record.request_id,
                status = record.status,
                method = %record.method,
                target = %record.path,
                "request failed at the gateway"
            );
        }
        if !self.slos.is_empty() {
            let path = record.path.split(['?', '#']).next().unwrap_or("");
            self.slos.record_on(
                shards::thread_index(),
                unix_nanos(),
                path,
                record.status,
                record.latency,
            );
        }
        if let Some(log) = &self.access_log {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let line = access_log_line(&record, now, &self.redactor);
            let _ = log.tx.send(LogMessage::Line(line));
        }
    }
}

/// Every [`Outcome`], in the order of `Metrics::policy_decisions`.
const OUTCOMES: [Outcome; 4] = [
    Outcome::Allowed,
    Outcome::Limited,
    Outcome::ShadowLimited,
    Outcome::Bypassed,
];

impl DecisionHook for Telemetry {
    fn on_decision(&self, policy: &str, outcome: Outcome) {
        let m = &self.metrics;
        if let Some((_, series)) = m.policy_decisions.iter().find(|(name, _)| name == policy) {
            if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
                series[i].inc();
                return;
            }
        }
        m.decisions
            .get_or_create(&DecisionLabels {
                policy: policy.to_owned(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    fn on_store_error(&self, error: &StoreError) {
        // The call itself was counted by `on_call`; this is the decision path giving up.
        tracing::debug!(error = %error, "no store decision; following on_error");
    }
}

impl RedisObserver for Telemetry {
    fn on_call(&self, duration: std::time::Duration, ok: bool) {
        let m = &self.metrics;
        m.store_duration.observe(duration.as_secs_f64());
        if !ok {
            m.store_errors
                .get_or_create(&StoreLabels {
                    store: m.store_kind,
                })
                .inc();
        }
    }

    fn on_down(&self, down: bool) {
        self.metrics.fallback_active.set(i64::from(down));
        if down {
            tracing::warn!("rate-limit store is down: decisions follow [store] on_error until it answers again");
        } else {
            tracing::info!("rate-limit store is reachable again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line written by hand is the one the redactor would make of the same record as
    /// a JSON value (`redact_json`), byte for byte.
    #[test]
    fn access_log_line_equals_the_redacted_json_value() {
        use portcullis_core::config::LogConfig;
        let redactor = Redactor::from_config(&LogConfig::default(), b"k");
        let record = RequestRecord {
            request_id: "0f8fad5b-d9cb-469f-a165-70867728950e".into(),
            method: http::Method::POST,
            path: "/u/ann@example.com/x\"y?token=abc&q=4111-1111-1111-1111&n=\u{1}".into(),
            route: Some(Arc::from("/u/*")),
            status: 429,
            latency: std::time::Duration::from_micros(1500),
            upstream: None,
            duration: std::time::Duration::from_millis(3),
            client: Some("203.0.113.7".parse().unwrap()),
            bytes_out: 312,
            policy: Some(Arc::from("auth")),
            decision: Some("limited"),
        };
        let line = access_log_line(&record, 1_795_425_199_123, &redactor);
        let mut value = serde_json::json!({
            "ts": rfc3339_millis(1_795_425_199_123),
            "request_id": record.request_id,
            "method": "POST",
            "route": "/u/*",
            "path": record.path,
            "status": 429,
            "latency_ms": 2,
            "upstream_ms": null,
            "client": redactor.replace("203.0.113.7"),
            "policy": "auth",
            "decision": "limited",
            "bytes_out": 312,
            "duration_ms": 3,
        });
        redactor.redact_json(&mut value);
        assert_eq!(line, value.to_string());
        assert!(!line.contains("ann@example.com") && !line.contains("token=abc"));
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(1_795_425_199_123),
            "2026-11-23T09:13:19.123Z"
        );
        assert_eq!(rfc3339_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(253_402_300_799_999),
            "9999-12-31T23:59:59.999Z"
        );
    }
}
