//! `portcullis slo dashboard`: a Grafana dashboard of the golden signals, the limits, the
//! store and the SLOs, over portcullis's own metrics.
//!
//! Import it in Grafana (Dashboards → New → Import) and pick a Prometheus data source
//! for the `datasource` variable; the `route` variable filters the golden signals.
//! Panels, top to bottom:
//!
//! | row | panel | query (abridged) |
//! |---|---|---|
//! | Traffic | Request rate | `sum by (route) (rate(portcullis_requests_total[…]))` |
//! | Traffic | Error rate (5xx) | 5xx share of `portcullis_requests_total` per route |
//! | Traffic | Latency p50 / p95 / p99 | `histogram_quantile(q, … portcullis_request_duration_seconds_bucket …)` |
//! | Limits | 429s per policy | `portcullis_ratelimit_decisions_total{outcome="limited"}` (and `shadow_limited`) |
//! | Store | Store health | `portcullis_store_errors_total`, `portcullis_store_fallback_active` |
//! | SLOs | Error budget remaining | `portcullis_slo_error_budget_remaining{slo}` |
//! | SLOs | Burn rate | `portcullis_slo_burn_rate{slo,window}` |
//!
//! then, for each configured SLO, its budget (stat) and burn rates by window, with the
//! alert thresholds 14.4, 6, 3 and 1 drawn as lines.

use super::rules::{human, promql_string, ALERTS};
use crate::config::SloConfig;
use serde_json::{json, Value};

const RATE: &str = "$__rate_interval";
const ROUTE: &str = "route=~\"$route\"";

/// The dashboard JSON (Grafana schema version 39).
pub fn grafana_dashboard(slos: &[SloConfig]) -> Value {
    let mut panels = Panels::default();

    panels.row("Traffic");
    panels.timeseries(
        "Request rate",
        "Requests per second by route, every status included.",
        "reqps",
        vec![target(
            &format!("sum by (route) (rate(portcullis_requests_total{{{ROUTE}}}[{RATE}]))"),
            "{{route}}",
        )],
    );
    panels.timeseries(
        "Error rate (5xx)",
        "Share of responses that were 5xx (the gateway's own 502/503/504 included), by route. \
         429s are not errors.",
        "percentunit",
        vec![target(
            &format!(
                "sum by (route) (rate(portcullis_requests_total{{{ROUTE},status=~\"5..\"}}[{RATE}]))\n/\n\
                 sum by (route) (rate(portcullis_requests_total{{{ROUTE}}}[{RATE}]))"
            ),
            "{{route}}",
        )],
    );
    panels.timeseries(
        "Latency p50 / p95 / p99",
        "Time to response headers at the gateway, across the selected routes.",
        "s",
        [("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99")]
            .iter()
            .map(|(q, legend)| {
                target(
                    &format!(
                        "histogram_quantile({q}, sum by (le) (rate(portcullis_request_duration_seconds_bucket{{{ROUTE}}}[{RATE}])))"
                    ),
                    legend,
                )
            })
            .collect(),
    );

    panels.row("Limits");
    panels.timeseries(
        "429s per policy",
        "Requests rejected by each enforcing policy, and those a shadow policy would have \
         rejected (read these before switching a policy to enforce).",
        "reqps",
        vec![
            target(
                &format!(
                    "sum by (policy) (rate(portcullis_ratelimit_decisions_total{{outcome=\"limited\"}}[{RATE}]))"
                ),
                "{{policy}}",
            ),
            target(
                &format!(
                    "sum by (policy) (rate(portcullis_ratelimit_decisions_total{{outcome=\"shadow_limited\"}}[{RATE}]))"
                ),
                "{{policy}} (shadow)",
            ),
        ],
    );

    panels.row("Store");
    panels.timeseries(
        "Store health",
        "Failed or timed-out store calls per second, and whether decisions follow on_error \
         (1: the store is down).",
        "short",
        vec![
            target(
                &format!("sum by (store) (rate(portcullis_store_errors_total[{RATE}]))"),
                "errors/s {{store}}",
            ),
            target("max(portcullis_store_fallback_active)", "fallback active"),
        ],
    );

    panels.row("SLOs");
    panels.timeseries(
        "Error budget remaining",
        "1: untouched, 0: spent, below 0: overspent, over each SLO's window.",
        "percentunit",
        vec![target("portcullis_slo_error_budget_remaining", "{{slo}}")],
    );
    panels.timeseries(
        "Burn rate",
        "How fast each SLO spends its budget (1: exactly over the window). Pages above 14.4 \
         (1h) and 6 (6h), tickets above 3 (1d) and 1 (3d).",
        "short",
        vec![target("portcullis_slo_burn_rate", "{{slo}} {{window}}")],
    );
    for slo in slos {
        let sel = format!("slo={}", promql_string(&slo.name));
        panels.stat(
            &format!("Error budget remaining: {}", slo.name),
            &format!("{}% good over {}.", slo.objective, human(slo.window.0)),
            vec![target(
                &format!("portcullis_slo_error_budget_remaining{{{sel}}}"),
                "{{slo}}",
            )],
        );
        panels.burn_rate(
            &format!("Burn rate: {}", slo.name),
            vec![target(
                &format!("portcullis_slo_burn_rate{{{sel}}}"),
                "{{window}}",
            )],
        );
    }

    json!({
        "title": "portcullis",
        "uid": "portcullis",
        "description": "Golden signals, rate limits, store health and SLOs of the portcullis gateway (generated by `portcullis slo dashboard`).",
        "tags": ["portcullis"],
        "editable": true,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "",
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": [
            {
                "name": "datasource",
                "label": "Data source",
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "hide": 0,
                "refresh": 1,
                "regex": "",
                "options": []
            },
            {
                "name": "route",
                "label": "Route",
                "type": "query",
                "datasource": datasource(),
                "definition": "label_values(portcullis_requests_total, route)",
                "query": {"query": "label_values(portcullis_requests_total, route)", "refId": "route"},
                "multi": true,
                "includeAll": true,
                "allValue": ".*",
                "current": {"selected": true, "text": ["All"], "value": ["$__all"]},
                "refresh": 2,
                "sort": 1,
                "hide": 0,
                "regex": "",
                "options": []
            }
        ]},
        "panels": panels.list,
    })
}

