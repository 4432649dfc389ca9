# shellcheck shell=bash
# vfio-bridge VMM guest: the kernel and initramfs a VMM boots with passed-through NICs, sourced
# after scripts/lab/provision.sh (run lab_provision first).
#
# The kernel is the lab's own (the same Debian 6.12 package), and the initramfs is built the way
# the lab builds its own: the static busybox, the NIC drivers of that kernel package and
# guest-init.sh as /init. It is cached beside the lab's, keyed by the kernel version, the module
# list, busybox and guest-init.sh.

# Load order (busybox insmod does not resolve dependencies); guest-init.sh picks which to load.
VMM_GUEST_MODULES=(mii e1000e 8139cp 8139too)

# Sets VMM_GUEST_KERNEL and VMM_GUEST_INITRAMFS.
vmm_guest_provision() {
  local here key
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  [ -n "${LAB_KVER:-}" ] || lab_fail "vmm_guest_provision needs lab_provision first"
  key=$({
    echo "$LAB_KVER"
    echo "${VMM_GUEST_MODULES[*]}"
    sha256sum /bin/busybox "$here/guest-init.sh"
  } | sha256sum | cut -c1-16)
  VMM_GUEST_KERNEL=$LAB_VMLINUZ
  VMM_GUEST_INITRAMFS=$(lab_cache_dir)/vmm-guest-$LAB_KVER-$key.cpio
  find "$(lab_cache_dir)" -maxdepth 1 -name 'vmm-guest-*.cpio' -mmin +1440 -delete 2>/dev/null || true
  if [ -f "$VMM_GUEST_INITRAMFS" ]; then
    touch "$VMM_GUEST_INITRAMFS"
    return 0
  fi
  echo "lab: building the VMM guest initramfs for $LAB_KVER"
  exec 8>"$(lab_cache_dir)/provision.lock"
  flock -w 900 8 || lab_fail "timed out waiting for another lab provisioning to finish"
  [ -f "$VMM_GUEST_INITRAMFS" ] || lab_pack_initramfs "$VMM_GUEST_INITRAMFS" "$here/guest-init.sh" "${VMM_GUEST_MODULES[@]}"
  exec 8>&-
}
