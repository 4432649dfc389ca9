/**
 * BAR mapping, the generic PCI side of a BAR (QEMU's pci_register_bar and pci_update_mappings): the
 * BAR and ROM registers are emulated so the guest's addresses never reach the device, and every BAR
 * is placed in the PCI space where its register and the command register say.
 */
import { transaction } from '../memory';
import { barAddress } from './bar';
import type { SystemAddressSpaces } from './system-address-spaces';
import type { EmulatedConfig } from './config';
import { PCI_BASE_ADDRESS_0, PCI_ROM_ADDRESS } from './constants';
import { BAR_PRIORITY, type BarState, subPageUpdate } from './region';
import { ROM_SLOT } from './rom';

/**
 * emulateBarRegisters: the six BAR registers and the ROM register as the guest reads them: the type
 * bits, and an address the guest may write within the BAR's size (sizing reads back the mask). @internal
 */
export function emulateBarRegisters(
  emu: EmulatedConfig,
  bars: readonly (BarState | null)[],
  rom: BarState | null,
): void {
  emu.emulate(PCI_BASE_ADDRESS_0, 24, 0n, (1n << 192n) - 1n, 0n);
  for (const bar of bars) {
    if (!bar) continue;
    const off = PCI_BASE_ADDRESS_0 + 4 * bar.index;
    const mask = ~(BigInt(bar.size) - 1n);
    if (bar.type === 'mem64') {
      emu.emulate(off, 8, BigInt(bar.typeBits), (1n << 64n) - 1n, mask & ((1n << 64n) - 1n));
    } else {
      emu.emulate(off, 4, BigInt(bar.typeBits), 0xffff_ffffn, mask & 0xffff_ffffn);
    }
  }
  const romMask = rom ? (~(BigInt(rom.size) - 1n) & 0xffff_ffffn) | 1n : 0n;
  emu.emulate(PCI_ROM_ADDRESS, 4, 0n, 0xffff_ffffn, romMask);
}

/**
 * updateMappings: places every BAR and the ROM where the emulated registers and `command` say, in
 * one transaction. `command` is the command register in force (0 outside D0: nothing decodes). @internal
 */
export function updateMappings(
  bus: SystemAddressSpaces,
  emu: EmulatedConfig,
  bars: readonly (BarState | null)[],
  rom: BarState | null,
  command: number,
): void {
  transaction(() => {
    for (const bar of [...bars, rom]) {
      if (!bar) continue;
      const isRom = bar.index === ROM_SLOT;
      const space = bar.type === 'io' ? bus.io : bus.memory;
      const reg = isRom ? PCI_ROM_ADDRESS : PCI_BASE_ADDRESS_0 + 4 * bar.index;
      const addr = barAddress({
        type: bar.type,
        rom: isRom,
        size: bar.size,
        lo: emu.long(reg),
        hi: bar.type === 'mem64' ? emu.long(reg + 4) : 0,
        command,
        limit: space.root.size,
      });
      if (addr === bar.address) continue;
      if (bar.address !== null) space.root.removeSubregion(bar.base);
      bar.address = addr;
      if (addr !== null) space.root.addSubregion(bar.base, addr, BAR_PRIORITY);
      if (bar.regionSize > 0 && bar.regionSize < bus.pageSize && !isRom) subPageUpdate(bar, bus);
    }
  });
}

/** unmapBars: takes every placed BAR and the ROM off the bus, in one transaction. @internal */
export function unmapBars(
  bus: SystemAddressSpaces,
  bars: readonly (BarState | null)[],
  rom: BarState | null,
): void {
  transaction(() => {
    for (const bar of [...bars, rom]) {
      if (!bar || bar.address === null) continue;
      (bar.type === 'io' ? bus.io : bus.memory).root.removeSubregion(bar.base);
      bar.address = null;
    }
  });
}
