//! The sections of `portcullis.toml`. Defaults are SPEC's.

pub use super::observe::{SloConfig, WebhookConfig, WebhookScheme};
pub use super::policy::{
    BypassConfig, KeySource, OnMissingKey, OverrideConfig, PolicyConfig, PolicyMode, RouteConfig,
    StoreConfig, StoreKind, StoreOnError,
};
use super::values::{Cidr, DurationValue, UpstreamUrl};
use crate::headers::AcceptRequestId;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`: the gateway listener and its upstream.
    pub server: ServerConfig,
    /// `[admin]`: health, metrics and admin API listener.
    pub admin: AdminConfig,
    /// `[store]`: where rate-limit buckets live.
    pub store: StoreConfig,
    /// `[headers]`: the response-header contract.
    pub headers: HeadersConfig,
    /// `[bypass]`: clients that are never limited.
    pub bypass: BypassConfig,
    /// `[log]`: access log and redaction.
    pub log: LogConfig,
    /// `[[policy]]`: named rate-limit tiers.
    pub policy: Vec<PolicyConfig>,
    /// `[[route]]`: which policies apply to which requests, first match wins.
    pub route: Vec<RouteConfig>,
    /// `[[webhook]]`: signature verification at the edge.
    pub webhook: Vec<WebhookConfig>,
    /// `[[slo]]`: service level objectives.
    pub slo: Vec<SloConfig>,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the gateway listens on.
    pub listen: SocketAddr,
    /// Where requests are forwarded.
    pub upstream: UpstreamUrl,
    /// Networks whose `X-Forwarded-For` / `Forwarded` / `X-Forwarded-Proto` are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// IPv6 clients are keyed by this prefix length.
    #[serde(deserialize_with = "super::values::prefix_len")]
    pub ipv6_prefix: u8,
    /// Upper bound of the upstream exchange, up to its response headers (then 504).
    pub request_timeout: DurationValue,
    /// Slow-loris guard: the request head must arrive within this time (then 408).
    pub header_read_timeout: DurationValue,
    /// Request bodies beyond this many bytes get 413.
    pub max_body_bytes: u64,
    /// Request heads beyond this many bytes get 431.
    pub max_header_bytes: usize,
    /// Concurrent requests above which the gateway answers 503 (0 = unlimited).
    pub max_inflight: u64,
    /// After SIGTERM/SIGINT, how long in-flight requests may still take.
    pub shutdown_grace: DurationValue,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            upstream: UpstreamUrl {
                authority: "127.0.0.1:8000".into(),
                host: "127.0.0.1".into(),
                port: 8000,
            },
            trusted_proxies: Vec::new(),
            ipv6_prefix: 64,
            request_timeout: DurationValue(Duration::from_secs(30)),
            header_read_timeout: DurationValue(Duration::from_secs(10)),
            max_body_bytes: 10 * 1024 * 1024,
            max_header_bytes: 64 * 1024,
            max_inflight: 0,
            shutdown_grace: DurationValue(Duration::from_secs(30)),
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin listener.
    pub listen: SocketAddr,
    /// Environment variable holding the bearer token for `/admin/*`.
    pub token_env: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            token_env: "PORTCULLIS_ADMIN_TOKEN".into(),
        }
    }
}

/// Which rate-limit header families are sent (`[headers] ratelimit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitHeaders {
    /// `X-RateLimit-*` only.
    Legacy,
    /// `RateLimit-Policy` / `RateLimit` only.
    Ietf,
    /// Both families.
    #[default]
    Both,
    /// Neither.
    None,
}

/// `[headers]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeadersConfig {
    /// `X-Request-ID` on every response, and sent upstream.
    pub request_id: bool,
    /// Which client-sent request ids are kept.
    pub accept_request_id: AcceptRequestId,
    /// `X-Latency-MS` and `Server-Timing`.
    pub latency: bool,
    /// Rate-limit header families.
    pub ratelimit: RateLimitHeaders,
    /// `[headers.security]`.
    pub security: SecurityHeadersConfig,
}

impl Default for HeadersConfig {
    fn default() -> Self {
        HeadersConfig {
            request_id: true,
            accept_request_id: AcceptRequestId::Uuid,
            latency: true,
            ratelimit: RateLimitHeaders::Both,
            security: SecurityHeadersConfig::default(),
        }
    }
}

/// `[headers.security]`: OWASP defaults; `""` omits a header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityHeadersConfig {
    /// `Strict-Transport-Security`, on HTTPS requests only.
    pub strict_transport_security: String,
    /// `Content-Security-Policy`.
    pub content_security_policy: String,
    /// `X-Content-Type-Options`.
    pub x_content_type_options: String,
    /// `X-Frame-Options`.
    pub x_frame_options: String,
    /// `Referrer-Policy`.
    pub referrer_policy: String,
    /// `Cross-Origin-Opener-Policy`.
    pub cross_origin_opener_policy: String,
    /// `Cross-Origin-Resource-Policy`.
    pub cross_origin_resource_policy: String,
    /// `Permissions-Policy` (omitted by default).
    pub permissions_policy: String,
}

impl Default for SecurityHeadersConfig {
    fn default() -> Self {
        SecurityHeadersConfig {
            strict_transport_security: "max-age=31536000; includeSubDomains".into(),
            content_security_policy: "default-src 'none'; frame-ancestors 'none'".into(),
            x_content_type_options: "nosniff".into(),
            x_frame_options: "DENY".into(),
            referrer_policy: "no-referrer".into(),
            cross_origin_opener_policy: "same-origin".into(),
            cross_origin_resource_policy: "same-origin".into(),
            permissions_policy: String::new(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Human-readable lines.
    Pretty,
}

/// How redacted values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Redaction {
    /// `[REDACTED]`.
    Mask,
    /// A keyed hash, stable per value.
    #[default]
    Hash,
}

/// Value detectors of the redactor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedactPattern {
    /// E-mail addresses.
    Email,
    /// `Bearer <token>`.
    Bearer,
    /// JSON Web Tokens.
    Jwt,
    /// Luhn-valid card numbers.
    Card,
    /// AWS access key ids.
    AwsKey,
    /// Well-known API-key prefixes (`sk_live_`, `ghp_`, `xoxb-`, ...).
    ApiKeyPrefixes,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
    /// One line per request on stdout.
    pub access_log: bool,
    /// Header names whose values are redacted.
    pub redact_headers: Vec<String>,
    /// Query parameters whose values are redacted.
    pub redact_query: Vec<String>,
    /// Value detectors.
    pub redact_patterns: Vec<RedactPattern>,
    /// Mask or keyed hash.
    pub redaction: Redaction,
    /// Environment variable holding the hash key.
    pub hash_key_env: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        LogConfig {
            format: LogFormat::Json,
            access_log: true,
            redact_headers: strings(&[
                "authorization",
                "cookie",
                "set-cookie",
                "x-api-key",
                "proxy-authorization",
            ]),
            redact_query: strings(&[
                "token",
                "access_token",
                "api_key",
                "key",
                "password",
                "secret",
                "signature",
            ]),
            redact_patterns: vec![
                RedactPattern::Email,
                RedactPattern::Bearer,
                RedactPattern::Jwt,
                RedactPattern::Card,
                RedactPattern::AwsKey,
                RedactPattern::ApiKeyPrefixes,
            ],
            redaction: Redaction::Hash,
            hash_key_env: "PORTCULLIS_LOG_HASH_KEY".into(),
        }
    }
}
