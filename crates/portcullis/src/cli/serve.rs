//! `portcullis serve`.

use super::{init_tracing, load_config, runtime, Failure};
use crate::gateway::{shutdown_signal, Bound};
use std::path::Path;

pub(super) fn run(path: Option<&Path>) -> Result<(), Failure> {
    let (config, _origin) = load_config(path)?;
    init_tracing(config.log.format);
    runtime()?.block_on(async {
        let bound = Bound::bind(config).await.map_err(Failure::Runtime)?;
        bound.run(shutdown_signal()).await.map_err(Failure::Runtime)
    })
}
