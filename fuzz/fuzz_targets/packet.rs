//! Raw packets into the request handler: see `checks::packet`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gtmd_fuzz::checks::packet(data));
