//! The rate-limit layer decides inside `call` when its store answers at once (the memory
//! store) and in a boxed future otherwise (Redis). Both paths must give the same
//! responses: status, every header, and the extensions the log and metrics read.

use bytes::Bytes;
use http::{Request, Response};
use portcullis_core::config::{load, RateLimitHeaders, StoreOnError};
use portcullis_core::identity::ClientIdentity;
use portcullis_core::policy::PolicySet;
use portcullis_store::clock::ManualClock;
use portcullis_store::memory::MemoryStore;
use portcullis_store::{Check, Decided, Store, StoreError, StoreKey};
use portcullis_tower::observe::MatchedRoute;
use portcullis_tower::rate_limit::{Bypass, DecisionHook, Outcome, RateLimitSummary};
use portcullis_tower::{ClientInfo, RateLimitLayer, RateLimiter};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tower::{Layer, Service, ServiceExt};

const NOW: u64 = 1_795_425_199_250_000_000;

#[derive(Clone, Copy)]
struct NoHook;
impl DecisionHook for NoHook {
    fn on_decision(&self, _policy: &str, _outcome: Outcome) {}
}

/// The memory store, answering only through the awaited `decide` (like Redis).
struct Deferred(Arc<MemoryStore<ManualClock>>);

impl Store for Deferred {
    async fn decide(&self, checks: &[Check]) -> Result<Decided, StoreError> {
        self.0.decide(checks).await
    }
    async fn reset(&self, key: StoreKey) -> Result<(), StoreError> {
        self.0.reset(key).await
    }
    fn now(&self) -> u64 {
        self.0.now()
    }
    fn key_count(&self) -> Option<u64> {
        self.0.key_count()
    }
    async fn remember(&self, key: StoreKey, ttl: Duration) -> Result<bool, StoreError> {
        self.0.remember(key, ttl).await
    }
    async fn forget(&self, key: StoreKey) -> Result<(), StoreError> {
        self.0.forget(key).await
    }
}

const CONFIG: &str = r#"
[server]
upstream = "http://127.0.0.1:9"

[[policy]]
name = "default"
limit = 2
window = "1m"
key = ["ip"]

[[policy]]
name = "items"
limit = 1
window = "10s"
key = ["ip", "route"]

[[policy]]
name = "by-tenant"
limit = 5
window = "1m"
key = ["header:x-tenant"]
on_missing_key = "deny"

[[route]]
path = "/items/{id}"
policies = ["items", "default"]

[[route]]
path = "/tenant"
policies = ["by-tenant"]
"#;

fn limiter<St: Store>(store: St) -> Arc<RateLimiter<St, NoHook>> {
    let config = load("test.toml", Some(CONFIG), Vec::new()).expect("valid test config");
    Arc::new(RateLimiter {
        policies: PolicySet::from_config(&config),
        store,
        bypass: Bypass::default(),
        headers: RateLimitHeaders::Both,
        ipv6_prefix: 64,
        on_error: StoreOnError::Deny,
        hook: NoHook,
    })
}

/// `req` as the client identity layer leaves it for a direct (untrusted) peer at `ip`.
fn from_client(mut req: Request<()>, ip: &str) -> Request<()> {
    let ip: std::net::IpAddr = ip.parse().expect("ip");
    req.extensions_mut().insert(ClientInfo {
        peer: std::net::SocketAddr::new(ip, 40000),
        identity: ClientIdentity { ip, https: false },
        trusted_peer: false,
    });
    req
}

/// Everything observable of one response.
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
    summary: Option<RateLimitSummary>,
    route: Option<MatchedRoute>,
}

/// The layer's response to one request, once it is ready.
async fn respond<S>(svc: &mut S, req: Request<()>) -> S::Response
where
    S: Service<Request<()>, Error = Infallible>,
{
    svc.ready()
        .await
        .expect("ready")
        .call(req)
        .await
        .expect("infallible")
}

