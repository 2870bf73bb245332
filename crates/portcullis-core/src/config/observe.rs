//! `[[webhook]]` and `[[slo]]`.

use super::values::DurationValue;
use crate::route::RoutePattern;
use serde::{de, Deserialize, Deserializer, Serialize};
use std::time::Duration;

/// Signature scheme of a webhook route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookScheme {
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>`.
    Standard,
    /// GitHub: `X-Hub-Signature-256: sha256=<hex>`.
    Github,
    /// Stripe: `Stripe-Signature: t=<ts>,v1=<hex>`.
    Stripe,
    /// `X-Signature: sha256=<hex>` (and `X-Signature-Timestamp` when present).
    HmacSha256,
}

impl WebhookScheme {
    /// Every scheme, in the order SPEC lists them.
    pub const ALL: [WebhookScheme; 4] = [
        WebhookScheme::Standard,
        WebhookScheme::Github,
        WebhookScheme::Stripe,
        WebhookScheme::HmacSha256,
    ];

    /// The name the configuration and the command line use (`hmac_sha256`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookScheme::Standard => "standard",
            WebhookScheme::Github => "github",
            WebhookScheme::Stripe => "stripe",
            WebhookScheme::HmacSha256 => "hmac_sha256",
        }
    }

    /// The scheme called `name` (as [`WebhookScheme::as_str`] writes it, any case).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(name.trim()))
    }
}

/// One `[[webhook]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The path deliveries arrive on (a route pattern).
    pub path: RoutePattern,
    /// The signature scheme.
    pub scheme: WebhookScheme,
    /// Environment variable holding the secret (comma-separated: rotation).
    pub secret_env: String,
    /// Accepted timestamp skew; replayed ids are rejected within it.
    #[serde(default = "five_minutes")]
    pub tolerance: DurationValue,
}

fn five_minutes() -> DurationValue {
    DurationValue(Duration::from_secs(300))
}

/// One `[[slo]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloConfig {
    /// Name (the `slo` label).
    pub name: String,
    /// Route patterns whose requests count, matched like `[[route]]` paths.
    pub routes: Vec<RoutePattern>,
    /// Percent of good requests, strictly between 0 and 100.
    #[serde(deserialize_with = "objective")]
    pub objective: f64,
    /// A request slower than this is not good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<DurationValue>,
    /// The SLO window.
    #[serde(default = "thirty_days")]
    pub window: DurationValue,
}

fn thirty_days() -> DurationValue {
    DurationValue(Duration::from_secs(30 * 86_400))
}

fn objective<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if v > 0.0 && v < 100.0 {
        Ok(v)
    } else {
        Err(de::Error::custom(format!(
            "objective must be a percentage strictly between 0 and 100, got {v}"
        )))
    }
}
