//! The configuration model (SPEC "Configuration") and its loading.
//!
//! Every value is validated while it is deserialized, so an error points at the exact
//! `file:line:column` of the offending value; the types here are already the resolved
//! form (durations, addresses, networks), and `check` prints them back as TOML.

mod load;
mod model;
mod observe;
mod policy;
mod validate;
mod values;

pub use load::{load, Diagnostic, ENV_PREFIX};
pub use model::*;
pub use validate::{analyze, Warning};
pub use values::{Cidr, DurationValue, UpstreamUrl};
