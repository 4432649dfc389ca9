// lib/kvm on the lab's /dev/kvm: argument checking, errors, and the lifecycle of every KVM object
// (using, close twice, use after close, worker exit), with a few bytes of guest code exercising the
// exits themselves. No device is needed; the tests that pass devices through are beside this one.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';

import {
  EventFd,
  GuestRam,
  guestCpuid,
  Kvm,
  LAPIC_STATE_SIZE,
  MemoryRegion,
  MsiRoutes,
  SystemAddressSpaces,
  pcLapic,
  type Vcpu,
} from '../../../lib';
import { GuestMachine } from '../../guest/machine';
import { caught, describeKvm, kvmFds, tempDir } from '../hil';

const LIB = JSON.stringify(path.join(__dirname, '..', '..', '..', 'lib'));
const withKvm = describeKvm;

describe('Kvm.open errors', () => {
  let tmp: ReturnType<typeof tempDir>;
  beforeEach(() => (tmp = tempDir()));
  afterEach(() => tmp.remove());

  test('a missing node is ENOENT with the path', () => {
    const e = caught(() => Kvm.open({ path: path.join(tmp.dir, 'kvm') }));
    expect(e).toMatchObject({ code: 'ENOENT', op: 'open', path: path.join(tmp.dir, 'kvm') });
  });

  test('something that is not KVM fails in KVM_GET_API_VERSION and leaks no fd', () => {
    const file = path.join(tmp.dir, 'kvm');
    fs.writeFileSync(file, '');
    const before = fs.readdirSync('/proc/self/fd').length;
    const e = caught(() => Kvm.open({ path: file }));
    expect(e).toMatchObject({ code: 'ENOTTY', op: 'KVM_GET_API_VERSION' });
    expect(fs.readdirSync('/proc/self/fd').length).toBe(before);
  });

  test('an unknown required capability is a RangeError', () => {
    expect(() => Kvm.open({ require: ['NOPE' as never] })).toThrow(RangeError);
  });
});

