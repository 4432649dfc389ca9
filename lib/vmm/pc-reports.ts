/**
 * What PcMachine absorbed on the guest's behalf, counted by kind and handed to `onReport`; and
 * where the reports come from: the address spaces' unassigned accesses, the devices' errors and
 * the DMA listener's skips and failures.
 */
import type { Machine } from './machine';
import type { VfioPciDevice } from '../pci';
import type { PcReport } from './pc-options';

/** The report kinds, each counted from zero. */
const KINDS: readonly PcReport['kind'][] = [
  'device',
  'unassigned',
  'interrupt',
  'irq-line',
  'reset',
  'dma',
  'access',
];

export class PcReports {
  readonly #counts = new Map<PcReport['kind'], number>();
  readonly #skips = new Set<string>();
  readonly #onReport: ((r: PcReport) => void) | undefined;

  constructor(onReport: ((r: PcReport) => void) | undefined) {
    this.#onReport = onReport;
  }

  /** Reports so far, by kind. */
  get counts(): Readonly<Record<PcReport['kind'], number>> {
    return Object.fromEntries(KINDS.map((k) => [k, this.#counts.get(k) ?? 0])) as Record<
      PcReport['kind'],
      number
    >;
  }

  report(r: PcReport): void {
    this.#counts.set(r.kind, (this.#counts.get(r.kind) ?? 0) + 1);
    this.#onReport?.(r);
  }

  /** Report the machine's unassigned accesses. */
  watchBus(machine: Machine): void {
    for (const space of ['memory', 'io'] as const) {
      machine.bus[space].on('unassigned', (access) => this.report({ kind: 'unassigned', space, access }));
    }
  }

  /** Report a device's errors. */
  watchDevice(dev: VfioPciDevice): void {
    dev.on('device-error', (event) => this.report({ kind: 'device', event }));
  }

  /**
   * Report the DMA listener's skips and failures. A BAR section the IOMMU cannot map (a sub-page
   * MSI-X split, say) is skipped, as QEMU skips it: peer-to-peer DMA to it fails, nothing else
   * does. The listener re-plans (and skips again) on every commit that touches the section: each
   * distinct skip is reported once.
   */
  watchDma(machine: Machine): void {
    machine.dma?.on('warning', (skip) => {
      const key = `${skip.region} ${skip.start} ${skip.size} ${skip.reason}`;
      if (this.#skips.has(key)) return;
      this.#skips.add(key);
      this.report({ kind: 'dma', what: 'skip', skip });
    });
    machine.dma?.on('dma-error', (error) => this.report({ kind: 'dma', what: 'error', error }));
    machine.dma?.on('fatal', (error) => this.report({ kind: 'dma', what: 'fatal', error }));
  }
}
