//! `portcullis slo rules`: Prometheus recording and alerting rules for the configured
//! SLOs, written against portcullis's own metrics.
//!
//! Per SLO, one rule group holds:
//!
//! - recording rules `portcullis_slo:error_ratio:rate<w>{slo}` for w in 5m, 30m, 1h, 2h,
//!   6h, 1d and 3d: the share of bad requests among the SLO's requests, from
//!   `portcullis_requests_total{route,method,status}` (bad: `status` 5xx) and, for an SLO
//!   with `latency`, `portcullis_request_duration_seconds_bucket{route,le}` (bad: slower
//!   than the `le` bucket of the threshold);
//! - multi-window, multi-burn-rate alerts (Google SRE workbook, "Alerting on SLOs"): an
//!   alert fires while the error ratio is above `factor × (1 − objective/100)` over both
//!   a long and a short window ([`ALERTS`]).
//!
//! # Pitfalls
//!
//! - The rules see the `route` label, which is the *matched `[[route]]` pattern*, never
//!   the raw path. An SLO selects the series whose `route` label, read as a path, its
//!   patterns match ([`route_regex`]): with `routes = ["/api/*"]`, a `[[route]]` of
//!   `/api/items/{id}` counts, but a catch-all `[[route]]` of `/*` does not (the
//!   in-process tracker behind `/admin/slo` sees raw paths and counts it). Declare routes
//!   at least as fine as your SLOs. Requests that matched no route (`route="unmatched"`)
//!   count only for an SLO with the pattern `/*`.
//! - A latency threshold that is not a bucket boundary of the histogram
//!   ([`LATENCY_BUCKETS`]) is rounded up to the next boundary, so requests between the
//!   threshold and that boundary count as good here; the YAML says so in a comment.
//! - A request both failed and slow is counted twice (5xx plus slow), so the ratio errs
//!   towards alerting; it is capped at 1.

use crate::config::SloConfig;
use crate::route::RoutePattern;
use std::collections::HashSet;
use std::time::Duration;

/// Upper bounds, in seconds, of the `portcullis_request_duration_seconds` buckets (the
/// gateway's histogram must use exactly these: the rules name them in `le`).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The recording-rule windows, shortest first (the same as [`super::BURN_WINDOWS`]).
pub const RATIO_WINDOWS: [&str; 7] = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"];

/// Who an alert wakes up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Someone acts now: at this burn the budget is gone within days.
    Page,
    /// Someone acts within working hours.
    Ticket,
}

impl Severity {
    /// The `severity` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Page => "page",
            Severity::Ticket => "ticket",
        }
    }

    /// The alert name.
    pub fn alert_name(self) -> &'static str {
        match self {
            Severity::Page => "PortcullisErrorBudgetFastBurn",
            Severity::Ticket => "PortcullisErrorBudgetSlowBurn",
        }
    }
}

/// One multi-window burn-rate alert.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurnAlert {
    /// Who it wakes up.
    pub severity: Severity,
    /// The burn rate it fires above, as written in PromQL and the `burn_rate` label.
    pub factor: &'static str,
    /// The long window (how much budget has gone).
    pub long: &'static str,
    /// The short window (whether it is still going: the alert resets soon after).
    pub short: &'static str,
}

/// The SRE workbook's four alerts: page on 14.4× over 1h and 5m and on 6× over 6h and
/// 30m; ticket on 3× over 1d and 2h and on 1× over 3d and 6h. Over a 30d window they
/// fire once 2 %, 5 %, 10 % and 10 % of the budget is spent.
pub const ALERTS: [BurnAlert; 4] = [
    BurnAlert {
        severity: Severity::Page,
        factor: "14.4",
        long: "1h",
        short: "5m",
    },
    BurnAlert {
        severity: Severity::Page,
        factor: "6",
        long: "6h",
        short: "30m",
    },
    BurnAlert {
        severity: Severity::Ticket,
        factor: "3",
        long: "1d",
        short: "2h",
    },
    BurnAlert {
        severity: Severity::Ticket,
        factor: "1",
        long: "3d",
        short: "6h",
    },
];

/// The name of the recording rule for the error ratio over `window` (one of
/// [`RATIO_WINDOWS`]).
pub fn ratio_record(window: &str) -> String {
    format!("portcullis_slo:error_ratio:rate{window}")
}