withKvm('KVM objects on /dev/kvm', () => {
  test('open reports API 12 and what a passthrough VMM needs', () => {
    using kvm = Kvm.open();
    expect(kvm.apiVersion).toBe(12);
    expect(kvm.hasCapability('IRQFD')).toBe(true);
    expect(kvm.vcpuMmapSize).toBeGreaterThanOrEqual(4096);
  });

  test('using closes Kvm, Vm and Vcpu; close twice is fine; use after close is ECLOSED', () => {
    let vcpu: Vcpu;
    {
      using kvm = Kvm.open();
      using vm = kvm.createVm();
      vcpu = vm.createVcpu(0);
      expect(kvmFds().length).toBe(2);
      kvm.close();
      expect(vm.vcpus).toEqual([vcpu]);
    }
    expect(kvmFds()).toEqual([]);
    vcpu.close();
    expect(caught(() => vcpu.getRegs())).toMatchObject({ code: 'ECLOSED', op: 'KVM_GET_REGS' });
    expect(caught(() => vcpu.run(1))).toMatchObject({ code: 'ECLOSED', op: 'KVM_RUN' });
    const kvm = Kvm.open();
    kvm.close();
    kvm.close();
    expect(caught(() => kvm.createVm())).toMatchObject({ code: 'ECLOSED' });
  });

  test('slots are checked before KVM sees them and freed when the VM closes', () => {
    using kvm = Kvm.open();
    const vm = kvm.createVm();
    using m = new GuestMachine(new SystemAddressSpaces(), { irqchip: false });
    expect(() => vm.addSlot({ guestAddress: 0x800, size: 0x1000, memory: m.ram })).toThrow(RangeError);
    expect(() => vm.addSlot({ guestAddress: 0, size: 0x1000, memory: { length: 1 } as never })).toThrow(
      TypeError,
    );
    vm.addSlot({ guestAddress: 0, size: 0x1000, memory: m.ram, name: 'a' });
    expect(() => vm.addSlot({ guestAddress: 0, size: 0x1000, memory: m.ram, offset: 0x1000 })).toThrow(
      /overlaps slot 0 \(a\)/,
    );
    expect(vm.slots.used).toBe(1);
    vm.close();
    expect(vm.slots.used).toBe(0);
    expect(caught(() => vm.addSlot({ guestAddress: 0, size: 0x1000, memory: m.ram })).code).toBe('ECLOSED');
  });

  test('closeAsync: the VM counts as closed at once, its vCPUs and slots go, its fd closes on the thread pool', async () => {
    using kvm = Kvm.open();
    using m = new GuestMachine(new SystemAddressSpaces(), { irqchip: false });
    const before = kvmFds().length;
    const vm = kvm.createVm();
    vm.addSlot({ guestAddress: 0, size: 0x1000, memory: m.ram });
    const vcpu = vm.createVcpu(0);
    expect(kvmFds().length).toBeGreaterThanOrEqual(before + 2); // the VM, the vCPU (and KVM's own)
    const closing = vm.closeAsync();
    expect(vm.closed).toBe(true);
    expect(vcpu.closed).toBe(true);
    expect(vm.slots.used).toBe(0);
    expect(caught(() => vm.createVcpu(1)).code).toBe('ECLOSED');
    await closing;
    expect(kvmFds().length).toBe(before);
    await vm.closeAsync(); // twice is fine
    vm.close();
  });

  test('createVmAsync: a VM made on the thread pool works as createVm makes it; a closed Kvm is ECLOSED', async () => {
    const kvm = Kvm.open();
    const before = kvmFds().length;
    const making = kvm.createVmAsync();
    kvm.close(); // the call holds its own copy of the fd: the VM is still made
    const vm = await making;
    expect(vm.closed).toBe(false);
    vm.createIrqchip();
    const vcpu = vm.createVcpu(0);
    expect(vcpu.getRegs().rip).toBe(0xfff0n);
    expect(kvmFds().length).toBe(before + 2); // the VM and its vCPU
    vm.close();
    expect(kvmFds().length).toBe(before);
    await expect(kvm.createVmAsync()).rejects.toMatchObject({ code: 'ECLOSED', op: 'KVM_CREATE_VM' });
  });
  test('a slot pins its memory: closed first, the pages stay mapped until the slot or the VM goes', () => {
    using kvm = Kvm.open();
    // The mappings of this process whose memfd is called `name`.
    const mapped = (name: string): number =>
      fs
        .readFileSync('/proc/self/maps', 'utf8')
        .split('\n')
        .filter((l) => l.includes(`/memfd:${name} `)).length;
    const vm = kvm.createVm();
    const ram = GuestRam.create(0x10000, { name: 'slot-pin-a' });
    const slot = vm.addSlot({ guestAddress: 0, size: 0x10000, memory: ram });
    ram.close();
    expect(mapped('slot-pin-a')).toBe(1); // KVM may still translate to it
    expect(caught(() => vm.addSlot({ guestAddress: 0x10000, size: 0x1000, memory: ram })).code).toBe(
      'ECLOSED',
    );
    vm.removeSlot(slot);
    expect(mapped('slot-pin-a')).toBe(0);
    // The VM closing releases its slots' pins too.
    const ram2 = GuestRam.create(0x10000, { name: 'slot-pin-b' });
    vm.addSlot({ guestAddress: 0, size: 0x8000, memory: ram2 });
    vm.addSlot({ guestAddress: 0x100000, size: 0x8000, memory: ram2, offset: 0x8000 });
    ram2.close();
    expect(mapped('slot-pin-b')).toBe(1);
    vm.close();
    expect(mapped('slot-pin-b')).toBe(0);
  });

  test('irqfd and SIGNAL_MSI need the irqchip; irqfds are released with the VM', () => {
    using kvm = Kvm.open();
    const vm = kvm.createVm();
    using e = EventFd.open();
    expect(caught(() => vm.irqfd(e, 30)).code).toBe('ENOIRQCHIP');
    expect(caught(() => vm.signalMsi(0xfee00000, 0, 0x30)).code).toBe('ENOIRQCHIP');
    vm.createIrqchip();
    expect(() => vm.irqfd({ fd: -1 }, 5)).toThrow(TypeError);
    const a = vm.irqfd(e, 5, { resample: e });
    expect(vm.assignments).toEqual([a]);
    a.release();
    a.release();
    expect(vm.assignments).toEqual([]);
    vm.irqfd(e, 5);
    expect(vm.signalMsi(0xfee00000, 0, 0x30)).toBe(false); // no vCPU, no APIC to take it
    vm.createVcpu(0);
    e.close(); // the assignment keeps its own reference for the deassign
    vm.close();
    expect(vm.assignments).toEqual([]);
  });

  test("the x86 boot state: CPUID, PIT, IRQ lines, MSRs, FPU and the local APIC's LINT wiring", () => {
    using kvm = Kvm.open();
    const cpuid = kvm.supportedCpuid();
    expect(cpuid.find((e) => e.function === 0)?.eax).toBeGreaterThanOrEqual(1);
    // KVM's own leaves carry its signature, which is what makes a guest use kvm-clock.
    const sig = cpuid.find((e) => e.function === 0x40000000);
    expect(sig && Buffer.from(new Uint32Array([sig.ebx, sig.ecx, sig.edx]).buffer).toString()).toBe(
      'KVMKVMKVM\0\0\0',
    );
    using vm = kvm.createVm();
    expect(caught(() => vm.createPit()).code).toBe('ENOIRQCHIP');
    expect(caught(() => vm.irqLine(4, true)).code).toBe('ENOIRQCHIP');
    expect(() => vm.setTssAddr(0x1001)).toThrow(RangeError);
    vm.setTssAddr(0xfffbd000);
    vm.createIrqchip();
    vm.createPit();
    expect(caught(() => vm.createPit())).toMatchObject({ code: 'EEXIST', op: 'KVM_CREATE_PIT2' });
    // ISA IRQ 4 is masked at the PIC and the IOAPIC until a guest unmasks it.
    expect(typeof vm.irqLine(4, true)).toBe('number');
    vm.irqLine(4, false);
    expect(() => vm.irqLine(-1, true)).toThrow(RangeError);
    const vcpu = vm.createVcpu(0);
    const table = guestCpuid(cpuid, { apicId: 0, cpus: 1 });
    vcpu.setCpuid(table);
    expect(() => vcpu.setCpuid([{ ...table[0], eax: 2 ** 32 }])).toThrow(RangeError);
    vcpu.setFpu();
    vcpu.setMsrs([{ index: 0x1a0, value: 1n }]); // IA32_MISC_ENABLE
    expect(caught(() => vcpu.setMsrs([{ index: 0xdead0000, value: 0n }]))).toMatchObject({
      code: 'EMSR',
      op: 'KVM_SET_MSRS',
    });
    const lapic = vcpu.getLapic();
    expect(lapic.length).toBe(LAPIC_STATE_SIZE);
    vcpu.setLapic(pcLapic(lapic));
    const wired = vcpu.getLapic();
    expect((wired.readUInt32LE(0x350) >> 8) & 7).toBe(7); // LINT0: ExtINT
    expect((wired.readUInt32LE(0x360) >> 8) & 7).toBe(4); // LINT1: NMI
    expect(() => vcpu.setLapic(Buffer.alloc(16))).toThrow(RangeError);
    // The TSC rate: KVM's own by default; the same rate is taken, a slower one (no TSC scaling
    // under the lab's TCG) is refused by KVM, and a rate that is not one is refused before it.
    const khz = vcpu.tscKhz;
    expect(khz).toBeGreaterThan(100_000);
    vcpu.setTscKhz(khz);
    expect(vcpu.tscKhz).toBe(khz);
    expect(caught(() => vcpu.setTscKhz(Math.round(khz / 2)))).toMatchObject({
      op: 'KVM_SET_TSC_KHZ',
      code: 'EINVAL',
    });
    for (const bad of [0, -1, 1.5, 2 ** 32]) expect(() => vcpu.setTscKhz(bad)).toThrow(RangeError);
  });

  test('MsiRoutes keeps one GSI and one irqfd per routed vector, and drops both on mask', () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    vm.createIrqchip();
    const routes = new MsiRoutes(vm);
    using a = EventFd.open();
    using b = EventFd.open();
    routes.update('a', { addressLo: 0xfee00000, addressHi: 0, data: 0x40 }, a);
    routes.update('b', { addressLo: 0xfee00000, addressHi: 0, data: 0x41 }, b);
    expect([routes.gsiOf('a'), routes.gsiOf('b')]).toEqual([24, 25]);
    expect(vm.assignments.map((x) => [x.fd, x.target])).toEqual([
      [a.fd, 24],
      [b.fd, 25],
    ]);
    routes.update('a', { addressLo: 0xfee00000, addressHi: 0, data: 0x42 }, a); // new data, same irqfd
    expect(vm.assignments).toHaveLength(2);
    routes.update('a', null); // masked
    expect(routes.gsiOf('a')).toBeUndefined();
    expect(vm.assignments.map((x) => x.target)).toEqual([25]);
    routes.update('a', { addressLo: 0xfee00000, addressHi: 0, data: 0x40 }, a); // unmasked: GSI reused
    expect(routes.gsiOf('a')).toBe(24);
    routes.clear();
    expect(vm.assignments).toEqual([]);
    expect(routes.size).toBe(0);
  });

  test('the KVM-VFIO device refuses a file that is not VFIO, with the ioctl named', () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using e = EventFd.open();
    const err = caught(() => vm.addVfioFile(e));
    expect(err.op).toBe('KVM_SET_DEVICE_ATTR');
    expect(vm.vfioFiles).toEqual([]);
  });

  describe('exits', () => {
    let bus: SystemAddressSpaces;
    let m: GuestMachine;
    beforeEach(() => {
      bus = new SystemAddressSpaces();
      m = new GuestMachine(bus, { irqchip: false });
    });
    afterEach(() => {
      m.close();
      bus.close();
    });

    test('a guest that never exits comes back interrupted when its budget is spent', () => {
      m.load(Uint8Array.of(0xeb, 0xfe)); // jmp $
      const t = performance.now();
      expect(m.vcpu.run(20)).toEqual({ kind: 'interrupted' });
      expect(performance.now() - t).toBeLessThan(5000);
      expect(m.vcpu.getRegs().rip).toBe(0x1000n);
    });

    test('hlt exits without an in-kernel irqchip', () => {
      m.load(Uint8Array.of(0xf4));
      expect(m.vcpu.run(1000)).toEqual({ kind: 'hlt' });
    });

    test('an MMIO read exits with its size, and the answer reaches the guest', () => {
      // mov eax, [0xe0000000]; mov [0x2000], eax; mov ax, [0xe0000006]; mov [0x2004], ax; hlt
      m.load(
        Uint8Array.of(
          0xa1,
          0,
          0,
          0,
          0xe0,
          0xa3,
          0,
          0x20,
          0,
          0,
          0x66,
          0xa1,
          6,
          0,
          0,
          0xe0,
          0x66,
          0xa3,
          4,
          0x20,
          0,
          0,
          0xf4,
        ),
      );
      expect(m.vcpu.run(1000)).toEqual({
        kind: 'mmio',
        address: 0xe0000000,
        size: 4,
        isWrite: false,
        data: 0n,
      });
      m.vcpu.complete(0xa1b2c3d4);
      expect(m.vcpu.run(1000)).toMatchObject({ kind: 'mmio', address: 0xe0000006, size: 2 });
      m.vcpu.complete(0xbeef);
      expect(m.vcpu.run(1000)).toEqual({ kind: 'hlt' });
      expect(m.ram.read32(0x2000)).toBe(0xa1b2c3d4);
      expect(m.ram.read16(0x2004)).toBe(0xbeef);
      expect(() => m.vcpu.complete(1)).toThrow(RangeError);
    });

    test('runRouted serves MMIO and port exits through address spaces at the guest width', () => {
      const seen: string[] = [];
      bus.memory.root.addSubregion(
        MemoryRegion.io('r', 0x100, {
          read: (o, s) => (seen.push(`r${o}/${s}`), 0x5a),
          write: (o, s, v) => void seen.push(`w${o}/${s}=${String(v)}`),
        }),
        0xe0000000,
      );
      // mov byte [0xe0000010], 0x77; mov al, [0xe0000011]; mov [0x2000], al; out 0x80, al; hlt
      m.load(
        Uint8Array.of(
          0xc6,
          0x05,
          0x10,
          0,
          0,
          0xe0,
          0x77,
          0xa0,
          0x11,
          0,
          0,
          0xe0,
          0xa2,
          0,
          0x20,
          0,
          0,
          0xe6,
          0x80,
          0xf4,
        ),
      );
      const r = m.vcpu.runRouted({ memory: bus.memory, io: bus.io }, { budgetMs: 2000 });
      expect(r).toMatchObject({ reason: 'hlt', mmioExits: 2, ioExits: 1 });
      expect(seen).toEqual(['w16/1=119', 'r17/1']);
      expect(m.ram.read8(0x2000)).toBe(0x5a);
      expect(bus.io.unassignedCount).toBe(1); // port 0x80: nothing there, reported not thrown
    });

    test('an ioeventfd write signals the eventfd without an exit', () => {
      using e = EventFd.open();
      m.vm.ioeventfd(e, 0xe0000000, 4, { datamatch: 0x12345678n });
      // mov dword [0xe0000000], 0x12345678; hlt
      m.load(Uint8Array.of(0xc7, 0x05, 0, 0, 0, 0xe0, 0x78, 0x56, 0x34, 0x12, 0xf4));
      expect(m.vcpu.run(1000)).toEqual({ kind: 'hlt' });
      expect(e.read()).toBe(1);
    });
  });

  test('a worker that exits without closing leaves no KVM object behind', async () => {
    const worker = new Worker(
      `
      require('@swc-node/register');
      const { parentPort } = require('node:worker_threads');
      const { Kvm } = require(${LIB});
      const kvm = Kvm.open();
      const vm = kvm.createVm();
      globalThis.kept = [kvm, vm, vm.createVcpu(0)];
      setInterval(() => {}, 1000);
      parentPort.postMessage('ready');
      `,
      { eval: true },
    );
    try {
      await new Promise((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
      });
      expect(kvmFds().length).toBe(2);
    } finally {
      await worker.terminate();
    }
    expect(kvmFds()).toEqual([]);
  });
});
