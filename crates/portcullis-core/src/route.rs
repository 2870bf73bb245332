//! Route patterns: exact (`/api/items`), prefix (`/api/auth/*`) and `{param}` segments
//! (`/api/items/{id}`), matched against a normalised path so that `//api/./auth/login/`
//! or `/api/%61uth/login` cannot dodge the limits of `/api/auth/*`.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
}

/// A parsed route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePattern {
    source: String,
    segments: Vec<Segment>,
    /// Ends with `/*`: matches the prefix itself and everything below it.
    prefix: bool,
}

impl RoutePattern {
    /// Parses a pattern.
    pub fn parse(s: &str) -> Result<Self, String> {
        if !s.starts_with('/') {
            return Err(format!("route path {s:?} must start with '/'"));
        }
        let (body, prefix) = match s.strip_suffix("/*") {
            Some(b) => (b, true),
            None => (s, false),
        };
        let mut segments = Vec::new();
        for raw in body.split('/').filter(|p| !p.is_empty()) {
            if let Some(name) = raw.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(format!("invalid parameter {raw:?} in route path {s:?}"));
                }
                segments.push(Segment::Param);
            } else if raw.contains(['*', '{', '}', '?', '#']) {
                return Err(format!(
                    "invalid segment {raw:?} in route path {s:?}: use a literal, {{name}}, or a final /*"
                ));
            } else {
                segments.push(Segment::Literal(decode_unreserved(raw).into_owned()));
            }
        }
        Ok(RoutePattern {
            source: s.to_owned(),
            segments,
            prefix,
        })
    }

    /// The pattern as written (the `route` label and log field).
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern matches a path (without query).
    pub fn matches(&self, path: &str) -> bool {
        self.matches_segments(&normalize(path))
    }

    /// Matching against segments from [`normalize`], to normalise once per request.
    pub fn matches_segments(&self, segments: &[Cow<'_, str>]) -> bool {
        if segments.len() < self.segments.len()
            || (!self.prefix && segments.len() != self.segments.len())
        {
            return false;
        }
        self.segments.iter().zip(segments).all(|(p, s)| match p {
            Segment::Literal(l) => l.as_str() == s.as_ref(),
            Segment::Param => true,
        })
    }

    /// Whether every path this pattern's `other` matches is matched by `self` too.
    pub fn covers(&self, other: &RoutePattern) -> bool {
        if other.segments.len() < self.segments.len() {
            return false;
        }
        if !self.prefix && (other.prefix || other.segments.len() != self.segments.len()) {
            return false;
        }
        self.segments
            .iter()
            .zip(&other.segments)
            .all(|(a, b)| match (a, b) {
                (Segment::Param, _) => true,
                (Segment::Literal(x), Segment::Literal(y)) => x == y,
                (Segment::Literal(_), Segment::Param) => false,
            })
    }
}

/// A normalised path's segments (see [`normalize`]).
pub type Segments<'a> = smallvec::SmallVec<[Cow<'a, str>; 8]>;

/// Path segments as the upstream would most likely resolve them: empty and `.` segments
/// dropped, `..` applied, percent-encoded unreserved characters decoded. A segment
/// borrows the path unless decoding changed it, and up to eight are held inline: matching
/// an ordinary request allocates nothing.
pub fn normalize(path: &str) -> Segments<'_> {
    let mut out = Segments::new();
    for raw in path.split('/') {
        let seg = decode_unreserved(raw);
        match seg.as_ref() {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            _ => out.push(seg),
        }
    }
    out
}

fn decode_unreserved(seg: &str) -> Cow<'_, str> {
    if !seg.contains('%') {
        return Cow::Borrowed(seg);
    }
    let bytes = seg.as_bytes();
    let mut out = String::with_capacity(seg.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                let c = (h * 16 + l) as u8;
                if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                    out.push(c as char);
                    i += 3;
                    continue;
                }
            }
        }
        // Multi-byte UTF-8 is copied through whole.
        let ch_len = seg[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&seg[i..i + ch_len]);
        i += ch_len;
    }
    Cow::Owned(out)
}

impl fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for RoutePattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RoutePattern::parse(&s).map_err(de::Error::custom)
    }
}

impl Serialize for RoutePattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RoutePattern {
        RoutePattern::parse(s).unwrap()
    }

    #[test]
    fn exact_prefix_and_params() {
        assert!(p("/api/items").matches("/api/items"));
        assert!(p("/api/items").matches("/api/items/"));
        assert!(!p("/api/items").matches("/api/items/1"));
        assert!(p("/api/auth/*").matches("/api/auth/login"));
        assert!(p("/api/auth/*").matches("/api/auth"));
        assert!(!p("/api/auth/*").matches("/api/authx"));
        assert!(p("/api/items/{id}").matches("/api/items/42"));
        assert!(!p("/api/items/{id}").matches("/api/items"));
        assert!(p("/*").matches("/anything/at/all"));
        assert!(p("/").matches("/"));
    }

    #[test]
    fn normalisation_cannot_dodge_a_pattern() {
        let auth = p("/api/auth/*");
        for path in [
            "//api/auth/login",
            "/api/./auth/login",
            "/api/x/../auth/login",
            "/api/%61uth/login",
            "/api/%2e/auth/x",
        ] {
            assert!(auth.matches(path), "{path}");
        }
        assert!(
            !auth.matches("/api/auth%2Flogin"),
            "an encoded slash is not a separator"
        );
    }

    #[test]
    fn invalid_patterns() {
        for bad in ["api", "/a/*/b", "/a/{}", "/a/{x-y}", "/a*"] {
            assert!(RoutePattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn coverage() {
        assert!(p("/api/*").covers(&p("/api/auth/login")));
        assert!(p("/api/*").covers(&p("/api/auth/*")));
        assert!(!p("/api/auth/*").covers(&p("/api/*")));
        assert!(p("/api/items/{id}").covers(&p("/api/items/42")));
        assert!(!p("/api/items/42").covers(&p("/api/items/{id}")));
        assert!(!p("/api/items").covers(&p("/api/items/*")));
    }
}
