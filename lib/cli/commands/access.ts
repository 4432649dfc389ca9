/** The commands that access a region at an explicit width: read, write, dump. */

import type { Command } from 'commander';

import { AbortError } from '../../base/error';
import { VfioError } from '../../base/native-errors';
import { UsageError } from '../errors';
import { type CliIo, Progress } from '../io';
import { REGION_NAMES } from '../names';
import { parseBdf, readDevice, type PciDeviceEntry } from '../pci-sysfs';
import { onVfio, openSysfsPort } from '../sysfs-access';
import {
  checkAligned,
  checkSpan,
  formatDumpLines,
  hexValue,
  openPort,
  parseOffset,
  parseRegion,
  parseValue,
  parseWidth,
  sysfsRegionSize,
  type RegionPort,
  type Via,
} from '../region-access';
import { openVfioDevice } from '../vfio-open';
import type { AccessSize } from '../../types';
import type { SysfsOptions } from '../../vfio/sysfs';
import type { VfioBackendChoice } from '../../vfio/backend';
import { backendOption } from '../backend-info';
import { example, jsonOut, widthOption, viaOption } from './common';

/** A dump this long or longer shows progress. */
const LARGE_DUMP = 64 * 1024;
/** Bytes read between two progress updates. */
const DUMP_CHUNK_BYTES = 4096;

/** What the --json of read, write and dump shares (schema.ts `access`). */
function accessJson(bdf: string, region: number, offset: number, width: AccessSize, via: RegionPort['via']) {
  return { bdf, region: REGION_NAMES[region], offset, width, via };
}

/**
 * A port on the range: through VFIO when the device is on vfio-pci (unless --via sysfs), else
 * through sysfs, which reads a device on any driver.
 */
function openAccess(
  dev: PciDeviceEntry,
  region: number,
  offset: number,
  length: number,
  width: AccessSize,
  via: Via,
  sysfs: SysfsOptions,
  backend: VfioBackendChoice,
): RegionPort {
  if (via === 'sysfs' || !onVfio(dev)) {
    if (via === 'map' || via === 'fd') {
      throw new UsageError(
        `--via ${via} needs vfio-pci: ${dev.bdf} is on ${dev.driver ?? 'no driver'}`,
        `leave --via out to read it through sysfs, or bind it first: vfio-bridge bind ${dev.bdf}`,
      );
    }
    return openSysfsPort(dev.bdf, region, offset, length, width, sysfs);
  }
  const v = openVfioDevice(dev.bdf, sysfs, backend);
  try {
    const port = openPort(v.device, region, offset, length, via);
    return {
      ...port,
      [Symbol.dispose]: () => {
        port[Symbol.dispose]();
        v[Symbol.dispose]();
      },
    };
  } catch (e) {
    v[Symbol.dispose]();
    throw e;
  }
}

