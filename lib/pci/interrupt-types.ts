/**
 * The shapes around a passed-through device's interrupts: the modes, the listener and change records
 * a VMM subscribes to, what an INTx router hands over, and the host side lib/vfio's DeviceIrq gives
 * (as interfaces, so fakes can stand in).
 */
import type { EventFdLike, IrqInfo, IrqOptions } from '../vfio';
import type { VfioDeviceLike } from './types';

/** How the guest has the device interrupt: the pin, MSI, MSI-X, or not at all. */
export type PciIrqType = 'intx' | 'msi' | 'msix';

/**
 * Called once per host wake-up that the guest can take: `count` interrupts coalesced on `vector` of
 * `type`. For MSI and MSI-X the message to inject is {@link PciInterrupts.message}; for INTx the
 * line stays asserted (the kernel masks it) until {@link PciInterrupts.eoi}. Positional arguments, so
 * nothing is allocated per interrupt.
 */
export type PciInterruptListener = (vector: number, count: number, type: PciIrqType) => void;

/** What the guest changed in its interrupt setup, for a VMM that routes interrupts (e.g. KVM GSIs). */
export type PciIrqChange =
  | {
      /** The device switched interrupt mode (the host side was re-enabled). */
      readonly kind: 'mode';
      /** The mode now in force; `none` after a disable or a reset. */
      readonly mode: PciIrqType | 'none';
      /**
       * Host vectors enabled for it: 1 for INTx, the enabled count for MSI, up to the highest
       * unmasked entry for MSI-X (grown later without a new `mode` change); 0 for `none`.
       */
      readonly vectors: number;
    }
  | {
      /** The guest (re)programmed, masked or unmasked one MSI or MSI-X vector. */
      readonly kind: 'vector';
      /** Which capability the vector belongs to. */
      readonly type: 'msi' | 'msix';
      /** The vector's number, from 0. */
      readonly vector: number;
      /** The message address the guest programmed (for x86, a 0xFEExxxxx LAPIC address). */
      readonly address: bigint;
      /** The message data; for MSI with the vector number in its low bits. */
      readonly data: number;
      /** The vector's mask bit (MSI without per-vector masking: always false). */
      readonly masked: boolean;
    };

/**
 * What a router that takes INTx outside JavaScript (KVM's resample irqfd) gives
 * {@link PciInterrupts.routeIntx}.
 */
export interface IntxRouteRequest {
  /**
   * The INTx unmask eventfd handed to VFIO (VFIO_IRQ_SET_ACTION_UNMASK): KVM signals it when the
   * guest EOIs the line. It stays the router's; it must stay open while the request holds.
   */
  readonly resample: EventFdLike;
}

/** The host side of one IRQ index, as lib/vfio's DeviceIrq provides it. */
export interface HostIrq {
  /** The trigger eventfd of each vector (-1 where none), e.g. for KVM_IRQFD. */
  readonly fds: number[];
  /** How many vectors are enabled on the device (the length of `fds`). */
  readonly vectors: number;
  /** Whether the IRQ index is enabled on the device. */
  readonly enabled: boolean;
  /** See {@link DeviceIrq.resize}. */
  resize(vectors: number): void;
  /** See {@link DeviceIrq.setVector}. */
  setVector(vector: number, eventfd: EventFdLike | null | undefined): void;
  /** See {@link DeviceIrq.unmask}. */
  unmask(vector?: number): void;
  /** See {@link DeviceIrq.disable}. */
  disable(): void;
  /** See {@link DeviceIrq.enable}. */
  enable(): void;
  /** See {@link DeviceIrq.ref}. */
  ref(): unknown;
  /** See {@link DeviceIrq.unref}. */
  unref(): unknown;
  /** See {@link DeviceIrq.close}. */
  close(): void;
  /** Its `interrupt` event: watching starts with the first listener (see {@link DeviceIrq}). */
  on(event: 'interrupt', listener: (vector: number, count: number) => void): unknown;
}

/** A VFIO device that can wire interrupts: lib/vfio's Device. Fakes implement it for unit tests. */
export interface IrqCapableDevice extends VfioDeviceLike {
  /** See {@link Device.irqInfo}. */
  irqInfo(index: number): IrqInfo;
  /** See {@link Device.enableIrq}. */
  enableIrq(index: number, opts: IrqOptions): HostIrq;
  /** See {@link Device.queueIrqChanges} (lib/vfio's Device has it; a fake may not). */
  queueIrqChanges?(onError: (error: unknown) => void): void;
  /** See {@link Device.irqChanges}. */
  readonly irqChanges?: Promise<void> | null;
}

/** True when `d` can wire interrupts. */
export function isIrqCapable(d: VfioDeviceLike): d is IrqCapableDevice {
  const x = d as Partial<IrqCapableDevice>;
  return typeof x.enableIrq === 'function' && typeof x.irqInfo === 'function';
}
