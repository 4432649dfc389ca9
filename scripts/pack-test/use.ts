// TypeScript against the installed declarations: each entry point resolves to real types (every
// expected error below becomes an unused directive, and fails, if anything resolves to `any`).
import { MemoryRegion as RootRegion } from 'vfio-bridge';
import { AddressSpace, MemoryRegion, type FlatRange } from 'vfio-bridge/memory';
import type { Mapping } from 'vfio-bridge/vfio';
import type { Vm } from 'vfio-bridge/kvm';
import type { GuestRam } from 'vfio-bridge/dma';
import type { PcMachine } from 'vfio-bridge/vmm';
import type { VfioPciDevice } from 'vfio-bridge/pci';
import { EXIT_OK, type CliIo } from 'vfio-bridge/cli';
import type { TestDevice } from 'vfio-bridge/testing';

const region: MemoryRegion = RootRegion.ram('ram', 0x10, new ArrayBuffer(0x10));
const root = MemoryRegion.container('root', 0x1000);
root.addSubregion(region, 0);
const as = new AddressSpace('memory', root);
const ranges: readonly FlatRange[] = as.flatView.ranges;
// Compiled, never run.
export function typeErrors(m: Mapping): void {
  // @ts-expect-error: a size is a number
  MemoryRegion.ram('bad', 'sixteen');
  // @ts-expect-error: Mapping has no such method
  m.readNothing();
}

export type Used = [Vm, GuestRam, PcMachine, VfioPciDevice, CliIo, TestDevice];
console.log(`pack-test: TypeScript ok (${ranges.length} range, exit ${EXIT_OK})`);
