//! Shared helpers for the black-box tests of the `portcullis` binary.
//!
//! Everything here talks to real processes over real sockets: the gateway is the
//! compiled binary started with a temporary configuration file, and the upstream is
//! a small hyper 1 server running inside the test's tokio runtime.

#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::channel::Channel;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Upper bound for one network wait (connect, a response head, a body).
pub(crate) const NET: Duration = Duration::from_secs(10);

/// The default `Strict-Transport-Security` value of SPEC.
pub(crate) const HSTS_DEFAULT: &str = "max-age=31536000; includeSubDomains";

/// The security headers SPEC sends by default, with their default values.
pub(crate) const SECURITY_DEFAULTS: [(&str, &str); 6] = [
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
];

/// Awaits `fut`, failing the test with `what` when it takes longer than `limit`.
pub(crate) async fn within<T>(what: &str, limit: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

// ---------------------------------------------------------------------------
// Temporary directories and configuration files
// ---------------------------------------------------------------------------

/// A directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "portcullis-test-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to `name` inside the directory and returns its path.
    pub(crate) fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A gateway configuration on ephemeral loopback ports. `server_extra` is added to
/// the `[server]` table, `rest` after the `[admin]` table (whole tables).
pub(crate) fn config(upstream: &str, server_extra: &str, rest: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nupstream = \"{upstream}\"\n{server_extra}\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n{rest}\n"
    )
}

/// A loopback port on which nothing listens (bound once, then released).
pub(crate) fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind probe port");
    l.local_addr().expect("probe addr").port()
}

// ---------------------------------------------------------------------------
// The gateway process
// ---------------------------------------------------------------------------

/// A `Command` for the real binary, with no `PORTCULLIS_*` or `RUST_LOG` leaking in
/// from the environment of the test run.
pub(crate) fn portcullis_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy()
            .to_ascii_uppercase()
            .starts_with("PORTCULLIS_")
        {
            cmd.env_remove(&k);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd.stdin(Stdio::null());
    cmd
}

