// Device reset on real vfio-pci: the guest-visible reset and the recovery reset on edu and e1000e,
// with a Mapping read racing each from another thread, and PCI hot reset behind a root port.
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';

import { Group, VfioError } from '../../../lib';
import type { VfioPciDevice } from '../../../lib/pci';
import { VFIO_PCI_HOT_RESET_FLAG_DEV_ID } from '../../../lib/vfio/hot-reset';
import { describeBackend } from '../backends';
import { describeDevice, describePci, type LabDevice, openLab, placeBar } from './lab';
import { CMD_DECODE_MASTER, collect, EDU, enableMsi, until } from './irq-helpers';

// TCG is slow, and a bus reset waits for its link: seconds, not the default five.
jest.setTimeout(60000);

const dist = path.resolve(__dirname, '../../../dist/index.js');

const RACER = `
const { parentPort, workerData } = require('node:worker_threads');
const { Mapping } = require(workerData.dist);
const stop = new Int32Array(workerData.stop);
const m = Mapping.fromFd(workerData.fd, workerData.offset, 4096);
let ok = 0, faults = 0;
const other = [];
parentPort.postMessage('ready');
while (Atomics.load(stop, 0) === 0) {
  try { m.read32(0); ok++; } catch (e) { if (e.code === 'SIGBUS') faults++; else other.push(String(e)); }
}
m.close();
parentPort.postMessage({ ok, faults, other });
`;

/** Runs `fn` while a worker reads BAR `bar` of `lab`'s device through its own Mapping in a loop. */
async function racing(
  lab: LabDevice,
  bar: number,
  fn: () => void,
): Promise<{ ok: number; faults: number; other: string[] }> {
  const stop = new SharedArrayBuffer(4);
  const offset = lab.vfio.regionInfo(bar).offset;
  const w = new Worker(RACER, { eval: true, workerData: { dist, fd: lab.vfio.fd, offset, stop } });
  const result = new Promise<{ ok: number; faults: number; other: string[] }>((resolve, reject) => {
    w.on('message', (m) => {
      if (m !== 'ready') resolve(m);
    });
    w.on('error', reject);
  });
  await new Promise<void>((r) => w.once('message', () => r()));
  try {
    fn();
  } finally {
    Atomics.store(new Int32Array(stop), 0, 1);
  }
  const r = await result;
  await new Promise((res) => w.once('exit', res));
  return r;
}

/** The guest's view of the first 256 bytes of config space, dword by dword. */
function guestConfig(dev: VfioPciDevice): number[] {
  const out: number[] = [];
  for (let o = 0; o < 0x100; o += 4) out.push(dev.configRead(o, 4));
  return out;
}

// The edu on the root bus has no reset at all (no FLR, no PM, and a root-bus slot cannot be
// bus-reset alone); the edu behind the root port is reset through its bus.
describePci('edu', 'reset of an edu that has none', (bdfOf) => {
  test('Device.reset() and both modes refuse with ENORESET, and the guest-visible state is still right', () => {
    const lab = openLab(bdfOf(), { log: null });
    try {
      placeBar(lab.dev, 0, 0xfe000000);
      lab.dev.configWrite(0x04, 2, CMD_DECODE_MASTER);
      let err: unknown;
      try {
        lab.vfio.reset();
      } catch (e) {
        err = e;
      }
      expect((err as VfioError).code).toBe('EINVAL');
      expect((err as VfioError).hint).toMatch(/hot reset/);
      const before = guestConfig(lab.dev);
      expect(() => lab.dev.reset('recover')).toThrow(/no reset method worked/);
      expect(guestConfig(lab.dev)).toEqual(before);
      expect(lab.bus.mmioRead(0xfe000000, 4)).toBe(0x010000ed);
      expect(() => lab.dev.reset('guest')).toThrow(/no reset method worked/);
      expect(lab.dev.configRead(0x04, 2) & 0x7).toBe(0);
      expect(lab.dev.mapinfo()).toEqual([]);
    } finally {
      lab.close();
    }
  });
});

