# shellcheck shell=bash
# vfio-bridge lab: provisioning, sourced by lab.sh.
#
# Everything lives in a cache directory outside the repository, keyed so that a stale entry is
# rebuilt: the kernel by its Debian version, the initramfs by a hash of the kernel version, the
# module list, busybox and init.sh. A failure that the user can fix by installing packages exits
# with status 3 (lab.sh --provision reports it; `npm test` outside CI skips the lab on it).

# The modules the guest loads, in dependency order (busybox insmod does not resolve dependencies).
# e1000 drives the lab's one device that stays on its kernel driver (the CLI's bind/restore tests).
LAB_MODULES=(irqbypass vfio vfio_iommu_type1 vfio-pci-core vfio-pci netfs 9pnet 9pnet_virtio 9p e1000 ccp kvm kvm-amd)
LAB_APT_PACKAGES=(qemu-system-x86 busybox-static)
LAB_KERNEL_GLOB='linux-image-6.12.*+deb12-amd64'

lab_cache_dir() {
  printf '%s\n' "${VFIO_BRIDGE_LAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vfio-bridge/lab}"
}

# Exit status 3: the host lacks something only an administrator can install.
lab_unprovisionable() {
  echo "lab: FAIL cannot provision: $1; fix with: $2" >&2
  exit 3
}

lab_fail() {
  echo "lab: FAIL $*" >&2
  exit 1
}

lab_have_packages() {
  command -v qemu-system-x86_64 >/dev/null 2>&1 || return 1
  # The initramfs needs the static busybox: the guest has no libc.
  [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1
}

lab_install_packages() {
  lab_have_packages && return 0
  local fix="sudo apt-get update && sudo apt-get install -y ${LAB_APT_PACKAGES[*]}"
  command -v apt-get >/dev/null 2>&1 || lab_unprovisionable "qemu-system-x86_64 or a static busybox is missing and this host has no apt-get" "install QEMU (x86_64 system emulator) and a static busybox by hand"
  [ "$(id -u)" = 0 ] || lab_unprovisionable "qemu-system-x86_64 or a static busybox is missing and installing them needs root" "$fix"
  echo "lab: installing ${LAB_APT_PACKAGES[*]}"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${LAB_APT_PACKAGES[@]}" >&2; then
    apt-get update -q >&2 || lab_fail "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${LAB_APT_PACKAGES[@]}" >&2 || lab_fail "apt-get install ${LAB_APT_PACKAGES[*]} failed"
  fi
  lab_have_packages || lab_fail "qemu-system-x86_64 or /bin/busybox (static) still missing after apt-get install"
}

# Prints the newest linux-image-6.12.*+deb12-amd64 package name apt knows, or nothing.
# No match (no apt lists yet, on a fresh machine) is an empty answer, not a failure: under errexit
# and pipefail, grep's status 1 would otherwise end lab.sh silently before `apt-get update` runs.
lab_newest_kernel_package() {
  { apt-cache pkgnames linux-image-6.12. 2>/dev/null || true; } |
    { grep -E '^linux-image-6\.12\.[0-9]+\+deb12-amd64$' || true; } | sort -V | tail -n 1
}

# Sets LAB_KERNEL_DIR to an unpacked kernel package: boot/vmlinuz-* and lib/modules/*.
lab_provision_kernel() {
  local cache pkg
  cache=$(lab_cache_dir)
  pkg=${VFIO_BRIDGE_LAB_KERNEL:-}
  if [ -z "$pkg" ] && command -v apt-cache >/dev/null 2>&1; then
    pkg=$(lab_newest_kernel_package)
    if [ -z "$pkg" ] && [ "$(id -u)" = 0 ]; then
      apt-get update -q >&2 || lab_fail "apt-get update failed"
      pkg=$(lab_newest_kernel_package)
    fi
  fi
  if [ -z "$pkg" ]; then
    # Offline or no apt lists: any kernel already unpacked in the cache will do.
    pkg=$(find "$cache" -maxdepth 1 -type d -name 'linux-image-6.12.*' -printf '%f\n' 2>/dev/null | sort -V | tail -n 1)
    [ -n "$pkg" ] || lab_unprovisionable "apt knows no package matching $LAB_KERNEL_GLOB" "sudo apt-get update"
  fi
  LAB_KERNEL_DIR=$cache/$pkg
  if [ ! -f "$LAB_KERNEL_DIR/.complete" ]; then
    echo "lab: downloading $pkg"
    rm -rf "$LAB_KERNEL_DIR" "$cache/download"
    mkdir -p "$cache/download"
    # apt warns that _apt cannot write the download directory; it then downloads as root, as intended.
    (cd "$cache/download" && apt-get download -q "$pkg" 2>&1 | { grep -v 'unsandboxed as root' >&2 || true; }) || lab_fail "apt-get download $pkg failed"
    dpkg -x "$cache"/download/*.deb "$LAB_KERNEL_DIR" || lab_fail "dpkg -x of $pkg failed"
    rm -rf "$cache/download"
    touch "$LAB_KERNEL_DIR/.complete"
    # A newer kernel replaces the older ones (about 110 MiB each) unless one was pinned.
    if [ -z "${VFIO_BRIDGE_LAB_KERNEL:-}" ]; then
      find "$cache" -mindepth 1 -maxdepth 1 -type d -name 'linux-image-6.12.*' ! -name "$pkg" -exec rm -rf {} +
    fi
  fi
  LAB_VMLINUZ=$(find "$LAB_KERNEL_DIR/boot" -name 'vmlinuz-*' | head -n 1)
  [ -n "$LAB_VMLINUZ" ] || lab_fail "$pkg has no boot/vmlinuz-*"
  LAB_KVER=${LAB_VMLINUZ##*/vmlinuz-}
}

