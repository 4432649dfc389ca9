#!/usr/bin/env bash
# `npm pack` / `npm publish`: make sure the package holds a current dist/ and a linux-x64 prebuild.
#
# The prebuild is what `npm run build:prebuild` (prebuildify --napi --strip --tag-libc) makes: a
# release `node-gyp rebuild`, stripped, renamed for node-gyp-build. When build/Release already
# holds a build no older than native/ and binding.gyp, it is that file, so packing after
# `npm run build` does not compile a second time.
set -euo pipefail
cd "$(dirname "$0")/.."

newer_than() { [ -n "$(find "${@:2}" -newer "$1" -type f -print -quit)" ]; }

if [ ! -f dist/index.js ] || newer_than dist/index.js lib tsconfig.json; then
  npm run build:ts
fi

prebuild=prebuilds/linux-x64/vfio-bridge.glibc.node
built=build/Release/vfio_bridge.node
if [ ! -f "$prebuild" ] || newer_than "$prebuild" native binding.gyp; then
  if [ -f "$built" ] && ! newer_than "$built" native binding.gyp; then
    mkdir -p "$(dirname "$prebuild")"
    strip --strip-all -o "$prebuild" "$built"
  else
    npm run build:prebuild
  fi
fi

[ -f dist/index.js ] && [ -f "$prebuild" ] || {
  echo "prepack: dist/index.js or $prebuild is missing" >&2
  exit 1
}
