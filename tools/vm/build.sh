#!/usr/bin/env bash
# Builds a bootable initramfs that runs mien against the kernel's vivid V4L2 driver:
#   busybox (static) + vivid.ko and its dependencies from Debian's kernel package + v4l2-ctl (Debian's
#   v4l-utils, to feed vivid's output node) + the mien binary and the C libraries both link + a plan,
#   the face detector plan and any --add files + an /init that loads vivid, runs
#   tools/vm/guest-test.sh and powers off. tools/vm/run.sh boots it.
#
#   tools/vm/build.sh --arch arm64 --binary target/aarch64-unknown-linux-gnu/debug/mien \
#       --plan models/tiny-vit/tiny-vit-int8.mien --out target/vm/arm64 [--add faces.yuyv ...]
#
# Debian packages (kernel, busybox) are downloaded once into $MIEN_CACHE/vm/<arch> (default
# ~/.cache/mien/vm), never into the repository. Host needs: apt-get, dpkg, depmod (kmod), cpio, gzip.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
arch=arm64 binary="" plan="" out="" adds=()
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch="$2"; shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    --plan) plan="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --add) adds+=("$2"); shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "tools/vm/build.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$arch" in
  arm64) libroot=/usr/aarch64-linux-gnu; readelf=aarch64-linux-gnu-readelf ;;
  amd64) libroot=/; readelf=readelf ;;
  *) echo "tools/vm/build.sh: --arch: expected arm64 or amd64, got '$arch'" >&2; exit 2 ;;
esac
[ -n "$binary" ] && [ -x "$binary" ] || { echo "tools/vm/build.sh: --binary: '$binary' is not an executable mien binary" >&2; exit 2; }
[ -n "$plan" ] && [ -e "$plan" ] || { echo "tools/vm/build.sh: --plan: '$plan' does not exist" >&2; exit 2; }
[ -n "$out" ] || { echo "tools/vm/build.sh: --out DIR is required" >&2; exit 2; }
for tool in apt-get dpkg cpio gzip "$readelf"; do
  command -v "$tool" >/dev/null || { echo "tools/vm/build.sh: '$tool' not found (apt-get install qemu-system-arm cpio kmod binutils)" >&2; exit 2; }
done
depmod=$(command -v depmod || echo /sbin/depmod)
[ -x "$depmod" ] || { echo "tools/vm/build.sh: depmod not found (apt-get install kmod)" >&2; exit 2; }

cache="${MIEN_CACHE:-$HOME/.cache/mien}/vm/$arch"
mkdir -p "$cache"
# shellcheck source=tools/vm/lib.sh
. "$here/lib.sh"
# Tests build several images at once (cargo runs them in parallel) from one cache: apt's lists and the
# extracted packages are shared, so one build at a time fills it (apt's own locking is off, as it
# would want the system's lock directories).
command -v flock >/dev/null || { echo "tools/vm/build.sh: 'flock' not found (apt-get install util-linux)" >&2; exit 2; }
exec 9>"$cache/.lock"
flock 9
mapfile -t apt_opts < <(vm_apt_opts "$arch" "$cache")
kver=$(vm_fetch_kernel "$arch" "$cache")
# v4l2-ctl and the libraries it needs beyond the C/C++ runtime (which come from the cross toolchain).
if [ ! -x "$cache/v4l-utils/usr/bin/v4l2-ctl" ]; then
  [ -d "$cache/lists" ] && ls "$cache/lists" | grep -q Packages || apt-get "${apt_opts[@]}" -qq update
  echo "vm: downloading v4l-utils ($arch)" >&2
  rm -rf "$cache/v4l-debs" "$cache/v4l-utils.partial" && mkdir -p "$cache/v4l-debs"
  (cd "$cache/v4l-debs" && apt-get "${apt_opts[@]}" -qq download v4l-utils libv4l-0 libv4lconvert0 libjpeg62-turbo)
  for deb in "$cache/v4l-debs"/*.deb; do dpkg -x "$deb" "$cache/v4l-utils.partial"; done
  mv "$cache/v4l-utils.partial" "$cache/v4l-utils"
fi
rm -rf "$out/initrd"
mkdir -p "$out/initrd"/{bin,dev,proc,sys,tmp,lib/modules,mien}
root="$out/initrd"
dpkg --fsys-tarfile "$cache/busybox.deb" | tar -x -C "$out" ./bin/busybox 2>/dev/null || dpkg -x "$cache/busybox.deb" "$out/busybox-deb"
if [ -f "$out/bin/busybox" ]; then mv "$out/bin/busybox" "$root/bin/busybox"; rmdir "$out/bin" 2>/dev/null || true
else mv "$out/busybox-deb/bin/busybox" "$root/bin/busybox"; rm -rf "$out/busybox-deb"; fi
ln -sf busybox "$root/bin/sh"

# vivid and what it needs, in load order.
moddir="$cache/kernel/lib/modules/$kver"
: > "$root/lib/modules/load-order"
for m in $(vm_module_closure "$moddir" vivid); do
  vm_copy_module "$moddir" "$m" "$root/lib/modules" >> "$root/lib/modules/load-order"
done

# The binaries and their shared libraries (ELF interpreter included), found in the target's C library
# and in the extracted v4l-utils packages, dependencies of dependencies included.
cp "$binary" "$root/mien/mien"
mkdir -p "$root/usr/bin"
cp "$cache/v4l-utils/usr/bin/v4l2-ctl" "$root/usr/bin/v4l2-ctl"
multiarch=$([ "$arch" = arm64 ] && echo aarch64-linux-gnu || echo x86_64-linux-gnu)
find_lib() {
  for d in "$cache/v4l-utils/usr/lib/$multiarch" "$libroot/lib" "$libroot/lib64" "$libroot/lib/x86_64-linux-gnu" "$libroot/usr/lib/x86_64-linux-gnu"; do
    [ -e "$d/$1" ] && { echo "$d/$1"; return; }
  done
  echo "tools/vm/build.sh: shared library $1 not found under $libroot or the v4l-utils packages" >&2; exit 1
}
copy_libs() {
  local elf=$1 lib interp
  interp=$("$readelf" -l "$elf" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
  if [ -n "$interp" ] && [ ! -e "$root$interp" ]; then
    mkdir -p "$root$(dirname "$interp")"
    cp -L "$(find_lib "$(basename "$interp")")" "$root$interp"
  fi
  for lib in $("$readelf" -d "$elf" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'); do
    [ -e "$root/lib/$lib" ] && continue
    cp -L "$(find_lib "$lib")" "$root/lib/$lib"
    [ -d "$root/lib64" ] && ln -sf "../lib/$lib" "$root/lib64/$lib"
    copy_libs "$root/lib/$lib"
  done
}
copy_libs "$root/mien/mien"
copy_libs "$root/usr/bin/v4l2-ctl"

cp "$plan" "$root/mien/plan.mien"
cp "$here/../../models/blazeface/blazeface-short.mien" "$root/mien/detector.mien"
for f in "${adds[@]}"; do cp "$f" "$root/mien/"; done
cp "$here/guest-test.sh" "$root/mien/guest-test.sh"
cp "$here/init" "$root/init"
chmod +x "$root/init" "$root/mien/guest-test.sh"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1 > "../initrd.gz.partial")
mv "$out/initrd.gz.partial" "$out/initrd.gz"
cp "$cache/kernel/boot/vmlinuz-$kver" "$out/vmlinuz"
echo "$kver" > "$out/kernel-version"
echo "$arch" > "$out/arch"
echo "vm: $out/initrd.gz ($(du -h "$out/initrd.gz" | cut -f1)), kernel $kver" >&2
