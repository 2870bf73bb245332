//! The gateway's rate limiter: policies from the configuration over the memory store.

use crate::telemetry::Telemetry;
use portcullis_core::config::Config;
use portcullis_core::policy::PolicySet;
use portcullis_store::clock::SystemClock;
use portcullis_store::memory::MemoryStore;
use portcullis_tower::rate_limit::Bypass;
use portcullis_tower::RateLimiter;
use std::sync::Arc;
use std::time::Duration;

/// The store the gateway uses.
pub(crate) type GatewayStore = Arc<MemoryStore<SystemClock>>;
/// The limiter the gateway uses.
pub(crate) type Limiter = RateLimiter<GatewayStore, Telemetry>;

pub(crate) fn build(config: &Config, telemetry: Telemetry) -> Arc<Limiter> {
    let store = Arc::new(MemoryStore::new(config.store.max_keys, SystemClock));
    let token = std::env::var(&config.bypass.token_env).ok();
    Arc::new(RateLimiter {
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
    })
}

/// Forgets refilled buckets every few seconds, so idle keys do not hold memory until
/// eviction needs their room.
pub(crate) async fn sweep(store: GatewayStore) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let store = store.clone();
        let _ = tokio::task::spawn_blocking(move || store.sweep()).await;
    }
}
