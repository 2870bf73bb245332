//! GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
//!
//! The key is the secret's bytes as written. GitHub signs no timestamp, so there is no
//! freshness check: replay protection rests on the replay store alone, keyed on the
//! SHA-256 of the body. `X-GitHub-Delivery` is deliberately not the replay id: it is not
//! signed, so a replayer could put a fresh GUID in it. The legacy SHA-1
//! `X-Hub-Signature` header is not accepted.
//!
//! Reference: <https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries>.

use super::{
    content_replay_id, decode_hex32, encode_hex, find_key, malformed, required, tag, Key, Tag,
    Verified, VerifyError,
};

/// The signature header.
pub const SIGNATURE: &str = "x-hub-signature-256";
/// GitHub's delivery GUID (informational only: it is not signed).
pub const DELIVERY: &str = "x-github-delivery";

/// The MAC in an `X-Hub-Signature-256` value: `sha256=` and 64 hex digits.
pub fn parse_signature(value: &str) -> Result<Tag, VerifyError> {
    parse_sha256_hex(SIGNATURE, value)
}

/// `sha256=<64 hex digits>` in the header `header` (shared with the `hmac_sha256`
/// scheme, which uses the same form).
pub(super) fn parse_sha256_hex(header: &'static str, value: &str) -> Result<Tag, VerifyError> {
    let Some(hex) = value.strip_prefix("sha256=") else {
        return Err(malformed(header, value, "expected `sha256=<hex>`"));
    };
    decode_hex32(hex).ok_or_else(|| malformed(header, value, "not 64 hex digits after sha256="))
}

/// The `X-Hub-Signature-256` value for `body` under `key`: `sha256=<hex>`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    format!("sha256={}", encode_hex(&tag(key, &[body])))
}

pub(super) fn verify<'h>(
    keys: &[Key<'_>],
    headers: &dyn Fn(&str) -> Option<&'h str>,
    body: &[u8],
) -> Result<Verified, VerifyError> {
    let candidate = parse_signature(required(headers, SIGNATURE)?)?;
    let secret_index = find_key(keys, &[body], &[candidate]).ok_or(VerifyError::BadSignature)?;
    Ok(Verified {
        replay_id: content_replay_id(&[body]),
        timestamp: None,
        secret_index,
    })
}
