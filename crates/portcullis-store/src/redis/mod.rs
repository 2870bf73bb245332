//! The Redis / Redis Cluster store: one `EVALSHA` per decision, on the server's clock.
//!
//! `decide.lua` (beside this file) is the server-side twin of the core's algorithms;
//! review the two together. Around the script this module adds what a shared store
//! needs to be safe to depend on:
//!
//! - a per-call timeout, and a down state after a few consecutive failures in which
//!   Redis is not called at all (decisions follow `on_error`) while a prober pings it
//!   at most once a second, so a dead or silent Redis costs a request at most one
//!   timeout, not one each;
//! - a local cache of keys Redis denied, until the instant they could be admitted, so
//!   a client hammering a blocked key costs Redis nothing (as Envoy's ratelimit does);
//! - a fallback memory store for `on_error = "local"`, whose limits are divided by
//!   `local_share` (the number of instances expected to share the load).
//!
//! Webhook replay ids ([`Store::remember`]) are one `SET pc:{<hex>}:id 1 NX PX <ttl>`
//! each, under the same timeout and down state. While Redis is down, `local` remembers
//! them in the fallback store (replays are then caught per instance only); `allow` and
//! `deny` return the error and the caller applies the policy.

mod blocked;

use crate::clock::SystemClock;
use crate::memory::MemoryStore;
use crate::{Check, Decided, Store, StoreError, StoreKey};
use blocked::BlockedKeys;
use portcullis_core::config::StoreOnError;
use portcullis_core::limit::{Algorithm, Decision, Quota};
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Consecutive failures after which the store counts as down.
const DOWN_AFTER: u32 = 3;

static SCRIPT: &str = include_str!("decide.lua");

/// Called after every Redis call with its duration and whether it succeeded, and when
/// the store goes down or comes back (the app publishes these as metrics).
pub trait RedisObserver: Send + Sync + 'static {
    /// One script call finished.
    fn on_call(&self, duration: Duration, ok: bool);
    /// The store went down (`true`) or came back (`false`).
    fn on_down(&self, down: bool);
}

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server.
    Single(String),
    /// A cluster, by seed nodes.
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// `redis://h:p` is one server; a comma-separated list, or a `redis+cluster://`
    /// URL, is a cluster seed list.
    pub fn parse(url: &str) -> Result<Self, String> {
        let parts: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        if parts.is_empty() {
            return Err("the Redis URL is empty".into());
        }
        let cluster = parts.len() > 1 || parts.iter().any(|p| p.starts_with("redis+cluster://"));
        let normalise = |p: &str| p.replacen("redis+cluster://", "redis://", 1);
        for p in &parts {
            let n = normalise(p);
            redis::Client::open(n.as_str()).map_err(|e| format!("invalid Redis URL {p:?}: {e}"))?;
        }
        Ok(if cluster {
            RedisTarget::Cluster(parts.iter().map(|p| normalise(p)).collect())
        } else {
            RedisTarget::Single(parts[0].to_owned())
        })
    }
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Settings of a [`RedisStore`].
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Where Redis is.
    pub target: RedisTarget,
    /// Per call.
    pub timeout: Duration,
    /// What decides while Redis is down.
    pub on_error: StoreOnError,
    /// With `local`: limits are divided by this.
    pub local_share: u64,
    /// Bound of the local fallback store.
    pub local_max_keys: u64,
}

/// Store health, for `/health` and `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisHealth {
    /// Whether the last call (or probe) succeeded.
    pub reachable: bool,
    /// Whether decisions currently follow `on_error` without calling Redis.
    pub down: bool,
    /// Failed or timed-out calls so far.
    pub errors: u64,
}

/// Stores get a process-unique id, so a thread's own connections are never mixed up
/// between two stores (tests create many; an address could be reused).
static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(1);

/// A serving thread's own connections, one per store: see [`RedisStore::call_conn`].
struct ThreadConns {
    conns: Vec<(u64, ConnectionManager)>,
    /// When connecting last failed, per store: retried at most once a second.
    failed: Vec<(u64, Instant)>,
}

