#!/usr/bin/env bash
# ARM cost of one inference per plan, as guest instructions under qemu-user (repeatable, unlike emulated
# time): runs `mien bench PLAN --threads 1 --runs N --warmup 0` with N=1 and N=3 on an emulated core and
# halves the difference, so loading, optimizing and preprocessing cancel out.
#
#   tools/arm_icount_plans.sh CPU MIEN_AARCH64_BINARY PLAN...
#   e.g. tools/arm_icount_plans.sh cortex-a76 target/aarch64-unknown-linux-gnu/debug/mien f32.mien int8.mien
#
# Needs ../shared/tools/arm-icount (or ARM_ICOUNT=path) and tools/install-cross.sh's packages.
set -euo pipefail
cpu=$1; bin=$2; shift 2
icount=${ARM_ICOUNT:-$(dirname "$0")/../../shared/tools/arm-icount/arm-icount}
count() {
  "$icount" "$cpu" "$bin" bench "$1" --threads 1 --runs "$2" --warmup 0 --json 2>&1 >/dev/null \
    | sed -n 's/^guest_instructions //p'
}
for plan in "$@"; do
  one=$(count "$plan" 1)
  three=$(count "$plan" 3)
  echo "{\"cpu\": \"$cpu\", \"plan\": \"$plan\", \"runs1\": $one, \"runs3\": $three, \"per_inference\": $(( (three - one) / 2 ))}"
done
