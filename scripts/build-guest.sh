#!/usr/bin/env bash
# Assembles the flat test guests (test/guest/*.S) into build/guest/*.bin with the system assembler:
# 32-bit code linked at 0x1000, no headers. Run by `npm run build`; the lab guest sees the
# repository read-only, so it uses these (test/guest/guest.ts assembles into a temporary
# directory when they are missing or stale).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p build/guest
for src in test/guest/*.S; do
  name=$(basename "$src" .S)
  as --32 -o "build/guest/$name.o" "$src"
  ld -m elf_i386 -Ttext=0x1000 --oformat binary -o "build/guest/$name.bin" "build/guest/$name.o"
  rm -f "build/guest/$name.o"
done
