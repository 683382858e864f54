#!/bin/sh
# Installs what ARM cross builds and emulated test runs need on Debian/Ubuntu, idempotently:
# GNU cross compilers and C libraries (tract-linalg assembles its NEON kernels with the target's C
# compiler, which .cargo/config.toml names as CC_<target> and as the linker), qemu-user to run ARM test
# binaries, and the rustup targets. (No libclang: the V4L2 bindings are pre-generated, crates/v4l2-sys-mit.)
#
#   tools/install-cross.sh [EXTRA_DEBIAN_PACKAGE...]   (.ci/run adds what the emulated board needs)
set -eu
targets="aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf"
packages="gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross qemu-user $*"
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
fi
installed=$(rustup target list --installed)
for t in $targets; do
    echo "$installed" | grep -qx "$t" || rustup target add "$t"
done
echo "cross toolchains ready: $targets"
