import { allOnes, allOnes32, hex } from '../../../lib/base/values';

describe('hex', () => {
  test('prints numbers and bigints 0x-prefixed, lower case', () => {
    expect(hex(0)).toBe('0x0');
    expect(hex(0xfeb0_0000)).toBe('0xfeb00000');
    expect(hex(0xffff_ffff_ffff_ffffn)).toBe('0xffffffffffffffff');
  });
});

describe('allOnes', () => {
  test.each([1, 2, 3, 4, 5, 6, 7, 8])('%i bytes: every bit of the access set, nothing above', (size) => {
    const v = BigInt(allOnes(size));
    expect(v).toBe((1n << BigInt(8 * size)) - 1n);
    // Numbers while they are exact, bigints past 2^53.
    expect(typeof allOnes(size)).toBe(size >= 7 ? 'bigint' : 'number');
  });

  test('allOnes32 agrees for the sizes of port I/O and configuration space', () => {
    for (const size of [1, 2, 3, 4]) expect(allOnes32(size)).toBe(allOnes(size));
  });
});
