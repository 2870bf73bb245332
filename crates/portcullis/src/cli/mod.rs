//! Command-line parsing and dispatch, one module per subcommand.

mod check;
mod demo;
mod serve;
mod slo;
mod webhook;

use crate::telemetry::{log_redactor, RedactingStderr};
use clap::{Parser, Subcommand};
use portcullis_core::config::{Config, Diagnostic, LogFormat};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// portcullis hardens any HTTP API without touching its code.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Configuration file (default: ./portcullis.toml if present, else built-in defaults).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and print it resolved.
    Check {
        /// Configuration file (default: ./portcullis.toml if present, else built-in defaults).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Start a sample API with the gateway in front of it, on loopback.
    Demo,
    /// Generate Prometheus rules or a Grafana dashboard for the configured SLOs.
    Slo {
        #[command(subcommand)]
        command: SloCommand,
    },
    /// Sign or verify a webhook delivery (the body on stdin).
    Webhook {
        #[command(subcommand)]
        command: webhook::WebhookCommand,
    },
}

#[derive(Debug, Subcommand)]
enum SloCommand {
    /// Print Prometheus recording and multi-window, multi-burn-rate alerting rules (YAML).
    Rules {
        /// Configuration file (default: ./portcullis.toml if present, else built-in defaults).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print a Grafana dashboard (JSON) of the golden signals, limits and SLOs.
    Dashboard {
        /// Configuration file (default: ./portcullis.toml if present, else built-in defaults).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// Errors that end the process, each with its exit code.
pub(crate) enum Failure {
    /// Bad configuration or usage: exit 1.
    Config(String),
    /// Failed while running: exit 2.
    Runtime(String),
}

pub(crate) fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli.command {
        Command::Serve { config } => serve::run(config.as_deref()),
        Command::Check { config } => check::run(config.as_deref()),
        Command::Demo => demo::run(),
        Command::Slo { command } => match command {
            SloCommand::Rules { config } => slo::rules(config.as_deref()),
            SloCommand::Dashboard { config } => slo::dashboard(config.as_deref()),
        },
        Command::Webhook { command } => webhook::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(line)) => {
            eprintln!("{line}");
            ExitCode::from(1)
        }
        Err(Failure::Runtime(line)) => {
            eprintln!("portcullis: {line}");
            ExitCode::from(2)
        }
    }
}

/// Reads the configuration the way every subcommand does, with the process environment
/// as the source of overrides. Returns it with the name of where it came from.
pub(crate) fn load_config(path: Option<&Path>) -> Result<(Config, String), Failure> {
    load_config_with_text(path).map(|(c, origin, _)| (c, origin))
}

/// [`load_config`], also returning the file's text (for `check`'s warnings).
pub(crate) fn load_config_with_text(
    path: Option<&Path>,
) -> Result<(Config, String, Option<String>), Failure> {
    let default = Path::new("portcullis.toml");
    let path = path.or_else(|| default.exists().then_some(default));
    let (origin, text) = match path {
        Some(p) => {
            let origin = p.display().to_string();
            let text = std::fs::read_to_string(p)
                .map_err(|e| Failure::Config(format!("{origin}: cannot read: {e}")))?;
            (origin, Some(text))
        }
        None => ("(built-in defaults)".to_owned(), None),
    };
    let config = portcullis_core::config::load(&origin, text.as_deref(), std::env::vars())
        .map_err(|d: Diagnostic| Failure::Config(d.to_string()))?;
    Ok((config, origin, text))
}

/// Diagnostics go to stderr, as JSON lines unless `[log] format = "pretty"`, redacted
/// like the access log (see [`RedactingStderr`]).
pub(crate) fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(RedactingStderr(log_redactor(config)));
    let _ = match config.log.format {
        LogFormat::Json => builder
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(format!("cannot start the async runtime: {e}")))
}
