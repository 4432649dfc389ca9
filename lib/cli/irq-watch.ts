/**
 * `irqs BDF --watch`: live interrupt counts per vector. vfio-pci lets one of INTx, MSI and MSI-X
 * be enabled at a time, as a host driver picks one, so the watch enables one of them on the host
 * (by default the one a driver would prefer: MSI-X, then MSI, then INTx) with every vector the
 * kernel offers. Enabling MSI or MSI-X makes the host kernel program the device's capability with
 * its own message address, so a device with no guest behind it still signals and every message is
 * counted. REQ is watched too: when someone unbinds the device from vfio-pci, the watch stops and
 * lets the device go instead of blocking the unbind.
 */
import { VfioError } from '../base/native-errors';
import type { DeviceIrq } from '../vfio/irq';
import type { SysfsOptions } from '../vfio/sysfs';
import {
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_PCI_INTX_IRQ_INDEX,
  VFIO_PCI_MSI_IRQ_INDEX,
  VFIO_PCI_MSIX_IRQ_INDEX,
  VFIO_PCI_REQ_IRQ_INDEX,
} from '../vfio/uapi';
import type { CliIo } from './io';
import { IRQ_NAMES } from './names';
import { SCHEMA_VERSION } from './schema';
import { openVfioDevice } from './vfio-open';
import type { VfioBackendChoice } from '../vfio/backend';

/** Which interrupt to enable: `auto` picks MSI-X, then MSI, then INTx, the first the device has. */
export type WatchedIrq = 'auto' | 'intx' | 'msi' | 'msix';
export const WATCHED_IRQS: readonly WatchedIrq[] = ['auto', 'intx', 'msi', 'msix'];

/** Why a watch ended: its sample count reached, a signal (Ctrl-C), or the kernel's REQ. */
export type WatchStop = 'samples' | 'signal' | 'released';

export interface IrqWatchOptions {
  irq: WatchedIrq;
  /** Milliseconds between two printed samples. */
  intervalMs: number;
  /** Stop after this many samples (undefined: until the signal). */
  samples: number | undefined;
  json: boolean;
  /** Aborted on Ctrl-C: the watch prints what it counted since the last sample and cleans up. */
  signal: AbortSignal | undefined;
}

const PCI_COMMAND = 0x04;
const CMD_BUS_MASTER = 1 << 2;
const CMD_INTX_DISABLE = 1 << 10;
const INDEX: Record<Exclude<WatchedIrq, 'auto'>, number> = {
  intx: VFIO_PCI_INTX_IRQ_INDEX,
  msi: VFIO_PCI_MSI_IRQ_INDEX,
  msix: VFIO_PCI_MSIX_IRQ_INDEX,
};

/** One sample: what `--json` prints per line (schema `irqs-watch`). */
export interface IrqSample {
  bdf: string;
  irq: string;
  index: number;
  sample: number;
  elapsedMs: number;
  counts: number[];
  totals: number[];
  stop: WatchStop | null;
}

