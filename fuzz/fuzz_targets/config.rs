//! Arbitrary config text: see `checks::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gtmd_fuzz::checks::config(data));
