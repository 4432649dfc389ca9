/** The commands about devices and their drivers: list, bind, unbind, restore. */

import { Command, Option } from 'commander';

import { bindDevices, restoreDevices, unbindDevices, type DriverChange, type MoveOptions } from '../binding';
import { sysfsOf, type CliIo } from '../io';
import { formatList, listEntries } from '../list';
import { PciIds } from '../pci-ids';
import { DriverState, statePath } from '../state';
import type { SysfsOptions } from '../../vfio/sysfs';
import { example, jsonOut, timeoutOption, parseTimeout, parseBdfs } from './common';

interface MoveFlags {
  json?: boolean;
  state?: string;
  timeout: string;
}

function moveOptions(io: CliIo, verb: string, flags: MoveFlags): MoveOptions {
  const state = DriverState.load(statePath(flags.state, io.env));
  return {
    ...sysfsOf(io),
    state,
    timeoutMs: parseTimeout(flags.timeout),
    onStart: (i, n, bdf) => {
      if (n > 1) io.err(`${verb} [${i}/${n}] ${bdf}\n`);
    },
  };
}

function reportMoves(
  io: CliIo,
  command: string,
  flags: MoveFlags,
  state: string,
  changes: DriverChange[],
): void {
  if (flags.json) {
    jsonOut(io, command, { stateFile: state, devices: changes });
    return;
  }
  for (const c of changes) {
    const to = c.to ?? 'no driver';
    io.out(`${c.bdf}: ${c.changed ? `${c.from ?? 'no driver'} -> ${to}` : `already on ${to}`}\n`);
  }
}

/** list, bind, unbind, restore. */
export function addDriverCommands(program: Command, io: CliIo, sysfs: SysfsOptions): void {
  example(
    program
      .command('list')
      .description(
        'every PCI device: IDs and names (pci.ids), class, driver, IOMMU group, viability, VFIO readiness',
      )
      .argument('[bdf...]', 'only these devices')
      .option('--id <vvvv:dddd>', 'only this vendor:device (either side may be empty)')
      .option('--class <hex>', 'only this class prefix (cc, ccss or ccsspp)')
      .option('--driver <name>', "only devices on this driver ('none': unbound)")
      .option('--pci-ids <file>', 'pci.ids to take names from (default: the system one, if any)')
      .option('--json', 'JSON output (vfio-bridge schema list)'),
    'vfio-bridge list --class 02 --driver none',
  ).action(
    (
      bdfs: string[],
      o: { id?: string; class?: string; driver?: string; pciIds?: string; json?: boolean },
    ) => {
      const ids = PciIds.load(o.pciIds, io.env);
      const entries = listEntries(
        { bdfs: parseBdfs(bdfs), id: o.id, class: o.class, driver: o.driver },
        ids,
        sysfs,
      );
      if (o.json) jsonOut(io, 'list', { devices: entries });
      else io.out(formatList(entries));
    },
  );

  const stateOption = (): Option =>
    new Option(
      '--state <file>',
      'state file remembering earlier drivers (default $VFIO_BRIDGE_STATE or /run/vfio-bridge/drivers.json)',
    );

  example(
    program
      .command('bind')
      .description(
        "bind devices to vfio-pci (or --driver) through driver_override, remembering each one's driver",
      )
      .argument('<bdf...>', 'devices to bind')
      .option('--driver <name>', 'the driver to bind to', 'vfio-pci')
      .option('--group', "also bind the other devices of each device's IOMMU group")
      .option('--force', 'bind a network device even when its interface is up')
      .addOption(timeoutOption())
      .addOption(stateOption())
      .option('--json', 'JSON output (vfio-bridge schema bind)'),
    'vfio-bridge bind 0000:03:00.0',
    'vfio-bridge bind --group 0000:03:00.0',
  ).action(async (bdfs: string[], o: MoveFlags & { driver: string; group?: boolean; force?: boolean }) => {
    const opts = moveOptions(io, 'bind', o);
    const changes = await bindDevices(parseBdfs(bdfs), {
      ...opts,
      driver: o.driver,
      group: o.group === true,
      force: o.force === true,
    });
    reportMoves(io, 'bind', o, opts.state.path, changes);
  });

  example(
    program
      .command('unbind')
      .description('detach devices from their drivers, remembering which one they had')
      .argument('<bdf...>', 'devices to unbind')
      .addOption(timeoutOption())
      .addOption(stateOption())
      .option('--json', 'JSON output (vfio-bridge schema unbind)'),
    'vfio-bridge unbind 0000:03:00.0',
  ).action(async (bdfs: string[], o: MoveFlags) => {
    const opts = moveOptions(io, 'unbind', o);
    reportMoves(io, 'unbind', o, opts.state.path, await unbindDevices(parseBdfs(bdfs), opts));
  });

  example(
    program
      .command('restore')
      .description('put devices back on the driver they had before bind or unbind')
      .argument('<bdf...>', 'devices to restore')
      .addOption(timeoutOption())
      .addOption(stateOption())
      .option('--json', 'JSON output (vfio-bridge schema restore)'),
    'vfio-bridge restore 0000:03:00.0',
  ).action(async (bdfs: string[], o: MoveFlags) => {
    const opts = moveOptions(io, 'restore', o);
    reportMoves(io, 'restore', o, opts.state.path, await restoreDevices(parseBdfs(bdfs), opts));
  });
}
