//! Response fields as ready-written lines, for a server that writes its own heads.
//!
//! By default every layer here puts its fields in the response's `HeaderMap`. Hashing a
//! dozen names into a map, one shared value per field, and reading them back out to
//! write the head cost a tenth of a request the gateway rejects. A server that encodes
//! response heads itself can build its layers `with_head_lines()`: they append
//! `name: value\r\n` to the response's [`HeadLines`] extension instead, which the server
//! writes after the map's fields (see [`HeadLines::shadows`] and [`HeadLines::write_to`]).
//! Whatever else serves such a stack's responses (hyper) puts the lines in the map
//! first with [`HeadLines::apply_to`]; the two give the same head.

use http::{HeaderMap, HeaderName, HeaderValue};
use smallvec::SmallVec;

/// How a line relates to a field of the same name set elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precedence {
    /// Replaces it (as `HeaderMap::insert`).
    Replace,
    /// Only written when there is none (as `HeaderMap::entry(..).or_insert(..)`).
    Default,
}

#[derive(Debug, Clone, Copy)]
struct Line {
    start: u32,
    name_end: u32,
    end: u32,
    precedence: Precedence,
    /// Left out of the head: a later line or a map field takes its place.
    shadowed: bool,
}

/// Response extension: fields rendered as `name: value\r\n` lines, in the order the
/// layers added them.
#[derive(Debug, Clone)]
pub struct HeadLines {
    text: Vec<u8>,
    lines: SmallVec<[Line; 16]>,
    /// A one-word filter of the lines' names (see [`name_bit`]): most names are told
    /// apart from every line's without comparing bytes.
    names: u64,
    any_shadowed: bool,
}

impl Default for HeadLines {
    fn default() -> Self {
        HeadLines {
            // Room for a response's usual fields (security, rate-limit, latency, id).
            text: Vec::with_capacity(768),
            lines: SmallVec::new(),
            names: 0,
            any_shadowed: false,
        }
    }
}

/// One of 64 bits for a name, from its length and two of its bytes.
fn name_bit(name: &[u8]) -> u64 {
    let len = name.len();
    let mix = len
        .wrapping_mul(31)
        .wrapping_add(usize::from(name.last().copied().unwrap_or(0)))
        .wrapping_add(usize::from(name.get(len / 2).copied().unwrap_or(0)) << 2);
    1 << (mix % 64)
}

/// Whether `value` is a valid field value (as `HeaderValue` checks it): visible ASCII,
/// space, tab and obs-text; never a line break.
fn valid_value(value: &[u8]) -> bool {
    // A fold without an early exit: the compiler checks many bytes at once.
    value.iter().fold(true, |ok, &b| {
        ok & ((b >= 0x20 && b != 0x7f) | (b == b'\t'))
    })
}

impl HeadLines {
    /// Appends the field `name: value`. `name` must be a lowercase field name (as
    /// `HeaderName::as_str` gives); a value that is not a valid field value is left out,
    /// as `HeaderValue::from_bytes` would refuse it.
    pub fn push(&mut self, name: &HeaderName, value: &[u8], precedence: Precedence) {
        if valid_value(value) {
            self.append_line(name.as_str().as_bytes(), value, precedence);
        }
    }

    /// [`Self::push`] of a value known to be valid.
    fn append_line(&mut self, name: &[u8], value: &[u8], precedence: Precedence) {
        let bit = name_bit(name);
        if self.names & bit != 0 {
            match precedence {
                // A value set later wins, as a later `insert` in a map.
                Precedence::Replace => {
                    for i in 0..self.lines.len() {
                        if self.name_of(i) == name {
                            self.lines[i].shadowed = true;
                            self.any_shadowed = true;
                        }
                    }
                }
                // A field already there stays.
                Precedence::Default => {
                    if (0..self.lines.len())
                        .any(|i| !self.lines[i].shadowed && self.name_of(i) == name)
                    {
                        return;
                    }
                }
            }
        }
        let start = self.text.len();
        self.text.reserve(name.len() + value.len() + 4);
        self.text.extend_from_slice(name);
        let name_end = self.text.len();
        self.text.extend_from_slice(b": ");
        self.text.extend_from_slice(value);
        self.text.extend_from_slice(b"\r\n");
        let (Ok(start), Ok(name_end), Ok(end)) = (
            u32::try_from(start),
            u32::try_from(name_end),
            u32::try_from(self.text.len()),
        ) else {
            self.text.truncate(start);
            return;
        };
        self.names |= bit;
        self.lines.push(Line {
            start,
            name_end,
            end,
            precedence,
            shadowed: false,
        });
    }

