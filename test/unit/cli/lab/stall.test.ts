// The stalled-guest watch's parts: QEMU's CPU time from /proc, one human-monitor command's answer
// (on a stand-in monitor that talks as QEMU's does: banner, prompt, echo), System.map lookups, and
// the watch for a CPU stuck at one instruction, never taking the interrupt waiting for it.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import {
  cpuPoint,
  cpuTicks,
  monitorCommand,
  pendingVectors,
  symbolAt,
  watchStall,
  type StallKind,
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

test('the text symbol that holds an address, as symbol+offset', () => {
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
  expect(symbolAt(map, 0xffffffff81000104n)).toBe('native_safe_halt+0x4');
  expect(symbolAt(map, 0xffffffff81000150n)).toBe('native_safe_halt+0x50'); // data symbols are not code
  expect(symbolAt(map, 0xffffffff81000200n)).toBe('default_idle+0x0');
  expect(symbolAt(map, 0xffffffff80000000n)).toBeNull();
  expect(symbolAt(path.join(tmp, 'none'), 0x1n)).toBeNull();
});

/** A stand-in monitor whose CPU is at one place; counts the register samples it gave. */
async function stuckMonitor(
  sock: string,
  cpu: { hlt: 0 | 1; irr: string },
): Promise<{ server: net.Server; samples: () => number }> {
  let samples = 0;
  const server = net.createServer((c) => {
    c.write('QEMU 7.2.0 monitor\r\n(qemu) ');
    c.on('data', (d) => {
      const cmd = d.toString().trim();
      c.write(`${cmd}\r\n`);
      if (cmd === 'info registers') {
        samples++;
        c.write(
          'CPU#0\r\nRAX=00000000000002ff RBX=ffffffff81a05080\r\n' +
            'RSI=0000000000000000 RDI=ffffffff81a05084 RBP=ffff888002503e08 RSP=ffff888002503da0\r\n' +
            `RIP=ffffffff81000147 RFL=00000286 [--S--P-] CPL=0 II=0 A20=1 SMM=0 HLT=${cpu.hlt}\r\n(qemu) `,
        );
      } else if (cmd === 'info lapic') {
        c.write(`dumping local APIC state for CPU 0\r\n\r\nISR\t (none)\r\nIRR\t ${cpu.irr}\r\n\r\n(qemu) `);
      } else if (cmd.startsWith('x /64gx 0xffff888002503da0')) {
        c.write('ffff888002503da0: 0x0000000000000246 0xffffffff81000234\r\n(qemu) ');
      } else c.write('\r\n(qemu) ');
    });
  });
  await new Promise<void>((r) => server.listen(sock, r));
  return { server, samples: () => samples };
}

describe('a CPU stuck at one instruction, not taking a waiting interrupt', () => {
  let map: string;
  beforeEach(() => {
    map = path.join(tmp, 'System.map');
    fs.writeFileSync(
      map,
      ['ffffffff81000100 T queued_read_lock_slowpath', 'ffffffff81000200 t do_wait', ''].join('\n'),
    );
  });

  /** Watches `sock` for `ms` (or until it fires): the stall, or null. */
  const watchFor = (
    sock: string,
    quiet: () => number,
    ms: number,
  ): Promise<{ picture: string[]; kind: StallKind } | null> =>
    new Promise((resolve) => {
      const stop = watchStall({
        pid: process.pid,
        monitor: sock,
        systemMap: map,
        stillSeconds: 60,
        pollSeconds: 0.1,
        counting: () => true,
        quietSince: quiet,
        stuckQuietSeconds: 0.2,
        onStall: (picture, kind) => {
          clearTimeout(t);
          stop();
          resolve({ picture, kind });
        },
      });
      const t = setTimeout(() => {
        stop();
        resolve(null);
      }, ms);
    });

  test('is a stall of its own kind after three samples in a row; the picture names the calls on its stack', async () => {
    const sock = path.join(tmp, 'm.sock');
    const m = await stuckMonitor(sock, { hlt: 0, irr: '236 ' });
    const silent = performance.now() - 10_000;
    try {
      const stall = await watchFor(sock, () => silent, 10_000);
      expect(stall?.kind).toBe('stuck');
      expect(m.samples()).toBeGreaterThanOrEqual(3);
      expect(stall?.picture[0]).toBe(
        'the CPU stayed at queued_read_lock_slowpath+0x47 ffffffff81000147 with vector 236 waiting in its local APIC, in 3 samples 0.1 s apart',
      );
      expect(stall?.picture).toContain('RIP is in queued_read_lock_slowpath+0x47');
      // 0x246 on the stack is no code address; the return address is.
      expect(stall?.picture.filter((l) => l.startsWith('stack: '))).toEqual([
        'stack: 0xffffffff81000234 do_wait+0x34',
      ]);
    } finally {
      m.server.close();
    }
  });

  test.each([
    ['halted (an idle guest)', { hlt: 1, irr: '236 ' }],
    ['with no interrupt waiting', { hlt: 0, irr: '(none)' }],
  ] as const)('it is not stuck %s', async (_, cpu) => {
    const sock = path.join(tmp, 'm.sock');
    const m = await stuckMonitor(sock, cpu);
    const silent = performance.now() - 10_000;
    try {
      expect(await watchFor(sock, () => silent, 1000)).toBeNull();
      expect(m.samples()).toBeGreaterThanOrEqual(3);
    } finally {
      m.server.close();
    }
  });

  test('nor is the CPU sampled while the console speaks', async () => {
    const sock = path.join(tmp, 'm.sock');
    const m = await stuckMonitor(sock, { hlt: 0, irr: '236 ' });
    try {
      expect(await watchFor(sock, () => performance.now(), 1000)).toBeNull();
      expect(m.samples()).toBe(0);
    } finally {
      m.server.close();
    }
  });
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