describePci('hotreset', 'reset of edu', (bdfOf) => {
  let lab: LabDevice;
  const BAR = 0xfe000000;
  beforeEach(() => {
    lab = openLab(bdfOf(), { log: null });
    placeBar(lab.dev, 0, BAR);
    lab.dev.configWrite(0x04, 2, CMD_DECODE_MASTER);
    enableMsi(lab.dev);
  });
  afterEach(() => lab?.close());

  test('guest-visible reset: reset values, a racing Mapping read faults, MSI works once set up again', async () => {
    const { got } = collect(lab.dev);
    let method = '';
    const race = await racing(lab, 0, () => {
      method = lab.dev.reset('guest');
    });
    expect(race.other).toEqual([]);
    expect(race.faults).toBeGreaterThan(0);
    expect(method).toBe('device');
    expect(lab.dev.configRead(0x04, 2) & 0x7).toBe(0);
    expect(lab.dev.command & 0x7).toBe(0);
    expect(lab.dev.configRead(0x10, 4)).toBe(0);
    expect(lab.dev.bars[0]?.address).toBeNull();
    expect(lab.dev.mapinfo()).toEqual([]);
    expect(lab.dev.configRead(lab.dev.irq.msi!.capOffset + 2, 2) & 1).toBe(0);
    expect(lab.dev.irq.mode).toBe('intx');
    // The guest sets the device up again and it interrupts.
    placeBar(lab.dev, 0, BAR);
    lab.dev.configWrite(0x04, 2, CMD_DECODE_MASTER);
    expect(lab.bus.mmioRead(BAR, 4)).toBe(0x010000ed);
    enableMsi(lab.dev);
    lab.bus.mmioWrite(BAR + EDU.raise, 4, 1);
    await until(() => got.some(([, , t]) => t === 'msi'), 10000, 'an MSI after the reset');
  });

  test('recovery reset: config space unchanged, BARs and MSI still work', async () => {
    const { got } = collect(lab.dev);
    const before = guestConfig(lab.dev);
    const fds = lab.dev.irq.host?.fds;
    const race = await racing(lab, 0, () => {
      expect(lab.dev.reset('recover')).toBe('device');
    });
    expect(race.other).toEqual([]);
    expect(race.faults).toBeGreaterThan(0);
    expect(guestConfig(lab.dev)).toEqual(before);
    // The same eventfds: a KVM VMM's irqfds stay wired.
    expect(lab.dev.irq.host?.fds).toEqual(fds);
    expect(lab.bus.mmioRead(BAR, 4)).toBe(0x010000ed);
    lab.bus.mmioWrite(BAR + EDU.raise, 4, 1);
    await until(() => got.length > 0, 10000, 'an MSI after the recovery');
    expect(got[0]).toEqual([0, 1, 'msi']);
    expect(lab.dev.deviceErrorCount).toBe(0);
  });
});

