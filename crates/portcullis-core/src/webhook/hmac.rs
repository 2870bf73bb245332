//! Plain HMAC-SHA256: `X-Signature: sha256=<hex>`, optionally with
//! `X-Signature-Timestamp: <Unix seconds>`.
//!
//! The key is the secret's bytes as written. What is signed depends on the timestamp
//! header, a choice portcullis makes because this scheme has no single published
//! standard:
//!
//! - without `X-Signature-Timestamp`, the signature is the HMAC of the body alone, the
//!   common "sign the payload" convention; there is no freshness check and replay
//!   protection rests on the replay store, keyed on the SHA-256 of the body;
//! - with it, the signature is the HMAC of `"{timestamp}.{body}"` (the timestamp exactly
//!   as written, Stripe's layout), and the timestamp must be within `tolerance` of now.
//!   Stripping the header does not help a replayer: the signature then no longer
//!   matches the body alone.
//!
//! The plain form cannot stop a captured delivery from being replayed once it has left
//! the replay window; senders that can, should send the timestamp. (A sender that mixes
//! both forms under one secret should not sign bodies that themselves begin with
//! `<digits>.`, or a body-only signature could be re-read as a timestamped one.)

use super::github::parse_sha256_hex;
use super::{
    check_timestamp, content_replay_id, encode_hex, find_key, parse_timestamp, required, tag, Key,
    Tag, Verified, VerifyError, Window,
};

/// The signature header.
pub const SIGNATURE: &str = "x-signature";
/// The optional timestamp header.
pub const TIMESTAMP: &str = "x-signature-timestamp";

/// The MAC in an `X-Signature` value: `sha256=` and 64 hex digits.
pub fn parse_signature(value: &str) -> Result<Tag, VerifyError> {
    parse_sha256_hex(SIGNATURE, value)
}

/// An `X-Signature-Timestamp` value: decimal digits, no sign.
pub fn parse_timestamp_header(value: &str) -> Result<i64, VerifyError> {
    parse_timestamp(TIMESTAMP, value)
}

/// The headers for `body` under `key` (the secret's bytes): `X-Signature`, and with a
/// timestamp also `X-Signature-Timestamp`, the timestamp then being signed too.
pub fn sign(key: &[u8], body: &[u8], timestamp: Option<i64>) -> Vec<(String, String)> {
    match timestamp {
        None => vec![(
            SIGNATURE.to_owned(),
            format!("sha256={}", encode_hex(&tag(key, &[body]))),
        )],
        Some(t) => {
            let t = t.to_string();
            let mac = tag(key, &[t.as_bytes(), b".", body]);
            vec![
                (SIGNATURE.to_owned(), format!("sha256={}", encode_hex(&mac))),
                (TIMESTAMP.to_owned(), t),
            ]
        }
    }
}

pub(super) fn verify<'h>(
    keys: &[Key<'_>],
    headers: &dyn Fn(&str) -> Option<&'h str>,
    body: &[u8],
    window: Window,
) -> Result<Verified, VerifyError> {
    let candidate = parse_signature(required(headers, SIGNATURE)?)?;
    let timestamp = match headers(TIMESTAMP) {
        Some(text) => Some((text, parse_timestamp_header(text)?)),
        None => None,
    };
    let content: Vec<&[u8]> = match timestamp {
        Some((text, _)) => vec![text.as_bytes(), b".", body],
        None => vec![body],
    };
    let secret_index = find_key(keys, &content, &[candidate]).ok_or(VerifyError::BadSignature)?;
    if let Some((_, t)) = timestamp {
        check_timestamp(t, window)?;
    }
    Ok(Verified {
        replay_id: content_replay_id(&content),
        timestamp: timestamp.map(|(_, t)| t),
        secret_index,
    })
}
