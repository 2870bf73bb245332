//! Rate limiting: resolve the route, key each policy, ask the store, answer 429 or add
//! the rate-limit headers.
//!
//! [`RateLimiter`] holds the policies, the store and the bypass rules and turns a
//! request into a [`Verdict`]; [`RateLimitLayer`] applies verdicts on the request path.
//! Run [`crate::ClientIdentityLayer`] and [`crate::RequestIdLayer`] before it: keys use
//! the client IP after the trusted-proxy rule, and 429 bodies carry the request id.
//!
//! Counting is handed to a [`DecisionHook`], so the library stays free of a metrics
//! crate.

mod facts;
mod layer;

pub use facts::HttpFacts;
pub use layer::{RateLimit, RateLimitFuture, RateLimitLayer, RateLimitSummary};

use portcullis_core::config::{KeySource, RateLimitHeaders, StoreOnError};
use portcullis_core::headers::ratelimit::{render, tightest, PolicyReport, RenderedHeaders};
use portcullis_core::limit::{retry_after_secs, Decision};
use portcullis_core::policy::{build_key, KeyOutcome, PolicySet};
use portcullis_store::{Check, Decided, Store, StoreError, StoreKey};
use sha2::{Digest, Sha256};
use smallvec::SmallVec;
use std::sync::Arc;

/// What one policy decided for one request, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Within the limit.
    Allowed,
    /// Over the limit, rejected.
    Limited,
    /// Over the limit of a shadow policy: counted, not rejected.
    ShadowLimited,
    /// Not limited at all (bypass CIDR or token).
    Bypassed,
}

impl Outcome {
    /// The `outcome` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Limited => "limited",
            Outcome::ShadowLimited => "shadow_limited",
            Outcome::Bypassed => "bypassed",
        }
    }
}

/// Receives every policy decision (metrics, `/health` counts).
pub trait DecisionHook: Send + Sync + 'static {
    /// `policy` decided `outcome` for one request.
    fn on_decision(&self, policy: &str, outcome: Outcome);
    /// A store call failed.
    fn on_store_error(&self, _error: &StoreError) {}
}

/// Clients that are never limited.
#[derive(Debug, Clone, Default)]
pub struct Bypass {
    /// Networks.
    pub cidrs: Vec<ipnet::IpNet>,
    /// SHA-256 of the `X-Bypass-Token` value, if one is configured.
    token_digest: Option<[u8; 32]>,
}

impl Bypass {
    /// Bypass for `cidrs`, and for requests carrying `token` in `X-Bypass-Token`.
    pub fn new(cidrs: Vec<ipnet::IpNet>, token: Option<&str>) -> Self {
        Bypass {
            cidrs,
            token_digest: token
                .filter(|t| !t.is_empty())
                .map(|t| Sha256::digest(t.as_bytes()).into()),
        }
    }

    fn token_matches(&self, presented: Option<&[u8]>) -> bool {
        match (&self.token_digest, presented) {
            (Some(expected), Some(p)) => constant_time_eq(expected, &Sha256::digest(p).into()),
            _ => false,
        }
    }
}

/// The header that carries `[ratelimit] bypass_token`.
static X_BYPASS_TOKEN: http::HeaderName = http::HeaderName::from_static("x-bypass-token");

/// Compares two digests without an early exit (hashing first hides the lengths).
pub fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Per-request lists of policies: a route has one or two, held inline (no allocation).
type Inline<T> = SmallVec<[T; 2]>;

/// Policy names (the policies a 429 violated).
pub type PolicyNames = Inline<Arc<str>>;

/// What the limiter decided for a request.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// No policy applies.
    Unlimited,
    /// Bypassed: no limits, no headers.
    Bypassed,
    /// Admitted; these headers go on the response.
    Allowed {
        /// Rate-limit headers of the enforcing policies.
        headers: RenderedHeaders,
        /// The tightest enforcing policy.
        policy: Option<Arc<str>>,
    },
    /// Rejected with 429.
    Limited {
        /// Rate-limit headers.
        headers: RenderedHeaders,
        /// The denying policy (longest wait).
        policy: Arc<str>,
        /// Its limit, for the problem detail.
        limit: u64,
        /// Its window, for the problem detail.
        window: std::time::Duration,
        /// Every denying policy.
        violated: PolicyNames,
        /// `Retry-After` seconds.
        retry_after: u64,
    },
    /// A key source was absent and the policy says `deny`.
    MissingKey {
        /// The policy.
        policy: Arc<str>,
        /// The absent source.
        source: KeySource,
    },
    /// The store failed and `on_error = "deny"`.
    StoreDown,
}

