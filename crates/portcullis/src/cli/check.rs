//! `portcullis check`: validate and print the resolved configuration.

use super::{load_config, Failure};
use std::path::Path;

pub(super) fn run(path: Option<&Path>) -> Result<(), Failure> {
    let (config, origin) = load_config(path)?;
    let printed = toml::to_string_pretty(&config)
        .map_err(|e| Failure::Runtime(format!("cannot print the configuration: {e}")))?;
    println!("# portcullis {} — configuration from {origin}, resolved (defaults and environment overrides applied)", env!("CARGO_PKG_VERSION"));
    println!("{printed}");
    eprintln!("✓ {origin}: configuration is valid");
    Ok(())
}
