//! `cargo fuzz run payload`: see `footlight_fuzz::payload`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| footlight_fuzz::payload(data));
