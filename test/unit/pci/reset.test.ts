// VfioPciDevice.reset on a fake device: the method QEMU would pick, and what the guest sees after
// a guest-visible reset and after a recovery reset.
import type { VfioPciDevice } from '../../../lib/pci';
import { e1000eSpec, placeBar } from '../../support/pci-helpers';
import { type FakeIrqSpec, openIrqFake } from './fake-irq';

const BAR3 = 0xfebf0000;

function setup(spec: Partial<FakeIrqSpec> = {}) {
  const { fake, bus, dev } = openIrqFake(spec);
  dev.irq.on('interrupt', () => undefined);
  placeBar(dev, 0, 0xfea00000);
  placeBar(dev, 3, BAR3);
  dev.configWrite(0x04, 2, 0x0007);
  bus.mmioWrite(BAR3, 8, 0xfee00000n);
  bus.mmioWrite(BAR3 + 8, 4, 0x4040);
  bus.mmioWrite(BAR3 + 12, 4, 0);
  dev.configWrite(dev.msix!.capOffset + 2, 2, 0x8000);
  return { fake, bus, dev };
}

function config(dev: VfioPciDevice): number[] {
  const out: number[] = [];
  for (let o = 0; o < 0x100; o += 4) out.push(dev.configRead(o, 4));
  return out;
}

test('guest-visible reset: BARs unplaced, decode and bus master off, MSI-X disabled and masked', () => {
  const { fake, dev } = setup();
  expect(dev.reset()).toBe('pm');
  expect(fake.resetsDone).toEqual(['device']); // PM capability, no FLR, no hot reset: the PM reset
  expect(dev.configRead(0x04, 2) & 0x7).toBe(0);
  expect(dev.configRead(0x10, 4)).toBe(0);
  expect(dev.configRead(0x1c, 4)).toBe(0);
  expect(dev.mapinfo()).toEqual([]);
  expect(dev.msix!.enabled).toBe(false);
  expect(dev.msix!.vector(0)).toEqual({ index: 0, address: 0n, data: 0, masked: true });
  expect(dev.configRead(dev.msix!.capOffset + 2, 2) & 0xc000).toBe(0);
  // INTx is wired again for the listener, as QEMU re-enables it after a reset.
  expect(dev.irq.mode).toBe('intx');
  expect(fake.host(2)).toBeUndefined();
});

test('recovery reset: the guest sees the same config, BARs and MSI-X; host vectors come back', () => {
  const { fake, bus, dev } = setup();
  const before = config(dev);
  const ranges = dev.mapinfo();
  const host = fake.host(2)!;
  expect(dev.reset('recover')).toBe('pm');
  expect(config(dev)).toEqual(before);
  expect(dev.mapinfo()).toEqual(ranges);
  expect(dev.irq.mode).toBe('msix');
  expect(fake.host(2)).toBe(host);
  expect(host.enabled).toBe(true);
  expect(bus.mmioRead(BAR3 + 8, 4)).toBe(0x4040);
  // The device's own command register got the guest's value back after the reset.
  expect(fake.configView.getUint16(4, true) & 0x7).toBe(0x7);
});

test("QEMU's order: PM capability without FLR tries the hot reset first, then the PM reset", () => {
  const pm = { bars: e1000eSpec().bars };
  const a = setup({ ...pm, resets: { device: true, hot: true } });
  expect(a.dev.reset()).toBe('hot');
  const b = setup({ ...pm, resets: { device: true, hot: false } });
  expect(b.dev.reset('recover')).toBe('pm');
  const c = setup({ resets: { device: false, hot: false } });
  expect(() => c.dev.reset()).toThrow(/no reset method worked/);
  // The guest-visible state is restored even so.
  expect(c.dev.configRead(0x04, 2) & 0x7).toBe(0);
  expect(() => c.dev.reset('other' as never)).toThrow(RangeError);
});

/** Gives the fake the promise forms of its resets, each settling a turn later; records the calls. */
function withAsyncResets(fake: { reset(): void; hotReset(): void }): string[] {
  const calls: string[] = [];
  const later = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
  Object.assign(fake, {
    resetAsync: async () => {
      calls.push('resetAsync');
      await later();
      fake.reset();
    },
    hotResetAsync: async () => {
      calls.push('hotResetAsync');
      await later();
      fake.hotReset();
    },
  });
  return calls;
}

test('resetAsync takes the decisions reset takes, through the promise forms of the ioctls', async () => {
  const pm = { bars: e1000eSpec().bars };
  const cases: [Partial<FakeIrqSpec>, 'guest' | 'recover', string[]][] = [
    [{}, 'guest', ['hotResetAsync', 'resetAsync']],
    [{ ...pm, resets: { device: true, hot: true } }, 'guest', ['hotResetAsync']],
    [{ ...pm, resets: { device: true, hot: false } }, 'recover', ['hotResetAsync', 'resetAsync']],
  ];
  for (const [spec, mode, expected] of cases) {
    const sync = setup(spec);
    const other = setup(spec);
    const calls = withAsyncResets(other.fake);
    const method = sync.dev.reset(mode);
    expect(await other.dev.resetAsync(mode)).toBe(method);
    expect(calls).toEqual(expected);
    expect(other.fake.resetsDone).toEqual(sync.fake.resetsDone);
    expect(config(other.dev)).toEqual(config(sync.dev));
    expect(other.dev.irq.mode).toBe(sync.dev.irq.mode);
  }
  const none = setup({ resets: { device: false, hot: false } });
  withAsyncResets(none.fake);
  await expect(none.dev.resetAsync()).rejects.toThrow(/no reset method worked/);
  expect(none.dev.configRead(0x04, 2) & 0x7).toBe(0);
  await expect(none.dev.resetAsync('other' as never)).rejects.toThrow(RangeError);
});
