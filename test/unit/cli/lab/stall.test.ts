// The stalled-guest watch's parts: QEMU's CPU time from /proc, one human-monitor command's answer
// (on a stand-in monitor that talks as QEMU's does: banner, prompt, echo), System.map lookups, and
// the watch for a CPU that spins on a lock with interrupts off while the console is silent.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import {
  cpuPoint,
  cpuTicks,
  monitorCommand,
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

/** A stand-in monitor whose CPU is at `rip` with `rflags`; counts the register samples it gave. */
async function spinMonitor(
  sock: string,
  rflags: string,
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
          'RAX=0000000000000000 RBX=ffff888003c1a000\r\n' +
            'RSI=0000000000000001 RDI=ffffffff82a0b3c0 RBP=ffffc90000003e40 RSP=ffffc90000003e20\r\n' +
            `RIP=ffffffff8100017b RFL=${rflags} [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0\r\n(qemu) `,
        );
      } else if (cmd.startsWith('x /64gx 0xffffc90000003e20')) {
        c.write('ffffc90000003e20: 0x0000000000000246 0xffffffff81000234\r\n(qemu) ');
      } else c.write('\r\n(qemu) ');
    });
  });
  await new Promise<void>((r) => server.listen(sock, r));
  return { server, samples: () => samples };
}

describe('a CPU spinning on a lock with interrupts off', () => {
  let map: string;
  beforeEach(() => {
    map = path.join(tmp, 'System.map');
    fs.writeFileSync(
      map,
      [
        'ffffffff81000100 T native_queued_spin_lock_slowpath',
        'ffffffff81000200 t irq_handler_that_locks',
        '',
      ].join('\n'),
    );
  });

  const watch = (
    sock: string,
    quiet: () => number,
  ): { stop: () => void; stalled: Promise<{ picture: string[]; kind: StallKind }> } => {
    let stop = (): void => undefined;
    const stalled = new Promise<{ picture: string[]; kind: StallKind }>((resolve) => {
      stop = watchStall({
        pid: process.pid,
        monitor: sock,
        systemMap: map,
        stillSeconds: 60,
        pollSeconds: 0.1,
        counting: () => true,
        quietSince: quiet,
        spinQuietSeconds: 0.2,
        onStall: (picture, kind) => resolve({ picture, kind }),
      });
    });
    return { stop, stalled };
  };

  test('is a stall of its own kind once three samples in a row find it there; the picture names the calls on its stack', async () => {
    const sock = path.join(tmp, 'm.sock');
    const m = await spinMonitor(sock, '00000046');
    const silent = performance.now() - 10_000;
    const w = watch(sock, () => silent);
    try {
      const { picture, kind } = await w.stalled;
      expect(kind).toBe('spin');
      expect(m.samples()).toBeGreaterThanOrEqual(3);
      expect(picture[0]).toBe(
        'the CPU was in native_queued_spin_lock_slowpath+0x7b, native_queued_spin_lock_slowpath+0x7b, native_queued_spin_lock_slowpath+0x7b with interrupts off, 0.1 s apart',
      );
      expect(picture).toContain('RIP is in native_queued_spin_lock_slowpath+0x7b');
      // 0x246 on the stack is no code address; the return address is.
      expect(picture.filter((l) => l.startsWith('stack: '))).toEqual([
        'stack: 0xffffffff81000234 irq_handler_that_locks+0x34',
      ]);
    } finally {
      w.stop();
      m.server.close();
    }
  });

  test('with interrupts on it is not one (the lock is contended, its holder can run), nor while the console speaks', async () => {
    const sock = path.join(tmp, 'on.sock');
    const m = await spinMonitor(sock, '00000246');
    const silent = performance.now() - 10_000;
    let fired = false;
    const w = watch(sock, () => silent);
    void w.stalled.then(() => (fired = true));
    await new Promise((r) => setTimeout(r, 1000));
    w.stop();
    expect(m.samples()).toBeGreaterThanOrEqual(3);
    expect(fired).toBe(false);
    m.server.close();

    const sock2 = path.join(tmp, 'off.sock');
    const m2 = await spinMonitor(sock2, '00000046');
    const w2 = watch(sock2, () => performance.now());
    void w2.stalled.then(() => (fired = true));
    await new Promise((r) => setTimeout(r, 1000));
    w2.stop();
    expect(m2.samples()).toBe(0);
    expect(fired).toBe(false);
    m2.server.close();
  });
});

test("a CPU's point: RIP, RSP and the interrupt flag from info registers; null without them", () => {
  expect(
    cpuPoint(['RSI=0 RDI=0 RBP=0 RSP=ffffc90000003e20', 'RIP=ffffffff8100017b RFL=00000246 [---Z-P-] CPL=0']),
  ).toEqual({ rip: 0xffffffff8100017bn, rsp: 0xffffc90000003e20n, interrupts: true });
  expect(cpuPoint(['RSP=10 RIP=20 RFL=00000046'])).toEqual({ rip: 0x20n, rsp: 0x10n, interrupts: false });
  expect(cpuPoint(['(monitor: connect ENOENT)'])).toBeNull();
});
