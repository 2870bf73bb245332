use portcullis_core::identity::client_key;
use portcullis_core::policy::RequestFacts;
use std::net::{IpAddr, Ipv4Addr};

use crate::ClientInfo;

/// [`RequestFacts`] over an HTTP request (the client from its [`ClientInfo`]).
pub struct HttpFacts<'a, B> {
    req: &'a http::Request<B>,
    ip: IpAddr,
    client_key: String,
}

impl<'a, B> HttpFacts<'a, B> {
    /// Facts of `req`; IPv6 clients keyed by `ipv6_prefix`.
    pub fn new(req: &'a http::Request<B>, ipv6_prefix: u8) -> Self {
        let ip = req
            .extensions()
            .get::<ClientInfo>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.identity.ip);
        HttpFacts {
            req,
            ip,
            client_key: client_key(ip, ipv6_prefix),
        }
    }

    /// The client IP after the trusted-proxy rule.
    pub fn client_ip(&self) -> IpAddr {
        self.ip
    }
}

impl<B> RequestFacts for HttpFacts<'_, B> {
    fn client_key(&self) -> &str {
        &self.client_key
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.req.headers().get(name).and_then(|v| v.to_str().ok())
    }

    fn query(&self, name: &str) -> Option<&str> {
        self.req.uri().query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }
}
