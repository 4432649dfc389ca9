/** `list`: every PCI device, lspci-like, with its IOMMU group's viability and VFIO readiness. */
import type { SysfsOptions } from '../vfio/sysfs';
import { modaliasOf, type ModuleAliases } from './modules';
import { UsageError } from './errors';
import type { PciIds } from './pci-ids';
import { groupState, listDevices } from './pci-sysfs';

export interface ListEntry {
  bdf: string;
  vendorId: number;
  deviceId: number;
  vendorName: string | null;
  deviceName: string | null;
  classCode: number;
  className: string | null;
  driver: string | null;
  driverOverride: string | null;
  iommuGroup: number | null;
  viable: boolean;
  vfioReady: boolean;
  net: { name: string; up: boolean }[];
  /** The kernel modules whose aliases match the device (lspci -k); null without a modules.alias. */
  modules: string[] | null;
}

export interface ListFilter {
  bdfs: string[];
  /** vvvv:dddd, either side may be empty or `*`. */
  id?: string;
  /** Hex prefix of the class code: cc, ccss or ccsspp. */
  class?: string;
  /** A driver name, or `none` for unbound devices. */
  driver?: string;
}

function idFilter(spec: string): (vendor: number, device: number) => boolean {
  const m = /^([0-9a-f]{0,4}|\*):([0-9a-f]{0,4}|\*)$/i.exec(spec.trim());
  if (!m)
    throw new UsageError(
      `--id ${JSON.stringify(spec)} is not vvvv:dddd`,
      'for example --id 8086: or --id 8086:100e',
    );
  const want = (s: string): number | null => (s === '' || s === '*' ? null : parseInt(s, 16));
  const [v, d] = [want(m[1]), want(m[2])];
  return (vendor, device) => (v === null || v === vendor) && (d === null || d === device);
}

function classFilter(spec: string): (classCode: number) => boolean {
  const s = spec.trim().toLowerCase().replace(/^0x/, '');
  if (!/^([0-9a-f]{2}){1,3}$/.test(s)) {
    throw new UsageError(
      `--class ${JSON.stringify(spec)} is not cc, ccss or ccsspp in hex`,
      'for example --class 02 (network)',
    );
  }
  return (classCode) => classCode.toString(16).padStart(6, '0').startsWith(s);
}

/** The devices that pass `filter`, with names and group state. */
export function listEntries(
  filter: ListFilter,
  ids: PciIds,
  sysfs: SysfsOptions,
  aliases: ModuleAliases | null = null,
): ListEntry[] {
  const byId = filter.id !== undefined ? idFilter(filter.id) : null;
  const byClass = filter.class !== undefined ? classFilter(filter.class) : null;
  return listDevices(sysfs)
    .filter((d) => filter.bdfs.length === 0 || filter.bdfs.includes(d.bdf))
    .filter((d) => byId === null || byId(d.vendor, d.device))
    .filter((d) => byClass === null || byClass(d.classCode))
    .filter((d) => filter.driver === undefined || (d.driver ?? 'none') === filter.driver)
    .map((d) => {
      const g = groupState(d, sysfs);
      return {
        bdf: d.bdf,
        vendorId: d.vendor,
        deviceId: d.device,
        vendorName: ids.vendor(d.vendor),
        deviceName: ids.device(d.vendor, d.device),
        classCode: d.classCode,
        className: ids.className(d.classCode),
        driver: d.driver,
        driverOverride: d.driverOverride,
        iommuGroup: d.iommuGroup,
        viable: g.viable,
        vfioReady: g.vfioReady,
        net: d.net,
        modules: aliases === null ? null : aliases.match(modaliasOf(d, sysfs)),
      };
    });
}

const h4 = (v: number): string => v.toString(16).padStart(4, '0');

/** One lspci-like line per device. */
export function formatList(entries: readonly ListEntry[]): string {
  return entries
    .map((e) => {
      const cls = `${e.className ?? 'Class'} [${h4(e.classCode >> 8)}]`;
      const name = [e.vendorName, e.deviceName].filter((x) => x !== null).join(' ') || 'Device';
      const group =
        e.iommuGroup === null
          ? 'no IOMMU group'
          : `group ${e.iommuGroup} ${e.viable ? 'viable' : 'not viable'}${e.vfioReady ? ', vfio ready' : ''}`;
      const net = e.net.map((n) => ` ${n.name} ${n.up ? 'up' : 'down'}`).join(',');
      const modules = e.modules?.length ? `, modules ${e.modules.join(', ')}` : '';
      return `${e.bdf} ${cls}: ${name} [${h4(e.vendorId)}:${h4(e.deviceId)}] driver ${e.driver ?? 'none'}, ${group}${net ? `,${net}` : ''}${modules}`;
    })
    .join('\n')
    .concat(entries.length ? '\n' : '');
}
