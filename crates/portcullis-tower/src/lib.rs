//! tower layers of portcullis, usable in any tower / hyper / axum service.
//!
//! The portcullis gateway is built from these same layers, in this order (the first
//! sees the request first):
//!
//! ```text
//! ClientIdentityLayer   peer + trusted proxies  -> ClientInfo extension
//! RequestIdLayer        X-Request-ID in, upstream and out
//! ObserveLayer          one RequestRecord per request, when its body ends (logs, metrics)
//! LatencyLayer          X-Latency-MS, Server-Timing
//! SecurityHeadersLayer  HSTS (HTTPS only), CSP, nosniff, ... unless already set
//! LoadShedLayer         503 + Retry-After above max in-flight requests
//! RateLimitLayer        route + policies + store: 429 or the rate-limit headers
//! BodyLimitLayer        413 for a declared Content-Length over the limit; caps the rest
//! (your service)
//! ```
//!
//! Layers answer with `application/problem+json` responses (see [`problem`]) instead of
//! widening the error type, and the library does not depend on a metrics crate:
//! [`observe::ObserveHook`] hands records to whatever the application publishes with.

pub mod body_limit;
pub mod client_identity;
pub mod front;
pub mod head_lines;
pub mod latency;
pub mod load_shed;
pub mod observe;
pub mod problem;
pub mod rate_limit;
pub mod request_id;
pub mod security_headers;

pub use body_limit::BodyLimitLayer;
pub use client_identity::{ClientIdentityLayer, ClientInfo, PeerAddr};
pub use front::FrontLayer;
pub use head_lines::HeadLines;
pub use latency::{LatencyLayer, UpstreamTiming};
pub use load_shed::LoadShedLayer;
pub use observe::{ObserveHook, ObserveLayer, RequestRecord};
pub use rate_limit::{RateLimitLayer, RateLimiter};
pub use request_id::{RequestId, RequestIdLayer};
pub use security_headers::SecurityHeadersLayer;