describePci('e1000e', 'reset of e1000e', (bdfOf) => {
  let lab: LabDevice;
  const BAR0 = 0xfea00000;
  const BAR3 = 0xfebf0000;
  beforeEach(() => {
    lab = openLab(bdfOf(), { log: null });
    placeBar(lab.dev, 0, BAR0);
    placeBar(lab.dev, 3, BAR3);
    lab.dev.configWrite(0x04, 2, CMD_DECODE_MASTER);
    const t = BAR3 + lab.dev.msix!.tableOffset;
    lab.bus.mmioWrite(t, 8, 0xfee00000n);
    lab.bus.mmioWrite(t + 8, 4, 0x4030);
    lab.bus.mmioWrite(t + 12, 4, 0);
    lab.dev.configWrite(lab.dev.msix!.capOffset + 2, 2, 0x8000);
  });
  afterEach(() => lab?.close());

  function raise(): void {
    lab.bus.mmioWrite(BAR0 + 0xc0, 4, 0xffffffff);
    lab.bus.mmioWrite(BAR0 + 0xe4, 4, 0x8 << 16);
    lab.bus.mmioWrite(BAR0 + 0xd0, 4, 1 << 24);
    lab.bus.mmioWrite(BAR0 + 0xc8, 4, 1 << 24);
  }

  test('guest-visible reset: MSI-X disabled, table masked, BARs unplaced; a racing read faults', async () => {
    const race = await racing(lab, 0, () => {
      expect(lab.dev.reset('guest')).toBe('pm');
    });
    expect(race.other).toEqual([]);
    expect(race.faults).toBeGreaterThan(0);
    expect(lab.dev.configRead(lab.dev.msix!.capOffset + 2, 2) & 0xc000).toBe(0);
    expect(lab.dev.msix!.enabled).toBe(false);
    expect(lab.dev.msix!.vector(0)).toEqual({ index: 0, address: 0n, data: 0, masked: true });
    expect(lab.dev.configRead(0x04, 2) & 0x7).toBe(0);
    expect(lab.dev.mapinfo()).toEqual([]);
    expect(lab.dev.irq.mode).toBe('none');
  });

  test('recovery reset: config and MSI-X setup as before, and interrupts still arrive', async () => {
    const { got } = collect(lab.dev);
    const before = guestConfig(lab.dev);
    const table = lab.dev.msix!.vectors();
    const race = await racing(lab, 0, () => {
      expect(lab.dev.reset('recover')).toBe('pm');
    });
    expect(race.other).toEqual([]);
    expect(race.faults).toBeGreaterThan(0);
    expect(guestConfig(lab.dev)).toEqual(before);
    expect(lab.dev.msix!.vectors()).toEqual(table);
    expect(lab.dev.irq.mode).toBe('msix');
    raise();
    await until(() => got.length > 0, 10000, 'an MSI-X interrupt after the recovery');
    expect(got[0][0]).toBe(0);
    expect(lab.dev.deviceErrorCount).toBe(0);
  });
});

// Groups prove ownership on type1; on iommufd the device's binding does (no fds are passed).
describeDevice('hotreset', 'hot reset behind a root port on type1', (bdfOf) => {
  test('the info lists the device and its group; a missing group is named; the reset runs', () => {
    const bdf = bdfOf();
    const lab = openLab(bdf, { log: null });
    try {
      const group = Group.numberOf(bdf);
      const info = lab.vfio.hotResetInfo();
      expect(info.devices).toContainEqual(expect.objectContaining({ bdf, group }));
      expect(info.groups).toContain(group);
      let err: unknown;
      try {
        lab.vfio.hotReset([]);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(VfioError);
      expect((err as VfioError).code).toBe('EGROUPS');
      expect((err as VfioError).message).toContain(`group ${group} (${bdf})`);
      lab.vfio.hotReset();
      // The layer's own reset works on it too, and the device answers afterwards.
      expect(['flr', 'hot', 'device']).toContain(lab.dev.reset('guest'));
      placeBar(lab.dev, 0, 0xfe000000);
      lab.dev.configWrite(0x04, 2, CMD_DECODE_MASTER);
      expect(lab.bus.mmioRead(0xfe000000, 4)).toBe(0x010000ed);
    } finally {
      lab.close();
    }
  });
});

describeDevice('hotreset', 'hot reset behind a root port', (bdfOf) => {
  describeBackend('iommufd', 'through the device cdev', () => {
    test('the info names devices by iommufd ID, and the reset runs with no group fd', () => {
      const bdf = bdfOf();
      const lab = openLab(bdf, { log: null });
      try {
        const info = lab.vfio.hotResetInfo();
        expect(info.flags & VFIO_PCI_HOT_RESET_FLAG_DEV_ID).toBe(VFIO_PCI_HOT_RESET_FLAG_DEV_ID);
        expect(info.devices).toContainEqual(
          expect.objectContaining({ bdf, group: -1, devId: lab.vfio.iommufdDevId }),
        );
        expect(info.groups).toEqual([]);
        lab.vfio.hotReset();
        expect(['flr', 'hot', 'device']).toContain(lab.dev.reset('guest'));
        placeBar(lab.dev, 0, 0xfe000000);
        lab.dev.configWrite(0x04, 2, CMD_DECODE_MASTER);
        expect(lab.bus.mmioRead(0xfe000000, 4)).toBe(0x010000ed);
      } finally {
        lab.close();
      }
    });
  });
});
