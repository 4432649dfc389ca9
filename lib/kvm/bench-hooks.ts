/**
 * Hooks for the benchmarks only; not part of the public API (lib/kvm/index.ts does not export
 * them).
 */
import { native } from '../native';
import { decodeExit, EXIT_RECORD, type VcpuExit } from './exit';
import type { Vcpu } from './vcpu';

/**
 * runNativeConstant: the thinnest native exit handler, on the calling thread: every MMIO read is
 * answered with `value` in the addon, without JavaScript, until any other exit. Returns the MMIO
 * exits served and the exit that ended it.
 */
export function runNativeConstant(
  vcpu: Vcpu,
  value: number,
  budgetMs = 1000,
): { served: number; exit: VcpuExit } {
  const served = native.kvmRunNative(vcpu._handle, value >>> 0, Math.round(budgetMs * 1e6));
  const dv = vcpu._exitRecord;
  return { served, exit: decodeExit(dv, dv.getUint32(EXIT_RECORD.reason, true)) };
}
