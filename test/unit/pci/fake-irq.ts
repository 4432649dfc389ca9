import { EventEmitter } from 'node:events';

import { type HostIrq, type IrqCapableDevice, SystemAddressSpaces, VfioPciDevice } from '../../../lib/pci';
import type { HotResetInfo, IrqInfo, IrqOptions } from '../../../lib/vfio';
import { FakeVfioDevice, type FakeDeviceSpec } from '../../support/fake-device';
import { e1000eSpec } from '../../support/pci-helpers';

/** The host side of one IRQ index on the fake: records what the PCI layer asked, fires on demand. */
export class FakeHostIrq extends EventEmitter implements HostIrq {
  enabled = true;
  closed = false;
  refed: boolean;
  vectors: number;
  readonly unmasks: number[] = [];
  readonly resizes: number[] = [];
  constructor(
    readonly index: number,
    readonly opts: IrqOptions,
  ) {
    super();
    this.vectors = opts.vectors ?? 1;
    this.refed = opts.ref ?? true;
  }
  get fds(): number[] {
    return Array.from({ length: this.vectors }, (_, v) => 100 + 10 * this.index + v);
  }
  resize(n: number): void {
    this.resizes.push(n);
    this.vectors = n;
  }
  setVector(): void {}
  unmask(v = 0): void {
    this.unmasks.push(v);
  }
  disable(): void {
    this.enabled = false;
  }
  enable(): void {
    this.enabled = true;
  }
  ref(): void {
    this.refed = true;
  }
  unref(): void {
    this.refed = false;
  }
  close(): void {
    this.closed = true;
    this.enabled = false;
  }
  /** The device signals `vector` with `count` coalesced interrupts. */
  fire(vector: number, count = 1): void {
    if (!this.enabled || this.closed) throw new Error(`IRQ index ${this.index} is not enabled`);
    if (vector >= this.vectors) throw new Error(`vector ${vector} is not enabled on the host`);
    this.emit('interrupt', vector, count);
  }
}

/** Shape of a fake with interrupts: an MSI capability (after PM and MSI-X) and an INTx pin. */
export interface FakeIrqSpec extends FakeDeviceSpec {
  msi?: { vectorsLog2: number; is64: boolean; maskable: boolean };
  pin?: number;
  /** Which resets the fake offers. */
  resets?: { device: boolean; hot: boolean };
}

/** FakeVfioDevice plus VFIO interrupts and resets, without a kernel. */
export class FakeIrqDevice extends FakeVfioDevice implements IrqCapableDevice {
  readonly irqs: FakeHostIrq[] = [];
  readonly resetsDone: string[] = [];
  readonly irqSpec: FakeIrqSpec;

  constructor(spec: FakeIrqSpec) {
    super(spec);
    this.irqSpec = spec;
    this.config[0x3d] = spec.pin ?? 1;
    if (spec.msi) {
      const at = 0x70;
      // Chain MSI after the last capability.
      let p = 0x40;
      while (this.config[p + 1] !== 0) p = this.config[p + 1];
      this.config[p + 1] = at;
      this.config[at] = 0x05;
      this.config[at + 1] = 0;
      const flags =
        (spec.msi.vectorsLog2 << 1) | (spec.msi.is64 ? 0x80 : 0) | (spec.msi.maskable ? 0x100 : 0);
      this.configView.setUint16(at + 2, flags, true);
    }
  }

  irqInfo(index: number): IrqInfo {
    const count =
      index === 0
        ? this.irqSpec.pin === 0
          ? 0
          : 1
        : index === 1
          ? this.irqSpec.msi
            ? 1 << this.irqSpec.msi.vectorsLog2
            : 0
          : index === 2
            ? (this.irqSpec.msix?.entries ?? 0)
            : 1;
    const noresize = index !== 2;
    return {
      index,
      flags: 1,
      count,
      eventfd: true,
      maskable: index === 0,
      automasked: index === 0,
      noresize,
    };
  }

  enableIrq(index: number, opts: IrqOptions): FakeHostIrq {
    const h = new FakeHostIrq(index, opts);
    this.irqs.push(h);
    return h;
  }

  /** The live host IRQ for `index`. */
  host(index: number): FakeHostIrq | undefined {
    return this.irqs.filter((h) => h.index === index && !h.closed).at(-1);
  }

  info(): { reset: boolean } {
    return { reset: this.irqSpec.resets?.device ?? true };
  }

  reset(): void {
    this.resetsDone.push('device');
  }

  hotResetInfo(): HotResetInfo {
    return { flags: 0, devices: [], groups: [] };
  }

  hotReset(): void {
    if (!this.irqSpec.resets?.hot) {
      const e = new Error('hot reset: ENODEV') as Error & { code: string };
      e.name = 'VfioError';
      e.code = 'ENODEV';
      throw e;
    }
    this.resetsDone.push('hot');
  }
}

/** A fake with interrupts (e1000e-like unless `spec` says otherwise), opened on a fresh bus. */
export function openIrqFake(spec: Partial<FakeIrqSpec> = {}): {
  fake: FakeIrqDevice;
  bus: SystemAddressSpaces;
  dev: VfioPciDevice;
} {
  const fake = new FakeIrqDevice({ ...e1000eSpec(), ...spec });
  const bus = new SystemAddressSpaces();
  const dev = VfioPciDevice.open(bus, fake, { log: null });
  return { fake, bus, dev };
}
