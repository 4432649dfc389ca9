import {
  BufferMemory,
  MemoryRegion,
  mtreeJson,
  renderMtree,
  transaction,
  type AddressSpace,
} from '../../../lib';
import { closeAll, recordingIo, space } from './helpers';

afterEach(closeAll);

/**
 * The example memory map of QEMU's docs/devel/memory.rst: 4 GiB of RAM split by the lomem/himem
 * aliases around a PCI hole, a VGA window at priority 1 onto the PCI space, whose vga-area holds two
 * 32 KiB banks aliasing the framebuffer.
 */
function workedExample(): { as: AddressSpace; system: MemoryRegion; vgaWindow: MemoryRegion } {
  const system = MemoryRegion.container('system_memory', 2 ** 48);
  const ram = MemoryRegion.ram('ram', 0x1_0000_0000);
  const pci = MemoryRegion.container('pci', 0x1_0000_0000);
  const vram = MemoryRegion.ram('vram', 0x100_0000);
  const vgaArea = MemoryRegion.container('vga-area', 0x20000);
  const vgaMmio = recordingIo('vga-mmio', 0x10000).region;
  const vgaWindow = MemoryRegion.alias('vga-window', pci, 0xa0000, 0x20000);
  transaction(() => {
    vgaArea.addSubregion(MemoryRegion.alias('vga.bank0', vram, 0x10000, 0x8000), 0x0000);
    vgaArea.addSubregion(MemoryRegion.alias('vga.bank1', vram, 0x20000, 0x8000), 0x8000);
    pci.addSubregion(vgaArea, 0xa0000);
    pci.addSubregion(vram, 0xe100_0000);
    pci.addSubregion(vgaMmio, 0xe200_0000);
    system.addSubregion(MemoryRegion.alias('lomem', ram, 0, 0xe000_0000), 0);
    system.addSubregion(MemoryRegion.alias('himem', ram, 0xe000_0000, 0x2000_0000), 0x1_0000_0000);
    system.addSubregion(vgaWindow, 0xa0000, 1);
    system.addSubregion(MemoryRegion.alias('pci-hole', pci, 0xe000_0000, 0x2000_0000), 0xe000_0000);
  });
  return { as: space(system, 'memory'), system, vgaWindow };
}

const TREE = `address-space: memory
  0000000000000000-0000ffffffffffff (prio 0, container): system_memory
    0000000000000000-00000000dfffffff (prio 0, ram): alias lomem @ram 0000000000000000-00000000dfffffff
    00000000000a0000-00000000000bffff (prio 1, container): alias vga-window @pci 00000000000a0000-00000000000bffff
    00000000e0000000-00000000ffffffff (prio 0, container): alias pci-hole @pci 00000000e0000000-00000000ffffffff
    0000000100000000-000000011fffffff (prio 0, ram): alias himem @ram 00000000e0000000-00000000ffffffff

memory-region: ram
  0000000000000000-00000000ffffffff (prio 0, ram): ram

memory-region: pci
  0000000000000000-00000000ffffffff (prio 0, container): pci
    00000000000a0000-00000000000bffff (prio 0, i/o): vga-area
      00000000000a0000-00000000000a7fff (prio 0, ram): alias vga.bank0 @vram 0000000000010000-0000000000017fff
      00000000000a8000-00000000000affff (prio 0, ram): alias vga.bank1 @vram 0000000000020000-0000000000027fff
    00000000e1000000-00000000e1ffffff (prio 0, ram): vram
    00000000e2000000-00000000e200ffff (prio 0, i/o): vga-mmio

memory-region: vram
  00000000e1000000-00000000e1ffffff (prio 0, ram): vram

`;

const FLAT = `FlatView #0
 AS "memory", root: system_memory
 Root memory region: system_memory
  0000000000000000-000000000009ffff (prio 0, ram): ram
  00000000000a0000-00000000000a7fff (prio 0, ram): vram @0000000000010000
  00000000000a8000-00000000000affff (prio 0, ram): vram @0000000000020000
  00000000000b0000-00000000dfffffff (prio 0, ram): ram @00000000000b0000
  00000000e1000000-00000000e1ffffff (prio 0, ram): vram
  00000000e2000000-00000000e200ffff (prio 0, i/o): vga-mmio
  0000000100000000-000000011fffffff (prio 0, ram): ram @00000000e0000000

`;