/// Kills (and reaps) a child process on drop.
pub(crate) struct ChildGuard(pub(crate) Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

type Lines = Arc<Mutex<Vec<String>>>;

fn lines_of(lines: &Lines) -> Vec<String> {
    lines.lock().map(|l| l.clone()).unwrap_or_default()
}

/// A running `portcullis serve`, killed on drop.
pub(crate) struct Gateway {
    child: ChildGuard,
    pub(crate) addr: SocketAddr,
    pub(crate) admin: SocketAddr,
    stdout: Lines,
    stderr: Lines,
    pub(crate) config_path: PathBuf,
    _dir: TempDir,
}

fn parse_listening(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let v: Value = serde_json::from_str(line.trim()).ok()?;
    if v.get("message")?.as_str()? != "listening" {
        return None;
    }
    let listen = v.get("listen")?.as_str()?.parse().ok()?;
    let admin = v.get("admin")?.as_str()?.parse().ok()?;
    Some((listen, admin))
}

impl Gateway {
    /// Starts `portcullis serve --config FILE` with `toml` and waits for its
    /// `"message":"listening"` line on stderr.
    pub(crate) async fn start(toml: &str) -> Gateway {
        Gateway::start_with_env(toml, &[]).await
    }

    pub(crate) async fn start_with_env(toml: &str, env: &[(&str, &str)]) -> Gateway {
        let dir = TempDir::new("gw");
        let config_path = dir.write("portcullis.toml", toml);
        let mut cmd = portcullis_command();
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = ChildGuard(cmd.spawn().expect("spawn portcullis serve"));
        let out = child.0.stdout.take().expect("child stdout");
        let err = child.0.stderr.take().expect("child stderr");

        let stdout: Lines = Arc::default();
        let stderr: Lines = Arc::default();
        {
            let stdout = stdout.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut v) = stdout.lock() {
                        v.push(line);
                    }
                }
            });
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(err).lines() {
                    let Ok(line) = line else { break };
                    if tx.is_some() {
                        if let Some(addrs) = parse_listening(&line) {
                            if let Some(tx) = tx.take() {
                                let _ = tx.send(addrs);
                            }
                        }
                    }
                    if let Ok(mut v) = stderr.lock() {
                        v.push(line);
                    }
                }
            });
        }

        let (addr, admin) = match tokio::time::timeout(Duration::from_secs(20), rx).await {
            Ok(Ok(addrs)) => addrs,
            Ok(Err(_)) => {
                let status = child.0.wait();
                panic!(
                    "portcullis exited ({status:?}) before printing the listening line.\n\
                     config:\n{toml}\nstderr:\n{}\nstdout:\n{}",
                    lines_of(&stderr).join("\n"),
                    lines_of(&stdout).join("\n")
                );
            }
            Err(_) => panic!(
                "portcullis printed no listening line within 20s.\nstderr:\n{}",
                lines_of(&stderr).join("\n")
            ),
        };
        Gateway {
            child,
            addr,
            admin,
            stdout,
            stderr,
            config_path,
            _dir: dir,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.0.id()
    }

    pub(crate) fn stdout_lines(&self) -> Vec<String> {
        lines_of(&self.stdout)
    }

    pub(crate) fn stderr_lines(&self) -> Vec<String> {
        lines_of(&self.stderr)
    }

    /// Waits (up to 10 s) until stderr holds `needle` and returns all of stderr. stdout
    /// and stderr are read by separate threads, so a diagnostic may show after the
    /// access-log line of the same request.
    pub(crate) async fn wait_stderr(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let all = self.stderr_lines().join("\n");
            if all.contains(needle) {
                return all;
            }
            assert!(
                Instant::now() < deadline,
                "stderr never held {needle:?}; it was:\n{all}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The JSON objects written on stdout (the access log).
    pub(crate) fn log_lines(&self) -> Vec<Value> {
        self.stdout_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
            .filter(|v| v.is_object())
            .collect()
    }

    /// The access-log lines whose `request_id` is `id`.
    pub(crate) fn log_lines_for(&self, id: &str) -> Vec<Value> {
        self.log_lines()
            .into_iter()
            .filter(|v| v.get("request_id").and_then(Value::as_str) == Some(id))
            .collect()
    }

    /// Waits (up to 10 s) for the access-log line of request `id`.
    pub(crate) async fn wait_log(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(v) = self.log_lines_for(id).into_iter().next() {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "no access-log line with request_id {id} on stdout; stdout was:\n{}",
                    self.stdout_lines().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM with `kill -TERM PID`.
    pub(crate) fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// Polls for the process to exit, up to `limit`.
    pub(crate) async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.0.try_wait().expect("try_wait") {
                return st;
            }
            if Instant::now() > deadline {
                panic!(
                    "portcullis did not exit within {limit:?}; stderr:\n{}",
                    self.stderr_lines().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Runs `portcullis check --config FILE` on `toml` with extra environment.
/// Returns the output and the path of the configuration file.
pub(crate) async fn run_check(toml: &str, env: &[(&str, &str)]) -> (Output, PathBuf, TempDir) {
    let dir = TempDir::new("check");
    let path = dir.write("portcullis.toml", toml);
    let mut cmd = portcullis_command();
    cmd.arg("check")
        .arg("--config")
        .arg(&path)
        .current_dir(dir.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let out = within("portcullis check", Duration::from_secs(20), cmd.output())
        .await
        .expect("run portcullis check");
    (out, path, dir)
}

// ---------------------------------------------------------------------------
// The upstream
// ---------------------------------------------------------------------------

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) version: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) conn: usize,
}

impl Seen {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }

    pub(crate) fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[derive(Default)]
struct UpState {
    seen: Mutex<Vec<Seen>>,
    conns: AtomicUsize,
}

/// An HTTP/1.1 upstream on 127.0.0.1, running in the current tokio runtime.
///
/// Routes: `/echo...` (JSON of method, target, version, headers, body),
/// `/slow?ms=N`, `/stream` (5 chunks 200 ms apart, or `?gap_ms=N`), `/status/N`, `/ws` (101 +
/// raw byte echo), `/upload-timing` (when the body's bytes arrived),
/// `/custom-headers` (sets some security headers itself, and its own request id,
/// latency and rate-limit fields), `/hop-response`
/// (answers with hop-by-hop headers).
pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    state: Arc<UpState>,
    task: JoinHandle<()>,
}

type RespBody = UnsyncBoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> RespBody {
    Full::new(b.into()).boxed_unsync()
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

async fn upstream_handle(
    mut req: Request<Incoming>,
    state: Arc<UpState>,
    conn: usize,
) -> Result<Response<RespBody>, Infallible> {
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let seen = Seen {
        method: req.method().as_str().to_string(),
        target: target.clone(),
        version: format!("{:?}", req.version()),
        headers: headers.clone(),
        conn,
    };
    if let Ok(mut v) = state.seen.lock() {
        v.push(seen.clone());
    }
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();

    let resp = if path == "/echo" || path.starts_with("/echo/") {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let v = json!({
            "method": seen.method,
            "target": target,
            "version": seen.version,
            "headers": headers.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
            "body": String::from_utf8_lossy(&body),
            "body_len": body.len(),
        });
        Response::builder()
            .header("content-type", "application/json")
            .body(full(v.to_string()))
    } else if path == "/slow" {
        let ms: u64 = query_param(&query, "ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Response::builder()
            .header("content-type", "text/plain")
            .body(full("slow done"))
    } else if path == "/stream" {
        let gap: u64 = query_param(&query, "gap_ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(200);
        let (mut tx, body) = Channel::<Bytes, Infallible>::new(8);
        tokio::spawn(async move {
            for i in 0..5 {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(gap)).await;
                }
                let chunk = Bytes::from(format!("data: chunk {i}\n\n"));
                if tx.send_data(chunk).await.is_err() {
                    return;
                }
            }
        });
        Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(body.boxed_unsync())
    } else if let Some(code) = path.strip_prefix("/status/") {
        let code: u16 = code.parse().unwrap_or(500);
        Response::builder()
            .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header("content-type", "text/plain")
            .body(full(format!("upstream status {code}")))
    } else if path == "/ws" {
        let is_ws = req
            .headers()
            .get("upgrade")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
        if !is_ws {
            Response::builder()
                .status(400)
                .body(full("upstream: missing Upgrade: websocket"))
        } else {
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    let io = TokioIo::new(upgraded);
                    let (mut r, mut w) = tokio::io::split(io);
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                }
            });
            Response::builder()
                .status(101)
                .header("upgrade", "websocket")
                .header("connection", "Upgrade")
                .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
                .body(full(""))
        }
    } else if path == "/upload-timing" {
        let start = Instant::now();
        let mut body = req.into_body();
        let (mut first, mut last, mut n) = (None, None, 0usize);
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Some(d) = frame.data_ref() {
                if !d.is_empty() {
                    let t = start.elapsed().as_millis() as u64;
                    first.get_or_insert(t);
                    last = Some(t);
                    n += d.len();
                }
            }
        }
        let v = json!({"bytes": n, "first_ms": first, "last_ms": last});
        Response::builder()
            .header("content-type", "application/json")
            .body(full(v.to_string()))
    } else if path == "/custom-headers" {
        Response::builder()
            .header("content-type", "text/plain")
            .header("x-frame-options", "SAMEORIGIN")
            .header("content-security-policy", "default-src 'self'")
            .header("referrer-policy", "origin")
            .header("strict-transport-security", "max-age=5")
            // Fields the gateway sets itself: its own replace these.
            .header("x-request-id", "upstream-id")
            .header("x-latency-ms", "999999")
            .header("server-timing", "upstream;dur=999999")
            .header("ratelimit", "\"upstream\";r=1;t=1")
            .header("ratelimit-policy", "\"upstream\";q=1;w=1")
            .body(full("custom"))
    } else if path == "/hop-response" {
        Response::builder()
            .header("content-type", "text/plain")
            .header("connection", "X-Upstream-Hop")
            .header("x-upstream-hop", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic realm=\"upstream\"")
            .header("upgrade", "foo/1")
            .header("x-upstream-normal", "yes")
            .body(full("hop"))
    } else {
        Response::builder()
            .status(404)
            .body(full("no such upstream route"))
    };
    Ok(resp.unwrap_or_else(|e| {
        let mut r = Response::new(full(format!("upstream builder error: {e}")));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    }))
}

