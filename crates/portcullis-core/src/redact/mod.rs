//! Redaction of everything the gateway logs (SPEC "Access log", `[log]`).
//!
//! A [`Redactor`] replaces secrets and personal data in log strings, header lists and
//! whole JSON log lines. In `mask` mode a secret becomes `[REDACTED]`; in `hash` mode
//! it becomes `h:` and the first 16 hex digits of HMAC-SHA256(key, secret), so the same
//! secret gets the same token on every line (for one key) without being recoverable.
//!
//! # Example
//!
//! ```
//! use portcullis_core::config::{LogConfig, Redaction};
//! use portcullis_core::redact::Redactor;
//!
//! let log = LogConfig { redaction: Redaction::Mask, ..LogConfig::default() };
//! let r = Redactor::from_config(&log, b"key");
//! assert_eq!(
//!     r.redact_str("GET /v1/me?token=s3cret by ann@example.com"),
//!     "GET /v1/me?token=[REDACTED] by [REDACTED]"
//! );
//! assert_eq!(r.redact_str("GET /v1/health"), "GET /v1/health"); // borrowed, no allocation
//! ```
//!
//! # What is redacted
//!
//! By name (always, from `redact_headers` / `redact_query`, compared without case):
//! - the value of a configured header, by [`Redactor::redact_header`], in a JSON object
//!   under that key, and inside any string as `name: value` or `"name": "value"` (to the
//!   end of the line or of the quoted string). A known auth scheme in front of one-word
//!   credentials is kept (`Bearer [REDACTED]`), so a token hashes the same in a header
//!   and anywhere else;
//! - the value of a configured query parameter, as `?name=value` or `&name=value`
//!   anywhere in a string (up to `&`, `#`, a blank or a quote), and in a JSON object
//!   under that key.
//!
//! By value (the detectors of `redact_patterns`), anywhere in a string:
//! - `email`: `local@domain` (also `%40`), local part `[A-Za-z0-9._%+-]`, a domain of at
//!   least two labels whose last starts with two letters;
//! - `bearer`: the credentials after `Bearer` (token68, at least 8 characters, with a
//!   digit, a symbol or mixed case, or at least 20 long; `realm="…"` auth-params are
//!   not tokens) and after `Basic` (base64 that decodes to `user:password`), in any
//!   case, after blanks, `+` or `%20`;
//! - `jwt`: `eyJ…` with at least two more `.` segments (JWS and JWE);
//! - `card`: 13–19 digits, possibly grouped by single spaces or dashes, starting with
//!   2–6 (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay) and Luhn-valid, with
//!   no letter or digit right before or after; in a longer group of digit runs, the
//!   runs that form a card;
//! - `aws_key`: access key ids `AKIA`/`ASIA` + 16 upper-case letters or digits, and the
//!   40-character secret after `aws_secret_access_key` (also `secret_access_key`,
//!   `SecretAccessKey`, `aws_secret_key`, `-` or `_` or nothing between the words);
//! - `api_key_prefixes`: `sk_live_`, `sk_test_`, `rk_live_`, `rk_test_`, `pk_live_`,
//!   `pk_test_`, `whsec_`, `ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`,
//!   `xoxb-`, `xoxp-`, `xoxa-`, `xoxr-`, `xoxs-`, `xoxe-`, `xapp-`, `glpat-`, `AIza`,
//!   `SG.`, `npm_`, `hf_`, `sk-ant-`, `sk-proj-`, `sk-`, `pypi-`, `shpat_`, `shpss_`,
//!   `shpca_`, `shppa_`, `dop_v1_`, `ya29.`, `sq0atp-`, `sq0csp-`, `lin_api_`, each
//!   followed by at least 10–40 of its issuer's token characters; the prefix is
//!   replaced with the key.
//!
//! Prefix, JWT, bearer and AWS matches must start a word (no letter or digit before).
//!
//! # What is not
//!
//! Deliberately kept, because they are what makes a log useful and are not secrets:
//! UUIDs and request ids, ISO timestamps and Unix times (a 13-digit millisecond time
//! starts with 1, which no major card network uses), IPv4 and IPv6 addresses (the
//! `client` field is hashed by the gateway through [`Redactor::replace`], not by a
//! detector), numbers that fail Luhn (order numbers), hex digests, ordinary words.
//!
//! Not detected, so keep them out of logs by name: passwords and secrets with no
//! recognisable shape (`password=` in a query string is caught by name only), cards
//! written without grouping or with other separators (`4111.1111…`), starting with 1,
//! 7, 8 or 9, or glued to letters (`card4111…`), e-mail addresses with a quoted local
//! part or an IP literal domain, `user:password@` in URLs (the part after `:` is caught
//! only when the host is a domain name, as an e-mail address), AWS secrets without
//! their key name, PEM private keys, and API keys of issuers not listed above. Object
//! keys of JSON values are scanned like values, but two keys redacted to the same mask
//! collapse into one entry.
//!
//! # Guarantees
//!
//! - One pass per string through a 256-entry trigger table compiled at construction;
//!   no regex; a string with nothing to redact comes back [`Cow::Borrowed`] without
//!   allocating.
//! - Matches never overlap, and every replacement covers at least one input byte and
//!   is introduced by at least two more (a trigger such as `?k=` or `a:`, or the rest
//!   of a longer match), so for `k` replacements the output has at most
//!   `input.len() + k * (R - 1)` bytes with `k <= input.len() / 3`, where `R` is
//!   [`MASK`]`.len()` (10) or [`HASH_LEN`] (18).
//! - Idempotent: replacements are never matched again (`h:` + 16 hex is skipped as a
//!   whole, and a value that already is a replacement is kept), so redacting twice
//!   gives the same text as redacting once.
//! - Never panics, on any string.

