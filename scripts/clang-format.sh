#!/usr/bin/env bash
# Formats or checks every C/C++ file under native/ and test/native/ with the clang-format shipped by
# the npm package, so the result does not depend on which clang-format the machine happens to have.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:---check}
mapfile -t files < <(git ls-files --cached --others --exclude-standard 'native/*.cc' 'native/*.h' 'native/*.cpp' 'test/native/*.cc')
[ ${#files[@]} -eq 0 ] && exit 0
bin=node_modules/.bin/clang-format
case "$mode" in
  --check) "$bin" --dry-run --Werror "${files[@]}" ;;
  --fix) "$bin" -i "${files[@]}" ;;
  *) echo "usage: $0 [--check|--fix]" >&2; exit 2 ;;
esac
