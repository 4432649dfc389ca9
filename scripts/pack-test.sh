#!/usr/bin/env bash
# The package as a user gets it: `npm pack` (prepack supplies dist/ and the prebuild), the tarball
# installed into a scratch project, then used from CommonJS, ESM and TypeScript (against the
# installed declarations, with moduleResolution node16, bundler and node10), and the CLI's --help
# (the lab command's too, with the guest init it ships).
#
# Installing must not compile: the install step keeps the prebuild when it loads, so a build/
# directory in the installed package means the prebuild was not usable.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
here=$repo/scripts/pack-test
work=$(mktemp -d "${TMPDIR:-/tmp}/vfio-bridge-pack.XXXXXX")
trap 'rm -rf "$work"' EXIT

fail() {
  echo "pack-test: FAIL $*" >&2
  exit 1
}

tarball=$(npm pack --silent --pack-destination "$work" | tail -n 1)
tar -tzf "$work/$tarball" >"$work/contents"
for f in package/dist/index.js package/dist/memory/index.d.ts package/prebuilds/linux-x64/vfio-bridge.glibc.node \
  package/lib/index.ts package/scripts/install.js package/scripts/lab/init.sh package/scripts/lab/kernel/lab.config \
  package/dist/cli/lab/lab.js \
  package/LICENSE package/CHANGELOG.md; do
  grep -qx "$f" "$work/contents" || fail "the tarball lacks $f"
done
! grep -q '^package/test/' "$work/contents" || fail 'the tarball holds test/'

app=$work/app
mkdir "$app"
cp "$here"/* "$app"/
printf '{ "name": "vfio-bridge-pack-test", "private": true }\n' >"$app/package.json"
# npm 11.19+ runs a dependency's install script only when approved (allowScripts, matched against
# the tarball's path here). It must run, or nothing would show that installing does not compile.
(cd "$app" && npm install --no-audit --no-fund --prefer-offline --no-package-lock \
  --dangerously-allow-all-scripts "$work/$tarball") \
  >"$work/install.log" 2>&1 || { cat "$work/install.log" >&2; fail 'npm install of the tarball'; }
! grep -q 'install-scripts' "$work/install.log" || { cat "$work/install.log" >&2; fail 'npm skipped the install step'; }
[ ! -e "$app/node_modules/vfio-bridge/build" ] || fail 'installing compiled the addon: the prebuild did not load'

(cd "$app" && node use.cjs && node use.mjs)

tsc=$repo/node_modules/.bin/tsc
types="--types node --typeRoots $repo/node_modules/@types"
for resolution in 'node16 node16' 'esnext bundler' 'commonjs node10'; do
  set -- $resolution
  # shellcheck disable=SC2086 # $types is two options
  (cd "$app" && "$tsc" --strict --module "$1" --moduleResolution "$2" --target es2022 --outDir "out-$2" $types use.ts) ||
    fail "TypeScript with moduleResolution $2"
done
(cd "$app" && node out-node16/use.js)

# Then without the addon, as where it cannot load: the addon loads on first native use only, so
# the memory model, every import and the CLI's help still work.
rm -r "$app/node_modules/vfio-bridge/prebuilds"
(cd "$app" && PREBUILDS_ONLY=1 node no-addon.cjs)
help=$(PREBUILDS_ONLY=1 "$app/node_modules/.bin/vfio-bridge" --help) || fail 'vfio-bridge --help'
grep -q '^Usage: vfio-bridge' <<<"$help" || fail "vfio-bridge --help printed: $help"
# The lab command from the tarball: its help, and a plan naming the guest's init the package ships.
help=$(PREBUILDS_ONLY=1 "$app/node_modules/.bin/vfio-bridge" lab --help) || fail 'vfio-bridge lab --help'
grep -q '^Usage: vfio-bridge lab' <<<"$help" || fail "vfio-bridge lab --help printed: $help"
init=$(cd "$app" && PREBUILDS_ONLY=1 node_modules/.bin/vfio-bridge lab --device nvme --print --json -- true |
  node -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(0, "utf8")).init)') ||
  fail 'vfio-bridge lab --print --json'
[ "$init" = "$app/node_modules/vfio-bridge/scripts/lab/init.sh" ] && [ -f "$init" ] ||
  fail "vfio-bridge lab would boot the init $init, not the one the package ships"
echo "pack-test: $tarball installs, loads its prebuild and works from CommonJS, ESM, TypeScript and the CLI (lab included), and without its addon"
