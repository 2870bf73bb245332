//! `portcullis webhook sign` and `portcullis webhook verify`: the gateway's webhook
//! core on the command line, the body on stdin.
//!
//! Every failure is one line on stderr and exit 1: a missing secret variable, an
//! unknown scheme, a malformed `--header`, or (for `verify`) a delivery that does not
//! verify, with the reason.

use super::Failure;
use clap::Subcommand;
use portcullis_core::config::DurationValue;
use portcullis_core::webhook::{self, github, hmac, standard, stripe, Scheme, Secrets};
use std::io::Read;

#[derive(Debug, Subcommand)]
pub(super) enum WebhookCommand {
    /// Sign a body read on stdin; prints the signature header(s), one `Name: value` a line.
    Sign {
        /// `standard`, `github`, `stripe` or `hmac_sha256`.
        #[arg(long)]
        scheme: String,
        /// Environment variable holding the secret (of a comma-separated list, the first).
        #[arg(long, value_name = "VAR")]
        secret_env: String,
        /// The `webhook-id` (`standard` only; default: derived from timestamp and body).
        #[arg(long)]
        id: Option<String>,
        /// Unix seconds to sign (default: now; ignored by `github`).
        #[arg(long, value_name = "T")]
        timestamp: Option<String>,
    },
    /// Verify a body read on stdin against its headers: exit 0 if valid, 1 if not.
    Verify {
        /// `standard`, `github`, `stripe` or `hmac_sha256`.
        #[arg(long)]
        scheme: String,
        /// Environment variable holding the secret(s), comma-separated during a rotation.
        #[arg(long, value_name = "VAR")]
        secret_env: String,
        /// A header of the delivery, `'Name: value'`; repeat for each.
        #[arg(long = "header", short = 'H', value_name = "'Name: value'")]
        headers: Vec<String>,
        /// Accepted timestamp skew, either way.
        #[arg(long, default_value = "5m")]
        tolerance: String,
    },
}

pub(super) fn run(command: WebhookCommand) -> Result<(), Failure> {
    match command {
        WebhookCommand::Sign {
            scheme,
            secret_env,
            id,
            timestamp,
        } => sign(&scheme, &secret_env, id.as_deref(), timestamp.as_deref()),
        WebhookCommand::Verify {
            scheme,
            secret_env,
            headers,
            tolerance,
        } => verify(&scheme, &secret_env, &headers, &tolerance),
    }
}

fn sign(
    scheme: &str,
    secret_env: &str,
    id: Option<&str>,
    timestamp: Option<&str>,
) -> Result<(), Failure> {
    let scheme = parse_scheme(scheme)?;
    let secrets = secrets(secret_env, scheme)?;
    let timestamp = match timestamp {
        None => crate::webhook::unix_now(),
        Some(t) => t.trim().parse::<i64>().map_err(|_| {
            Failure::Config(format!(
                "--timestamp must be Unix seconds (an integer), got {t:?}"
            ))
        })?,
    };
    let body = stdin()?;
    let secret = secrets
        .signing()
        .ok_or_else(|| Failure::Config(format!("{secret_env}: no webhook secret given")))?;
    let headers = webhook::sign(scheme, secret, &body, id, timestamp)
        .map_err(|e| Failure::Config(format!("cannot sign: {e}")))?;
    for (name, value) in headers {
        println!("{}: {value}", display_name(&name));
    }
    Ok(())
}

fn verify(
    scheme: &str,
    secret_env: &str,
    headers: &[String],
    tolerance: &str,
) -> Result<(), Failure> {
    let scheme = parse_scheme(scheme)?;
    let secrets = secrets(secret_env, scheme)?;
    let tolerance = DurationValue::parse(tolerance)
        .map_err(|e| Failure::Config(format!("--tolerance: {e}")))?
        .0;
    let mut pairs = Vec::with_capacity(headers.len());
    for h in headers {
        let Some((name, value)) = h.split_once(':') else {
            return Err(Failure::Config(format!(
                "--header must be 'Name: value', got {h:?}"
            )));
        };
        pairs.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let body = stdin()?;
    let lookup = |name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    match webhook::verify(
        scheme,
        &secrets,
        &lookup,
        &body,
        crate::webhook::unix_now(),
        tolerance,
    ) {
        Ok(v) => {
            println!(
                "valid: signed with secret #{} of {} (replay id {})",
                v.secret_index + 1,
                secrets.len(),
                v.replay_id
            );
            Ok(())
        }
        Err(e) => Err(Failure::Config(format!("invalid ({}): {e}", e.code()))),
    }
}

fn parse_scheme(s: &str) -> Result<Scheme, Failure> {
    // `hmac-sha256` too: people type hyphens on command lines.
    Scheme::from_name(&s.replace('-', "_")).ok_or_else(|| {
        Failure::Config(format!(
            "unknown --scheme {s:?}: expected standard, github, stripe or hmac_sha256"
        ))
    })
}

/// The secrets in `var`, checked for `scheme`; errors name the variable, never a secret.
fn secrets(var: &str, scheme: Scheme) -> Result<Secrets, Failure> {
    crate::webhook::load_secrets(var, "--secret-env", scheme).map_err(Failure::Config)
}

fn stdin() -> Result<Vec<u8>, Failure> {
    let mut body = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut body)
        .map_err(|e| Failure::Config(format!("cannot read the body on stdin: {e}")))?;
    Ok(body)
}

/// Header names as senders usually write them.
fn display_name(lower: &str) -> &str {
    match lower {
        n if n == standard::ID => "webhook-id",
        n if n == standard::TIMESTAMP => "webhook-timestamp",
        n if n == standard::SIGNATURE => "webhook-signature",
        n if n == github::SIGNATURE => "X-Hub-Signature-256",
        n if n == stripe::SIGNATURE => "Stripe-Signature",
        n if n == hmac::SIGNATURE => "X-Signature",
        n if n == hmac::TIMESTAMP => "X-Signature-Timestamp",
        other => other,
    }
}
