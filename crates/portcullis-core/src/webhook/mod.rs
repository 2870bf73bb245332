//! Webhook signature verification and signing (SPEC "Webhooks"): pure functions, `now`
//! passed in.
//!
//! One module per scheme — [`standard`], [`github`], [`stripe`], [`hmac`] — holds its
//! header names, its header parsers and the exact bytes it signs. This module is the
//! common front door: [`verify`] checks a delivery against every active secret, and
//! [`sign`] produces the headers a sender would attach (what `portcullis webhook sign`
//! prints and what applications embedding the library call).
//!
//! # Example
//!
//! ```
//! use portcullis_core::webhook::{self, Scheme, Secrets};
//! use std::time::Duration;
//!
//! // The environment value named by `secret_env`; a comma-separated list is a rotation.
//! let secrets = Secrets::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
//! let body = br#"{"test": 2432232314}"#;
//! let now = 1_614_265_330;
//!
//! let signing = secrets.signing().expect("one secret");
//! let headers = webhook::sign(Scheme::Standard, signing, body, Some("msg_1"), now)?;
//! let lookup = |name: &str| {
//!     headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
//! };
//!
//! let verified = webhook::verify(
//!     Scheme::Standard, &secrets, &lookup, body, now, Duration::from_secs(300),
//! )?;
//! assert_eq!(verified.replay_id, "msg_1");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What [`verify`] guarantees, and in which order
//!
//! 1. At least one configured secret is usable for the scheme, else
//!    [`VerifyError::NoSecret`] (the gateway's fault, not the sender's).
//! 2. Every header the scheme needs is present and well formed, else
//!    [`VerifyError::MissingHeader`] / [`VerifyError::MalformedHeader`], naming the
//!    header and carrying the offending value (shortened).
//! 3. Some signature in the headers is the HMAC-SHA256, under some active secret, of
//!    the scheme's signed content built from the raw body bytes exactly as received.
//!    MACs are compared in constant time ([`::hmac::Mac::verify_slice`]). Else
//!    [`VerifyError::BadSignature`].
//! 4. Only then the timestamp, when the scheme has one, is within `tolerance` of
//!    `now_unix_secs` (inclusive), else [`VerifyError::Expired`] or
//!    [`VerifyError::FromTheFuture`]. Checking it after the signature means only an
//!    authentic sender ever learns that its clock or its delivery is stale; a forgery
//!    always reads `signature_invalid`.
//!
//! # Replay ids
//!
//! [`Verified::replay_id`] is what the replay store keys on. It is always built from
//! signed material, so an attacker cannot change it without breaking the signature:
//!
//! - `standard`: the `webhook-id` (it is part of the signed content);
//! - `github`, `stripe`, `hmac_sha256`: `sha256:` and the hex SHA-256 of the signed
//!   content (`body`, `"{t}.{body}"`, `body` or `"{timestamp}.{body}"`). Not the
//!   signature, because during a rotation one delivery carries one signature per secret
//!   and a replayer could drop all but one to mint a fresh id; not GitHub's
//!   `X-GitHub-Delivery`, because it is not signed and could be rewritten at will.
//!
//! A consequence for the two schemes without an id or timestamp (`github`, and
//! `hmac_sha256` without `X-Signature-Timestamp`): two deliveries with byte-identical
//! bodies within the replay window count as one.

pub mod github;
pub mod hmac;
pub mod standard;
pub mod stripe;

use ::hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::fmt;
use std::fmt::Write as _;
use std::time::Duration;

/// The signature scheme of a webhook route (the `scheme` key of `[[webhook]]`).
pub use crate::config::WebhookScheme as Scheme;

/// An HMAC-SHA256 tag, as the header parsers return signatures.
pub type Tag = [u8; 32];

/// How long an offending header value may be when it is carried in an error.
const MAX_ECHO: usize = 96;