thread_local! {
    static THREAD_CONNS: std::cell::RefCell<ThreadConns> = const {
        std::cell::RefCell::new(ThreadConns { conns: Vec::new(), failed: Vec::new() })
    };
}

struct Inner {
    id: u64,
    settings: RedisSettings,
    conn: RwLock<Option<Conn>>,
    script: redis::Script,
    consecutive_errors: AtomicU32,
    down: AtomicBool,
    reachable: AtomicBool,
    errors: AtomicU64,
    blocked: BlockedKeys,
    fallback: Arc<MemoryStore<SystemClock>>,
    observer: Option<Arc<dyn RedisObserver>>,
}

/// The Redis store (cheap to clone).
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("target", &self.inner.settings.target)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Creates the store and starts its prober. Redis need not be up: until it answers
    /// the store is down and `on_error` decides.
    pub async fn start(settings: RedisSettings, observer: Option<Arc<dyn RedisObserver>>) -> Self {
        let fallback = Arc::new(MemoryStore::new(settings.local_max_keys, SystemClock));
        let store = RedisStore {
            inner: Arc::new(Inner {
                id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
                settings,
                conn: RwLock::new(None),
                script: redis::Script::new(SCRIPT),
                consecutive_errors: AtomicU32::new(0),
                down: AtomicBool::new(true),
                reachable: AtomicBool::new(false),
                errors: AtomicU64::new(0),
                blocked: BlockedKeys::new(100_000),
                fallback,
                observer,
            }),
        };
        let started = Instant::now();
        if store.probe().await.is_err() {
            store.inner.errors.fetch_add(1, Ordering::Relaxed);
            if let Some(o) = &store.inner.observer {
                o.on_call(started.elapsed(), false);
                o.on_down(true);
            }
        }
        let prober = store.clone();
        tokio::spawn(async move { prober.run_prober().await });
        store
    }

    /// Current health.
    pub fn health(&self) -> RedisHealth {
        RedisHealth {
            reachable: self.inner.reachable.load(Ordering::Relaxed),
            down: self.inner.down.load(Ordering::Relaxed),
            errors: self.inner.errors.load(Ordering::Relaxed),
        }
    }

    /// What decides while Redis is down.
    pub fn on_error(&self) -> StoreOnError {
        self.inner.settings.on_error
    }

    async fn connect(&self) -> Result<Conn, StoreError> {
        let timeout = self.inner.settings.timeout.max(Duration::from_millis(200));
        let conn = match &self.inner.settings.target {
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.as_str()).map_err(unavailable)?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_number_of_retries(1);
                let fut = ConnectionManager::new_with_config(client, config);
                let mut cm = tokio::time::timeout(timeout, fut)
                    .await
                    .map_err(|_| StoreError::Timeout)?
                    .map_err(unavailable)?;
                // Load the script now, so the first decisions do not pay a NOSCRIPT
                // round trip (EVALSHA still reloads it if the server forgets it).
                let invocation = self.inner.script.prepare_invoke();
                tokio::time::timeout(timeout, invocation.load_async(&mut cm))
                    .await
                    .map_err(|_| StoreError::Timeout)?
                    .map_err(unavailable)?;
                Conn::Single(cm)
            }
            RedisTarget::Cluster(nodes) => {
                let client = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(timeout)
                    .build()
                    .map_err(unavailable)?;
                let fut = client.get_async_connection();
                let cc = tokio::time::timeout(timeout * 5, fut)
                    .await
                    .map_err(|_| StoreError::Timeout)?
                    .map_err(unavailable)?;
                Conn::Cluster(cc)
            }
        };
        Ok(conn)
    }

    /// One PING (connecting first if needed); marks the store up on success.
    async fn probe(&self) -> Result<(), StoreError> {
        let existing = self.inner.conn.read().ok().and_then(|c| c.clone());
        let mut conn = match existing {
            Some(c) => c,
            None => {
                let c = self.connect().await?;
                if let Ok(mut slot) = self.inner.conn.write() {
                    *slot = Some(c.clone());
                }
                c
            }
        };
        let ping = async {
            let cmd = redis::cmd("PING");
            match &mut conn {
                Conn::Single(c) => cmd.query_async::<String>(c).await,
                Conn::Cluster(c) => cmd.query_async::<String>(c).await,
            }
        };
        match tokio::time::timeout(
            self.inner.settings.timeout.max(Duration::from_millis(200)),
            ping,
        )
        .await
        {
            Ok(Ok(_)) => {
                self.mark_up();
                Ok(())
            }
            Ok(Err(e)) => Err(unavailable(e)),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    fn mark_up(&self) {
        self.inner.consecutive_errors.store(0, Ordering::Relaxed);
        self.inner.reachable.store(true, Ordering::Relaxed);
        if self.inner.down.swap(false, Ordering::Relaxed) {
            if let Some(o) = &self.inner.observer {
                o.on_down(false);
            }
        }
    }

    fn mark_error(&self) {
        self.inner.errors.fetch_add(1, Ordering::Relaxed);
        self.inner.reachable.store(false, Ordering::Relaxed);
        let n = self
            .inner
            .consecutive_errors
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if n >= DOWN_AFTER && !self.inner.down.swap(true, Ordering::Relaxed) {
            if let Some(o) = &self.inner.observer {
                o.on_down(true);
            }
        }
    }

    /// Pings once a second while down; a failed probe is a failed store call.
    async fn run_prober(&self) {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if self.inner.down.load(Ordering::Relaxed) {
                let started = Instant::now();
                if self.probe().await.is_err() {
                    self.inner.errors.fetch_add(1, Ordering::Relaxed);
                    if let Some(o) = &self.inner.observer {
                        o.on_call(started.elapsed(), false);
                    }
                }
            }
        }
    }

    /// The connection a call uses. On a single-threaded runtime (the gateway's serving
    /// threads) that is the thread's own multiplexed connection, made on first use: its
    /// driver task then runs on the same thread as the request, and a decision costs no
    /// wake-up of another thread on the way out or back. Elsewhere, and while a thread
    /// cannot connect, the shared connection.
    async fn call_conn(&self) -> Option<Conn> {
        let own_thread = matches!(self.inner.settings.target, RedisTarget::Single(_))
            && tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
        if own_thread {
            let id = self.inner.id;
            let (found, may_connect) = THREAD_CONNS.with(|t| {
                let t = t.borrow();
                let found = t
                    .conns
                    .iter()
                    .find(|(i, _)| *i == id)
                    .map(|(_, c)| c.clone());
                let may_connect = !t
                    .failed
                    .iter()
                    .any(|(i, at)| *i == id && at.elapsed() < Duration::from_secs(1));
                (found, may_connect)
            });
            if let Some(c) = found {
                return Some(Conn::Single(c));
            }
            if may_connect && !self.inner.down.load(Ordering::Relaxed) {
                match self.connect().await {
                    Ok(Conn::Single(c)) => {
                        THREAD_CONNS.with(|t| {
                            let mut t = t.borrow_mut();
                            t.failed.retain(|(i, _)| *i != id);
                            t.conns.push((id, c.clone()));
                        });
                        return Some(Conn::Single(c));
                    }
                    Ok(Conn::Cluster(_)) => {}
                    Err(_) => THREAD_CONNS.with(|t| {
                        let mut t = t.borrow_mut();
                        t.failed.retain(|(i, _)| *i != id);
                        t.failed.push((id, Instant::now()));
                    }),
                }
            }
        }
        self.inner.conn.read().ok().and_then(|c| c.clone())
    }

    fn args(checks: &[Check]) -> Vec<u64> {
        let mut args = Vec::with_capacity(checks.len() * 5);
        for c in checks {
            args.push(match c.algorithm {
                Algorithm::Gcra => 1,
                Algorithm::SlidingWindow => 2,
                Algorithm::FixedWindow => 3,
            });
            args.push(c.quota.limit);
            args.push(c.quota.burst);
            args.push(u64::try_from(c.quota.window.as_micros()).unwrap_or(u64::MAX));
            args.push(c.cost);
        }
        args
    }

    async fn invoke(&self, mode: &str, checks: &[Check]) -> Result<Vec<i64>, StoreError> {
        let conn = self.call_conn().await;
        let Some(mut conn) = conn else {
            return Err(StoreError::Unavailable("not connected".into()));
        };
        let mut inv = self.inner.script.prepare_invoke();
        for c in checks {
            inv.key(redis_key(&c.key));
        }
        inv.arg(mode);
        for a in Self::args(checks) {
            inv.arg(a);
        }
        let started = Instant::now();
        let call = async {
            match &mut conn {
                Conn::Single(c) => inv.invoke_async::<Vec<i64>>(c).await,
                Conn::Cluster(c) => inv.invoke_async::<Vec<i64>>(c).await,
            }
        };
        let result = tokio::time::timeout(self.inner.settings.timeout, call).await;
        self.settle(started, result)
    }

    /// The outcome of one timed call, counted: the observer hears of it, and it moves
    /// the store towards up or down.
    fn settle<T>(
        &self,
        started: Instant,
        result: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, StoreError> {
        let outcome = match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e))
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) =>
            {
                Err(StoreError::Protocol(e.to_string()))
            }
            Ok(Err(e)) => Err(unavailable(e)),
            Err(_) => Err(StoreError::Timeout),
        };
        if let Some(o) = &self.inner.observer {
            o.on_call(started.elapsed(), outcome.is_ok());
        }
        match &outcome {
            Ok(_) => self.mark_up(),
            Err(_) => self.mark_error(),
        }
        outcome
    }

    /// One script call for checks sharing a slot (all of them on a single node).
    async fn decide_group(&self, checks: &[Check]) -> Result<Decided, StoreError> {
        let reply = self.invoke("take", checks).await?;
        parse_reply(&reply, checks.len())
    }

    async fn decide_remote(&self, checks: &[Check]) -> Result<Decided, StoreError> {
        if matches!(self.inner.settings.target, RedisTarget::Single(_)) || checks.len() == 1 {
            return self.decide_group(checks).await;
        }
        // A cluster cannot run one script over keys in different slots: decide slot by
        // slot, and give back what earlier slots took if a later one denies.
        let mut at = 0;
        let mut decisions = crate::Decisions::with_capacity(checks.len());
        let mut taken: Vec<Check> = Vec::new();
        for check in checks {
            let d = self.decide_group(std::slice::from_ref(check)).await?;
            at = d.at;
            let decision = d.decisions[0];
            if decision.allowed {
                taken.push(*check);
            }
            decisions.push(decision);
        }
        if decisions.iter().any(|d| !d.allowed) && !taken.is_empty() {
            for c in &taken {
                let _ = self.invoke("refund", std::slice::from_ref(c)).await;
            }
        }
        Ok(Decided { at, decisions })
    }

    /// One command with the per-call timeout, counted like a script call (observer,
    /// error count, down state).
    async fn command<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, StoreError> {
        let conn = self.call_conn().await;
        let Some(mut conn) = conn else {
            return Err(StoreError::Unavailable("not connected".into()));
        };
        let started = Instant::now();
        let call = async {
            match &mut conn {
                Conn::Single(c) => cmd.query_async::<T>(c).await,
                Conn::Cluster(c) => cmd.query_async::<T>(c).await,
            }
        };
        let result = tokio::time::timeout(self.inner.settings.timeout, call).await;
        self.settle(started, result)
    }

    async fn remember_remote(&self, key: &StoreKey, ttl: Duration) -> Result<bool, StoreError> {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut cmd = redis::cmd("SET");
        cmd.arg(replay_key(key)).arg(1).arg("NX").arg("PX").arg(ms);
        let reply: Option<String> = self.command(cmd).await?;
        Ok(reply.is_some())
    }

    /// The fallback answer for [`Store::remember`] while Redis fails.
    fn remember_fallback(&self, key: StoreKey, ttl: Duration) -> Option<bool> {
        match self.inner.settings.on_error {
            StoreOnError::Local => Some(self.inner.fallback.remember_at(key, ttl, now_ns())),
            StoreOnError::Allow | StoreOnError::Deny => None,
        }
    }

    fn decide_fallback(&self, checks: &[Check]) -> Option<Decided> {
        let share = self.inner.settings.local_share.max(1);
        match self.inner.settings.on_error {
            StoreOnError::Local => {
                let local: Vec<Check> = checks
                    .iter()
                    .map(|c| Check {
                        quota: Quota {
                            limit: (c.quota.limit / share).max(1),
                            burst: c.quota.burst / share,
                            window: c.quota.window,
                        },
                        ..*c
                    })
                    .collect();
                let at = now_ns();
                Some(Decided {
                    at,
                    decisions: self.inner.fallback.decide_at(&local, at),
                })
            }
            StoreOnError::Allow | StoreOnError::Deny => None,
        }
    }
}

