#!/bin/sh
# Regenerates the V4L2 bindings that crates/v4l2-sys-mit carries (so building mien needs no libclang):
# linux/videodev2.h through bindgen 0.65.1 (what the registry's v4l2-sys-mit 0.3.0 ran at build time),
# once per target architecture, with the kernel headers that target's Debian C library packages install.
#
#   tools/gen_v4l2_bindings.sh
#
# Needs: bindgen (cargo install bindgen-cli --version 0.65.1 --locked), libclang-dev, linux-libc-dev,
# libc6-dev-arm64-cross and libc6-dev-armhf-cross (tools/install-cross.sh installs the last two). Then
# `cargo test -p v4l2-sys-mit` on each target checks the result against the target's C compiler.
set -eu
cd "$(dirname "$0")/../crates/v4l2-sys-mit"
command -v bindgen >/dev/null || {
    echo "gen_v4l2_bindings.sh: bindgen not found (cargo install bindgen-cli --version 0.65.1 --locked)" >&2
    exit 1
}
for spec in x86_64:x86_64-unknown-linux-gnu aarch64:aarch64-unknown-linux-gnu arm:armv7-unknown-linux-gnueabihf; do
    arch=${spec%%:*}
    triple=${spec#*:}
    out=src/bindings/$arch.rs
    # The same invocation as the registry crate's build script (bindgen::Builder::default() on
    # wrapper.h; cargo's bindgen passes the target triple on to clang).
    bindgen wrapper.h -o "$out.tmp" -- --target="$triple"
    mv "$out.tmp" "$out"
    echo "wrote crates/v4l2-sys-mit/$out"
done
