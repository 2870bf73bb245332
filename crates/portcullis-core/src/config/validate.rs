//! Checks across keys (names that must exist, be unique, fit), and the warnings `check`
//! prints (routes that can never match, policies nothing uses).

use super::load::{line_column, Diagnostic};
use super::model::Config;
use std::collections::HashSet;
use std::ops::Range;

/// A configuration problem that does not stop the gateway.
pub type Warning = Diagnostic;

/// The first cross-key error, with the span of the offending value.
pub(crate) fn first_error(config: &Config) -> Option<(Range<usize>, String)> {
    let mut names = HashSet::new();
    for p in &config.policy {
        let name = p.name.get_ref();
        if name.is_empty() {
            return Some((p.name.span(), "policy name must not be empty".into()));
        }
        if !names.insert(name.as_str()) {
            return Some((p.name.span(), format!("duplicate policy name {name:?}")));
        }
    }
    for r in &config.route {
        for name in &r.policies {
            let Some(policy) = config
                .policy
                .iter()
                .find(|p| p.name.get_ref() == name.get_ref())
            else {
                return Some((name.span(), format!("unknown policy {:?}", name.get_ref())));
            };
            let capacity = policy.limit.saturating_add(policy.burst);
            if r.cost > capacity {
                return Some((
                    r.path.span(),
                    format!(
                        "route cost {} exceeds what policy {:?} can ever admit ({} = limit + burst)",
                        r.cost,
                        name.get_ref(),
                        capacity
                    ),
                ));
            }
        }
    }
    None
}

/// Warnings for `check`: routes shadowed by an earlier one, policies nothing uses.
pub fn analyze(config: &Config, origin: &str, text: &str) -> Vec<Warning> {
    let at = |span: Range<usize>, message: String| Diagnostic {
        origin: origin.to_owned(),
        position: (span.end > 0).then(|| line_column(text, span.start)),
        message,
    };
    let mut warnings = Vec::new();
    for (i, later) in config.route.iter().enumerate() {
        let shadow = config.route[..i].iter().find(|earlier| {
            let methods_cover = earlier.methods.is_empty()
                || (!later.methods.is_empty()
                    && later.methods.iter().all(|m| earlier.methods.contains(m)));
            methods_cover && earlier.path.get_ref().covers(later.path.get_ref())
        });
        if let Some(earlier) = shadow {
            warnings.push(at(
                later.path.span(),
                format!(
                    "route {} can never match: the earlier route {} matches all its requests first",
                    later.path.get_ref(),
                    earlier.path.get_ref()
                ),
            ));
        }
    }
    for p in &config.policy {
        let name = p.name.get_ref();
        let used = name == "default"
            || config
                .route
                .iter()
                .any(|r| r.policies.iter().any(|n| n.get_ref() == name));
        if !used {
            warnings.push(at(
                p.name.span(),
                format!(
                    "policy {name:?} is never used: no route lists it (and it is not \"default\")"
                ),
            ));
        }
    }
    warnings
}
