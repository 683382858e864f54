#![no_main]
//! libFuzzer harness: see mien_fuzz::mqtt_messages.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mien_fuzz::mqtt_messages(data));
