//! Stripe: `Stripe-Signature: t=<timestamp>,v1=<hex>[,v1=<hex>...][,v0=<hex>]`.
//!
//! The signed payload is `"{t}.{body}"`, with `t` exactly as it appears in the header,
//! and each `v1` is its hex HMAC-SHA256. Stripe sends one `v1` per active secret while
//! a secret is being rolled; any may match. `v0` (test-mode SHA-1 era) and unknown keys
//! are ignored. The key is the whole secret as written, `whsec_` prefix included —
//! Stripe does not base64-decode it, unlike Standard Webhooks.
//!
//! Reference: <https://docs.stripe.com/webhooks#verify-manually>.

use super::{
    check_timestamp, content_replay_id, decode_hex32, encode_hex, find_key, malformed,
    parse_timestamp, required, tag, Key, Tag, Verified, VerifyError, Window,
};

/// The signature header.
pub const SIGNATURE: &str = "stripe-signature";

/// A parsed `Stripe-Signature` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    /// `t`, as written (it is signed as text).
    pub timestamp_text: &'a str,
    /// `t`, as a number.
    pub timestamp: i64,
    /// Every `v1` signature, in order.
    pub v1: Vec<Tag>,
}

/// Parses a `Stripe-Signature` value: comma-separated `key=value` items (spaces around
/// an item are ignored), exactly one `t`, at least one `v1` of 64 hex digits.
pub fn parse_header(value: &str) -> Result<Header<'_>, VerifyError> {
    let mut timestamp: Option<(&str, i64)> = None;
    let mut v1 = Vec::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((key, val)) = item.split_once('=') else {
            return Err(malformed(SIGNATURE, value, "an item is not `key=value`"));
        };
        match key {
            "t" => {
                if timestamp.is_some() {
                    return Err(malformed(SIGNATURE, value, "more than one `t`"));
                }
                let t = parse_timestamp(SIGNATURE, val)
                    .map_err(|_| malformed(SIGNATURE, value, "`t` is not a Unix timestamp"))?;
                timestamp = Some((val, t));
            }
            "v1" => match decode_hex32(val) {
                Some(tag) => v1.push(tag),
                None => return Err(malformed(SIGNATURE, value, "a v1 is not 64 hex digits")),
            },
            _ => {}
        }
    }
    let Some((timestamp_text, timestamp)) = timestamp else {
        return Err(malformed(SIGNATURE, value, "no `t` timestamp"));
    };
    if v1.is_empty() {
        return Err(malformed(SIGNATURE, value, "no v1 signature"));
    }
    Ok(Header {
        timestamp_text,
        timestamp,
        v1,
    })
}

/// The `Stripe-Signature` value for `body` at `timestamp` under `key` (the secret's
/// bytes): `t=<timestamp>,v1=<hex>`.
pub fn signature(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    let t = timestamp.to_string();
    let mac = tag(key, &[t.as_bytes(), b".", body]);
    format!("t={t},v1={}", encode_hex(&mac))
}

pub(super) fn verify<'h>(
    keys: &[Key<'_>],
    headers: &dyn Fn(&str) -> Option<&'h str>,
    body: &[u8],
    window: Window,
) -> Result<Verified, VerifyError> {
    let header = parse_header(required(headers, SIGNATURE)?)?;
    let content: [&[u8]; 3] = [header.timestamp_text.as_bytes(), b".", body];
    let secret_index = find_key(keys, &content, &header.v1).ok_or(VerifyError::BadSignature)?;
    check_timestamp(header.timestamp, window)?;
    Ok(Verified {
        replay_id: content_replay_id(&content),
        timestamp: Some(header.timestamp),
        secret_index,
    })
}
