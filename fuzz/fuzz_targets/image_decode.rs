#![no_main]
//! libFuzzer harness: see mien_fuzz::image_decode.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mien_fuzz::image_decode(data));
