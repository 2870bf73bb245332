//! The single left-to-right pass that finds what to redact in a string.
//!
//! The scan visits each byte once through a 256-entry trigger table built at
//! construction: bytes that cannot start anything (most of a typical line) cost one
//! table load. At a trigger the matching detector looks around it; a match is handed
//! to the caller and the scan resumes after it. Nothing before the end of the last
//! match (the *barrier*) is ever looked at again, so matches never overlap, and a
//! replacement token already in the text (`h:` + 16 hex) is an opaque barrier too,
//! which is what makes redaction idempotent.
//!
//! Every detector starts and ends its span on an ASCII byte (or the string's ends),
//! so spans always fall on `char` boundaries.

/// `h:` and 16 lower-case hex digits.
pub(super) const HASH_TOKEN_LEN: usize = 18;

/// How the matched text is normalised before it is hashed, so that one secret gets
/// one hash whatever its spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// Hashed as written.
    Verbatim,
    /// A card number: only its digits are hashed (`4111 1111 …` = `41111111…`).
    Digits,
    /// An e-mail address: lower-cased, `%40` read as `@`.
    Email,
}

/// A byte range of the scanned string to replace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Span {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) kind: Kind,
}

impl Span {
    fn verbatim(start: usize, end: usize) -> Self {
        Span {
            start,
            end,
            kind: Kind::Verbatim,
        }
    }
}

/// Which value detectors run (`[log] redact_patterns`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Detectors {
    pub(super) email: bool,
    pub(super) bearer: bool,
    pub(super) jwt: bool,
    pub(super) card: bool,
    pub(super) aws: bool,
    pub(super) prefixes: bool,
}

/// What the scan looks for, compiled once per redactor.
#[derive(Clone)]
pub(super) struct Rules {
    detectors: Detectors,
    /// Lower-case query parameter names.
    query_names: Vec<Box<[u8]>>,
    max_query_name: usize,
    /// Lower-case header names.
    header_names: Vec<Box<[u8]>>,
    max_header_name: usize,
    trigger: [bool; 256],
    prefix_ranges: [(u8, u8); 256],
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules")
            .field("detectors", &self.detectors)
            .field("query_names", &self.query_names.len())
            .field("header_names", &self.header_names.len())
            .finish_non_exhaustive()
    }
}

// === impl Rules ===

impl Rules {
    pub(super) fn new(
        detectors: Detectors,
        header_names: &[String],
        query_names: &[String],
    ) -> Self {
        let lower = |names: &[String]| -> Vec<Box<[u8]>> {
            names
                .iter()
                .filter(|n| !n.is_empty())
                .map(|n| n.to_ascii_lowercase().into_bytes().into_boxed_slice())
                .collect()
        };
        let query_names = lower(query_names);
        let header_names = lower(header_names);
        let mut trigger = [false; 256];
        // A replacement token already in the text is always skipped as a whole.
        trigger[usize::from(b'h')] = true;
        if !query_names.is_empty() {
            trigger[usize::from(b'?')] = true;
            trigger[usize::from(b'&')] = true;
        }
        if !header_names.is_empty() {
            trigger[usize::from(b':')] = true;
        }
        if detectors.email {
            trigger[usize::from(b'@')] = true;
            trigger[usize::from(b'%')] = true;
        }
        if detectors.card {
            for d in b'0'..=b'9' {
                trigger[usize::from(d)] = true;
            }
        }
        if detectors.jwt {
            trigger[usize::from(b'e')] = true;
        }
        if detectors.bearer {
            trigger[usize::from(b'B')] = true;
            trigger[usize::from(b'b')] = true;
        }
        if detectors.aws {
            for c in [b'A', b'a', b'S', b's'] {
                trigger[usize::from(c)] = true;
            }
        }
        if detectors.prefixes {
            for p in PREFIXES {
                trigger[usize::from(p.text[0])] = true;
            }
        }
        Rules {
            detectors,
            max_query_name: query_names.iter().map(|n| n.len()).max().unwrap_or(0),
            max_header_name: header_names.iter().map(|n| n.len()).max().unwrap_or(0),
            query_names,
            header_names,
            trigger,
            prefix_ranges: prefix_ranges(),
        }
    }

    /// Whether `name` is a configured header name.
    pub(super) fn is_header_name(&self, name: &[u8]) -> bool {
        self.header_names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
    }

    /// Whether `name` is a configured query parameter name.
    pub(super) fn is_query_name(&self, name: &[u8]) -> bool {
        self.query_names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
    }

