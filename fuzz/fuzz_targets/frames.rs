//! `cargo fuzz run frames`: see `footlight_fuzz::frames`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| footlight_fuzz::frames(data));