impl Upstream {
    /// Starts the upstream on an ephemeral loopback port.
    pub(crate) async fn start() -> Upstream {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        Upstream::serve(l)
    }

    /// Starts the upstream on a given loopback port (for "comes back" tests).
    pub(crate) async fn start_on(port: u16) -> std::io::Result<Upstream> {
        let l = TcpListener::bind(("127.0.0.1", port)).await?;
        Ok(Upstream::serve(l))
    }

    fn serve(listener: TcpListener) -> Upstream {
        let addr = listener.local_addr().expect("upstream addr");
        let state = Arc::new(UpState::default());
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let id = st.conns.fetch_add(1, Ordering::SeqCst) + 1;
                        let st = st.clone();
                        conns.spawn(async move {
                            let svc = service_fn(move |req| upstream_handle(req, st.clone(), id));
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .with_upgrades()
                                .await;
                        });
                    }
                    Some(_) = conns.join_next() => {}
                }
            }
        });
        Upstream { addr, state, task }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.state
            .seen
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// The requests received whose target starts with `prefix`.
    pub(crate) fn seen_target(&self, prefix: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.target.starts_with(prefix))
            .collect()
    }

    /// Waits (up to 10 s) for a request whose target starts with `prefix`.
    pub(crate) async fn wait_seen(&self, prefix: &str) -> Seen {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.seen_target(prefix).into_iter().next() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "upstream never received a request for {prefix}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How many TCP connections the upstream accepted.
    pub(crate) fn connections(&self) -> usize {
        self.state.conns.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The values of header `name` in an `/echo` JSON answer.
pub(crate) fn echo_header(echo: &Value, name: &str) -> Vec<String> {
    echo["headers"]
        .as_array()
        .map(|hs| {
            hs.iter()
                .filter(|h| h[0].as_str().is_some_and(|k| k.eq_ignore_ascii_case(name)))
                .filter_map(|h| h[1].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The values of header `name` in an `/echo` answer, joined with ", ".
pub(crate) fn echo_header_joined(echo: &Value, name: &str) -> Option<String> {
    let v = echo_header(echo, name);
    (!v.is_empty()).then(|| v.join(", "))
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

/// A whole response, with header names lowercased.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) version: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }

    pub(crate) fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): status {} headers {:?} body {:?}",
                self.status,
                self.headers,
                self.text()
            )
        })
    }

    /// The request id the gateway answered with.
    pub(crate) fn request_id(&self) -> String {
        self.header("x-request-id")
            .unwrap_or_else(|| panic!("no X-Request-ID in {:?}", self.headers))
            .to_string()
    }
}

fn header_pairs(h: &http::HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Collects a hyper response into a [`Reply`].
pub(crate) async fn into_reply(resp: Response<Incoming>) -> Reply {
    let status = resp.status().as_u16();
    let version = format!("{:?}", resp.version());
    let headers = header_pairs(resp.headers());
    let body = within("response body", NET, resp.into_body().collect())
        .await
        .expect("read response body")
        .to_bytes()
        .to_vec();
    Reply {
        status,
        version,
        headers,
        body,
    }
}

fn build_request(
    method: &str,
    uri: &str,
    host: Option<String>,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(uri);
    let has_host = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host"));
    if let (Some(host), false) = (host, has_host) {
        b = b.header("host", host);
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body)).expect("build request")
}

/// Sends one HTTP/1.1 request on a fresh connection; returns the response head
/// (the body still streaming).
pub(crate) async fn h1_send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response<Incoming> {
    let stream = within("connect", NET, TcpStream::connect(addr))
        .await
        .expect("connect to gateway");
    let (mut sender, conn) = within(
        "h1 handshake",
        NET,
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .expect("h1 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = build_request(method, path, Some(addr.to_string()), headers, body.into());
    within(
        &format!("HTTP/1.1 response head for {method} {path}"),
        NET,
        sender.send_request(req),
    )
    .await
    .unwrap_or_else(|e| panic!("HTTP/1.1 {method} {path} failed: {e}"))
}

/// Sends one request with HTTP/2 prior knowledge (h2c) on a fresh connection.
pub(crate) async fn h2_send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response<Incoming> {
    let stream = within("connect", NET, TcpStream::connect(addr))
        .await
        .expect("connect to gateway");
    let (mut sender, conn) = within(
        "h2 handshake",
        NET,
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)),
    )
    .await
    .expect("h2c prior-knowledge handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let uri = format!("http://{addr}{path}");
    let req = build_request(method, &uri, None, headers, body.into());
    within(
        &format!("HTTP/2 response head for {method} {path}"),
        NET,
        sender.send_request(req),
    )
    .await
    .unwrap_or_else(|e| panic!("HTTP/2 {method} {path} failed: {e}"))
}

pub(crate) async fn h1(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    into_reply(h1_send(addr, method, path, headers, body).await).await
}

pub(crate) async fn h2(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    into_reply(h2_send(addr, method, path, headers, body).await).await
}

pub(crate) async fn get(addr: SocketAddr, path: &str) -> Reply {
    h1(addr, "GET", path, &[], Bytes::new()).await
}

pub(crate) async fn get_h(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    h1(addr, "GET", path, headers, Bytes::new()).await
}

/// Reads a body frame by frame, noting when each non-empty data frame arrived
/// (relative to `t0`).
pub(crate) async fn collect_timed(mut body: Incoming, t0: Instant) -> Vec<(Duration, Bytes)> {
    within("streamed body", Duration::from_secs(15), async move {
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("body frame");
            if let Ok(d) = frame.into_data() {
                if !d.is_empty() {
                    out.push((t0.elapsed(), d));
                }
            }
        }
        out
    })
    .await
}

// ---------------------------------------------------------------------------
// Raw TCP
// ---------------------------------------------------------------------------

pub(crate) async fn raw_connect(addr: SocketAddr) -> TcpStream {
    within("connect", NET, TcpStream::connect(addr))
        .await
        .expect("connect to gateway")
}

pub(crate) async fn raw_write(stream: &mut TcpStream, bytes: &[u8]) {
    within("write", NET, stream.write_all(bytes))
        .await
        .expect("write to gateway");
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads more bytes into `buf`; 0 on EOF or a reset (a peer that closes with
/// unread input resets the connection; what was received still counts).
pub(crate) async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>, limit: Duration) -> usize {
    let mut tmp = [0u8; 16384];
    match within("reading from the gateway", limit, stream.read(&mut tmp)).await {
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            n
        }
        Err(_) => 0,
    }
}

/// Reads into `buf` until `done(buf)`; the peer must not close before.
pub(crate) async fn read_until(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    done: impl Fn(&[u8]) -> bool,
) {
    while !done(buf) {
        let n = read_more(stream, buf, NET).await;
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(buf));
    }
}

