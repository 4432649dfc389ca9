import { execFileSync } from 'node:child_process';

import { ROOT } from './helpers';

// Proof of fixed width: disassemble the built addon and check that each accessor is one memory
// move of its width, that no accessor calls anything (memcpy, memmove or otherwise), and that each
// device-touching instruction is in the SIGBUS exception table.

// The addon lib/native loads: build/Release, or the stripped prebuild (the accessors and the table
// bounds are exported with protected visibility, so they survive --strip).
// eslint-disable-next-line @typescript-eslint/no-require-imports
const ADDON: string = (require('node-gyp-build') as { path(dir: string): string }).path(ROOT);

interface Insn {
  addr: number;
  mnemonic: string;
  operands: string;
}

function disassemble(): Map<string, Insn[]> {
  const out = execFileSync('objdump', ['-d', '--no-show-raw-insn', '-j', '.text', ADDON], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  const functions = new Map<string, Insn[]>();
  let current: Insn[] | null = null;
  for (const line of out.split('\n')) {
    const header = /^[0-9a-f]+ <([^>]+)>:$/.exec(line);
    if (header) {
      current = [];
      // Stripped binaries label exported symbols name@@Base: drop the version.
      functions.set(header[1]!.replace(/@@[\w.]+/, ''), current);
      continue;
    }
    const insn = /^\s+([0-9a-f]+):\s+(\S+)\s*(.*)$/.exec(line);
    if (insn && current) {
      current.push({ addr: parseInt(insn[1]!, 16), mnemonic: insn[2]!, operands: insn[3]!.trim() });
    }
  }
  return functions;
}

function symbols(): Map<string, number> {
  const out = execFileSync('nm', ['-D', '--defined-only', ADDON], { encoding: 'utf8' });
  const map = new Map<string, number>();
  for (const line of out.split('\n')) {
    const m = /^([0-9a-f]+) \S (\S+)$/.exec(line);
    if (m) map.set(m[2]!, parseInt(m[1]!, 16));
  }
  return map;
}

/** The exception table: pairs of (instruction, fixup) absolute addresses. */
function exceptionTable(syms: Map<string, number>): Array<[number, number]> {
  const start = syms.get('vfio_bridge_extable_start');
  const end = syms.get('vfio_bridge_extable_end');
  if (start === undefined || end === undefined) throw new Error('no exception table symbols');
  const out = execFileSync(
    'objdump',
    ['-s', `--start-address=0x${start.toString(16)}`, `--stop-address=0x${end.toString(16)}`, ADDON],
    { encoding: 'utf8' },
  );
  const bytes: number[] = [];
  let base = -1;
  for (const line of out.split('\n')) {
    const m = /^ ([0-9a-f]+) ((?:[0-9a-f]{2,8} ?){1,4})/.exec(line);
    if (!m) continue;
    if (base < 0) base = parseInt(m[1]!, 16);
    for (const group of m[2]!.trim().split(' ')) {
      for (let i = 0; i < group.length; i += 2) bytes.push(parseInt(group.slice(i, i + 2), 16));
    }
  }
  expect(base).toBe(start);
  const buf = Buffer.from(bytes.slice(0, end - start));
  const entries: Array<[number, number]> = [];
  for (let at = 0; at + 8 <= buf.length; at += 8) {
    entries.push([start + at + buf.readInt32LE(at), start + at + 4 + buf.readInt32LE(at + 4)]);
  }
  return entries;
}

const hasMemoryOperand = (i: Insn) => i.operands.includes('(') && !i.mnemonic.startsWith('nop');

/** The width in bytes of a mov between a register and memory, from the mnemonic or the register. */
function moveWidth(i: Insn): number {
  if (i.mnemonic === 'movzbl' || i.mnemonic === 'movb') return 1;
  if (i.mnemonic === 'movzwl' || i.mnemonic === 'movw') return 2;
  if (i.mnemonic === 'movl') return 4;
  if (i.mnemonic === 'movq') return 8;
  if (i.mnemonic !== 'mov') throw new Error(`not a mov: ${i.mnemonic} ${i.operands}`);
  const reg = i.operands
    .split(',')
    .map((s) => s.trim())
    .find((s) => s.startsWith('%'))!;
  if (/^%(r\d+b|[abcd]l|sil|dil)$/.test(reg)) return 1;
  if (/^%(r\d+w|[abcd]x|si|di)$/.test(reg)) return 2;
  if (/^%(r\d+d|e[a-z]{2})$/.test(reg)) return 4;
  if (/^%r([a-z]{2}|\d+)$/.test(reg)) return 8;
  throw new Error(`unknown register ${reg}`);
}

describe('disassembly of the accessors (objdump)', () => {
  const functions = disassemble();
  const table = exceptionTable(symbols());
  const guarded = new Set(table.map(([insn]) => insn));

  test.each([1, 2, 4, 8])('width %d: load and store are exactly one move of that width, guarded', (width) => {
    for (const [name, deviceIsSource] of [
      [`vfio_bridge_load${width * 8}`, true],
      [`vfio_bridge_store${width * 8}`, false],
    ] as const) {
      const body = functions.get(name);
      expect(body).toBeDefined();
      const memory = body!.filter(hasMemoryOperand);
      expect(memory).toHaveLength(1);
      const [move] = memory;
      expect(move!.mnemonic).toMatch(/^mov/);
      expect(moveWidth(move!)).toBe(width);
      // AT&T syntax: source first. A load reads (%rdi); a store writes it.
      expect(move!.operands.startsWith('(%rdi)')).toBe(deviceIsSource);
      expect(body!.some((i) => /^(call|jmp)/.test(i.mnemonic) || /rep|movs/.test(i.mnemonic))).toBe(false);
      expect(guarded.has(move!.addr)).toBe(true);
    }
  });

  test.each([1, 2, 4, 8])('block loops of width %d: one device access per element, guarded', (width) => {
    for (const [name, deviceOperand] of [
      [`vfio_bridge_read_block${width * 8}`, '(%rsi)'],
      [`vfio_bridge_write_block${width * 8}`, '(%rdi)'],
    ] as const) {
      const body = functions.get(name)!;
      const memory = body.filter(hasMemoryOperand);
      // One load and one store per element: the device side and the ordinary buffer side.
      expect(memory).toHaveLength(2);
      for (const i of memory) expect(moveWidth(i)).toBe(width);
      const device = memory.filter((i) => i.operands.includes(deviceOperand));
      expect(device).toHaveLength(1);
      expect(guarded.has(device[0]!.addr)).toBe(true);
      expect(body.some((i) => i.mnemonic.startsWith('call') || /rep|movs/.test(i.mnemonic))).toBe(false);
    }
  });

  test('the exception table covers exactly the accessors, with fixups inside the same function', () => {
    const ranges = [...functions.entries()]
      .filter(([name]) => name.startsWith('vfio_bridge_'))
      .map(([name, body]) => ({ name, start: body[0]!.addr, end: body[body.length - 1]!.addr }));
    expect(table).toHaveLength(16);
    for (const [insn, fixup] of table) {
      const owner = ranges.find((r) => insn >= r.start && insn <= r.end);
      expect(owner).toBeDefined();
      expect(fixup).toBeGreaterThan(insn);
      expect(fixup).toBeLessThanOrEqual(owner!.end);
    }
  });

  test('the C++ reaches device memory only by calling the guarded accessors', () => {
    // The accessors are assembly in their own object, so the compiler cannot inline them into a
    // memcpy or a wider access: every callback must call them.
    const called = new Set<string>();
    for (const [name, body] of functions) {
      if (name.startsWith('vfio_bridge_')) continue;
      for (const i of body) {
        const target = /<(vfio_bridge_[a-z_0-9]+)(@@[\w.]+)?>/.exec(i.operands);
        if (/^(call|jmp)/.test(i.mnemonic) && target) called.add(target[1]!);
      }
    }
    const accessors = [...functions.keys()].filter((n) =>
      /^vfio_bridge_(load|store|read_block|write_block)\d+$/.test(n),
    );
    expect(accessors).toHaveLength(16);
    expect([...called].sort()).toEqual(accessors.sort());
  });
});
