// The end-to-end guest (test/guest/e2e.S) under real KVM in the lab: a vCPU that touches edu,
// rtl8139 and ivshmem-as-RTL8168 through slots, trapped mmaps, the device fd and the quirk, DMAs
// through edu from guest RAM, takes edu's MSI through irqfd, moves a BAR and turns decode off
// with its own configuration cycles, and leaves nothing behind when everything closes.
import { closeSync, openSync, readSync } from 'node:fs';
import { exitCounts, LAYOUT, openE2e, runE2e, type E2eResult, type E2eSetup } from '../../guest/scenario';
import { RAM_SIZE } from '../../guest/machine';
import { Kvm } from '../../../lib';
import { bdfOf, describeDevice, kvmFds, openDevice } from '../hil';

const EDU_ID = 0x010000ed;

function hostRead32(offset: number): number {
  const fd = openSync(process.env.VFIO_BRIDGE_HIL_IVSHMEM_FILE!, 'r');
  try {
    const b = Buffer.alloc(4);
    readSync(fd, b, 0, 4, offset);
    return b.readUInt32LE(0);
  } finally {
    closeSync(fd);
  }
}

describeDevice('edu', 'a KVM guest driving passed-through devices', () => {
  let setup: E2eSetup;
  let r: E2eResult;
  beforeAll(async () => {
    expect(kvmFds()).toEqual([]);
    setup = openE2e({ edu: bdfOf('edu'), rtl8139: bdfOf('rtl8139'), ivshmem: bdfOf('ivshmem') });
    r = await runE2e(setup, 40_000);
  }, 90_000);
  afterAll(() => setup?.close());

  test('runs to its last checkpoint', () => {
    expect(r.run.reason).toBe('stopped');
    expect(
      r.exits.filter((e) => e.kind === 'vmm' && e.name === 'checkpoint').map((e) => Number(e.value)),
    ).toEqual([1, 2, 3, 4, 5, 6, 7, 0xff]);
  });

  test("reads edu's ID and liveness register through a direct slot, with no exit", () => {
    expect(r.results[0]).toBe(EDU_ID);
    expect(r.results[1]).toBe(~0x12345678 >>> 0);
    expect(exitCounts(r.exits)[1]).toEqual({ vmm: 1 });
  });

  test("serves rtl8139's sub-page BAR 1 off page alignment by one access of the guest's width each", () => {
    const mmio = r.exits.filter((e) => e.phase === 2 && e.space === 'memory');
    expect(mmio.map((e) => [e.address - LAYOUT.rtlMmio, e.size, e.isWrite, e.kind])).toEqual([
      [0, 4, false, 'trapped-mmap'],
      [4, 1, false, 'trapped-mmap'],
      [8, 4, true, 'trapped-mmap'],
      [9, 1, false, 'trapped-mmap'],
      [0x0a, 2, false, 'trapped-mmap'],
    ]);
    const io = r.exits.filter((e) => e.phase === 2 && e.space === 'io' && e.kind !== 'vmm');
    expect(io.map((e) => [e.address, e.size, e.kind])).toEqual([[LAYOUT.rtlIo, 4, 'trapped-fd']]);
    // The same station address through the mmap and through the port; MAR0-3 read back per byte.
    expect(r.results[2]).toBe(r.results[6]);
    expect(r.results[4]).toBe(0xc3);
    expect(r.results[5]).toBe(0xa1b2);
  });

  test('exits into the RTL8168 window quirk on ivshmem, while the rest of BAR 2 stays direct', () => {
    const mmio = r.exits.filter((e) => e.phase === 3 && e.space === 'memory');
    expect(mmio.map((e) => [e.address - LAYOUT.ivs2, e.isWrite, e.kind])).toEqual([
      [0x70, true, 'emulated'],
      [0x74, true, 'emulated'],
      [0x70, false, 'emulated'],
      [0x74, true, 'emulated'],
      [0x74, false, 'emulated'],
    ]);
    expect(r.results[7]).toBe(0x11223344);
    expect(r.results[8]).toBe(0x00010000);
    expect(r.results[9]).toBe(0xcafef00d);
    expect(hostRead32(0x70)).toBe(0x11223344);
    expect(hostRead32(0x74)).toBe(0x00020000); // the table write never reached the device
    expect(hostRead32(0x2000)).toBe(0xcafef00d);
    expect(setup.reports.filter((e) => e.reason === 'msix-window').map((e) => [e.isWrite, e.offset])).toEqual(
      [[true, 0]],
    );
  });

  test('copies a buffer from guest RAM to edu and back by DMA, with no exit', () => {
    expect(r.results[10]).toBe(0);
    expect(Array.from(r.dmaDst)).toEqual(Array.from({ length: 64 }, (_, i) => (i * 3 + 1) & 0xff));
    expect(r.dmaDst).toEqual(r.dmaSrc);
    expect(exitCounts(r.exits)[4]).toEqual({ vmm: 1 });
  });

  test("takes edu's MSI in its own handler through irqfd; only config cycles exit", () => {
    expect(r.results[12]).toBe(1); // handler ran once
    expect(r.results[13]).toBe(1); // edu's interrupt status seen by the handler
    const p5 = r.exits.filter((e) => e.phase === 5);
    expect(p5.every((e) => e.kind === 'vmm')).toBe(true);
    expect(setup.machine.routes!.size).toBe(1);
    expect(setup.machine.vm.assignments.map((a) => a.kind)).toEqual(['irqfd']);
    // The guest's own config cycles enabled MSI in lib/pci; the route and irqfd followed from it.
    expect(setup.edu.irq.mode).toBe('msi');
    // Nothing was injected from JavaScript: the interrupt went device -> eventfd -> irqfd -> vCPU.
    expect([setup.msi.routed, setup.msi.errors, setup.msi.injected]).toEqual([1, 0, 0]);
    expect(setup.machine.routes!.gsiOf(setup.msi.key('msi', 0))).toBeDefined();
  });

  test('follows the BAR the guest moved: the new address is direct, the old one unassigned', () => {
    expect(r.results[14]).toBe(EDU_ID);
    expect(r.results[15]).toBe(0xffffffff);
    const mmio = r.exits.filter((e) => e.phase === 6 && e.space === 'memory');
    expect(mmio.map((e) => [e.address, e.kind])).toEqual([[LAYOUT.edu, 'unassigned']]);
    expect(setup.edu.bars[0]?.address).toBe(LAYOUT.eduMoved);
    expect(setup.machine.listener.slots.map((s) => s.guestAddress)).toContain(LAYOUT.eduMoved);
  });

  test('reads all-ones through an exit while the guest has memory decode off, then direct again', () => {
    expect(r.results[16]).toBe(0xffffffff);
    expect(r.results[17]).toBe(EDU_ID);
    const mmio = r.exits.filter((e) => e.phase === 7 && e.space === 'memory');
    expect(mmio.map((e) => [e.address, e.kind, e.value])).toEqual([
      [LAYOUT.eduMoved, 'unassigned', 0xffffffff],
    ]);
  });

  test('closing everything leaves no slot, no irqfd, no DMA mapping and no KVM fd', () => {
    const vm = setup.machine.vm;
    setup.close();
    expect(vm.closed).toBe(true);
    expect(vm.slots.used).toBe(0);
    expect(vm.assignments).toEqual([]);
    expect(kvmFds()).toEqual([]);
    // The one DMA mapping of guest RAM was removed whole before the container closed.
    expect(setup.dmaUnmapped).toBe(RAM_SIZE);
    expect(setup.opened[0].container.dmaMappings()).toEqual([]);
    expect(setup.opened[0].container.closed).toBe(true);
  });
});

describeDevice('edu', "a VM's closeAsync with KVM-VFIO files", () => {
  test('counts as closed at once and deletes each file in a turn of the event loop of its own', async () => {
    using kvm = Kvm.open();
    const edu = openDevice(bdfOf('edu'));
    try {
      const vm = kvm.createVm();
      vm.addVfioFile(edu.group);
      expect(vm.vfioFiles).toEqual([edu.group.fd]);
      const closing = vm.closeAsync();
      expect(vm.closed).toBe(true);
      // The file's deletion waits for a turn of the event loop; it is done when the close is.
      expect(vm.vfioFiles).toEqual([edu.group.fd]);
      await closing;
      expect(vm.vfioFiles).toEqual([]);
      expect(kvmFds()).toEqual([]);
    } finally {
      edu.close();
    }
  });
});
