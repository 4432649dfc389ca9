/** Mediated devices (mdev list, types, create, remove) and device migration (migration info). */

import { Option, type Command } from 'commander';

import { DeviceMigration } from '../../vfio/migration';
import { migrationArcs, offeredStates } from '../../vfio/migration-path';
import { DmaLogging } from '../../vfio/dma-logging';
import {
  createMdev,
  listMdevParents,
  listMdevs,
  mdevParent,
  removeMdev,
  type MdevDevice,
  type MdevParent,
} from '../../vfio/mdev';
import { isMdevUuid } from '../../vfio/mdev/sysfs';
import type { SysfsOptions } from '../../vfio/sysfs';
import type { VfioBackendChoice } from '../../vfio/backend';
import { backendOption } from '../backend-info';
import { hostUseOf, type CliIo } from '../io';
import { parseBdf } from '../pci-sysfs';
import { openVfioDevice } from '../vfio-open';
import { example, jsonOut, parseTimeout } from './common';

function deviceJson(d: MdevDevice): Record<string, unknown> {
  return {
    uuid: d.uuid,
    parent: d.parent,
    type: d.type,
    iommuGroup: d.iommuGroup,
    cdev: d.cdev,
    driver: d.driver,
    removing: d.removing,
  };
}

function formatDevices(list: MdevDevice[]): string {
  if (list.length === 0) return 'no mediated devices (vfio-bridge mdev types shows what can be created)\n';
  return list
    .map(
      (d) =>
        `${d.uuid}  ${d.parent} ${d.type || '-'}  group ${d.iommuGroup ?? '-'}${d.cdev ? `  ${d.cdev}` : ''}` +
        `  driver ${d.driver ?? 'none'}${d.removing ? '  (being removed: waits for its VFIO fds to close)' : ''}\n`,
    )
    .join('');
}

function formatParents(parents: MdevParent[]): string {
  if (parents.length === 0) {
    return 'no mdev parents: no loaded driver offers mediated devices (the kernel sample is mtty: modprobe mtty)\n';
  }
  return parents
    .map(
      (p) =>
        `${p.name}  ${p.path}\n` +
        p.types
          .map(
            (t) =>
              `  ${t.id}  ${t.deviceApi}  ${t.availableInstances} available  ${t.devices.length} in use` +
              `${t.name ? `  "${t.name}"` : ''}${t.description ? `\n    ${t.description}` : ''}\n`,
          )
          .join(''),
    )
    .join('');
}

/** A device argument: a PCI address or a mediated device's UUID. */
function parseDeviceName(arg: string): string {
  return isMdevUuid(arg) ? arg.trim().toLowerCase() : parseBdf(arg);
}

