//! RFC 9457 problem details: the one shape of every error the gateway produces.

use crate::config::DurationValue;
use crate::json;
use serde::ser::{Serialize, SerializeMap, Serializer};
use std::time::Duration;

/// The problem type the IETF ratelimit draft registers for 429s.
pub const QUOTA_EXCEEDED: &str = "https://iana.org/assignments/http-problem-types#quota-exceeded";

/// Media type of a problem details body.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// A problem details object (RFC 9457) with portcullis's `code` and `request_id` members.
///
/// `code` is a stable machine-readable name for the error; `type` stays `about:blank`
/// except for problems that have a registered type (the 429 quota-exceeded one).
#[derive(Debug, Clone)]
pub struct Problem {
    /// A URI reference identifying the problem type (the `type` member).
    pub type_uri: &'static str,
    /// Short human-readable summary, the reason phrase of `status`.
    pub title: &'static str,
    /// The HTTP status code.
    pub status: u16,
    /// Human-readable explanation specific to this occurrence.
    pub detail: String,
    /// The request path, when the request line could be read (omitted when `None`).
    pub instance: Option<String>,
    /// Stable machine-readable error name, e.g. `body_too_large`.
    pub code: &'static str,
    /// The request id, the same as in `X-Request-ID` and in the access log.
    pub request_id: String,
    /// Extension members, in order (e.g. `violated-policies`, `retry_after` of a 429).
    pub extensions: Vec<(&'static str, serde_json::Value)>,
}

/// The members in the order [`Problem::to_json`] writes them.
impl Serialize for Problem {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("type", self.type_uri)?;
        map.serialize_entry("title", self.title)?;
        map.serialize_entry("status", &self.status)?;
        map.serialize_entry("detail", &self.detail)?;
        if let Some(instance) = &self.instance {
            map.serialize_entry("instance", instance)?;
        }
        map.serialize_entry("code", self.code)?;
        map.serialize_entry("request_id", &self.request_id)?;
        for (name, value) in &self.extensions {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
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
            extensions: Vec::new(),
        }
    }

    /// The 429 of SPEC "Response headers": the IETF quota-exceeded type, the denying
    /// policy and the wait.
    pub fn quota_exceeded(
        policy: &str,
        limit: u64,
        window: Duration,
        violated: &[&str],
        retry_after_secs: u64,
    ) -> Self {
        let mut detail = String::with_capacity(52 + policy.len());
        detail.push_str("policy '");
        detail.push_str(policy);
        detail.push_str("' allows ");
        crate::json::push_u64(&mut detail, limit);
        detail.push_str(" requests per ");
        DurationValue(window).push_to(&mut detail);
        let mut p = Problem::new(429, "rate_limited", detail);
        p.type_uri = QUOTA_EXCEEDED;
        let violated = violated
            .iter()
            .map(|v| serde_json::Value::String((*v).to_owned()))
            .collect();
        p.extensions = vec![
            ("violated-policies", serde_json::Value::Array(violated)),
            ("policy", serde_json::Value::String(policy.to_owned())),
            ("retry_after", serde_json::Value::from(retry_after_secs)),
        ];
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
        // Written by hand, members in the order of the struct: this is the body of every
        // 429, and serde's `flatten` costs more than the rest of a rejection put together.
        let mut out = String::with_capacity(
            160 + self.type_uri.len() + self.detail.len() + self.request_id.len(),
        );
        out.push_str("{\"type\":");
        json::push_str(&mut out, self.type_uri);
        out.push_str(",\"title\":");
        json::push_str(&mut out, self.title);
        out.push_str(",\"status\":");
        json::push_u64(&mut out, u64::from(self.status));
        out.push_str(",\"detail\":");
        json::push_str(&mut out, &self.detail);
        if let Some(instance) = &self.instance {
            out.push_str(",\"instance\":");
            json::push_str(&mut out, instance);
        }
        out.push_str(",\"code\":");
        json::push_str(&mut out, self.code);
        out.push_str(",\"request_id\":");
        json::push_str(&mut out, &self.request_id);
        for (name, value) in &self.extensions {
            out.push(',');
            json::push_str(&mut out, name);
            out.push(':');
            json::push_value(&mut out, value);
        }
        out.push('}');
        out
    }
}

