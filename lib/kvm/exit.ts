import { onNativeLoad, type NativeBinding } from '../native';
import { KVM_EXIT } from './uapi';

/**
 * Where each field of the exit record lies, as the addon lays it out. Set when the addon loads,
 * which every vCPU, and so every exit, comes after.
 */
export let EXIT_RECORD!: NativeBinding['kvmExitLayout'];
onNativeLoad((binding) => {
  EXIT_RECORD = binding.kvmExitLayout;
});

/**
 * One exit of KVM_RUN, typed as rust-vmm's VcpuExit:
 * - `mmio` / `io`: an access to emulate; `size` is the guest's access size in bytes and `data` the
 *   value written (for writes). A read is answered with `Vcpu.complete` before the next run.
 * - `hlt`, `shutdown` (triple fault), `interrupted` (the run's time budget ran out, or a signal),
 *   `fail-entry`, `internal-error`, `system-event` and `unknown` carry only `reason`/`detail`.
 */
export type VcpuExit =
  | AccessExit
  | {
      /** `hlt`: the vCPU halted; `shutdown`: a triple fault; `interrupted`: the time budget or a signal. */
      kind: 'hlt' | 'shutdown' | 'interrupted';
    }
  | {
      /** An exit that carries one number from kvm_run in `detail`. */
      kind: 'fail-entry' | 'internal-error' | 'system-event';
      /**
       * The hardware's entry failure reason (`fail-entry`), KVM's suberror (`internal-error`), or
       * the event type (`system-event`, KVM_SYSTEM_EVENT_*: 1 shutdown, 2 reset, 3 crash, ...).
       */
      detail: bigint;
    }
  | {
      /** An exit reason lib/kvm does not decode. */
      kind: 'unknown';
      /** kvm_run.exit_reason as KVM gave it (see {@link KVM_EXIT}). */
      reason: number;
    };

/** An MMIO or port access exit. */
export type AccessExit =
  | {
      /** An access to guest-physical memory that no memory slot serves. */
      kind: 'mmio';
      /** Guest-physical address of the access. */
      address: number;
      /** Length in bytes, 1 to 8 (odd lengths when KVM split an access at a page boundary). */
      size: number;
      /** True for a store, false for a load (answered with `Vcpu.complete`). */
      isWrite: boolean;
      /** The value stored, little-endian in the low `size` bytes; 0n for a load. */
      data: bigint;
    }
  | {
      /** A port access (IN/OUT, or a string INS/OUTS). */
      kind: 'io';
      /** The I/O port, 0 to 0xffff. */
      port: number;
      /** Width of each transfer in bytes: 1, 2 or 4. */
      size: number;
      /** True for OUT, false for IN. */
      isWrite: boolean;
      /** Transfers in the exit: 1, or more for a string instruction with REP. */
      count: number;
      /** The first value written by an OUT; 0n for IN. */
      data: bigint;
    };

/** decodeExit: the exit in the record `dv`, whose kvm_run exit reason is `reason`. */
export function decodeExit(dv: DataView, reason: number): VcpuExit {
  const R = EXIT_RECORD;
  switch (reason) {
    case KVM_EXIT.MMIO:
    case KVM_EXIT.IO: {
      const isWrite = dv.getUint8(R.isWrite) !== 0;
      const address = Number(dv.getBigUint64(R.address, true));
      const size = dv.getUint32(R.size, true);
      const data = isWrite ? dv.getBigUint64(R.data, true) : 0n;
      return reason === KVM_EXIT.MMIO
        ? { kind: 'mmio', address, size, isWrite, data }
        : { kind: 'io', port: address, size, isWrite, count: dv.getUint32(R.count, true), data };
    }
    case KVM_EXIT.HLT:
      return { kind: 'hlt' };
    case KVM_EXIT.SHUTDOWN:
      return { kind: 'shutdown' };
    case KVM_EXIT.INTR:
      return { kind: 'interrupted' };
    case KVM_EXIT.FAIL_ENTRY:
      return { kind: 'fail-entry', detail: dv.getBigUint64(R.detail, true) };
    case KVM_EXIT.INTERNAL_ERROR:
      return { kind: 'internal-error', detail: dv.getBigUint64(R.detail, true) };
    case KVM_EXIT.SYSTEM_EVENT:
      return { kind: 'system-event', detail: dv.getBigUint64(R.detail, true) };
    default:
      return { kind: 'unknown', reason };
  }
}

/** The value a write exit carries, as a number below 8 bytes and a bigint at 8. */
export function writtenValue(dv: DataView, size: number): number | bigint {
  const at = EXIT_RECORD.data;
  if (size === 8) return dv.getBigUint64(at, true);
  if (size === 1) return dv.getUint8(at);
  if (size === 2) return dv.getUint16(at, true);
  if (size === 4) return dv.getUint32(at, true);
  let v = 0;
  for (let i = size - 1; i >= 0; i--) v = v * 256 + dv.getUint8(at + i);
  return v;
}

/** Write the answer to a read exit into the record (negative: all-ones). */
export function writeAnswer(dv: DataView, value: number | bigint): void {
  const at = EXIT_RECORD.data;
  if (typeof value === 'bigint') dv.setBigUint64(at, BigInt.asUintN(64, value), true);
  else if (value < 0) dv.setBigUint64(at, 0xffff_ffff_ffff_ffffn, true);
  else {
    dv.setUint32(at, value >>> 0, true);
    dv.setUint32(at + 4, Math.floor(value / 2 ** 32) >>> 0, true);
  }
}
