import { DOMParser } from '@xmldom/xmldom';

import type { MapInfoRange } from '../../../lib/pci/system-address-spaces';
import { MAPINFO_COLORS, renderSvg } from '../../../lib/cli/svg';

const bdf = '0000:00:05.0';
const range = (
  bar: number,
  barOffset: number,
  size: number,
  name: string,
  mapinfo: MapInfoRange['mapinfo'],
): MapInfoRange => ({
  space: 'memory',
  addr: 0xfe000000 + bar * 0x100000 + barOffset,
  size,
  name,
  kind: 'ram-device' as MapInfoRange['kind'],
  mapinfo,
  bdf,
  bar,
  barOffset,
});

test('one band per BAR, one colored, labeled shape per range, all with their numbers', () => {
  const ranges = [
    range(3, 0, 0x2000, `${bdf} BAR 3 mmaps[0]`, 'direct'),
    range(3, 0x2000, 0x50, 'msix-table', 'emulated'),
    range(3, 0x2050, 0xfb0, `${bdf} BAR 3`, 'trapped-fd'),
    range(0, 0, 0x20000, `${bdf} BAR 0 mmaps[0]`, 'direct'),
  ];
  const svg = renderSvg(
    [
      {
        bdf,
        bars: [
          { index: 0, type: 'mem32', prefetchable: false, size: 0x20000, address: 0xfe000000 },
          { index: 3, type: 'mem32', prefetchable: false, size: 0x4000, address: 0xfe300000 },
        ],
      },
    ],
    ranges,
  );
  const errors: string[] = [];
  const doc = new DOMParser({
    onError: (level, msg) => void errors.push(`${level}: ${msg}`),
  }).parseFromString(svg, 'image/svg+xml');
  expect(errors).toEqual([]);
  const bands = Array.from(doc.getElementsByTagName('g')).filter((g) => g.getAttribute('class') === 'bar');
  expect(
    bands.map((b) => [
      b.getAttribute('data-bar'),
      b.getAttribute('data-address'),
      b.getAttribute('data-size'),
    ]),
  ).toEqual([
    ['0', '0xfe000000', '0x20000'],
    ['3', '0xfe300000', '0x4000'],
  ]);
  const bar3 = bands[1];
  const rects = Array.from(bar3.getElementsByTagName('rect')).filter(
    (r) => r.getAttribute('class') === 'range',
  );
  expect(
    rects.map((r) => [
      r.getAttribute('data-name'),
      r.getAttribute('data-mapinfo'),
      r.getAttribute('fill'),
      r.getAttribute('data-bar-offset'),
    ]),
  ).toEqual([
    [`${bdf} BAR 3 mmaps[0]`, 'direct', MAPINFO_COLORS.direct, '0x0'],
    ['msix-table', 'emulated', MAPINFO_COLORS.emulated, '0x2000'],
    [`${bdf} BAR 3`, 'trapped-fd', MAPINFO_COLORS['trapped-fd'], '0x2050'],
  ]);
  // Widths follow the sizes: the 8 KiB mmap is half the 16 KiB band.
  const band = Array.from(bar3.getElementsByTagName('rect')).find((r) => r.getAttribute('class') === null)!;
  expect(Number(rects[0].getAttribute('width')) / Number(band.getAttribute('width'))).toBeCloseTo(0.5, 3);
  const labels = Array.from(bar3.getElementsByTagName('text')).filter(
    (t) => t.getAttribute('class') === 'label',
  );
  expect(labels.map((t) => t.textContent)).toEqual([
    'BAR 3 mmaps[0] +0x0',
    'msix-table +0x2000 (emulated)',
    'BAR 3 +0x2050',
  ]);
  const legend = Array.from(doc.getElementsByTagName('g')).find((g) => g.getAttribute('class') === 'legend')!;
  expect(Array.from(legend.getElementsByTagName('text')).map((t) => t.textContent)).toEqual(
    Object.keys(MAPINFO_COLORS),
  );
});
