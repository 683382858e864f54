#![no_main]
//! libFuzzer harness: see mien_fuzz::plan_manifest.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mien_fuzz::plan_manifest(data));