/// Decodes a complete chunked body; `None` while incomplete.
fn dechunk(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let line_end = find(&data[i..], b"\r\n")? + i;
        let size_str = String::from_utf8_lossy(&data[i..line_end]);
        let size_str = size_str.split(';').next().unwrap_or("").trim().to_string();
        let size = usize::from_str_radix(&size_str, 16).ok()?;
        i = line_end + 2;
        if size == 0 {
            // trailers until an empty line
            loop {
                let e = find(&data[i..], b"\r\n")? + i;
                if e == i {
                    return Some(out);
                }
                i = e + 2;
            }
        }
        if data.len() < i + size + 2 {
            return None;
        }
        out.extend_from_slice(&data[i..i + size]);
        i += size + 2;
    }
}

/// Reads one HTTP/1.x response from a raw connection, each read bounded by `limit`.
pub(crate) async fn raw_read_response_within(stream: &mut TcpStream, limit: Duration) -> Reply {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if read_more(stream, &mut buf, limit).await == 0 {
            panic!(
                "connection closed before a complete response head; received {:?}",
                String::from_utf8_lossy(&buf)
            );
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end - 4]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("").to_string();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    let mut reply = Reply {
        status,
        version,
        headers,
        body: Vec::new(),
    };
    let mut rest = buf[head_end..].to_vec();
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return reply;
    }
    let chunked = reply
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            if let Some(body) = dechunk(&rest) {
                reply.body = body;
                return reply;
            }
            if read_more(stream, &mut rest, limit).await == 0 {
                panic!(
                    "connection closed inside a chunked body: {:?}",
                    String::from_utf8_lossy(&rest)
                );
            }
        }
    }
    if let Some(len) = reply
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        while rest.len() < len {
            if read_more(stream, &mut rest, limit).await == 0 {
                panic!("connection closed after {} of {len} body bytes", rest.len());
            }
        }
        rest.truncate(len);
        reply.body = rest;
        return reply;
    }
    while read_more(stream, &mut rest, limit).await > 0 {}
    reply.body = rest;
    reply
}

