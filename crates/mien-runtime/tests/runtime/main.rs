//! mien-runtime's integration tests on the committed plans, one module per area, linked into one test
//! binary (each links tract; in CI they run natively and under qemu for aarch64 and armv7).

mod f16_kernels;
mod fixtures;
mod int8_kernels;
