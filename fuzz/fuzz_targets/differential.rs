//! The fast path against the full path: see `checks::differential`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gtmd_fuzz::checks::differential(data));
