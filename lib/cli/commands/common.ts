/** What every command shares: the example block, JSON output, the width/via/timeout options. */

import { Command, Option } from 'commander';

import { UsageError } from '../errors';
import type { CliIo } from '../io';
import { parseBdf } from '../pci-sysfs';
import { parseOffset } from '../region-access';
import { SCHEMA_VERSION } from '../schema';
export function example(cmd: Command, ...lines: string[]): Command {
  return cmd.addHelpText(
    'after',
    `\nExample${lines.length > 1 ? 's' : ''}:\n${lines.map((l) => `  $ ${l}`).join('\n')}\n`,
  );
}

export function jsonOut(io: CliIo, command: string, body: Record<string, unknown>): void {
  io.out(JSON.stringify({ command, version: SCHEMA_VERSION, ...body }, null, 2) + '\n');
}

export const widthOption = (): Option =>
  new Option('-w, --width <bytes>', 'access width: exactly one access of this many bytes per value')
    .choices(['1', '2', '4', '8'])
    .makeOptionMandatory();
export const viaOption = (): Option =>
  new Option(
    '--via <path>',
    'through a mapping of the region or pread/pwrite on the VFIO device fd; sysfs (config, resourceN) ' +
      'reads a device on any driver, and auto picks it when the device is not on vfio-pci',
  )
    .choices(['auto', 'map', 'fd', 'sysfs'])
    .default('auto');
export const timeoutOption = (): Option =>
  new Option('--timeout <ms>', 'how long to wait for the kernel to move each device').default('5000');

export function parseTimeout(arg: string): number {
  const v = parseOffset(arg, '--timeout');
  if (v === 0) throw new UsageError('--timeout must be at least 1 ms');
  return v;
}

export function parseBdfs(args: readonly string[]): string[] {
  return [...new Set(args.map(parseBdf))];
}
