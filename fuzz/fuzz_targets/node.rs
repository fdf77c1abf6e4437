//! `cargo fuzz run node`: see `footlight_fuzz::node`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| footlight_fuzz::node(data));
