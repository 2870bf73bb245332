//! The innermost service: forwards a request to the upstream over pooled keep-alive
//! HTTP/1.1 connections and streams the response back.
//!
//! Every failure here is answered, never returned: who caused it picks the status
//! (the client's body over the limit: 413; the upstream refusing: 502; the upstream
//! too slow: 504).

mod body;
mod h1;
mod headers;
mod pool;

pub(crate) use body::{ProxyBody, ProxyRequestBody};
pub(crate) use headers::connection_tokens;

use crate::health::UpstreamHealth;
use crate::server::ConnectionGuard;
use bytes::Bytes;
use h1::{Conn, ExchangeError, Framing, ResponseDecoder};
use http::{Request, Response};
use hyper_util::rt::TokioIo;
use pool::{Pool, SendError};
use portcullis_core::problem::Problem;
use portcullis_tower::body_limit::{is_length_limit_error, too_large};
use portcullis_tower::problem::{self, recycled_extensions};
use portcullis_tower::{ClientInfo, UpstreamTiming};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// Forwards requests to one upstream.
#[derive(Clone)]
pub(crate) struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Arc<Pool>,
    authority: http::uri::Authority,
    request_timeout: Duration,
    max_body_bytes: u64,
    health: Arc<UpstreamHealth>,
}

impl Proxy {
    pub(crate) fn new(
        authority: &str,
        request_timeout: Duration,
        max_body_bytes: u64,
        health: Arc<UpstreamHealth>,
    ) -> Result<Self, String> {
        let authority = authority
            .parse::<http::uri::Authority>()
            .map_err(|e| format!("invalid upstream authority {authority:?}: {e}"))?;
        let pool = Pool::new(
            authority.as_str().to_owned(),
            request_timeout.min(Duration::from_secs(5)),
        );
        Ok(Proxy {
            inner: Arc::new(Inner {
                pool,
                authority,
                request_timeout,
                max_body_bytes,
                health,
            }),
        })
    }
}

impl tower::Service<Request<ProxyRequestBody>> for Proxy {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    /// The request is readied here, before its future exists: the future then holds
    /// its head once (an `async` function keeps its arguments for its whole life, so a
    /// request passed whole would be held twice), which keeps it small to box and move.
    fn call(&mut self, mut req: Request<ProxyRequestBody>) -> Self::Future {
        let upgrade = headers::is_upgrade(&req);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        // Held by the tunnel, so that shutdown waits for it like for a connection (and its
        // thread counts it). Looked up for upgrades only.
        let drain_guard = upgrade
            .then(|| req.extensions_mut().remove::<ConnectionGuard>())
            .flatten();
        let client = req.extensions().get::<ClientInfo>().copied();
        let forwarded = self.inner.prepare(&mut req, client, upgrade);
        let (parts, body) = req.into_parts();
        let upgrades = client_upgrade.map(|client| Box::new((client, drain_guard)));
        Box::pin(self.inner.clone().forward(parts, body, forwarded, upgrades))
    }
}

/// The client's side of an upgrade and the guard its tunnel holds (boxed: rare).
type Upgrades = Box<(hyper::upgrade::OnUpgrade, Option<ConnectionGuard>)>;