pub(crate) async fn raw_read_response(stream: &mut TcpStream) -> Reply {
    raw_read_response_within(stream, NET).await
}

/// Writes `bytes` on a new connection and reads one response.
pub(crate) async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> (Reply, TcpStream) {
    let mut s = raw_connect(addr).await;
    // A gateway that answers early and closes may reset the rest of a big write.
    let _ = within("write", NET, s.write_all(bytes)).await;
    let r = raw_read_response(&mut s).await;
    (r, s)
}

/// Opens a WebSocket through the gateway to the upstream's echoing `/ws`: the `101`
/// response and the connection, a tunnel from here on.
pub(crate) async fn open_websocket(addr: SocketAddr) -> (Reply, TcpStream) {
    let (r, s) = raw_exchange(
        addr,
        b"GET /ws HTTP/1.1\r\nHost: gw.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 101, "{:?} {}", r.headers, r.text());
    (r, s)
}

/// Sends `msg` through an open tunnel to the echoing upstream and checks it comes back.
pub(crate) async fn assert_echoed(s: &mut TcpStream, msg: &[u8]) {
    use tokio::io::AsyncReadExt;
    raw_write(s, msg).await;
    let mut got = vec![0u8; msg.len()];
    within("echoed bytes", NET, s.read_exact(&mut got))
        .await
        .expect("read the echo through the tunnel");
    assert_eq!(got, msg);
}

/// Whether the peer closes the connection within `limit` (EOF or reset).
pub(crate) async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut tmp = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut tmp)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

