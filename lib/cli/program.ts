/**
 * The `vfio-bridge` command line, on commander: one subcommand per operation, each with --help and
 * an example, --json output with a schema (schema.ts), and exit codes 0 (done), 1 (the operation
 * failed; the VfioError message and hint on stderr) and 2 (usage error).
 */
import * as fs from 'node:fs';

import { Command, CommanderError, Option } from 'commander';

import { VfioError } from '../vfio/errors';
import { bindDevices, restoreDevices, unbindDevices, type DriverChange, type MoveOptions } from './binding';
import { describeFailure, EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError } from './errors';
import { collectInfo, formatInfo } from './info';
import { sysfsOf, type CliIo, Progress } from './io';
import { later, notAvailable } from './later';
import { formatList, listEntries } from './list';
import { buildBus, parseBarPlacement, type BarPlacement } from './mtree';
import { REGION_NAMES } from './names';
import { PciIds } from './pci-ids';
import { parseBdf, readDevice, resetMethods } from './pci-sysfs';
import {
  checkSpan,
  formatDumpLines,
  hexValue,
  openPort,
  parseOffset,
  parseRegion,
  parseValue,
  parseWidth,
  sysfsRegionSize,
  type Via,
} from './region-access';
import { SCHEMAS, SCHEMA_VERSION } from './schema';
import { DriverState, statePath } from './state';
import { renderSvg } from './svg';
import { openVfioDevice } from './vfio-open';

/** A dump this long or longer shows progress. */
const LARGE_DUMP = 64 * 1024;
/** Bytes read between two progress updates. */
const DUMP_CHUNK_BYTES = 4096;

function example(cmd: Command, ...lines: string[]): Command {
  return cmd.addHelpText(
    'after',
    `\nExample${lines.length > 1 ? 's' : ''}:\n${lines.map((l) => `  $ ${l}`).join('\n')}\n`,
  );
}

function jsonOut(io: CliIo, command: string, body: Record<string, unknown>): void {
  io.out(JSON.stringify({ command, version: SCHEMA_VERSION, ...body }, null, 2) + '\n');
}

const widthOption = (): Option =>
  new Option('-w, --width <bytes>', 'access width: exactly one access of this many bytes per value')
    .choices(['1', '2', '4', '8'])
    .makeOptionMandatory();
const viaOption = (): Option =>
  new Option('--via <path>', 'through a mapping of the region or pread/pwrite on the device fd')
    .choices(['auto', 'map', 'fd'])
    .default('auto');
const timeoutOption = (): Option =>
  new Option('--timeout <ms>', 'how long to wait for the kernel to move each device').default('5000');

function parseTimeout(arg: string): number {
  const v = parseOffset(arg, '--timeout');
  if (v === 0) throw new UsageError('--timeout must be at least 1 ms');
  return v;
}

function parseBdfs(args: readonly string[]): string[] {
  return [...new Set(args.map(parseBdf))];
}

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

