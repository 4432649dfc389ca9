/** The commands about devices and their drivers: list, bind, unbind, restore. */

import { Command, Option } from 'commander';

import { bindDevices, restoreDevices, unbindDevices, type DriverChange, type MoveOptions } from '../binding';
import { UsageError } from '../errors';
import { hostUseOf, type CliIo } from '../io';
import { formatList, listEntries } from '../list';
import { ModuleAliases } from '../modules';
import { PciIds } from '../pci-ids';
import { resolveUser } from '../group-owner';
import { DriverState, statePath } from '../state';
import type { SysfsOptions } from '../../vfio/sysfs';
import { example, jsonOut, timeoutOption, parseTimeout, parseBdfs } from './common';

interface MoveFlags {
  json?: boolean;
  force?: boolean;
  state?: string;
  timeout: string;
}

function moveOptions(io: CliIo, verb: string, flags: MoveFlags): MoveOptions {
  const state = DriverState.load(statePath(flags.state, io.env));
  return {
    ...hostUseOf(io),
    force: flags.force === true,
    ...(io.env['VFIO_BRIDGE_VFIO_DIR'] ? { vfioDevDir: io.env['VFIO_BRIDGE_VFIO_DIR'] } : {}),
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

const HOST_USE_FORCE =
  'take the device even though the host uses it (an interface with an address, a route or its ' +
  'link up; a disk mounted, used as swap or held by md/dm/LVM; the console or a framebuffer)';

/** What outlives the command and what does not, for the help of the commands that move devices. */
const PERSISTENCE = `
What persists:
  The state file (--state, else $VFIO_BRIDGE_STATE, else /run/vfio-bridge/drivers.json) keeps each
  device's first driver and driver_override until restore; /run is emptied at boot, exactly as the
  bindings it describes are forgotten. It is locked (FILE.lock) while a command changes it.
What does not:
  driver_override, the binding itself and the owner of /dev/vfio/N are the kernel's and are lost on
  reboot (the device comes back on its usual driver) or when the device is unplugged. To bind at
  every boot, use driverctl or vfio-pci.ids= on the kernel command line.
`;

/** list, bind, unbind, restore. */
export function addDriverCommands(program: Command, io: CliIo, sysfs: SysfsOptions): void {
  example(
    program
      .command('list')
      .description(
        'every PCI device: IDs and names (pci.ids), class, driver, IOMMU group, viability, VFIO readiness, ' +
          'and the kernel modules that could drive it (modules.alias, as lspci -k)',
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
        ModuleAliases.load(io.env['VFIO_BRIDGE_MODULES_ALIAS'] || undefined),
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
      .option('--force', HOST_USE_FORCE)
      .option(
        '--user <name>',
        "hand each device's group node /dev/vfio/N to this user (chown, as libvirt does); restore and unbind give it back to root",
      )
      .addOption(timeoutOption())
      .addOption(stateOption())
      .option('--json', 'JSON output (vfio-bridge schema bind)'),
    'vfio-bridge bind 0000:03:00.0',
    'vfio-bridge bind --group 0000:03:00.0',
    'vfio-bridge bind --user alice 0000:03:00.0',
  )
    .addHelpText('after', PERSISTENCE)
    .action(async (bdfs: string[], o: MoveFlags & { driver: string; group?: boolean; user?: string }) => {
      const user = o.user === undefined ? undefined : resolveUser(o.user, io.env['VFIO_BRIDGE_PASSWD']);
      if (user !== undefined && !o.driver.startsWith('vfio'))
        throw new UsageError(
          `--user hands over a VFIO group node, which ${o.driver} has none of`,
          'leave --driver out (vfio-pci)',
        );
      const opts = moveOptions(io, 'bind', o);
      const changes = await bindDevices(parseBdfs(bdfs), {
        ...opts,
        driver: o.driver,
        group: o.group === true,
        ...(user !== undefined ? { user } : {}),
      });
      reportMoves(io, 'bind', o, opts.state.path, changes);
    });

  example(
    program
      .command('unbind')
      .description('detach devices from their drivers, remembering which one they had')
      .argument('<bdf...>', 'devices to unbind')
      .option('--force', HOST_USE_FORCE)
      .addOption(timeoutOption())
      .addOption(stateOption())
      .option('--json', 'JSON output (vfio-bridge schema unbind)'),
    'vfio-bridge unbind 0000:03:00.0',
  )
    .addHelpText('after', PERSISTENCE)
    .action(async (bdfs: string[], o: MoveFlags) => {
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
  )
    .addHelpText('after', PERSISTENCE)
    .action(async (bdfs: string[], o: MoveFlags) => {
      const opts = moveOptions(io, 'restore', o);
      reportMoves(io, 'restore', o, opts.state.path, await restoreDevices(parseBdfs(bdfs), opts));
    });
}
