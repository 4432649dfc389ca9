// info, read, write, dump, mtree, reset and irqs against the lab's vfio-pci devices, each checked
// against what the library itself answers for the same device.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';

import { DOMParser, type Element } from '@xmldom/xmldom';

import { SystemAddressSpaces, VfioPciDevice, type MapInfoRange } from '../../../lib';
import { MAPINFO_COLORS } from '../../../lib/cli/svg';
import { cli, validJson } from '../../support/cli-harness';
import { bdfOf, describeDevice, openDevice } from '../hil';

const env = { ...process.env };
const CONFIG = 7;

describeDevice('edu', 'info, read, write and dump', (bdf) => {
  test('info --json is what the library reports', async () => {
    const r = await cli(['info', '--json', bdf()], env);
    expect(r.code).toBe(0);
    const j = validJson('info', r.stdout) as {
      regions: {
        index: number;
        size: number;
        readable: boolean;
        writable: boolean;
        mappable: boolean;
        fdOffset: number;
      }[];
      irqs: { index: number; count: number }[];
      capabilities: { offset: number; name: string }[];
      resettable: boolean;
      vendor: number;
    };
    const o = openDevice(bdf());
    try {
      expect(j.vendor).toBe(0x1234);
      expect(j.resettable).toBe(o.device.info().reset);
      for (const reg of j.regions) {
        const lib = o.device.regionInfo(reg.index);
        expect(reg).toMatchObject({
          size: lib.size,
          readable: lib.readable,
          writable: lib.writable,
          mappable: lib.mappable,
          fdOffset: lib.offset,
        });
      }
      expect(j.regions.find((x) => x.index === 0)?.size).toBe(1 << 20);
      for (const q of j.irqs) expect(q.count).toBe(o.device.irqInfo(q.index).count);
      expect(j.capabilities.map((c) => c.name)).toContain('msi');
    } finally {
      o.close();
    }
    const text = await cli(['info', bdf()], env);
    expect(text.stdout).toMatch(/^ {2}bar0 +size 0x100000 +rwm /m);
  });

  test('read --width is one access of that width, through the mapping and the fd', async () => {
    const read = async (width: number, via: string) => {
      const r = await cli(
        ['read', '--json', bdf(), 'bar0', '0', '--width', String(width), '--via', via],
        env,
      );
      expect(r.code).toBe(0);
      return validJson('read', r.stdout) as { value: string; via: string };
    };
    expect(await read(4, 'map')).toMatchObject({ value: '0x010000ed', via: 'map' });
    expect(await read(4, 'fd')).toMatchObject({ value: '0x010000ed', via: 'fd' });
    // edu answers only 4- and 8-byte reads: a 1-byte read that came back 0xed would have been widened.
    const one = await read(1, 'map');
    const o = openDevice(bdf());
    try {
      const m = o.device.map(0, 0, 4096);
      expect(one.value).toBe(`0x${m.read8(0).toString(16).padStart(2, '0')}`);
      expect(one.value).not.toBe('0xed');
      m.close();
    } finally {
      o.close();
    }
    expect((await cli(['read', bdf(), 'config', '0', '-w', '2'], env)).stdout).toBe('0x1234\n');
  });

  test('write with --yes reaches the device (edu inverts register 0x04)', async () => {
    const w = await cli(['write', '--json', bdf(), 'bar0', '0x4', '0x12345678', '-w', '4', '--yes'], env);
    expect(w.code).toBe(0);
    expect(validJson('write', w.stdout)).toMatchObject({ value: '0x12345678', width: 4, via: 'map' });
    const r = await cli(['read', bdf(), 'bar0', '4', '-w', '4', '--via', 'fd'], env);
    expect(r.stdout).toBe('0xedcba987\n');
  });

  test('dump prints xp-like lines whose values are the library reads at that width', async () => {
    const r = await cli(['dump', '--json', bdf(), 'config', '0', '64', '-w', '4'], env);
    expect(r.code).toBe(0);
    const j = validJson('dump', r.stdout) as { values: string[]; via: string };
    expect(j.via).toBe('fd');
    const o = openDevice(bdf());
    let lib: number[];
    try {
      lib = Array.from({ length: 16 }, (_, i) => o.device.read(CONFIG, i * 4, 4) as number);
    } finally {
      o.close();
    }
    expect(j.values).toEqual(lib.map((v) => `0x${v.toString(16).padStart(8, '0')}`));
    const text = await cli(['dump', bdf(), 'bar0', '0', '32', '-w', '4'], env);
    expect(text.stdout.split('\n')[0]).toMatch(
      /^00000000: 0x010000ed 0x[0-9a-f]{8} 0x[0-9a-f]{8} 0x[0-9a-f]{8} {2}\|.{16}\|$/,
    );
  });

  test('a large dump shows progress on stderr', async () => {
    const r = await cli(['dump', bdf(), 'bar0', '0', '0x10000', '-w', '8'], env);
    expect(r.code).toBe(0);
    expect(r.stderr.trim().split('\n')).toEqual([
      `dump ${bdf()} bar0: 6% (4096/65536)`,
      `dump ${bdf()} bar0: 25% (16384/65536)`,
      `dump ${bdf()} bar0: 50% (32768/65536)`,
      `dump ${bdf()} bar0: 75% (49152/65536)`,
      `dump ${bdf()} bar0: 100% (65536/65536)`,
    ]);
    expect(r.stdout.split('\n')).toHaveLength(65536 / 16 + 1);
  });

  test('reset does the function reset when VFIO offers one, and refuses plainly otherwise', async () => {
    const o = openDevice(bdf());
    const resettable = o.device.info().reset;
    o.close();
    const r = await cli(['reset', bdf()], env);
    if (resettable) expect(r).toMatchObject({ code: 0, stdout: `${bdf()}: function reset done\n` });
    else expect(r.stderr).toContain('has no function reset');
  });
});

