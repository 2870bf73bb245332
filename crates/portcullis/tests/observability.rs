//! Issue 5 through the real binary: SLO tracking (`/admin/slo`, the SLO gauges), the
//! `slo rules` / `slo dashboard` commands, and the redaction corpus: requests carrying
//! secrets and personal data of many kinds, whose traces in the captured stdout and
//! stderr of the gateway must hold none of them, and still every request id.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bytes::Bytes;
use serde_json::Value;
use std::time::Duration;
use support::*;

const TOKEN: &str = "admin-token-for-tests";

fn slo_config(upstream: &str) -> String {
    config(
        upstream,
        "",
        r#"
[[slo]]
name = "api"
routes = ["/status/*"]
objective = 99.0

[[slo]]
name = "latency"
routes = ["/slow"]
objective = 90.0
latency = "50ms"
window = "1d"
"#,
    )
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[tokio::test]
async fn slo_budget_and_burn_rates_over_admin_and_metrics() {
    let up = Upstream::start().await;
    let gw =
        Gateway::start_with_env(&slo_config(&up.url()), &[("PORTCULLIS_ADMIN_TOKEN", TOKEN)]).await;

    // api: 7 × 200 and 1 × 429 are good (a 429 is the service doing its job), 2 × 503
    // are bad: 2 bad in 10 against the 1 % allowed is a burn of 20, and a budget of
    // 1 − 20 = −19 (overspent nineteen times over).
    for _ in 0..7 {
        assert_eq!(get(gw.addr, "/status/200").await.status, 200);
    }
    assert_eq!(get(gw.addr, "/status/429").await.status, 429);
    for _ in 0..2 {
        assert_eq!(get(gw.addr, "/status/503").await.status, 503);
    }
    // latency: one fast, one slower than 50 ms: 1 bad in 2 against 10 % allowed is 5.
    assert_eq!(get(gw.addr, "/slow?ms=0").await.status, 200);
    assert_eq!(get(gw.addr, "/slow?ms=150").await.status, 200);
    // Outside every SLO: not counted anywhere.
    assert_eq!(get(gw.addr, "/echo").await.status, 200);

    let denied = admin_call(&gw, "GET", "/admin/slo", None, &[]).await;
    assert_admin_problem(&denied, 401, "unauthorized");
    let wrong = admin_call(&gw, "GET", "/admin/slo", Some("nope"), &[]).await;
    assert_admin_problem(&wrong, 401, "unauthorized");

    // The access log is written after the response: wait until all 12 are recorded.
    let mut body = Value::Null;
    for _ in 0..100 {
        let r = admin_call(&gw, "GET", "/admin/slo", Some(TOKEN), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        body = r.json();
        let totals: Vec<u64> = body["slos"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["total"].as_u64().unwrap())
            .collect();
        if totals == [10, 2] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let slos = body["slos"].as_array().expect("slos array");
    assert_eq!(slos.len(), 2, "{body}");
    let api = &slos[0];
    assert_eq!(api["name"], "api");
    assert_eq!(api["objective"], 99.0);
    assert_eq!(api["window_seconds"], 30 * 86_400);
    assert_eq!(
        (api["good"].as_u64(), api["total"].as_u64()),
        (Some(8), Some(10))
    );
    assert!(
        close(api["error_budget_remaining"].as_f64().unwrap(), -19.0),
        "{api}"
    );
    let windows = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"];
    for w in windows {
        let rate = api["burn_rates"][w].as_f64().unwrap_or(f64::NAN);
        assert!(close(rate, 20.0), "api burn rate over {w}: {api}");
    }
    let latency = &slos[1];
    assert_eq!(latency["name"], "latency");
    assert_eq!(latency["window_seconds"], 86_400);
    assert_eq!(
        (latency["good"].as_u64(), latency["total"].as_u64()),
        (Some(1), Some(2))
    );
    assert!(close(
        latency["error_budget_remaining"].as_f64().unwrap(),
        -4.0
    ));
    assert!(close(latency["burn_rates"]["1h"].as_f64().unwrap(), 5.0));

    let text = metrics_text(&gw).await;
    let budget = metric_value(
        &text,
        "portcullis_slo_error_budget_remaining",
        &[("slo", "api")],
    );
    assert!(budget.is_some_and(|b| close(b, -19.0)), "{text}");
    for w in windows {
        let rate = metric_value(
            &text,
            "portcullis_slo_burn_rate",
            &[("slo", "api"), ("window", w)],
        );
        assert!(rate.is_some_and(|r| close(r, 20.0)), "window {w}:\n{text}");
    }
    let rate = metric_value(
        &text,
        "portcullis_slo_burn_rate",
        &[("slo", "latency"), ("window", "5m")],
    );
    assert!(rate.is_some_and(|r| close(r, 5.0)), "{text}");
    // The circuit gauge names the upstream; there is no breaker yet, so it is closed.
    let circuit = metric_value(
        &text,
        "portcullis_circuit_state",
        &[("upstream", &up.url())],
    );
    assert_eq!(circuit, Some(0.0), "{text}");
}

#[tokio::test]
async fn gateway_made_failures_spend_the_budget_and_client_errors_do_not() {
    let slo = "[[slo]]\nname = \"all\"\nroutes = [\"/*\"]\nobjective = 99.0\n";
    let up = Upstream::start().await;
    let live = Gateway::start_with_env(
        &config(&up.url(), "", slo),
        &[("PORTCULLIS_ADMIN_TOKEN", TOKEN)],
    )
    .await;
    for path in ["/status/404", "/status/400", "/status/200"] {
        get(live.addr, path).await;
    }
    let dead_upstream = format!("http://127.0.0.1:{}", dead_port());
    let dead = Gateway::start_with_env(
        &config(&dead_upstream, "", slo),
        &[("PORTCULLIS_ADMIN_TOKEN", TOKEN)],
    )
    .await;
    for _ in 0..2 {
        assert_eq!(get(dead.addr, "/api/x").await.status, 502);
    }
    for (gw, want) in [(&live, (3, 3)), (&dead, (0, 2))] {
        let mut got = (u64::MAX, u64::MAX);
        for _ in 0..100 {
            let body = admin_call(gw, "GET", "/admin/slo", Some(TOKEN), &[])
                .await
                .json();
            let s = &body["slos"][0];
            got = (
                s["good"].as_u64().unwrap_or(0),
                s["total"].as_u64().unwrap_or(0),
            );
            if got.1 == want.1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(got, want, "(good, total)");
    }
}

#[tokio::test]
async fn admin_slo_with_no_slos_is_an_empty_list() {
    let up = Upstream::start().await;
    let gw = Gateway::start_with_env(
        &config(&up.url(), "", ""),
        &[("PORTCULLIS_ADMIN_TOKEN", TOKEN)],
    )
    .await;
    let r = admin_call(&gw, "GET", "/admin/slo", Some(TOKEN), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"slos": []}));
    let post = admin_call(&gw, "POST", "/admin/slo", Some(TOKEN), &[]).await;
    assert_admin_problem(&post, 405, "method_not_allowed");
}

/// An admin listener's problem+json answer.
fn assert_admin_problem(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.json()["code"], code, "{}", r.text());
}

/// Runs `portcullis slo SUBCOMMAND --config FILE`.
fn slo_command(sub: &str, toml: &str) -> std::process::Output {
    let dir = TempDir::new("slo-cli");
    let path = dir.write("portcullis.toml", toml);
    portcullis_command()
        .args(["slo", sub, "--config"])
        .arg(&path)
        .output()
        .expect("run portcullis slo")
}

#[test]
fn slo_rules_and_dashboard_commands() {
    let toml = slo_config("http://127.0.0.1:8000");
    let out = slo_command("rules", &toml);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "groups:",
        "portcullis_slo:error_ratio:rate5m",
        "portcullis_slo:error_ratio:rate3d",
        "slo: \"api\"",
        "slo: \"latency\"",
        "14.4",
        "severity: page",
        "severity: ticket",
    ] {
        assert!(yaml.contains(needle), "rules lack {needle:?}:\n{yaml}");
    }
    // promtool is what consumes them (scripts/test installs it).
    let dir = TempDir::new("promtool");
    let file = dir.write("rules.yml", &yaml);
    let check = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool must be installed (apt-get install prometheus; scripts/test does)");
    assert!(
        check.status.success(),
        "promtool check rules:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    let out = slo_command("dashboard", &toml);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dash: Value = serde_json::from_slice(&out.stdout).expect("dashboard is JSON");
    let queries = dash.to_string();
    for needle in [
        "portcullis_requests_total",
        "portcullis_request_duration_seconds_bucket",
        "portcullis_ratelimit_decisions_total",
        "portcullis_slo_error_budget_remaining",
    ] {
        assert!(queries.contains(needle), "dashboard lacks {needle}");
    }
    assert!(dash["panels"].as_array().is_some_and(|p| p.len() >= 6));

    // A bad configuration is one positioned line and exit 1, as for `check`.
    let out = slo_command(
        "rules",
        "[[slo]]\nname = \"x\"\nroutes = [\"/a\"]\nobjective = 100\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("portcullis.toml:4:"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

// ---------------------------------------------------------------------------
// The redaction corpus
// ---------------------------------------------------------------------------

/// Secrets and personal data, one per kind, each as a client would send it. None of
/// these strings may appear anywhere in what the gateway writes.
const CORPUS: &[(&str, &str)] = &[
    ("email", "ann.lee@example.com"),
    ("email, percent-encoded", "bob.smith%40example.org"),
    ("bearer token", "Zk9x2LmQp7Rt4Vw8Yb3Nc6Hd"),
    (
        "jwt",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ),
    ("visa, grouped", "4111-1111-1111-1111"),
    ("mastercard", "5555555555554444"),
    ("amex", "378282246310005"),
    ("aws access key id", "AKIAIOSFODNN7EXAMPLE"),
    ("aws secret key", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("stripe secret key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("github token", "ghp_16C7e42F292c6912E7710c838347Ae178B4a"),
    ("slack bot token", "xoxb-2048-1024-zZq8fWq3pL0mN7vB4cX9"),
    ("gitlab token", "glpat-x7Kd9Qw2Lm5Np8Rt3Vz6"),
    ("google api key", "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"),
    ("sendgrid key", "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"),
    ("npm token", "npm_Abcdef0123456789Abcdef0123456789Abcd"),
    ("hugging face token", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"),
    ("anthropic key", "sk-ant-api03-Xy7Qw9Lp2Mn4Rt6Vb8Zc1Df3Gh5Jk"),
    ("openai project key", "sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56"),
    ("pypi token", "pypi-AgEIcHlwaS5vcmcCJGZmZjAwYTk4LTk1ZTEtNDU"),
    ("shopify token", "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"),
    ("digitalocean token", "dop_v1_8f3a2b1c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f80"),
    ("webhook secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    ("query password", "hunter2-Correct-Horse"),
    ("query api_key", "q-api-key-7781-secret"),
    ("basic credentials", "dXNlcjpzM2NyZXQtcGFzcw=="),
    ("cookie", "sess-8f14e45fceea167a5a36dedd4bea2543"),
    ("x-api-key", "live-key-0a1b2c3d4e5f"),
];

fn secret(kind: &str) -> &'static str {
    CORPUS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, s)| *s)
        .unwrap_or_else(|| panic!("no corpus entry {kind}"))
}

/// The request targets of the corpus: every value-detected secret in a path or a query
/// value, and the by-name ones in their parameters.
fn corpus_targets() -> Vec<String> {
    let mut targets = Vec::new();
    for (kind, value) in CORPUS {
        match *kind {
            "query password" => targets.push(format!("/echo/login?user=x&password={value}")),
            "query api_key" => targets.push(format!("/echo/data?api_key={value}&page=2")),
            // Without its name an AWS secret is 40 characters like any other.
            "aws secret key" => {
                targets.push(format!("/echo/cfg?aws_secret_access_key={value}&region=eu"));
            }
            "basic credentials" | "cookie" | "x-api-key" | "bearer token" => {}
            "visa, grouped" | "mastercard" | "amex" => {
                targets.push(format!("/echo/orders/{value}"));
            }
            _ => targets.push(format!("/echo/search?q={value}&n=1")),
        }
    }
    targets
}

/// Headers every corpus request carries: credentials that must never be logged.
fn corpus_headers() -> Vec<(&'static str, String)> {
    vec![
        (
            "authorization",
            format!("Bearer {}", secret("bearer token")),
        ),
        ("cookie", format!("session={}", secret("cookie"))),
        ("x-api-key", secret("x-api-key").to_owned()),
        (
            "proxy-authorization",
            format!("Basic {}", secret("basic credentials")),
        ),
        (
            "referer",
            format!("https://app.example/?token={}", secret("jwt")),
        ),
    ]
}

/// Everything the process wrote, stdout and stderr.
fn captured(gw: &Gateway) -> String {
    let mut all = gw.stdout_lines();
    all.extend(gw.stderr_lines());
    all.join("\n")
}

fn assert_no_secret(out: &str) {
    assert!(
        CORPUS.len() >= 20,
        "the corpus must cover at least 20 kinds"
    );
    for (kind, value) in CORPUS {
        assert!(
            !out.contains(value),
            "{kind} ({value}) leaked into the gateway's output:\n{out}"
        );
    }
}

/// Sends one raw request head and returns the response's request id.
async fn raw_request_id(gw: &Gateway, head: &str) -> String {
    let (reply, _stream) = raw_exchange(gw.addr, head.as_bytes()).await;
    assert!(
        reply.status >= 400,
        "expected a rejection, got {}",
        reply.status
    );
    reply.request_id()
}

/// Waits until every id shows in the captured output.
async fn wait_ids(gw: &Gateway, ids: &[String]) -> String {
    for _ in 0..200 {
        let out = captured(gw);
        if ids.iter().all(|id| out.contains(id.as_str())) {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = captured(gw);
    let missing: Vec<_> = ids.iter().filter(|id| !out.contains(id.as_str())).collect();
    panic!("request ids {missing:?} never appeared in the output:\n{out}");
}

#[tokio::test]
async fn redaction_corpus_leaves_no_secret_in_any_output() {
    let up = Upstream::start().await;
    let toml = config(
        &up.url(),
        "request_timeout = \"300ms\"\nmax_header_bytes = 4096",
        "[log]\nredaction = \"hash\"\n",
    );
    let gw = Gateway::start_with_env(&toml, &[("PORTCULLIS_LOG_HASH_KEY", "corpus-key")]).await;
    let headers = corpus_headers();
    let hs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let mut ids = Vec::new();

    // Proxied requests: the access log's path and client.
    for target in corpus_targets() {
        let r = h1(gw.addr, "GET", &target, &hs, Bytes::new()).await;
        assert_eq!(r.status, 200, "{target}");
        ids.push(r.request_id());
    }
    // A POST whose body holds secrets: bodies are never logged.
    let body = format!(
        "{{\"email\":\"{}\",\"card\":\"{}\"}}",
        secret("email"),
        secret("mastercard")
    );
    let r = h1(gw.addr, "POST", "/echo/signup", &hs, Bytes::from(body)).await;
    ids.push(r.request_id());

    // Errors the gateway logs: an upstream timeout (504) ...
    let slow = format!(
        "/slow?ms=2000&token={}&who={}",
        secret("jwt"),
        secret("email")
    );
    let r = h1(gw.addr, "GET", &slow, &hs, Bytes::new()).await;
    assert_eq!(r.status, 504);
    ids.push(r.request_id());
    // ... malformed request heads (400), whose target is logged as a diagnostic ...
    let bad_length = format!(
        "GET /echo/x?access_token={}&mail={} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {}\r\nContent-Length: nope\r\n\r\n",
        secret("github token"),
        secret("email"),
        secret("bearer token")
    );
    ids.push(raw_request_id(&gw, &bad_length).await);
    let no_host = format!(
        "GET /echo/{}/{} HTTP/1.1\r\nX-Api-Key: {}\r\n\r\n",
        secret("aws access key id"),
        secret("visa, grouped"),
        secret("x-api-key")
    );
    ids.push(raw_request_id(&gw, &no_host).await);
    // ... and a head too large (431), cut off after the target.
    let huge = format!(
        "GET /echo/y?key={}&card={} HTTP/1.1\r\nHost: a\r\nX-Pad: {}\r\n\r\n",
        secret("stripe secret key"),
        secret("amex"),
        "p".repeat(5000)
    );
    ids.push(raw_request_id(&gw, &huge).await);

    // And a gateway whose upstream is down: 502, logged with its target.
    let dead = config(
        &format!("http://127.0.0.1:{}", dead_port()),
        "",
        "[log]\nredaction = \"hash\"\n",
    );
    let gw_dead =
        Gateway::start_with_env(&dead, &[("PORTCULLIS_LOG_HASH_KEY", "corpus-key")]).await;
    let down = format!(
        "/echo/pay?password={}&card={}&mail={}",
        secret("query password"),
        secret("mastercard"),
        secret("email")
    );
    let r = h1(gw_dead.addr, "GET", &down, &hs, Bytes::new()).await;
    assert_eq!(r.status, 502);
    let dead_id = r.request_id();

    let out = wait_ids(&gw, &ids).await;
    assert_no_secret(&out);
    let dead_out = wait_ids(&gw_dead, std::slice::from_ref(&dead_id)).await;
    assert_no_secret(&dead_out);

    // The errors were logged on stderr with their (redacted) targets.
    let diagnostics = gw.wait_stderr("rejected a malformed request head").await;
    assert!(
        diagnostics.contains("/echo/x?access_token=h:"),
        "{diagnostics}"
    );
    assert_no_secret(&diagnostics);
    let dead_diagnostics = gw_dead.wait_stderr("request failed at the gateway").await;
    assert_no_secret(&dead_diagnostics);

    // Hash mode: one secret, one token, on every line and across both processes (they
    // share the key); different secrets, different tokens.
    let email_hashes: Vec<String> = out
        .lines()
        .chain(dead_out.lines())
        .flat_map(|line| hashes_after(line, "mail="))
        .chain(
            out.lines()
                .flat_map(|line| hashes_after(line, "q="))
                .take(1),
        )
        .collect();
    assert!(email_hashes.len() >= 3, "{email_hashes:?}\n{out}");
    assert!(
        email_hashes.iter().all(|h| *h == email_hashes[0]),
        "the same e-mail address hashed differently: {email_hashes:?}"
    );
    let card_line = gw
        .log_lines()
        .into_iter()
        .find(|l| {
            l["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/echo/orders/h:"))
        })
        .expect("a card path");
    let card_hash = card_line["path"].as_str().unwrap();
    assert_ne!(card_hash, format!("/echo/orders/{}", email_hashes[0]));
}

/// The `h:` tokens that follow `marker` in a line.
fn hashes_after(line: &str, marker: &str) -> Vec<String> {
    line.match_indices(marker)
        .filter_map(|(i, _)| {
            let rest = &line[i + marker.len()..];
            let token: String = rest.chars().take(18).collect();
            (token.len() == 18 && token.starts_with("h:")).then_some(token)
        })
        .collect()
}

#[tokio::test]
async fn mask_mode_writes_redacted_markers() {
    let up = Upstream::start().await;
    let toml = config(&up.url(), "", "[log]\nredaction = \"mask\"\n");
    let gw = Gateway::start(&toml).await;
    let target = format!(
        "/echo/a?token={}&q={}",
        secret("jwt"),
        secret("google api key")
    );
    let r = get(gw.addr, &target).await;
    assert_eq!(r.status, 200);
    let line = gw.wait_log(&r.request_id()).await;
    assert_eq!(
        line["path"].as_str(),
        Some("/echo/a?token=[REDACTED]&q=[REDACTED]"),
        "{line}"
    );
    assert_no_secret(&captured(&gw));
}
