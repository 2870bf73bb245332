//! Binding the listeners and running the gateway until shutdown.

use crate::admin::{self, AdminState};
use crate::health::UpstreamHealth;
use crate::limits;
use crate::server::{self, Drain, DrainHandle, HeadLimits};
use crate::stack;
use crate::telemetry::Telemetry;
use portcullis_core::config::Config;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::watch;

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
        // One service (and so one upstream connection pool) per serving thread.
        let workers = serving_threads();
        let load_shed = stack::load_shed(&config);
        let mut services = Vec::with_capacity(workers);
        for _ in 0..workers {
            services.push(stack::build(
                &config,
                telemetry.clone(),
                health.clone(),
                limiter.clone(),
                load_shed.clone(),
            )?);
        }
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
        let listener = listener
            .into_std()
            .map_err(|e| format!("cannot share the listener: {e}"))?;
        let (released_tx, released) = watch::channel(false);
        let (balance, inboxes) = server::Balance::new(workers);
        let mut threads = Vec::with_capacity(workers);
        for (i, (service, inbox)) in services.into_iter().zip(inboxes).enumerate() {
            let listener = listener
                .try_clone()
                .map_err(|e| format!("cannot share the listener: {e}"))?;
            let handle = drain.handle();
            let released = released.clone();
            let balance = balance.clone();
            let thread = std::thread::Builder::new()
                .name(format!("portcullis-serve-{i}"))
                .spawn(move || {
                    let accept = move || -> std::io::Result<server::Acceptor> {
                        Ok(server::Acceptor {
                            listener: TcpListener::from_std(listener)?,
                            thread: i,
                            balance,
                            inbox,
                        })
                    };
                    serve_on_this_thread(accept, service, limits, handle, released)
                })
                .map_err(|e| format!("cannot start a serving thread: {e}"))?;
            threads.push(thread);
        }
        drop(listener);
        shutdown.await;
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
        // Connections still open after the grace period end with their threads' runtimes.
        let _ = released_tx.send(true);
        for thread in threads {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        prober.abort();
        sweeper.abort();
        admin_task.abort();
        telemetry.flush();
        Ok(())
    }
}

/// How many threads accept and serve connections: one per CPU the process may use.
fn serving_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A serving thread: a single-threaded runtime that accepts on the shared listener and
/// serves each connection it accepted to the end, with its own upstream pool.
///
/// Why not one multi-threaded runtime: a request, its upstream exchange and its response
/// then stay on one core, with no work stealing and no cross-thread wake-ups (the
/// futex calls and context switches that cost the gateway a third of its CPU under
/// load), the way nginx's worker processes run. The admin listener, the probes and the
/// Redis connection stay on the main runtime.
fn serve_on_this_thread(
    acceptor: impl FnOnce() -> std::io::Result<server::Acceptor>,
    service: crate::stack::GatewayService,
    limits: HeadLimits,
    drain: DrainHandle,
    mut released: watch::Receiver<bool>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a serving thread's runtime");
            return;
        }
    };
    runtime.block_on(async move {
        // Registered with this thread's runtime, so made inside it.
        match acceptor() {
            Ok(acceptor) => server::accept_loop(acceptor, service, limits, &drain).await,
            Err(e) => tracing::error!(error = %e, "cannot register the listener"),
        }
        // Stop holding the drain open; the connections' own guards keep it waiting.
        drop(drain);
        // Keep serving the connections accepted here until the drain is over.
        while !*released.borrow_and_update() {
            if released.changed().await.is_err() {
                break;
            }
        }
    });
}

/// Connections the kernel queues before they are accepted. `TcpListener::bind` asks for
/// 128 (std's default), which a burst of new clients overflows: their SYNs are dropped
/// and retried a second later. The kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, String> {
    let listen = || -> std::io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As `TcpListener::bind` does: a restart can bind while old connections linger.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|e| format!("cannot bind {what} {addr}: {e}"))
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
