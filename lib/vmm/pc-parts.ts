/**
 * The parts a PcMachine is assembled from before any device: the KVM fd with the capabilities the
 * machine relies on, and guest RAM below the PCI hole with the bus; and how a half-built machine is
 * given back.
 */
import { Kvm } from '../kvm';
import { Machine, type MachineOptions } from './machine';
import { GiB, PCI_HOLE, type PcMachineOptions } from './pc-options';

/** The KVM a PcMachine needs, with the capabilities it relies on checked. */
export function openKvm(opts: PcMachineOptions): Kvm {
  return Kvm.open({
    ...(opts.kvmPath !== undefined ? { path: opts.kvmPath } : {}),
    require: ['IRQCHIP', 'IRQ_ROUTING', 'IRQFD', 'IRQFD_RESAMPLE', 'SIGNAL_MSI', 'USER_MEMORY'],
  });
}

/** Guest RAM below the PCI hole at 3 GiB, and the bus. */
export function createMachine(opts: PcMachineOptions, ramSize: number): Machine {
  return Machine.create(machineOptions(opts, ramSize));
}

/** {@link createMachine} with turns of the event loop between its steps. */
export function createMachineAsync(opts: PcMachineOptions, ramSize: number): Promise<Machine> {
  return Machine.createAsync(machineOptions(opts, ramSize));
}

function machineOptions(opts: PcMachineOptions, ramSize: number): MachineOptions {
  return {
    ramSize,
    pciHole: { start: PCI_HOLE, size: GiB },
    ...(opts.guestErrors !== undefined ? { guestErrors: opts.guestErrors } : {}),
    hugepages: opts.hugepages ?? false,
    ...(opts.backend !== undefined ? { backend: opts.backend } : {}),
  };
}

/** Undo a create or open that failed halfway: what was built, then the KVM fd. */
export function abandon(built: { close(): void } | undefined, kvm: Kvm): void {
  try {
    built?.close();
  } finally {
    kvm.close();
  }
}