fn datasource() -> Value {
    json!({"type": "prometheus", "uid": "${datasource}"})
}

fn target(expr: &str, legend: &str) -> Value {
    json!({
        "datasource": datasource(),
        "expr": expr,
        "legendFormat": legend,
        "range": true,
        "editorMode": "code",
    })
}

/// Panels laid out two to a row of the 24-column grid.
#[derive(Default)]
struct Panels {
    list: Vec<Value>,
    next_id: u64,
    y: u64,
    /// Column of the next panel (0 or 12).
    x: u64,
}

// === impl Panels ===

impl Panels {
    const W: u64 = 12;
    const H: u64 = 8;

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn row(&mut self, title: &str) {
        if self.x > 0 {
            self.x = 0;
            self.y += Self::H;
        }
        let id = self.id();
        self.list.push(json!({
            "type": "row",
            "id": id,
            "title": title,
            "collapsed": false,
            "panels": [],
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
        }));
        self.y += 1;
    }

    fn place(&mut self, mut panel: Value) {
        let id = self.id();
        panel["id"] = json!(id);
        panel["gridPos"] = json!({"h": Self::H, "w": Self::W, "x": self.x, "y": self.y});
        panel["datasource"] = datasource();
        let refs = ["A", "B", "C", "D", "E", "F"];
        if let Some(targets) = panel["targets"].as_array_mut() {
            for (t, r) in targets.iter_mut().zip(refs) {
                t["refId"] = json!(r);
            }
        }
        self.list.push(panel);
        if self.x == 0 {
            self.x = Self::W;
        } else {
            self.x = 0;
            self.y += Self::H;
        }
    }

    fn timeseries(&mut self, title: &str, description: &str, unit: &str, targets: Vec<Value>) {
        self.place(json!({
            "type": "timeseries",
            "title": title,
            "description": description,
            "targets": targets,
            "fieldConfig": {
                "defaults": {"unit": unit, "custom": {"fillOpacity": 10, "showPoints": "never"}},
                "overrides": [],
            },
            "options": {
                "legend": {"displayMode": "list", "placement": "bottom", "showLegend": true},
                "tooltip": {"mode": "multi", "sort": "desc"},
            },
        }));
    }

    fn stat(&mut self, title: &str, description: &str, targets: Vec<Value>) {
        self.place(json!({
            "type": "stat",
            "title": title,
            "description": description,
            "targets": targets,
            "fieldConfig": {
                "defaults": {
                    "unit": "percentunit",
                    "thresholds": {"mode": "absolute", "steps": [
                        {"color": "red", "value": null},
                        {"color": "orange", "value": 0.25},
                        {"color": "green", "value": 0.5},
                    ]},
                },
                "overrides": [],
            },
            "options": {
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": false},
                "colorMode": "value",
                "graphMode": "area",
                "textMode": "auto",
            },
        }));
    }

    fn burn_rate(&mut self, title: &str, targets: Vec<Value>) {
        let mut steps = vec![json!({"color": "green", "value": null})];
        let colors = ["yellow", "orange", "red", "dark-red"];
        let mut factors: Vec<&str> = ALERTS.iter().map(|a| a.factor).collect();
        factors.reverse(); // 1, 3, 6, 14.4: ascending for Grafana's steps
        for (factor, color) in factors.iter().zip(colors) {
            let value: f64 = factor.parse().unwrap_or(1.0);
            steps.push(json!({"color": color, "value": value}));
        }
        self.place(json!({
            "type": "timeseries",
            "title": title,
            "description": "Burn rate by window; the lines are the alert thresholds (1 and 3: ticket, 6 and 14.4: page).",
            "targets": targets,
            "fieldConfig": {
                "defaults": {
                    "unit": "short",
                    "custom": {"fillOpacity": 0, "showPoints": "never", "thresholdsStyle": {"mode": "line"}},
                    "thresholds": {"mode": "absolute", "steps": steps},
                },
                "overrides": [],
            },
            "options": {
                "legend": {"displayMode": "list", "placement": "bottom", "showLegend": true},
                "tooltip": {"mode": "multi", "sort": "desc"},
            },
        }));
    }
}
