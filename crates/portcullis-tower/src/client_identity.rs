//! Who the client is, after the trusted-proxy rule.
//!
//! The server that accepts connections inserts a [`PeerAddr`] extension into each
//! request; this layer turns it, with the forwarding headers, into a [`ClientInfo`]
//! extension that later layers (rate limiting, security headers, logs) read.
//!
//! ```
//! use portcullis_core::identity::TrustedProxies;
//! use portcullis_tower::ClientIdentityLayer;
//! let layer = ClientIdentityLayer::new(TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]));
//! # let _ = layer;
//! ```

use http::{HeaderMap, Request};
use portcullis_core::identity::{identify, ClientIdentity, ForwardingHeaders, TrustedProxies};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// The TCP peer of the connection a request arrived on (inserted by the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Marks requests that arrived over TLS terminated by this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsConnection;

/// The client as the gateway sees it (request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Client IP and HTTPS, after the trusted-proxy rule.
    pub identity: ClientIdentity,
    /// The peer is inside `trusted_proxies`: the forwarding headers it sent were believed.
    /// Those of any other peer are claims its client made (a proxy drops its `Forwarded`).
    pub trusted_peer: bool,
}

/// Adds [`ClientInfo`] to every request.
#[derive(Debug, Clone)]
pub struct ClientIdentityLayer {
    trusted: Arc<TrustedProxies>,
}

impl ClientIdentityLayer {
    /// Believes forwarding headers only from `trusted` peers. (IPv6 prefixes are a
    /// keying concern: see the rate limiter's `ipv6_prefix`.)
    pub fn new(trusted: TrustedProxies) -> Self {
        ClientIdentityLayer {
            trusted: Arc::new(trusted),
        }
    }
}

impl ClientIdentityLayer {
    /// The trusted proxies.
    pub(crate) fn trusted(&self) -> Arc<TrustedProxies> {
        self.trusted.clone()
    }
}

impl<S> Layer<S> for ClientIdentityLayer {
    type Service = ClientIdentityService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ClientIdentityService {
            inner,
            trusted: self.trusted.clone(),
        }
    }
}

/// The service of [`ClientIdentityLayer`].
#[derive(Debug, Clone)]
pub struct ClientIdentityService<S> {
    inner: S,
    trusted: Arc<TrustedProxies>,
}

impl<S, B> Service<Request<B>> for ClientIdentityService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let info = client_info(&req, &self.trusted);
        req.extensions_mut().insert(info);
        self.inner.call(req)
    }
}

/// The [`ClientInfo`] of `req`, from its [`PeerAddr`] and, when the peer is trusted, its
/// forwarding headers.
pub(crate) fn client_info<B>(req: &Request<B>, trusted: &TrustedProxies) -> ClientInfo {
    let peer = req.extensions().get::<PeerAddr>().map_or(
        SocketAddr::from((IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)),
        |p| p.0,
    );
    let tls = req.extensions().get::<TlsConnection>().is_some();
    let trusted_peer = trusted.contains(portcullis_core::identity::canonical_ip(peer.ip()));
    let identity = identify_request(peer.ip(), tls, trusted_peer, trusted, req.headers());
    ClientInfo {
        peer,
        identity,
        trusted_peer,
    }
}

fn identify_request(
    peer: IpAddr,
    tls: bool,
    trusted_peer: bool,
    trusted: &TrustedProxies,
    headers: &HeaderMap,
) -> ClientIdentity {
    if !trusted_peer {
        // The common case needs no header collection at all.
        return identify(peer, tls, trusted, ForwardingHeaders::default());
    }
    let values = |name: &str| -> Vec<&str> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    };
    let xff = values("x-forwarded-for");
    let fwd = values("forwarded");
    let xfp = values("x-forwarded-proto");
    identify(
        peer,
        tls,
        trusted,
        ForwardingHeaders {
            x_forwarded_for: &xff,
            forwarded: &fwd,
            x_forwarded_proto: &xfp,
        },
    )
}
