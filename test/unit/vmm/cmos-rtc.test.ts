import { CmosRtc } from '../../../lib/vmm';

const T = Date.UTC(2026, 10, 29, 20, 15, 30); // Sunday 29 November 2026, 20:15:30 UTC

function rtc(now = T) {
  let clock = now;
  const r = new CmosRtc({ now: () => clock });
  const get = (reg: number) => {
    r.write(0x70, reg);
    return r.read(0x71);
  };
  const set = (reg: number, v: number) => {
    r.write(0x70, reg | 0x80); // with NMI disable, as Linux writes the index
    r.write(0x71, v);
  };
  return { r, get, set, tick: (ms: number) => (clock += ms) };
}

describe('CmosRtc', () => {
  it("reads the host's UTC time in BCD, 24-hour, with no update in progress and valid RAM", () => {
    const { get } = rtc();
    expect([0, 2, 4, 6, 7, 8, 9, 0x32].map(get)).toEqual([0x30, 0x15, 0x20, 0x01, 0x29, 0x11, 0x26, 0x20]);
    expect(get(0x0a) & 0x80).toBe(0);
    expect(get(0x0b)).toBe(0x02);
    expect(get(0x0c)).toBe(0);
    expect(get(0x0d)).toBe(0x80);
  });

  it('follows register B: binary and 12-hour forms', () => {
    const { get, set } = rtc();
    set(0x0b, 0x04); // binary, 12-hour
    expect(get(0)).toBe(30);
    expect(get(4)).toBe(0x80 | 8); // 8 PM
    set(0x0b, 0x00); // BCD, 12-hour
    expect(get(4)).toBe(0x88);
  });

  it('takes a time set by the guest inside a SET cycle and keeps it ticking', () => {
    const { r, get, set, tick } = rtc();
    set(0x0b, 0x82);
    for (const [reg, v] of [
      [0, 0x59],
      [2, 0x59],
      [4, 0x23],
      [7, 0x31],
      [8, 0x12],
      [9, 0x99],
      [0x32, 0x19],
    ])
      set(reg, v);
    expect(get(0)).toBe(0x30); // not yet: SET is on
    set(0x0b, 0x02);
    expect([0, 2, 4, 7, 8, 9, 0x32].map(get)).toEqual([0x59, 0x59, 0x23, 0x31, 0x12, 0x99, 0x19]);
    tick(1000);
    expect([0, 4, 7, 8, 9, 0x32].map(get)).toEqual([0x00, 0x00, 0x01, 0x01, 0x00, 0x20]);
    expect(r.offsetMs).toBe(Date.UTC(1999, 11, 31, 23, 59, 59) - T);
  });

  it('keeps CMOS RAM, ignores writes to status registers and survives nonsense dates', () => {
    const { r, get, set } = rtc();
    set(0x40, 0xab);
    expect(get(0x40)).toBe(0xab);
    set(0x0d, 0);
    expect(get(0x0d)).toBe(0x80);
    set(0x08, 0x99); // month 99: a nonsense date, never an exception
    expect(Number.isFinite(r.offsetMs)).toBe(true);
    expect(r.read(0x70)).toBe(0xff);
    expect(() => r.read(0x72)).toThrow(RangeError);
    expect(() => new CmosRtc({ now: 1 as never })).toThrow(TypeError);
  });
});
