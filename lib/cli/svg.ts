/**
 * The address map as SVG: one band per BAR, and inside it each flat range of the device, colored
 * by how an access to it is served. Every band and range carries data-* attributes with its exact
 * numbers, so the picture can be checked by a program as well as by eye.
 */
import type { MapInfoRange } from '../pci/system-address-spaces';
import type { MapInfo } from '../pci/types';
import type { MtreeDevice } from './mtree';

export const MAPINFO_COLORS: Record<MapInfo, string> = {
  direct: '#4caf50',
  'trapped-mmap': '#ffb300',
  'trapped-fd': '#e53935',
  emulated: '#1e88e5',
};

const WIDTH = 1000;
const LABEL_W = 300;
const BAND_X = LABEL_W + 10;
const BAND_W = WIDTH - BAND_X - 10;
const ROW_H = 46;
const BAND_H = 30;

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

const hex = (v: number): string => `0x${v.toString(16)}`;

function sizeText(n: number): string {
  if (n >= 2 ** 20 && n % 2 ** 20 === 0) return `${n / 2 ** 20} MiB`;
  if (n >= 1024 && n % 1024 === 0) return `${n / 1024} KiB`;
  return `${n} B`;
}

/** The SVG document for the devices' BARs and the classified flat ranges. */
export function renderSvg(devices: readonly MtreeDevice[], ranges: readonly MapInfoRange[]): string {
  const rows: string[] = [];
  let y = 40;
  for (const dev of devices) {
    for (const bar of dev.bars) {
      const label = `${dev.bdf} BAR ${bar.index} ${bar.type}${bar.prefetchable ? ' pref' : ''}`;
      const where = bar.address === null ? 'unmapped' : `${hex(bar.address)}, ${sizeText(bar.size)}`;
      rows.push(
        `<g class="bar" data-bdf="${dev.bdf}" data-bar="${bar.index}" data-type="${bar.type}" ` +
          `data-address="${bar.address === null ? '' : hex(bar.address)}" data-size="${hex(bar.size)}">`,
        `<text x="10" y="${y + 14}" font-size="13">${esc(label)}</text>`,
        `<text x="10" y="${y + 28}" font-size="11" fill="#555">${esc(where)}</text>`,
        `<rect x="${BAND_X}" y="${y}" width="${BAND_W}" height="${BAND_H}" fill="#eeeeee" stroke="#999"/>`,
      );
      // Ranges too narrow for their label inside get it on a line of its own below the band.
      let below = 0;
      for (const r of ranges) {
        if (r.bdf !== dev.bdf || r.bar !== bar.index) continue;
        const x = BAND_X + (r.barOffset / bar.size) * BAND_W;
        const w = Math.max(1, (r.size / bar.size) * BAND_W);
        const text = `${r.name} +${hex(r.barOffset)} (${sizeText(r.size)}, ${r.mapinfo})`;
        rows.push(
          `<rect class="range" x="${x.toFixed(2)}" y="${y}" width="${w.toFixed(2)}" height="${BAND_H}" ` +
            `fill="${MAPINFO_COLORS[r.mapinfo]}" stroke="#333" stroke-width="0.5" data-name="${esc(r.name)}" ` +
            `data-mapinfo="${r.mapinfo}" data-space="${r.space}" data-addr="${hex(r.addr)}" ` +
            `data-size="${hex(r.size)}" data-bar-offset="${hex(r.barOffset)}"><title>${esc(text)}</title></rect>`,
        );
        const label = `${r.name.replace(`${dev.bdf} `, '')} +${hex(r.barOffset)}`;
        if (w > 7 * label.length) {
          rows.push(
            `<text class="label" x="${(x + 4).toFixed(2)}" y="${y + 19}" font-size="10">${esc(label)}</text>`,
          );
        } else {
          const ly = y + BAND_H + 12 + 12 * below++;
          rows.push(
            `<line x1="${(x + w / 2).toFixed(2)}" y1="${y + BAND_H}" x2="${(x + w / 2).toFixed(2)}" y2="${ly - 8}" stroke="#333" stroke-width="0.5"/>`,
            `<text class="label" x="${(x + w / 2 + 3).toFixed(2)}" y="${ly}" font-size="10">${esc(`${label} (${r.mapinfo})`)}</text>`,
          );
        }
      }
      rows.push('</g>');
      y += ROW_H + 12 * below;
    }
  }
  const legend = (Object.keys(MAPINFO_COLORS) as MapInfo[]).map(
    (k, i) =>
      `<rect x="${BAND_X + i * 150}" y="${y + 6}" width="14" height="14" fill="${MAPINFO_COLORS[k]}"/>` +
      `<text x="${BAND_X + i * 150 + 20}" y="${y + 18}" font-size="12">${k}</text>`,
  );
  const height = y + 36;
  return [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="monospace">`,
    `<text x="10" y="22" font-size="15">vfio-pci address map: each BAR a band, each range colored by how it is served</text>`,
    ...rows,
    `<g class="legend">${legend.join('')}</g>`,
    `</svg>`,
    '',
  ].join('\n');
}