/** read, write, dump. */
export function addAccessCommands(program: Command, io: CliIo, sysfs: SysfsOptions): void {
  interface AccessFlags {
    width: string;
    via: Via;
    json?: boolean;
    backend: VfioBackendChoice;
  }
  /** Validate against sysfs before VFIO is opened, so a bad command line never touches the device. */
  const prepare = (arg: string, regionArg: string, offsetArg: string, length: number, width: AccessSize) => {
    const bdf = parseBdf(arg);
    const region = parseRegion(regionArg);
    const offset = parseOffset(offsetArg, 'offset');
    checkAligned(offset, width);
    const dev = readDevice(bdf, sysfs);
    checkSpan(region, offset, length, sysfsRegionSize(bdf, region, sysfs));
    return { bdf, dev, region, offset };
  };

  example(
    program
      .command('read')
      .description(
        'read one value: exactly one access of --width bytes; through VFIO on vfio-pci, else through sysfs ' +
          '(config, resourceN) on any driver',
      )
      .argument('<bdf>', 'a device on any driver')
      .argument('<region>', 'bar0..bar5, rom or config')
      .argument('<offset>', 'byte offset in the region (decimal or 0x-hex)')
      .addOption(widthOption())
      .addOption(viaOption())
      .addOption(backendOption())
      .option('--json', 'JSON output (vfio-bridge schema read)'),
    'vfio-bridge read 0000:03:00.0 bar0 0x8 --width 4',
  ).action((arg: string, regionArg: string, offsetArg: string, o: AccessFlags) => {
    const width = parseWidth(o.width);
    const { bdf, dev, region, offset } = prepare(arg, regionArg, offsetArg, width, width);
    using port = openAccess(dev, region, offset, width, width, o.via, sysfs, o.backend);
    const value = port.read(offset, width);
    if (o.json) {
      jsonOut(io, 'read', {
        ...accessJson(bdf, region, offset, width, port.via),
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
      .addOption(backendOption())
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
      const { bdf, dev, region, offset } = prepare(arg, regionArg, offsetArg, width, width);
      if (o.via === 'sysfs') {
        throw new UsageError('write goes through VFIO only: --via sysfs reads', 'use --via auto, map or fd');
      }
      if (!onVfio(dev)) {
        throw new VfioError({
          message: `writing to ${bdf} needs vfio-pci: it is on ${dev.driver ?? 'no driver'}, which owns the device`,
          code: 'ENOTSUP',
          op: 'write',
          bdf,
          hint: `bind it first (vfio-bridge bind ${bdf}); restore gives it back afterwards`,
        });
      }
      const what = `${hexValue(value, width)} (${width} byte${width > 1 ? 's' : ''}) to ${REGION_NAMES[region]} offset 0x${offset.toString(16)} of ${bdf}`;
      if (!o.yes) {
        const answer = await io.confirm(`write ${what}? [y/N] `);
        if (answer === null)
          throw new UsageError('a write needs --yes when nobody can confirm it (stdin is not a terminal)');
        if (!answer) throw new UsageError('write cancelled');
      }
      using port = openAccess(dev, region, offset, width, width, o.via, sysfs, o.backend);
      port.write(offset, width, value);
      if (o.json) {
        jsonOut(io, 'write', {
          ...accessJson(bdf, region, offset, width, port.via),
          value: hexValue(value, width),
        });
      } else io.out(`wrote ${what} through the ${port.via === 'map' ? 'mapping' : 'fd'}\n`);
    },
  );

  example(
    program
      .command('dump')
      .description(
        "hex dump like QEMU's xp: offset, values at --width, ASCII; never a wider access than asked; " +
          'through sysfs on any driver, as read',
      )
      .argument('<bdf>', 'a device on any driver')
      .argument('<region>', 'bar0..bar5, rom or config')
      .argument('[offset]', 'start (decimal or 0x-hex)', '0')
      .argument('[length]', 'bytes, a multiple of --width', '256')
      .addOption(widthOption())
      .addOption(viaOption())
      .addOption(backendOption())
      .option('--no-progress', 'no progress on stderr for large ranges')
      .option('--json', 'JSON output (vfio-bridge schema dump)'),
    'vfio-bridge dump 0000:03:00.0 config 0 64 --width 4',
  ).action(
    async (
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
      const { bdf, dev, region, offset } = prepare(arg, regionArg, offsetArg, length, width);
      using port = openAccess(dev, region, offset, length, width, o.via, sysfs, o.backend);
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
        if (i + n >= count) break;
        // A turn between chunks, so that Ctrl-C (io.signal) stops a long dump.
        await new Promise(setImmediate);
        if (io.signal?.aborted) throw new AbortError(`dump ${bdf} ${REGION_NAMES[region]}`, io.signal.reason);
      }
      if (o.json) {
        jsonOut(io, 'dump', {
          ...accessJson(bdf, region, offset, width, port.via),
          length,
          values: values.map((x) => hexValue(x, width)),
        });
      } else io.out(formatDumpLines(offset, width, values));
    },
  );
}
