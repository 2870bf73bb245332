//! Binding the listeners and running the gateway until shutdown.

use crate::admin::{self, AdminState};
use crate::health::UpstreamHealth;
use crate::limits;
use crate::server::{self, Drain, HeadLimits};
use crate::stack;
use crate::telemetry::Telemetry;
use portcullis_core::config::Config;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;

/// A gateway whose listeners are bound (so their addresses are known) but not yet serving.
pub(crate) struct Bound {
    config: Config,
    listener: TcpListener,
    admin: TcpListener,
}

impl Bound {
    /// Binds `[server] listen` and `[admin] listen`.
    pub(crate) async fn bind(config: Config) -> Result<Self, String> {
        let listener = bind(config.server.listen, "[server] listen").await?;
        let admin = bind(config.admin.listen, "[admin] listen").await?;
        Ok(Bound {
            config,
            listener,
            admin,
        })
    }

    /// Uses listeners the caller bound already (the demo picks free ports this way).
    pub(crate) fn from_listeners(
        config: Config,
        listener: TcpListener,
        admin: TcpListener,
    ) -> Self {
        Bound {
            config,
            listener,
            admin,
        }
    }

    pub(crate) fn listen_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.config.server.listen)
    }

    pub(crate) fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().unwrap_or(self.config.admin.listen)
    }

    /// Serves until `shutdown` resolves, then stops accepting and drains in-flight
    /// requests for up to `[server] shutdown_grace`.
    pub(crate) async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), String> {
        let Bound {
            config,
            listener,
            admin,
        } = self;
        let listen = listener.local_addr().map_err(|e| e.to_string())?;
        let admin_addr = admin.local_addr().map_err(|e| e.to_string())?;
        let upstream = &config.server.upstream;
        let health = UpstreamHealth::new(upstream.host.clone(), upstream.port);
        let telemetry = Telemetry::new(&config);
        let limiter = limits::build(&config, telemetry.clone()).await?;
        let service = stack::build(&config, telemetry.clone(), health.clone(), limiter.clone())?;
        let prober = tokio::spawn(health.clone().run_prober());
        let sweeper = tokio::spawn(limits::sweep(limiter.store.clone()));
        let drain = Drain::new();
        let admin_state = Arc::new(AdminState {
            telemetry: telemetry.clone(),
            health,
            limiter,
            trusted: portcullis_core::identity::TrustedProxies::new(
                config.server.trusted_proxies.iter().map(|c| c.0).collect(),
            ),
            admin_token: std::env::var(&config.admin.token_env)
                .ok()
                .filter(|t| !t.is_empty()),
            token_env: config.admin.token_env.clone(),
            upstream_url: upstream.to_string(),
            started: Instant::now(),
        });
        let (admin_shutdown, _admin_guard) = drain.watcher();
        let admin_task = tokio::spawn(admin::serve(admin, admin_state, admin_shutdown));
        tracing::info!(
            listen = %listen,
            admin = %admin_addr,
            upstream = %upstream,
            version = env!("CARGO_PKG_VERSION"),
            "listening"
        );
        let limits = HeadLimits {
            max_header_bytes: config.server.max_header_bytes,
            header_read_timeout: config.server.header_read_timeout.0,
        };
        tokio::select! {
            () = server::accept_loop(listener, service, limits, &drain) => {}
            () = shutdown => {}
        }
        let grace = config.server.shutdown_grace.0;
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "shutting down: draining in-flight requests"
        );
        drop(_admin_guard);
        let drained = drain.drain(grace).await;
        if drained {
            tracing::info!("drained; exiting");
        } else {
            tracing::warn!("grace period over with requests still in flight; exiting");
        }
        prober.abort();
        sweeper.abort();
        admin_task.abort();
        telemetry.flush();
        Ok(())
    }
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot bind {what} {addr}: {e}"))
}

/// Resolves on SIGTERM or SIGINT.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