    /// Calls `emit` with each span to replace, in order, without overlap.
    pub(super) fn scan(&self, s: &str, mut emit: impl FnMut(Span)) {
        let b = s.as_bytes();
        let n = b.len();
        let mut i = 0;
        let mut barrier = 0;
        while i < n {
            let c = b[i];
            if !self.trigger[usize::from(c)] {
                i += 1;
                continue;
            }
            if c == b'h' && is_hash_token(b, i) {
                i += HASH_TOKEN_LEN;
                barrier = i;
                continue;
            }
            // A word boundary: the start of the string, the end of the last match, or
            // anything but a letter or digit before.
            let boundary = i == barrier || !b[i - 1].is_ascii_alphanumeric();
            let found = match c {
                b'0'..=b'9' if boundary && is_uuid(b, i) => {
                    // An identifier, whatever its digit groups look like: a UUID whose
                    // first three groups are digits can pass for a card number.
                    i += UUID_LEN;
                    barrier = i;
                    continue;
                }
                b'0'..=b'9' => {
                    let (end, last) = cards(b, i, boundary, &mut emit);
                    if let Some(last) = last {
                        barrier = last;
                    }
                    i = end;
                    continue;
                }
                b'?' | b'&' => self.query(b, i),
                b':' => self.header(b, i, barrier),
                b'@' => email(b, i, 1, barrier),
                b'%' if b[i + 1..].starts_with(b"40") => email(b, i, 3, barrier),
                b'%' => None,
                _ if boundary => self.word(b, i),
                _ => None,
            };
            match found {
                Some(span) => {
                    emit(span);
                    i = span.end;
                    barrier = span.end;
                }
                None => i += 1,
            }
        }
    }

    /// Detectors that start at a letter after a word boundary.
    fn word(&self, b: &[u8], i: usize) -> Option<Span> {
        let d = &self.detectors;
        let c = b[i];
        if d.jwt && c == b'e' {
            if let Some(span) = jwt(b, i) {
                return Some(span);
            }
        }
        if d.bearer && (c == b'B' || c == b'b') {
            if let Some(span) = auth_credentials(b, i) {
                return Some(span);
            }
        }
        if d.aws && matches!(c, b'A' | b'a' | b'S' | b's') {
            if c == b'A' {
                if let Some(span) = aws_key_id(b, i) {
                    return Some(span);
                }
            }
            if let Some(span) = aws_secret(b, i) {
                return Some(span);
            }
        }
        if d.prefixes {
            return api_key(b, i, self.prefix_ranges[usize::from(c)]);
        }
        None
    }

    /// `?name=value` / `&name=value` with a configured name: the value.
    fn query(&self, b: &[u8], i: usize) -> Option<Span> {
        let n = b.len();
        let start = i + 1;
        let mut j = start;
        while j < n && j - start <= self.max_query_name && !is_query_name_end(b[j]) {
            j += 1;
        }
        if j >= n || b[j] != b'=' || j == start || !self.is_query_name(&b[start..j]) {
            return None;
        }
        let vs = j + 1;
        let mut ve = vs;
        while ve < n && !is_query_value_end(b[ve]) {
            ve += 1;
        }
        (ve > vs && !is_replacement(&b[vs..ve])).then(|| Span::verbatim(vs, ve))
    }

    /// `name: value` (or `"name": "value"`) with a configured header name: the value,
    /// to the end of the line (or of the quoted string), after a known auth scheme.
    fn header(&self, b: &[u8], i: usize, barrier: usize) -> Option<Span> {
        let n = b.len();
        let mut ne = i;
        if ne > barrier && b[ne - 1] == b'"' {
            ne -= 1;
            if ne > barrier && b[ne - 1] == b'\\' {
                ne -= 1;
            }
        }
        let mut ns = ne;
        while ns > barrier && is_header_name_byte(b[ns - 1]) {
            if ne - ns >= self.max_header_name {
                return None;
            }
            ns -= 1;
        }
        if ns == ne || !self.is_header_name(&b[ns..ne]) {
            return None;
        }
        let mut vs = i + 1;
        while vs < n && matches!(b[vs], b' ' | b'\t') {
            vs += 1;
        }
        let quoted = if b[vs..].starts_with(b"\"") {
            vs += 1;
            true
        } else if b[vs..].starts_with(b"\\\"") {
            vs += 2;
            true
        } else {
            false
        };
        let mut ve = vs;
        while ve < n && !(matches!(b[ve], b'\r' | b'\n') || quoted && matches!(b[ve], b'"' | b'\\'))
        {
            ve += 1;
        }
        while ve > vs && matches!(b[ve - 1], b' ' | b'\t') {
            ve -= 1;
        }
        let vs = after_auth_scheme(&b[..ve], vs);
        (ve > vs && !is_replacement(&b[vs..ve])).then(|| Span::verbatim(vs, ve))
    }
}

