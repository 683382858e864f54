#!/usr/bin/env bash
# Builds the Debian packages: mien (the device binary, default plans, /etc/mien/mien.toml, the systemd
# service, man pages, completions) for arm64, armhf and amd64, and mien-convert (the workstation
# converter) for amd64 and arm64, into target/debian/, then checks each with lintian.
#
#   tools/package.sh                         # all three architectures, release builds (fat LTO: slow)
#   tools/package.sh --target arm64          # one (repeat --target for more)
#   tools/package.sh --profile dev --no-build --fast   # package the debug builds already made (CI)
#   tools/package.sh --no-convert            # the mien packages only
#
# Needs cargo-deb (cargo install cargo-deb --locked), lintian, and for arm64/armhf the cross toolchains
# and qemu-user (tools/install-cross.sh). Man pages and completions come from the built binary itself
# (`mien man`, `mien completions`), run under qemu-user when it is an ARM one.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=() profile=release build=1 fast=() convert=1 lint=1
while [ $# -gt 0 ]; do
  case "$1" in
    --target) targets+=("$2"); shift 2 ;;
    --profile) profile="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --fast) fast=(--fast); shift ;;
    --no-convert) convert=0; shift ;;
    --no-lintian) lint=0; shift ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "tools/package.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(arm64 armhf amd64)
command -v cargo-deb >/dev/null || { echo "tools/package.sh: cargo-deb not found (cargo install cargo-deb --locked)" >&2; exit 2; }
[ "$lint" -eq 0 ] || command -v lintian >/dev/null || { echo "tools/package.sh: lintian not found (apt-get install lintian)" >&2; exit 2; }

triple_of() {
  case "$1" in
    arm64) echo aarch64-unknown-linux-gnu ;;
    armhf) echo armv7-unknown-linux-gnueabihf ;;
    amd64) echo x86_64-unknown-linux-gnu ;;
    *) echo "tools/package.sh: --target: expected arm64, armhf or amd64, got '$1'" >&2; exit 2 ;;
  esac
}
# Runs a binary built for ARCH on this machine.
run_for() {
  local arch=$1; shift
  case "$arch" in
    arm64) qemu-aarch64 -L /usr/aarch64-linux-gnu "$@" ;;
    armhf) TRACT_CPU_ARM32_NEON=true qemu-arm -L /usr/arm-linux-gnueabihf "$@" ;;
    amd64) "$@" ;;
  esac
}
profile_dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
out=target/debian
mkdir -p "$out"
built=()
assets=target/debian-assets assets_made=0
for arch in "${targets[@]}"; do
  triple=$(triple_of "$arch")
  # amd64 builds go to target/<profile> (the host's own), ARM ones to target/<triple>/<profile>.
  target_args=()
  bin_dir=target/$profile_dir
  if [ "$arch" != amd64 ]; then target_args=(--target "$triple"); bin_dir=target/$triple/$profile_dir; fi
  if [ "$build" -eq 1 ]; then
    echo "== building mien for $arch ($profile)" >&2
    cargo build --locked --profile "$profile" -p mien "${target_args[@]}"
  fi
  [ -x "$bin_dir/mien" ] || { echo "tools/package.sh: $bin_dir/mien does not exist (build it, or drop --no-build)" >&2; exit 1; }
  # The same pages and completions for every architecture: made once, from the first build's clap
  # definitions (mien-convert's page goes into a folder of its own below).
  if [ "$assets_made" -eq 0 ]; then
    rm -rf "$assets.partial" && mkdir -p "$assets.partial/man" "$assets.partial/completions"
    run_for "$arch" "$bin_dir/mien" man "$assets.partial/man"
    run_for "$arch" "$bin_dir/mien" completions bash >"$assets.partial/completions/mien"
    run_for "$arch" "$bin_dir/mien" completions zsh >"$assets.partial/completions/_mien"
    run_for "$arch" "$bin_dir/mien" completions fish >"$assets.partial/completions/mien.fish"
    rm -rf "$assets" && mv "$assets.partial" "$assets"
    assets_made=1
  fi
  echo "== packaging mien for $arch" >&2
  deb=$(cargo deb --locked --no-build --strip -p mien --profile "$profile" "${target_args[@]}" "${fast[@]}" --output "$out" 2>&1 | tee /dev/stderr | tail -1)
  [ -f "$deb" ] || { echo "tools/package.sh: cargo deb wrote no package for $arch" >&2; exit 1; }
  built+=("$deb")
  if [ "$convert" -eq 1 ] && [ "$arch" != armhf ]; then
    if [ "$build" -eq 1 ]; then cargo build --locked --profile "$profile" -p mien-convert "${target_args[@]}"; fi
    if [ -x "$bin_dir/mien-convert" ]; then
      [ -f "$assets/convert-man/mien-convert.1" ] || run_for "$arch" "$bin_dir/mien-convert" --man-page "$assets/convert-man"
      echo "== packaging mien-convert for $arch" >&2
      deb=$(cargo deb --locked --no-build --strip -p mien-convert --profile "$profile" "${target_args[@]}" "${fast[@]}" --output "$out" 2>&1 | tee /dev/stderr | tail -1)
      [ -f "$deb" ] || { echo "tools/package.sh: cargo deb wrote no mien-convert package for $arch" >&2; exit 1; }
      built+=("$deb")
    elif [ "$build" -eq 0 ]; then
      echo "tools/package.sh: no $bin_dir/mien-convert: mien-convert for $arch not packaged" >&2
    fi
  fi
done
status=0
if [ "$lint" -eq 1 ]; then
  for deb in "${built[@]}"; do
    echo "== lintian $deb" >&2
    # Errors fail the build; warnings we keep are listed, with the reason, in debian/lintian-overrides.
    lintian --fail-on error --suppress-tags-from-file tools/lintian-suppressed.txt "$deb" || status=1
  done
fi
printf '%s\n' "${built[@]}"
exit "$status"
