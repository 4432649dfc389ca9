/**
 * PcMachine's side of the vCPU loop: what a VcpuSet run's end means for a PC, and the exit counts
 * that span boots (each boot has its own vCPU threads and counters).
 */
import type { ExitRouting, RoutedAccess, VcpuSet, VcpuSetEnd, Vm } from '../kvm';
import type { VfioPciDevice } from '../pci';
import type { Machine } from './machine';
import type { PcExit, PcResources } from './pc-options';

/** pcExitOf: a run's end as a PC sees it (a triple fault or a system event is a reset). */
export function pcExitOf(end: VcpuSetEnd): PcExit {
  switch (end.reason) {
    case 'stopped':
    case 'interrupted':
      return { reason: 'stopped' };
    case 'timeout':
      return { reason: 'timeout' };
    case 'error':
      return { reason: 'error', error: end.error };
    case 'guest-exit':
      if (end.exit.kind === 'shutdown') return { reason: 'reset', by: 'triple-fault' };
      if (end.exit.kind === 'system-event') return { reason: 'reset', by: 'system-event' };
      return { reason: 'error', exit: end.exit };
  }
}

/** PcMachine.resources: what the boot's VM and the machine hold now. */
export function resourcesOf(
  vm: Vm | undefined,
  machine: Machine,
  devices: readonly VfioPciDevice[],
): PcResources {
  const container = machine.container;
  return {
    memorySlots: vm?.slots.used ?? 0,
    irqfds: vm?.assignments.filter((a) => a.kind === 'irqfd').length ?? 0,
    ioeventfds: vm?.assignments.filter((a) => a.kind === 'ioeventfd').length ?? 0,
    dmaMappings: container?.closed === false ? container.dmaMappings().length : 0,
    openDevices: devices.filter((d) => !d.closed).length,
    vcpus: vm?.vcpus.length ?? 0,
  };
}

/** PcMachine.exits: served in JavaScript, served on the vCPU threads, and failed there. */
export interface PcExitCounts {
  /** MMIO exits served in JavaScript, over every boot. */
  readonly mmio: number;
  /** Port exits served in JavaScript, over every boot. */
  readonly io: number;
  /** MMIO exits the vCPU threads served from the exit table, over every boot. */
  readonly nativeMmio: number;
  /** Port exits the vCPU threads served from the exit table, over every boot. */
  readonly nativeIo: number;
  /** Thread-served accesses that failed (each also an `access` report). */
  readonly faults: number;
}

/** The exit counts across boots, and the routing that counts the exits served in JavaScript. */
export class ExitCounter {
  #js = { mmio: 0, io: 0 };
  #done = { mmio: 0, pio: 0, faults: 0, unserved: 0 };

  /** Routing onto the machine's buses that counts each exit as it is served, then calls `trace`. */
  routing(machine: Machine, trace: ((a: RoutedAccess) => void) | undefined): ExitRouting {
    const js = this.#js;
    return {
      memory: machine.bus.memory,
      io: machine.bus.io,
      onAccess: (a) => {
        if (a.space === 'io') js.io++;
        else js.mmio++;
        trace?.(a);
      },
    };
  }

  /** Fold in a boot's final counts, once its threads stopped. */
  add(set: VcpuSet): void {
    const s = set.stats;
    this.#done.mmio += s.mmio;
    this.#done.pio += s.pio;
    this.#done.faults += s.faults;
    this.#done.unserved += set.unservedExits;
  }

  /** The counts so far, with `live` (the running boot's set, if any) added. */
  counts(live: VcpuSet | null): PcExitCounts {
    const now = live?.stats;
    const d = this.#done;
    return {
      ...this.#js,
      nativeMmio: d.mmio + (now?.mmio ?? 0),
      nativeIo: d.pio + (now?.pio ?? 0),
      faults: d.faults + (now?.faults ?? 0),
    };
  }

  unserved(live: VcpuSet | null): number {
    return this.#done.unserved + (live?.unservedExits ?? 0);
  }
}