/// The rate limiter of one configuration.
pub struct RateLimiter<St, H> {
    /// Policies and routes.
    pub policies: PolicySet,
    /// Where buckets live.
    pub store: St,
    /// Who is never limited.
    pub bypass: Bypass,
    /// Which header families to send.
    pub headers: RateLimitHeaders,
    /// IPv6 clients are keyed by this prefix.
    pub ipv6_prefix: u8,
    /// What to do when the store fails.
    pub on_error: StoreOnError,
    /// Counts decisions.
    pub hook: H,
}

/// A request's rate-limit work, prepared without the store.
#[derive(Debug)]
pub struct Plan {
    route: Option<usize>,
    work: Work,
}

impl Plan {
    /// The matched route, by its index in [`PolicySet::routes`]: an index rather than
    /// the pattern's `Arc<str>`, whose count every serving thread would update for
    /// every request (each thread's layer keeps copies of its own, see
    /// [`RouteLabels`]).
    ///
    /// [`PolicySet::routes`]: portcullis_core::policy::PolicySet::routes
    pub fn route(&self) -> Option<usize> {
        self.route
    }
}

/// The route patterns of a [`RateLimiter`], copied: one set per serving thread, so the
/// per-request clones of a matched route's label touch counts only that thread writes.
#[derive(Debug, Clone)]
pub struct RouteLabels(Arc<[Arc<str>]>);

impl RouteLabels {
    /// Fresh copies of the route patterns of `policies`, with counts of their own.
    fn copied(policies: &PolicySet) -> Self {
        RouteLabels(
            policies
                .routes
                .iter()
                .map(|r| Arc::from(&*r.label))
                .collect(),
        )
    }

    /// The label of route `index`.
    pub fn get(&self, index: Option<usize>) -> Option<Arc<str>> {
        index.and_then(|i| self.0.get(i)).cloned()
    }
}

#[derive(Debug)]
enum Work {
    Done(Verdict),
    Decide {
        enforce: Inline<KeyedPolicy>,
        shadow: Vec<KeyedPolicy>,
        cost: u64,
    },
}

/// One policy's key for a request.
#[derive(Debug, Clone)]
pub struct KeyedPolicy {
    /// Index into the policy set.
    pub index: usize,
    /// SPEC's key form.
    pub key: String,
    /// The store's key.
    pub store_key: StoreKey,
}

impl<St: Store, H: DecisionHook> RateLimiter<St, H> {
    /// Decides a request (taking units when it is admitted). Returns the verdict and
    /// the matched route's pattern.
    pub async fn check<B>(&self, req: &http::Request<B>) -> (Verdict, Option<Arc<str>>) {
        let plan = self.plan(req);
        let (verdict, route) = self.execute(plan).await;
        let label = route
            .and_then(|i| self.policies.routes.get(i))
            .map(|r| r.label.clone());
        (verdict, label)
    }

    /// Copies of the route patterns for one serving thread's layer ([`RouteLabels`]).
    pub fn route_labels(&self) -> RouteLabels {
        RouteLabels::copied(&self.policies)
    }

