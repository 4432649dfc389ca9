import { implementedConfigBytes } from '../../../lib/pci/config-map';

function space(bytes: Record<number, number>): (o: number, s: 1 | 2) => number {
  return (o, s) => (s === 1 ? (bytes[o] ?? 0) : (bytes[o] ?? 0) | ((bytes[o + 1] ?? 0) << 8));
}

const ranges = (map: Uint8Array): [number, number][] => {
  const out: [number, number][] = [];
  for (let i = 0; i < map.length; i++) {
    if (!map[i]) continue;
    if (out.length && out[out.length - 1][1] === i) out[out.length - 1][1] = i + 1;
    else out.push([i, i + 1]);
  }
  return out;
};

describe('implementedConfigBytes', () => {
  test("covers the header and each capability's extent, as e1000e lays them out", () => {
    const cap = (id: number, offset: number) => ({ id, offset, extended: false });
    // PM at 0xc8, MSI (64-bit, no masking) at 0xd0, PCIe v1 at 0xe0, MSI-X at 0xa0.
    const read = space({ 0xd2: 0x80, 0xe2: 0x01 });
    const map = implementedConfigBytes([cap(1, 0xc8), cap(5, 0xd0), cap(0x10, 0xe0), cap(0x11, 0xa0)], read);
    expect(ranges(map)).toEqual([
      [0, 0x40],
      [0xa0, 0xac],
      [0xc8, 0xde],
      [0xe0, 0xf4],
    ]);
  });

  test('MSI grows with 64-bit addresses and per-vector masks; PCIe v2 is longer; vendor caps say their length', () => {
    const cap = (id: number, offset: number) => ({ id, offset, extended: false });
    const map = implementedConfigBytes(
      [cap(5, 0x50), cap(0x10, 0x70), cap(0x09, 0xc0)],
      space({ 0x52: 0x80, 0x53: 0x01, 0x72: 0x02, 0xc2: 0x10 }),
    );
    expect(ranges(map)).toEqual([
      [0, 0x40],
      [0x50, 0x68],
      [0x70, 0xac],
      [0xc0, 0xd0],
    ]);
  });

  test('a capability of unknown length runs to the next one, or to the end; extended ones are ignored', () => {
    const map = implementedConfigBytes(
      [
        { id: 0x08, offset: 0x60, extended: false },
        { id: 0x01, offset: 0x80, extended: false },
        { id: 0x0b, offset: 0x40, extended: true },
        { id: 0x0c, offset: 0xf0, extended: false },
      ],
      space({}),
    );
    expect(ranges(map)).toEqual([
      [0, 0x40],
      [0x60, 0x88],
      [0xf0, 0x100],
    ]);
  });
});