    /// Appends every line of `other` (a prepared set, such as the security headers),
    /// with its own precedence.
    pub fn extend_from(&mut self, other: &HeadLines) {
        // No name in common: the text and the lines are copied as they are.
        if self.names & other.names == 0 && !other.any_shadowed {
            let (Ok(offset), Ok(_)) = (
                u32::try_from(self.text.len()),
                u32::try_from(self.text.len() + other.text.len()),
            ) else {
                return;
            };
            self.text.extend_from_slice(&other.text);
            self.lines.extend(other.lines.iter().map(|l| Line {
                start: l.start + offset,
                name_end: l.name_end + offset,
                end: l.end + offset,
                ..*l
            }));
            self.names |= other.names;
            return;
        }
        for line in other.lines.iter().filter(|l| !l.shadowed) {
            let (name, value) = other.field(line);
            self.append_line(name, value, line.precedence);
        }
    }

    /// The name and the value of `line`.
    fn field(&self, line: &Line) -> (&[u8], &[u8]) {
        let (start, name_end, end) = (
            line.start as usize,
            line.name_end as usize,
            line.end as usize,
        );
        // `name: value\r\n`: the value starts after ": " and ends before "\r\n".
        (
            &self.text[start..name_end],
            &self.text[name_end + 2..end - 2],
        )
    }

    /// The name of line `i` (what the filters compare; without the value's bounds).
    fn name_of(&self, i: usize) -> &[u8] {
        let line = &self.lines[i];
        &self.text[line.start as usize..line.name_end as usize]
    }

    /// Whether there are no lines.
    pub fn is_empty(&self) -> bool {
        self.lines.iter().all(|l| l.shadowed)
    }

    /// Called by the server for each field of the response's map before it writes it:
    /// `true` when a line replaces that field (the server leaves it out). A line that is
    /// only a default for `name` is left out instead.
    pub fn shadows(&mut self, name: &HeaderName) -> bool {
        let name = name.as_str().as_bytes();
        if self.names & name_bit(name) == 0 {
            return false;
        }
        let mut replaced = false;
        for i in 0..self.lines.len() {
            if self.lines[i].shadowed || self.name_of(i) != name {
                continue;
            }
            match self.lines[i].precedence {
                Precedence::Replace => replaced = true,
                Precedence::Default => {
                    self.lines[i].shadowed = true;
                    self.any_shadowed = true;
                }
            }
        }
        replaced
    }

    /// Writes the lines (after the map's fields, once [`Self::shadows`] has seen them).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        if !self.any_shadowed {
            out.extend_from_slice(&self.text);
            return;
        }
        for line in self.lines.iter().filter(|l| !l.shadowed) {
            out.extend_from_slice(&self.text[line.start as usize..line.end as usize]);
        }
    }

    /// Puts the lines in `map` with their precedence, for a server that writes the map.
    pub fn apply_to(&self, map: &mut HeaderMap) {
        for line in self.lines.iter().filter(|l| !l.shadowed) {
            let (name, value) = self.field(line);
            if let (Ok(name), Ok(value)) =
                (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
            {
                put(map, name, value, line.precedence);
            }
        }
    }
}

/// `map`'s field `name` set to `value` with `precedence`.
fn put(map: &mut HeaderMap, name: HeaderName, value: HeaderValue, precedence: Precedence) {
    match precedence {
        Precedence::Replace => {
            map.insert(name, value);
        }
        Precedence::Default => {
            map.entry(name).or_insert(value);
        }
    }
}

