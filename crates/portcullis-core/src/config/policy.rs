//! `[[policy]]`, `[[route]]`, `[bypass]` and `[store]`.

use super::values::{Cidr, DurationValue};
use crate::limit::Algorithm;
use crate::route::RoutePattern;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;
use toml::Spanned;

/// One named rate-limit tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Unique name; `default` applies to requests no route matched.
    pub name: Spanned<String>,
    /// Units per window (at least 1).
    #[serde(deserialize_with = "positive")]
    pub limit: u64,
    /// The window.
    #[serde(deserialize_with = "nonzero_duration")]
    pub window: DurationValue,
    /// Extra units allowed at once, beyond `limit`.
    #[serde(default)]
    pub burst: u64,
    /// The algorithm.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// Key sources, joined with `|` in this order.
    #[serde(default = "default_key")]
    pub key: Vec<KeySource>,
    /// What to do when a key source is absent from the request.
    #[serde(default)]
    pub on_missing_key: OnMissingKey,
    /// Enforce, or only count (shadow).
    #[serde(default)]
    pub mode: PolicyMode,
    /// Per-key limits.
    #[serde(default)]
    pub overrides: Vec<OverrideConfig>,
}

fn default_key() -> Vec<KeySource> {
    vec![KeySource::Ip]
}

/// A per-key limit (`overrides = [{ key = "ws-42", limit = 1000 }]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideConfig {
    /// The key in SPEC's key form (`ws-42|203.0.113.7`).
    pub key: String,
    /// Units per window for that key.
    #[serde(deserialize_with = "positive")]
    pub limit: u64,
    /// Burst for that key (the policy's when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
}

/// Where a part of a policy's key comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeySource {
    /// The client IP (IPv6: its prefix).
    Ip,
    /// `X-API-Key`, else the `Authorization: Bearer` token, hashed.
    ApiKey,
    /// A request header, by lower-case name.
    Header(String),
    /// A query parameter.
    Query(String),
    /// The matched route's pattern.
    Route,
    /// One bucket for everyone.
    Global,
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Ip => f.write_str("ip"),
            KeySource::ApiKey => f.write_str("api_key"),
            KeySource::Header(h) => write!(f, "header:{h}"),
            KeySource::Query(q) => write!(f, "query:{q}"),
            KeySource::Route => f.write_str("route"),
            KeySource::Global => f.write_str("global"),
        }
    }
}

impl KeySource {
    /// Parses `ip`, `api_key`, `header:NAME`, `query:NAME`, `route` or `global`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let is_token = |n: &str| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        };
        match s {
            "ip" => Ok(KeySource::Ip),
            "api_key" => Ok(KeySource::ApiKey),
            "route" => Ok(KeySource::Route),
            "global" => Ok(KeySource::Global),
            _ => {
                if let Some(h) = s.strip_prefix("header:") {
                    if is_token(h) {
                        return Ok(KeySource::Header(h.to_ascii_lowercase()));
                    }
                    return Err(format!("invalid header name in key source {s:?}"));
                }
                if let Some(q) = s.strip_prefix("query:") {
                    if !q.is_empty() && !q.contains(['&', '=', '#', ' ']) {
                        return Ok(KeySource::Query(q.to_owned()));
                    }
                    return Err(format!("invalid query parameter in key source {s:?}"));
                }
                Err(format!(
                    "unknown key source {s:?}: expected ip, api_key, header:NAME, query:NAME, route or global"
                ))
            }
        }
    }
}

impl<'de> Deserialize<'de> for KeySource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        KeySource::parse(&s).map_err(de::Error::custom)
    }
}

impl Serialize for KeySource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `on_missing_key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnMissingKey {
    /// Key the request by the client IP instead.
    #[default]
    Ip,
    /// Refuse the request (400).
    Deny,
    /// Do not apply this policy to the request.
    Skip,
}

/// `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    /// Reject requests over the limit.
    #[default]
    Enforce,
    /// Decide and count, never reject, never show in headers.
    Shadow,
}

/// One `[[route]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Exact path, prefix with `/*`, or `{param}` segments.
    pub path: Spanned<RoutePattern>,
    /// Methods (upper case); empty matches any.
    #[serde(default, deserialize_with = "methods")]
    pub methods: Vec<String>,
    /// Policies that must all allow.
    pub policies: Vec<Spanned<String>>,
    /// Units taken from each bucket.
    #[serde(default = "one", deserialize_with = "positive")]
    pub cost: u64,
    /// Concurrent requests on this route (0 = unlimited).
    #[serde(default)]
    pub max_inflight: u64,
}

fn one() -> u64 {
    1
}

/// `[bypass]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BypassConfig {
    /// Networks never limited.
    pub cidrs: Vec<Cidr>,
    /// Environment variable holding the `X-Bypass-Token` value.
    pub token_env: String,
}

impl Default for BypassConfig {
    fn default() -> Self {
        BypassConfig {
            cidrs: Vec::new(),
            token_env: "PORTCULLIS_BYPASS_TOKEN".into(),
        }
    }
}

/// `[store] kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Embedded, per process.
    #[default]
    Memory,
    /// Shared through Redis.
    Redis,
}

/// `[store] on_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreOnError {
    /// Fall back to an in-process limiter.
    #[default]
    Local,
    /// Let requests through.
    Allow,
    /// Refuse requests (503).
    Deny,
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Memory or Redis.
    pub kind: Spanned<StoreKind>,
    /// Environment variable holding the Redis URL.
    pub url_env: String,
    /// Per store call.
    pub timeout: DurationValue,
    /// What decides while the store is unreachable.
    pub on_error: StoreOnError,
    /// With `local`: each limit is divided by this.
    #[serde(deserialize_with = "positive")]
    pub local_share: u64,
    /// Memory store bound.
    #[serde(deserialize_with = "positive")]
    pub max_keys: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: Spanned::new(0..0, StoreKind::Memory),
            url_env: "REDIS_URL".into(),
            timeout: DurationValue(Duration::from_millis(50)),
            on_error: StoreOnError::Local,
            local_share: 1,
            max_keys: 1_000_000,
        }
    }
}

fn positive<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = i64::deserialize(d)?;
    u64::try_from(n)
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| de::Error::custom(format!("must be at least 1, got {n}")))
}

fn nonzero_duration<'de, D: Deserializer<'de>>(d: D) -> Result<DurationValue, D::Error> {
    let v = DurationValue::deserialize(d)?;
    if v.0 < Duration::from_millis(1) {
        return Err(de::Error::custom("must be at least 1ms"));
    }
    Ok(v)
}

fn methods<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    list.into_iter()
        .map(|m| {
            let upper = m.to_ascii_uppercase();
            if !upper.is_empty() && upper.bytes().all(|b| b.is_ascii_uppercase()) {
                Ok(upper)
            } else {
                Err(de::Error::custom(format!("invalid method {m:?}")))
            }
        })
        .collect()
}
