//! Parsers for the address lists of `X-Forwarded-For` and `Forwarded` (RFC 7239).

use std::net::{IpAddr, SocketAddr};

/// One `X-Forwarded-For` entry: `203.0.113.7`, `203.0.113.7:4711`, `2001:db8::1` or
/// `[2001:db8::1]:4711`. `None` for anything else.
pub fn parse_xff_entry(entry: &str) -> Option<IpAddr> {
    parse_node(entry.trim())
}

fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = node.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    // `[v6]` without a port.
    node.strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .and_then(|n| n.parse::<IpAddr>().ok())
}

/// The `for=` nodes of one `Forwarded` header value, in order; `None` for nodes that are
/// not addresses (`unknown`, obfuscated identifiers) so callers can stop there.
pub fn parse_forwarded_for(value: &str) -> Vec<Option<IpAddr>> {
    value
        .split(',')
        .filter_map(|element| forwarded_param(element, "for"))
        .map(|node| parse_node(&node))
        .collect()
}

/// The `proto=` parameter of one `Forwarded` element.
pub fn parse_forwarded_proto(element: &str) -> Option<String> {
    forwarded_param(element, "proto")
}

fn forwarded_param(element: &str, name: &str) -> Option<String> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case(name) {
            return None;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        Some(v.to_owned())
    })
}
