//! Value types that validate themselves while being deserialized.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// A duration written as a string with a unit: `250ms`, `30s`, `1m`, `1h`, `30d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DurationValue(pub Duration);

impl DurationValue {
    /// Parses `<integer><unit>` with unit `ms`, `s`, `m`, `h` or `d`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits.parse().map_err(|_| {
            format!("invalid duration {s:?}: expected an integer and a unit such as \"250ms\", \"30s\", \"1m\", \"1h\" or \"30d\"")
        })?;
        let ms_per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {unit:?} (use ms, s, m, h or d)"
                ))
            }
        };
        let ms = n
            .checked_mul(ms_per_unit)
            .ok_or_else(|| format!("invalid duration {s:?}: too large"))?;
        Ok(DurationValue(Duration::from_millis(ms)))
    }
}

impl DurationValue {
    /// Appends the duration as written in a configuration (`90s`, `1m`, `250ms`): the
    /// largest unit that divides it. A 429's detail carries it, so no `fmt` here.
    pub fn push_to(&self, out: &mut String) {
        let ms = self.0.as_millis();
        // In u64 whenever it fits (any window a person writes): no 128-bit division.
        match u64::try_from(ms) {
            Ok(ms) => push_in_units(out, ms),
            Err(_) => push_in_units(out, ms),
        }
    }
}

/// `ms` milliseconds in the largest unit that divides them.
fn push_in_units<T>(out: &mut String, ms: T)
where
    T: Copy
        + PartialEq
        + From<u32>
        + std::ops::Rem<Output = T>
        + std::ops::Div<Output = T>
        + itoa::Integer,
{
    let zero = T::from(0);
    for (unit, size) in [
        ("d", 86_400_000u32),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        let size = T::from(size);
        if ms != zero && ms % size == zero {
            out.push_str(itoa::Buffer::new().format(ms / size));
            out.push_str(unit);
            return;
        }
    }
    out.push_str(itoa::Buffer::new().format(ms));
    out.push_str("ms");
}

impl fmt::Display for DurationValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(12);
        self.push_to(&mut s);
        f.write_str(&s)
    }
}

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DurationValue::parse(&s).map_err(de::Error::custom)
    }
}

impl Serialize for DurationValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A network in CIDR form; a bare address means that one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub ipnet::IpNet);

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if let Ok(net) = s.parse::<ipnet::IpNet>() {
            return Ok(Cidr(net.trunc()));
        }
        s.parse::<std::net::IpAddr>()
            .map(|ip| Cidr(ipnet::IpNet::from(ip)))
            .map_err(|_| {
                de::Error::custom(format!(
                    "invalid CIDR {s:?}: expected an address or network such as \"10.0.0.0/8\" or \"2001:db8::/32\""
                ))
            })
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// The upstream base URL: `http://host:port`. HTTPS upstreams are not supported yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// `host:port` (port 80 when the URL has none).
    pub authority: String,
    /// The host part alone, without brackets.
    pub host: String,
    /// The TCP port.
    pub port: u16,
}

impl UpstreamUrl {
    /// Parses `http://host[:port][/]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let rest = if let Some(rest) = s.strip_prefix("http://") {
            rest
        } else if s.starts_with("https://") {
            return Err(format!(
                "invalid upstream {s:?}: https upstreams are not supported; use http:// (TLS is terminated before portcullis)"
            ));
        } else {
            return Err(format!("invalid upstream {s:?}: expected http://host:port"));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
            return Err(format!(
                "invalid upstream {s:?}: expected http://host:port without a path"
            ));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') && (h.starts_with('[') || !h.contains(':')) => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| format!("invalid upstream {s:?}: bad port {p:?}"))?;
                (h, port)
            }
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("invalid upstream {s:?}: missing host"));
        }
        Ok(UpstreamUrl {
            authority: if authority.contains(':') && !authority.ends_with(']') {
                authority.to_owned()
            } else {
                format!("{authority}:{port}")
            },
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.authority)
    }
}

impl<'de> Deserialize<'de> for UpstreamUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        UpstreamUrl::parse(&s).map_err(de::Error::custom)
    }
}

impl Serialize for UpstreamUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An IPv6 prefix length, 0 to 128.
pub(crate) fn prefix_len<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let n = i64::deserialize(d)?;
    u8::try_from(n)
        .ok()
        .filter(|n| *n <= 128)
        .ok_or_else(|| de::Error::custom(format!("invalid prefix length {n}: expected 0 to 128")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            DurationValue::parse("250ms").unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(
            DurationValue::parse("30d").unwrap().0,
            Duration::from_secs(30 * 86400)
        );
        assert!(DurationValue::parse("5x").is_err());
        assert!(DurationValue::parse("s").is_err());
        assert!(DurationValue::parse("1.5s").is_err());
        assert!(DurationValue::parse("99999999999999999999d").is_err());
        assert_eq!(DurationValue::parse("90s").unwrap().to_string(), "90s");
        assert_eq!(DurationValue::parse("120s").unwrap().to_string(), "2m");
        assert_eq!(
            DurationValue::parse("1500ms").unwrap().to_string(),
            "1500ms"
        );
    }

    #[test]
    fn upstream_urls() {
        let u = UpstreamUrl::parse("http://127.0.0.1:8000").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 8000));
        let u = UpstreamUrl::parse("http://api.internal/").unwrap();
        assert_eq!(u.authority, "api.internal:80");
        let u = UpstreamUrl::parse("http://[::1]:9000").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.authority.as_str()),
            ("::1", 9000, "[::1]:9000")
        );
        let u = UpstreamUrl::parse("http://[::1]").unwrap();
        assert_eq!(u.authority, "[::1]:80");
        assert!(UpstreamUrl::parse("https://x").is_err());
        assert!(UpstreamUrl::parse("ftp://x").is_err());
        assert!(UpstreamUrl::parse("http://x:99999").is_err());
        assert!(UpstreamUrl::parse("http://x/path").is_err());
    }
}
