#!/usr/bin/env bash
# Boots the VM that tools/vm/build.sh made and prints its serial console on stdout.
#   tools/vm/run.sh --dir target/vm/arm64 [--cpu cortex-a76|cortex-a72|max] [--timeout 600] \
#       [--steps capture,pipeline,soak]   (groups of tools/vm/guest-test.sh to run; default capture)
#       [--soak FRAMES,EVERY]   (the soak group: frames in all, vivid reloaded every EVERY; default 400,100)
# arm64 runs qemu-system-aarch64 -M virt; amd64 qemu-system-x86_64 (TCG: KVM here is nested and hangs).
# No network device: the guest needs none, and -M virt's default virtio NIC wants ipxe-qemu's option ROM.
set -euo pipefail
dir="" cpu=cortex-a76 timeout_s=600 steps=capture soak=400,100
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --cpu) cpu="$2"; shift 2 ;;
    --timeout) timeout_s="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --soak) soak="$2"; shift 2 ;;
    -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "tools/vm/run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -f "$dir/initrd.gz" ] && [ -f "$dir/vmlinuz" ] && [ -f "$dir/arch" ] || { echo "tools/vm/run.sh: --dir: '$dir' has no initrd.gz/vmlinuz/arch (run tools/vm/build.sh)" >&2; exit 2; }
if [ "$(cat "$dir/arch")" = amd64 ]; then
  exec timeout "$timeout_s" qemu-system-x86_64 -M q35 -cpu max -smp 2 -m 1024 -kernel "$dir/vmlinuz" \
    -initrd "$dir/initrd.gz" -append "console=ttyS0 loglevel=3 panic=-1 mien.steps=$steps mien.soak=$soak" -nographic -no-reboot -nic none
fi
exec timeout "$timeout_s" qemu-system-aarch64 -M virt -cpu "$cpu" -smp 2 -m 1024 -kernel "$dir/vmlinuz" \
  -initrd "$dir/initrd.gz" -append "console=ttyAMA0 loglevel=3 panic=-1 mien.steps=$steps mien.soak=$soak" -nographic -no-reboot -nic none
