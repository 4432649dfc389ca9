#!/usr/bin/env bash
# vfio-bridge's own lab: the package's `vfio-bridge lab` with this project's device set
# (--preset vfio-bridge) and the nested guest the VMM tests boot (scripts/vmm/guest-init.sh).
#
#   scripts/lab/lab.sh                  boot and run the demo (npm run lab)
#   scripts/lab/lab.sh CMD [ARGS...]    boot and run CMD as root in this repository, inside the guest
#   scripts/lab/lab.sh --provision      only provision (exit 3: cannot, and the error says how to fix)
#
# Options (before CMD): --timeout SECONDS (default 600, or VFIO_BRIDGE_LAB_TIMEOUT), --cpus N (the
# lab guest's vCPUs, default 1, or VFIO_BRIDGE_LAB_CPUS: more only to measure what needs CPUs of its
# own, on the built kernel; `vfio-bridge lab --help` says why), --kernel KERNEL
# (default built: the lab's own kernel, built from Debian's linux-source-6.12 the first time, about
# 15 min, then cached; auto, debian, host or a path as `vfio-bridge lab --help` says).
# Environment: those of `vfio-bridge lab --help` (VFIO_BRIDGE_LAB_CACHE, _KERNEL, _TIMEOUT, _APPEND,
# _LOCK_WAIT), and VFIO_BRIDGE_LAB_IVSHMEM (where to keep a copy of ivshmem's backing file).
# The exit status is CMD's; a lab failure is reported as `vfio-bridge lab --help` says (124 on
# timeout). See scripts/lab/README.md for the guest layout and the device list.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

opts=()
provision=0
kernel=${VFIO_BRIDGE_LAB_KERNEL:-built}
while [ $# -gt 0 ]; do
  case $1 in
    --timeout)
      opts+=(--timeout "${2:?--timeout needs seconds}")
      shift 2
      ;;
    --cpus)
      opts+=(--cpus "${2:?--cpus needs a vCPU count}")
      shift 2
      ;;
    --kernel)
      kernel=${2:?--kernel needs a kernel: built, auto, debian, host or a path}
      shift 2
      ;;
    --provision)
      opts+=(--provision)
      provision=1
      shift
      ;;
    --)
      shift
      break
      ;;
    -h | --help)
      sed -n '2,15s/^# \{0,1\}//p' "$0"
      exit 0
      ;;
    *) break ;;
  esac
done
if [ "$provision" = 0 ] && { [ $# -eq 0 ] || { [ $# -eq 1 ] && [ "$1" = demo ]; }; }; then
  # The demo is `npm run lab` on a fresh checkout too: install and build first when needed (the
  # guest sees the repository read-only and cannot do either).
  (
    cd "$repo"
    [ -d node_modules/node-addon-api ] || npm install --no-audit --no-fund
    if ! compgen -G 'build/Release/*.node' >/dev/null || [ ! -f dist/index.js ] ||
      [ -n "$(find lib native -newer dist/index.js -type f -print -quit)" ]; then
      npm run build
    fi
    # The Node VMM's section runs the compiled runners (scripts/vmm/tsconfig.json says why).
    if [ ! -f build/vmm/demo-vmm.js ] ||
      [ -n "$(find scripts/vmm dist/index.js -newer build/vmm/demo-vmm.js -type f -print -quit)" ]; then
      npm run build:vmm
    fi
  )
  set -- node -r @swc-node/register "$here/demo.ts"
fi

# The lab is the package's command: built, as a user's installed package is.
cli=$repo/dist/cli/main.js
if [ ! -f "$cli" ] || [ -n "$(find "$repo/lib/cli" -newer "$cli" -type f -print -quit)" ]; then
  (cd "$repo" && npm run build:ts >&2)
fi
[ -z "${VFIO_BRIDGE_LAB_CPUS:-}" ] || opts=(--cpus "$VFIO_BRIDGE_LAB_CPUS" "${opts[@]}")
[ -z "${VFIO_BRIDGE_LAB_IVSHMEM:-}" ] || opts+=(--keep-file "ivshmem=$VFIO_BRIDGE_LAB_IVSHMEM")

exec node "$cli" lab --preset vfio-bridge --project "$repo" --kernel "$kernel" \
  --vmm-init "$repo/scripts/vmm/guest-init.sh" --vmm-module mii,e1000e,8139cp,8139too \
  "${opts[@]}" -- "$@"
