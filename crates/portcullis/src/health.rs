//! Upstream reachability: marked by the proxy's outcomes and by a background TCP probe,
//! so `/readyz` and `/health` are right without traffic.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Whether the upstream accepts connections.
#[derive(Debug)]
pub(crate) struct UpstreamHealth {
    reachable: AtomicBool,
    probes: AtomicU64,
    host: String,
    port: u16,
}

impl UpstreamHealth {
    pub(crate) fn new(host: String, port: u16) -> Arc<Self> {
        Arc::new(UpstreamHealth {
            reachable: AtomicBool::new(false),
            probes: AtomicU64::new(0),
            host,
            port,
        })
    }

    pub(crate) fn mark(&self, reachable: bool) {
        self.reachable.store(reachable, Ordering::Relaxed);
    }

    pub(crate) fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Whether at least one probe has finished (before that, "unreachable" means "unknown").
    pub(crate) fn probed(&self) -> bool {
        self.probes.load(Ordering::Relaxed) > 0
    }

    /// A TCP connect that sends no request.
    pub(crate) async fn probe(&self) -> bool {
        let connect = tokio::net::TcpStream::connect((self.host.as_str(), self.port));
        let ok = matches!(
            tokio::time::timeout(Duration::from_secs(1), connect).await,
            Ok(Ok(_))
        );
        self.mark(ok);
        self.probes.fetch_add(1, Ordering::Relaxed);
        ok
    }

    /// Probes once a second while unreachable, every five seconds otherwise.
    pub(crate) async fn run_prober(self: Arc<Self>) {
        loop {
            let ok = self.probe().await;
            let pause = if ok { 5 } else { 1 };
            tokio::time::sleep(Duration::from_secs(pause)).await;
        }
    }
}
