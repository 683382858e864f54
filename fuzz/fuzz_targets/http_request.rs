#![no_main]
//! libFuzzer harness: see mien_fuzz::http_request.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mien_fuzz::http_request(data));