describeDevice('e1000e', 'reset and irqs', (bdf) => {
  test('reset --json runs VFIO_DEVICE_RESET', async () => {
    const r = await cli(['reset', '--json', bdf()], env);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(validJson('reset', r.stdout)).toEqual({
      command: 'reset',
      version: 1,
      bdf: bdf(),
      method: 'function',
    });
  });

  test('irqs --json has the vector counts the library reports', async () => {
    const r = await cli(['irqs', '--json', bdf()], env);
    expect(r.code).toBe(0);
    const j = validJson('irqs', r.stdout) as { irqs: { index: number; name: string; count: number }[] };
    const o = openDevice(bdf());
    try {
      for (const q of j.irqs) expect(q.count).toBe(o.device.irqInfo(q.index).count);
    } finally {
      o.close();
    }
    expect(j.irqs.find((q) => q.name === 'msix')?.count).toBeGreaterThan(1);
  });
});

/** The same bus the CLI builds, placed by hand from the host's resource file: the library's answer. */
function libraryBus(bdfs: string[]): { bus: SystemAddressSpaces; close(): void } {
  const bus = new SystemAddressSpaces();
  for (const bdf of bdfs) {
    const dev = VfioPciDevice.openByBdf(bus, bdf);
    const lines = fs.readFileSync(`/sys/bus/pci/devices/${bdf}/resource`, 'utf8').trim().split('\n');
    for (const bar of dev.bars) {
      if (!bar) continue;
      const start = Number(BigInt(lines[bar.index].split(' ')[0]));
      dev.configWrite(0x10 + 4 * bar.index, 4, (start | (bar.type === 'io' ? 1 : 0)) >>> 0);
      if (bar.type === 'mem64') dev.configWrite(0x14 + 4 * bar.index, 4, Math.floor(start / 2 ** 32));
    }
    dev.configWrite(4, 2, dev.configRead(4, 2) | 3);
  }
  return { bus, close: () => bus.close() };
}

