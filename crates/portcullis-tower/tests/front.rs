//! `FrontLayer` is the five outer layers in one service: for the same requests it must
//! give what the five stacked give — the request the inner service sees, the response
//! (status, every header or head line), and the record the hook receives.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use portcullis_core::headers::{AcceptRequestId, SecurityHeaders};
use portcullis_core::identity::TrustedProxies;
use portcullis_tower::front::FrontLayer;
use portcullis_tower::observe::ObservedBody;
use portcullis_tower::request_id::RequestId;
use portcullis_tower::{
    ClientIdentityLayer, ClientInfo, HeadLines, LatencyLayer, ObserveHook, ObserveLayer, PeerAddr,
    RequestIdLayer, RequestRecord, SecurityHeadersLayer, UpstreamTiming,
};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

#[derive(Clone, Default)]
struct Records(Arc<Mutex<Vec<RequestRecord>>>);

impl ObserveHook for Records {
    fn on_complete(&self, record: RequestRecord) {
        self.0.lock().unwrap().push(record);
    }
}

/// What the inner service saw of a request.
#[derive(Debug, PartialEq)]
struct Seen {
    headers: Vec<(String, String)>,
    client: Option<ClientInfo>,
    id: Option<String>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// An upstream: answers `/upstream-set` with its own security and id headers, and
/// every response with an upstream time.
fn inner(
    log: Log,
) -> impl Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible> + Clone
{
    tower::service_fn(move |req: Request<Full<Bytes>>| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push(Seen {
                headers: sorted(req.headers()),
                client: req.extensions().get::<ClientInfo>().copied(),
                id: req
                    .extensions()
                    .get::<RequestId>()
                    .map(|id| id.as_str().to_owned()),
            });
            let mut res = Response::new(Full::new(Bytes::from_static(b"hello")));
            if req.uri().path() == "/upstream-set" {
                let h = res.headers_mut();
                h.insert("x-frame-options", "SAMEORIGIN".parse().unwrap());
                h.insert("x-request-id", "upstream-id".parse().unwrap());
                h.insert("x-latency-ms", "999999".parse().unwrap());
                *res.status_mut() = StatusCode::CREATED;
            }
            res.extensions_mut()
                .insert(UpstreamTiming(Duration::from_micros(250)));
            Ok::<_, Infallible>(res)
        }
    })
}

fn sorted(h: &HeaderMap) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = h
        .iter()
        .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    v.sort();
    v
}

/// The response's fields (map and head lines, as a server writes them), without the
/// timing values, which differ from run to run.
fn fields<B>(res: &mut Response<B>) -> Vec<(String, String)> {
    let mut map = res.headers().clone();
    if let Some(lines) = res.extensions_mut().remove::<HeadLines>() {
        lines.apply_to(&mut map);
    }
    sorted(&map)
        .into_iter()
        .map(|(n, v)| match n.as_str() {
            "x-latency-ms" | "server-timing" => (n, "(timing)".to_owned()),
            _ => (n, v),
        })
        .collect()
}

struct Layers {
    identity: ClientIdentityLayer,
    request_id: RequestIdLayer,
    latency: LatencyLayer,
    security: SecurityHeadersLayer,
}

fn layers(lines: bool, latency: bool, expose_id: bool) -> Layers {
    let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
    let security = SecurityHeaders {
        always: vec![
            ("x-frame-options", "DENY".into()),
            ("x-content-type-options", "nosniff".into()),
        ],
        hsts: Some("max-age=60".into()),
    };
    let mut l = Layers {
        identity: ClientIdentityLayer::new(trusted),
        request_id: RequestIdLayer::new(AcceptRequestId::Uuid, expose_id),
        latency: LatencyLayer::new(latency),
        security: SecurityHeadersLayer::new(&security).unwrap(),
    };
    if lines {
        l.request_id = l.request_id.with_head_lines();
        l.latency = l.latency.with_head_lines();
        l.security = l.security.with_head_lines();
    }
    l
}

fn requests() -> Vec<Request<Full<Bytes>>> {
    let build = |peer: &str, path: &str, headers: &[(&str, &str)]| {
        let mut b = Request::builder().uri(path);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        let mut req = b.body(Full::new(Bytes::new())).unwrap();
        req.extensions_mut().insert(PeerAddr(peer.parse().unwrap()));
        req
    };
    vec![
        build("192.0.2.7:5000", "/items?x=1", &[]),
        // A client id kept; a trusted proxy's forwarding headers (HTTPS: HSTS).
        build(
            "10.1.2.3:5000",
            "/upstream-set",
            &[
                ("x-request-id", "7d0e1f5a-3c1b-4d2e-9f00-0123456789ab"),
                ("x-forwarded-for", "198.51.100.9"),
                ("x-forwarded-proto", "https"),
            ],
        ),
        // An untrusted peer's claims are not believed; a malformed id is replaced.
        build(
            "192.0.2.8:5000",
            "/a/b",
            &[
                ("x-request-id", "not a uuid"),
                ("x-forwarded-for", "198.51.100.9"),
                ("x-forwarded-proto", "https"),
            ],
        ),
    ]
}

