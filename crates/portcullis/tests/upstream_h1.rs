//! Black-box tests of the gateway's HTTP/1.1 client side against an upstream that
//! writes raw bytes: how responses are delimited, when an upstream connection is
//! reused, closed or a request sent again. A misframed response must never leak into
//! the next client's answer on the same connection.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted upstream does with one request.
enum Act {
    /// Writes the bytes and keeps the connection open.
    Reply(&'static str),
    /// Writes the bytes, then closes the connection after the delay.
    ReplyThenClose(&'static str, Duration),
    /// Closes the connection without answering.
    Close,
    /// Writes the bytes as soon as the request head is in, and never reads the body.
    AnswerUnread(&'static str),
}

/// An upstream answering the n-th request it receives (0-based, over all its
/// connections) as `script(n)` says.
struct RawUpstream {
    url: String,
    /// Each request received, in order: the connection it came on (numbered from 0 in
    /// accept order) and its request line.
    requests: Arc<Mutex<Vec<(usize, String)>>>,
}

impl RawUpstream {
    async fn start(script: fn(usize) -> Act) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = AtomicUsize::new(0);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let reqs = requests.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let conn = accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve(stream, conn, script, reqs.clone()));
            }
        });
        RawUpstream { url, requests }
    }

    /// The request lines received.
    fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|(_, line)| line.clone())
            .collect()
    }

    /// How many connections carried requests (the gateway's health probe opens
    /// connections that carry none).
    fn connections_used(&self) -> usize {
        let seen = self.requests.lock().unwrap();
        let mut conns: Vec<usize> = seen.iter().map(|&(conn, _)| conn).collect();
        conns.dedup();
        conns.len()
    }
}

async fn serve(
    mut stream: TcpStream,
    conn: usize,
    script: fn(usize) -> Act,
    requests: Arc<Mutex<Vec<(usize, String)>>>,
) {
    let mut buf = Vec::new();
    loop {
        // One request head, and its Content-Length body.
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        let n = {
            let mut seen = requests.lock().unwrap();
            seen.push((conn, head.lines().next().unwrap_or_default().to_owned()));
            seen.len() - 1
        };
        let act = script(n);
        if let Act::AnswerUnread(bytes) = act {
            // Answers at once and reads nothing more, the connection left open.
            stream.write_all(bytes.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_secs(20)).await;
            return;
        }
        while buf.len() < end + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..end + length);
        match act {
            Act::Reply(bytes) => stream.write_all(bytes.as_bytes()).await.unwrap(),
            Act::ReplyThenClose(bytes, after) => {
                stream.write_all(bytes.as_bytes()).await.unwrap();
                tokio::time::sleep(after).await;
                return;
            }
            Act::Close | Act::AnswerUnread(_) => return,
        }
    }
}

const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

async fn gateway(up: &RawUpstream) -> Gateway {
    Gateway::start(&config(&up.url, "request_timeout = \"5s\"", "")).await
}

/// One keep-alive client connection: its requests are all served by the same serving
/// thread, so they share that thread's upstream connections.
struct Client(TcpStream);

impl Client {
    async fn new(gw: &Gateway) -> Client {
        Client(raw_connect(gw.addr).await)
    }

    async fn send(&mut self, method: &str, path: &str) -> Reply {
        let body = if method == "POST" {
            "content-length: 1\r\n\r\nx"
        } else {
            "\r\n"
        };
        let request = format!("{method} {path} HTTP/1.1\r\nhost: gateway\r\n{body}");
        raw_write(&mut self.0, request.as_bytes()).await;
        raw_read_response(&mut self.0).await
    }