/// The histogram bucket a latency threshold is measured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LatencyBucket {
    /// The threshold is this bucket's bound (the `le` label value).
    Exact(String),
    /// The threshold lies below this bound and above the previous one.
    Above(String),
    /// The threshold is above the largest bound: the histogram cannot tell.
    Beyond,
}

/// The `le` bucket for a latency threshold: the smallest bound at or above it.
pub fn latency_bucket(threshold: Duration) -> LatencyBucket {
    let ns = threshold.as_nanos();
    for bound in LATENCY_BUCKETS {
        let bound_ns = (bound * 1e9).round() as u128;
        if ns <= bound_ns {
            let le = le_label(bound);
            return if ns == bound_ns {
                LatencyBucket::Exact(le)
            } else {
                LatencyBucket::Above(le)
            };
        }
    }
    LatencyBucket::Beyond
}

/// An `le` label value as the gateway's Prometheus client writes it (`0.1`, `1.0`).
fn le_label(bound: f64) -> String {
    format!("{bound:?}")
}

/// An RE2 regular expression (anchored by Prometheus) matching the `route` label values
/// the patterns cover: a label is matched when, read as a path, one of the patterns
/// matches it. `{param}` segments match any one segment, a final `/*` any suffix, and
/// `/*` alone also matches `unmatched`. No patterns: a regex matching no label.
pub fn route_regex(routes: &[RoutePattern]) -> String {
    let mut alternatives: Vec<String> = Vec::new();
    for route in routes {
        let src = route.as_str();
        let (body, prefix) = match src.strip_suffix("/*") {
            Some(b) => (b, true),
            None => (src, false),
        };
        let segments: Vec<String> = body
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| {
                if s.starts_with('{') && s.ends_with('}') {
                    "[^/]+".to_owned()
                } else {
                    regex_escape(s)
                }
            })
            .collect();
        let path: String = segments.iter().map(|s| format!("/{s}")).collect();
        let alt = match (prefix, path.is_empty()) {
            (true, true) => {
                alternatives.push("unmatched".to_owned());
                "/.*".to_owned()
            }
            (true, false) => format!("{path}(/.*)?"),
            (false, true) => "/".to_owned(),
            (false, false) => format!("{path}/?"),
        };
        alternatives.push(alt);
    }
    if alternatives.is_empty() {
        // `route` is never empty, and `$^` inside an anchored regex matches nothing else.
        return "$^".to_owned();
    }
    let mut seen = HashSet::new();
    alternatives.retain(|a| seen.insert(a.clone()));
    alternatives.join("|")
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A PromQL double-quoted string literal.
pub(super) fn promql_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A YAML double-quoted scalar.
fn yaml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Text that a Prometheus label template expands to exactly `s`: alert labels are Go
/// templates, so `{{` is written as the action `{{ "{{" }}`.
fn template_literal(s: &str) -> String {
    s.replace("{{", "{{ \"{{\" }}")
}

/// Text safe inside a YAML comment (one line) or an alert annotation (no Go template).
fn plain(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .replace("{{", "{ {")
}

