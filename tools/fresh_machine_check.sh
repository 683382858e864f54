#!/usr/bin/env bash
# What a new user gets from the README's two quick-start commands on a machine with only rustup and a C
# compiler: a fresh clone of this repository's HEAD, empty CARGO_TARGET_DIR and MIEN_CACHE, and a PATH
# without the optional tools (qemu, cross compilers, Python, cpio, clang/libclang, apt, kmod), then
#   cargo run -p mien -- run --source tests/data/photos
#   cargo test --workspace --locked --no-fail-fast
# Both must succeed; the tests whose tools are missing must be skipped with a one-line reason. Also checks
# that no build or normal dependency of the workspace, for any target, is bindgen or clang-sys.
#
#   tools/fresh_machine_check.sh [WORK_DIR]     (default: a new temporary folder; kept for inspection)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d -t mien-fresh-XXXXXX)}"
mkdir -p "$work"
echo "fresh-machine check in $work"

tree=$(cd "$repo" && cargo tree --workspace -e build,normal --target all --prefix none --format '{p}' | awk '{print $1}' | sort -u)
if grep -qxE 'bindgen|clang-sys' <<<"$tree"; then
  echo "FAIL: the dependency tree has bindgen or clang-sys:"; grep -xE 'bindgen|clang-sys' <<<"$tree"; exit 1
fi
echo "ok: no bindgen or clang-sys among $(wc -l <<<"$tree") build and normal dependencies (all targets)"

rm -rf "$work/clone" "$work/target" "$work/cache" "$work/bin"
git clone --quiet "$repo" "$work/clone"
mkdir -p "$work/target" "$work/cache" "$work/bin"
# A PATH with every program of this machine except the optional ones the full test suite would use.
optional='^(qemu-.*|python.*|pip.*|clang.*|llvm-.*|libclang.*|aarch64-linux-gnu-.*|arm-linux-gnueabihf-.*|cpio|depmod|kmod|apt|apt-get|apt-cache|dpkg|dpkg-.*|v4l2-ctl|mosquitto.*|chromium.*)$'
for dir in /usr/local/bin /usr/bin /bin; do
  for program in "$dir"/*; do
    name=$(basename "$program")
    [[ "$name" =~ $optional ]] && continue
    [ -e "$work/bin/$name" ] || ln -s "$program" "$work/bin/$name"
  done
done
cargo_bin="$(dirname "$(command -v cargo)")"
fresh_env=(env -i HOME="$HOME" PATH="$cargo_bin:$work/bin" CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
  RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}" CARGO_TARGET_DIR="$work/target" MIEN_CACHE="$work/cache"
  CARGO_TERM_COLOR=never LANG=C.UTF-8)

cd "$work/clone"
echo "== cargo run -p mien -- run --source tests/data/photos"
"${fresh_env[@]}" cargo run -p mien -- run --source tests/data/photos >"$work/run.out" 2>"$work/run.err" || {
  echo "FAIL: the quick-start run failed:"; tail -20 "$work/run.err"; exit 1
}
cat "$work/run.out"
[ -s "$work/run.out" ] || { echo "FAIL: the quick-start run printed no results"; exit 1; }

echo "== cargo test --workspace --locked --no-fail-fast"
# --nocapture only so that the tests' SKIPPED lines (stderr) reach the log.
"${fresh_env[@]}" cargo test --workspace --locked --no-fail-fast -- --nocapture >"$work/test.out" 2>&1 || {
  echo "FAIL: cargo test --workspace failed:"; grep -E '^(test .* FAILED|failures:|---- )|panicked' "$work/test.out" | head -40; exit 1
}
grep -E '^test result: ' "$work/test.out" | sed -E 's/.* ([0-9]+) passed; ([0-9]+) failed; ([0-9]+) ignored.*/\1 \2 \3/' |
  awk '{p += $1; f += $2; i += $3} END {printf "cargo test --workspace: %d passed, %d failed, %d ignored\n", p, f, i}'
echo "skipped for want of a tool or data (one line each):"
grep -oE 'SKIPPED [^:]+: .*' "$work/test.out" | sort | uniq -c || echo "  (none)"
echo "fresh-machine check passed"