/// The active secrets of one webhook route, parsed from the comma-separated value of
/// the environment variable that `secret_env` names.
///
/// During a rotation several secrets are active and a delivery signed with any of them
/// verifies. The first one listed is the one to sign with ([`Secrets::signing`]).
///
/// Secrets are kept as the text the operator wrote; what each scheme uses as the HMAC
/// key is derived from it (see [`standard`] for the `whsec_` prefix). `Debug` never
/// shows them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    values: Vec<String>,
}

/// A secret that cannot be used (from [`Secrets::validate`] or [`sign`]).
///
/// Unlike the other errors here it does not carry the offending value: it is a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretError {
    /// No secret at all: the value is empty or holds only commas and spaces.
    Empty,
    /// Secret number `index` (0-based, in the order listed) starts with `whsec_` but
    /// the rest is not base64, so the `standard` scheme has no key for it.
    NotBase64 {
        /// Position of the secret in the comma-separated list.
        index: usize,
    },
}

/// A delivery that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// What the replay store must not have seen within `tolerance` (see the module
    /// docs for how each scheme builds it).
    pub replay_id: String,
    /// The signed timestamp (Unix seconds), when the scheme sent one.
    pub timestamp: Option<i64>,
    /// Which secret matched: its position in the comma-separated list. Useful to tell
    /// when senders have moved off an old secret during a rotation.
    pub secret_index: usize,
}

/// Why a delivery did not verify.
///
/// Every variant but [`VerifyError::NoSecret`] is the sender's fault (an
/// unauthenticated request, 401); `NoSecret` is a misconfigured gateway (500).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// A header the scheme needs is absent (the name, lower case).
    MissingHeader(&'static str),
    /// A header is present but cannot be parsed.
    MalformedHeader {
        /// The header's name, lower case.
        header: &'static str,
        /// Its value, shortened to about 100 characters.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The signed timestamp is older than `now - tolerance`.
    Expired {
        /// The signed timestamp (Unix seconds).
        timestamp: i64,
        /// How old it is, in seconds.
        age_secs: u64,
        /// The tolerance it exceeded, in whole seconds.
        tolerance_secs: u64,
    },
    /// The signed timestamp is later than `now + tolerance`.
    FromTheFuture {
        /// The signed timestamp (Unix seconds).
        timestamp: i64,
        /// How far ahead of `now` it is, in seconds.
        ahead_secs: u64,
        /// The tolerance it exceeded, in whole seconds.
        tolerance_secs: u64,
    },
    /// No signature in the headers matches the body under any active secret.
    BadSignature,
    /// No secret is configured, or none is usable for the scheme.
    NoSecret,
}

/// Why [`sign`] could not produce headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignError {
    /// The secret cannot be used.
    Secret(SecretError),
    /// The scheme signs a timestamp and this one is negative.
    NegativeTimestamp(i64),
    /// The message id is empty or has characters other than visible ASCII.
    InvalidId(String),
}

/// Checks a webhook delivery: its headers (through `headers`), its raw `body` and the
/// clock reading `now_unix_secs`, against every secret in `secrets`.
///
/// `headers` is asked for lower-case names (`webhook-id`, `stripe-signature`, ...) and
/// must match them without regard to case, as HTTP does; for a repeated header it
/// should return the first value. `tolerance` is the `[[webhook]] tolerance`: the
/// accepted clock skew in either direction, in whole seconds.
///
/// See the module docs for the order of the checks and for what
/// [`Verified::replay_id`] is.
pub fn verify<'h>(
    scheme: Scheme,
    secrets: &Secrets,
    headers: &dyn Fn(&str) -> Option<&'h str>,
    body: &[u8],
    now_unix_secs: i64,
    tolerance: Duration,
) -> Result<Verified, VerifyError> {
    let keys = secrets.keys(scheme);
    if keys.is_empty() {
        return Err(VerifyError::NoSecret);
    }
    let window = Window {
        now: now_unix_secs,
        tolerance_secs: tolerance.as_secs(),
    };
    match scheme {
        Scheme::Standard => standard::verify(&keys, headers, body, window),
        Scheme::Github => github::verify(&keys, headers, body),
        Scheme::Stripe => stripe::verify(&keys, headers, body, window),
        Scheme::HmacSha256 => hmac::verify(&keys, headers, body, window),
    }
}

