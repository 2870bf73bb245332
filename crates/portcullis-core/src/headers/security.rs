use crate::config::SecurityHeadersConfig;

/// The security headers to add to responses that lack them, from `[headers.security]`.
///
/// Empty values are omitted. HSTS is kept apart because it may only be sent on responses
/// to requests that reached the service over HTTPS (RFC 6797 §7.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityHeaders {
    /// Headers sent on every response: lower-case name and value.
    pub always: Vec<(&'static str, String)>,
    /// `Strict-Transport-Security` value, for HTTPS requests only.
    pub hsts: Option<String>,
}

impl SecurityHeaders {
    /// Resolves the configuration section, dropping headers set to `""`.
    pub fn from_config(c: &SecurityHeadersConfig) -> Self {
        let candidates: [(&'static str, &String); 7] = [
            ("content-security-policy", &c.content_security_policy),
            ("x-content-type-options", &c.x_content_type_options),
            ("x-frame-options", &c.x_frame_options),
            ("referrer-policy", &c.referrer_policy),
            ("cross-origin-opener-policy", &c.cross_origin_opener_policy),
            (
                "cross-origin-resource-policy",
                &c.cross_origin_resource_policy,
            ),
            ("permissions-policy", &c.permissions_policy),
        ];
        SecurityHeaders {
            always: candidates
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k, v.clone()))
                .collect(),
            hsts: Some(c.strict_transport_security.clone()).filter(|v| !v.is_empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_spec_and_empty_values_are_omitted() {
        let h = SecurityHeaders::from_config(&SecurityHeadersConfig::default());
        let names: Vec<_> = h.always.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "content-security-policy",
                "x-content-type-options",
                "x-frame-options",
                "referrer-policy",
                "cross-origin-opener-policy",
                "cross-origin-resource-policy"
            ]
        );
        assert_eq!(
            h.hsts.as_deref(),
            Some("max-age=31536000; includeSubDomains")
        );
        let off = SecurityHeadersConfig {
            strict_transport_security: String::new(),
            ..Default::default()
        };
        assert_eq!(SecurityHeaders::from_config(&off).hsts, None);
    }
}
