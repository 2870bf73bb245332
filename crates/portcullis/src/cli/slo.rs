//! `portcullis slo rules` and `portcullis slo dashboard`: the SLOs of the configuration
//! as Prometheus rules and as a Grafana dashboard, printed on stdout.

use super::{load_config, Failure};
use portcullis_core::slo::{dashboard::grafana_dashboard, rules::prometheus_rules};
use std::io::Write;
use std::path::Path;

/// Prints the recording and alerting rules (YAML) for `promtool` / Prometheus.
pub(crate) fn rules(config: Option<&Path>) -> Result<(), Failure> {
    let (config, origin) = load_config(config)?;
    if config.slo.is_empty() {
        eprintln!("warning: {origin} configures no [[slo]]: the rules hold no groups");
    }
    print(&prometheus_rules(&config.slo))
}

/// Prints the Grafana dashboard (JSON), ready to import.
pub(crate) fn dashboard(config: Option<&Path>) -> Result<(), Failure> {
    let (config, _) = load_config(config)?;
    let json = serde_json::to_string_pretty(&grafana_dashboard(&config.slo))
        .map_err(|e| Failure::Runtime(format!("cannot write the dashboard: {e}")))?;
    print(&format!("{json}\n"))
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn print(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::Runtime(format!("cannot write to stdout: {e}"))),
    }
}
