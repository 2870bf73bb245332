//! The pure core of portcullis.
//!
//! Everything here is a function of its arguments: no sockets, no async runtime and no
//! clock (callers pass `now` or a measured [`std::time::Duration`] in). That keeps the
//! parts users rely on — configuration, client identity, header rendering — testable
//! without a server, and lets the same code run inside the gateway binary and inside
//! the embeddable tower layers.
//!
//! - [`config`]: the configuration model, TOML parsing with `file:line:column`
//!   diagnostics, and `PORTCULLIS_SECTION__KEY` environment overrides.
//! - [`identity`]: the trusted-proxy rule for the client IP and for HTTPS.
//! - [`limit`]: the rate-limit algorithms (GCRA, sliding window, fixed window).
//! - [`headers`]: request-id acceptance, latency, `Server-Timing` and security headers.
//! - [`problem`]: RFC 9457 `application/problem+json` bodies.
//! - [`redact`]: what logs may show: configured headers and query parameters, and values
//!   that look like secrets or PII (e-mail, tokens, JWTs, Luhn-valid cards, AWS and API keys).

pub mod config;
pub mod headers;
pub mod identity;
pub mod json;
pub mod limit;
pub mod policy;
pub mod problem;
pub mod redact;
pub mod route;
pub mod slo;
pub mod webhook;
