//! `portcullis demo`: a sample API with the gateway in front of it, on loopback.
//!
//! Nothing is simulated: the sample API is a real HTTP server on its own port and every
//! request goes through the same gateway `serve` runs.

use super::{init_tracing, runtime, Failure};
use crate::gateway::{shutdown_signal, Bound};
use portcullis_core::config::{LogFormat, UpstreamUrl};

/// The seed tiers (the same file `check` and the tests read).
const TIERS: &str = include_str!("../../../../examples/tiers.toml");
const TIERS_NAME: &str = "examples/tiers.toml";
use std::net::SocketAddr;
use tokio::net::TcpListener;

pub(super) fn run() -> Result<(), Failure> {
    runtime()?.block_on(async {
        let api = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Failure::Runtime(format!("cannot bind the sample API: {e}")))?;
        let api_addr = api
            .local_addr()
            .map_err(|e| Failure::Runtime(e.to_string()))?;
        tokio::spawn(crate::sample_api::serve(api));

        let mut config = portcullis_core::config::load(TIERS_NAME, Some(TIERS), Vec::new())
            .map_err(|d| Failure::Runtime(format!("the embedded example is invalid: {d}")))?;
        config.server.upstream =
            UpstreamUrl::parse(&format!("http://{api_addr}")).map_err(Failure::Runtime)?;
        config.log.format = LogFormat::Pretty;
        init_tracing(&config);
        let listener = bind_preferred(8080).await?;
        let admin = bind_preferred(9090).await?;
        let bound = Bound::from_listeners(config, listener, admin);
        print_banner(bound.listen_addr(), bound.admin_addr(), api_addr);
        bound.run(shutdown_signal()).await.map_err(Failure::Runtime)
    })
}

/// The well-known port when it is free, else any free port.
async fn bind_preferred(port: u16) -> Result<TcpListener, Failure> {
    match TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => Ok(l),
        Err(_) => TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Failure::Runtime(format!("cannot bind a loopback port: {e}"))),
    }
}

fn print_banner(gw: SocketAddr, admin: SocketAddr, api: SocketAddr) {
    let base = format!("http://{gw}");
    println!(
        "\nportcullis demo: the gateway on {base} in front of a sample API on http://{api}\n\
         with the seed tiers of examples/tiers.toml (auth: 10/min per IP on POST /api/auth/*, ...)\n\
         (admin on http://{admin}; Ctrl-C stops both)\n\n\
         Try:\n\
         \x20 curl -i {base}/api/items\n\
         \x20 curl -i {base}/api/items/2\n\
         \x20 curl -i -X POST {base}/api/auth/login -d '{{\"user\":\"ada\",\"password\":\"x\"}}'\n\
         \x20 curl -i {base}/api/export\n\
         \x20 curl -i '{base}/api/slow?ms=300'\n\
         \x20 curl -N {base}/api/stream\n\
         \x20 curl -i -H 'X-Request-ID: 0f8fad5b-d9cb-469f-a165-70867728950e' {base}/api/items\n\
         \x20 for i in $(seq 12); do curl -s -o /dev/null -w '%{{http_code}} ' -X POST {base}/api/auth/login -d '{{\"user\":\"ada\"}}'; done; echo\n\
         \x20 curl -i -X POST {base}/api/auth/login -d '{{}}'   # after the loop: 429, Retry-After, problem+json\n\
         \x20 curl -s http://{admin}/health\n\
         \x20 curl -s http://{admin}/metrics | grep portcullis_requests_total\n\n\
         Access log (one JSON line per request) follows:\n"
    );
}
