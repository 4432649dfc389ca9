import { Container, Group, VFIO_PCI_BAR0_REGION_INDEX, type Device } from 'vfio-bridge';

// The device under test comes from the environment, so the suite runs on any host that has one.
const bdf = process.env.EDU_BDF; // e.g. 0000:00:03.0, bound to vfio-pci
const describeDevice = bdf ? describe : describe.skip;

describeDevice(`edu at ${bdf ?? '(EDU_BDF not set: skipped)'}`, () => {
  let container: Container;
  let group: Group;
  let device: Device;

  beforeAll(() => {
    container = Container.open();
    group = Group.openByBdf(bdf!);
    group.setContainer(container);
    container.setIommu();
    device = group.openDevice(bdf!);
  });
  afterAll(() => {
    device?.close();
    group?.close();
    container?.close();
  });

  test('the ID register answers a 4-byte read', () => {
    using bar0 = device.map(VFIO_PCI_BAR0_REGION_INDEX, 0, 4096);
    expect(bar0.read32(0x00)).toBe(0x010000ed);
  });

  test('the liveness register inverts what is written', () => {
    using bar0 = device.map(VFIO_PCI_BAR0_REGION_INDEX, 0, 4096);
    bar0.write32(0x04, 0x0f0f0f0f);
    expect(bar0.read32(0x04)).toBe(0xf0f0f0f0);
  });
});