/// A number without float noise: `100 − 99.9` is written `0.1`.
fn number(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

/// A duration in the largest unit that divides it: `30d`, `36h`, `90m`, `45s`.
pub(super) fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if d.subsec_nanos() != 0 || s == 0 => format!("{}ms", d.as_millis()),
        s if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        s if s.is_multiple_of(3_600) => format!("{}h", s / 3_600),
        s if s.is_multiple_of(60) => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Roughly how long a budget lasts at a burn rate: `2d 2h`, `10d`, `7h`.
fn eta(window: Duration, factor: f64) -> String {
    let hours = (window.as_secs_f64() / 3_600.0 / factor).round() as u64;
    match (hours / 24, hours % 24) {
        (0, h) => format!("{}h", h.max(1)),
        (d, 0) => format!("{d}d"),
        (d, h) => format!("{d}d {h}h"),
    }
}

/// The error ratio of one SLO over `range`, in PromQL (multi-line).
fn error_ratio_expr(route_re: &str, latency_le: Option<&str>, range: &str) -> String {
    let sel = format!("route=~{}", promql_string(route_re));
    let errors = format!(
        "(sum(rate(portcullis_requests_total{{{sel},status=~\"5..\"}}[{range}])) or vector(0))"
    );
    let total = format!("sum(rate(portcullis_requests_total{{{sel}}}[{range}]))");
    match latency_le {
        None => format!("{errors}\n/\n{total}"),
        Some(le) => {
            let bucket = |le: &str| {
                format!(
                    "(sum(rate(portcullis_request_duration_seconds_bucket{{{sel},le={}}}[{range}])) or vector(0))",
                    promql_string(le)
                )
            };
            format!(
                "clamp_max(\n  (\n    {errors}\n    + {all}\n    - {fast}\n  )\n  /\n  {total},\n  1\n)",
                all = bucket("+Inf"),
                fast = bucket(le),
            )
        }
    }
}

/// Appends `text` as a YAML block scalar (`|-`) indented by `indent` spaces.
fn block(out: &mut String, indent: usize, text: &str) {
    for l in text.lines() {
        out.push_str(&" ".repeat(indent));
        out.push_str(l);
        out.push('\n');
    }
}

/// Prometheus rule YAML (`promtool check rules` clean) for the SLOs: per SLO a group of
/// recording rules for the error ratio over 5m … 3d and the four burn-rate alerts of
/// [`ALERTS`]. No SLOs: `groups: []`.
pub fn prometheus_rules(slos: &[SloConfig]) -> String {
    let mut out = String::new();
    out.push_str(
        "# Generated by `portcullis slo rules`: do not edit, regenerate.\n\
         # Error ratios over portcullis's own metrics (bad = 5xx, or slower than the SLO's\n\
         # latency threshold) and multi-window, multi-burn-rate alerts (Google SRE workbook):\n\
         # page on 14.4x over 1h and 5m and on 6x over 6h and 30m; ticket on 3x over 1d and\n\
         # 2h and on 1x over 3d and 6h. A burn rate of 1 spends the budget in exactly the\n\
         # SLO window. Runbook: docs/runbook.md.\n",
    );
    if slos.is_empty() {
        out.push_str("groups: []\n");
        return out;
    }
    out.push_str("groups:\n");
    let mut group_names = HashSet::new();
    for (i, slo) in slos.iter().enumerate() {
        let mut group = format!("portcullis-slo-{}", slo.name);
        if !group_names.insert(group.clone()) {
            group = format!("{group}-{}", i + 1);
            group_names.insert(group.clone());
        }
        let route_re = route_regex(&slo.routes);
        let routes: Vec<&str> = slo.routes.iter().map(RoutePattern::as_str).collect();
        out.push_str(&format!(
            "  # SLO {}: {}% good over {}, routes {}\n  # route label regex: {}\n",
            plain(&slo.name),
            number(slo.objective),
            human(slo.window.0),
            plain(&routes.join(", ")),
            plain(&route_re),
        ));
        let le = match slo.latency.map(|d| latency_bucket(d.0)) {
            None => None,
            Some(LatencyBucket::Exact(le)) => {
                out.push_str(&format!(
                    "  # latency {} is the histogram bucket le=\"{le}\"\n",
                    human(slo.latency.map_or(Duration::ZERO, |d| d.0))
                ));
                Some(le)
            }
            Some(LatencyBucket::Above(le)) => {
                out.push_str(&format!(
                    "  # latency {} is not a histogram bucket boundary: using the next bucket\n  \
                     # above, le=\"{le}\" (requests between the two count as good here)\n",
                    human(slo.latency.map_or(Duration::ZERO, |d| d.0))
                ));
                Some(le)
            }
            Some(LatencyBucket::Beyond) => {
                out.push_str(
                    "  # latency threshold above the largest histogram bucket (10s): only 5xx\n  \
                     # responses count as bad here\n",
                );
                None
            }
        };
        if slo.routes.is_empty() {
            out.push_str("  # no routes: the ratios have no data and the alerts never fire\n");
        }
        out.push_str(&format!("  - name: {}\n    rules:\n", yaml_string(&group)));
        let slo_label = yaml_string(&slo.name);
        for window in RATIO_WINDOWS {
            out.push_str(&format!(
                "      - record: {}\n        labels:\n          slo: {slo_label}\n        expr: |-\n",
                ratio_record(window)
            ));
            block(
                &mut out,
                10,
                &error_ratio_expr(&route_re, le.as_deref(), window),
            );
        }
        let allowed = format!("(1 - {} / 100)", number(slo.objective));
        let slo_sel = format!("{{slo={}}}", promql_string(&slo.name));
        for alert in ALERTS {
            let threshold = format!("({} * {allowed})", alert.factor);
            let expr = format!(
                "{long}{slo_sel} > {threshold}\nand\n{short}{slo_sel} > {threshold}",
                long = ratio_record(alert.long),
                short = ratio_record(alert.short),
            );
            let factor: f64 = alert.factor.parse().unwrap_or(1.0);
            let summary = format!(
                "SLO {}: error budget burning at {}x or more over {} and {}",
                plain(&slo.name),
                alert.factor,
                alert.long,
                alert.short
            );
            let description = format!(
                "{{{{ $value | humanizePercentage }}}} of requests to {routes} were bad over the \
                 last {long} ({factor}x the {allowed}% that the {objective}% objective allows), \
                 and still over {factor}x over the last {short}. At this rate the {window} error \
                 budget lasts about {eta}.",
                routes = plain(&routes.join(", ")),
                long = alert.long,
                short = alert.short,
                factor = alert.factor,
                allowed = number(100.0 - slo.objective),
                objective = number(slo.objective),
                window = human(slo.window.0),
                eta = eta(slo.window.0, factor),
            );
            out.push_str(&format!(
                "      - alert: {name}\n        expr: |-\n",
                name = alert.severity.alert_name()
            ));
            block(&mut out, 10, &expr);
            out.push_str(&format!(
                "        labels:\n          severity: {sev}\n          slo: {slo_template}\n          long_window: \"{long}\"\n          short_window: \"{short}\"\n          \
                 burn_rate: \"{factor}\"\n        annotations:\n          summary: {summary}\n          \
                 description: {description}\n          runbook: \"docs/runbook.md#the-error-budget-is-burning\"\n",
                sev = alert.severity.as_str(),
                slo_template = yaml_string(&template_literal(&slo.name)),
                long = alert.long,
                short = alert.short,
                factor = alert.factor,
                summary = yaml_string(&summary),
                description = yaml_string(&description),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RoutePattern {
        RoutePattern::parse(s).unwrap()
    }

    #[test]
    fn le_labels_are_what_the_gateway_writes() {
        let labels: Vec<String> = LATENCY_BUCKETS.iter().map(|&b| le_label(b)).collect();
        assert_eq!(
            labels,
            [
                "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
                "0.5", "1.0", "2.5", "5.0", "10.0"
            ]
        );
    }

    #[test]
    fn threshold_to_bucket() {
        let ms = Duration::from_millis;
        assert_eq!(latency_bucket(ms(100)), LatencyBucket::Exact("0.1".into()));
        assert_eq!(latency_bucket(ms(120)), LatencyBucket::Above("0.25".into()));
        assert_eq!(latency_bucket(ms(1000)), LatencyBucket::Exact("1.0".into()));
        assert_eq!(
            latency_bucket(Duration::from_micros(1)),
            LatencyBucket::Above("0.0005".into())
        );
        assert_eq!(
            latency_bucket(ms(10_000)),
            LatencyBucket::Exact("10.0".into())
        );
        assert_eq!(latency_bucket(ms(10_001)), LatencyBucket::Beyond);
    }

    #[test]
    fn route_regexes() {
        assert_eq!(route_regex(&[p("/api/*")]), "/api(/.*)?");
        assert_eq!(route_regex(&[p("/api/items/{id}")]), "/api/items/[^/]+/?");
        assert_eq!(route_regex(&[p("/*")]), "unmatched|/.*");
        assert_eq!(route_regex(&[p("/")]), "/");
        assert_eq!(route_regex(&[p("/v1.0/a+b")]), "/v1\\.0/a\\+b/?");
        assert_eq!(route_regex(&[p("/a"), p("/b/*")]), "/a/?|/b(/.*)?");
        assert_eq!(route_regex(&[]), "$^");
    }

    #[test]
    fn escaping() {
        assert_eq!(promql_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(yaml_string("x\ny"), "\"x\\u000ay\"");
        assert_eq!(plain("a{{b}}\n"), "a{ {b}} ");
        assert_eq!(template_literal("a{{b}}"), "a{{ \"{{\" }}b}}");
        assert_eq!(number(100.0 - 99.9), "0.1");
        assert_eq!(number(99.0), "99");
        assert_eq!(eta(Duration::from_secs(30 * 86_400), 14.4), "2d 2h");
        assert_eq!(eta(Duration::from_secs(30 * 86_400), 6.0), "5d");
        assert_eq!(human(Duration::from_secs(7 * 86_400)), "7d");
        assert_eq!(human(Duration::from_millis(1_500)), "1500ms");
        assert_eq!(human(Duration::from_secs(90)), "90s");
    }

    #[test]
    fn no_slos_is_an_empty_rule_file() {
        assert!(prometheus_rules(&[]).ends_with("groups: []\n"));
    }
}
