//! `portcullis check`: validate, print the resolved configuration and which policies
//! apply to which routes, and warn about what can never take effect.

use super::{load_config_with_text, Failure};
use portcullis_core::config::{analyze, load, Config};
use std::path::Path;

pub(super) fn run(path: Option<&Path>) -> Result<(), Failure> {
    let (config, origin, text) = load_config_with_text(path)?;
    let printed = toml::to_string_pretty(&config)
        .map_err(|e| Failure::Runtime(format!("cannot print the configuration: {e}")))?;
    println!(
        "# portcullis {} — configuration from {origin}, resolved (defaults and environment overrides applied)",
        env!("CARGO_PKG_VERSION")
    );
    println!("{printed}");
    println!("{}", route_table(&config));
    // Warnings point into the file as written (environment overrides aside).
    let text = text.unwrap_or_default();
    let file_only = load(&origin, Some(&text), Vec::new()).unwrap_or_else(|_| config.clone());
    let warnings = analyze(&file_only, &origin, &text);
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    eprintln!(
        "✓ {origin}: configuration is valid ({} polic{}, {} route{}, {} warning{})",
        config.policy.len(),
        if config.policy.len() == 1 { "y" } else { "ies" },
        config.route.len(),
        if config.route.len() == 1 { "" } else { "s" },
        warnings.len(),
        if warnings.len() == 1 { "" } else { "s" },
    );
    Ok(())
}

/// `route <methods> <path> -> <policies>` per route, then what unmatched requests get.
fn route_table(config: &Config) -> String {
    let mut out = String::from("# routes, first match wins\n");
    for r in &config.route {
        let methods = if r.methods.is_empty() {
            "*".to_owned()
        } else {
            r.methods.join(",")
        };
        let policies: Vec<&str> = r.policies.iter().map(|p| p.get_ref().as_str()).collect();
        let policies = if policies.is_empty() {
            "(none)".to_owned()
        } else {
            policies.join(", ")
        };
        let cost = if r.cost == 1 {
            String::new()
        } else {
            format!(" (cost {})", r.cost)
        };
        out.push_str(&format!(
            "route {methods} {} -> {policies}{cost}\n",
            r.path.get_ref()
        ));
    }
    let default = if config.policy.iter().any(|p| p.name.get_ref() == "default") {
        "default"
    } else {
        "(none)"
    };
    out.push_str(&format!("unmatched -> {default}"));
    if !config.webhook.is_empty() {
        out.push_str("\n# webhooks, verified before the upstream sees them\n");
        for w in &config.webhook {
            let scheme = w.scheme.as_str();
            let set = if std::env::var(&w.secret_env).is_ok_and(|v| !v.trim().is_empty()) {
                "set"
            } else {
                "NOT SET: serve will refuse to start"
            };
            out.push_str(&format!(
                "webhook {scheme} {} (secret_env {}: {set}; tolerance {}s)\n",
                w.path,
                w.secret_env,
                w.tolerance.0.as_secs()
            ));
        }
        out.pop();
    }
    out
}
