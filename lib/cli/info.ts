/**
 * `info BDF`: what VFIO says about a device: its regions (flags, sizes, sparse mmap areas, MSI-X
 * mappable), its configuration-space capabilities, its IRQ indexes and counts, and how it resets.
 */
import { walkCapabilities } from '../pci/config';
import type { Device } from '../vfio/device';
import { VfioError } from '../base/native-errors';
import { VFIO_PCI_CONFIG_REGION_INDEX, type RegionInfo } from '../vfio/uapi';
import { formatBackend, type BackendJson } from './backend-info';
import { capabilityName, IRQ_NAMES, REGION_NAMES } from './names';

export interface RegionJson {
  index: number;
  name: string;
  size: number;
  /** Where the region starts in the device fd. */
  fdOffset: number;
  readable: boolean;
  writable: boolean;
  mappable: boolean;
  /** The areas that can be mapped, when the kernel restricts mmap to parts of the region. */
  sparseMmap: { offset: number; size: number }[] | null;
  msixMappable: boolean;
  type: { type: number; subtype: number } | null;
}

export interface InfoJson {
  bdf: string;
  /** Where the facts come from: VFIO (the device is on vfio-pci), or sysfs (any driver). */
  source: 'vfio' | 'sysfs';
  driver: string | null;
  /** What sysfs cannot tell and needs the device on vfio-pci; empty through VFIO. */
  needsVfioPci: string[];
  vendor: number;
  device: number;
  iommuGroup: number | null;
  /** The IOMMU backend the device was opened through (or would be, off vfio-pci), and why. */
  backend: BackendJson;
  /** VFIO_DEVICE_RESET is available (a function-level or other device-local reset). */
  resettable: boolean;
  /** The kernel's reset methods for the device (sysfs reset_method), best first. */
  resetMethods: string[];
  regions: RegionJson[];
  capabilities: { offset: number; id: number; name: string; extended: boolean }[];
  irqs: {
    index: number;
    name: string;
    count: number;
    eventfd: boolean;
    maskable: boolean;
    automasked: boolean;
    noresize: boolean;
  }[];
}

function regionJson(r: RegionInfo): RegionJson {
  let sparse: RegionJson['sparseMmap'] = null;
  let type: RegionJson['type'] = null;
  let msix = false;
  for (const c of r.caps) {
    if (c.kind === 'sparse-mmap') sparse = c.areas.map((a) => ({ offset: a.offset, size: a.size }));
    else if (c.kind === 'type') type = { type: c.type, subtype: c.subtype };
    else if (c.kind === 'msix-mappable') msix = true;
  }
  return {
    index: r.index,
    name: REGION_NAMES[r.index] ?? `region${r.index}`,
    size: r.size,
    fdOffset: r.offset,
    readable: r.readable,
    writable: r.writable,
    mappable: r.mappable,
    sparseMmap: sparse,
    msixMappable: msix,
    type,
  };
}

/** Collect the info of an open device. */
export function collectInfo(
  d: Device,
  group: number,
  resetMethods: string[],
  driver: string | null,
  backend: BackendJson,
): InfoJson {
  const info = d.info();
  const regions: RegionJson[] = [];
  for (let i = 0; i < info.numRegions; i++) {
    let r: RegionInfo;
    try {
      r = d.regionInfo(i);
    } catch (e) {
      // vfio-pci answers EINVAL for indexes the device lacks (VGA on a non-VGA device).
      if (e instanceof VfioError && e.code === 'EINVAL') continue;
      throw e;
    }
    if (r.size > 0) regions.push(regionJson(r));
  }
  const cfg = d.regionInfo(VFIO_PCI_CONFIG_REGION_INDEX);
  const read = (off: number, size: 1 | 2 | 4): number =>
    d.read(VFIO_PCI_CONFIG_REGION_INDEX, off, size) as number;
  const caps = walkCapabilities(read, cfg.size).map((c) => ({
    offset: c.offset,
    id: c.id,
    name: capabilityName(c.id, c.extended),
    extended: c.extended,
  }));
  const irqs: InfoJson['irqs'] = [];
  for (let i = 0; i < info.numIrqs; i++) {
    try {
      const q = d.irqInfo(i);
      irqs.push({
        index: i,
        name: IRQ_NAMES[i] ?? `irq${i}`,
        count: q.count,
        eventfd: q.eventfd,
        maskable: q.maskable,
        automasked: q.automasked,
        noresize: q.noresize,
      });
    } catch (e) {
      // The error IRQ exists only on PCI Express devices; elsewhere the kernel answers EINVAL.
      if (e instanceof VfioError && e.code === 'EINVAL') continue;
      throw e;
    }
  }
  return {
    bdf: d.bdf,
    source: 'vfio',
    driver,
    needsVfioPci: [],
    vendor: read(0, 2),
    device: read(2, 2),
    iommuGroup: group,
    backend,
    resettable: info.reset,
    resetMethods,
    regions,
    capabilities: caps,
    irqs,
  };
}

const hex = (v: number): string => `0x${v.toString(16)}`;

/** The text form of `info`. */
export function formatInfo(j: InfoJson): string {
  const group = j.iommuGroup === null ? 'no IOMMU group' : `IOMMU group ${j.iommuGroup}`;
  const lines = [
    `${j.bdf} [${j.vendor.toString(16).padStart(4, '0')}:${j.device.toString(16).padStart(4, '0')}] ${group}`,
    formatBackend(j.backend),
  ];
  if (j.source === 'sysfs') {
    lines.push(
      `through sysfs (driver ${j.driver ?? 'none'}): regions from resource, capabilities from config`,
      `needs vfio-pci: ${j.needsVfioPci.join(', ')}`,
      `reset: kernel methods: ${j.resetMethods.join(', ') || 'none'}`,
    );
  } else {
    lines.push(
      `reset: ${j.resettable ? 'VFIO_DEVICE_RESET available' : 'no device reset'}` +
        (j.resetMethods.length ? ` (kernel methods: ${j.resetMethods.join(', ')})` : ''),
    );
  }
  lines.push('regions:');
  for (const r of j.regions) {
    const flags = `${r.readable ? 'r' : '-'}${r.writable ? 'w' : '-'}${r.mappable ? 'm' : '-'}`;
    let extra = '';
    if (r.sparseMmap)
      extra += ` sparse-mmap[${r.sparseMmap.map((a) => `${hex(a.offset)}+${hex(a.size)}`).join(' ')}]`;
    if (r.msixMappable) extra += ' msix-mappable';
    if (r.type) extra += ` type ${r.type.type}/${r.type.subtype}`;
    lines.push(
      `  ${r.name.padEnd(7)} size ${hex(r.size).padEnd(10)} ${flags} fd offset ${hex(r.fdOffset)}${extra}`,
    );
  }
  lines.push('capabilities:');
  for (const c of j.capabilities)
    lines.push(`  ${hex(c.offset).padEnd(6)} ${c.name}${c.extended ? ' (extended)' : ''}`);
  if (j.capabilities.length === 0) lines.push('  none');
  lines.push('irqs:');
  if (j.source === 'sysfs') lines.push('  (needs vfio-pci)');
  for (const q of j.irqs) {
    const f = [
      q.eventfd && 'eventfd',
      q.maskable && 'maskable',
      q.automasked && 'automasked',
      q.noresize && 'noresize',
    ]
      .filter(Boolean)
      .join(' ');
    lines.push(`  ${q.name.padEnd(5)} count ${String(q.count).padEnd(4)} ${f}`);
  }
  return lines.join('\n') + '\n';
}