/// A response's status and fields.
type Answer = (StatusCode, Vec<(String, String)>);
/// What the inner service saw, the responses, and the records.
type Run = (Vec<Seen>, Vec<Answer>, Vec<RequestRecord>);

/// Sends each request through `service`.
async fn run<S>(service: S, log: &Log, records: &Records) -> Run
where
    S: Service<
            Request<Full<Bytes>>,
            Response = Response<ObservedBody<Full<Bytes>, Records>>,
            Error = Infallible,
        > + Clone,
{
    let mut out = Vec::new();
    for req in requests() {
        let mut res = service.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let f = fields(&mut res);
        // The body ends: the record is made.
        let _ = res.into_body().collect().await;
        out.push((status, f));
    }
    let seen = std::mem::take(&mut *log.lock().unwrap());
    let recs = std::mem::take(&mut *records.0.lock().unwrap());
    (seen, out, recs)
}

/// Request ids are fresh UUIDs where the client's was refused: make them comparable.
fn same_ids(a: &mut Run, b: &Run) {
    for i in 0..a.0.len() {
        let (from, to) = (a.0[i].id.clone().unwrap(), b.0[i].id.clone().unwrap());
        let swap = |s: &mut String| {
            if *s == from {
                *s = to.clone();
            }
        };
        a.0[i].id = Some(to.clone());
        for (_, v) in &mut a.0[i].headers {
            swap(v);
        }
        for (_, v) in &mut a.1[i].1 {
            swap(v);
        }
        swap(&mut a.2[i].request_id);
    }
}

#[tokio::test]
async fn the_front_gives_what_the_five_layers_give() {
    for (lines, latency, expose_id) in [
        (false, true, true),
        (true, true, true),
        (true, false, false),
        (false, false, true),
    ] {
        let case = format!("lines {lines}, latency {latency}, expose id {expose_id}");
        let log: Log = Arc::default();
        let records = Records::default();

        let l = layers(lines, latency, expose_id);
        let stacked = ServiceBuilder::new()
            .layer(l.identity)
            .layer(l.request_id)
            .layer(ObserveLayer::new(records.clone()))
            .layer(l.latency)
            .layer(l.security)
            .service(inner(log.clone()));
        let mut separate = run(stacked, &log, &records).await;

        let l = layers(lines, latency, expose_id);
        let front = FrontLayer::new(
            l.identity,
            l.request_id,
            ObserveLayer::new(records.clone()),
            l.latency,
            l.security,
        )
        .layer(inner(log.clone()));
        let fused = run(front, &log, &records).await;

        assert_eq!(separate.0.len(), 3, "{case}");
        same_ids(&mut separate, &fused);
        assert_eq!(separate.0, fused.0, "{case}: what the inner service saw");
        assert_eq!(separate.1, fused.1, "{case}: the responses");
        assert_eq!(separate.2.len(), fused.2.len(), "{case}");
        for (a, b) in separate.2.iter().zip(&fused.2) {
            let untimed = |r: &RequestRecord| {
                (
                    r.request_id.clone(),
                    r.method.clone(),
                    r.path.clone(),
                    r.route.clone(),
                    r.status,
                    r.upstream,
                    r.client,
                    r.bytes_out,
                    r.policy.clone(),
                    r.decision,
                )
            };
            assert_eq!(untimed(a), untimed(b), "{case}: the records");
            assert!(b.latency <= b.duration, "{case}");
        }
    }
    // The cases cover what the layers do: kept and fresh ids, HSTS, upstream fields.
    let l = layers(false, true, true);
    let fused = FrontLayer::new(
        l.identity,
        l.request_id,
        ObserveLayer::new(Records::default()),
        l.latency,
        l.security,
    )
    .layer(inner(Arc::default()));
    let log: Log = Arc::default();
    let (_, responses, _) = run(fused, &log, &Records::default()).await;
    let has = |i: usize, n: &str, v: &str| responses[i].1.contains(&(n.into(), v.into()));
    assert!(has(
        1,
        "x-request-id",
        "7d0e1f5a-3c1b-4d2e-9f00-0123456789ab"
    ));
    assert!(has(1, "strict-transport-security", "max-age=60"));
    assert!(has(1, "x-frame-options", "SAMEORIGIN"));
    assert!(!has(1, "x-frame-options", "DENY"));
    assert!(has(0, "x-frame-options", "DENY"));
    assert!(has(0, "x-content-type-options", "nosniff"));
    assert!(!responses[2]
        .1
        .iter()
        .any(|(n, _)| n == "strict-transport-security"));
    assert!(!has(2, "x-request-id", "not a uuid"));
}