    /// Everything about a request that needs no store: route, bypass, keys. Split from
    /// [`Self::execute`] so the request is not held across the store call.
    pub fn plan<B>(&self, req: &http::Request<B>) -> Plan {
        let facts = HttpFacts::new(req, self.ipv6_prefix);
        let resolution = self
            .policies
            .resolve(req.method().as_str(), req.uri().path());
        let route = resolution.route_index;
        let done = |verdict| Plan {
            route,
            work: Work::Done(verdict),
        };
        if resolution.policies.is_empty() {
            return done(Verdict::Unlimited);
        }
        if self.is_bypassed(req, &facts) {
            for &i in resolution.policies {
                self.hook
                    .on_decision(&self.policies.policies[i].name, Outcome::Bypassed);
            }
            return done(Verdict::Bypassed);
        }
        let mut enforce = Inline::new();
        let mut shadow = Vec::new();
        for &i in resolution.policies {
            let policy = &self.policies.policies[i];
            match build_key(policy, resolution.route, &facts) {
                KeyOutcome::Key(key) => {
                    let keyed = KeyedPolicy {
                        index: i,
                        store_key: StoreKey(policy.store_key(&key)),
                        key,
                    };
                    if policy.enforces() {
                        enforce.push(keyed);
                    } else {
                        shadow.push(keyed);
                    }
                }
                KeyOutcome::Skip => {}
                KeyOutcome::Deny(source) => {
                    return done(Verdict::MissingKey {
                        policy: policy.name.clone(),
                        source,
                    })
                }
            }
        }
        Plan {
            route,
            work: Work::Decide {
                enforce,
                shadow,
                cost: resolution.cost,
            },
        }
    }

    /// Asks the store.
    pub async fn execute(&self, plan: Plan) -> (Verdict, Option<usize>) {
        let Plan { route, work } = plan;
        let (enforce, shadow, cost) = match work {
            Work::Done(verdict) => return (verdict, route),
            Work::Decide {
                enforce,
                shadow,
                cost,
            } => (enforce, shadow, cost),
        };
        for keyed in &shadow {
            self.decide_shadow(keyed, cost).await;
        }
        if enforce.is_empty() {
            return (Verdict::Unlimited, route);
        }
        let checks: Inline<Check> = enforce.iter().map(|k| self.check_of(k, cost)).collect();
        let decided = self.store.decide(&checks).await;
        (self.conclude(&enforce, &checks, decided), route)
    }

    /// [`Self::execute`] without waiting, when the store decides in memory
    /// ([`Store::decide_now`]) and no shadow policy needs a decision of its own;
    /// otherwise the plan comes back untouched.
    // The plan comes back (moved, not copied twice) only when the store needs I/O.
    #[allow(clippy::result_large_err)]
    pub fn execute_now(&self, plan: Plan) -> Result<(Verdict, Option<usize>), Plan> {
        let Plan { route, work } = plan;
        match work {
            Work::Done(verdict) => Ok((verdict, route)),
            Work::Decide {
                enforce, shadow, ..
            } if shadow.is_empty() && enforce.is_empty() => Ok((Verdict::Unlimited, route)),
            Work::Decide {
                enforce,
                shadow,
                cost,
            } if shadow.is_empty() && self.store.decides_now() => {
                let checks: Inline<Check> =
                    enforce.iter().map(|k| self.check_of(k, cost)).collect();
                match self.store.decide_now(&checks) {
                    Some(decided) => Ok((self.conclude(&enforce, &checks, decided), route)),
                    None => Err(Plan {
                        route,
                        work: Work::Decide {
                            enforce,
                            shadow,
                            cost,
                        },
                    }),
                }
            }
            work => Err(Plan { route, work }),
        }
    }

    /// The verdict of the store's answer, or of its failure (per `on_error`).
    fn conclude(
        &self,
        enforce: &[KeyedPolicy],
        checks: &[Check],
        decided: Result<Decided, StoreError>,
    ) -> Verdict {
        match decided {
            Ok(d) => self.verdict(enforce, checks, &d),
            Err(e) => {
                self.hook.on_store_error(&e);
                match self.on_error {
                    StoreOnError::Deny => Verdict::StoreDown,
                    // With `local` the Redis store decides locally itself and does not
                    // fail; an error that still reaches here admits, like `allow`.
                    StoreOnError::Allow | StoreOnError::Local => Verdict::Unlimited,
                }
            }
        }
    }

    fn check_of(&self, keyed: &KeyedPolicy, cost: u64) -> Check {
        let policy = &self.policies.policies[keyed.index];
        Check {
            key: keyed.store_key,
            algorithm: policy.algorithm,
            quota: policy.quota_for(&keyed.key),
            cost,
        }
    }