fn now_ns() -> u64 {
    crate::clock::Clock::now(&SystemClock)
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// `pc:{<hex>}`: the braces make the whole hash the Redis Cluster hash tag.
pub fn redis_key(key: &StoreKey) -> String {
    let mut name = String::with_capacity(40);
    name.push_str("pc:{");
    key.push_hex(&mut name);
    name.push('}');
    name
}

/// `pc:{<hex>}:id`: a remembered webhook id (hash-tagged like the buckets).
pub fn replay_key(key: &StoreKey) -> String {
    let mut name = redis_key(key);
    name.push_str(":id");
    name
}

fn parse_reply(reply: &[i64], n: usize) -> Result<Decided, StoreError> {
    if reply.len() != 1 + 6 * n {
        return Err(StoreError::Protocol(format!(
            "script returned {} values for {n} keys",
            reply.len()
        )));
    }
    let us = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
    let at = u64::try_from(reply[0]).unwrap_or(0).saturating_mul(1000);
    let decisions = reply[1..]
        .chunks_exact(6)
        .map(|d| Decision {
            allowed: d[0] == 1,
            remaining: u64::try_from(d[1]).unwrap_or(0),
            reset_after: us(d[2]),
            retry_after: (d[3] >= 0 && d[0] != 1).then(|| us(d[3])),
            window_after: us(d[4]),
            never_fits: d[5] == 1,
        })
        .collect();
    Ok(Decided { at, decisions })
}

impl Store for RedisStore {
    async fn decide(&self, checks: &[Check]) -> Result<Decided, StoreError> {
        if let Some(d) = self.inner.blocked.answer(checks) {
            return Ok(d);
        }
        if !self.inner.down.load(Ordering::Relaxed) {
            match self.decide_remote(checks).await {
                Ok(d) => {
                    self.inner.blocked.remember(checks, &d);
                    return Ok(d);
                }
                Err(e) => {
                    return match self.decide_fallback(checks) {
                        Some(d) => Ok(d),
                        None => Err(e),
                    }
                }
            }
        }
        self.decide_fallback(checks)
            .ok_or_else(|| StoreError::Unavailable("Redis is down".into()))
    }

    async fn reset(&self, key: StoreKey) -> Result<(), StoreError> {
        self.inner.blocked.forget(&key);
        let mut cmd = redis::cmd("DEL");
        cmd.arg(redis_key(&key));
        // Counted like every other store call (observer, errors, down state).
        self.command::<i64>(cmd).await.map(|_| ())
    }

    fn now(&self) -> u64 {
        now_ns()
    }

    fn key_count(&self) -> Option<u64> {
        None
    }

    async fn remember(&self, key: StoreKey, ttl: Duration) -> Result<bool, StoreError> {
        if !self.inner.down.load(Ordering::Relaxed) {
            match self.remember_remote(&key, ttl).await {
                Ok(first) => return Ok(first),
                Err(e) => return self.remember_fallback(key, ttl).ok_or(e),
            }
        }
        self.remember_fallback(key, ttl)
            .ok_or_else(|| StoreError::Unavailable("Redis is down".into()))
    }

    async fn forget(&self, key: StoreKey) -> Result<(), StoreError> {
        self.inner.fallback.forget_id(&key);
        if self.inner.down.load(Ordering::Relaxed) {
            return Err(StoreError::Unavailable("Redis is down".into()));
        }
        let mut cmd = redis::cmd("DEL");
        cmd.arg(replay_key(&key));
        self.command::<i64>(cmd).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests;
