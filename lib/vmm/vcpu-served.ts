/**
 * Registers of an emulated region that the vCPU threads may serve themselves for as long as the
 * device model's state allows: a constant a register reads as, or a byte sink its writes go into.
 * The model says which, relative to its region, and says when that changes; the exit-table
 * listener (exit-table-listener.ts) publishes them where the flat view puts the region, and
 * publishes again, before the access that changed them is answered, whenever they change.
 */
import type { ByteSink } from '../kvm';
import type { MemoryRegion } from '../memory';

/** One register range of a region that vCPU threads may serve, from the region's start. */
export type VcpuServedEntry =
  | { offset: number; size: number; kind: 'const'; value: number }
  | { offset: number; size: number; kind: 'sink'; sink: ByteSink };

/** What a device model lets the vCPU threads serve of its region. */
export interface VcpuServedRegisters {
  /** The ranges as the model's state allows now, sorted by offset and disjoint. */
  entries(): readonly VcpuServedEntry[];
  /** Calls `fn` each time {@link VcpuServedRegisters.entries} changes; returns what stops that. */
  watch(fn: () => void): () => void;
}

const served = new WeakMap<MemoryRegion, VcpuServedRegisters>();

/** Say that `region`'s registers may be served on the vCPU threads as `registers` allow. */
export function serveOnVcpuThreads(region: MemoryRegion, registers: VcpuServedRegisters): void {
  served.set(region, registers);
}

/** What vCPU threads may serve of `region`, if its model said so. */
export function vcpuServedOf(region: MemoryRegion): VcpuServedRegisters | undefined {
  return served.get(region);
}
