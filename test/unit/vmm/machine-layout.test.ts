import { Machine } from '../../../lib/vmm/machine';

// A layout the machine cannot map for DMA is refused before guest RAM, the container or the bus
// exist, so nothing is allocated and nothing can leak; these run without /dev/vfio.
describe('Machine.create refuses a layout before allocating anything', () => {
  const GiB = 2 ** 30;
  test.each([
    [
      'RAM that ends inside a page',
      { ramSize: 0x1800 },
      /ramSize 0x1800 is not a multiple of the 4 KiB page/,
    ],
    ['no RAM', { ramSize: 0 }, /ramSize 0: the machine needs guest RAM/],
    [
      'a PCI hole that starts inside a page',
      { ramSize: 0x10000, pciHole: { start: 0x8800, size: GiB } },
      /pciHole.start 0x8800 is not a multiple of the 4 KiB page/,
    ],
    [
      'a PCI hole whose size is not whole pages',
      { ramSize: 0x10000, pciHole: { start: 0x8000, size: 0x100 } },
      /pciHole.size 0x100 is not a multiple of the 4 KiB page/,
    ],
    [
      'RAM above the hole past 2^53',
      { ramSize: 0x10000, pciHole: { start: 0x8000, size: 2 ** 53 - 0x10000 } },
      /32768 bytes of RAM above the PCI hole \[0x8000, \+0x1fffffffff0000\) would end past 2\^53/,
    ],
    [
      'an IOMMU backend it does not know',
      { ramSize: 0x10000, backend: 'vfio' as never },
      /backend "vfio" is not one of auto, iommufd, type1/,
    ],
  ])('%s', (_name, opts, message) => {
    expect(() => Machine.create(opts)).toThrow(RangeError);
    expect(() => Machine.create(opts)).toThrow(message);
  });
});
