//! The fleet's own decoding (shared observations, authenticated datagrams and their
//! parts): see `checks::fleet`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gtmd_fuzz::checks::fleet(data));
