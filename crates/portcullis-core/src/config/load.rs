//! Reading `portcullis.toml` plus `PORTCULLIS_SECTION__KEY` environment overrides.

use super::model::Config;
use std::fmt;

/// Environment variables starting with this (any case) may be configuration overrides.
pub const ENV_PREFIX: &str = "PORTCULLIS_";

/// A configuration error, printed as `file:line:column: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file name, or `env NAME` for an environment override.
    pub origin: String,
    /// 1-based line and column of the offending text, when it is in a file.
    pub position: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(f, "{}:{line}:{column}: {}", self.origin, self.message),
            None => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

impl std::error::Error for Diagnostic {}

/// One `PORTCULLIS_A__B=value` override.
struct Override {
    var: String,
    path: Vec<String>,
    value: toml::Value,
}

/// Loads the configuration from `text` (the contents of `origin`, or `None` for the
/// built-in defaults) and applies the overrides found among `env`.
///
/// `env` is injected (callers pass `std::env::vars()`) so tests need not touch the
/// process environment.
pub fn load(
    origin: &str,
    text: Option<&str>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, Diagnostic> {
    let text = text.unwrap_or("");
    let from_file: Config = toml::from_str(text).map_err(|e| file_diagnostic(origin, text, &e))?;
    let overrides = overrides(env);
    if overrides.is_empty() {
        return validated(from_file, origin, text);
    }
    let base: toml::Table = toml::from_str(text).map_err(|e| file_diagnostic(origin, text, &e))?;
    // Each override alone first, so an error names the variable that caused it. The
    // merged table is printed and parsed again (rather than deserialized as a value) so
    // that spanned values deserialize as they do from a file.
    for o in &overrides {
        let mut table = base.clone();
        apply(&mut table, o)?;
        let merged = toml::to_string(&table).map_err(|e| env_error(o, &e.to_string()))?;
        toml::from_str::<Config>(&merged).map_err(|e| env_diagnostic(o, &e))?;
    }
    let mut table = base;
    for o in &overrides {
        apply(&mut table, o)?;
    }
    let env_origin = format!("{origin} (with environment overrides)");
    let merged = toml::to_string(&table).map_err(|e| Diagnostic {
        origin: env_origin.clone(),
        position: None,
        message: e.to_string(),
    })?;
    let config = toml::from_str::<Config>(&merged).map_err(|e| Diagnostic {
        origin: env_origin.clone(),
        position: None,
        message: e.message().to_owned(),
    })?;
    validated(config, &env_origin, &merged)
}

fn validated(config: Config, origin: &str, text: &str) -> Result<Config, Diagnostic> {
    match super::validate::first_error(&config) {
        None => Ok(config),
        Some((span, message)) => Err(Diagnostic {
            origin: origin.to_owned(),
            position: Some(line_column(text, span.start)),
            message,
        }),
    }
}

fn overrides(env: impl IntoIterator<Item = (String, String)>) -> Vec<Override> {
    let mut out: Vec<Override> = env
        .into_iter()
        .filter_map(|(var, raw)| {
            let head = var.get(..ENV_PREFIX.len())?;
            if !head.eq_ignore_ascii_case(ENV_PREFIX) {
                return None;
            }
            let path: Vec<String> = var[ENV_PREFIX.len()..]
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect();
            if path.len() < 2 || path.iter().any(String::is_empty) {
                return None;
            }
            Some(Override {
                value: parse_env_value(&raw),
                var,
                path,
            })
        })
        .collect();
    out.sort_by(|a, b| a.var.cmp(&b.var));
    out
}

/// A TOML value when the text is one (`250`, `true`, `["10.0.0.0/8"]`), else a string.
fn parse_env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .filter(|t| t.len() == 1)
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn apply(table: &mut toml::Table, o: &Override) -> Result<(), Diagnostic> {
    let (last, parents) = o
        .path
        .split_last()
        .ok_or_else(|| env_error(o, "empty key"))?;
    let mut current = table;
    for name in parents {
        let entry = current
            .entry(name.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(env_error(
                    o,
                    &format!("`{name}` is not a section, so it has no key `{last}`"),
                ))
            }
        };
    }
    current.insert(last.clone(), o.value.clone());
    Ok(())
}

fn env_error(o: &Override, message: &str) -> Diagnostic {
    Diagnostic {
        origin: format!("env {}", o.var),
        position: None,
        message: format!("{} (configuration key `{}`)", message, o.path.join(".")),
    }
}