/// The checks of [`verify`] that need no body: a usable secret, and every header the
/// scheme needs present and well formed (steps 1 and 2 of the module docs, with the same
/// errors). A gateway calls it before it buffers a body, so that a sender without
/// signature headers cannot make it hold one.
pub fn check_headers<'h>(
    scheme: Scheme,
    secrets: &Secrets,
    headers: &dyn Fn(&str) -> Option<&'h str>,
) -> Result<(), VerifyError> {
    // Steps 1 and 2 come first in `verify` whatever the body, so verifying an empty body
    // with a tolerance that accepts any timestamp fails here only for them.
    match verify(scheme, secrets, headers, b"", 0, Duration::MAX) {
        Err(
            e @ (VerifyError::NoSecret
            | VerifyError::MissingHeader(_)
            | VerifyError::MalformedHeader { .. }),
        ) => Err(e),
        _ => Ok(()),
    }
}

/// The headers a sender attaches to `body`, as `(lower-case name, value)` pairs in the
/// order a sender would write them.
///
/// `secret` is one secret as the operator writes it (e.g. [`Secrets::signing`]).
/// `timestamp` (Unix seconds) is signed by `standard`, `stripe` and `hmac_sha256` (which
/// then also sends `X-Signature-Timestamp`; [`hmac::sign`] can leave it out) and ignored
/// by `github`. `id` is the `standard` scheme's `webhook-id` and ignored by the others;
/// without one, `msg_` and 32 hex digits of the SHA-256 of `"{timestamp}.{body}"` are
/// used, so signing the same body at the same second gives the same id, as a replay
/// store should see it.
pub fn sign(
    scheme: Scheme,
    secret: &str,
    body: &[u8],
    id: Option<&str>,
    timestamp: i64,
) -> Result<Vec<(String, String)>, SignError> {
    let key = key_for(scheme, secret, 0).map_err(SignError::Secret)?;
    if scheme != Scheme::Github && timestamp < 0 {
        return Err(SignError::NegativeTimestamp(timestamp));
    }
    Ok(match scheme {
        Scheme::Standard => {
            let id = match id {
                Some(id) if valid_id(id) => id.to_owned(),
                Some(id) => return Err(SignError::InvalidId(shorten(id))),
                None => {
                    let digest = sha256_hex(&[timestamp.to_string().as_bytes(), b".", body]);
                    format!("msg_{}", &digest[..32])
                }
            };
            standard::sign(&key, &id, timestamp, body)
        }
        Scheme::Github => vec![(github::SIGNATURE.to_owned(), github::signature(&key, body))],
        Scheme::Stripe => vec![(
            stripe::SIGNATURE.to_owned(),
            stripe::signature(&key, timestamp, body),
        )],
        Scheme::HmacSha256 => hmac::sign(&key, body, Some(timestamp)),
    })
}

// === impl Secrets ===

impl Secrets {
    /// Splits a comma-separated list; spaces around each secret are trimmed and empty
    /// entries skipped. Never fails: see [`Secrets::validate`] for the checks.
    pub fn parse(value: &str) -> Self {
        Secrets {
            values: value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }

    /// How many secrets are active.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there is none (then every delivery fails with [`VerifyError::NoSecret`]).
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The secret to sign with: the first one listed.
    pub fn signing(&self) -> Option<&str> {
        self.values.first().map(String::as_str)
    }

    /// Whether every secret is usable for `scheme`, for startup checks: at least one
    /// secret, and for `standard` every `whsec_` secret is valid base64. [`verify`]
    /// skips an unusable secret rather than failing, so catch them here.
    pub fn validate(&self, scheme: Scheme) -> Result<(), SecretError> {
        if self.values.is_empty() {
            return Err(SecretError::Empty);
        }
        for (index, secret) in self.values.iter().enumerate() {
            key_for(scheme, secret, index)?;
        }
        Ok(())
    }

    /// The usable HMAC keys for `scheme`, each with its position in the list.
    fn keys(&self, scheme: Scheme) -> Vec<Key<'_>> {
        self.values
            .iter()
            .enumerate()
            .filter_map(|(index, secret)| {
                key_for(scheme, secret, index)
                    .ok()
                    .map(|bytes| Key { index, bytes })
            })
            .collect()
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets([REDACTED; {}])", self.values.len())
    }
}

