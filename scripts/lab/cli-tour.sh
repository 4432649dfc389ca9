#!/usr/bin/env bash
# The CLI on the lab's devices, as shown in docs/cli.md:
#   npm run build && scripts/lab/lab.sh bash scripts/lab/cli-tour.sh
set -u
export VFIO_BRIDGE_STATE=/tmp/vfio-bridge-drivers.json
cli() {
  echo "\$ vfio-bridge $*"
  # stdin is the guest console, a terminal: without this a write would wait for an answer.
  node dist/cli/main.js "$@" </dev/null
  echo "(exit $?)"
  echo
}
cli list --class 00ff
cli list --id 8086:
cli bind 0000:00:07.0
cli bind 0000:00:08.0
cli list 0000:00:08.0
cli unbind 0000:00:08.0
cli restore 0000:00:08.0
cli info 0000:00:05.0
cli read 0000:00:03.0 bar0 0 --width 4
cli read 0000:00:03.0 bar0 0 --width 1
cli dump 0000:00:03.0 config 0 64 --width 4
cli dump 0000:00:03.0 bar0 0 0x10000 --width 8 --via fd >/dev/null
cli write 0000:00:03.0 bar0 4 0x12345678 --width 4
cli write 0000:00:03.0 bar0 4 0x12345678 --width 4 --yes
cli read 0000:00:03.0 bar0 4 --width 4
cli read 0000:00:03.0 bar0 0x100000 --width 4
cli mtree -f 0000:00:04.0 0000:00:05.0 --svg /tmp/map.svg
cli reset 0000:00:05.0
cli reset --hot 0000:00:05.0
cli reset --hot 0000:01:00.0
cli reset --hot --json 0000:01:00.0
cli irqs 0000:00:05.0
cli irqs 0000:00:05.0 --watch --samples 3 --interval 500
cli irqs 0000:00:03.0 --watch --json --samples 2 --interval 500