/// Adds `name: value` to the response: a line when `lines` (the layer was built
/// `with_head_lines()`), else a map field, with `precedence`.
pub fn set<B>(
    res: &mut http::Response<B>,
    lines: bool,
    name: &HeaderName,
    value: &[u8],
    precedence: Precedence,
) {
    if lines {
        res.extensions_mut()
            .get_or_insert_default::<HeadLines>()
            .push(name, value, precedence);
        return;
    }
    if let Ok(value) = HeaderValue::from_bytes(value) {
        put(res.headers_mut(), name.clone(), value, precedence);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    fn name(s: &'static str) -> HeaderName {
        HeaderName::from_static(s)
    }

    /// The head the server writes: map fields not shadowed, then the lines.
    fn written(map: &HeaderMap, mut lines: HeadLines) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (n, v) in map {
            if !lines.shadows(n) {
                out.extend_from_slice(n.as_str().as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(v.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        lines.write_to(&mut out);
        let mut fields: Vec<(String, String)> = String::from_utf8(out)
            .unwrap()
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(": ").unwrap();
                (n.to_owned(), v.to_owned())
            })
            .collect();
        fields.sort();
        fields
    }

    /// What a map-writing server sends for the same map and lines.
    fn as_map(map: &HeaderMap, lines: &HeadLines) -> Vec<(String, String)> {
        let mut map = map.clone();
        lines.apply_to(&mut map);
        let mut fields: Vec<(String, String)> = map
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
            .collect();
        fields.sort();
        fields
    }

    #[test]
    fn lines_give_the_head_a_map_would() {
        let mut map = HeaderMap::new();
        map.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        map.insert(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("SAMEORIGIN"),
        );
        map.insert(
            name("x-request-id"),
            HeaderValue::from_static("upstream-id"),
        );
        map.append(name("ratelimit"), HeaderValue::from_static("\"u\";r=1"));
        map.append(name("ratelimit"), HeaderValue::from_static("\"u\";r=2"));

        let mut lines = HeadLines::default();
        lines.push(&name("ratelimit"), b"\"p\";r=9;t=1", Precedence::Replace);
        lines.push(&header::RETRY_AFTER, b"1", Precedence::Replace);
        lines.push(&header::RETRY_AFTER, b"2", Precedence::Replace);
        lines.push(&header::X_FRAME_OPTIONS, b"DENY", Precedence::Default);
        lines.push(
            &name("x-content-type-options"),
            b"nosniff",
            Precedence::Default,
        );
        lines.push(
            &name("x-content-type-options"),
            b"other",
            Precedence::Default,
        );
        lines.push(&name("x-request-id"), b"gateway-id", Precedence::Replace);
        lines.push(&name("x-bad"), b"a\r\nb: c", Precedence::Replace);

        let expected = as_map(&map, &lines);
        assert_eq!(written(&map, lines), expected);
        assert_eq!(
            expected,
            [
                ("content-type", "text/plain"),
                ("ratelimit", "\"p\";r=9;t=1"),
                ("retry-after", "2"),
                ("x-content-type-options", "nosniff"),
                ("x-frame-options", "SAMEORIGIN"),
                ("x-request-id", "gateway-id"),
            ]
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn a_prepared_set_extends_lines_with_its_precedence() {
        let mut security = HeadLines::default();
        security.push(&header::X_FRAME_OPTIONS, b"DENY", Precedence::Default);
        security.push(
            &name("x-content-type-options"),
            b"nosniff",
            Precedence::Default,
        );

        let mut fresh = HeadLines::default();
        fresh.extend_from(&security);
        assert_eq!(
            written(&HeaderMap::new(), fresh),
            as_map(&HeaderMap::new(), &security)
        );

        let mut lines = HeadLines::default();
        lines.push(&header::X_FRAME_OPTIONS, b"SAMEORIGIN", Precedence::Replace);
        lines.extend_from(&security);
        let mut map = HeaderMap::new();
        map.insert(
            name("x-content-type-options"),
            HeaderValue::from_static("upstream"),
        );
        let expected = as_map(&map, &lines);
        assert_eq!(written(&map, lines), expected);
        assert!(expected.contains(&("x-frame-options".into(), "SAMEORIGIN".into())));
        assert!(expected.contains(&("x-content-type-options".into(), "upstream".into())));
    }

    #[test]
    fn set_writes_a_line_or_a_map_field() {
        let mut res = http::Response::new(());
        set(
            &mut res,
            true,
            &header::RETRY_AFTER,
            b"3",
            Precedence::Replace,
        );
        assert!(res.headers().is_empty());
        let mut out = Vec::new();
        res.extensions()
            .get::<HeadLines>()
            .unwrap()
            .write_to(&mut out);
        assert_eq!(out, b"retry-after: 3\r\n");

        let mut res = http::Response::new(());
        res.headers_mut().insert(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("SAMEORIGIN"),
        );
        set(
            &mut res,
            false,
            &header::X_FRAME_OPTIONS,
            b"DENY",
            Precedence::Default,
        );
        set(
            &mut res,
            false,
            &header::RETRY_AFTER,
            b"3",
            Precedence::Replace,
        );
        assert_eq!(res.headers()[header::X_FRAME_OPTIONS], "SAMEORIGIN");
        assert_eq!(res.headers()[header::RETRY_AFTER], "3");
        assert!(res.extensions().get::<HeadLines>().is_none());
    }
}