describe('the memory.rst worked example', () => {
  test('info mtree', () => {
    expect(renderMtree(workedExample().as)).toBe(TREE);
  });

  test('info mtree -f', () => {
    expect(renderMtree(workedExample().as, { flat: true })).toBe(FLAT);
  });

  test('removing the vga window exposes the RAM beneath', () => {
    const { as, system, vgaWindow } = workedExample();
    system.removeSubregion(vgaWindow);
    expect(renderMtree(as, { flat: true }).split('\n').slice(3, 5)).toEqual([
      '  0000000000000000-00000000dfffffff (prio 0, ram): ram',
      '  00000000e1000000-00000000e1ffffff (prio 0, ram): vram',
    ]);
  });

  test('a BAR mapped outside the PCI hole is clipped away', () => {
    const { as } = workedExample();
    const vram = as.flatView.lookup(0xe100_0000)!.region;
    vram.setOffset(0x8000_0000);
    expect(as.flatView.ranges.some((r) => r.region === vram && r.addr >= 0xe000_0000)).toBe(false);
    expect(as.flatView.lookup(0xe100_0000)).toBeUndefined();
  });
});

describe('renderMtree', () => {
  test('types: ram, rom, ramd, i/o, container; readonly ranges print as rom', () => {
    const root = MemoryRegion.container('root', 0x10000);
    const rom = MemoryRegion.ram('bios', 0x1000);
    rom.setReadonly(true);
    const bar = MemoryRegion.ramDevice('0000:00:03.0 BAR 0 mmaps[0]', 0x1000, new BufferMemory(0x1000));
    const box = MemoryRegion.container('box', 0x1000);
    const ro = MemoryRegion.alias('ro-window', bar, 0x800, 0x800);
    ro.setReadonly(true);
    box.addSubregion(recordingIo('msix-table', 0x100).region, 0x10);
    root.addSubregion(rom, 0x0000);
    root.addSubregion(bar, 0x1000, 1);
    root.addSubregion(box, 0x2000, -1);
    root.addSubregion(ro, 0x3000);
    const as = space(root, 'memory');
    expect(renderMtree(as)).toBe(`address-space: memory
  0000000000000000-000000000000ffff (prio 0, container): root
    0000000000000000-0000000000000fff (prio 0, rom): bios
    0000000000001000-0000000000001fff (prio 1, ramd): 0000:00:03.0 BAR 0 mmaps[0]
    0000000000002000-0000000000002fff (prio -1, i/o): box
      0000000000002010-000000000000210f (prio 0, i/o): msix-table
    0000000000003000-00000000000037ff (prio 0, ramd): alias ro-window @0000:00:03.0 BAR 0 mmaps[0] 0000000000000800-0000000000000fff

memory-region: 0000:00:03.0 BAR 0 mmaps[0]
  0000000000001000-0000000000001fff (prio 1, ramd): 0000:00:03.0 BAR 0 mmaps[0]

`);
    expect(renderMtree(as, { flat: true, annotate: (r) => (r.kind === 'ram-device' ? 'direct' : undefined) }))
      .toBe(`FlatView #0
 AS "memory", root: root
 Root memory region: root
  0000000000000000-0000000000000fff (prio 0, rom): bios
  0000000000001000-0000000000001fff (prio 1, ramd): 0000:00:03.0 BAR 0 mmaps[0] direct
  0000000000002010-000000000000210f (prio 0, i/o): msix-table
  0000000000003000-00000000000037ff (prio 1, rom): 0000:00:03.0 BAR 0 mmaps[0] @0000000000000800 direct

`);
  });

  test('same-address siblings print higher priority first; disabled regions only with disabled: true', () => {
    const root = MemoryRegion.container('root', 0x100);
    const off = MemoryRegion.container('off', 0x10);
    off.addSubregion(MemoryRegion.ram('inside', 0x8), 0);
    off.setEnabled(false);
    root.addSubregion(MemoryRegion.ram('low', 0x10), 0x20, 0);
    root.addSubregion(MemoryRegion.ram('high', 0x10), 0x20, 5);
    root.addSubregion(off, 0x10);
    const as = space(root, 'io');
    // QEMU still lists the children of a hidden disabled region.
    expect(renderMtree(as)).toBe(`address-space: io
  0000000000000000-00000000000000ff (prio 0, container): root
      0000000000000010-0000000000000017 (prio 0, ram): inside
    0000000000000020-000000000000002f (prio 5, ram): high
    0000000000000020-000000000000002f (prio 0, ram): low

`);
    expect(renderMtree(as, { disabled: true }).split('\n')[2]).toBe(
      '    0000000000000010-000000000000001f (prio 0, i/o): off [disabled]',
    );
  });

  test('several address spaces: shared roots print once, names sorted', () => {
    const root = MemoryRegion.container('system', 0x1000);
    const io = MemoryRegion.container('io', 0x10000);
    const a = space(root, 'memory');
    const b = space(root, 'cpu-memory-0');
    const c = space(io, 'I/O');
    expect(renderMtree([a, b, c])).toBe(`address-space: cpu-memory-0
address-space: memory
  0000000000000000-0000000000000fff (prio 0, container): system

address-space: I/O
  0000000000000000-000000000000ffff (prio 0, container): io

`);
    expect(renderMtree([a, b, c], { flat: true })).toBe(`FlatView #0
 AS "memory", root: system
 AS "cpu-memory-0", root: system
 Root memory region: (none)
  No rendered FlatView

FlatView #1
 AS "I/O", root: io
 Root memory region: (none)
  No rendered FlatView

`);
  });

  test('a single region renders as a memory-region section, flat or not', () => {
    const box = MemoryRegion.container('bar', 0x100);
    box.addSubregion(MemoryRegion.ram('mem', 0x100), 0);
    expect(renderMtree(box)).toBe(`memory-region: bar
  0000000000000000-00000000000000ff (prio 0, container): bar
    0000000000000000-00000000000000ff (prio 0, ram): mem

`);
    expect(renderMtree(box, { flat: true })).toBe(`FlatView #0
 Root memory region: mem
  0000000000000000-00000000000000ff (prio 0, ram): mem

`);
  });

  test('bad arguments are TypeErrors', () => {
    expect(() => renderMtree({} as never)).toThrow(TypeError);
    expect(() => renderMtree(MemoryRegion.container('x', 1), { annotate: 5 as never })).toThrow(TypeError);
    expect(() => mtreeJson({} as never)).toThrow(TypeError);
  });
});

describe('mtreeJson', () => {
  test('tree, flat view and alias targets of the worked example', () => {
    const j = mtreeJson(workedExample().as);
    expect(j.tree.name).toBe('system_memory');
    expect(j.tree.subregions.map((s) => [s.name, s.start, s.end, s.priority, s.alias?.target])).toEqual([
      ['lomem', 0, 0xdfffffff, 0, 'ram'],
      ['vga-window', 0xa0000, 0xbffff, 1, 'pci'],
      ['pci-hole', 0xe0000000, 0xffffffff, 0, 'pci'],
      ['himem', 0x100000000, 0x11fffffff, 0, 'ram'],
    ]);
    expect(j.aliasTargets.map((t) => t.name)).toEqual(['ram', 'pci', 'vram']);
    expect(j.flat[1]).toEqual({
      start: 0xa0000,
      end: 0xa7fff,
      size: 0x8000,
      region: 'vram',
      offsetInRegion: 0x10000,
      kind: 'ram',
      type: 'ram',
      readonly: false,
      priority: 0,
    });
    expect(JSON.parse(JSON.stringify(j))).toEqual(j);
  });
});
