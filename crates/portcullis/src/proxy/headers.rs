//! Hop-by-hop stripping and the `X-Forwarded-*` headers (SPEC "Protocols", "Client identity").

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Request;
use portcullis_tower::ClientInfo;

static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
];

/// Never removed because `Connection` names them.
const PROTECTED: [&str; 2] = ["host", "x-request-id"];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Where `name` is in [`HOP_BY_HOP`] (`HOP_BY_HOP.len()` for Proxy-Authorization), found
/// by its length first: most names are ruled out by one comparison, where comparing
/// with each of the nine names costs a tenth of the whole response path.
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    let s = name.as_str();
    let candidate = match s.len() {
        2 => 2,
        7 if s.as_bytes()[0] == b't' => 3,
        7 => 5,
        10 if s.as_bytes()[0] == b'c' => 0,
        10 => 1,
        16 => 6,
        17 => 4,
        18 => 7,
        19 => return (s == "proxy-authorization").then_some(HOP_BY_HOP.len()),
        _ => return None,
    };
    (HOP_BY_HOP[candidate].as_str() == s).then_some(candidate)
}

/// An HTTP/1.1 request asking to switch protocols (`Connection: upgrade` + `Upgrade`).
pub(super) fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == http::Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && connection_tokens(req.headers()).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// The options of every `Connection` field, trimmed, empty ones left out.
pub(crate) fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop headers; with `keep_upgrade`, leaves `Connection: upgrade` and
/// `Upgrade` so a protocol switch can pass through.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass notes which hop-by-hop fields are present (bit i: HOP_BY_HOP[i], bit 8:
    // Proxy-Authorization); only those are removed, each removal being a hash lookup.
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = hop_by_hop_index(name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        // Fields named by Connection, other than the standard ones handled below.
        let named: Vec<HeaderName> = connection_tokens(headers)
            .filter(|t| !(keep_upgrade && t.eq_ignore_ascii_case("upgrade")))
            .filter(|t| {
                !HOP_BY_HOP
                    .iter()
                    .any(|h| t.eq_ignore_ascii_case(h.as_str()))
                    // Fields the request needs or the gateway sets itself: a client
                    // naming them in Connection must not remove them.
                    && !PROTECTED.iter().any(|p| t.eq_ignore_ascii_case(p))
            })
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    let upgrade = keep_upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if present & (1 << HOP_BY_HOP.len()) != 0 {
        headers.remove(header::PROXY_AUTHORIZATION);
    }
    if let Some(upgrade) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade);
    }
}

/// The `X-Forwarded-*` fields of one request (SPEC "Client identity"), written straight
/// into the request head sent upstream in place of the client's own: the client's
/// `X-Forwarded-For` list with the client's address appended, the scheme, and the host.
/// A `Forwarded` field passes only from a trusted proxy: from anyone else its `for=`,
/// `proto=` and `host=` are the client's own claims, which the gateway did not believe,
/// so the upstream does not see them either (as the client's `X-Forwarded-Proto` is
/// replaced).
/// (Written as text rather than put in the header map: three map insertions, a string
/// turned into a header value, and the map walked again to send them, saved.)
pub(super) struct Forwarded {
    /// `None`: nothing is added (a request that did not come through the client layer).
    pub(super) client: Option<ClientInfo>,
    pub(super) host: Option<HeaderValue>,
}

impl super::h1::ExtraFields for Forwarded {
    fn replaces(&self, name: &HeaderName) -> bool {
        let Some(client) = &self.client else {
            return false;
        };
        name == X_FORWARDED_FOR
            || name == X_FORWARDED_PROTO
            || (self.host.is_some() && name == X_FORWARDED_HOST)
            || (!client.trusted_peer && name == header::FORWARDED)
    }

    fn write(&self, headers: &HeaderMap, buf: &mut Vec<u8>) {
        let Some(client) = self.client else { return };
        buf.extend_from_slice(b"x-forwarded-for: ");
        for v in headers.get_all(&X_FORWARDED_FOR) {
            if let Ok(v) = v.to_str() {
                if !v.trim().is_empty() {
                    buf.extend_from_slice(v.trim().as_bytes());
                    buf.extend_from_slice(b", ");
                }
            }
        }
        let mut ip = String::with_capacity(48);
        match portcullis_core::identity::canonical_ip(client.peer.ip()) {
            // Written straight into the text, without `fmt`.
            std::net::IpAddr::V4(v4) => portcullis_core::identity::push_ipv4(&mut ip, v4),
            ip6 => {
                use std::fmt::Write as _;
                let _ = write!(ip, "{ip6}");
            }
        }
        buf.extend_from_slice(ip.as_bytes());
        buf.extend_from_slice(if client.identity.https {
            b"\r\nx-forwarded-proto: https\r\n"
        } else {
            b"\r\nx-forwarded-proto: http\r\n"
        });
        if let Some(host) = &self.host {
            buf.extend_from_slice(b"x-forwarded-host: ");
            buf.extend_from_slice(host.as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_named_and_standard_hop_by_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn every_hop_by_hop_name_is_found_and_no_other() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
        }
        assert_eq!(
            hop_by_hop_index(&header::PROXY_AUTHORIZATION),
            Some(HOP_BY_HOP.len())
        );
        for other in [
            "host",
            "tf",
            "trailers",
            "user-agent",
            "connectiox",
            "keep-alivf",
            "x-upgrade",
            "proxy-connectionx",
            "transfer-encodinx",
            "proxy-authenticatf",
            "proxy-authorizatiox",
            "content-length",
            "accept",
        ] {
            let name = HeaderName::from_bytes(other.as_bytes()).unwrap();
            assert_eq!(hop_by_hop_index(&name), None, "{other}");
        }
    }

    #[test]
    fn connection_cannot_remove_host_or_the_request_id() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Host, X-Request-ID, x-other"),
        );
        h.insert(header::HOST, HeaderValue::from_static("api.example"));
        h.insert("x-request-id", HeaderValue::from_static("abc"));
        h.insert("x-other", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["host", "x-request-id"]);
    }

    #[test]
    fn keeps_upgrade_when_switching() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert_eq!(h[header::UPGRADE], "websocket");
    }
}
