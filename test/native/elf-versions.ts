import * as fs from 'node:fs';

/** One symbol version an ELF object needs (`.gnu.version_r`), and the symbols bound to it. */
export interface NeededVersion {
  /** The library that must define it, e.g. `libc.so.6`. */
  file: string;
  /** e.g. `GLIBC_2.28`. */
  version: string;
  symbols: string[];
}

const SHT_DYNSYM = 11;
const SHT_GNU_VERNEED = 0x6ffffffe;
const SHT_GNU_VERSYM = 0x6fffffff;

interface Section {
  type: number;
  offset: number;
  size: number;
  link: number;
}

/**
 * neededVersions: the versions a 64-bit little-endian ELF shared object needs, read from its
 * `.gnu.version_r`, `.gnu.version` and `.dynsym` sections, so no binutils are needed.
 */
export function neededVersions(file: string): NeededVersion[] {
  const b = fs.readFileSync(file);
  if (b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2 || b[5] !== 1) {
    throw new Error(`${file} is not a 64-bit little-endian ELF file`);
  }
  const shoff = Number(b.readBigUInt64LE(0x28));
  const shentsize = b.readUInt16LE(0x3a);
  const shnum = b.readUInt16LE(0x3c);
  const sections: Section[] = [];
  for (let i = 0; i < shnum; i++) {
    const at = shoff + i * shentsize;
    sections.push({
      type: b.readUInt32LE(at + 4),
      offset: Number(b.readBigUInt64LE(at + 24)),
      size: Number(b.readBigUInt64LE(at + 32)),
      link: b.readUInt32LE(at + 40),
    });
  }
  const str = (table: Section, at: number) => {
    const start = table.offset + at;
    return b.toString('latin1', start, b.indexOf(0, start));
  };

  // Version index (vna_other) -> needed version.
  const byIndex = new Map<number, NeededVersion>();
  for (const s of sections.filter((x) => x.type === SHT_GNU_VERNEED)) {
    const names = sections[s.link]!;
    for (let vn = s.offset; ;) {
      const count = b.readUInt16LE(vn + 2);
      const fileName = str(names, b.readUInt32LE(vn + 4));
      for (let i = 0, aux = vn + b.readUInt32LE(vn + 8); i < count; i++) {
        const version = str(names, b.readUInt32LE(aux + 8));
        byIndex.set(b.readUInt16LE(aux + 6), { file: fileName, version, symbols: [] });
        aux += b.readUInt32LE(aux + 12);
      }
      const next = b.readUInt32LE(vn + 12);
      if (next === 0) break;
      vn += next;
    }
  }

  const dynsym = sections.find((x) => x.type === SHT_DYNSYM);
  const versym = sections.find((x) => x.type === SHT_GNU_VERSYM);
  if (dynsym && versym) {
    const names = sections[dynsym.link]!;
    for (let i = 0; i < versym.size / 2; i++) {
      const needed = byIndex.get(b.readUInt16LE(versym.offset + 2 * i) & 0x7fff);
      if (needed) needed.symbols.push(str(names, b.readUInt32LE(dynsym.offset + 24 * i)));
    }
  }
  return [...byIndex.values()];
}

/** Compares dotted version numbers (`2.3.3` < `2.28`). */
export function compareVersions(a: string, b: string): number {
  const x = a.split('.').map(Number);
  const y = b.split('.').map(Number);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}