mod scan;
#[cfg(test)]
mod tests;

use crate::config::{LogConfig, RedactPattern, Redaction};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::borrow::Cow;

use scan::{Detectors, Kind, Rules, Span};

/// The replacement text in `mask` mode.
pub const MASK: &str = "[REDACTED]";

/// The length of a replacement in `hash` mode: `h:` and 16 hex digits.
pub const HASH_LEN: usize = scan::HASH_TOKEN_LEN;

/// Redacts strings, headers and JSON values for logs.
#[derive(Clone)]
pub struct Redactor {
    mode: Redaction,
    mac: Hmac<Sha256>,
    rules: Rules,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("mode", &self.mode)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

// === impl Redactor ===

impl Redactor {
    /// A redactor with the default `[log]` header names and every detector, redacting
    /// the query parameters `query_names`. `key` keys the hash (ignored in mask mode).
    pub fn new(mode: Redaction, key: &[u8], query_names: &[String]) -> Self {
        let defaults = LogConfig::default();
        Self::with_rules(
            mode,
            key,
            &defaults.redact_headers,
            query_names,
            &defaults.redact_patterns,
        )
    }

    /// The redactor `[log]` describes: its mode, header and query names and detectors.
    pub fn from_config(log: &LogConfig, key: &[u8]) -> Self {
        Self::with_rules(
            log.redaction,
            key,
            &log.redact_headers,
            &log.redact_query,
            &log.redact_patterns,
        )
    }

