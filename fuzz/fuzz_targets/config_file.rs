#![no_main]
//! libFuzzer harness: see mien_fuzz::config_file.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mien_fuzz::config_file(data));
