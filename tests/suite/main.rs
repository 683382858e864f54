//! The workspace-level end-to-end tests, one module per area, linked into one test binary: each test
//! binary links tract, and linking them one by one was most of the suite's build time.
//!
//! Run one area with its module name as the filter, e.g. `cargo test --test suite int8::` or
//! `cargo test --test suite vm_vivid`.

mod common;

mod bad_inputs;
mod bench_arm;

mod committed_plan;
mod convert_inputs;
mod debian_board;
mod device_dependencies;
mod eval;
mod face_detection;
mod fuzz_corpus;
mod half;
mod int8;
mod patterns;
mod pipeline;
mod plan_integrity;
mod reference_model;
mod tiny_vit;
mod vm_vivid;