describeDevice('e1000e', 'mtree', (bdf) => {
  const devs = (): string[] => [bdfOf('edu'), bdfOf('rtl8139'), bdf()];
  let svgDir: string;
  beforeAll(() => {
    svgDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfio-bridge-svg-'));
  });
  afterAll(() => fs.rmSync(svgDir, { recursive: true, force: true }));

  test('-f prints the flat views the library builds for the same placement', async () => {
    const r = await cli(['mtree', '-f', ...devs()], env);
    expect(r.code).toBe(0);
    const lib = libraryBus(devs());
    try {
      expect(r.stdout).toBe(lib.bus.mtree('memory', { flat: true }) + lib.bus.mtree('io', { flat: true }));
    } finally {
      lib.close();
    }
    expect(r.stdout).toMatch(/msix-table.*emulated/);
    expect(r.stdout).toMatch(/BAR 0 mmaps\[0\].*direct/);
  });

  test('--json and --svg: the schema, the library mapinfo, and an SVG that parses to the same ranges', async () => {
    const svgFile = path.join(svgDir, 'map.svg');
    const r = await cli(['mtree', '-f', '--json', '--svg', svgFile, ...devs()], env);
    expect(r.code).toBe(0);
    const j = validJson('mtree', r.stdout) as {
      mapinfo: MapInfoRange[];
      devices: { bdf: string; bars: { index: number; address: number | null; size: number }[] }[];
    };
    const lib = libraryBus(devs());
    try {
      expect(j.mapinfo).toEqual(JSON.parse(JSON.stringify(lib.bus.mapinfo())));
    } finally {
      lib.close();
    }
    for (const d of j.devices) {
      const res = fs.readFileSync(`/sys/bus/pci/devices/${d.bdf}/resource`, 'utf8').trim().split('\n');
      for (const b of d.bars) expect(b.address).toBe(Number(BigInt(res[b.index].split(' ')[0])));
    }
    expect(new Set(j.mapinfo.map((m) => m.mapinfo))).toEqual(
      new Set(['direct', 'trapped-mmap', 'trapped-fd', 'emulated']),
    );

    const errors: string[] = [];
    const doc = new DOMParser({
      onError: (level, msg) => void errors.push(`${level}: ${msg}`),
    }).parseFromString(fs.readFileSync(svgFile, 'utf8'), 'image/svg+xml');
    expect(errors).toEqual([]);
    expect(doc.documentElement?.tagName).toBe('svg');
    const bands = Array.from(doc.getElementsByTagName('g')).filter((g) => g.getAttribute('class') === 'bar');
    expect(bands).toHaveLength(j.devices.reduce((n, d) => n + d.bars.length, 0));
    const seen: MapInfoRange[] = [];
    for (const band of bands) {
      const rects = Array.from(band.getElementsByTagName('rect')).filter(
        (x) => x.getAttribute('class') === 'range',
      );
      const labels = Array.from(band.getElementsByTagName('text')).filter(
        (t) => t.getAttribute('class') === 'label',
      );
      expect(labels).toHaveLength(rects.length);
      for (const rect of rects as Element[]) {
        const mapinfo = rect.getAttribute('data-mapinfo') as keyof typeof MAPINFO_COLORS;
        expect(rect.getAttribute('fill')).toBe(MAPINFO_COLORS[mapinfo]);
        expect(rect.getElementsByTagName('title')[0]?.textContent).toContain(rect.getAttribute('data-name')!);
        seen.push({
          space: rect.getAttribute('data-space') as MapInfoRange['space'],
          addr: Number(rect.getAttribute('data-addr')),
          size: Number(rect.getAttribute('data-size')),
          name: rect.getAttribute('data-name')!,
          kind: '' as MapInfoRange['kind'],
          mapinfo,
          bdf: band.getAttribute('data-bdf')!,
          bar: Number(band.getAttribute('data-bar')),
          barOffset: Number(rect.getAttribute('data-bar-offset')),
        });
      }
    }
    const key = (m: MapInfoRange) =>
      `${m.bdf} ${m.bar} ${m.space} ${m.addr} ${m.size} ${m.name} ${m.mapinfo} ${m.barOffset}`;
    expect(seen.map(key).sort()).toEqual(j.mapinfo.map(key).sort());
  });

  test('--bar places a BAR where asked', async () => {
    const r = await cli(['mtree', '--json', bdfOf('edu'), '--bar', `${bdfOf('edu')}/0=0xe0000000`], env);
    expect(r.code).toBe(0);
    const j = validJson('mtree', r.stdout) as { devices: { bars: { index: number; address: number }[] }[] };
    expect(j.devices[0].bars.find((b) => b.index === 0)?.address).toBe(0xe0000000);
  });

  test('the built executable runs on real sysfs', () => {
    const root = path.join(__dirname, '../../..');
    const p = spawnSync(process.execPath, [path.join(root, 'dist/cli/main.js'), 'list', '--json'], {
      encoding: 'utf8',
    });
    expect(p.status).toBe(0);
    const j = validJson('list', p.stdout) as { devices: { bdf: string; vfioReady: boolean }[] };
    expect(j.devices.find((d) => d.bdf === bdf())?.vfioReady).toBe(true);
  });
});