// === replacement tokens ===

/// Whether `b[i..]` starts with `h:` and 16 lower-case hex digits.
pub(super) fn is_hash_token(b: &[u8], i: usize) -> bool {
    b.len() >= i + HASH_TOKEN_LEN
        && b[i] == b'h'
        && b[i + 1] == b':'
        && b[i + 2..i + HASH_TOKEN_LEN]
            .iter()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `v` is exactly a replacement: `[REDACTED]` or a hash token.
pub(super) fn is_replacement(v: &[u8]) -> bool {
    v == super::MASK.as_bytes() || (v.len() == HASH_TOKEN_LEN && is_hash_token(v, 0))
}

/// Auth schemes kept in front of redacted credentials (`Bearer [REDACTED]`).
const AUTH_SCHEMES: &[&[u8]] = &[
    b"bearer",
    b"basic",
    b"token",
    b"dpop",
    b"negotiate",
    b"ntlm",
    b"apikey",
    b"bot",
    b"mac",
    b"hoba",
];

/// Where the credentials of a header value `b[vs..]` start: after a known auth scheme
/// and its spaces when the rest is one word, else at `vs` (the whole value).
pub(super) fn after_auth_scheme(b: &[u8], vs: usize) -> usize {
    let v = &b[vs..];
    let Some(sp) = v.iter().position(|&c| c == b' ') else {
        return vs;
    };
    if !AUTH_SCHEMES
        .iter()
        .any(|s| s.eq_ignore_ascii_case(&v[..sp]))
    {
        return vs;
    }
    let mut r = sp;
    while r < v.len() && v[r] == b' ' {
        r += 1;
    }
    if r == v.len() || v[r..].iter().any(u8::is_ascii_whitespace) {
        return vs;
    }
    vs + r
}

// === byte classes ===

fn is_query_name_end(c: u8) -> bool {
    matches!(
        c,
        b'=' | b'&' | b'?' | b'#' | b' ' | b'\t' | b'\r' | b'\n' | b'"' | b'\''
    )
}

fn is_query_value_end(c: u8) -> bool {
    matches!(
        c,
        b'&' | b'#' | b' ' | b'\t' | b'\r' | b'\n' | b'"' | b'\'' | b'<' | b'>' | b'\\'
    )
}

fn is_header_name_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

fn is_email_local(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_label(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-'
}

fn is_b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

fn is_b64url_dot(c: u8) -> bool {
    is_b64url(c) || c == b'.'
}

fn is_b64(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'+' || c == b'/'
}

fn is_b64_padded(c: u8) -> bool {
    is_b64(c) || c == b'='
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_alphanumeric()
}

fn is_alnum_underscore(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn is_alnum_dash(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-'
}

fn is_token68(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
}

/// The end of the run of `class` bytes from `from`; a run stops before a replacement
/// token, so text next to a replacement never grows into a match on a second pass.
fn run(b: &[u8], from: usize, class: fn(u8) -> bool) -> usize {
    let mut j = from;
    while j < b.len() && class(b[j]) && !(b[j] == b'h' && is_hash_token(b, j)) {
        j += 1;
    }
    j
}

/// Whether the text after a candidate ends it: the end, a non-alphanumeric byte, or a
/// replacement token.
const UUID_LEN: usize = 36;

/// A hyphenated UUID (`8-4-4-4-12` hex digits) at `i`, ending a word.
fn is_uuid(b: &[u8], i: usize) -> bool {
    b.len() >= i + UUID_LEN
        && b[i..i + UUID_LEN].iter().enumerate().all(|(k, c)| match k {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
        && ends_word(b, i + UUID_LEN)
}

fn ends_word(b: &[u8], j: usize) -> bool {
    j >= b.len() || !b[j].is_ascii_alphanumeric() || is_hash_token(b, j)
}

fn starts_with_ignore_case(b: &[u8], i: usize, word: &[u8]) -> bool {
    b.len() >= i + word.len() && b[i..i + word.len()].eq_ignore_ascii_case(word)
}

// === e-mail ===

/// An address around the `@` (or `%40`, `width` 3) at `at`: the longest local part
/// back to the barrier, and a domain of at least two labels whose last one starts
/// with two letters (the address ends after those letters).
fn email(b: &[u8], at: usize, width: usize, barrier: usize) -> Option<Span> {
    let mut start = at;
    while start > barrier && is_email_local(b[start - 1]) {
        start -= 1;
    }
    if start == at {
        return None;
    }
    let mut j = at + width;
    let mut labels = 0;
    let mut end = None;
    loop {
        let ls = j;
        let le = run(b, ls, is_label);
        if le == ls {
            break;
        }
        if labels >= 1 {
            let alpha = b[ls..le]
                .iter()
                .take_while(|c| c.is_ascii_alphabetic())
                .count();
            if alpha >= 2 {
                end = Some(ls + alpha);
            }
        }
        labels += 1;
        if le + 1 < b.len() && b[le] == b'.' && is_label(b[le + 1]) {
            j = le + 1;
        } else {
            break;
        }
    }
    end.map(|end| Span {
        start,
        end,
        kind: Kind::Email,
    })
}

// === cards ===

/// Card numbers in the group of digits starting at `i`: digit runs joined by single
/// spaces or dashes. The whole group is tried first, then (for longer groups) windows
/// of whole runs, leftmost-longest; a candidate has 13–19 digits, starts with 2–6
/// (the major networks' ranges) and passes Luhn, and has no letter or digit right
/// before or after it. Returns the end of the group and of the last card found.
fn cards(b: &[u8], i: usize, left_ok: bool, emit: &mut impl FnMut(Span)) -> (usize, Option<usize>) {
    let n = b.len();
    let mut j = i;
    let mut digits = 0;
    let mut runs = 0;
    loop {
        let s = j;
        while j < n && b[j].is_ascii_digit() {
            j += 1;
        }
        digits += j - s;
        runs += 1;
        if j + 1 < n && matches!(b[j], b' ' | b'-') && b[j + 1].is_ascii_digit() {
            j += 1;
        } else {
            break;
        }
    }
    let end = j;
    if digits < 13 {
        return (end, None);
    }
    let right_ok = ends_word(b, end);
    if runs == 1 {
        if left_ok && right_ok && is_card(&b[i..end]) {
            emit(Span {
                start: i,
                end,
                kind: Kind::Digits,
            });
            return (end, Some(end));
        }
        return (end, None);
    }
    // Rare: a long group of several runs. Collect the runs and try windows.
    let mut bounds = Vec::with_capacity(runs);
    let mut s = i;
    for (k, &c) in b[i..end].iter().enumerate() {
        if !c.is_ascii_digit() {
            bounds.push((s, i + k));
            s = i + k + 1;
        }
    }
    bounds.push((s, end));
    let mut last = None;
    let mut k = 0;
    while k < bounds.len() {
        let mut best = None;
        if k > 0 || left_ok {
            let mut count = 0;
            for (e, &(rs, re)) in bounds.iter().enumerate().skip(k) {
                count += re - rs;
                if count > 19 {
                    break;
                }
                let ro = e + 1 < bounds.len() || right_ok;
                if count >= 13 && ro && is_card(&b[bounds[k].0..re]) {
                    best = Some(e);
                }
            }
        }
        match best {
            Some(e) => {
                emit(Span {
                    start: bounds[k].0,
                    end: bounds[e].1,
                    kind: Kind::Digits,
                });
                last = Some(bounds[e].1);
                k = e + 1;
            }
            None => k += 1,
        }
    }
    (end, last)
}

/// 13–19 digits (separators ignored), first digit 2–6, Luhn-valid.
fn is_card(text: &[u8]) -> bool {
    let mut digits = [0u8; 19];
    let mut len = 0;
    for &c in text {
        if c.is_ascii_digit() {
            if len == digits.len() {
                return false;
            }
            digits[len] = c - b'0';
            len += 1;
        }
    }
    if !(13..=19).contains(&len) || !(2..=6).contains(&digits[0]) {
        return false;
    }
    luhn(&digits[..len])
}

/// The Luhn checksum of `digits` (values 0–9) is 0 mod 10.
pub(super) fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (k, &d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d);
        if k % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

// === tokens ===

/// A JWT (or JWE): `eyJ` and a header of at least 10 base64url characters, then at
/// least two more `.`-separated segments (possibly empty, as with `alg: none`).
fn jwt(b: &[u8], i: usize) -> Option<Span> {
    if !b[i..].starts_with(b"eyJ") {
        return None;
    }
    let mut end = run(b, i, is_b64url_dot);
    let tok = &b[i..end];
    let header = tok.iter().position(|&c| c == b'.')?;
    let dots = tok.iter().filter(|&&c| c == b'.').count();
    if header < 10 || dots < 2 {
        return None;
    }
    let trailing = tok.iter().rev().take_while(|&&c| c == b'.').count();
    end -= trailing.min(dots - 2);
    (end - i >= 16).then(|| Span::verbatim(i, end))
}

/// The credentials after `Bearer` or `Basic` (any case) and spaces, `+` or `%20`.
///
/// A bearer token is token68 of at least 8 characters that does not read like a word
/// (it has a digit, a symbol or mixed case, or is 20 characters or more) and is not an
/// auth-param (`realm="..."`). Basic credentials must decode (base64) to text with a
/// `:`.
fn auth_credentials(b: &[u8], i: usize) -> Option<Span> {
    let n = b.len();
    let (basic, mut j) = if starts_with_ignore_case(b, i, b"bearer") {
        (false, i + 6)
    } else if starts_with_ignore_case(b, i, b"basic") {
        (true, i + 5)
    } else {
        return None;
    };
    let after = j;
    loop {
        if j < n && matches!(b[j], b' ' | b'\t' | b'+') {
            j += 1;
        } else if b[j..].starts_with(b"%20") {
            j += 3;
        } else {
            break;
        }
    }
    if j == after {
        return None;
    }
    let start = j;
    if basic {
        let body = run(b, start, is_b64);
        let mut end = body;
        while end < n && end - body < 2 && b[end] == b'=' {
            end += 1;
        }
        let len = body - start;
        return (len >= 4 && len % 4 != 1 && base64_has_colon(&b[start..body]))
            .then(|| Span::verbatim(start, end));
    }
    let body = run(b, start, is_token68);
    let mut end = body;
    while end < n && b[end] == b'=' {
        end += 1;
    }
    let tok = &b[start..body];
    if tok.len() < 8 {
        return None;
    }
    let name_like = tok
        .iter()
        .all(|&c| c.is_ascii_alphabetic() || c == b'_' || c == b'-');
    if name_like && end > body {
        // An auth-param (`error_description="..."`), not a token.
        return None;
    }
    let digit = tok.iter().any(u8::is_ascii_digit);
    let symbol = tok.iter().any(|c| !c.is_ascii_alphanumeric());
    let mixed = tok.iter().any(u8::is_ascii_uppercase) && tok.iter().any(u8::is_ascii_lowercase);
    (digit || symbol || mixed || tok.len() >= 20).then(|| Span::verbatim(start, end))
}

/// Whether standard base64 `text` (unpadded) decodes to bytes containing `:`.
fn base64_has_colon(text: &[u8]) -> bool {
    let mut acc = 0u32;
    let mut bits = 0;
    for &c in text {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return false,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            if (acc >> bits) & 0xff == u32::from(b':') {
                return true;
            }
            acc &= (1 << bits) - 1;
        }
    }
    false
}

/// An AWS access key id: `AKIA` or `ASIA` and 16 upper-case letters or digits.
fn aws_key_id(b: &[u8], i: usize) -> Option<Span> {
    let end = i + 20;
    if b.len() < end || !(b[i..].starts_with(b"AKIA") || b[i..].starts_with(b"ASIA")) {
        return None;
    }
    let body_ok = b[i + 4..end]
        .iter()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    (body_ok && ends_word(b, end)).then(|| Span::verbatim(i, end))
}

/// The 40-character secret after `aws_secret_access_key` (any case, `_` or `-` or
/// nothing between the words; also `secret_access_key`, `SecretAccessKey`,
/// `aws_secret_key`) and up to 8 of `` :="'\`` and blanks,
/// when no letter or digit follows it.
fn aws_secret(b: &[u8], i: usize) -> Option<Span> {
    let n = b.len();
    let mut j = i;
    let eat = |j: &mut usize, word: &[u8]| {
        let ok = starts_with_ignore_case(b, *j, word);
        if ok {
            *j += word.len();
            if *j < n && matches!(b[*j], b'_' | b'-') {
                *j += 1;
            }
        }
        ok
    };
    let aws = eat(&mut j, b"aws");
    if !eat(&mut j, b"secret") {
        return None;
    }
    let access = eat(&mut j, b"access");
    if !(aws || access) || !starts_with_ignore_case(b, j, b"key") {
        return None;
    }
    j += 3;
    let mut skipped = 0;
    while j < n && skipped < 8 && matches!(b[j], b' ' | b'\t' | b'"' | b'\'' | b':' | b'=' | b'\\')
    {
        j += 1;
        skipped += 1;
    }
    let end = j + 40;
    if skipped == 0 || n < end || !b[j..end].iter().all(|&c| is_b64(c)) {
        return None;
    }
    ends_word(b, end).then(|| Span::verbatim(j, end))
}

/// A well-known API-key prefix, the token characters of its issuer, and a minimum
/// token length after the prefix.
pub(super) struct Prefix {
    pub(super) text: &'static [u8],
    class: fn(u8) -> bool,
    pub(super) min: usize,
}

const fn prefix(text: &'static [u8], class: fn(u8) -> bool, min: usize) -> Prefix {
    Prefix { text, class, min }
}

/// The key prefixes detected, grouped by first byte (the scan looks up a group by
/// its byte), more specific first where two share a start.
pub(super) static PREFIXES: &[Prefix] = &[
    prefix(b"sk_live_", is_alnum, 10),
    prefix(b"sk_test_", is_alnum, 10),
    prefix(b"sk-ant-", is_b64url, 20),
    prefix(b"sk-proj-", is_b64url, 20),
    prefix(b"sk-", is_b64url, 20),
    prefix(b"shpat_", is_alnum, 20),
    prefix(b"shpss_", is_alnum, 20),
    prefix(b"shpca_", is_alnum, 20),
    prefix(b"shppa_", is_alnum, 20),
    prefix(b"sq0atp-", is_b64url, 20),
    prefix(b"sq0csp-", is_b64url, 20),
    prefix(b"rk_live_", is_alnum, 10),
    prefix(b"rk_test_", is_alnum, 10),
    prefix(b"pk_live_", is_alnum, 10),
    prefix(b"pk_test_", is_alnum, 10),
    prefix(b"pypi-", is_b64url, 32),
    prefix(b"whsec_", is_b64_padded, 16),
    prefix(b"ghp_", is_alnum, 20),
    prefix(b"gho_", is_alnum, 20),
    prefix(b"ghu_", is_alnum, 20),
    prefix(b"ghs_", is_alnum, 20),
    prefix(b"ghr_", is_alnum, 20),
    prefix(b"github_pat_", is_alnum_underscore, 22),
    prefix(b"glpat-", is_b64url, 16),
    prefix(b"xoxb-", is_alnum_dash, 10),
    prefix(b"xoxp-", is_alnum_dash, 10),
    prefix(b"xoxa-", is_alnum_dash, 10),
    prefix(b"xoxr-", is_alnum_dash, 10),
    prefix(b"xoxs-", is_alnum_dash, 10),
    prefix(b"xoxe-", is_alnum_dash, 10),
    prefix(b"xapp-", is_alnum_dash, 10),
    prefix(b"AIza", is_b64url, 30),
    prefix(b"SG.", is_b64url_dot, 40),
    prefix(b"npm_", is_alnum, 30),
    prefix(b"hf_", is_alnum, 30),
    prefix(b"dop_v1_", is_alnum, 32),
    prefix(b"ya29.", is_b64url, 20),
    prefix(b"lin_api_", is_alnum, 20),
];

/// The range of [`PREFIXES`] starting with each byte.
fn prefix_ranges() -> [(u8, u8); 256] {
    let mut ranges = [(0u8, 0u8); 256];
    for (k, p) in PREFIXES.iter().enumerate() {
        let k = u8::try_from(k).unwrap_or(u8::MAX);
        let r = &mut ranges[usize::from(p.text[0])];
        if r.1 == 0 {
            *r = (k, k);
        }
        r.1 = k.saturating_add(1);
    }
    ranges
}

/// A key with a well-known prefix: the prefix and its token, replaced together.
fn api_key(b: &[u8], i: usize, range: (u8, u8)) -> Option<Span> {
    let group = PREFIXES
        .get(usize::from(range.0)..usize::from(range.1))
        .unwrap_or(&[]);
    group
        .iter()
        .filter(|p| b[i..].starts_with(p.text))
        .find_map(|p| {
            let start = i + p.text.len();
            let end = run(b, start, p.class);
            (end - start >= p.min).then(|| Span::verbatim(i, end))
        })
}