// ---------------------------------------------------------------------------
// Contract assertions
// ---------------------------------------------------------------------------

/// A hyphenated UUID, any case.
pub(crate) fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A UUID version 4 (random), RFC 4122 variant.
pub(crate) fn is_uuid_v4(s: &str) -> bool {
    is_uuid(s)
        && s.as_bytes()[14] == b'4'
        && matches!(
            s.as_bytes()[19].to_ascii_lowercase(),
            b'8' | b'9' | b'a' | b'b'
        )
}

/// Checks `Server-Timing: gw;dur=<float>, upstream;dur=<float>`; returns both.
pub(crate) fn server_timing(r: &Reply) -> (f64, f64) {
    let all = r.header_all("server-timing");
    assert_eq!(all.len(), 1, "exactly one Server-Timing header: {all:?}");
    let v = all[0];
    let entries: Vec<&str> = v.split(',').map(str::trim).collect();
    assert_eq!(
        entries.len(),
        2,
        "Server-Timing has two metrics (gw, upstream): {v:?}"
    );
    let mut durs = Vec::new();
    for (entry, name) in entries.iter().zip(["gw", "upstream"]) {
        let mut parts = entry.split(';').map(str::trim);
        assert_eq!(parts.next(), Some(name), "Server-Timing {v:?}");
        let dur = parts
            .find_map(|p| p.strip_prefix("dur="))
            .unwrap_or_else(|| panic!("no dur in Server-Timing entry {entry:?}"));
        let d: f64 = dur
            .parse()
            .unwrap_or_else(|_| panic!("dur is not a float in {v:?}"));
        assert!(d.is_finite() && d >= 0.0, "Server-Timing {v:?}");
        durs.push(d);
    }
    (durs[0], durs[1])
}

