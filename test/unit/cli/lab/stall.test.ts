// The stalled-guest watch's parts: QEMU's CPU time from /proc, one human-monitor command's answer
// (on a stand-in monitor that talks as QEMU's does: banner, prompt, echo), System.map lookups, and
// the parsers of the monitor's answers.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import {
  cpuPoint,
  cpuTicks,
  lazySymbols,
  loadSymbols,
  monitorCommand,
  pendingVectors,
  symbolIn,
} from '../../../../lib/cli/lab/stall';

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vfio-bridge-lab-stall-'));
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

test("a process's CPU time in clock ticks; null once it is gone", () => {
  const t = cpuTicks(process.pid);
  expect(Number.isInteger(t)).toBe(true);
  expect(t).toBeGreaterThanOrEqual(0);
  expect(cpuTicks(2 ** 22 + 1)).toBeNull();
});

test('a monitor command: the answer without banner, echo, prompts or terminal escapes', async () => {
  const sock = path.join(tmp, 'm.sock');
  const server = net.createServer((c) => {
    c.write("QEMU 7.2.0 monitor - type 'help' for more information\r\n(qemu) ");
    c.on('data', (d) => {
      const cmd = d.toString().trim();
      // QEMU's readline echoes the line with cursor escapes before it answers.
      c.write(`${cmd}\x1b[K\r\n`);
      if (cmd === 'info status') c.write('VM status: running\r\n(qemu) ');
      else c.write(`unknown command: '${cmd}'\r\n(qemu) `);
    });
  });
  await new Promise<void>((r) => server.listen(sock, r));
  try {
    expect(await monitorCommand(sock, 'info status')).toEqual(['VM status: running']);
    expect(await monitorCommand(sock, 'info nothing')).toEqual(["unknown command: 'info nothing'"]);
  } finally {
    server.close();
  }
  const gone = await monitorCommand(path.join(tmp, 'none.sock'), 'info status');
  expect(gone).toEqual([expect.stringMatching(/^\(monitor: connect ENOENT/)]);
});

test('a monitor that never answers whole is given up after 5 s', async () => {
  const sock = path.join(tmp, 'm.sock');
  const server = net.createServer((c) => c.write('QEMU 7.2.0 monitor\r\n(qemu) '));
  await new Promise<void>((r) => server.listen(sock, r));
  try {
    expect(await monitorCommand(sock, 'info registers')).toEqual([
      "(no complete answer to 'info registers' within 5 s)",
    ]);
  } finally {
    server.close();
  }
}, 10_000);

test('the text symbol that holds an address, as symbol+offset; the symbols read once', () => {
  const map = path.join(tmp, 'System.map');
  fs.writeFileSync(
    map,
    [
      'ffffffff81000000 T _text',
      'ffffffff81000100 t native_safe_halt',
      'ffffffff81000140 D some_data',
      'ffffffff81000200 T default_idle',
      '',
    ].join('\n'),
  );
  const symbols = loadSymbols(map);
  expect(symbolIn(symbols, 0xffffffff81000104n)).toBe('native_safe_halt+0x4');
  expect(symbolIn(symbols, 0xffffffff81000150n)).toBe('native_safe_halt+0x50'); // data symbols are not code
  expect(symbolIn(symbols, 0xffffffff81000200n)).toBe('default_idle+0x0');
  expect(symbolIn(symbols, 0xffffffff80000000n)).toBeNull();
  expect(symbolIn(loadSymbols(path.join(tmp, 'none')), 0x1n)).toBeNull();
  // Read at the first call only: a later change of the file is not seen; no map, no symbols.
  const lazy = lazySymbols(map);
  expect(lazy()).toEqual(symbols);
  fs.writeFileSync(map, '');
  expect(lazy()).toEqual(symbols);
  expect(lazySymbols(null)()).toBeNull();
});

test("a CPU's point from info registers; the vectors waiting in a local APIC from info lapic", () => {
  expect(
    cpuPoint([
      'RSI=0 RDI=0 RBP=0 RSP=ffffc90000003e20',
      'RIP=ffffffff8100017b RFL=00000246 [---Z-P-] CPL=0 HLT=0',
    ]),
  ).toEqual({ rip: 0xffffffff8100017bn, rsp: 0xffffc90000003e20n, interrupts: true, halted: false });
  expect(cpuPoint(['RSP=10 RIP=20 RFL=00000046 HLT=1'])).toEqual({
    rip: 0x20n,
    rsp: 0x10n,
    interrupts: false,
    halted: true,
  });
  expect(cpuPoint(['(monitor: connect ENOENT)'])).toBeNull();
  expect(pendingVectors(['ISR\t 48 ', 'IRR\t 236 239 '])).toEqual([236, 239]);
  expect(pendingVectors(['IRR\t (none)'])).toEqual([]);
  expect(pendingVectors(['(monitor: connect ENOENT)'])).toEqual([]);
});
