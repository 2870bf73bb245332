//! RFC 9457 problem details: the one shape of every error the gateway produces.

use serde::Serialize;

/// The problem type the IETF ratelimit draft registers for 429s.
pub const QUOTA_EXCEEDED: &str = "https://iana.org/assignments/http-problem-types#quota-exceeded";

/// Media type of a problem details body.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// A problem details object (RFC 9457) with portcullis's `code` and `request_id` members.
///
/// `code` is a stable machine-readable name for the error; `type` stays `about:blank`
/// except for problems that have a registered type (the 429 quota-exceeded one).
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// A URI reference identifying the problem type.
    #[serde(rename = "type")]
    pub type_uri: &'static str,
    /// Short human-readable summary, the reason phrase of `status`.
    pub title: &'static str,
    /// The HTTP status code.
    pub status: u16,
    /// Human-readable explanation specific to this occurrence.
    pub detail: String,
    /// The request path, when the request line could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Stable machine-readable error name, e.g. `body_too_large`.
    pub code: &'static str,
    /// The request id, the same as in `X-Request-ID` and in the access log.
    pub request_id: String,
    /// Extension members (e.g. `violated-policies`, `retry_after` of a 429).
    #[serde(flatten)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    /// A problem of type `about:blank` whose title is the reason phrase of `status`.
    pub fn new(status: u16, code: &'static str, detail: impl Into<String>) -> Self {
        Problem {
            type_uri: "about:blank",
            title: reason_phrase(status),
            status,
            detail: detail.into(),
            instance: None,
            code,
            request_id: String::new(),
            extensions: serde_json::Map::new(),
        }
    }

    /// The 429 of SPEC "Response headers": the IETF quota-exceeded type, the denying
    /// policy and the wait.
    pub fn quota_exceeded(
        policy: &str,
        limit: u64,
        window: &str,
        violated: &[&str],
        retry_after_secs: u64,
    ) -> Self {
        let mut p = Problem::new(
            429,
            "rate_limited",
            format!("policy '{policy}' allows {limit} requests per {window}"),
        );
        p.type_uri = QUOTA_EXCEEDED;
        p.extensions
            .insert("violated-policies".into(), serde_json::json!(violated));
        p.extensions
            .insert("policy".into(), serde_json::json!(policy));
        p.extensions
            .insert("retry_after".into(), serde_json::json!(retry_after_secs));
        p
    }

    /// Sets the `instance` member (the request path).
    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// Sets the `request_id` member.
    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = request_id.into();
        self
    }

    /// The JSON body.
    pub fn to_json(&self) -> String {
        // Serializing a struct of strings and integers cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// The reason phrase of the status codes the gateway produces itself.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rfc9457_members_and_escapes_strings() {
        let p = Problem::new(413, "body_too_large", "body exceeds 10 bytes")
            .with_instance("/up\"load")
            .with_request_id("abc");
        let v: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!(v["type"], "about:blank");
        assert_eq!(v["title"], "Content Too Large");
        assert_eq!(v["status"], 413);
        assert_eq!(v["instance"], "/up\"load");
        assert_eq!(v["code"], "body_too_large");
        assert_eq!(v["request_id"], "abc");
    }
}