/// Checks X-Request-ID (a UUID), X-Latency-MS (integer >= 1) and Server-Timing.
/// Returns the X-Latency-MS value.
pub(crate) fn assert_timing_headers(r: &Reply) -> u64 {
    let ids = r.header_all("x-request-id");
    assert_eq!(ids.len(), 1, "exactly one X-Request-ID: {:?}", r.headers);
    assert!(is_uuid(ids[0]), "X-Request-ID is a UUID: {:?}", ids[0]);
    let lat = r.header_all("x-latency-ms");
    assert_eq!(lat.len(), 1, "exactly one X-Latency-MS: {:?}", r.headers);
    let ms: u64 = lat[0]
        .parse()
        .unwrap_or_else(|_| panic!("X-Latency-MS is an integer: {:?}", lat[0]));
    assert!(ms >= 1, "X-Latency-MS is rounded up, never 0");
    server_timing(r);
    ms
}

/// Checks that every default security header is present once with its default value,
/// except those named in `except`, and that Permissions-Policy is absent.
pub(crate) fn assert_security_defaults(r: &Reply, except: &[&str]) {
    for (name, value) in SECURITY_DEFAULTS {
        if except.iter().any(|e| e.eq_ignore_ascii_case(name)) {
            continue;
        }
        assert_eq!(
            r.header_all(name),
            vec![value],
            "security header {name} (status {}, headers {:?})",
            r.status,
            r.headers
        );
    }
    assert!(
        r.header("permissions-policy").is_none(),
        "Permissions-Policy is omitted by default: {:?}",
        r.headers
    );
}

/// Checks the whole response-header contract with default security settings.
/// `hsts`: the expected Strict-Transport-Security value, or `None` for none.
pub(crate) fn assert_contract_headers(r: &Reply, hsts: Option<&str>) {
    assert_timing_headers(r);
    assert_security_defaults(r, &[]);
    match hsts {
        None => assert!(
            r.header("strict-transport-security").is_none(),
            "no HSTS on a plain-HTTP request: {:?}",
            r.headers
        ),
        Some(v) => assert_eq!(
            r.header_all("strict-transport-security"),
            vec![v],
            "HSTS: {:?}",
            r.headers
        ),
    }
}

/// Checks a gateway error: status, `application/problem+json`, the members of
/// test-contract.md, `request_id` equal to X-Request-ID, and the header contract.
pub(crate) fn assert_problem(r: &Reply, status: u16, code: &str) -> Value {
    assert_problem_hsts(r, status, code, None)
}

