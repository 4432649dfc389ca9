/**
 * A one-vCPU KVM machine for the flat test guests: 2 MiB of guest RAM from a memfd in slot 0, a
 * flat 32-bit protected-mode CPU, and a KVM memory listener on a SystemAddressSpaces' memory space so the
 * bus's direct ranges become slots. Used by the lab's KVM tests, `npm run bench:kvm` and the demo.
 */
import * as fs from 'node:fs';
import {
  Kvm,
  KvmMemoryListener,
  Mapping,
  memfd,
  MsiRoutes,
  PAGE_SIZE,
  type SystemAddressSpaces,
  type Sregs,
  type Segment,
  type Vcpu,
  type VcpuOptions,
  type Vm,
} from '../../lib';
import { vfioPciSlotClassifier } from '../../lib/vmm/slot-classifier';
import { GDT, GUEST_LOAD, IDT, PARAMS, RAM_SIZE, RESULTS } from './guest';

export { CHECKPOINT_PORT, PARAMS, RESULTS, RAM_SIZE } from './guest';

function flat(selector: number, type: number): Segment {
  return {
    base: 0n,
    limit: 0xffffffff,
    selector,
    type,
    present: 1,
    dpl: 0,
    db: 1,
    s: 1,
    l: 0,
    g: 1,
    avl: 0,
    unusable: 0,
  };
}

/** Options of {@link GuestMachine}. */
export interface GuestMachineOptions {
  /** Create the in-kernel irqchip (default true). */
  irqchip?: boolean;
  /**
   * Slot the bus's direct ranges in KVM (default true). Without, every BAR access exits: what a
   * test of the exit paths wants.
   */
  slots?: boolean;
  /** Give KVM the listener's slot changes on the thread pool (`KvmMemoryListener` `queue`). */
  queueSlots?: boolean;
  /** The vCPU's options (where lines about exits runRouted cannot serve go). */
  vcpu?: VcpuOptions;
}

export class GuestMachine implements Disposable {
  readonly kvm: Kvm;
  readonly vm: Vm;
  readonly vcpu: Vcpu;
  readonly ram: Mapping;
  readonly ramFd: number;
  readonly listener: KvmMemoryListener;
  readonly routes: MsiRoutes | null;
  readonly #unlisten: () => void;
  #closed = false;

  constructor(bus: SystemAddressSpaces, opts: GuestMachineOptions = {}) {
    const undo: (() => void)[] = [];
    try {
      this.kvm = Kvm.open();
      undo.push(() => this.kvm.close());
      this.vm = this.kvm.createVm();
      undo.push(() => this.vm.close());
      this.routes = null;
      if (opts.irqchip ?? true) {
        this.vm.createIrqchip();
        this.routes = new MsiRoutes(this.vm);
      }
      this.ramFd = memfd('guest-ram', RAM_SIZE);
      undo.push(() => fs.closeSync(this.ramFd));
      this.ram = Mapping.fromFd(this.ramFd, 0, RAM_SIZE);
      undo.push(() => this.ram.close());
      this.vm.addSlot({ guestAddress: 0, size: RAM_SIZE, memory: this.ram, name: 'guest RAM' });
      this.listener = new KvmMemoryListener(this.vm, {
        pageSize: PAGE_SIZE,
        classify: vfioPciSlotClassifier,
        queue: opts.queueSlots === true,
      });
      this.#unlisten = opts.slots === false ? () => undefined : bus.memory.addMemoryListener(this.listener);
      undo.push(this.#unlisten);
      this.vcpu = this.vm.createVcpu(0, opts.vcpu);
    } catch (e) {
      for (const fn of undo.reverse()) fn();
      throw e;
    }
  }

  /** Copy `binary` to {@link GUEST_LOAD}, write the GDT, and reset the vCPU to its first instruction. */
  load(binary: Uint8Array): void {
    this.ram.writeBlock(GUEST_LOAD, binary, 1);
    // null, 32-bit flat code (0x08), 32-bit flat data (0x10)
    this.ram.write64(GDT, 0n);
    this.ram.write64(GDT + 8, 0x00cf9a000000ffffn);
    this.ram.write64(GDT + 16, 0x00cf92000000ffffn);
    const s: Sregs = this.vcpu.getSregs();
    s.cs = flat(0x08, 0x0b);
    for (const seg of ['ds', 'es', 'fs', 'gs', 'ss'] as const) s[seg] = flat(0x10, 0x03);
    s.gdt = { base: BigInt(GDT), limit: 23 };
    s.idt = { base: BigInt(IDT), limit: 256 * 8 - 1 };
    s.cr0 = 0x11n; // protected mode, no paging
    this.vcpu.setSregs(s);
    const r = this.vcpu.getRegs();
    for (const k of Object.keys(r) as (keyof typeof r)[]) r[k] = 0n;
    r.rip = BigInt(GUEST_LOAD);
    r.rsp = 0x7_f000n;
    r.rflags = 2n;
    this.vcpu.setRegs(r);
  }

  /** Write parameter slot `i` (u32 at PARAMS + 4i). */
  param(i: number, v: number): void {
    this.ram.write32(PARAMS + 4 * i, v >>> 0);
  }

  /** Read result slot `i` (u32 at RESULTS + 4i). */
  result(i: number): number {
    return this.ram.read32(RESULTS + 4 * i);
  }

  /** Close the vCPU, the VM (slots, irqfds), the KVM fd and the guest RAM. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#unlisten();
    this.routes?.clear();
    this.vm.close();
    this.kvm.close();
    this.ram.close();
    fs.closeSync(this.ramFd);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
