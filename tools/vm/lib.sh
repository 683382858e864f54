# Shared by tools/vm/build.sh (the busybox board) and tools/vm/debian-board.sh (the Debian board):
# Debian's kernel and busybox for an architecture, downloaded once into a cache, and the kernel modules a
# module needs, in load order. Source it; it defines functions only.

# apt options for a private package state of ARCH under CACHE (the host's dpkg is never touched).
vm_apt_opts() {
  local arch=$1 cache=$2
  mkdir -p "$cache/lists/partial" "$cache/apt-cache/archives/partial"
  printf '%s\n' -o "APT::Architecture=$arch" -o "APT::Architectures=$arch" -o "Dir::State::Lists=$cache/lists" \
    -o "Dir::Cache=$cache/apt-cache" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root"
}

# Downloads (once) the newest unsigned kernel image apt lists for ARCH and busybox-static into CACHE, and
# extracts the kernel into CACHE/kernel. Prints the kernel version.
vm_fetch_kernel() {
  local arch=$1 cache=$2 kpkg kver
  local -a apt_opts
  mapfile -t apt_opts < <(vm_apt_opts "$arch" "$cache")
  mkdir -p "$cache/debs"
  # Versions move; never hard-code one.
  if [ ! -f "$cache/kernel.deb" ] || [ ! -f "$cache/busybox.deb" ]; then
    echo "vm: fetching Debian $arch package lists" >&2
    apt-get "${apt_opts[@]}" -qq update
    kpkg=$(apt-cache "${apt_opts[@]}" pkgnames linux-image- | grep -E "^linux-image-[0-9.]+-[0-9]+-$arch-unsigned\$" | sort -V | tail -1)
    [ -n "$kpkg" ] || { echo "vm: no linux-image-*-$arch-unsigned package listed" >&2; return 1; }
    echo "vm: downloading $kpkg and busybox-static ($arch)" >&2
    (cd "$cache/debs" && rm -f ./*.deb && apt-get "${apt_opts[@]}" -qq download "$kpkg" busybox-static) || return 1
    mv "$cache/debs"/linux-image-*.deb "$cache/kernel.deb.partial" && mv "$cache/kernel.deb.partial" "$cache/kernel.deb"
    mv "$cache/debs"/busybox-static*.deb "$cache/busybox.deb"
  fi
  if [ ! -d "$cache/kernel/boot" ]; then
    rm -rf "$cache/kernel.partial"
    dpkg -x "$cache/kernel.deb" "$cache/kernel.partial"
    mv "$cache/kernel.partial" "$cache/kernel"
  fi
  kver=$(ls "$cache/kernel/lib/modules" | head -1)
  local depmod
  depmod=$(command -v depmod || echo /sbin/depmod)
  [ -f "$cache/kernel/lib/modules/$kver/modules.dep" ] || "$depmod" -b "$cache/kernel" "$kver"
  echo "$kver"
}

# The module files (paths relative to MODDIR) that NAME needs, dependencies first, NAME last.
vm_module_closure() {
  local moddir=$1 name=$2 line m order=""
  line=$(grep -E "/$name\\.ko(\\.xz|\\.zst)?:" "$moddir/modules.dep") || { echo "vm: $name is not in $moddir/modules.dep" >&2; return 1; }
  # modules.dep lists dependencies with the last one to load first.
  for m in ${line#*:}; do order="$m $order"; done
  echo "$order ${line%%:*}"
}

# Copies MODDIR/FILE to DEST/NAME.ko, decompressed.
vm_copy_module() {
  local moddir=$1 file=$2 dest=$3 name
  name=$(basename "$file"); name=${name%.xz}; name=${name%.zst}
  case "$file" in
    *.xz) xz -dc "$moddir/$file" >"$dest/$name" ;;
    *.zst) zstd -qdc "$moddir/$file" >"$dest/$name" ;;
    *) cp "$moddir/$file" "$dest/$name" ;;
  esac
  echo "$name"
}
