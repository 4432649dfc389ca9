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

          // The rules, stated directly: the device's valid sizes and alignment decide acceptance;
          // an accepted access becomes consecutive accesses of clamp(size, impl.min, impl.max).
          const accepted = size >= vmin && size <= vmax && (unaligned || off % size === 0);
          const unit = Math.min(Math.max(size, imin), imax);
          const expectedCalls: Array<[number, number]> = [];
          if (accepted) for (let i = 0; i < size; i += unit) expectedCalls.push([off + i, unit]);

          if (isWrite) {
            as.write(off, size, size === 8 ? value : Number(value));
            const want = before.slice();
            if (accepted) {
              for (let k = 0; k < size; k++) want[off + k] = Number((value >> BigInt(8 * k)) & 0xffn);
              // A narrow write widened to impl.min carries zeros in the bytes above it.
              for (let k = size; k < unit; k++) want[off + k] = 0;
            }
            expect(bytes).toEqual(want);
          } else {
            let want = 0n;
            for (let k = 0; k < size; k++) want |= BigInt(accepted ? before[off + k] : 0xff) << BigInt(8 * k);
            expect(as.read(off, size)).toBe(size === 8 ? want : Number(want));
          }
          expect(calls).toEqual(expectedCalls);
          expect(as.unassignedCount).toBe(accepted ? 0 : 1);
        },
      ),
      { numRuns: 300 },
    );
  });
});
