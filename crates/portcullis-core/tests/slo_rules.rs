//! `portcullis slo rules` and `portcullis slo dashboard` output, checked by the tools that
//! consume it: `promtool check rules`, `promtool test rules` against the series of
//! `tests/fixtures/slo_alerts.test.yml`, and the dashboard's panels and queries.
//!
//! promtool comes from the Debian/Ubuntu `prometheus` package; when it is missing the
//! test installs it (`apt-get install -y prometheus`, as root) and fails, never skips,
//! when that does not work.

#![allow(clippy::unwrap_used)]

use portcullis_core::config::{DurationValue, SloConfig};
use portcullis_core::route::RoutePattern;
use portcullis_core::slo::dashboard::grafana_dashboard;
use portcullis_core::slo::rules::prometheus_rules;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

fn slo(
    name: &str,
    routes: &[&str],
    objective: f64,
    latency_ms: Option<u64>,
    window_d: u64,
) -> SloConfig {
    SloConfig {
        name: name.to_owned(),
        routes: routes
            .iter()
            .map(|r| RoutePattern::parse(r).unwrap())
            .collect(),
        objective,
        latency: latency_ms.map(|ms| DurationValue(Duration::from_millis(ms))),
        window: DurationValue(Duration::from_secs(window_d * 86_400)),
    }
}

/// The SLOs `tests/fixtures/slo_alerts.test.yml` is written against.
fn fixture_slos() -> Vec<SloConfig> {
    vec![
        // Availability only.
        slo("api", &["/api/*"], 99.9, None, 30),
        // Availability and latency; 120ms is not a bucket boundary: le="0.25".
        slo(
            "checkout",
            &["/checkout", "/orders/{id}"],
            99.5,
            Some(120),
            7,
        ),
    ]
}

/// Everything the generator has to get right at once.
fn sample_slos() -> Vec<SloConfig> {
    let mut slos = fixture_slos();
    slos.extend([
        slo("everything", &["/*"], 99.0, Some(100), 30), // le="0.1" exactly; and "unmatched"
        slo("slow-batch", &["/v1.0/batch/*"], 95.0, Some(30_000), 90), // above the last bucket
        slo("odd \"name\" \\ {{x}}", &["/", "/a+b/{id}"], 99.95, None, 1),
    ]);
    slos
}