fn env_diagnostic(o: &Override, e: &toml::de::Error) -> Diagnostic {
    env_error(o, e.message())
}

fn file_diagnostic(origin: &str, text: &str, e: &toml::de::Error) -> Diagnostic {
    Diagnostic {
        origin: origin.to_owned(),
        position: Some(
            e.span()
                .map_or((1, 1), |span| line_column(text, span.start)),
        ),
        message: e.message().trim().to_owned(),
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn defaults_without_a_file() {
        let c = load("portcullis.toml", None, no_env()).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.server.request_timeout.0, Duration::from_secs(30));
    }

    #[test]
    fn unknown_key_points_at_it() {
        let text = "[server]\nlisten = \"127.0.0.1:1\"\n  bogus = 1\n";
        let e = load("gw.toml", Some(text), no_env()).unwrap_err();
        assert_eq!(e.position, Some((3, 3)), "{e}");
        assert!(
            e.to_string()
                .starts_with("gw.toml:3:3: unknown field `bogus`"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_point_at_the_value() {
        let text = "[server]\nrequest_timeout = \"5x\"\n";
        let e = load("gw.toml", Some(text), no_env()).unwrap_err();
        assert_eq!(e.position, Some((2, 19)), "{e}");
        assert!(e.message.contains("unknown unit"), "{e}");
        let text = "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"nope\"]\n";
        let e = load("gw.toml", Some(text), no_env()).unwrap_err();
        // toml points at the array holding the bad element.
        assert_eq!(e.position, Some((2, 19)), "{e}");
        let text = "[server]\nipv6_prefix = 129\n";
        let e = load("gw.toml", Some(text), no_env()).unwrap_err();
        assert_eq!(e.position, Some((2, 15)), "{e}");
        let text = "[headers]\naccept_request_id = \"sometimes\"\n";
        assert!(load("gw.toml", Some(text), no_env()).is_err());
        let text = "[server\n";
        assert!(load("gw.toml", Some(text), no_env()).is_err());
    }

    #[test]
    fn env_overrides_apply_and_are_typed() {
        let text = "[server]\nlisten = \"127.0.0.1:1\"\n";
        let c = load(
            "gw.toml",
            Some(text),
            env(&[
                ("PORTCULLIS_SERVER__LISTEN", "0.0.0.0:8081"),
                ("portcullis_server__max_body_bytes", "250"),
                ("PORTCULLIS_SERVER__TRUSTED_PROXIES", "[\"10.0.0.0/8\"]"),
                (
                    "PORTCULLIS_HEADERS__SECURITY__X_FRAME_OPTIONS",
                    "SAMEORIGIN",
                ),
                ("PORTCULLIS_ADMIN_TOKEN", "not-config"),
                ("PORTCULLIS_FOO", "not-config"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:8081");
        assert_eq!(c.server.max_body_bytes, 250);
        assert_eq!(c.server.trusted_proxies.len(), 1);
        assert_eq!(c.headers.security.x_frame_options, "SAMEORIGIN");
    }

    #[test]
    fn env_override_naming_no_key_is_an_error() {
        let e = load("gw.toml", None, env(&[("PORTCULLIS_SERVER__NOPE", "1")])).unwrap_err();
        assert_eq!(e.origin, "env PORTCULLIS_SERVER__NOPE");
        assert!(e.message.contains("unknown field `nope`"), "{e}");
        let e = load("gw.toml", None, env(&[("PORTCULLIS_NOPE__X", "1")])).unwrap_err();
        assert!(e.message.contains("unknown field `nope`"), "{e}");
        let e = load(
            "gw.toml",
            None,
            env(&[("PORTCULLIS_SERVER__LISTEN__X", "1")]),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("env PORTCULLIS_SERVER__LISTEN__X: "),
            "{e}"
        );
        let e = load(
            "gw.toml",
            None,
            env(&[("PORTCULLIS_SERVER__IPV6_PREFIX", "x")]),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("PORTCULLIS_SERVER__IPV6_PREFIX"),
            "{e}"
        );
    }

    #[test]
    fn resolved_config_prints_back_and_reloads_identically() {
        let c = load(
            "gw.toml",
            Some("[server]\nrequest_timeout = \"1500ms\"\n"),
            no_env(),
        )
        .unwrap();
        let printed = toml::to_string_pretty(&c).unwrap();
        assert_eq!(load("printed", Some(&printed), no_env()).unwrap(), c);
    }
}