// === impl VerifyError ===

impl VerifyError {
    /// A stable machine-readable name, for problem+json `code` and metric labels:
    /// `signature_missing`, `signature_malformed`, `timestamp_outside_tolerance`,
    /// `signature_invalid` or `webhook_secret_missing`.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::MissingHeader(_) => "signature_missing",
            VerifyError::MalformedHeader { .. } => "signature_malformed",
            VerifyError::Expired { .. } | VerifyError::FromTheFuture { .. } => {
                "timestamp_outside_tolerance"
            }
            VerifyError::BadSignature => "signature_invalid",
            VerifyError::NoSecret => "webhook_secret_missing",
        }
    }

    /// Whether the sender caused the failure (every variant but `NoSecret`).
    pub fn is_client_error(&self) -> bool {
        !matches!(self, VerifyError::NoSecret)
    }

    /// The HTTP status to answer with: 401 for the sender's failures, 500 for
    /// `NoSecret`. (A replayed id, 409, is the replay store's verdict, not this one's.)
    pub fn status(&self) -> u16 {
        if self.is_client_error() {
            401
        } else {
            500
        }
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::MissingHeader(header) => {
                write!(f, "missing webhook signature header `{header}`")
            }
            VerifyError::MalformedHeader {
                header,
                value,
                reason,
            } => write!(f, "malformed `{header}` header ({reason}): {value:?}"),
            VerifyError::Expired {
                timestamp,
                age_secs,
                tolerance_secs,
            } => write!(
                f,
                "webhook timestamp {timestamp} is {age_secs} s old, beyond the tolerance \
                 of {tolerance_secs} s"
            ),
            VerifyError::FromTheFuture {
                timestamp,
                ahead_secs,
                tolerance_secs,
            } => write!(
                f,
                "webhook timestamp {timestamp} is {ahead_secs} s in the future, beyond the \
                 tolerance of {tolerance_secs} s"
            ),
            VerifyError::BadSignature => {
                f.write_str("no webhook signature matches the body under any active secret")
            }
            VerifyError::NoSecret => f.write_str("no usable webhook secret is configured"),
        }
    }
}

impl std::error::Error for VerifyError {}

// === impl SecretError ===

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::Empty => f.write_str("no webhook secret given"),
            SecretError::NotBase64 { index } => write!(
                f,
                "webhook secret #{} starts with `whsec_` but the rest is not base64",
                index + 1
            ),
        }
    }
}

impl std::error::Error for SecretError {}

// === impl SignError ===

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignError::Secret(e) => e.fmt(f),
            SignError::NegativeTimestamp(t) => {
                write!(f, "cannot sign a negative timestamp ({t})")
            }
            SignError::InvalidId(id) => write!(
                f,
                "webhook id {id:?} must be non-empty visible ASCII (no spaces or controls)"
            ),
        }
    }
}

impl std::error::Error for SignError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SignError::Secret(e) => Some(e),
            _ => None,
        }
    }
}

// === helpers shared by the scheme modules ===

/// One usable HMAC key and the position of its secret in the list.
struct Key<'a> {
    index: usize,
    bytes: Cow<'a, [u8]>,
}

/// The clock reading and the accepted skew.
#[derive(Clone, Copy)]
struct Window {
    now: i64,
    tolerance_secs: u64,
}

