//! Standard Webhooks (<https://www.standardwebhooks.com>, the scheme Svix and others
//! send): `webhook-id`, `webhook-timestamp` and `webhook-signature`.
//!
//! The signed content is `"{webhook-id}.{webhook-timestamp}.{body}"`, with the id and
//! the timestamp exactly as they appear in their headers. `webhook-signature` is a
//! space-separated list of `version,signature` entries; `v1` is base64 HMAC-SHA256 and
//! any other version (such as `v1a`, the asymmetric one) is skipped. A delivery verifies
//! when any `v1` entry matches.
//!
//! The secret is `whsec_` followed by base64: the decoded bytes are the HMAC key. A
//! secret without the prefix is used as its raw bytes. (The reference libraries decode
//! an unprefixed secret as base64 too; portcullis keeps raw bytes so that any plain
//! shared secret works, and a `whsec_` secret — what Standard Webhooks senders hand
//! out — behaves the same either way.)

use super::{
    check_timestamp, find_key, malformed, parse_timestamp, required, tag, Key, SecretError, Tag,
    Verified, VerifyError, Window,
};
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use std::borrow::Cow;

/// The message id header; part of the signed content and the replay id.
pub const ID: &str = "webhook-id";
/// The timestamp header (Unix seconds).
pub const TIMESTAMP: &str = "webhook-timestamp";
/// The signature header: space-separated `v1,<base64>` entries.
pub const SIGNATURE: &str = "webhook-signature";
/// The prefix of a base64-encoded secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// Standard base64, padding optional when decoding, always written when encoding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The `v1` signatures of a `webhook-signature` value, in order.
///
/// Fails when the value has no `v1` entry, when an entry has no `,` between version
/// and signature, or when a `v1` signature is not base64 of 32 bytes. Entries of other
/// versions are skipped.
pub fn parse_signatures(value: &str) -> Result<Vec<Tag>, VerifyError> {
    let mut tags = Vec::new();
    for entry in value.split(' ').filter(|e| !e.is_empty()) {
        let Some((version, signature)) = entry.split_once(',') else {
            return Err(malformed(
                SIGNATURE,
                value,
                "an entry is not `version,signature`",
            ));
        };
        if version != "v1" {
            continue;
        }
        // 32 bytes are 44 base64 characters; refuse anything much longer before
        // allocating for it.
        let decoded = (signature.len() <= 64)
            .then(|| BASE64.decode(signature).ok())
            .flatten()
            .and_then(|bytes| Tag::try_from(bytes.as_slice()).ok());
        match decoded {
            Some(tag) => tags.push(tag),
            None => {
                return Err(malformed(
                    SIGNATURE,
                    value,
                    "a v1 signature is not base64 of 32 bytes",
                ))
            }
        }
    }
    if tags.is_empty() {
        return Err(malformed(SIGNATURE, value, "no v1 signature"));
    }
    Ok(tags)
}

/// The HMAC key of a secret: base64-decoded after `whsec_`, else the raw bytes.
/// `index` is the secret's position, for the error.
pub(super) fn secret_key(secret: &str, index: usize) -> Result<Cow<'_, [u8]>, SecretError> {
    match secret.strip_prefix(SECRET_PREFIX) {
        Some(encoded) => match BASE64.decode(encoded) {
            Ok(bytes) if !bytes.is_empty() => Ok(Cow::Owned(bytes)),
            _ => Err(SecretError::NotBase64 { index }),
        },
        None => Ok(Cow::Borrowed(secret.as_bytes())),
    }
}

/// The `webhook-signature` value for one key: `v1,<base64>`.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    let mac = tag(
        key,
        &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    );
    format!("v1,{}", BASE64.encode(mac))
}

/// The three headers of a delivery signed with `key` (already decoded: see
/// [`crate::webhook::sign`] to start from the secret as written).
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Vec<(String, String)> {
    vec![
        (ID.to_owned(), id.to_owned()),
        (TIMESTAMP.to_owned(), timestamp.to_string()),
        (SIGNATURE.to_owned(), signature(key, id, timestamp, body)),
    ]
}

pub(super) fn verify<'h>(
    keys: &[Key<'_>],
    headers: &dyn Fn(&str) -> Option<&'h str>,
    body: &[u8],
    window: Window,
) -> Result<Verified, VerifyError> {
    let id = required(headers, ID)?;
    let timestamp_text = required(headers, TIMESTAMP)?;
    let signature = required(headers, SIGNATURE)?;
    if id.is_empty() {
        return Err(malformed(ID, id, "empty"));
    }
    let timestamp = parse_timestamp(TIMESTAMP, timestamp_text)?;
    let candidates = parse_signatures(signature)?;
    let content: [&[u8]; 5] = [id.as_bytes(), b".", timestamp_text.as_bytes(), b".", body];
    let secret_index = find_key(keys, &content, &candidates).ok_or(VerifyError::BadSignature)?;
    check_timestamp(timestamp, window)?;
    Ok(Verified {
        replay_id: id.to_owned(),
        timestamp: Some(timestamp),
        secret_index,
    })
}
