//! Building a policy's key from a request (SPEC "Keys and limits, exactly").

use super::{Policy, Route};
use crate::config::{KeySource, OnMissingKey};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::fmt::Write as _;

/// What a key can be built from; the gateway implements it over an HTTP request.
pub trait RequestFacts {
    /// The client IP in key form (`203.0.113.7`, `2001:db8:1:2::/64`).
    fn client_key(&self) -> &str;
    /// A request header's value, by lower-case name.
    fn header(&self, name: &str) -> Option<&str>;
    /// A query parameter's value.
    fn query(&self, name: &str) -> Option<&str>;
}

/// The key of a request for one policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOutcome {
    /// The key, in SPEC's form.
    Key(String),
    /// `on_missing_key = "skip"` and a source was absent: the policy does not apply.
    Skip,
    /// `on_missing_key = "deny"` and this source was absent.
    Deny(KeySource),
}

/// The first 16 hex digits of the SHA-256 of a credential: what `api_key` keys are.
pub fn api_key_hash(credential: &str) -> String {
    let digest = Sha256::digest(credential.as_bytes());
    let mut out = String::with_capacity(16);
    for b in &digest[..8] {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn api_key<F: RequestFacts>(facts: &F) -> Option<String> {
    if let Some(k) = facts.header("x-api-key").filter(|k| !k.trim().is_empty()) {
        return Some(api_key_hash(k.trim()));
    }
    let auth = facts.header("authorization")?;
    let (scheme, token) = auth.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| api_key_hash(token))
}

/// Joins the policy's key sources with `|`, applying `on_missing_key` when one is absent.
pub fn build_key<F: RequestFacts>(policy: &Policy, route: Option<&Route>, facts: &F) -> KeyOutcome {
    // Parts are borrowed where the request already holds them: one allocation, the key.
    let mut key = String::new();
    for (i, source) in policy.key.iter().enumerate() {
        let part: Option<Cow<'_, str>> = match source {
            KeySource::Ip => Some(Cow::Borrowed(facts.client_key())),
            KeySource::ApiKey => api_key(facts).map(Cow::Owned),
            KeySource::Header(name) => facts
                .header(name)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(Cow::Borrowed),
            KeySource::Query(name) => facts
                .query(name)
                .filter(|v| !v.is_empty())
                .map(Cow::Borrowed),
            KeySource::Route => Some(Cow::Borrowed(route.map_or("unmatched", |r| &*r.label))),
            KeySource::Global => Some(Cow::Borrowed("")),
        };
        match part {
            Some(p) => {
                if i > 0 {
                    key.push('|');
                } else if policy.key.len() == 1 {
                    key = p.into_owned();
                    break;
                }
                key.push_str(&p);
            }
            None => {
                return match policy.on_missing_key {
                    OnMissingKey::Ip => KeyOutcome::Key(facts.client_key().to_owned()),
                    OnMissingKey::Skip => KeyOutcome::Skip,
                    OnMissingKey::Deny => KeyOutcome::Deny(source.clone()),
                }
            }
        }
    }
    KeyOutcome::Key(key)
}
