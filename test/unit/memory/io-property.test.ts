import fc from 'fast-check';
import { MemoryRegion, type AccessSize } from '../../../lib';
import { closeAll, space } from './helpers';

afterEach(closeAll);

const sizeArb = fc.constantFrom<AccessSize>(1, 2, 4, 8);

/** Two sizes in order, as min and max. */
const bounds = fc
  .tuple(sizeArb, sizeArb)
  .map(([a, b]) => (a <= b ? [a, b] : [b, a]) as [AccessSize, AccessSize]);

describe('property: io dispatch follows the valid and impl rules', () => {
  test('random constraints and accesses against a direct statement of the rules', () => {
    fc.assert(
      fc.property(
        bounds,
        fc.boolean(),
        bounds,
        fc.integer({ min: 0, max: 56 }),
        sizeArb,
        fc.boolean(),
        fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
        ([vmin, vmax], unaligned, [imin, imax], off, size, isWrite, raw) => {
          const bytes = new Uint8Array(72);
          for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 37 + 11) & 0xff;
          const before = bytes.slice();
          const calls: Array<[number, number]> = [];
          const region = MemoryRegion.io('dev', 64, {
            read(o, s) {
              calls.push([o, s]);
              let v = 0n;
              for (let k = 0; k < s; k++) v |= BigInt(bytes[o + k]) << BigInt(8 * k);
              expect(typeof (s === 8 ? v : Number(v))).toBe(s === 8 ? 'bigint' : 'number');
              return s === 8 ? v : Number(v);
            },
            write(o, s, value) {
              calls.push([o, s]);
              expect(typeof value).toBe(s === 8 ? 'bigint' : 'number');
              const v = BigInt(value);
              expect(v < 1n << BigInt(8 * s)).toBe(true);
              for (let k = 0; k < s; k++) bytes[o + k] = Number((v >> BigInt(8 * k)) & 0xffn);
            },
            valid: { minAccessSize: vmin, maxAccessSize: vmax, unaligned },
            impl: { minAccessSize: imin, maxAccessSize: imax },
          });
          const root = MemoryRegion.container('root', 0x100);
          root.addSubregion(region, 0);
          const as = space(root);
          const value = BigInt.asUintN(size * 8, raw);

          // The rules, stated directly. An access the device takes whole (valid sizes, alignment)
          // is one piece; one too wide or misaligned for it is first cut, as QEMU's
          // address_space_rw cuts it, into the largest naturally aligned pieces up to valid.max.
          // Each piece is then judged on its own, and an accepted piece becomes consecutive
          // accesses of clamp(piece, impl.min, impl.max).
          const whole = size <= vmax && (unaligned || off % size === 0);
          const pieces: Array<[number, number]> = [];
          if (whole) pieces.push([off, size]);
          else {
            for (let at = off; at < off + size;) {
              let p = 8;
              while (p > 1 && (p > vmax || p > off + size - at || at % p !== 0)) p /= 2;
              pieces.push([at, p]);
              at += p;
            }
          }
          const ok = ([, p]: [number, number]) => p >= vmin;
          const expectedCalls: Array<[number, number]> = [];
          const want = before.slice();
          for (const piece of pieces) {
            if (!ok(piece)) continue;
            const [at, p] = piece;
            const unit = Math.min(Math.max(p, imin), imax);
            for (let i = 0; i < p; i += unit) expectedCalls.push([at + i, unit]);
            if (isWrite) {
              for (let k = 0; k < p; k++)
                want[at + k] = Number((value >> BigInt(8 * (at - off + k))) & 0xffn);
              // A narrow write widened to impl.min carries zeros in the bytes above it.
              for (let k = p; k < unit; k++) want[at + k] = 0;
            }
          }

          if (isWrite) {
            as.write(off, size, size === 8 ? value : Number(value));
            expect(bytes).toEqual(want);
          } else {
            let got = 0n;
            for (const piece of pieces) {
              const [at, p] = piece;
              for (let k = 0; k < p; k++) {
                got |= BigInt(ok(piece) ? before[at + k] : 0xff) << BigInt(8 * (at - off + k));
              }
            }
            expect(as.read(off, size)).toBe(size === 8 ? got : Number(got));
          }
          expect(calls).toEqual(expectedCalls);
          expect(as.unassignedCount).toBe(pieces.filter((x) => !ok(x)).length);
        },
      ),
      { numRuns: 300 },
    );
  });
});
