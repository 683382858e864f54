//! Raw V4L2 bindings: `linux/videodev2.h` as bindgen 0.65 writes it for each target architecture,
//! generated once into `src/bindings/` by `tools/gen_v4l2_bindings.sh` (the registry crate of the same
//! name runs bindgen, and so needs libclang, on every build). The items are the registry crate's, so the
//! `v4l` crate builds against this one unchanged.
//!
//! bindgen's own layout tests (size, alignment and field offsets of every struct, as clang saw the
//! headers for that target) are part of the generated files; `tests/layout.rs` also checks the main
//! structs against the target's C compiler and installed kernel headers.

#![allow(clippy::all)]
#![allow(deref_nullptr)]
#![allow(non_camel_case_types)]
#![allow(non_snake_case)]
#![allow(non_upper_case_globals)]

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
include!("bindings/x86_64.rs");

#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
include!("bindings/aarch64.rs");

#[cfg(all(target_os = "linux", target_arch = "arm"))]
include!("bindings/arm.rs");

#[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm"))))]
compile_error!(
    "v4l2-sys-mit carries V4L2 bindings for Linux on x86-64, aarch64 and armv7 only; \
     generate them for this target with tools/gen_v4l2_bindings.sh"
);
