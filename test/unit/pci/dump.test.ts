// The guest-view dump (dump.ts), synchronous and asynchronous.
import { enableDecode, ivshmemSpec, openFake, placeBar } from './helpers';

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
