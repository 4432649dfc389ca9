// readInputAsync (lib/vmm/pc-options.ts): PcMachine.open's kernel and initramfs, read whole off the
// event loop (node:fs's callback readFile), the same bytes readFileSync reads, without loading
// fs/promises on the loop.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { readInputAsync } from '../../../lib/vmm/pc-options';

describe('readInputAsync', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'read-input-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true }));

  function file(name: string, bytes: Uint8Array): string {
    const p = path.join(dir, name);
    fs.writeFileSync(p, bytes);
    return p;
  }

  const pattern = (n: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + 3) & 0xff));

  it.each([
    ['empty', 0],
    ['small', 5],
    ['larger than one of readFile’s reads (512 KiB)', 1_300_000],
  ])('reads a file %s whole', async (_, n) => {
    const p = file(`f${n}`, pattern(n));
    const got = await readInputAsync('kernel', p);
    expect(Buffer.from(got).equals(fs.readFileSync(p))).toBe(true);
    expect(got.length).toBe(n);
  });

  it('reads a file whose size stat does not know to its end', async () => {
    const got = Buffer.from(await readInputAsync('kernel', '/proc/self/status')).toString();
    expect(got).toMatch(/^Name:/);
    expect(got).toMatch(/VmRSS:/);
  });

  it('rejects a missing file or a directory with EINPUT naming the error', async () => {
    await expect(readInputAsync('kernel', path.join(dir, 'missing'))).rejects.toMatchObject({
      code: 'EINPUT',
      message: expect.stringMatching(/cannot read the kernel .*ENOENT/),
    });
    await expect(readInputAsync('initramfs', dir)).rejects.toMatchObject({
      code: 'EINPUT',
      message: expect.stringMatching(/cannot read the initramfs .*EISDIR/),
    });
  });

  it('closes its fd, also when a read fails', async () => {
    const fds = (): number => fs.readdirSync('/proc/self/fd').length;
    const before = fds();
    await readInputAsync('kernel', file('y', pattern(40)));
    await readInputAsync('kernel', dir).catch(() => undefined);
    expect(fds()).toBe(before);
  });

  it('loads no fs/promises module to read', () => {
    const p = file('z', pattern(1000));
    const script = `
      const { readInputAsync } = require(${JSON.stringify(path.join(__dirname, '../../../lib/vmm/pc-options'))});
      const n = process.moduleLoadList.length;
      readInputAsync('kernel', ${JSON.stringify(p)}).then((b) => {
        console.log(JSON.stringify({ length: b.length, loaded: process.moduleLoadList.slice(n) }));
      });`;
    const r = spawnSync(process.execPath, ['-r', '@swc-node/register', '-e', script], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { length: number; loaded: string[] };
    expect(out.length).toBe(1000);
    expect(out.loaded.filter((m) => /fs\/promises|readline/.test(m))).toEqual([]);
  });
});
