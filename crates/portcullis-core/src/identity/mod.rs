//! Who is the client, and did the request reach us over HTTPS?
//!
//! The trusted-proxy rule (SPEC "Client identity"): the client IP is the TCP peer unless
//! the peer is a trusted proxy; then it is the right-most `X-Forwarded-For` (or
//! `Forwarded: for=`) address that is not itself trusted. Walking from the right stops at
//! the first untrusted hop, so nothing a client writes to the left of it can choose its
//! identity.

mod forwarded;
mod trusted;

pub use forwarded::{parse_forwarded_for, parse_forwarded_proto, parse_xff_entry};
pub use trusted::TrustedProxies;

use std::net::{IpAddr, Ipv6Addr};

/// The forwarding headers of a request, as sent (every occurrence, in order).
#[derive(Debug, Default, Clone, Copy)]
pub struct ForwardingHeaders<'a> {
    /// All `X-Forwarded-For` values.
    pub x_forwarded_for: &'a [&'a str],
    /// All `Forwarded` values.
    pub forwarded: &'a [&'a str],
    /// All `X-Forwarded-Proto` values.
    pub x_forwarded_proto: &'a [&'a str],
}

/// The client as the gateway sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The client IP after the trusted-proxy rule.
    pub ip: IpAddr,
    /// Whether the request reached the service over HTTPS.
    pub https: bool,
}

/// Applies the trusted-proxy rule to a request from `peer`.
///
/// `tls` says whether the gateway itself terminated TLS for this connection.
pub fn identify(
    peer: IpAddr,
    tls: bool,
    trusted: &TrustedProxies,
    headers: ForwardingHeaders<'_>,
) -> ClientIdentity {
    let peer = canonical_ip(peer);
    if !trusted.contains(peer) {
        return ClientIdentity {
            ip: peer,
            https: tls,
        };
    }
    ClientIdentity {
        ip: client_ip_behind_trusted_peer(peer, trusted, headers),
        https: tls || forwarded_https(headers),
    }
}

fn client_ip_behind_trusted_peer(
    peer: IpAddr,
    trusted: &TrustedProxies,
    headers: ForwardingHeaders<'_>,
) -> IpAddr {
    let mut hops: Vec<Option<IpAddr>> = Vec::new();
    if !headers.x_forwarded_for.is_empty() {
        for value in headers.x_forwarded_for {
            hops.extend(value.split(',').map(parse_xff_entry));
        }
    } else {
        for value in headers.forwarded {
            hops.extend(parse_forwarded_for(value));
        }
    }
    // Right to left: each trusted hop vouches for the one before it. An entry we cannot
    // parse (`unknown`, an obfuscated id, garbage) cannot be keyed on, and nothing left
    // of it is vouched for, so the last trusted address stands for the client.
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop {
            Some(ip) => {
                let ip = canonical_ip(*ip);
                client = ip;
                if !trusted.contains(ip) {
                    break;
                }
            }
            None => break,
        }
    }
    client
}

/// The last `X-Forwarded-Proto` value, else the last `Forwarded` element's `proto`.
fn forwarded_https(headers: ForwardingHeaders<'_>) -> bool {
    let last_xfp = headers
        .x_forwarded_proto
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .rfind(|v| !v.is_empty());
    let proto = match last_xfp {
        Some(p) => Some(p.to_owned()),
        None => headers
            .forwarded
            .iter()
            .flat_map(|v| v.split(','))
            .next_back()
            .and_then(parse_forwarded_proto),
    };
    proto.is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack socket reports) are
/// the IPv4 client they stand for.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Appends `ip` in dotted decimal, by hand: this runs for every limited or forwarded
/// request, and `Display` goes through the formatter four times.
pub fn push_ipv4(out: &mut String, ip: std::net::Ipv4Addr) {
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
}

/// The client's key form: the IPv4 address, or the IPv6 prefix in CIDR form
/// (`2001:db8:1:2::/64`), since one IPv6 host can use a whole /64.
pub fn client_key(ip: IpAddr, ipv6_prefix: u8) -> String {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => {
            let mut out = String::with_capacity(15);
            push_ipv4(&mut out, v4);
            out
        }
        IpAddr::V6(v6) => {
            let prefix = ipv6_prefix.min(128);
            let mask: u128 = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            let net = Ipv6Addr::from(u128::from(v6) & mask);
            format!("{net}/{prefix}")
        }
    }
}

#[cfg(test)]
mod tests;
