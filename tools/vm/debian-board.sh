#!/usr/bin/env bash
# An emulated arm64 board that boots Debian bookworm with systemd as PID 1 and the vivid camera driver,
# for testing the Debian package the way a Raspberry Pi or Jetson user installs it.
#
#   tools/vm/debian-board.sh image                  # build the disk image once; prints its folder
#   tools/vm/debian-board.sh boot --payload P.tar [--cpu cortex-a76] [--timeout 900]
#   tools/vm/debian-board.sh root --arch armhf      # an unbooted root (first stage only); prints it
#
# `image`: debootstrap (minbase + systemd, udev, kmod, procps) unpacks Debian's packages here; the
# second stage (the packages' maintainer scripts) runs inside the emulated board itself, booted once from
# a small initramfs, since this machine cannot run arm64 programs in a chroot. Debian's arm64 kernel and
# the modules vivid, virtio and ext4 need go with it. The result is cached by the hash of these scripts,
# the package list and the kernel version in $MIEN_CACHE/vm/debian-arm64/<hash>/ (4 min under TCG on 2 cores
# the first time; seconds after). Change `image_recipe` with any change to how the image is made. Needs root (debootstrap), debootstrap, mkfs.ext4, qemu-system-aarch64.
#
# `boot`: boots the image (copy-on-write: the cached image is never changed) with a tar archive attached
# as /dev/vdb; the board's mien-board-payload.service unpacks it into /run/payload, runs its run.sh with
# the console as output, and powers the board off. The console goes to stdout.
#
# `root`: Debian's packages for ARCH unpacked by debootstrap's first stage, without maintainer scripts,
# cached like the image: enough for a binary package's files and qemu-user (`qemu-arm -L ROOT`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
arch=arm64
suite=bookworm
mirror="${MIEN_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
packages=systemd,systemd-sysv,udev,dbus,kmod,procps,libnss-systemd
cache_root="${MIEN_CACHE:-$HOME/.cache/mien}/vm"

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }
# The version of how the image is made (below): part of its cache key with board-init, lib.sh, the
# packages and the kernel.
image_recipe=1
[ $# -ge 1 ] || { usage >&2; exit 2; }
command=$1; shift

# shellcheck source=tools/vm/lib.sh
. "$here/lib.sh"

image_dir() {
  local kver hash
  mkdir -p "$cache_root/$arch"
  # tools/vm/build.sh fills the same kernel cache: one at a time.
  kver=$(exec 8>"$cache_root/$arch/.lock"; flock 8; vm_fetch_kernel "$arch" "$cache_root/$arch")
  hash=$(cat "$here/board-init" "$here/lib.sh" | sha256sum | cut -c1-16)
  hash=$(printf '%s %s %s %s %s\n' "$image_recipe" "$hash" "$suite" "$packages" "$kver" | sha256sum | cut -c1-12)
  echo "$cache_root/debian-$arch/$hash"
}

# The initramfs that mounts the root disk (virtio and ext4 are modules in Debian's kernel).
make_initrd() {
  local kcache=$1 kver=$2 out=$3 m
  local moddir="$kcache/kernel/lib/modules/$kver" initrd="$out/initrd.partial"
  rm -rf "$initrd" && mkdir -p "$initrd"/{bin,dev,proc,sys,newroot,lib/modules}
  dpkg -x "$kcache/busybox.deb" "$out/busybox-deb"
  mv "$out/busybox-deb/bin/busybox" "$initrd/bin/busybox" && rm -rf "$out/busybox-deb"
  ln -s busybox "$initrd/bin/sh"
  : >"$initrd/lib/modules/load-order"
  for name in virtio_mmio virtio_pci virtio_blk crc32c_generic ext4; do
    for m in $(vm_module_closure "$moddir" "$name"); do
      grep -qx "$(basename "${m%.xz}")" "$initrd/lib/modules/load-order" 2>/dev/null && continue
      vm_copy_module "$moddir" "$m" "$initrd/lib/modules" >>"$initrd/lib/modules/load-order"
    done
  done
  cp "$here/board-init" "$initrd/init" && chmod +x "$initrd/init"
  (cd "$initrd" && find . | cpio -o -H newc --quiet | gzip -1 >"$out/initrd.gz.partial")
  mv "$out/initrd.gz.partial" "$out/initrd.gz" && rm -rf "$initrd"
}

qemu_board() {
  local dir=$1 cpu=$2 timeout_s=$3 append=$4; shift 4
  timeout "$timeout_s" qemu-system-aarch64 -M virt -cpu "$cpu" -smp 2 -m 2048 -kernel "$dir/vmlinuz" \
    -initrd "$dir/initrd.gz" -append "console=ttyAMA0 loglevel=3 panic=-1 $append" \
    -nographic -no-reboot -nic none "$@"
}

build_image() {
  local dir kver kcache root m
  dir=$(image_dir)
  if [ -f "$dir/rootfs.img" ]; then echo "$dir"; return; fi
  [ "$(id -u)" -eq 0 ] || { echo "tools/vm/debian-board.sh: building the image needs root (debootstrap)" >&2; exit 2; }
  for tool in debootstrap mkfs.ext4 qemu-system-aarch64 cpio dpkg; do
    command -v "$tool" >/dev/null || { echo "tools/vm/debian-board.sh: '$tool' not found (apt-get install debootstrap e2fsprogs qemu-system-arm cpio)" >&2; exit 2; }
  done
  kcache="$cache_root/$arch"
  kver=$(basename "$(ls -d "$kcache/kernel/lib/modules/"* | head -1)")
  local work="$dir.partial"
  rm -rf "$work" && mkdir -p "$work"
  root="$work/root"
  echo "vm: debootstrap $suite $arch (first stage) into $root" >&2
  debootstrap --foreign --arch="$arch" --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >&2
  # The first stage leaves /proc a link to the host's; the board mounts its own.
  if [ -L "$root/proc" ]; then rm "$root/proc" && mkdir "$root/proc"; fi

  # vivid's modules (and the root disk's, for modprobe's sake) under /lib/modules, with their index.
  local moddir="$kcache/kernel/lib/modules/$kver" target="$root/usr/lib/modules/$kver"
  for name in vivid virtio_blk ext4; do
    for m in $(vm_module_closure "$moddir" "$name"); do
      mkdir -p "$target/$(dirname "$m")"
      cp "$moddir/$m" "$target/$m"
    done
  done
  cp "$moddir"/modules.{order,builtin,builtin.modinfo} "$target/" 2>/dev/null || true
  depmod -b "$root" "$kver"
  mkdir -p "$root/etc/modules-load.d" "$root/etc/modprobe.d" "$root/etc/systemd/system" "$root/usr/local/sbin"
  # One vivid device with a capture and an output node (node_types bits 0 and 8), loaded at boot.
  echo vivid >"$root/etc/modules-load.d/vivid.conf"
  echo "options vivid n_devs=1 node_types=0x101" >"$root/etc/modprobe.d/vivid.conf"
  echo "/dev/vda / ext4 defaults 0 1" >"$root/etc/fstab"
  echo mien-board >"$root/etc/hostname"

  # The payload runner: a tar on /dev/vdb, unpacked and run with the console as output, then power off.
  cat >"$root/usr/local/sbin/mien-board-payload" <<'PAYLOAD'
#!/bin/sh
i=0
while [ ! -b /dev/vdb ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
if [ -b /dev/vdb ]; then
  mkdir -p /run/payload && tar -xf /dev/vdb -C /run/payload && cd /run/payload && sh ./run.sh
  echo "MIEN-BOARD-DONE rc=$?"
else
  echo "MIEN-BOARD-DONE no payload"
fi
sync
systemctl poweroff --force --force
PAYLOAD
  chmod 755 "$root/usr/local/sbin/mien-board-payload"
  cat >"$root/etc/systemd/system/mien-board-payload.service" <<'UNIT'
[Unit]
Description=mien board test payload (a tar archive on /dev/vdb)
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/mien-board-payload
StandardOutput=tty
StandardError=tty
TTYPath=/dev/console
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
UNIT
  cat >"$root/root/mien-stage2.sh" <<'STAGE2'
#!/bin/sh
set -e
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive
/debootstrap/debootstrap --second-stage
systemctl enable mien-board-payload.service
# Nothing on the console but the payload's output and systemd's errors; no timers that wake apt.
systemctl mask serial-getty@ttyAMA0.service getty@tty1.service apt-daily.timer apt-daily-upgrade.timer \
  e2scrub_all.timer fstrim.timer dpkg-db-backup.timer
apt-get clean
rm -f /root/mien-stage2.sh
STAGE2

  echo "vm: root disk image" >&2
  mkfs.ext4 -q -L mien-root -d "$root" "$work/rootfs.img" 2G
  rm -rf "$root"
  make_initrd "$kcache" "$kver" "$work"
  cp "$kcache/kernel/boot/vmlinuz-$kver" "$work/vmlinuz"
  echo "vm: second stage inside the emulated board (maintainer scripts under TCG: minutes)" >&2
  local console="$work/stage2.log"
  qemu_board "$work" cortex-a76 2400 "mien.stage2" -drive "file=$work/rootfs.img,if=virtio,format=raw" >"$console" 2>&1 || true
  if ! grep -q "MIEN-STAGE2-END rc=0" "$console"; then
    echo "tools/vm/debian-board.sh: the second stage failed; console in $console:" >&2
    tail -40 "$console" >&2
    exit 1
  fi
  rm -rf "$dir" && mv "$work" "$dir"
  echo "$dir"
}

case "$command" in
  image)
    mkdir -p "$cache_root/debian-$arch"
    exec 9>"$cache_root/debian-$arch/.lock"
    flock 9
    build_image
    ;;
  boot)
    payload="" cpu=cortex-a76 timeout_s=900
    while [ $# -gt 0 ]; do
      case "$1" in
        --payload) payload="$2"; shift 2 ;;
        --cpu) cpu="$2"; shift 2 ;;
        --timeout) timeout_s="$2"; shift 2 ;;
        *) echo "tools/vm/debian-board.sh boot: unknown argument '$1' (see --help)" >&2; exit 2 ;;
      esac
    done
    [ -f "$payload" ] || { echo "tools/vm/debian-board.sh boot: --payload: '$payload' is not a tar archive" >&2; exit 2; }
    dir=$(image_dir)
    [ -f "$dir/rootfs.img" ] || { echo "tools/vm/debian-board.sh boot: no image in $dir (run: tools/vm/debian-board.sh image)" >&2; exit 2; }
    qemu_board "$dir" "$cpu" "$timeout_s" "systemd.show_status=error" \
      -drive "file=$dir/rootfs.img,if=virtio,format=raw,snapshot=on" \
      -drive "file=$payload,if=virtio,format=raw,readonly=on"
    ;;
  root)
    root_arch=""
    while [ $# -gt 0 ]; do
      case "$1" in
        --arch) root_arch="$2"; shift 2 ;;
        *) echo "tools/vm/debian-board.sh root: unknown argument '$1' (see --help)" >&2; exit 2 ;;
      esac
    done
    case "$root_arch" in arm64|armhf|amd64) ;; *) echo "tools/vm/debian-board.sh root: --arch: expected arm64, armhf or amd64, got '$root_arch'" >&2; exit 2 ;; esac
    dir="$cache_root/debian-root-$root_arch/$(printf '%s %s %s\n' "$image_recipe" "$suite" minbase | sha256sum | cut -c1-12)"
    if [ ! -d "$dir/root" ]; then
      [ "$(id -u)" -eq 0 ] || { echo "tools/vm/debian-board.sh root: needs root (debootstrap)" >&2; exit 2; }
      command -v debootstrap >/dev/null || { echo "tools/vm/debian-board.sh root: 'debootstrap' not found (apt-get install debootstrap)" >&2; exit 2; }
      mkdir -p "$(dirname "$dir")"
      exec 9>"$(dirname "$dir")/.lock"
      flock 9
      if [ ! -d "$dir/root" ]; then
        rm -rf "$dir.partial" && mkdir -p "$dir.partial"
        echo "vm: debootstrap $suite $root_arch (first stage) into $dir" >&2
        debootstrap --foreign --arch="$root_arch" --variant=minbase "$suite" "$dir.partial/root" "$mirror" >&2
        rm -rf "$dir.partial/root/var/cache/apt/archives/"*.deb
        rm -rf "$dir" && mv "$dir.partial" "$dir"
      fi
    fi
    echo "$dir/root"
    ;;
  -h|--help) usage ;;
  *) echo "tools/vm/debian-board.sh: unknown command '$command' (image or boot)" >&2; exit 2 ;;
esac