    /// A HEAD request: only a head comes back, whatever its Content-Length says.
    async fn head(&mut self, path: &str) -> String {
        let request = format!("HEAD {path} HTTP/1.1\r\nhost: gateway\r\n\r\n");
        raw_write(&mut self.0, request.as_bytes()).await;
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            let n = within("a response head", NET, self.0.read(&mut byte))
                .await
                .unwrap();
            assert_eq!(
                n,
                1,
                "closed inside a head: {}",
                String::from_utf8_lossy(&head)
            );
            head.push(byte[0]);
        }
        String::from_utf8(head).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misframed_responses_are_502_and_their_connection_is_closed() {
    let up = RawUpstream::start(|n| match n {
        0 => Act::Reply("HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok"),
        1 => Act::Reply("HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\nok"),
        2 => Act::Reply("HTTP/1.1 200 OK\r\nbad header line\r\n\r\n"),
        3 => {
            Act::Reply("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n")
        }
        _ => Act::Reply(OK),
    })
    .await;
    let gw = gateway(&up).await;
    let mut client = Client::new(&gw).await;
    for i in 0..3 {
        let r = client.send("GET", &format!("/bad/{i}")).await;
        assert_problem(&r, 502, "upstream_error");
    }
    // A bad chunk line found once the head is on its way: the client's connection is
    // closed, and no complete chunked body reaches the client.
    let mut broken = Client::new(&gw).await;
    raw_write(&mut broken.0, b"GET /bad/3 HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut received = Vec::new();
    let _ = within(
        "the client connection to close",
        NET,
        broken.0.read_to_end(&mut received),
    )
    .await;
    assert!(
        !received.ends_with(b"0\r\n\r\n"),
        "{}",
        String::from_utf8_lossy(&received)
    );
    let r = client.send("GET", "/good").await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert_eq!(up.requests().len(), 5, "{:?}", up.requests());
    assert_eq!(
        up.connections_used(),
        5,
        "no connection that carried a bad response was reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_framed_responses_keep_their_connection() {
    let up = RawUpstream::start(|n| match n {
        0 => Act::Reply(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
             5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n",
        ),
        1 => Act::Reply("HTTP/1.1 204 No Content\r\n\r\n"),
        2 => Act::Reply("HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\nfive!"),
        3 => Act::Reply("HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n"),
        4 => Act::Reply("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"),
        _ => Act::Reply(OK),
    })
    .await;
    let gw = gateway(&up).await;
    let mut client = Client::new(&gw).await;
    let r = client.send("GET", "/chunked").await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello world"));
    assert_eq!(client.send("GET", "/none").await.status, 204);
    assert_eq!(client.send("GET", "/five").await.text(), "five!");
    assert_eq!(client.send("GET", "/cached").await.status, 304);
    let head = client.head("/head").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(client.send("GET", "/last").await.text(), "ok");
    assert_eq!(up.requests().len(), 6, "{:?}", up.requests());
    assert_eq!(
        up.connections_used(),
        1,
        "every response was delimited: one connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_that_end_unclearly_close_their_connection() {
    let up = RawUpstream::start(|n| match n {
        // Bytes beyond the body: never read as the next response.
        0 => Act::Reply(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok\
             HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged",
        ),
        // Delimited by the close.
        1 => Act::ReplyThenClose("HTTP/1.1 200 OK\r\n\r\nuntil close", Duration::ZERO),
        2 => Act::Reply("HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\nold"),
        3 => Act::Reply("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 3\r\n\r\nbye"),
        _ => Act::Reply(OK),
    })
    .await;
    let gw = gateway(&up).await;
    let mut client = Client::new(&gw).await;
    assert_eq!(client.send("GET", "/extra").await.text(), "ok");
    assert_eq!(client.send("GET", "/close").await.text(), "until close");
    assert_eq!(client.send("GET", "/old").await.text(), "old");
    assert_eq!(client.send("GET", "/bye").await.text(), "bye");
    let r = client.send("GET", "/next").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "ok"),
        "not the forged response"
    );
    assert_eq!(up.requests().len(), 5, "{:?}", up.requests());
    assert_eq!(up.connections_used(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_the_upstream_closed_are_not_used() {
    let up = RawUpstream::start(|_| Act::ReplyThenClose(OK, Duration::from_millis(50))).await;
    let gw = gateway(&up).await;
    let mut client = Client::new(&gw).await;
    for _ in 0..3 {
        let r = client.send("GET", "/").await;
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        up.requests().len(),
        3,
        "each request reached the upstream once"
    );
    assert_eq!(up.connections_used(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_repeatable_requests_are_sent_again_when_a_reused_connection_fails() {
    // Every second request on a connection is met by a close: what an upstream closing
    // an idle connection looks like when the request crossed the close.
    let up = RawUpstream::start(|n| {
        if n % 2 == 1 {
            Act::Close
        } else {
            Act::Reply(OK)
        }
    })
    .await;
    let gw = gateway(&up).await;
    let mut client = Client::new(&gw).await;
    assert_eq!(client.send("GET", "/a").await.text(), "ok");
    // A GET on the reused connection meets the close and is sent again, on a new one.
    let r = client.send("GET", "/b").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "ok"),
        "{:?}",
        up.requests()
    );
    assert_eq!(
        up.requests(),
        ["GET /a HTTP/1.1", "GET /b HTTP/1.1", "GET /b HTTP/1.1"]
    );
    // A POST is not repeated: the upstream may have acted on it.
    let r = client.send("POST", "/c").await;
    assert_problem(&r, 502, "upstream_error");
    assert_eq!(
        up.requests().len(),
        4,
        "the POST was sent once: {:?}",
        up.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_before_the_body_is_read_stops_the_upload() {
    // A 413 at once, the body never read, the connection left open: the gateway must pass
    // the answer on rather than push the body into a full window until its timeout.
    let up = RawUpstream::start(|_| {
        Act::AnswerUnread("HTTP/1.1 413 Content Too Large\r\ncontent-length: 4\r\n\r\nbig!")
    })
    .await;
    let gw = Gateway::start(&config(
        &up.url,
        "request_timeout = \"5s\"\nmax_body_bytes = 100000000",
        "",
    ))
    .await;
    const BODY: usize = 64 << 20;
    let client = raw_connect(gw.addr).await;
    let (mut read, mut write) = client.into_split();
    let head = format!("POST /upload HTTP/1.1\r\nhost: gateway\r\ncontent-length: {BODY}\r\n\r\n");
    let writer = tokio::spawn(async move {
        write.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..BODY / chunk.len() {
            write.write_all(&chunk).await?;
        }
        std::io::Result::Ok(())
    });
    let started = std::time::Instant::now();
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains("big!") {
        match within("the upstream's answer", NET, read.read(&mut chunk)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.ends_with("big!"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered after {:?}, not at once",
        started.elapsed()
    );
    writer.abort();
}