    async fn decide_shadow(&self, keyed: &KeyedPolicy, cost: u64) {
        let policy = &self.policies.policies[keyed.index];
        match self.store.decide(&[self.check_of(keyed, cost)]).await {
            Ok(d) => {
                let outcome = if d.decisions.first().is_some_and(|d| d.allowed) {
                    Outcome::Allowed
                } else {
                    Outcome::ShadowLimited
                };
                self.hook.on_decision(&policy.name, outcome);
            }
            Err(e) => self.hook.on_store_error(&e),
        }
    }

    fn verdict(&self, enforce: &[KeyedPolicy], checks: &[Check], decided: &Decided) -> Verdict {
        let now = decided.at;
        let decisions = &decided.decisions;
        let reports: Inline<PolicyReport<'_>> = enforce
            .iter()
            .zip(checks)
            .zip(decisions)
            .map(|((k, c), d)| PolicyReport {
                name: &self.policies.policies[k.index].name,
                quota: c.quota,
                decision: *d,
            })
            .collect();
        let headers = render(self.headers, &reports, now);
        let admitted = decisions.iter().all(|d| d.allowed);
        for (k, d) in enforce.iter().zip(decisions) {
            let outcome = if admitted || d.allowed {
                Outcome::Allowed
            } else {
                Outcome::Limited
            };
            self.hook
                .on_decision(&self.policies.policies[k.index].name, outcome);
        }
        let Some(t) = tightest(&reports) else {
            return Verdict::Unlimited;
        };
        let tight = &self.policies.policies[enforce[t].index];
        if admitted {
            return Verdict::Allowed {
                headers,
                policy: Some(tight.name.clone()),
            };
        }
        let wait = decisions[t].retry_after.unwrap_or_default();
        Verdict::Limited {
            headers,
            policy: tight.name.clone(),
            limit: checks[t].quota.limit,
            window: checks[t].quota.window,
            violated: enforce
                .iter()
                .zip(decisions)
                .filter(|(_, d)| !d.allowed)
                .map(|(k, _)| self.policies.policies[k.index].name.clone())
                .collect(),
            retry_after: retry_after_secs(wait),
        }
    }

    fn is_bypassed<B>(&self, req: &http::Request<B>, facts: &HttpFacts<'_, B>) -> bool {
        let ip = facts.client_ip();
        if self.bypass.cidrs.iter().any(|n| n.contains(&ip)) {
            return true;
        }
        // No header lookup at all unless a bypass token is configured.
        self.bypass.token_digest.is_some()
            && self
                .bypass
                .token_matches(req.headers().get(&X_BYPASS_TOKEN).map(|v| v.as_bytes()))
    }

    /// Every policy of a request with its key, without deciding anything (`/admin/explain`).
    pub fn keys_of<B>(&self, req: &http::Request<B>) -> (Option<Arc<str>>, bool, Vec<KeyedPolicy>) {
        let facts = HttpFacts::new(req, self.ipv6_prefix);
        let resolution = self
            .policies
            .resolve(req.method().as_str(), req.uri().path());
        let bypassed = !resolution.policies.is_empty() && self.is_bypassed(req, &facts);
        let keyed = resolution
            .policies
            .iter()
            .filter_map(|&i| {
                let policy = &self.policies.policies[i];
                match build_key(policy, resolution.route, &facts) {
                    KeyOutcome::Key(key) => Some(KeyedPolicy {
                        index: i,
                        store_key: StoreKey(policy.store_key(&key)),
                        key,
                    }),
                    _ => None,
                }
            })
            .collect();
        (resolution.route.map(|r| r.label.clone()), bypassed, keyed)
    }

    /// The state of one bucket, without taking anything.
    pub async fn peek(
        &self,
        policy: usize,
        key: &str,
    ) -> Result<(Check, Decision, u64), StoreError> {
        let p = &self.policies.policies[policy];
        let check = Check {
            key: StoreKey(p.store_key(key)),
            algorithm: p.algorithm,
            quota: p.quota_for(key),
            cost: 0,
        };
        let d = self.store.decide(&[check]).await?;
        let at = d.at;
        let decision = d
            .decisions
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Protocol("no decision".into()))?;
        Ok((check, decision, at))
    }
}
