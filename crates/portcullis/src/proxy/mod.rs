//! The innermost service: forwards a request to the upstream over pooled keep-alive
//! HTTP/1.1 connections and streams the response back.
//!
//! Every failure here is answered, never returned: who caused it picks the status
//! (the client's body over the limit: 413; the upstream refusing: 502; the upstream
//! too slow: 504).

mod body;
mod headers;
mod pool;

pub(crate) use body::{ProxyBody, ProxyRequestBody};

use crate::health::UpstreamHealth;
use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use pool::{Pool, SendError};
use portcullis_core::problem::Problem;
use portcullis_tower::body_limit::{is_length_limit_error, too_large};
use portcullis_tower::{problem, ClientInfo, UpstreamTiming};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

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

    fn call(&mut self, req: Request<ProxyRequestBody>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move { Ok(inner.forward(req).await) })
    }
}

impl Inner {
    async fn forward(&self, mut req: Request<ProxyRequestBody>) -> Response<ProxyBody> {
        let upgrade = headers::is_upgrade(&req);
        // Kept aside: what a problem response needs once the request has been sent.
        let id = req
            .extensions()
            .get::<portcullis_tower::RequestId>()
            .cloned();
        // A clone of the URI shares its bytes; the path is copied only for an error.
        let uri = req.uri().clone();
        let answer = |p: Problem| -> Response<ProxyBody> {
            let p = p
                .with_instance(uri.path())
                .with_request_id(id.as_ref().map(|i| i.as_str()).unwrap_or_default());
            problem::response(p)
        };

        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let client = req.extensions().get::<ClientInfo>().copied();
        if let Err(detail) = self.prepare(&mut req, client, upgrade) {
            return answer(Problem::new(400, "bad_request", detail));
        }

        let started = Instant::now();
        let result = tokio::time::timeout(self.request_timeout, self.pool.send(req)).await;
        let upstream_time = started.elapsed();
        let (mut res, lease) = match result {
            Ok(Ok(pair)) => {
                self.health.mark(true);
                pair
            }
            Ok(Err(SendError::Connect(e))) => {
                self.health.mark(false);
                tracing::debug!(error = %e, "cannot connect to the upstream");
                return answer(Problem::new(
                    502,
                    "upstream_unreachable",
                    format!("upstream {} is unreachable", self.authority),
                ));
            }
            Ok(Err(SendError::Exchange(e))) => {
                if is_length_limit_error(&e) {
                    return answer(too_large(self.max_body_bytes));
                }
                tracing::debug!(error = %e, "upstream exchange failed");
                return answer(Problem::new(
                    502,
                    "upstream_error",
                    "the upstream closed the connection or sent an invalid response",
                ));
            }
            Err(_) => {
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

        // Room for the headers the layers above add (request id, latency, rate-limit
        // and security headers) without growing the map several times.
        res.headers_mut().reserve(16);
        let switching = res.status() == StatusCode::SWITCHING_PROTOCOLS;
        headers::strip_hop_by_hop(res.headers_mut(), upgrade && switching);
        res.extensions_mut().insert(UpstreamTiming(upstream_time));
        if let (true, Some(client_upgrade)) = (switching, client_upgrade) {
            let upstream_upgrade = hyper::upgrade::on(&mut res);
            tokio::spawn(tunnel(client_upgrade, upstream_upgrade));
        }
        // An upgraded connection belongs to its tunnel from now on.
        let lease = (!switching).then_some(lease);
        res.map(|body| ProxyBody::upstream(body, lease))
    }

    /// Rewrites the request for the upstream: absolute URI, HTTP/1.1, no hop-by-hop
    /// headers, and the `X-Forwarded-*` set.
    fn prepare(
        &self,
        req: &mut Request<ProxyRequestBody>,
        client: Option<ClientInfo>,
        upgrade: bool,
    ) -> Result<(), String> {
        let path_and_query = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let host = req
            .headers()
            .get(http::header::HOST)
            .cloned()
            .or_else(|| {
                req.uri()
                    .authority()
                    .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
            })
            // HTTP/1.1 needs a Host: without one from the client, name the upstream.
            .or_else(|| http::HeaderValue::from_str(self.authority.as_str()).ok());
        // Origin form (`/path?query`), as HTTP/1.1 sends it to an origin server.
        *req.uri_mut() = Uri::from(path_and_query);
        *req.version_mut() = http::Version::HTTP_11;
        let headers = req.headers_mut();
        headers::strip_hop_by_hop(headers, upgrade);
        headers::set_forwarded(headers, client, host);
        Ok(())
    }
}

/// Copies bytes both ways between an upgraded client and upstream connection.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// A response carrying `bytes` (the problem builder's body type).
impl From<Bytes> for ProxyBody {
    fn from(bytes: Bytes) -> Self {
        ProxyBody::full(bytes)
    }
}
