//! `cargo fuzz run session`: see `footlight_fuzz::session`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| footlight_fuzz::session(data));
