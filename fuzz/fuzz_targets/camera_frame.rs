#![no_main]
//! libFuzzer harness: see mien_fuzz::camera_frame.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mien_fuzz::camera_frame(data));