/** Build the program. `io` receives everything it prints. */
export function buildProgram(io: CliIo): Command {
  const program = new Command('vfio-bridge')
    .description('Inspect PCI devices, move them to vfio-pci and back, and look inside them through VFIO.')
    .exitOverride()
    .showHelpAfterError('(add --help for usage)')
    .configureOutput({ writeOut: (s) => io.out(s), writeErr: (s) => io.err(s) });
  const sysfs = sysfsOf(io);

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

  example(
    program
      .command('info')
      .description('regions (flags, sizes, sparse mmap areas, MSI-X mappable), capabilities, IRQs, reset')
      .argument('<bdf>', 'a device bound to vfio-pci')
      .option('--json', 'JSON output (vfio-bridge schema info)'),
    'vfio-bridge info 0000:03:00.0',
  ).action((arg: string, o: { json?: boolean }) => {
    const bdf = parseBdf(arg);
    readDevice(bdf, sysfs);
    using v = openVfioDevice(bdf, sysfs);
    const info = collectInfo(v.device, v.group.number, resetMethods(bdf, sysfs));
    if (o.json) jsonOut(io, 'info', { ...info });
    else io.out(formatInfo(info));
  });

  interface AccessFlags {
    width: string;
    via: Via;
    json?: boolean;
  }
  /** Validate against sysfs before VFIO is opened, so a bad command line never touches the device. */
  const prepare = (arg: string, regionArg: string, offsetArg: string, length: number) => {
    const bdf = parseBdf(arg);
    const region = parseRegion(regionArg);
    const offset = parseOffset(offsetArg, 'offset');
    readDevice(bdf, sysfs);
    checkSpan(region, offset, length, sysfsRegionSize(bdf, region, sysfs));
    return { bdf, region, offset };
  };

  example(
    program
      .command('read')
      .description('read one value: exactly one access of --width bytes')
      .argument('<bdf>', 'a device bound to vfio-pci')
      .argument('<region>', 'bar0..bar5, rom or config')
      .argument('<offset>', 'byte offset in the region (decimal or 0x-hex)')
      .addOption(widthOption())
      .addOption(viaOption())
      .option('--json', 'JSON output (vfio-bridge schema read)'),
    'vfio-bridge read 0000:03:00.0 bar0 0x8 --width 4',
  ).action((arg: string, regionArg: string, offsetArg: string, o: AccessFlags) => {
    const width = parseWidth(o.width);
    const { bdf, region, offset } = prepare(arg, regionArg, offsetArg, width);
    using v = openVfioDevice(bdf, sysfs);
    using port = openPort(v.device, region, offset, width, o.via);
    const value = port.read(offset, width);
    if (o.json) {
      jsonOut(io, 'read', {
        bdf,
        region: REGION_NAMES[region],
        offset,
        width,
        via: port.via,
        value: hexValue(value, width),
      });
    } else io.out(`${hexValue(value, width)}\n`);
  });

  example(
    program
      .command('write')
      .description('write one value: exactly one access of --width bytes; asks first unless --yes')
      .argument('<bdf>', 'a device bound to vfio-pci')
      .argument('<region>', 'bar0..bar5, rom or config')
      .argument('<offset>', 'byte offset in the region (decimal or 0x-hex)')
      .argument('<value>', 'the value (decimal or 0x-hex), at most --width bytes')
      .addOption(widthOption())
      .addOption(viaOption())
      .option('-y, --yes', 'write without asking')
      .option('--json', 'JSON output (vfio-bridge schema write)'),
    'vfio-bridge write 0000:03:00.0 bar0 0x4 0x12345678 --width 4 --yes',
  ).action(
    async (
      arg: string,
      regionArg: string,
      offsetArg: string,
      valueArg: string,
      o: AccessFlags & { yes?: boolean },
    ) => {
      const width = parseWidth(o.width);
      const value = parseValue(valueArg, width);
      const { bdf, region, offset } = prepare(arg, regionArg, offsetArg, width);
      const what = `${hexValue(value, width)} (${width} byte${width > 1 ? 's' : ''}) to ${REGION_NAMES[region]} offset 0x${offset.toString(16)} of ${bdf}`;
      if (!o.yes) {
        const answer = await io.confirm(`write ${what}? [y/N] `);
        if (answer === null)
          throw new UsageError('a write needs --yes when nobody can confirm it (stdin is not a terminal)');
        if (!answer) throw new UsageError('write cancelled');
      }
      using v = openVfioDevice(bdf, sysfs);
      using port = openPort(v.device, region, offset, width, o.via);
      port.write(offset, width, value);
      if (o.json) {
        jsonOut(io, 'write', {
          bdf,
          region: REGION_NAMES[region],
          offset,
          width,
          via: port.via,
          value: hexValue(value, width),
        });
      } else io.out(`wrote ${what} through the ${port.via === 'map' ? 'mapping' : 'fd'}\n`);
    },
  );

  example(
    program
      .command('dump')
      .description(
        "hex dump like QEMU's xp: offset, values at --width, ASCII; never a wider access than asked",
      )
      .argument('<bdf>', 'a device bound to vfio-pci')
      .argument('<region>', 'bar0..bar5, rom or config')
      .argument('[offset]', 'start (decimal or 0x-hex)', '0')
      .argument('[length]', 'bytes, a multiple of --width', '256')
      .addOption(widthOption())
      .addOption(viaOption())
      .option('--no-progress', 'no progress on stderr for large ranges')
      .option('--json', 'JSON output (vfio-bridge schema dump)'),
    'vfio-bridge dump 0000:03:00.0 config 0 64 --width 4',
  ).action(
    (
      arg: string,
      regionArg: string,
      offsetArg: string,
      lengthArg: string,
      o: AccessFlags & { progress: boolean },
    ) => {
      const width = parseWidth(o.width);
      const length = parseOffset(lengthArg, 'length');
      if (length === 0 || length % width !== 0) {
        throw new UsageError(`length ${length} is not a positive multiple of the width (${width})`);
      }
      const { bdf, region, offset } = prepare(arg, regionArg, offsetArg, length);
      using v = openVfioDevice(bdf, sysfs);
      using port = openPort(v.device, region, offset, length, o.via);
      const count = length / width;
      const progress = new Progress(
        io,
        `dump ${bdf} ${REGION_NAMES[region]}`,
        length,
        o.progress && length >= LARGE_DUMP,
      );
      const values: (number | bigint)[] = [];
      const chunk = DUMP_CHUNK_BYTES / width;
      for (let i = 0; i < count; i += chunk) {
        const n = Math.min(chunk, count - i);
        for (const x of port.readMany(offset + i * width, n, width)) values.push(x);
        progress.update((i + n) * width);
      }
      if (o.json) {
        jsonOut(io, 'dump', {
          bdf,
          region: REGION_NAMES[region],
          offset,
          length,
          width,
          via: port.via,
          values: values.map((x) => hexValue(x, width)),
        });
      } else io.out(formatDumpLines(offset, width, values));
    },
  );

  example(
    program
      .command('mtree')
      .description(
        "build the devices' vfio-pci stacks on one bus and print QEMU's info mtree with the mapinfo column",
      )
      .argument('<bdf...>', 'devices bound to vfio-pci')
      .option(
        '--bar <[bdf/]n=addr>',
        'place BAR n here instead of its host address (repeatable)',
        (v: string, prev: string[]) => [...prev, v],
        [] as string[],
      )
      .option('-f, --flat', 'the flat view (info mtree -f)')
      .option('--svg <file>', 'also draw the address map as SVG')
      .option('--json', 'JSON output (vfio-bridge schema mtree)'),
    'vfio-bridge mtree -f 0000:03:00.0',
    'vfio-bridge mtree 0000:03:00.0 --bar 0=0xfe000000 --svg map.svg',
  ).action((args: string[], o: { bar: string[]; flat?: boolean; svg?: string; json?: boolean }) => {
    const bdfs = parseBdfs(args);
    const bars: BarPlacement[] = o.bar.map(parseBarPlacement);
    for (const b of bdfs) readDevice(b, sysfs);
    using built = buildBus(bdfs, bars, sysfs);
    let svg: string | null = null;
    if (o.svg !== undefined) {
      svg = renderSvg(built.devices, built.mapinfo);
      fs.writeFileSync(o.svg, svg);
    }
    if (o.json) {
      const j = built.bus.mtreeJson();
      jsonOut(io, 'mtree', {
        devices: built.devices,
        memory: j.memory,
        io: j.io,
        mapinfo: j.mapinfo,
        svg: o.svg ?? null,
      });
      return;
    }
    io.out(built.bus.mtree('memory', { flat: o.flat === true }));
    io.out(built.bus.mtree('io', { flat: o.flat === true }));
    if (o.svg !== undefined) io.err(`address map written to ${o.svg}\n`);
  });

  example(
    program
      .command('reset')
      .description('reset a device: its function reset (VFIO_DEVICE_RESET), or --hot for a bus/slot reset')
      .argument('<bdf>', 'a device bound to vfio-pci')
      .option('--hot', 'hot reset (secondary bus reset) instead of the function reset')
      .option('--json', 'JSON output (vfio-bridge schema reset)'),
    'vfio-bridge reset 0000:03:00.0',
  ).action(async (arg: string, o: { hot?: boolean; json?: boolean }) => {
    const bdf = parseBdf(arg);
    readDevice(bdf, sysfs);
    if (o.hot) {
      if (later.hotReset === null) throw notAvailable('reset --hot', bdf);
      await later.hotReset(bdf, sysfs);
    } else {
      using v = openVfioDevice(bdf, sysfs);
      if (!v.device.info().reset) {
        throw new VfioError({
          message: `${bdf} has no function reset (VFIO_DEVICE_RESET is not offered)`,
          code: 'ENOTSUP',
          op: 'VFIO_DEVICE_RESET',
          bdf,
          hint: `the kernel lists these reset methods: ${resetMethods(bdf, sysfs).join(', ') || 'none'}; a hot reset (--hot) resets the bus`,
        });
      }
      v.device.reset();
    }
    if (o.json) jsonOut(io, 'reset', { bdf, method: o.hot ? 'hot' : 'function' });
    else io.out(`${bdf}: ${o.hot ? 'hot' : 'function'} reset done\n`);
  });

  example(
    program
      .command('irqs')
      .description('IRQ indexes and vector counts; --watch for live interrupt counts per vector')
      .argument('<bdf>', 'a device bound to vfio-pci')
      .option('--watch', 'print live interrupt counts per vector until interrupted')
      .option('--interval <ms>', 'between two samples with --watch', '1000')
      .option('--json', 'JSON output (vfio-bridge schema irqs)'),
    'vfio-bridge irqs 0000:03:00.0',
  ).action(async (arg: string, o: { watch?: boolean; interval: string; json?: boolean }) => {
    const bdf = parseBdf(arg);
    readDevice(bdf, sysfs);
    if (o.watch) {
      if (later.watchIrqs === null) throw notAvailable('irqs --watch', bdf);
      await later.watchIrqs(bdf, io, {
        intervalMs: parseTimeout(o.interval),
        samples: undefined,
        json: o.json === true,
      });
      return;
    }
    using v = openVfioDevice(bdf, sysfs);
    const { irqs } = collectInfo(v.device, v.group.number, []);
    if (o.json) jsonOut(io, 'irqs', { bdf, irqs });
    else for (const q of irqs) io.out(`${q.name.padEnd(5)} ${q.count} vector${q.count === 1 ? '' : 's'}\n`);
  });

  example(
    program
      .command('schema')
      .description("print the JSON Schema of a command's --json output")
      .argument('<command>', Object.keys(SCHEMAS).join(', ')),
    'vfio-bridge schema list',
  ).action((name: string) => {
    const s = SCHEMAS[name];
    if (s === undefined)
      throw new UsageError(
        `no schema for ${JSON.stringify(name)}`,
        `one of ${Object.keys(SCHEMAS).join(', ')}`,
      );
    io.out(JSON.stringify(s, null, 2) + '\n');
  });

  return program;
}

/** Run the CLI on `argv` (without node and the script) and return the exit code. */
export async function run(argv: readonly string[], io: CliIo): Promise<number> {
  const program = buildProgram(io);
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return EXIT_OK;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Help and version are successes; everything else commander refuses is a usage error,
      // which it has already explained on stderr.
      if (
        e.code === 'commander.helpDisplayed' ||
        e.code === 'commander.help' ||
        e.code === 'commander.version'
      ) {
        return EXIT_OK;
      }
      return e.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    }
    const f = describeFailure(e);
    io.err(`vfio-bridge: ${f.text}\n`);
    return f.code === EXIT_USAGE ? EXIT_USAGE : EXIT_FAILED;
  }
}
