//! `portcullis serve`.

use super::{init_tracing, load_config, runtime, Failure};
use crate::gateway::{shutdown_signal, Bound};
use portcullis_core::config::StoreKind;
use std::path::Path;

pub(super) fn run(path: Option<&Path>) -> Result<(), Failure> {
    let (config, _origin) = load_config(path)?;
    if *config.store.kind.get_ref() == StoreKind::Redis {
        let var = &config.store.url_env;
        if std::env::var(var).map_or(true, |v| v.trim().is_empty()) {
            return Err(Failure::Config(format!(
                "[store] kind = \"redis\" needs the Redis URL in the environment variable {var}, which is not set"
            )));
        }
    }
    crate::webhook::routes(&config).map_err(Failure::Config)?;
    init_tracing(&config);
    runtime()?.block_on(async {
        let bound = Bound::bind(config).await.map_err(Failure::Runtime)?;
        bound.run(shutdown_signal()).await.map_err(Failure::Runtime)
    })
}