/** mdev list, types, create, remove; migration info. */
export function addMdevCommands(program: Command, io: CliIo, sysfs: SysfsOptions): void {
  const mdev = program
    .command('mdev')
    .description('mediated devices: list them and the types their parents offer, create and remove them');

  example(
    mdev
      .command('list')
      .description('the mediated devices: UUID, parent, type, IOMMU group, VFIO cdev, driver')
      .option('--json', 'JSON output (vfio-bridge schema mdev-list)'),
    'vfio-bridge mdev list',
  ).action((o: { json?: boolean }) => {
    const list = listMdevs(sysfs);
    if (o.json) jsonOut(io, 'mdev-list', { devices: list.map(deviceJson) });
    else io.out(formatDevices(list));
  });

  example(
    mdev
      .command('types')
      .description(
        'the mdev parents and the types each offers: name, description, device API, instances left',
      )
      .argument('[parent]', 'only this parent')
      .option('--json', 'JSON output (vfio-bridge schema mdev-types)'),
    'vfio-bridge mdev types',
    'vfio-bridge mdev types mtty --json',
  ).action((parent: string | undefined, o: { json?: boolean }) => {
    const parents = parent === undefined ? listMdevParents(sysfs) : [mdevParent(parent, sysfs)];
    if (o.json) {
      jsonOut(io, 'mdev-types', {
        parents: parents.map((p) => ({ name: p.name, path: p.path, types: p.types })),
      });
    } else io.out(formatParents(parents));
  });

  example(
    mdev
      .command('create')
      .description(
        "create a mediated device of a parent's type (refused before writing when the type has no instance left or the UUID is taken)",
      )
      .argument('<parent>', 'the parent (vfio-bridge mdev types lists them)')
      .argument('<type>', 'the type: its directory name (mtty-1), or what follows the driver prefix (1)')
      .option('--uuid <uuid>', 'the new device UUID (default: a random one)')
      .option('--json', 'JSON output (vfio-bridge schema mdev-create)'),
    'vfio-bridge mdev create mtty 1',
    'vfio-bridge mdev create mtty mtty-2 --uuid 83b8f4f2-509f-382f-3c1e-e6bfe0fa1001',
  ).action((parent: string, type: string, o: { uuid?: string; json?: boolean }) => {
    const d = createMdev(parent, type, { ...sysfs, ...(o.uuid !== undefined ? { uuid: o.uuid } : {}) });
    if (o.json) jsonOut(io, 'mdev-create', { device: deviceJson(d) });
    else io.out(`${d.uuid}: created (${d.parent} ${d.type}, group ${d.iommuGroup ?? '-'})\n`);
  });

  example(
    mdev
      .command('remove')
      .description(
        'remove a mediated device; refused while a process holds it open (the kernel would wait, unkillable, ' +
          'for its VFIO fds to close), unless --wait',
      )
      .argument('<uuid>', 'the device')
      .option(
        '--wait',
        'start the removal even if it is open: it completes when the last VFIO fd of it closes',
      )
      .addOption(new Option('--timeout <ms>', 'how long to wait for the kernel once the removal is written'))
      .option('--json', 'JSON output (vfio-bridge schema mdev-remove)'),
    'vfio-bridge mdev remove 83b8f4f2-509f-382f-3c1e-e6bfe0fa1001',
    'vfio-bridge mdev remove --wait --timeout 60000 83b8f4f2-509f-382f-3c1e-e6bfe0fa1001',
  ).action(async (uuid: string, o: { wait?: boolean; timeout?: string; json?: boolean }) => {
    const r = await removeMdev(uuid, {
      ...hostUseOf(io),
      whenOpen: o.wait ? 'wait' : 'refuse',
      ...(o.timeout !== undefined ? { timeoutMs: parseTimeout(o.timeout) } : {}),
      ...(io.signal ? { signal: io.signal } : {}),
    });
    if (o.json) {
      jsonOut(io, 'mdev-remove', {
        uuid: r.uuid,
        parent: r.parent,
        type: r.type,
        heldBy: r.heldBy.map((h) => ({ pid: h.pid, command: h.command, nodes: h.nodes })),
        ms: Math.round(r.ms),
      });
    } else {
      const held = r.heldBy.length > 0 ? ` after ${Math.round(r.ms)} ms, once its holders closed it` : '';
      io.out(`${r.uuid}: removed (${r.parent} ${r.type})${held}\n`);
    }
  });

  const migration = program
    .command('migration')
    .description('device migration (VFIO migration v2): what a device offers and where it stands');

  example(
    migration
      .command('info')
      .description(
        "a device's migration: its flags (STOP_COPY, P2P, PRE_COPY), its state, the STOP_COPY data size, " +
          'the states and arcs it offers, DMA logging',
      )
      .argument('<device>', 'a PCI address on a VFIO driver, or a mediated device UUID')
      .addOption(backendOption())
      .option('--json', 'JSON output (vfio-bridge schema migration-info)'),
    'vfio-bridge migration info 83b8f4f2-509f-382f-3c1e-e6bfe0fa1001',
    'vfio-bridge migration info --backend type1 83b8f4f2-509f-382f-3c1e-e6bfe0fa1001',
  ).action((arg: string, o: { json?: boolean; backend: VfioBackendChoice }) => {
    const name = parseDeviceName(arg);
    using v = openVfioDevice(name, sysfs, o.backend);
    const m = new DeviceMigration(v.device);
    const info = migrationInfo(name, m);
    if (o.json) jsonOut(io, 'migration-info', info);
    else io.out(formatMigration(info));
  });
}

interface MigrationInfo extends Record<string, unknown> {
  device: string;
  supported: boolean;
  flags: { stopCopy: boolean; p2p: boolean; preCopy: boolean; raw: string } | null;
  state: string | null;
  dataSize: number | null;
  states: string[];
  arcs: { from: string; to: string; effect: string }[];
  dmaLogging: boolean | null;
}

function migrationInfo(name: string, m: DeviceMigration): MigrationInfo {
  if (!m.supported) {
    return {
      device: name,
      supported: false,
      flags: null,
      state: null,
      dataSize: null,
      states: [],
      arcs: [],
      dmaLogging: null,
    };
  }
  const f = m.flags();
  return {
    device: name,
    supported: true,
    flags: { stopCopy: f.stopCopy, p2p: f.p2p, preCopy: f.preCopy, raw: `0x${f.raw.toString(16)}` },
    state: m.state,
    dataSize: Number(m.dataSize()),
    states: offeredStates(f),
    arcs: migrationArcs(f).map((a) => ({ from: a.from, to: a.to, effect: a.effect })),
    dmaLogging: new DmaLogging(m.device).probe(),
  };
}

function formatMigration(i: MigrationInfo): string {
  if (!i.supported) return `${i.device}: no migration (its driver offers none)\n`;
  const f = i.flags!;
  const flags = ['STOP_COPY', f.p2p && 'P2P', f.preCopy && 'PRE_COPY'].filter(Boolean).join('|');
  return (
    `${i.device}: migration ${flags} (${f.raw})\n` +
    `  state: ${i.state}\n` +
    `  STOP_COPY data size: ${i.dataSize} bytes (the device's estimate)\n` +
    `  states: ${i.states.join(', ')}\n` +
    `  arcs (${i.arcs.length}): ${i.arcs.map((a) => `${a.from}->${a.to}${a.effect !== 'none' ? ` [${a.effect}]` : ''}`).join(', ')}\n` +
    `  DMA logging: ${i.dmaLogging ? 'offered' : 'not offered'}\n`
  );
}