/// The HMAC key `scheme` derives from one secret as written.
fn key_for(scheme: Scheme, secret: &str, index: usize) -> Result<Cow<'_, [u8]>, SecretError> {
    if secret.is_empty() {
        return Err(SecretError::Empty);
    }
    match scheme {
        Scheme::Standard => standard::secret_key(secret, index),
        Scheme::Github | Scheme::Stripe | Scheme::HmacSha256 => {
            Ok(Cow::Borrowed(secret.as_bytes()))
        }
    }
}

/// A keyed HMAC-SHA256 state after absorbing `parts` in order.
fn mac_over(key: &[u8], parts: &[&[u8]]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length (long ones are hashed), so this cannot fail; the
    // fallback exists only to avoid a panic path.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()));
    for part in parts {
        mac.update(part);
    }
    mac
}

/// The HMAC-SHA256 of `parts` under `key`.
fn tag(key: &[u8], parts: &[&[u8]]) -> Tag {
    mac_over(key, parts).finalize().into_bytes().into()
}

/// The first key under which some candidate is the MAC of `parts`, compared in
/// constant time.
fn find_key(keys: &[Key<'_>], parts: &[&[u8]], candidates: &[Tag]) -> Option<usize> {
    keys.iter().find_map(|key| {
        let mac = mac_over(&key.bytes, parts);
        candidates
            .iter()
            .any(|candidate| mac.clone().verify_slice(candidate).is_ok())
            .then_some(key.index)
    })
}

/// A timestamp header: ASCII digits only (no sign, no spaces), fitting in an `i64`.
fn parse_timestamp(header: &'static str, value: &str) -> Result<i64, VerifyError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(
            header,
            value,
            "not a Unix timestamp in decimal digits",
        ));
    }
    value
        .parse::<i64>()
        .map_err(|_| malformed(header, value, "timestamp out of range"))
}

/// Whether `timestamp` is within the tolerance of `now`, either side, inclusive.
fn check_timestamp(timestamp: i64, window: Window) -> Result<(), VerifyError> {
    // i128: neither the difference nor the tolerance can overflow.
    let age = i128::from(window.now) - i128::from(timestamp);
    let tolerance = i128::from(window.tolerance_secs);
    let secs = |v: i128| u64::try_from(v).unwrap_or(u64::MAX);
    if age > tolerance {
        Err(VerifyError::Expired {
            timestamp,
            age_secs: secs(age),
            tolerance_secs: window.tolerance_secs,
        })
    } else if -age > tolerance {
        Err(VerifyError::FromTheFuture {
            timestamp,
            ahead_secs: secs(-age),
            tolerance_secs: window.tolerance_secs,
        })
    } else {
        Ok(())
    }
}

/// A header value that must be present.
fn required<'h>(
    headers: &dyn Fn(&str) -> Option<&'h str>,
    name: &'static str,
) -> Result<&'h str, VerifyError> {
    headers(name).ok_or(VerifyError::MissingHeader(name))
}

/// A `MalformedHeader` error carrying a shortened copy of the value.
fn malformed(header: &'static str, value: &str, reason: &'static str) -> VerifyError {
    VerifyError::MalformedHeader {
        header,
        value: shorten(value),
        reason,
    }
}

/// `value` cut to at most `MAX_ECHO` bytes on a character boundary, with `…` if cut.
fn shorten(value: &str) -> String {
    if value.len() <= MAX_ECHO {
        return value.to_owned();
    }
    let mut end = MAX_ECHO;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
}

/// 64 hex digits (either case) as 32 bytes.
fn decode_hex32(text: &str) -> Option<Tag> {
    fn nibble(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *slot = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// Lower-case hex.
fn encode_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Hex SHA-256 of the concatenation of `parts`.
fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    encode_hex(&hasher.finalize())
}

/// The replay id of schemes without a message id: `sha256:` and the hex digest of the
/// signed content.
fn content_replay_id(parts: &[&[u8]]) -> String {
    format!("sha256:{}", sha256_hex(parts))
}

/// A message id a sender may put in a header: non-empty visible ASCII.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests;
