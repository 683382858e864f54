//! What the `mien` binary's test suites share: where things are, and how to start the binary.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The committed tiny plan.
pub fn tiny_plan() -> PathBuf {
    root().join("models/tiny-vit/tiny-vit.mien")
}

/// The committed photos.
pub fn photos() -> PathBuf {
    root().join("tests/data/photos")
}

/// Runs the binary, through `MIEN_TEST_RUNNER` when set (e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu`
/// for cross-compiled test runs, where cargo's runner wraps only the test binary itself).
pub fn mien_command() -> Command {
    let runner = std::env::var("MIEN_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(env!("CARGO_BIN_EXE_mien"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_mien")),
    }
}

/// Whether this run is CI (`CI=true` or `1`), where a missing prerequisite fails instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

/// Fails in CI; elsewhere says why `test` is skipped.
pub fn missing(test: &str, what: &str) {
    if in_ci() {
        panic!("CI=true and {what}");
    }
    eprintln!("SKIPPED {test}: {what} (CI would fail here)");
}
