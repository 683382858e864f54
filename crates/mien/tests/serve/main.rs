//! `mien run --serve` as clients see it: the real binary on a free loopback port, real HTTP requests,
//! event streams, a load of clients and a real browser.
//!
//! The load and browser tests run on x86-64 only: under qemu-user (the ARM test runs) a hundred clients
//! or a browser measure the emulator; the server code they exercise is the same.

mod api;
#[cfg(target_arch = "x86_64")]
mod browser;
mod client;
#[path = "../common/mod.rs"]
mod common;
#[cfg(target_arch = "x86_64")]
mod load;
mod mien;
