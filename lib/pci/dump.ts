/**
 * The xp-like dump of a BAR as the guest sees it: read through the PCI space's dispatch, so quirks
 * and overlays show, at the widest width every region in the range accepts (or the one asked, never
 * wider). The asynchronous form gives the event loop a turn between chunks and honours an AbortSignal.
 */
import { AbortError, ArgRangeError, ArgTypeError } from '../base/error';
import type { AccessSize, AddressSpace } from '../memory';
import type { PciBar } from './bar';
import type { SystemAddressSpaces } from './system-address-spaces';
import { ROM_SLOT } from './rom';
import { checkAccessSize, checkInteger, hex, isPciRegionTag } from './types';

/** Options of {@link VfioPciDevice.dump}. */
export interface DumpOptions {
  /** Access width; by default the widest every region in the range accepts. */
  width?: AccessSize;
}

/** Options of {@link VfioPciDevice.dumpAsync}. */
export interface DumpAsyncOptions extends DumpOptions {
  /** Stops the dump between two chunks; the promise then rejects with an {@link AbortError}. */
  signal?: AbortSignal;
}

/** What a dump reads: a device's BARs on its bus. @internal */
export interface DumpSource {
  readonly bdf: string;
  readonly bus: SystemAddressSpaces;
  /** BAR `index` (6 for the ROM), or null when the device does not implement it. */
  bar(index: number): PciBar | null;
  /** Throws when the device is closed. */
  checkOpen(): void;
}

/** Guest accesses an asynchronous dump makes between two turns of the event loop. */
const ACCESSES_PER_TURN = 256;

interface DumpPlan {
  readonly bar: PciBar;
  /** The BAR's address when the dump was planned. */
  readonly address: number;
  readonly space: AddressSpace;
  readonly start: number;
  readonly end: number;
  readonly width: AccessSize;
}

function planDump(src: DumpSource, bar: number, offset: number, length: number, opts: DumpOptions): DumpPlan {
  const bdf = src.bdf;
  checkInteger(bar, 'BAR index', ROM_SLOT);
  const b = src.bar(bar);
  if (!b) throw new ArgRangeError(`${bdf}: BAR ${bar} is not implemented`);
  if (b.address === null)
    throw new ArgRangeError(`${bdf}: BAR ${bar} is not mapped (no address, or decode disabled)`);
  checkInteger(offset, `${bdf} BAR ${bar} dump offset`);
  checkInteger(length, `${bdf} BAR ${bar} dump length`);
  if (length === 0 || offset + length > b.base.size) {
    throw new ArgRangeError(
      `${bdf}: dump of ${length} bytes at ${hex(offset)} is outside BAR ${bar} (${hex(b.base.size)} bytes)`,
    );
  }
  const space = b.type === 'io' ? src.bus.io : src.bus.memory;
  const start = b.address + offset;
  const end = start + length;
  let minOk: AccessSize = 1;
  let maxOk: AccessSize = 8;
  for (const r of space.flatView.ranges) {
    if (r.addr + r.size <= start || r.addr >= end) continue;
    const tag = r.region.tag;
    if (!isPciRegionTag(tag)) continue;
    if (tag.minAccess > minOk) minOk = tag.minAccess;
    if (tag.maxAccess < maxOk) maxOk = tag.maxAccess;
  }
  let width: AccessSize;
  if (opts.width !== undefined) {
    checkAccessSize(opts.width, `${bdf} dump width`);
    width = opts.width;
    if (width > maxOk || width < minOk) {
      throw new ArgRangeError(
        `${bdf}: dump width ${width} is outside what the regions accept (${minOk} to ${maxOk} bytes)`,
      );
    }
  } else {
    width = maxOk;
    while (width > minOk && (start % width !== 0 || length % width !== 0)) width = (width / 2) as AccessSize;
  }
  if (start % width !== 0 || length % width !== 0) {
    throw new ArgRangeError(
      `${bdf}: dump of ${length} bytes at ${hex(offset)} is not a whole number of aligned ${width}-byte accesses`,
    );
  }
  return { bar: b, address: b.address, space, start, end, width };
}

/**
 * dumpBar: `length` bytes at `offset` in BAR `bar` (6 for the ROM) of `src`, one guest access per
 * value, as {@link formatDump} lines. @internal
 */
export function dumpBar(
  src: DumpSource,
  bar: number,
  offset: number,
  length: number,
  opts: DumpOptions,
): string {
  const p = planDump(src, bar, offset, length, opts);
  const values: (number | bigint)[] = [];
  for (let a = p.start; a < p.end; a += p.width) values.push(p.space.read(a, p.width));
  return formatDump(p.start, p.width, values);
}

/**
 * dumpBarAsync: {@link dumpBar} with a turn of the event loop after every 256 accesses. It rejects
 * with an {@link AbortError} once `opts.signal` aborts, with ECLOSED when the device closed
 * meanwhile, and with a RangeError when the guest moved or unmapped the BAR meanwhile. @internal
 */
export async function dumpBarAsync(
  src: DumpSource,
  bar: number,
  offset: number,
  length: number,
  opts: DumpAsyncOptions,
): Promise<string> {
  const signal = opts.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new ArgTypeError(`${src.bdf}: dump signal must be an AbortSignal`);
  }
  const what = `${src.bdf}: dump of BAR ${String(bar)}`;
  if (signal?.aborted) throw new AbortError(what, signal.reason);
  const p = planDump(src, bar, offset, length, opts);
  const values: (number | bigint)[] = [];
  let a = p.start;
  for (;;) {
    const stop = Math.min(p.end, a + ACCESSES_PER_TURN * p.width);
    for (; a < stop; a += p.width) values.push(p.space.read(a, p.width));
    if (a >= p.end) break;
    await new Promise(setImmediate);
    if (signal?.aborted) throw new AbortError(what, signal.reason);
    src.checkOpen();
    if (p.bar.address !== p.address) {
      throw new ArgRangeError(`${src.bdf}: BAR ${bar} was moved or unmapped during the dump`);
    }
  }
  return formatDump(p.start, p.width, values);
}

/**
 * formatDump: QEMU `xp /Nx`-style lines, 16 bytes per line, each line starting with the guest
 * physical address of its first value.
 */
export function formatDump(start: number, width: AccessSize, values: readonly (number | bigint)[]): string {
  const perLine = 16 / width;
  const lines: string[] = [];
  for (let i = 0; i < values.length; i += perLine) {
    const addr = (start + i * width).toString(16).padStart(16, '0');
    const cells = values.slice(i, i + perLine).map((v) => `0x${v.toString(16).padStart(width * 2, '0')}`);
    lines.push(`${addr}: ${cells.join(' ')}`);
  }
  return lines.join('\n');
}