# Sets LAB_INITRAMFS to a cpio with busybox, the decompressed modules and init.sh as /init.
lab_provision_initramfs() {
  local here key
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  key=$({
    echo "$LAB_KVER"
    echo "${LAB_MODULES[*]}"
    sha256sum /bin/busybox "$here/init.sh"
  } | sha256sum | cut -c1-16)
  LAB_INITRAMFS=$(lab_cache_dir)/initramfs-$LAB_KVER-$key.cpio
  # Checkouts with another init.sh share the cache and may be booting theirs right now: keep every
  # initramfs in use, and prune only those nobody has booted for a day.
  find "$(lab_cache_dir)" -maxdepth 1 -name 'initramfs-*.cpio' -mmin +1440 -delete 2>/dev/null || true
  if [ -f "$LAB_INITRAMFS" ]; then
    touch "$LAB_INITRAMFS"
    return 0
  fi
  echo "lab: building the initramfs for $LAB_KVER"
  lab_pack_initramfs "$LAB_INITRAMFS" "$here/init.sh" "${LAB_MODULES[@]}"
}

# lab_pack_initramfs OUT INIT MODULE...: a newc cpio at OUT with the static busybox, INIT as /init,
# and each MODULE of the lab kernel decompressed into /modules, listed in load order in
# /modules.list. Used for the lab guest and for the guests booted inside it.
lab_pack_initramfs() {
  local out=$1 init=$2 work m ko
  shift 2
  work=$(mktemp -d)
  mkdir -p "$work/bin" "$work/modules"
  cp /bin/busybox "$work/bin/busybox"
  cp "$init" "$work/init"
  chmod 755 "$work/init" "$work/bin/busybox"
  : >"$work/modules.list"
  for m in "$@"; do
    ko=$(find "$LAB_KERNEL_DIR/lib/modules/$LAB_KVER" -name "$m.ko*" | head -n 1)
    [ -n "$ko" ] || { rm -rf "$work"; lab_fail "module $m is not in the $LAB_KVER package"; }
    case $ko in
      *.xz) xz -dc "$ko" >"$work/modules/$m.ko" ;;
      *.zst) zstd -dcq "$ko" >"$work/modules/$m.ko" ;;
      *) cp "$ko" "$work/modules/$m.ko" ;;
    esac || { rm -rf "$work"; lab_fail "decompressing $ko"; }
    echo "$m" >>"$work/modules.list"
  done
  (cd "$work" && find . | busybox cpio -o -H newc 2>/dev/null) >"$out.tmp" || {
    rm -rf "$work"
    lab_fail "busybox cpio failed building $out"
  }
  mv "$out.tmp" "$out"
  rm -rf "$work"
}

lab_provision() {
  mkdir -p "$(lab_cache_dir)" || lab_fail "cannot create the cache directory $(lab_cache_dir)"
  # Several checkouts may provision at once: one at a time, so none sees a half-written kernel.
  exec 8>"$(lab_cache_dir)/provision.lock"
  flock -w 900 8 || lab_fail "timed out waiting for another lab provisioning to finish"
  lab_install_packages
  lab_provision_kernel
  lab_provision_initramfs
  exec 8>&-
}
