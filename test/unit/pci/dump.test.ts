// The guest-view dump (dump.ts), synchronous and asynchronous.
import { AbortError, VfioBridgeError } from '../../../lib/base/error';
import { enableDecode, ivshmemSpec, openFake, placeBar, ticker } from '../../support/pci-helpers';

describe('dump', () => {
  it('dumps at the widest accepted width by default and never wider', () => {
    const { bus, dev } = openFake(ivshmemSpec(), { vendorId: 0x10ec, deviceId: 0x8168 });
    placeBar(dev, 2, 0xf0000000);
    enableDecode(dev);
    bus.mmioWrite(0xf0000000, 8, 0x0807060504030201n);
    expect(dev.dump(2, 0, 16)).toBe('00000000f0000000: 0x0807060504030201 0x0000000000000000');
    expect(dev.dump(2, 0, 4, { width: 1 })).toBe('00000000f0000000: 0x01 0x02 0x03 0x04');
    // The quirk accepts only 4-byte accesses.
    expect(dev.dump(2, 0x70, 8)).toBe('00000000f0000070: 0x00000000 0x00000000');
    expect(() => dev.dump(2, 0x70, 8, { width: 8 })).toThrow(RangeError);
    expect(() => dev.dump(2, 0x70, 8, { width: 2 })).toThrow(RangeError);
    expect(() => dev.dump(2, 0xffff8, 16)).toThrow(RangeError);
    expect(() => dev.dump(0, 0, 4)).toThrow(/not mapped/);
    expect(() => dev.dump(1, 0, 4)).toThrow(/not implemented/);
  });
});

describe('dumpAsync', () => {
  /** ivshmem's 1 MiB BAR 2 at 0xf0000000, served through the fd so that every access is logged. */
  function setup() {
    const { bus, fake, dev } = openFake(ivshmemSpec(), { noMmap: true });
    placeBar(dev, 2, 0xf0000000);
    enableDecode(dev);
    for (let a = 0; a < 0x10000; a += 8) bus.mmioWrite(0xf0000000 + a, 8, BigInt(a) * 0x0101_0101n);
    fake.take();
    return { bus, fake, dev };
  }

  it('gives what dump gives, one guest access per value, with turns of the event loop between chunks', async () => {
    const { fake, dev } = setup();
    const sync = dev.dump(2, 0, 0x10000);
    const syncAccesses = fake.take();
    const t = ticker();
    expect(await dev.dumpAsync(2, 0, 0x10000)).toBe(sync);
    const turns = t.turns;
    t.stop();
    expect(fake.take()).toEqual(syncAccesses);
    // 8192 eight-byte reads, 256 per turn.
    expect(syncAccesses).toHaveLength(0x2000);
    expect(turns).toBeGreaterThanOrEqual(31);
    expect(await dev.dumpAsync(2, 0x70, 8, { width: 4 })).toBe(dev.dump(2, 0x70, 8, { width: 4 }));
  });

  it('rejects what dump throws', async () => {
    const { dev } = setup();
    await expect(dev.dumpAsync(0, 0, 4)).rejects.toThrow(/not mapped/);
    await expect(dev.dumpAsync(1, 0, 4)).rejects.toThrow(/not implemented/);
    await expect(dev.dumpAsync(2, 0xffff8, 16)).rejects.toThrow(RangeError);
    await expect(dev.dumpAsync(7, 0, 4)).rejects.toThrow(RangeError);
    await expect(dev.dumpAsync(2, 0, 8, { signal: {} as AbortSignal })).rejects.toThrow(TypeError);
    dev.close();
    await expect(dev.dumpAsync(2, 0, 8)).rejects.toMatchObject({ code: 'ECLOSED' });
  });

  it('stops when its signal aborts, before it starts or between two chunks, with an AbortError', async () => {
    const { fake, dev } = setup();
    const before = new AbortController();
    before.abort(new Error('not wanted'));
    const early = await dev.dumpAsync(2, 0, 0x10000, { signal: before.signal }).catch((e: unknown) => e);
    expect(early).toBeInstanceOf(AbortError);
    expect(early).toBeInstanceOf(VfioBridgeError);
    expect(early).toMatchObject({ name: 'AbortError', code: 'ABORT_ERR', cause: before.signal.reason });
    expect(fake.take()).toEqual([]);
    const ac = new AbortController();
    const dumping = dev.dumpAsync(2, 0, 0x10000, { signal: ac.signal });
    setImmediate(() => ac.abort());
    const late = await dumping.catch((e: unknown) => e);
    expect(late).toBeInstanceOf(AbortError);
    expect((late as AbortError).cause).toBe(ac.signal.reason);
    expect((late as Error).message).toBe('0000:00:06.0: dump of BAR 2 was aborted');
    const made = fake.take().length;
    expect(made).toBeGreaterThan(0);
    expect(made).toBeLessThan(0x2000);
  });

  it('rejects when the device closes or the guest moves the BAR meanwhile', async () => {
    const moved = setup();
    const dumping = moved.dev.dumpAsync(2, 0, 0x10000);
    setImmediate(() => placeBar(moved.dev, 2, 0xe0000000));
    await expect(dumping).rejects.toThrow(/BAR 2 was moved or unmapped during the dump/);
    const closed = setup();
    const closing = closed.dev.dumpAsync(2, 0, 0x10000);
    setImmediate(() => closed.dev.close());
    await expect(closing).rejects.toMatchObject({ code: 'ECLOSED' });
  });
});