/// A scratch directory for one test, emptied first.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("portcullis-slo-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `promtool`, installed with apt when missing; panics (fails the test) when it cannot be.
fn promtool() -> &'static str {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let works = || {
            Command::new("promtool")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if works() {
            return Ok(());
        }
        let apt = |args: &[&str]| {
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .output()
        };
        let mut log = String::new();
        for attempt in [
            &["install", "-y", "prometheus"][..],
            &["update"],
            &["install", "-y", "prometheus"],
        ] {
            match apt(attempt) {
                Ok(o) => log.push_str(&format!(
                    "apt-get {}: {}\n{}",
                    attempt.join(" "),
                    o.status,
                    String::from_utf8_lossy(&o.stderr)
                )),
                Err(e) => log.push_str(&format!("apt-get {}: {e}\n", attempt.join(" "))),
            }
            if works() {
                return Ok(());
            }
        }
        Err(log)
    });
    if let Err(log) = ready {
        panic!(
            "promtool is required to check the generated rules and could not be installed \
             (`apt-get install -y prometheus`, as root, provides it):\n{log}"
        );
    }
    "promtool"
}

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[track_caller]
fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_check_rules_accepts_the_generated_rules() {
    let slos = sample_slos();
    let yaml = prometheus_rules(&slos);
    let dir = scratch("check");
    std::fs::write(dir.join("rules.yml"), &yaml).unwrap();
    let out = run(
        &dir,
        &["check", "rules", "--lint=all", "--lint-fatal", "rules.yml"],
    );
    assert_success("promtool check rules", &out);
    // 7 recording rules and 4 alerts per SLO (promtool 2.x reports on stderr).
    let stdout = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = format!("SUCCESS: {} rules found", slos.len() * 11);
    assert!(stdout.contains(&expected), "{stdout}\n---\n{yaml}");

    // The latency thresholds and their buckets, said in comments.
    assert!(
        yaml.contains("latency 120ms is not a histogram bucket boundary: using the next bucket")
    );
    assert!(yaml.contains("le=\"0.25\""));
    assert!(yaml.contains("latency 100ms is the histogram bucket le=\"0.1\""));
    assert!(yaml.contains("latency threshold above the largest histogram bucket (10s)"));
    // Route selection.
    assert!(yaml.contains(r#"route=~"/api(/.*)?""#));
    assert!(yaml.contains(r#"route=~"/checkout/?|/orders/[^/]+/?""#));
    assert!(yaml.contains(r#"route=~"unmatched|/.*""#));
    assert!(yaml.contains(r#"route=~"/v1\\.0/batch(/.*)?""#));
    // The four alerts of each SLO.
    for (name, factor, long, short) in [
        ("PortcullisErrorBudgetFastBurn", "14.4", "1h", "5m"),
        ("PortcullisErrorBudgetFastBurn", "6", "6h", "30m"),
        ("PortcullisErrorBudgetSlowBurn", "3", "1d", "2h"),
        ("PortcullisErrorBudgetSlowBurn", "1", "3d", "6h"),
    ] {
        let expr = format!(
            "portcullis_slo:error_ratio:rate{long}{{slo=\"api\"}} > ({factor} * (1 - 99.9 / 100))\n          and\n          portcullis_slo:error_ratio:rate{short}{{slo=\"api\"}} > ({factor} * (1 - 99.9 / 100))"
        );
        assert!(yaml.contains(&expr), "{name} {factor}: {expr}\n---\n{yaml}");
        assert_eq!(
            yaml.matches(&format!("burn_rate: \"{factor}\"")).count(),
            slos.len()
        );
    }
    assert_eq!(yaml.matches("severity: page").count(), 2 * slos.len());
    assert_eq!(yaml.matches("severity: ticket").count(), 2 * slos.len());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn promtool_check_rules_accepts_no_slos() {
    let dir = scratch("empty");
    std::fs::write(dir.join("rules.yml"), prometheus_rules(&[])).unwrap();
    assert_success(
        "promtool check rules (no SLOs)",
        &run(
            &dir,
            &["check", "rules", "--lint=all", "--lint-fatal", "rules.yml"],
        ),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The fixture feeds series to the generated rules and expects the page alert at a
/// sustained 20x burn (and at a 20x burn of slow requests), and nothing at 1x.
#[test]
fn promtool_test_rules_pages_at_fast_burn_and_not_at_one_x() {
    let dir = scratch("test");
    std::fs::write(dir.join("rules.yml"), prometheus_rules(&fixture_slos())).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/slo_alerts.test.yml");
    std::fs::copy(&fixture, dir.join("slo_alerts.test.yml")).unwrap();
    let out = run(&dir, &["test", "rules", "slo_alerts.test.yml"]);
    assert_success("promtool test rules", &out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every panel, as (title, [expr]).
fn panels(dashboard: &Value) -> Vec<(String, Vec<String>)> {
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
        .map(|p| {
            let exprs = p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["expr"].as_str().unwrap().to_owned())
                .collect();
            (p["title"].as_str().unwrap().to_owned(), exprs)
        })
        .collect()
}

#[track_caller]
fn panel<'a>(panels: &'a [(String, Vec<String>)], title: &str) -> &'a [String] {
    &panels
        .iter()
        .find(|(t, _)| t == title)
        .unwrap_or_else(|| panic!("no panel {title:?} in {panels:#?}"))
        .1
}

#[test]
fn dashboard_has_the_panels_and_queries() {
    let d = grafana_dashboard(&fixture_slos());
    assert_eq!(d["schemaVersion"], 39);
    assert_eq!(d["title"], "portcullis");
    let vars = d["templating"]["list"].as_array().unwrap();
    assert!(
        vars.iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "a Prometheus data source variable"
    );
    // Every panel and every query reads the data source variable.
    for p in d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
    {
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(t["datasource"]["uid"], "${datasource}");
            assert!(t["refId"].is_string());
        }
    }
    let ids: std::collections::HashSet<u64> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        d["panels"].as_array().unwrap().len(),
        "unique panel ids"
    );

    let panels = panels(&d);
    let rate = panel(&panels, "Request rate");
    assert!(
        rate[0].contains("rate(portcullis_requests_total{"),
        "{rate:?}"
    );

    let errors = panel(&panels, "Error rate (5xx)");
    assert!(
        errors[0].contains("status=~\"5..\"") && errors[0].contains("portcullis_requests_total")
    );

    let latency = panel(&panels, "Latency p50 / p95 / p99");
    for q in ["0.5", "0.95", "0.99"] {
        let expected = format!(
            "histogram_quantile({q}, sum by (le) (rate(portcullis_request_duration_seconds_bucket{{"
        );
        assert!(
            latency.iter().any(|e| e.starts_with(&expected)),
            "{q}: {latency:?}"
        );
    }

    let limited = panel(&panels, "429s per policy");
    assert!(limited[0].contains("sum by (policy)"));
    assert!(limited[0].contains("portcullis_ratelimit_decisions_total{outcome=\"limited\"}"));

    let store = panel(&panels, "Store health");
    assert!(store
        .iter()
        .any(|e| e.contains("portcullis_store_errors_total")));
    assert!(store
        .iter()
        .any(|e| e.contains("portcullis_store_fallback_active")));

    assert_eq!(
        panel(&panels, "Error budget remaining"),
        ["portcullis_slo_error_budget_remaining"]
    );
    assert_eq!(panel(&panels, "Burn rate"), ["portcullis_slo_burn_rate"]);
    for name in ["api", "checkout"] {
        assert_eq!(
            panel(&panels, &format!("Error budget remaining: {name}")),
            [format!(
                "portcullis_slo_error_budget_remaining{{slo=\"{name}\"}}"
            )]
        );
        assert_eq!(
            panel(&panels, &format!("Burn rate: {name}")),
            [format!("portcullis_slo_burn_rate{{slo=\"{name}\"}}")]
        );
    }
    // Without SLOs the overview panels stay, the per-SLO ones go.
    let none = panels_of(&grafana_dashboard(&[]));
    assert!(none.iter().any(|t| t == "Error budget remaining"));
    assert!(!none.iter().any(|t| t.starts_with("Burn rate: ")));
}

fn panels_of(d: &Value) -> Vec<String> {
    panels(d).into_iter().map(|(t, _)| t).collect()
}