async fn run<St: Store>(store: St) -> Vec<Seen> {
    let inner = tower::service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Bytes::from_static(b"upstream")))
    });
    let mut svc = RateLimitLayer::new(limiter(store)).layer(inner);
    let requests = [
        ("/", None),
        ("/", None),
        ("/", None),        // over "default": 429
        ("/items/7", None), // "default" is spent: 429 on the route too
        ("/items/8", None),
        ("/tenant", Some("acme")),
        ("/tenant", None), // no key and on_missing_key = "deny": 400
    ];
    let mut seen = Vec::new();
    for (path, tenant) in requests {
        let mut req = Request::get(path);
        if let Some(t) = tenant {
            req = req.header("x-tenant", t);
        }
        let req = from_client(req.body(()).expect("request"), "192.0.2.7");
        let res = respond(&mut svc, req).await;
        let mut headers: Vec<(String, String)> = res
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("?").to_owned()))
            .collect();
        headers.sort();
        seen.push(Seen {
            status: res.status().as_u16(),
            headers,
            summary: res.extensions().get::<RateLimitSummary>().cloned(),
            route: res.extensions().get::<MatchedRoute>().cloned(),
            body: res.into_body(),
        });
    }
    seen
}

#[tokio::test]
async fn deciding_in_call_and_in_the_future_give_the_same_responses() {
    let now = Arc::new(MemoryStore::new(1000, ManualClock::new(NOW)));
    let later = Deferred(Arc::new(MemoryStore::new(1000, ManualClock::new(NOW))));
    assert!(now.decides_now() && !later.decides_now());
    let in_call = run(now).await;
    let in_future = run(later).await;
    assert_eq!(in_call, in_future);
    // And the responses are the ones SPEC asks for.
    let statuses: Vec<u16> = in_call.iter().map(|s| s.status).collect();
    assert_eq!(statuses, [200, 200, 429, 429, 429, 200, 400]);
    let header = |s: &Seen, name: &str| {
        s.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        header(&in_call[0], "x-ratelimit-remaining").as_deref(),
        Some("1")
    );
    assert_eq!(header(&in_call[2], "retry-after").as_deref(), Some("30"));
    assert_eq!(
        in_call[4].route,
        Some(MatchedRoute(Arc::from("/items/{id}")))
    );
    assert_eq!(
        in_call[4].summary.as_ref().and_then(|s| s.decision),
        Some("limited")
    );
    assert_eq!(
        in_call[0].summary.as_ref().and_then(|s| s.decision),
        Some("allowed")
    );
    assert_eq!(in_call[6].summary.as_ref().and_then(|s| s.decision), None);
    assert_eq!(in_call[0].body, Bytes::from_static(b"upstream"));
}

/// Each layer (one per serving thread) puts its own copy of the matched route's pattern
/// on the request and the response, never the limiter's shared `Arc`: a clone per request
/// then updates a count only that thread writes.
#[tokio::test]
async fn each_layer_labels_routes_with_its_own_copies() {
    let limiter = limiter(Arc::new(MemoryStore::new(1000, ManualClock::new(NOW))));
    let shared = limiter.policies.routes[0].label.clone();
    let seen_on_request = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut labels = Vec::new();
    for client in ["192.0.2.9", "192.0.2.10"] {
        let seen = seen_on_request.clone();
        let inner = tower::service_fn(move |req: Request<()>| {
            seen.lock()
                .expect("lock")
                .push(req.extensions().get::<MatchedRoute>().cloned());
            async { Ok::<_, Infallible>(Response::new(Bytes::from_static(b"upstream"))) }
        });
        let mut svc = RateLimitLayer::new(limiter.clone()).layer(inner);
        let req = from_client(Request::get("/items/1").body(()).expect("request"), client);
        let res = respond(&mut svc, req).await;
        assert_eq!(res.status(), 200);
        let label = res
            .extensions()
            .get::<MatchedRoute>()
            .cloned()
            .expect("the matched route on the response");
        assert_eq!(&*label.0, "/items/{id}");
        assert!(!Arc::ptr_eq(&label.0, &shared), "the layer's own copy");
        labels.push(label.0);
    }
    assert!(!Arc::ptr_eq(&labels[0], &labels[1]), "one copy per layer");
    let on_request = seen_on_request.lock().expect("lock");
    for (seen, label) in on_request.iter().zip(&labels) {
        let seen = seen.as_ref().expect("the matched route on the request");
        assert!(
            Arc::ptr_eq(&seen.0, label),
            "the same copy on request and response"
        );
    }
}
