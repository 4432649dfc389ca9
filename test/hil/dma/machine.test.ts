import { VfioError, type Machine } from '../../../lib';
import { describeBackends, machineOn } from '../backends';
import { runWithSmallMemlock } from './memlock';

const MiB = 2 ** 20;
const RAM = 4 * MiB;

function machine(): Machine {
  return machineOn({ ramSize: RAM, pciHole: { start: RAM, size: 2 ** 32 - RAM }, log: null });
}

describeBackends('edu', 'the machine after close and when closing fails', (bdf) => {
  it('refuses addDevice once closed with VfioError ECLOSED', () => {
    const m = machine();
    m.close();
    let e: unknown;
    try {
      m.addDevice(bdf(), { log: null });
    } catch (x) {
      e = x;
    }
    expect(e).toBeInstanceOf(VfioError);
    expect((e as VfioError).code).toBe('ECLOSED');
    expect((e as VfioError).bdf).toBe(bdf());
  });

  it('closes the IOMMU context, bus and RAM even when a device fails to close', () => {
    const m = machine();
    const dev = m.addDevice(bdf(), { log: null });
    const realClose = dev.close.bind(dev);
    dev.close = () => {
      realClose();
      throw new Error('device close failed');
    };
    expect(() => m.close()).toThrow('device close failed');
    expect(m.container!.closed).toBe(true);
    expect(m.ram.closed).toBe(true);
    expect(m.bus.closed).toBe(true);
  });
});

describeBackends('edu', 'a machine whose RAM cannot be mapped', (bdf, backend) => {
  it('refuses the first device instead of handing out one whose DMA would fault', () => {
    const r = runWithSmallMemlock('machine-memlock-child.js', bdf(), String(RAM), backend);
    expect(r.added).toBeUndefined();
    expect([r.name, r.code, r.causeCode]).toEqual(['DmaCommitError', 'EDMACOMMIT', 'ENOMEM']);
    expect(r.message).toContain("DMA map of RAM [0x0, 0x400000) ('ram-below-4g') failed");
    expect([r.devices, r.dma, r.container, r.recorded]).toEqual([0, false, false, 0]);
  });
});

describeBackends('edu', 'a machine with more RAM than the host has', (bdf, backend) => {
  it('refuses the first device with ENOMEM before pinning, synchronously and asynchronously', async () => {
    // The lab guest has 2 GiB: 2.5 GiB of small-page RAM cannot all be pinned.
    const big = 2560 * MiB;
    const m = machineOn({ ramSize: big, log: null });
    try {
      const t = performance.now();
      let e: unknown;
      try {
        m.addDevice(bdf(), { log: null });
      } catch (x) {
        e = x;
      }
      const op = backend === 'type1' ? 'VFIO_IOMMU_MAP_DMA' : 'IOMMU_IOAS_MAP';
      expect(e).toMatchObject({ name: 'VfioError', code: 'ENOMEM', op });
      expect((e as VfioError).hint).toMatch(/ramSize/);
      // Refused at once, not after the kernel reclaimed for seconds.
      expect(performance.now() - t).toBeLessThan(5_000);
      await expect(m.addDeviceAsync(bdf(), { log: null })).rejects.toMatchObject({ code: 'ENOMEM' });
      expect([m.devices.length, m.dma, m.container]).toEqual([0, null, null]);
    } finally {
      m.close();
    }
  });
});
