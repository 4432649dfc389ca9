// `reset --hot` and `irqs --watch` on real vfio-pci: the hot reset of the edu behind the root port
// checked against the library's hot-reset info, and live counts of edu's MSI while this test makes
// the device raise them, checked against the guest kernel's own count.
import * as fs from 'node:fs';

import { Mapping } from '../../../lib';
import type { CliIo } from '../../../lib/cli/io';
import { run } from '../../../lib/cli/program';
import { validJson } from '../../support/cli-harness';
import { cli } from '../../support/cli-harness';
import { describeDevice, openDevice } from '../hil';
import { EDU, kernelIrqCount, until } from '../pci/irq-helpers';

jest.setTimeout(60000);

const env = { ...process.env };

describeDevice('hotreset', 'reset --hot', (bdf) => {
  test('opens every group the hot-reset info lists, resets the bus, and reports what it reset', async () => {
    const o = openDevice(bdf());
    const info = o.device.hotResetInfo();
    o.close();
    const r = await cli(['reset', '--hot', '--json', bdf()], env);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(validJson('reset', r.stdout)).toEqual({
      command: 'reset',
      version: 1,
      bdf: bdf(),
      method: 'hot',
      flags: info.flags,
      devices: info.devices.map((d) => ({ bdf: d.bdf, group: d.group })),
      groups: [...info.groups],
    });
    const t = await cli(['reset', '--hot', bdf()], env);
    expect(t.code).toBe(0);
    expect(t.stdout).toBe(
      `${bdf()}: hot reset done\n` +
        info.devices.map((d) => `  reset with it: ${d.bdf} (group ${d.group})\n`).join(''),
    );
    // Every group went back: the device opens again.
    openDevice(bdf()).close();
  });
});

describeDevice('e1000e', 'reset --hot where the kernel has none', (bdf) => {
  test('is refused with the reason and the function reset as the fix', async () => {
    const r = await cli(['reset', '--hot', bdf()], env);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain(`${bdf()} cannot be hot-reset: the kernel offers no bus or slot reset`);
    expect(r.stderr).toContain('[ENODEV]');
    expect(r.stderr).toContain(`use its function reset instead (\`vfio-bridge reset ${bdf()}\``);
    openDevice(bdf()).close();
  });
});

/** The CLI in-process, with stdout seen line by line while it runs. */
function start(
  argv: string[],
  signal?: AbortSignal,
): { lines: string[]; stderr: () => string; done: Promise<number> } {
  const lines: string[] = [];
  let partial = '';
  let stderr = '';
  const io: CliIo = {
    out: (s) => {
      partial += s;
      const parts = partial.split('\n');
      partial = parts.pop()!;
      lines.push(...parts);
    },
    err: (s) => void (stderr += s),
    errIsTty: false,
    env,
    confirm: async () => null,
    ...(signal ? { signal } : {}),
  };
  return { lines, stderr: () => stderr, done: run(argv, io) };
}

/**
 * The device fd the in-process CLI holds: the one vfio-device anon inode (type1, from the group) or
 * device cdev (iommufd) in this process.
 */
function cliDeviceFd(): number {
  const fds = fs
    .readdirSync('/proc/self/fd')
    .map(Number)
    .filter((fd) => {
      try {
        const t = fs.readlinkSync(`/proc/self/fd/${fd}`);
        return t === 'anon_inode:[vfio-device]' || /^\/dev\/vfio\/devices\/vfio\d+$/.test(t);
      } catch {
        return false;
      }
    });
  if (fds.length !== 1) throw new Error(`expected one vfio device fd in this process, found ${fds.length}`);
  return fds[0]!;
}

// vfio-pci's fixed region layout: region n starts at n << 40 in the device fd.
const CONFIG_OFFSET = 7 * 2 ** 40;

function fdCount(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

describeDevice('edu', 'irqs --watch', (bdf) => {
  test('counts each MSI the device raises, per vector, for --samples samples, then lets the device go', async () => {
    const N = 20;
    const SAMPLES = 12;
    const fdsBefore = fdCount();
    const w = start(['irqs', bdf(), '--watch', '--json', '--interval', '250', '--samples', String(SAMPLES)]);
    await until(() => w.lines.length > 0, 20000, 'the first sample');
    // The test drives the device through the fd the CLI holds (a group opens once per process):
    // memory decode on, then raise and acknowledge, one interrupt at a time so the guest kernel's
    // count can pace it (MSIs raised faster than the kernel takes them merge).
    const fd = cliDeviceFd();
    const cmd = Buffer.alloc(2);
    fs.readSync(fd, cmd, 0, 2, CONFIG_OFFSET + 4);
    expect(cmd.readUInt16LE(0) & 0x4).toBe(0x4); // the watch made the device a bus master
    cmd.writeUInt16LE(cmd.readUInt16LE(0) | 0x2);
    fs.writeSync(fd, cmd, 0, 2, CONFIG_OFFSET + 4);
    const name = `vfio-msi[0](${bdf()})`;
    const kernelBefore = kernelIrqCount(name);
    const m = Mapping.fromFd(fd, 0, 4096);
    try {
      for (let i = 1; i <= N; i++) {
        m.write32(EDU.raise, 1);
        await until(() => kernelIrqCount(name) >= kernelBefore + i, 5000, `MSI ${i}`);
        m.write32(EDU.ack, 1);
      }
    } finally {
      m.close();
    }
    const kernelSeen = kernelIrqCount(name) - kernelBefore;
    expect(await w.done).toBe(0);
    expect(w.stderr()).toContain(`watching msi of ${bdf()}: 1 vector, every 250 ms, ${SAMPLES} samples`);
    const samples = w.lines.map(
      (l) =>
        validJson('irqs-watch', l) as {
          sample: number;
          counts: number[];
          totals: number[];
          stop: string | null;
        },
    );
    expect(samples.map((s) => s.sample)).toEqual(Array.from({ length: SAMPLES }, (_, i) => i + 1));
    expect(samples.map((s) => s.stop)).toEqual([...Array<null>(SAMPLES - 1).fill(null), 'samples']);
    const last = samples[SAMPLES - 1]!;
    expect(kernelSeen).toBe(N);
    expect(last.totals).toEqual([N]);
    expect(samples.reduce((n, s) => n + s.counts[0]!, 0)).toBe(N);
    // Everything it opened is closed, and the device is free again.
    expect(fdCount()).toBe(fdsBefore);
    openDevice(bdf()).close();
  });

  test('Ctrl-C ends the watch with a last line, exit 0, and the interrupts disabled', async () => {
    const stop = new AbortController();
    const fdsBefore = fdCount();
    const w = start(['irqs', bdf(), '--watch', '--irq', 'intx', '--interval', '100'], stop.signal);
    await until(() => w.lines.length > 1, 20000, 'the first sample');
    stop.abort();
    expect(await w.done).toBe(0);
    expect(w.lines[0]).toMatch(/^ +time +intx\/0$/);
    expect(w.lines.at(-1)).toMatch(/^ +total +0$/);
    expect(fdCount()).toBe(fdsBefore);
    openDevice(bdf()).close();
  });
});
