//! The demo's sample API: a small, real HTTP service for the gateway to front.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;

const ITEMS: [(u32, &str, u32); 3] = [(1, "anvil", 1999), (2, "rope", 599), (3, "lantern", 2450)];

pub(crate) async fn serve(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(|req| async { Ok::<_, Infallible>(handle(req).await) });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Either a complete body or the server-sent-events ticker.
enum SampleBody {
    Full(Full<Bytes>),
    Events(Events),
}

impl Body for SampleBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            SampleBody::Full(b) => Pin::new(b).poll_frame(cx),
            SampleBody::Events(e) => e.poll_event(cx),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            SampleBody::Full(b) => b.size_hint(),
            SampleBody::Events(_) => http_body::SizeHint::default(),
        }
    }
}

/// Five events, 200 ms apart.
struct Events {
    sent: u32,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Events {
    fn poll_event(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.sent >= 5 {
            return Poll::Ready(None);
        }
        if self.timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.sent += 1;
        let next = tokio::time::Instant::now() + Duration::from_millis(200);
        self.timer.as_mut().reset(next);
        let event = format!(
            "id: {n}\nevent: tick\ndata: {{\"tick\":{n}}}\n\n",
            n = self.sent
        );
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(event)))))
    }
}

use std::future::Future as _;

fn json_body(status: StatusCode, v: serde_json::Value) -> Response<SampleBody> {
    let mut res = Response::new(SampleBody::Full(Full::new(Bytes::from(v.to_string()))));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn item(id: u32, name: &str, price: u32) -> serde_json::Value {
    json!({"id": id, "name": name, "price_cents": price})
}

async fn handle(req: Request<Incoming>) -> Response<SampleBody> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/api/items") => json_body(
            StatusCode::OK,
            json!({"items": ITEMS.iter().map(|(i, n, p)| item(*i, n, *p)).collect::<Vec<_>>()}),
        ),
        (Method::GET, p) if p.starts_with("/api/items/") => {
            let id = p.trim_start_matches("/api/items/").parse::<u32>().ok();
            match ITEMS.iter().find(|(i, _, _)| Some(*i) == id) {
                Some((i, n, pr)) => json_body(StatusCode::OK, item(*i, n, *pr)),
                None => json_body(StatusCode::NOT_FOUND, json!({"error": "no such item"})),
            }
        }
        (Method::POST, "/api/auth/login") => {
            let body = Limited::new(req.into_body(), 64 * 1024).collect().await;
            let ok = body
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b.to_bytes()).ok())
                .is_some_and(|v| v.get("user").is_some());
            if ok {
                json_body(
                    StatusCode::OK,
                    json!({"token": "demo-session-token", "expires_in": 3600}),
                )
            } else {
                json_body(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "send {\"user\":..,\"password\":..}"}),
                )
            }
        }
        (Method::GET, "/api/export") => {
            let mut csv = String::from("id,name,price_cents\n");
            for (i, n, p) in ITEMS {
                csv.push_str(&format!("{i},{n},{p}\n"));
            }
            let mut res = Response::new(SampleBody::Full(Full::new(Bytes::from(csv))));
            res.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv"));
            res
        }
        (Method::GET, "/api/slow") => {
            let ms = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("ms="))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1500)
                .min(10_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            json_body(StatusCode::OK, json!({"slept_ms": ms}))
        }
        (Method::GET, "/api/stream") => {
            let mut res = Response::new(SampleBody::Events(Events {
                sent: 0,
                timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            }));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            res
        }
        _ => json_body(
            StatusCode::NOT_FOUND,
            json!({"error": "not found", "path": path}),
        ),
    }
}