/// [`assert_problem`] with an expected Strict-Transport-Security value.
pub(crate) fn assert_problem_hsts(r: &Reply, status: u16, code: &str, hsts: Option<&str>) -> Value {
    assert_eq!(
        r.status,
        status,
        "status (headers {:?}, body {:?})",
        r.headers,
        r.text()
    );
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.to_ascii_lowercase()
            .starts_with("application/problem+json"),
        "Content-Type is application/problem+json, got {ct:?}"
    );
    let p = r.json();
    assert_eq!(p["type"], "about:blank", "problem type: {p}");
    assert!(
        p["title"].as_str().is_some_and(|t| !t.is_empty()),
        "problem title: {p}"
    );
    assert_eq!(p["status"], json!(status), "problem status: {p}");
    assert!(p["detail"].is_string(), "problem detail: {p}");
    assert_eq!(p["code"], code, "problem code: {p}");
    let id = r.request_id();
    assert_eq!(
        p["request_id"].as_str(),
        Some(id.as_str()),
        "problem request_id equals X-Request-ID: {p}"
    );
    assert_contract_headers(r, hsts);
    p
}

/// The access-log members of test-contract.md.
pub(crate) const LOG_MEMBERS: [&str; 12] = [
    "ts",
    "request_id",
    "method",
    "route",
    "path",
    "status",
    "latency_ms",
    "upstream_ms",
    "client",
    "policy",
    "decision",
    "bytes_out",
];

pub(crate) fn assert_log_members(line: &Value) {
    for m in LOG_MEMBERS {
        assert!(
            line.get(m).is_some(),
            "access-log line lacks member {m:?}: {line}"
        );
    }
}

/// A plain GET through the gateway still works.
pub(crate) async fn assert_still_serves(gw: &Gateway) {
    let r = get(gw.addr, "/echo/after").await;
    assert_eq!(r.status, 200, "the gateway still serves: {:?}", r.text());
    assert_contract_headers(&r, None);
}

// ---------------------------------------------------------------------------
// Rate limiting: admin calls, metrics, health (added for tests/ratelimit.rs)
// ---------------------------------------------------------------------------

/// Sends `method path` to the admin listener with `Authorization: Bearer <token>`
/// when `token` is given, plus `headers`.
pub(crate) async fn admin_call(
    gw: &Gateway,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut hs: Vec<(&str, &str)> = headers.to_vec();
    if let Some(a) = auth.as_deref() {
        hs.push(("authorization", a));
    }
    h1(gw.admin, method, path, &hs, Bytes::new()).await
}

/// The text of `GET /metrics` on the admin listener.
pub(crate) async fn metrics_text(gw: &Gateway) -> String {
    let r = get(gw.admin, "/metrics").await;
    assert_eq!(r.status, 200, "GET /metrics: {}", r.text());
    r.text()
}

/// The JSON of `GET /health` on the admin listener.
pub(crate) async fn health_json(gw: &Gateway) -> Value {
    let r = get(gw.admin, "/health").await;
    assert_eq!(r.status, 200, "GET /health: {}", r.text());
    r.json()
}

/// One sample of a Prometheus text exposition: name, labels, value.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) value: f64,
}

fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        let mut val = String::new();
        let mut in_val = false;
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            if in_val {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            val.push(match n {
                                'n' => '\n',
                                other => other,
                            });
                        }
                    }
                    '"' => {
                        labels.push((key.trim().to_string(), std::mem::take(&mut val)));
                        key.clear();
                        in_val = false;
                    }
                    _ => val.push(c),
                }
            } else {
                match c {
                    '}' => {
                        end = Some(i);
                        break;
                    }
                    '=' => {}
                    '"' => in_val = true,
                    ',' => key.clear(),
                    _ => key.push(c),
                }
            }
        }
        rest = &inner[end? + 1..];
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Every sample of a Prometheus text exposition.
pub(crate) fn metric_samples(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_sample).collect()
}

/// The sum of the samples named `name` that carry all of `labels` (other labels
/// are ignored); `None` when there is none.
pub(crate) fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = metric_samples(text)
        .into_iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|s| s.value)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

pub(crate) mod redis;
