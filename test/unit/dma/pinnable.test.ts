// Guest RAM the host cannot give is refused before VFIO_IOMMU_MAP_DMA pins it (on a 1.93 GiB host,
// 3 GiB of RAM used to be OOM-killed after seconds of reclaim instead).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { assertPinnable } from '../../../lib/dma/pinnable';

const MiB = 2 ** 20;

describe('assertPinnable', () => {
  let dir: string;
  const meminfo = (availableKb: number | null): string => {
    const p = path.join(dir, 'meminfo');
    const lines = ['MemTotal:        2026000 kB', 'MemFree:          900000 kB'];
    if (availableKb !== null) lines.push(`MemAvailable:    ${availableKb} kB`);
    fs.writeFileSync(p, `${lines.join('\n')}\n`);
    return p;
  };
  beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pinnable-'))));
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('small-page RAM beyond MemAvailable is ENOMEM naming both sizes, with a hint', () => {
    let e: unknown;
    try {
      assertPinnable({ name: 'pc.ram', length: 3072 * MiB, hugePageSize: 0 }, meminfo(1_500_000));
    } catch (x) {
      e = x;
    }
    expect(e).toMatchObject({ name: 'VfioError', code: 'ENOMEM', errno: -12, op: 'VFIO_IOMMU_MAP_DMA' });
    expect((e as Error).message).toContain('3072 MiB');
    expect((e as Error).message).toContain('1464 MiB available');
    expect((e as { hint: string }).hint).toMatch(/ramSize/);
  });

  test('RAM that fits, huge-page RAM (reserved from its pool) and an unreadable meminfo pass', () => {
    expect(() =>
      assertPinnable({ name: 'r', length: 256 * MiB, hugePageSize: 0 }, meminfo(1_500_000)),
    ).not.toThrow();
    expect(() =>
      assertPinnable({ name: 'r', length: 3072 * MiB, hugePageSize: 2 * MiB }, meminfo(1000)),
    ).not.toThrow();
    expect(() =>
      assertPinnable({ name: 'r', length: 3072 * MiB, hugePageSize: 0 }, meminfo(null)),
    ).not.toThrow();
    expect(() =>
      assertPinnable({ name: 'r', length: 3072 * MiB, hugePageSize: 0 }, path.join(dir, 'missing')),
    ).not.toThrow();
  });
});