impl Inner {
    async fn forward(
        self: Arc<Self>,
        mut parts: http::request::Parts,
        body: ProxyRequestBody,
        forwarded: headers::Forwarded,
        upgrades: Option<Upgrades>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        // The head stays here, lent to the exchange: a problem response needs its path
        // and request id, and nothing is copied for the requests that need none.
        let answer = |p: Problem| -> Result<Response<ProxyBody>, Infallible> {
            Ok(problem::for_parts(&parts, p))
        };

        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started) + self.request_timeout;
        let result = self
            .pool
            .send(&parts, body, &forwarded, started, deadline)
            .await;
        let upstream_time = started.elapsed();
        let (head, lease) = match result {
            Ok(pair) => {
                self.health.mark(true);
                pair
            }
            Err(SendError::Connect(e)) => {
                self.health.mark(false);
                tracing::debug!(error = %e, "cannot connect to the upstream");
                return answer(Problem::new(
                    502,
                    "upstream_unreachable",
                    format!("upstream {} is unreachable", self.authority),
                ));
            }
            Err(SendError::Exchange(ExchangeError::Body(e))) => {
                if is_length_limit_error(e.as_ref()) {
                    return answer(too_large(self.max_body_bytes));
                }
                tracing::debug!(error = %e, "request body failed");
                return answer(Problem::new(
                    400,
                    "bad_request",
                    "the request body could not be read",
                ));
            }
            Err(SendError::Exchange(e)) => {
                tracing::debug!(error = %e, "upstream exchange failed");
                return answer(upstream_error());
            }
            Err(SendError::TimedOut) => {
                return answer(Problem::new(
                    504,
                    "upstream_timeout",
                    format!(
                        "upstream sent no response headers within {}ms",
                        self.request_timeout.as_millis()
                    ),
                ))
            }
        };

        let switching = head.framing == Framing::Upgrade;
        let mut res = Response::new(());
        *res.status_mut() = head.status;
        *res.version_mut() = head.version;
        *res.headers_mut() = head.headers;
        headers::strip_hop_by_hop(res.headers_mut(), upgrades.is_some() && switching);
        if switching && upgrades.is_none() {
            // A protocol switch the client did not ask for cannot be passed on.
            tracing::debug!("the upstream switched protocols unasked");
            return answer(upstream_error());
        }
        *res.extensions_mut() = recycled_extensions(&mut parts.extensions);
        res.extensions_mut().insert(UpstreamTiming(upstream_time));
        if let Some(upgrades) = upgrades.filter(|_| switching) {
            let (client_upgrade, drain_guard) = *upgrades;
            // The connection belongs to its tunnel from now on.
            tokio::spawn(tunnel(client_upgrade, lease.into_conn(), drain_guard));
            return Ok(res.map(|()| ProxyBody::full(Bytes::new())));
        }
        Ok(res.map(|()| ProxyBody::upstream(ResponseDecoder::new(head.framing), lease)))
    }

    /// Readies the request for the upstream: no hop-by-hop headers, a `Host`, and the
    /// `X-Forwarded-*` fields to send with it. The request line is written in origin
    /// form (`/path?query`) and as HTTP/1.1 whatever the client's version.
    fn prepare(
        &self,
        req: &mut Request<ProxyRequestBody>,
        client: Option<ClientInfo>,
        upgrade: bool,
    ) -> headers::Forwarded {
        let given = req.headers().get(http::header::HOST).cloned();
        let host = given.clone().or_else(|| {
            req.uri()
                .authority()
                .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
                // HTTP/1.1 needs a Host: without one from the client, name the upstream.
                .or_else(|| http::HeaderValue::from_str(self.authority.as_str()).ok())
        });
        let headers = req.headers_mut();
        headers::strip_hop_by_hop(headers, upgrade);
        if given.is_none() {
            if let Some(host) = &host {
                headers.insert(http::header::HOST, host.clone());
            }
        }
        headers::Forwarded { client, host }
    }
}

fn upstream_error() -> Problem {
    Problem::new(
        502,
        "upstream_error",
        "the upstream closed the connection or sent an invalid response",
    )
}

/// Copies bytes both ways between an upgraded client and the upstream connection, the
/// upstream's bytes that arrived with its 101 response first. `_drain` keeps shutdown
/// waiting until the tunnel closes (or `shutdown_grace` ends).
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: Conn,
    _drain: Option<ConnectionGuard>,
) {
    let client = match client.await {
        Ok(client) => client,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let (mut upstream, early) = upstream.into_parts();
    if !early.is_empty() && client.write_all(&early).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// A response carrying `bytes` (the problem builder's body type).
impl From<Bytes> for ProxyBody {
    fn from(bytes: Bytes) -> Self {
        ProxyBody::full(bytes)
    }
}
