//! Redaction of what the gateway logs.
//!
//! This first step covers the structural part of SPEC "Access log": configured query
//! parameters are redacted in logged paths, and values that identify a person (the
//! client address) are pseudonymised. In `hash` mode the replacement is a keyed
//! HMAC-SHA256, stable per value for one key, so lines can be correlated without the
//! value being recoverable; in `mask` mode it is `[REDACTED]`.

use crate::config::Redaction;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt::Write as _;

/// The replacement text in `mask` mode.
pub const MASK: &str = "[REDACTED]";

/// Redacts strings for logs.
#[derive(Clone)]
pub struct Redactor {
    mode: Redaction,
    mac: Hmac<Sha256>,
    query_names: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("mode", &self.mode)
            .field("query_names", &self.query_names)
            .finish_non_exhaustive()
    }
}

impl Redactor {
    /// `key` keys the hash (ignored in mask mode); `query_names` are compared without
    /// regard to case.
    pub fn new(mode: Redaction, key: &[u8], query_names: &[String]) -> Self {
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| {
            <Hmac<Sha256> as Mac>::new_from_slice(b"portcullis").expect("static key")
        });
        Redactor {
            mode,
            mac,
            query_names: query_names.iter().map(|n| n.to_ascii_lowercase()).collect(),
        }
    }

    /// The replacement of a sensitive value: `[REDACTED]`, or `h:` and the first 16 hex
    /// digits of its keyed hash.
    pub fn replace(&self, value: &str) -> String {
        match self.mode {
            Redaction::Mask => MASK.to_owned(),
            Redaction::Hash => {
                let mut mac = self.mac.clone();
                mac.update(value.as_bytes());
                let digest = mac.finalize().into_bytes();
                let mut out = String::with_capacity(18);
                out.push_str("h:");
                for b in &digest[..8] {
                    let _ = write!(out, "{b:02x}");
                }
                out
            }
        }
    }

    /// A path with the values of configured query parameters replaced.
    pub fn path(&self, path_and_query: &str) -> String {
        let Some((path, query)) = path_and_query.split_once('?') else {
            return path_and_query.to_owned();
        };
        let mut out = String::with_capacity(path_and_query.len());
        out.push_str(path);
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((name, value)) if self.is_secret_param(name) => {
                    out.push_str(name);
                    out.push('=');
                    out.push_str(&self.replace(value));
                }
                _ => out.push_str(pair),
            }
        }
        out
    }

    fn is_secret_param(&self, name: &str) -> bool {
        self.query_names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["token".into(), "api_key".into()]
    }

    #[test]
    fn query_values_are_replaced_by_name() {
        let r = Redactor::new(Redaction::Mask, b"k", &names());
        assert_eq!(
            r.path("/a?token=s3cret&x=1&API_KEY=zz"),
            "/a?token=[REDACTED]&x=1&API_KEY=[REDACTED]"
        );
        assert_eq!(r.path("/a"), "/a");
        assert_eq!(r.path("/a?token"), "/a?token");
    }

    #[test]
    fn hashes_are_keyed_and_stable() {
        let a = Redactor::new(Redaction::Hash, b"key-a", &names());
        let b = Redactor::new(Redaction::Hash, b"key-b", &names());
        assert_eq!(a.replace("127.0.0.1"), a.replace("127.0.0.1"));
        assert_ne!(a.replace("127.0.0.1"), b.replace("127.0.0.1"));
        assert_ne!(a.replace("127.0.0.1"), a.replace("127.0.0.2"));
        assert!(a.replace("x").starts_with("h:") && a.replace("x").len() == 18);
        assert!(!a.path("/p?token=s3cret").contains("s3cret"));
    }
}
