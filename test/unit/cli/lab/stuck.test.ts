// The watch for a lab CPU stuck at one instruction, never taking the interrupt waiting in its
// local APIC: on a stand-in monitor whose CPU stays put until it was kicked some number of times.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import { lazySymbols } from '../../../../lib/cli/lab/stall';
import { KICK, watchStuck } from '../../../../lib/cli/lab/stuck';

let tmp: string;
let map: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vfio-bridge-lab-stuck-'));
  map = path.join(tmp, 'System.map');
  fs.writeFileSync(
    map,
    ['ffffffff81000100 T queued_read_lock_slowpath', 'ffffffff81000200 t do_wait', ''].join('\n'),
  );
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

/**
 * A monitor whose CPU sits at queued_read_lock_slowpath+0x47 with vector 236 waiting until it was
 * kicked `kicksToMove` times, and runs (a new place each sample, nothing waiting) after that.
 */
async function stuckMonitor(
  kicksToMove: number,
  cpu: { hlt: 0 | 1; irr: string; rflags?: string } = { hlt: 0, irr: '236 ' },
): Promise<{ sock: string; server: net.Server; samples: () => number; kicks: () => number }> {
  const sock = path.join(tmp, 'm.sock');
  let samples = 0;
  let kicks = 0;
  const server = net.createServer((c) => {
    c.write('QEMU 7.2.0 monitor\r\n(qemu) ');
    c.on('data', (d) => {
      const cmd = d.toString().trim();
      c.write(`${cmd}\r\n`);
      const moving = kicks >= kicksToMove;
      if (cmd === 'info registers') {
        samples++;
        const rip = moving ? (0xffffffff81000200n + BigInt(samples)).toString(16) : 'ffffffff81000147';
        c.write(
          'CPU#0\r\nRAX=00000000000002ff RBX=ffffffff81a05080\r\n' +
            'RSI=0000000000000000 RDI=ffffffff81a05084 RBP=ffff888002503e08 RSP=ffff888002503da0\r\n' +
            `RIP=${rip} RFL=${cpu.rflags ?? '00000286'} [--S--P-] CPL=0 II=0 A20=1 SMM=0 HLT=${cpu.hlt}\r\n(qemu) `,
        );
      } else if (cmd === 'info lapic') {
        c.write(
          `dumping local APIC state for CPU 0\r\nISR\t (none)\r\nIRR\t ${moving ? '(none)' : cpu.irr}\r\n(qemu) `,
        );
      } else if (cmd === KICK) {
        kicks++;
        c.write('(qemu) ');
      } else if (cmd.startsWith('x /64gx 0xffff888002503da0')) {
        c.write('ffff888002503da0: 0x0000000000000246 0xffffffff81000234\r\n(qemu) ');
      } else c.write('\r\n(qemu) ');
    });
  });
  await new Promise<void>((r) => server.listen(sock, r));
  return { sock, server, samples: () => samples, kicks: () => kicks };
}

/** Watches for `ms`, or until it gives up: the kicks it reported and the picture, if any. */
function watchFor(
  sock: string,
  quietSince: () => number,
  ms: number,
): Promise<{ kicked: string[]; stuck: string[] | null }> {
  const kicked: string[] = [];
  return new Promise((resolve) => {
    const stop = watchStuck({
      pid: process.pid,
      monitor: sock,
      symbols: lazySymbols(map),
      counting: () => true,
      quietSince,
      quietSeconds: 0.1,
      everySeconds: 0.05,
      onKick: (line) => kicked.push(line),
      onStuck: (picture) => {
        clearTimeout(t);
        stop();
        resolve({ kicked, stuck: picture });
      },
    });
    const t = setTimeout(() => {
      stop();
      resolve({ kicked, stuck: null });
    }, ms);
  });
}

const silent = (): number => performance.now() - 10_000;

test('three samples in a row at one place, a vector waiting: kicked, and reported; once it moves, nothing more', async () => {
  const m = await stuckMonitor(1);
  try {
    const { kicked, stuck } = await watchFor(m.sock, silent, 1500);
    expect(stuck).toBeNull();
    expect(m.kicks()).toBe(1);
    expect(kicked).toEqual([
      `the CPU stayed at queued_read_lock_slowpath+0x47 ffffffff81000147 with vector 236 waiting in its local APIC, in 3 samples 0.05 s apart: kicked it (${KICK})`,
    ]);
    expect(m.samples()).toBeGreaterThan(6);
  } finally {
    m.server.close();
  }
});

test('a CPU three kicks do not move is stuck: the picture, with the kernel functions on its stack', async () => {
  const m = await stuckMonitor(Infinity);
  try {
    const { kicked, stuck } = await watchFor(m.sock, silent, 10_000);
    expect(kicked).toHaveLength(3);
    expect(m.kicks()).toBe(3);
    expect(stuck?.[0]).toBe(
      'the CPU stayed at queued_read_lock_slowpath+0x47 ffffffff81000147 with vector 236 waiting in its local APIC, in 3 samples 0.05 s apart, after 3 kicks',
    );
    expect(stuck).toContain('RIP is in queued_read_lock_slowpath+0x47');
    // 0x246 on the stack is no code address; the return address is.
    expect(stuck?.filter((l) => l.startsWith('stack: '))).toEqual(['stack: 0xffffffff81000234 do_wait+0x34']);
  } finally {
    m.server.close();
  }
});

test('a CPU halted with interrupts on and a vector waiting is stuck too: QEMU did not wake it', async () => {
  const m = await stuckMonitor(1, { hlt: 1, irr: '236 ' });
  try {
    const { kicked, stuck } = await watchFor(m.sock, silent, 1500);
    expect(stuck).toBeNull();
    expect(kicked).toEqual([
      `the CPU stayed halted at queued_read_lock_slowpath+0x47 ffffffff81000147 with vector 236 waiting in its local APIC, in 3 samples 0.05 s apart: kicked it (${KICK})`,
    ]);
  } finally {
    m.server.close();
  }
});

test.each([
  ['halted with nothing waiting (an idle guest)', { hlt: 1, irr: '(none)' }],
  ['halted with interrupts off (only an NMI wakes it)', { hlt: 1, irr: '236 ', rflags: '00000046' }],
  ['busy with no interrupt waiting', { hlt: 0, irr: '(none)' }],
] as const)('a CPU at one place %s is not kicked', async (_, cpu) => {
  const m = await stuckMonitor(Infinity, cpu);
  try {
    expect(await watchFor(m.sock, silent, 800)).toEqual({ kicked: [], stuck: null });
    expect(m.samples()).toBeGreaterThan(3);
  } finally {
    m.server.close();
  }
});

test('nor is the CPU sampled while the console speaks', async () => {
  const m = await stuckMonitor(Infinity);
  try {
    expect(await watchFor(m.sock, () => performance.now(), 800)).toEqual({ kicked: [], stuck: null });
    expect(m.samples()).toBe(0);
  } finally {
    m.server.close();
  }
});