    /// A redactor from its parts; names are compared without regard to case.
    pub fn with_rules(
        mode: Redaction,
        key: &[u8],
        header_names: &[String],
        query_names: &[String],
        patterns: &[RedactPattern],
    ) -> Self {
        // HMAC accepts keys of any length, so this cannot fail; a fixed key would only
        // ever be a fallback for an impossible error.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| {
            <Hmac<Sha256> as Mac>::new_from_slice(b"portcullis").expect("static key")
        });
        let mut detectors = Detectors::default();
        for p in patterns {
            match p {
                RedactPattern::Email => detectors.email = true,
                RedactPattern::Bearer => detectors.bearer = true,
                RedactPattern::Jwt => detectors.jwt = true,
                RedactPattern::Card => detectors.card = true,
                RedactPattern::AwsKey => detectors.aws = true,
                RedactPattern::ApiKeyPrefixes => detectors.prefixes = true,
            }
        }
        Redactor {
            mode,
            mac,
            rules: Rules::new(detectors, header_names, query_names),
        }
    }

    /// Mask or hash.
    pub fn mode(&self) -> Redaction {
        self.mode
    }

    /// The replacement of a sensitive value: `[REDACTED]`, or `h:` and the first 16 hex
    /// digits of its keyed hash.
    pub fn replace(&self, value: &str) -> String {
        let mut out = String::with_capacity(HASH_LEN);
        self.write_replacement(&mut out, Kind::Verbatim, value.as_bytes());
        out
    }

    /// A request target with the values of configured query parameters, and anything
    /// a detector finds, replaced.
    pub fn path(&self, path_and_query: &str) -> String {
        self.redact_str(path_and_query).into_owned()
    }

    /// `s` with every secret replaced (see the module documentation); borrowed when
    /// there was nothing to replace.
    pub fn redact_str<'a>(&self, s: &'a str) -> Cow<'a, str> {
        self.redact_counted(s).0
    }

    /// [`Redactor::redact_str`] and the number of replacements made.
    fn redact_counted<'a>(&self, s: &'a str) -> (Cow<'a, str>, usize) {
        let mut out: Option<String> = None;
        let mut last = 0;
        let mut count = 0;
        self.rules.scan(s, |span: Span| {
            let o = out.get_or_insert_with(|| String::with_capacity(s.len() + HASH_LEN));
            o.push_str(&s[last..span.start]);
            self.write_replacement(o, span.kind, &s.as_bytes()[span.start..span.end]);
            last = span.end;
            count += 1;
        });
        match out {
            None => (Cow::Borrowed(s), 0),
            Some(mut o) => {
                o.push_str(&s[last..]);
                (Cow::Owned(o), count)
            }
        }
    }

    /// The value of header `name` as it may be logged: replaced whole when the name is
    /// configured (keeping a known auth scheme: `Bearer h:…`), else scanned.
    pub fn redact_header<'a>(&self, name: &str, value: &'a str) -> Cow<'a, str> {
        if !self.rules.is_header_name(name.as_bytes()) {
            return self.redact_str(value);
        }
        match self.replace_credentials(value) {
            Some(hidden) => Cow::Owned(hidden),
            None => Cow::Borrowed(value),
        }
    }

    /// A value stored under a sensitive name, replaced whole but for a known auth
    /// scheme in front of one-word credentials; `None` when it is empty or already a
    /// replacement.
    fn replace_credentials(&self, value: &str) -> Option<String> {
        let b = value.as_bytes();
        let start = scan::after_auth_scheme(b, 0);
        if start == b.len() || scan::is_replacement(&b[start..]) {
            return None;
        }
        let mut out = String::with_capacity(start + HASH_LEN);
        out.push_str(&value[..start]);
        self.write_replacement(&mut out, Kind::Verbatim, &b[start..]);
        Some(out)
    }

    /// Header (name, value) pairs as they may be logged, in order; see
    /// [`Redactor::redact_header`].
    pub fn redact_headers<'a, N, I>(&self, headers: I) -> Vec<(N, Cow<'a, str>)>
    where
        N: AsRef<str>,
        I: IntoIterator<Item = (N, &'a str)>,
    {
        headers
            .into_iter()
            .map(|(name, value)| {
                let value = self.redact_header(name.as_ref(), value);
                (name, value)
            })
            .collect()
    }

    /// Whether `name` is a configured header or query parameter name.
    pub fn is_sensitive_name(&self, name: &str) -> bool {
        self.rules.is_header_name(name.as_bytes()) || self.rules.is_query_name(name.as_bytes())
    }

    /// Redacts every string in `value` in place: values under an object key that names
    /// a configured header or query parameter are replaced whole as by
    /// [`Redactor::redact_header`] (strings and numbers; `true`/`false`/`null` are kept),
    /// every other string (object keys too) is scanned.
    pub fn redact_json(&self, value: &mut Value) {
        let mut stack: Vec<&mut Value> = Vec::new();
        let mut next = Some(value);
        while let Some(v) = next.take().or_else(|| stack.pop()) {
            match v {
                Value::String(s) => self.redact_string(s),
                Value::Array(items) => stack.extend(items.iter_mut()),
                Value::Object(map) => {
                    self.redact_keys(map);
                    for (k, item) in map.iter_mut() {
                        if self.is_sensitive_name(k) {
                            self.replace_leaves(item);
                        } else {
                            match item {
                                Value::String(s) => self.redact_string(s),
                                Value::Array(_) | Value::Object(_) => stack.push(item),
                                _ => {}
                            }
                        }
                    }
                }
                Value::Null | Value::Bool(_) | Value::Number(_) => {}
            }
        }
    }

    fn redact_string(&self, s: &mut String) {
        if let Cow::Owned(o) = self.redact_str(s) {
            *s = o;
        }
    }

    /// Rebuilds `map` (keeping its order) when a key needs redaction.
    fn redact_keys(&self, map: &mut serde_json::Map<String, Value>) {
        if !map
            .keys()
            .any(|k| matches!(self.redact_str(k), Cow::Owned(_)))
        {
            return;
        }
        let old = std::mem::take(map);
        for (k, v) in old {
            let k = match self.redact_str(&k) {
                Cow::Owned(o) => o,
                Cow::Borrowed(_) => k,
            };
            map.insert(k, v);
        }
    }

    /// Replaces every string and number under `value`.
    fn replace_leaves(&self, value: &mut Value) {
        let mut stack = vec![value];
        while let Some(v) = stack.pop() {
            match v {
                Value::String(s) => {
                    if let Some(hidden) = self.replace_credentials(s) {
                        *s = hidden;
                    }
                }
                Value::Number(n) => {
                    let hidden = self.replace(&n.to_string());
                    *v = Value::String(hidden);
                }
                Value::Array(items) => stack.extend(items.iter_mut()),
                Value::Object(map) => stack.extend(map.values_mut()),
                Value::Null | Value::Bool(_) => {}
            }
        }
    }

    /// Appends the replacement of `text` (normalised by `kind` before hashing).
    fn write_replacement(&self, out: &mut String, kind: Kind, text: &[u8]) {
        if self.mode == Redaction::Mask {
            out.push_str(MASK);
            return;
        }
        let mut mac = self.mac.clone();
        match kind {
            Kind::Verbatim => mac.update(text),
            Kind::Digits => {
                for run in text.split(|c| !c.is_ascii_digit()) {
                    mac.update(run);
                }
            }
            Kind::Email => {
                let mut buf = [0u8; 64];
                let mut len = 0;
                let mut k = 0;
                while k < text.len() {
                    let c = if text[k..].starts_with(b"%40") {
                        k += 3;
                        b'@'
                    } else {
                        k += 1;
                        text[k - 1].to_ascii_lowercase()
                    };
                    buf[len] = c;
                    len += 1;
                    if len == buf.len() {
                        mac.update(&buf);
                        len = 0;
                    }
                }
                mac.update(&buf[..len]);
            }
        }
        let digest = mac.finalize().into_bytes();
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.push_str("h:");
        for &byte in &digest[..8] {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
}

/// Whether `s` is exactly a replacement this module writes (`[REDACTED]` or `h:` and
/// 16 lower-case hex digits).
pub fn is_replacement(s: &str) -> bool {
    scan::is_replacement(s.as_bytes())
}