/** Watch `bdf`'s interrupts until the sample count, the signal or a REQ; prints as it goes. */
export async function watchIrqs(
  bdf: string,
  io: CliIo,
  opts: IrqWatchOptions,
  sysfs: SysfsOptions = {},
  backend: VfioBackendChoice = 'auto',
): Promise<WatchStop> {
  using v = openVfioDevice(bdf, sysfs, backend);
  const dev = v.device;
  const index = pickIndex(bdf, opts.irq, (i) => dev.irqInfo(i).count);
  const name = IRQ_NAMES[index]!;
  const vectors = dev.irqInfo(index).count;

  // A device signals MSI and MSI-X by a memory write, which it makes only as a bus master; INTx
  // needs the disable bit clear. The command register is put back when the watch ends.
  const command = dev.read(VFIO_PCI_CONFIG_REGION_INDEX, PCI_COMMAND, 2) as number;
  const wanted = index === VFIO_PCI_INTX_IRQ_INDEX ? command & ~CMD_INTX_DISABLE : command | CMD_BUS_MASTER;

  const counts = new Array<number>(vectors).fill(0);
  const totals = new Array<number>(vectors).fill(0);
  const irqs: DeviceIrq[] = [];
  let failure: unknown = null;
  let finish: (why: WatchStop) => void = () => undefined;
  const done = new Promise<WatchStop>((resolve) => (finish = resolve));
  const fail = (e: unknown): void => {
    failure ??= e;
    finish('signal');
  };

  let timer: NodeJS.Timeout | undefined;
  const onAbort = (): void => finish('signal');
  try {
    if (wanted !== command) dev.write(VFIO_PCI_CONFIG_REGION_INDEX, PCI_COMMAND, 2, wanted);
    const main: DeviceIrq = dev.enableIrq(index, { vectors });
    irqs.push(main);
    main.on('error', (e) => fail(e));
    main.on('interrupt', (vec, n) => {
      counts[vec]! += n;
      totals[vec]! += n;
      // INTx stays masked after each interrupt until unmasked. A line that nobody acknowledges
      // stays asserted and is counted again at each unmask: that is what a level interrupt does.
      if (index === VFIO_PCI_INTX_IRQ_INDEX) {
        try {
          main.unmask(0);
        } catch (e) {
          fail(e);
        }
      }
    });
    if (dev.irqInfo(VFIO_PCI_REQ_IRQ_INDEX).count > 0) {
      const req = dev.enableIrq(VFIO_PCI_REQ_IRQ_INDEX);
      irqs.push(req);
      req.on('error', (e) => fail(e));
      req.on('interrupt', () => finish('released'));
    }

    io.err(
      `watching ${name} of ${bdf}: ${vectors} vector${vectors === 1 ? '' : 's'}, every ${opts.intervalMs} ms` +
        (opts.samples !== undefined ? `, ${opts.samples} sample${opts.samples === 1 ? '' : 's'}` : '') +
        ' (Ctrl-C to stop)\n',
    );
    if (!opts.json) io.out(header(name, vectors));

    const start = Date.now();
    let sample = 0;
    const emit = (stop: WatchStop | null): void => {
      sample++;
      const s: IrqSample = {
        bdf,
        irq: name,
        index,
        sample,
        elapsedMs: Date.now() - start,
        counts: [...counts],
        totals: [...totals],
        stop,
      };
      counts.fill(0);
      io.out(opts.json ? JSON.stringify({ command: 'irqs', version: SCHEMA_VERSION, ...s }) + '\n' : row(s));
    };
    timer = setInterval(() => {
      if (opts.samples !== undefined && sample + 1 >= opts.samples) {
        finish('samples');
        return;
      }
      emit(null);
    }, opts.intervalMs);
    if (opts.signal?.aborted) finish('signal');
    opts.signal?.addEventListener('abort', onAbort, { once: true });

    const why = await done;
    if (failure !== null) throw failure;
    emit(why);
    if (!opts.json) io.out(`${'total'.padStart(8)}${totals.map((t) => String(t).padStart(COL)).join('')}\n`);
    if (why === 'released') io.err(`the kernel asked for ${bdf} back (REQ): released it\n`);
    return why;
  } finally {
    clearInterval(timer);
    opts.signal?.removeEventListener('abort', onAbort);
    for (const q of irqs.reverse()) q.close();
    // Best effort: the device fd closes next, and vfio-pci resets the device on release anyway.
    if (!dev.closed && wanted !== command) {
      try {
        dev.write(VFIO_PCI_CONFIG_REGION_INDEX, PCI_COMMAND, 2, command);
      } catch {
        // A device that vanished or refused the write is released just the same.
      }
    }
  }
}

const COL = 10;

function header(name: string, vectors: number): string {
  let s = 'time'.padStart(8);
  for (let v = 0; v < vectors; v++) s += `${name}/${v}`.padStart(COL);
  return s + '\n';
}

function row(s: IrqSample): string {
  return `${(s.elapsedMs / 1000).toFixed(1).padStart(6)} s${s.counts.map((c) => String(c).padStart(COL)).join('')}\n`;
}

/** The IRQ index to watch; `count(i)` is the number of vectors of index i. */
export function pickIndex(bdf: string, irq: WatchedIrq, count: (index: number) => number): number {
  if (irq !== 'auto') {
    const i = INDEX[irq];
    if (count(i) > 0) return i;
    throw new VfioError({
      message: `${bdf} has no ${irq} interrupt`,
      code: 'ENOIRQ',
      op: 'VFIO_DEVICE_GET_IRQ_INFO',
      bdf,
      hint: `\`vfio-bridge irqs ${bdf}\` lists the interrupts it has; --irq auto picks one of them`,
    });
  }
  for (const i of [VFIO_PCI_MSIX_IRQ_INDEX, VFIO_PCI_MSI_IRQ_INDEX, VFIO_PCI_INTX_IRQ_INDEX]) {
    if (count(i) > 0) return i;
  }
  throw new VfioError({
    message: `${bdf} has no INTx, MSI or MSI-X interrupt to watch`,
    code: 'ENOIRQ',
    op: 'VFIO_DEVICE_GET_IRQ_INFO',
    bdf,
    hint: 'the device signals nothing through VFIO; `vfio-bridge info` shows what it has',
  });
}
