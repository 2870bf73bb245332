//! The gateway's rate limiter: policies from the configuration over the configured
//! store (memory, or Redis with its fallback).

use crate::telemetry::Telemetry;
use portcullis_core::config::{Config, StoreKind};
use portcullis_core::policy::PolicySet;
use portcullis_store::clock::SystemClock;
use portcullis_store::memory::MemoryStore;
use portcullis_store::redis::{RedisHealth, RedisSettings, RedisStore, RedisTarget};
use portcullis_store::{Check, Decided, Store, StoreError, StoreKey};
use portcullis_tower::rate_limit::Bypass;
use portcullis_tower::RateLimiter;
use std::sync::Arc;
use std::time::Duration;

/// The store the gateway uses, chosen by `[store] kind`.
#[derive(Clone)]
pub(crate) enum GatewayStore {
    Memory(Arc<MemoryStore<SystemClock>>),
    Redis(RedisStore),
}

impl GatewayStore {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            GatewayStore::Memory(_) => "memory",
            GatewayStore::Redis(_) => "redis",
        }
    }

    /// Redis health; `None` for the memory store (always reachable).
    pub(crate) fn redis_health(
        &self,
    ) -> Option<(RedisHealth, portcullis_core::config::StoreOnError)> {
        match self {
            GatewayStore::Memory(_) => None,
            GatewayStore::Redis(r) => Some((r.health(), r.on_error())),
        }
    }
}

impl Store for GatewayStore {
    async fn decide(&self, checks: &[Check]) -> Result<Decided, StoreError> {
        match self {
            GatewayStore::Memory(m) => m.decide(checks).await,
            GatewayStore::Redis(r) => r.decide(checks).await,
        }
    }

    fn decides_now(&self) -> bool {
        matches!(self, GatewayStore::Memory(_))
    }

    fn decide_now(&self, checks: &[Check]) -> Option<Result<Decided, StoreError>> {
        match self {
            GatewayStore::Memory(m) => m.decide_now(checks),
            GatewayStore::Redis(_) => None,
        }
    }

    async fn reset(&self, key: StoreKey) -> Result<(), StoreError> {
        match self {
            GatewayStore::Memory(m) => m.reset(key).await,
            GatewayStore::Redis(r) => r.reset(key).await,
        }
    }

    fn now(&self) -> u64 {
        match self {
            GatewayStore::Memory(m) => m.now(),
            GatewayStore::Redis(r) => r.now(),
        }
    }

    fn key_count(&self) -> Option<u64> {
        match self {
            GatewayStore::Memory(m) => m.key_count(),
            GatewayStore::Redis(r) => r.key_count(),
        }
    }

    async fn remember(&self, key: StoreKey, ttl: Duration) -> Result<bool, StoreError> {
        match self {
            GatewayStore::Memory(m) => m.remember(key, ttl).await,
            GatewayStore::Redis(r) => r.remember(key, ttl).await,
        }
    }

    async fn forget(&self, key: StoreKey) -> Result<(), StoreError> {
        match self {
            GatewayStore::Memory(m) => m.forget(key).await,
            GatewayStore::Redis(r) => r.forget(key).await,
        }
    }
}

/// The limiter the gateway uses.
pub(crate) type Limiter = RateLimiter<GatewayStore, Telemetry>;

pub(crate) async fn build(config: &Config, telemetry: Telemetry) -> Result<Arc<Limiter>, String> {
    let store = match config.store.kind.get_ref() {
        StoreKind::Memory => GatewayStore::Memory(Arc::new(MemoryStore::new(
            config.store.max_keys,
            SystemClock,
        ))),
        StoreKind::Redis => {
            let var = &config.store.url_env;
            let url = std::env::var(var)
                .ok()
                .filter(|u| !u.trim().is_empty())
                .ok_or_else(|| format!("[store] kind = \"redis\" needs the Redis URL in the environment variable {var}, which is not set"))?;
            let target = RedisTarget::parse(&url).map_err(|e| format!("{var}: {e}"))?;
            let settings = RedisSettings {
                target,
                timeout: config.store.timeout.0,
                on_error: config.store.on_error,
                local_share: config.store.local_share,
                local_max_keys: config.store.max_keys,
            };
            GatewayStore::Redis(
                RedisStore::start(settings, Some(Arc::new(telemetry.clone()))).await,
            )
        }
    };
    let token = std::env::var(&config.bypass.token_env).ok();
    Ok(Arc::new(RateLimiter {
        policies: PolicySet::from_config(config),
        store,
        bypass: Bypass::new(
            config.bypass.cidrs.iter().map(|c| c.0).collect(),
            token.as_deref(),
        ),
        headers: config.headers.ratelimit,
        ipv6_prefix: config.server.ipv6_prefix,
        on_error: config.store.on_error,
        hook: telemetry,
    }))
}

/// Forgets refilled buckets of the memory store every few seconds, so idle keys do not
/// hold memory until eviction needs their room.
pub(crate) async fn sweep(store: GatewayStore) {
    let GatewayStore::Memory(store) = store else {
        return;
    };
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let store = store.clone();
        let _ = tokio::task::spawn_blocking(move || store.sweep()).await;
    }
}
