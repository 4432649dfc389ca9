/**
 * PcMachine's reports, read off the machine's guest-error sink: the counts by {@link PcReport} kind
 * come from the sink's counts, and the deprecated `report` event is each guest error turned back
 * into the PcReport it used to be. What the machine itself absorbs (a refused board interrupt
 * line, a device without reset, a failed thread-served access) goes to the sink from here.
 */
import type { EventEmitter } from 'node:events';

import { forwardGuestErrors, type GuestError, type GuestErrorSink } from '../base/guest-error';
import type { DmaCommitError, DmaErrorEvent, DmaSkip } from '../dma';
import type { UnassignedAccess } from '../memory';
import type { DeviceErrorEvent } from '../pci';
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

/** The sink kinds of the machine's own reports. */
const OWN: Record<'irq-line' | 'reset' | 'access', { source: 'kvm' | 'vmm'; kind: string }> = {
  'irq-line': { source: 'kvm', kind: 'irq-line-failed' },
  reset: { source: 'vmm', kind: 'reset-missing' },
  access: { source: 'vmm', kind: 'thread-access-failed' },
};

/** The PcReport kind a guest error is counted under, or null for none (a listener that threw). */
function reportKind(source: string, kind: string): PcReport['kind'] | null {
  if (kind === 'listener-threw') return null;
  switch (source) {
    case 'pci':
      return 'device';
    case 'memory':
      return 'unassigned';
    case 'irq':
      return 'interrupt';
    case 'dma':
      return 'dma';
    default:
      for (const [k, v] of Object.entries(OWN))
        if (v.source === source && v.kind === kind) return k as PcReport['kind'];
      return null;
  }
}

export class PcReports {
  readonly #sink: GuestErrorSink;
  readonly #ioSpace: string;

  /**
   * Counts come from `sink`; `target`'s `report` listeners hear each guest error as a PcReport
   * (subscribed to the sink only while there are any, so that the sink logs otherwise). `ioSpace`
   * names the bus's I/O space, to tell port accesses from memory ones.
   */
  constructor(target: EventEmitter, sink: GuestErrorSink, ioSpace: string) {
    this.#sink = sink;
    this.#ioSpace = ioSpace;
    forwardGuestErrors(target, sink, { event: 'report', map: (e) => this.#toReport(e), source: 'vmm' });
  }

  /** Reports so far, by kind. */
  get counts(): Readonly<Record<PcReport['kind'], number>> {
    const out = Object.fromEntries(KINDS.map((k) => [k, 0])) as Record<PcReport['kind'], number>;
    for (const [key, n] of Object.entries(this.#sink.counts)) {
      const slash = key.indexOf('/');
      const k = reportKind(key.slice(0, slash), key.slice(slash + 1));
      if (k !== null) out[k] += n;
    }
    return out;
  }

  /** One of the machine's own reports (`irq-line`, `reset`, `access`), to the sink. */
  report(r: PcReport): void {
    switch (r.kind) {
      case 'irq-line':
        this.#sink.report({
          ...OWN['irq-line'],
          where: `IRQ ${r.irq}`,
          action: 'ignored',
          message: `KVM refused to set IRQ line ${r.irq}: ${r.error.message.split('\n')[0]}`,
          hint: 'a board interrupt (the UART) the guest does not get',
          error: r.error,
          detail: r,
        });
        return;
      case 'reset':
        this.#sink.report({
          ...OWN.reset,
          device: r.bdf,
          action: 'state-only',
          message: `no reset method at the reboot: only its guest-visible state was reset`,
          hint: 'the device offers neither FLR nor a PM or bus reset here',
          error: r.error,
          detail: r,
        });
        return;
      case 'access':
        this.#sink.report({
          ...OWN.access,
          where: r.space,
          address: r.address,
          width: r.size,
          write: r.isWrite,
          action: r.isWrite ? 'dropped' : 'read-all-ones',
          message: `vCPU ${r.vcpu}: ${r.space} ${r.isWrite ? 'write' : 'read'} at 0x${r.address.toString(16)} size ${r.size} failed (${r.code})`,
          hint:
            r.code === 'SIGBUS'
              ? 'a BAR vfio-pci revoked (decode off, a reset in progress)'
              : 'the device fd refused it',
          detail: r,
        });
        return;
      default:
        throw new TypeError(`PcReports.report: ${r.kind} reports come from the sink`);
    }
  }

  #toReport(e: GuestError): PcReport | null {
    const k = reportKind(e.source, e.kind);
    switch (k) {
      case 'device':
        return { kind: 'device', event: e.detail as DeviceErrorEvent };
      case 'unassigned':
        return {
          kind: 'unassigned',
          space: e.where === this.#ioSpace ? 'io' : 'memory',
          access: e.detail as UnassignedAccess,
        };
      case 'interrupt':
        return { kind: 'interrupt', bdf: e.device ?? '', key: e.where ?? '', error: e.error as Error };
      case 'dma':
        if (e.kind === 'dma-skipped') return { kind: 'dma', what: 'skip', skip: e.detail as DmaSkip };
        if (e.kind === 'dma-commit-failed')
          return { kind: 'dma', what: 'fatal', error: e.detail as DmaCommitError };
        return { kind: 'dma', what: 'error', error: e.detail as DmaErrorEvent };
      case 'irq-line':
      case 'reset':
      case 'access':
        return e.detail as PcReport;
      default:
        return null;
    }
  }
}