/// The body of the 429 that [`Problem::quota_exceeded`], `with_instance(instance)` and
/// `with_request_id(request_id)` describe, written without building the problem: its
/// strings, JSON values and vectors cost a rejection more than the writing does.
pub fn quota_exceeded_json<S: AsRef<str>>(
    policy: &str,
    limit: u64,
    window: Duration,
    violated: &[S],
    retry_after_secs: u64,
    instance: &str,
    request_id: &str,
) -> String {
    let mut out = String::with_capacity(
        280 + 2 * policy.len() + instance.len() + request_id.len() + 16 * violated.len(),
    );
    out.push_str("{\"type\":\"");
    out.push_str(QUOTA_EXCEEDED);
    out.push_str("\",\"title\":\"Too Many Requests\",\"status\":429,\"detail\":\"policy '");
    json::push_escaped(&mut out, policy);
    out.push_str("' allows ");
    json::push_u64(&mut out, limit);
    out.push_str(" requests per ");
    // Digits and a unit: nothing to escape.
    DurationValue(window).push_to(&mut out);
    out.push_str("\",\"instance\":");
    json::push_str(&mut out, instance);
    out.push_str(",\"code\":\"rate_limited\",\"request_id\":");
    json::push_str(&mut out, request_id);
    out.push_str(",\"violated-policies\":[");
    for (i, name) in violated.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json::push_str(&mut out, name.as_ref());
    }
    out.push_str("],\"policy\":");
    json::push_str(&mut out, policy);
    out.push_str(",\"retry_after\":");
    json::push_u64(&mut out, retry_after_secs);
    out.push('}');
    out
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
    fn the_429_body_written_directly_is_the_problem_s() {
        for (policy, window, violated, instance, id) in [
            (
                "default",
                Duration::from_secs(60),
                vec!["default"],
                "/",
                "9c1239b0-fc9a-4cac-a7ae-d1275054581e",
            ),
            (
                "per \"user\"\n",
                Duration::from_secs(10),
                vec!["a", "b\\c"],
                "/caf\u{e9}/\u{1}",
                "",
            ),
            ("x", Duration::from_secs(3600), vec![], "", "id"),
            ("y", Duration::from_millis(1500), vec!["y"], "/", "id"),
        ] {
            let expected = Problem::quota_exceeded(policy, 7, window, &violated, 42)
                .with_instance(instance)
                .with_request_id(id)
                .to_json();
            let direct = quota_exceeded_json(policy, 7, window, &violated, 42, instance, id);
            assert_eq!(direct, expected);
            let parsed: serde_json::Value = serde_json::from_str(&direct).unwrap();
            assert_eq!(parsed["status"], 429);
        }
    }

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

    #[test]
    fn hand_written_json_equals_serde() {
        let mut p =
            Problem::quota_exceeded("a\"b\\c", 10, Duration::from_secs(60), &["a\"b\\c", "x"], 7)
                .with_instance("/p\u{1}\u{8}\u{c}\u{1f}\n\r\t\u{7f}é😀")
                .with_request_id("id");
        p.detail.push_str(" \u{0}</script>");
        p.extensions.push((
            "nested",
            serde_json::json!({"a": [1, -2.5, true, false, null, "x\"y"], "b": {}}),
        ));
        let ours: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        let serde: serde_json::Value = serde_json::to_value(&p).unwrap();
        assert_eq!(ours, serde);
        assert_eq!(p.to_json(), serde_json::to_string(&p).unwrap());
        let plain = Problem::new(502, "upstream_unreachable", "x");
        assert_eq!(plain.to_json(), serde_json::to_string(&plain).unwrap());
    }
}
