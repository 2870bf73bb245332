use super::*;
use ipnet::IpNet;

fn trusted(nets: &[&str]) -> TrustedProxies {
    TrustedProxies::new(nets.iter().map(|n| n.parse::<IpNet>().unwrap()).collect())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn with_xff<'a>(xff: &'a [&'a str]) -> ForwardingHeaders<'a> {
    ForwardingHeaders {
        x_forwarded_for: xff,
        ..Default::default()
    }
}

#[test]
fn untrusted_peer_cannot_choose_its_ip() {
    let t = trusted(&["10.0.0.0/8"]);
    let id = identify(ip("198.51.100.9"), false, &t, with_xff(&["1.2.3.4"]));
    assert_eq!(id.ip, ip("198.51.100.9"));
}

#[test]
fn trusted_peer_gives_rightmost_untrusted_hop() {
    let t = trusted(&["10.0.0.0/8"]);
    let xff = ["6.6.6.6, 203.0.113.7", "10.1.1.1"];
    let id = identify(ip("10.0.0.1"), false, &t, with_xff(&xff));
    assert_eq!(id.ip, ip("203.0.113.7"));
}

#[test]
fn trusted_peer_without_headers_is_the_client() {
    let t = trusted(&["10.0.0.0/8"]);
    let id = identify(ip("10.0.0.1"), false, &t, ForwardingHeaders::default());
    assert_eq!(id.ip, ip("10.0.0.1"));
    let all_trusted = ["10.2.2.2"];
    let id = identify(ip("10.0.0.1"), false, &t, with_xff(&all_trusted));
    assert_eq!(id.ip, ip("10.2.2.2"));
}

#[test]
fn garbage_entry_stops_the_walk() {
    let t = trusted(&["10.0.0.0/8"]);
    let xff = ["1.2.3.4, garbage, 10.9.9.9"];
    let id = identify(ip("10.0.0.1"), false, &t, with_xff(&xff));
    assert_eq!(id.ip, ip("10.9.9.9"));
}

#[test]
fn ports_and_brackets_in_xff() {
    assert_eq!(
        parse_xff_entry(" 203.0.113.7:4711"),
        Some(ip("203.0.113.7"))
    );
    assert_eq!(parse_xff_entry("[2001:db8::1]:80"), Some(ip("2001:db8::1")));
    assert_eq!(parse_xff_entry("[2001:db8::1]"), Some(ip("2001:db8::1")));
    assert_eq!(parse_xff_entry("unknown"), None);
}

#[test]
fn forwarded_header_is_used_without_xff() {
    let t = trusted(&["10.0.0.0/8"]);
    let fwd = ["for=192.0.2.60;proto=https, for=\"[2001:db8:cafe::17]:4711\""];
    let h = ForwardingHeaders {
        forwarded: &fwd,
        ..Default::default()
    };
    let id = identify(ip("10.0.0.1"), false, &t, h);
    assert_eq!(id.ip, ip("2001:db8:cafe::17"));
    assert!(!id.https, "the last element has no proto");
}

#[test]
fn https_only_from_trusted_proxies_last_value_wins() {
    let t = trusted(&["10.0.0.0/8"]);
    let xfp = ["http, HTTPS"];
    let h = ForwardingHeaders {
        x_forwarded_proto: &xfp,
        ..Default::default()
    };
    assert!(identify(ip("10.0.0.1"), false, &t, h).https);
    assert!(!identify(ip("192.0.2.1"), false, &t, h).https);
    let xfp = ["https, http"];
    let h = ForwardingHeaders {
        x_forwarded_proto: &xfp,
        ..Default::default()
    };
    assert!(!identify(ip("10.0.0.1"), false, &t, h).https);
    assert!(
        identify(ip("192.0.2.1"), true, &t, h).https,
        "TLS at the gateway"
    );
}

#[test]
fn ipv6_keyed_by_prefix_and_mapped_v4_is_v4() {
    assert_eq!(
        client_key(ip("2001:db8:1:2:aaaa::1"), 64),
        "2001:db8:1:2::/64"
    );
    assert_eq!(client_key(ip("::ffff:203.0.113.7"), 64), "203.0.113.7");
    assert_eq!(client_key(ip("203.0.113.7"), 64), "203.0.113.7");
    for v4 in [
        "0.0.0.0",
        "255.255.255.255",
        "10.0.100.9",
        "1.20.199.250",
        "100.10.1.0",
    ] {
        assert_eq!(client_key(ip(v4), 64), v4);
    }
    assert_eq!(client_key(ip("2001:db8::1"), 0), "::/0");
    assert_eq!(client_key(ip("2001:db8::1"), 128), "2001:db8::1/128");
}
