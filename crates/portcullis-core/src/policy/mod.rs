//! Policies and routes, resolved from the configuration: which policies apply to a
//! request, and under which key.

mod key;

pub use key::{api_key_hash, build_key, KeyOutcome, RequestFacts};

use crate::config::{Config, KeySource, OnMissingKey, PolicyMode};
use crate::limit::{Algorithm, Quota};
use crate::route::{normalize, RoutePattern};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

/// A resolved `[[policy]]`.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Its name.
    pub name: Arc<str>,
    /// Its quota (for keys without an override).
    pub quota: Quota,
    /// Its algorithm.
    pub algorithm: Algorithm,
    /// Key sources, in order.
    pub key: Vec<KeySource>,
    /// What a missing key source means.
    pub on_missing_key: OnMissingKey,
    /// Enforce or shadow.
    pub mode: PolicyMode,
    /// Per-key quotas.
    pub overrides: HashMap<String, Quota>,
}

impl Policy {
    /// The quota of `key` (its override, else the policy's).
    pub fn quota_for(&self, key: &str) -> Quota {
        if self.overrides.is_empty() {
            // No hashing of the key when there is nothing to find.
            return self.quota;
        }
        self.overrides.get(key).copied().unwrap_or(self.quota)
    }

    /// What a store is told instead of the key: 16 bytes of SHA-256 over the policy
    /// name, a NUL, and the key.
    pub fn store_key(&self, key: &str) -> [u8; 16] {
        let mut h = Sha256::new();
        h.update(self.name.as_bytes());
        h.update([0u8]);
        h.update(key.as_bytes());
        let digest = h.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        out
    }

    /// Whether the policy may reject requests (shadow policies only count).
    pub fn enforces(&self) -> bool {
        self.mode == PolicyMode::Enforce
    }
}

/// A resolved `[[route]]`.
#[derive(Debug, Clone)]
pub struct Route {
    /// The pattern.
    pub pattern: RoutePattern,
    /// The pattern as written: the `route` label, log field and `route` key source.
    pub label: Arc<str>,
    /// Methods (upper case); empty matches any.
    pub methods: Vec<String>,
    /// Indexes into [`PolicySet::policies`].
    pub policies: Vec<usize>,
    /// Units taken from each bucket.
    pub cost: u64,
}

/// Which route a request matched and which policies apply to it.
#[derive(Debug, Clone, Copy)]
pub struct Resolution<'a> {
    /// The matched route (`None`: unmatched, the `default` policy applies if any).
    pub route: Option<&'a Route>,
    /// Its index in [`PolicySet::routes`].
    pub route_index: Option<usize>,
    /// Indexes of the policies to check.
    pub policies: &'a [usize],
    /// Units to take.
    pub cost: u64,
}

/// All policies and routes.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    /// Policies in file order.
    pub policies: Vec<Policy>,
    /// Routes in file order (first match wins).
    pub routes: Vec<Route>,
    default: Vec<usize>,
}

impl PolicySet {
    /// Resolves a validated configuration.
    pub fn from_config(config: &Config) -> Self {
        let policies: Vec<Policy> = config
            .policy
            .iter()
            .filter_map(|p| {
                let quota = Quota::new(p.limit, p.burst, p.window.0).ok()?;
                let overrides = p
                    .overrides
                    .iter()
                    .filter_map(|o| {
                        let q = Quota::new(o.limit, o.burst.unwrap_or(p.burst), p.window.0).ok()?;
                        Some((o.key.clone(), q))
                    })
                    .collect();
                Some(Policy {
                    name: Arc::from(p.name.get_ref().as_str()),
                    quota,
                    algorithm: p.algorithm,
                    key: p.key.clone(),
                    on_missing_key: p.on_missing_key,
                    mode: p.mode,
                    overrides,
                })
            })
            .collect();
        let index = |name: &str| policies.iter().position(|p| &*p.name == name);
        let routes = config
            .route
            .iter()
            .map(|r| Route {
                label: Arc::from(r.path.get_ref().as_str()),
                pattern: r.path.get_ref().clone(),
                methods: r.methods.clone(),
                policies: r
                    .policies
                    .iter()
                    .filter_map(|n| index(n.get_ref()))
                    .collect(),
                cost: r.cost,
            })
            .collect();
        let default = index("default").into_iter().collect();
        PolicySet {
            policies,
            routes,
            default,
        }
    }

    /// The policy called `name`.
    pub fn policy(&self, name: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| &*p.name == name)
    }

    /// The first route matching `method` and `path` (no query), else the `default`
    /// policy alone.
    pub fn resolve(&self, method: &str, path: &str) -> Resolution<'_> {
        if !self.routes.is_empty() {
            let segments = normalize(path);
            for (i, route) in self.routes.iter().enumerate() {
                let method_ok =
                    route.methods.is_empty() || route.methods.iter().any(|m| m == method);
                if method_ok && route.pattern.matches_segments(&segments) {
                    return Resolution {
                        route: Some(route),
                        route_index: Some(i),
                        policies: &route.policies,
                        cost: route.cost,
                    };
                }
            }
        }
        Resolution {
            route: None,
            route_index: None,
            policies: &self.default,
            cost: 1,
        }
    }

    /// Whether any policy exists (without policies the limiter has nothing to do).
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }
}

#[cfg(test)]
mod tests;
