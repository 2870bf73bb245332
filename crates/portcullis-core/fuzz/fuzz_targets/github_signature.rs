#![no_main]
//! See `portcullis_core_fuzz::github_signature`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_core_fuzz::github_signature(data));
