//! Black-box tests of the process around the proxy: the admin listener, `check`,
//! environment overrides, graceful shutdown on SIGTERM and `demo`.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

async fn setup() -> (Upstream, Gateway) {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), "", "")).await;
    (up, gw)
}

/// Polls `path` on `addr` until `want(reply)` holds (up to `limit`).
async fn poll_until(
    addr: SocketAddr,
    path: &str,
    limit: Duration,
    want: impl Fn(&Reply) -> bool,
) -> Reply {
    let deadline = Instant::now() + limit;
    loop {
        let r = get(addr, path).await;
        if want(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never reached the expected state; last: {} {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_health_endpoints() {
    let (up, gw) = setup().await;
    let r = get(gw.admin, "/healthz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"status": "ok"}));

    let r = poll_until(gw.admin, "/readyz", Duration::from_secs(10), |r| {
        r.status == 200
    })
    .await;
    assert_eq!(r.json()["status"], "ready");

    let r = poll_until(gw.admin, "/health", Duration::from_secs(10), |r| {
        r.status == 200 && r.json()["upstream"]["reachable"] == true
    })
    .await;
    let h = r.json();
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"), "{h}");
    assert!(h["uptime_s"].is_u64(), "uptime_s: {h}");
    assert_eq!(
        h["upstream"]["url"]
            .as_str()
            .map(|u| u.trim_end_matches('/')),
        Some(up.url().as_str()),
        "{h}"
    );
    assert_eq!(h["upstream"]["circuit"], "closed", "{h}");
    // The admin endpoints are not proxied, and the proxy does not serve them.
    assert!(up.seen_target("/healthz").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_upstream_reachability() {
    let port = dead_port();
    let gw = Gateway::start(&config(&format!("http://127.0.0.1:{port}"), "", "")).await;
    let r = poll_until(gw.admin, "/readyz", Duration::from_secs(10), |r| {
        r.status == 503
    })
    .await;
    let body = r.json();
    assert_eq!(body["status"], "unready", "{body}");
    assert!(
        body["reasons"].as_array().is_some_and(|a| !a.is_empty()),
        "reasons: {body}"
    );
    let r = poll_until(gw.admin, "/health", Duration::from_secs(10), |r| {
        r.json()["upstream"]["reachable"] == false
    })
    .await;
    assert!(r.json()["version"].is_string());
    assert_eq!(get(gw.admin, "/healthz").await.status, 200);

    // Recovers without traffic once the upstream listens.
    let Ok(_up) = Upstream::start_on(port).await else {
        eprintln!("port {port} was taken meanwhile; skipping the recovery half");
        return;
    };
    let r = poll_until(gw.admin, "/readyz", Duration::from_secs(10), |r| {
        r.status == 200
    })
    .await;
    assert_eq!(r.json()["status"], "ready");
}

/// Parses Prometheus text exposition samples of metric family lines starting
/// with `prefix`: (name, labels, value).
fn samples(text: &str, prefix: &str) -> Vec<(String, HashMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || !line.starts_with(prefix) {
            continue;
        }
        let (name, labels, rest) = match line.find('{') {
            Some(i) => {
                let close = line.rfind('}').expect("closing brace");
                (&line[..i], &line[i + 1..close], &line[close + 1..])
            }
            None => {
                let i = line.find(' ').unwrap_or(line.len());
                (&line[..i], "", &line[i..])
            }
        };
        let value: f64 = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
        let mut map = HashMap::new();
        let mut chars = labels.chars().peekable();
        loop {
            let key: String = chars
                .by_ref()
                .skip_while(|c| *c == ',' || c.is_whitespace())
                .take_while(|c| *c != '=')
                .collect();
            if key.is_empty() {
                break;
            }
            if chars.next() != Some('"') {
                break;
            }
            let mut val = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            val.push(n);
                        }
                    }
                    '"' => break,
                    c => val.push(c),
                }
            }
            map.insert(key.trim().to_string(), val);
        }
        out.push((name.to_string(), map, value));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_use_route_patterns_never_raw_paths() {
    let (_up, gw) = setup().await;
    let marker = "raw-path-marker-7731";
    assert_eq!(
        get(gw.addr, &format!("/echo/{marker}?q=1")).await.status,
        200
    );
    assert_eq!(get(gw.addr, "/echo/another-raw-path").await.status, 200);
    assert_eq!(get(gw.addr, "/status/404").await.status, 404);
    assert_eq!(h2(gw.addr, "GET", "/echo/h2", &[], "").await.status, 200);

    let count = |text: &str, status: &str| -> f64 {
        samples(text, "portcullis_requests_total")
            .into_iter()
            .filter(|(n, l, _)| {
                n == "portcullis_requests_total"
                    && l.get("route").map(String::as_str) == Some("unmatched")
                    && l.get("method").map(String::as_str) == Some("GET")
                    && l.get("status").map(String::as_str) == Some(status)
            })
            .map(|(_, _, v)| v)
            .sum()
    };
    let r = poll_until(gw.admin, "/metrics", Duration::from_secs(10), |r| {
        let t = r.text();
        r.status == 200 && count(&t, "200") >= 3.0 && count(&t, "404") >= 1.0
    })
    .await;
    let text = r.text();
    assert!(!text.contains(marker), "a raw path leaked into the metrics");
    assert!(
        !text.contains("/echo"),
        "a raw path leaked into the metrics"
    );
    assert!(
        !text.contains("/status/404"),
        "a raw path leaked into the metrics"
    );
    for (name, labels, _) in samples(&text, "portcullis_") {
        if let Some(route) = labels.get("route") {
            assert_eq!(route, "unmatched", "{name} {labels:?}");
        }
    }
    for family in [
        "portcullis_request_duration_seconds",
        "portcullis_upstream_duration_seconds",
    ] {
        let s = samples(&text, family);
        assert!(
            s.iter().any(|(n, l, _)| n == &format!("{family}_bucket")
                && l.get("route").map(String::as_str) == Some("unmatched")),
            "histogram {family} with route=\"unmatched\":\n{text}"
        );
        assert!(
            s.iter()
                .any(|(n, _, v)| n == &format!("{family}_count") && *v >= 4.0),
            "histogram {family} counts the requests:\n{text}"
        );
    }
    let inflight = samples(&text, "portcullis_inflight_requests");
    assert!(
        inflight
            .iter()
            .any(|(n, _, v)| n == "portcullis_inflight_requests" && v.is_finite()),
        "portcullis_inflight_requests gauge:\n{text}"
    );
}

const CHECK_OK: &str = "[server]\n\
    listen = \"127.0.0.1:0\"\n\
    upstream = \"http://127.0.0.1:4321\"\n\
    request_timeout = \"5s\"\n\
    trusted_proxies = [\"10.0.0.0/8\"]\n\
    \n\
    [admin]\n\
    listen = \"127.0.0.1:0\"\n";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_accepts_a_valid_config() {
    let (out, _path, _dir) = run_check(
        CHECK_OK,
        &[
            ("PORTCULLIS_ADMIN_TOKEN", "t0k3n"),
            ("PORTCULLIS_FOO", "bar"),
        ],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "check failed:\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("127.0.0.1:4321"),
        "the resolved configuration is printed: {stdout}"
    );

    // Overrides are applied to what check resolves.
    let (out, _path, _dir) = run_check(
        CHECK_OK,
        &[("PORTCULLIS_SERVER__UPSTREAM", "http://127.0.0.1:5432")],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("127.0.0.1:5432"),
        "override applied: {stdout}"
    );
}

/// Expects `check` to fail with `FILE:LINE:COL: message`; returns (col, message).
async fn check_error(toml: &str, line: usize, needle: &str) -> (usize, String) {
    let (out, path, _dir) = run_check(toml, &[]).await;
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "check exits 1 on {needle:?}; stderr: {stderr}"
    );
    let prefix = format!("{}:", path.display());
    let found = stderr.lines().find_map(|l| {
        let rest = l.trim_start().strip_prefix(&prefix)?;
        let mut parts = rest.splitn(3, ':');
        let ln: usize = parts.next()?.trim().parse().ok()?;
        let col: usize = parts.next()?.trim().parse().ok()?;
        let msg = parts.next()?.trim().to_string();
        Some((ln, col, msg))
    });
    let Some((ln, col, msg)) = found else {
        panic!("no `{prefix}LINE:COL: message` line in stderr:\n{stderr}");
    };
    assert_eq!(ln, line, "line of the error for {needle:?}: {stderr}");
    assert!(col >= 1, "columns count from 1: {stderr}");
    assert!(!msg.is_empty(), "a message: {stderr}");
    assert!(
        msg.to_ascii_lowercase()
            .contains(&needle.to_ascii_lowercase()),
        "the message names {needle:?}: {msg}"
    );
    (col, msg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_errors_as_file_line_column() {
    let head = "[server]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://127.0.0.1:4321\"\n";
    // unknown key, at the start of line 4
    let (col, _) = check_error(&format!("{head}bogus_key = 1\n"), 4, "bogus_key").await;
    assert_eq!(col, 1, "the unknown key starts at column 1");
    // unknown key in another table
    let (col, _) = check_error(
        &format!("{head}\n[admin]\nlisten = \"127.0.0.1:0\"\nnot_a_key = true\n"),
        7,
        "not_a_key",
    )
    .await;
    assert_eq!(col, 1);
    // bad duration on line 4
    check_error(&format!("{head}request_timeout = \"soon\"\n"), 4, "").await;
    // bad CIDR on line 4
    check_error(
        &format!("{head}trusted_proxies = [\"10.0.0.0/99\"]\n"),
        4,
        "",
    )
    .await;
    // bad address on line 2
    check_error(
        "[server]\nlisten = \"not an address\"\nupstream = \"http://127.0.0.1:4321\"\n",
        2,
        "",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_override_naming_no_key_is_an_error() {
    let (out, _path, _dir) = run_check(CHECK_OK, &[("PORTCULLIS_SERVER__NOPE", "1")]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("env PORTCULLIS_SERVER__NOPE"),
        "`env PORTCULLIS_X__Y: message`, got: {stderr}"
    );
    let (out, _path, _dir) = run_check(CHECK_OK, &[("PORTCULLIS_NOSECTION__LISTEN", "1")]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("env PORTCULLIS_NOSECTION__LISTEN"));
    // A bad value through the environment is an error too.
    let (out, _path, _dir) =
        run_check(CHECK_OK, &[("PORTCULLIS_SERVER__REQUEST_TIMEOUT", "soon")]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("PORTCULLIS_SERVER__REQUEST_TIMEOUT"));

    // serve refuses to start with it as well.
    let dir = TempDir::new("serve-bad-env");
    let path = dir.write("portcullis.toml", CHECK_OK);
    let mut cmd = portcullis_command();
    cmd.arg("serve")
        .arg("--config")
        .arg(&path)
        .env("PORTCULLIS_SERVER__NOPE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let out = within(
        "serve with a bad override",
        Duration::from_secs(15),
        cmd.output(),
    )
    .await
    .unwrap();
    assert!(
        !out.status.success(),
        "serve must not run with an override naming no key"
    );
    assert!(text(&out.stderr).contains("PORTCULLIS_SERVER__NOPE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_overrides_apply_to_serve() {
    let up = Upstream::start().await;
    let dead = format!("http://127.0.0.1:{}", dead_port());
    let gw = Gateway::start_with_env(
        &config(&dead, "", ""),
        &[
            ("PORTCULLIS_SERVER__UPSTREAM", &up.url()),
            ("PORTCULLIS_SERVER__TRUSTED_PROXIES", "[\"127.0.0.1/32\"]"),
            (
                "PORTCULLIS_HEADERS__SECURITY__x_frame_options",
                "SAMEORIGIN",
            ),
            ("PORTCULLIS_ADMIN_TOKEN", "not-configuration"),
            ("PORTCULLIS_FOO", "bar"),
        ],
    )
    .await;
    let r = get_h(gw.addr, "/echo/env", &[("x-forwarded-proto", "https")]).await;
    assert_eq!(r.status, 200, "the upstream override applies: {}", r.text());
    assert_eq!(
        r.header_all("x-frame-options"),
        vec!["SAMEORIGIN"],
        "a nested override, names matched without regard to case"
    );
    assert_eq!(
        r.header_all("strict-transport-security"),
        vec![HSTS_DEFAULT],
        "a TOML array override (trusted_proxies) applies"
    );
    assert_eq!(echo_header(&r.json(), "x-forwarded-proto"), vec!["https"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_inflight_request_finish_then_exits_0() {
    let up = Upstream::start().await;
    let mut gw = Gateway::start(&config(&up.url(), "shutdown_grace = \"10s\"", "")).await;
    let addr = gw.addr;
    let start = Instant::now();
    let inflight = tokio::spawn(async move { get(addr, "/slow?ms=1500").await });
    up.wait_seen("/slow").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    gw.sigterm();
    let r = within("the in-flight request", Duration::from_secs(10), inflight)
        .await
        .expect("request task");
    assert_eq!(
        r.status,
        200,
        "the in-flight request completes: {}",
        r.text()
    );
    assert_eq!(r.text(), "slow done");
    assert!(start.elapsed() >= Duration::from_millis(1400));
    assert_contract_headers(&r, None);
    let status = gw.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit code after a graceful drain; stderr:\n{}",
        gw.stderr_lines().join("\n")
    );
    let line = gw.wait_log(&r.request_id()).await;
    assert_eq!(line["status"], 200);
}

/// Keep-alive connections waiting for their next request hold no request: SIGTERM closes
/// them at once (every serving thread's), and the drain does not wait out its grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_idle_keep_alive_connections_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start().await;
    let mut gw = Gateway::start(&config(&up.url(), "shutdown_grace = \"20s\"", "")).await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        let mut conn = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        conn.write_all(b"GET /status/200 HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let mut head = Vec::new();
        let mut chunk = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the gateway closed before answering");
            head.extend_from_slice(&chunk[..n]);
        }
        assert!(head.starts_with(b"HTTP/1.1 200"), "{}", text(&head));
        idle.push(conn);
    }
    let start = Instant::now();
    gw.sigterm();
    for mut conn in idle {
        let mut rest = Vec::new();
        within(
            "an idle connection to close",
            Duration::from_secs(5),
            conn.read_to_end(&mut rest),
        )
        .await
        .unwrap();
    }
    let status = gw.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(0));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "exited after {:?}: the drain waited for idle connections",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_for_an_open_websocket_until_it_closes() {
    use tokio::io::AsyncWriteExt;
    let up = Upstream::start().await;
    let mut gw = Gateway::start(&config(&up.url(), "shutdown_grace = \"10s\"", "")).await;
    let (_, mut s) = open_websocket(gw.addr).await;
    gw.sigterm();
    // Long enough for a gateway that does not wait for the tunnel to have exited.
    tokio::time::sleep(Duration::from_millis(700)).await;
    // The tunnel still carries bytes during the drain.
    assert_echoed(&mut s, b"still open after SIGTERM").await;
    let closed_at = Instant::now();
    s.shutdown().await.expect("close the WebSocket");
    let status = gw.wait_exit(Duration::from_secs(8)).await;
    assert_eq!(status.code(), Some(0), "{}", gw.stderr_lines().join("\n"));
    assert!(
        closed_at.elapsed() < Duration::from_secs(5),
        "the gateway exits once the tunnel closes, not at the end of the grace period"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_prints_a_curl_url_that_answers() {
    let dir = TempDir::new("demo");
    let mut cmd = portcullis_command();
    cmd.arg("demo")
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = ChildGuard(cmd.spawn().expect("spawn portcullis demo"));
    let stdout = child.0.stdout.take().unwrap();
    let stderr = child.0.stderr.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || for _ in BufReader::new(stderr).lines() {});

    fn url_in(line: &str) -> Option<String> {
        let i = line.find("http://127.0.0.1:")?;
        let url: String = line[i..]
            .chars()
            .take_while(|c| !c.is_whitespace() && !matches!(c, '\'' | '"' | '`'))
            .collect();
        Some(url)
    }
    let mut seen = Vec::new();
    let mut candidates = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut settle: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let until = settle.unwrap_or(deadline).min(deadline);
        if now >= until {
            break;
        }
        match tokio::time::timeout(until - now, rx.recv()).await {
            Ok(Some(line)) => {
                if line.contains("curl") {
                    if let Some(url) = url_in(&line) {
                        let get_like = !line.contains("-X")
                            && !line.contains(" -d")
                            && !line.contains("--data");
                        candidates.push((get_like, url));
                        settle.get_or_insert(Instant::now() + Duration::from_secs(1));
                    }
                }
                seen.push(line);
            }
            Ok(None) | Err(_) => break,
        }
    }
    let pick = candidates
        .iter()
        .find(|(g, u)| *g && u.contains("/api/items"))
        .or_else(|| candidates.iter().find(|(g, _)| *g))
        .map(|(_, u)| u.clone())
        .unwrap_or_else(|| {
            panic!(
                "demo printed no curl line with http://127.0.0.1:PORT/...; stdout:\n{}",
                seen.join("\n")
            )
        });
    let rest = pick.strip_prefix("http://").unwrap();
    let slash = rest.find('/').unwrap_or(rest.len());
    let addr: SocketAddr = rest[..slash].parse().expect("demo address");
    let path = if slash < rest.len() {
        &rest[slash..]
    } else {
        "/"
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let conn =
            tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr));
        if let Ok(Ok(_)) = conn.await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "demo gateway at {addr} unreachable"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = get(addr, path).await;
    assert_eq!(r.status, 200, "GET {pick}: {}", r.text());
    assert_timing_headers(&r);
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    if path.starts_with("/api/items") {
        let _: Value = r.json();
    }
}

/// A listen address someone else holds: one readable line naming it, a non-zero exit,
/// at once (not a retry loop, not a panic).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_listen_address_is_one_line_and_a_failed_exit() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = TempDir::new("taken");
    let path = dir.write(
        "portcullis.toml",
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nupstream = \"http://127.0.0.1:{}\"\n\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n",
            dead_port()
        ),
    );
    let out = within(
        "serve on a taken port",
        Duration::from_secs(10),
        tokio::process::Command::from(portcullis_command())
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .output(),
    )
    .await
    .unwrap();
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].contains(&format!("cannot bind [server] listen 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    drop(taken);
}
