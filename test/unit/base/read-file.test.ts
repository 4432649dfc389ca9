// readFileAsync (lib/base/read-file.ts): a whole file in pieces, the same bytes fs.readFileSync reads.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { readFileAsync } from '../../../lib/base/read-file';

describe('readFileAsync', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'read-file-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true }));

  function file(name: string, bytes: Uint8Array): string {
    const p = path.join(dir, name);
    fs.writeFileSync(p, bytes);
    return p;
  }

  const pattern = (n: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + 3) & 0xff));

  it.each([
    ['empty', 0, 16],
    ['smaller than a piece', 5, 16],
    ['a whole number of pieces', 64, 16],
    ['pieces and a rest', 70, 16],
    ['one default piece', 100_000, undefined],
  ])('reads %s whole', async (_, n, piece) => {
    const p = file(`f${n}`, pattern(n));
    const got = await readFileAsync(p, piece);
    expect(got.equals(fs.readFileSync(p))).toBe(true);
    expect(got.length).toBe(n);
  });

  it('reads a file whose size stat does not know to its end', async () => {
    const got = await readFileAsync('/proc/self/status', 64);
    expect(got.toString()).toMatch(/^Name:/);
    expect(got.toString()).toMatch(/VmRSS:/);
  });

  it('rejects with the fs error for a missing file, and a bad piece with a RangeError', async () => {
    await expect(readFileAsync(path.join(dir, 'missing'))).rejects.toMatchObject({
      code: 'ENOENT',
      syscall: 'open',
    });
    await expect(readFileAsync(file('x', pattern(4)), 0)).rejects.toThrow(
      /piece 0 is not a positive integer/,
    );
    await expect(readFileAsync(dir)).rejects.toMatchObject({ code: 'EISDIR' });
  });

  it('closes its fd, also when a read fails', async () => {
    const fds = (): number => fs.readdirSync('/proc/self/fd').length;
    const before = fds();
    await readFileAsync(file('y', pattern(40)), 8);
    await readFileAsync(dir).catch(() => undefined);
    expect(fds()).toBe(before);
  });
});
