/**
 * A device acquired for a test: its container, group and device, the DMA buffers and interrupts
 * the test asked the helpers for, and a release that puts everything back and fails when the test
 * left the device busy (see left-busy.ts).
 */
import { VfioBridgeError } from '../base/error';
import { stepErrors } from '../base/steps';
import type { Container } from '../vfio/container';
import type { Device } from '../vfio/device';
import type { Group } from '../vfio/group';
import { VFIO_PCI_CONFIG_REGION_INDEX } from '../vfio/uapi';
import { DEFAULT_IOVA_BASE, pageRound, TestDmaBuffer, type DmaBufferOptions } from './dma-buffer';
import { InterruptWaiter } from './interrupts';
import { leftBusyFindings, LeftBusyError, type LeftBusyFinding } from './left-busy';

/** What {@link TestDevice} is built from (by acquire). @internal */
export interface TestDeviceParts {
  role: string;
  bdf: string;
  container: Container;
  group: Group;
  device: Device;
  /** The driver acquire took the device from, or undefined when it was on vfio-pci already. */
  boundFrom: string | null | undefined;
  /** Puts the device back on `boundFrom` (acquire's restore). */
  restore: () => Promise<void>;
}

/** Options of {@link TestDevice.release}. */
export interface ReleaseOptions {
  /** Check that the device was left idle (default true). */
  checkIdle?: boolean;
}

export class TestDevice implements AsyncDisposable {
  /** The role the device was acquired for. */
  readonly role: string;
  /** PCI address of the device. */
  readonly bdf: string;
  /** The VFIO container opened for this device alone; DMA buffers are mapped in it. */
  readonly container: Container;
  /** The device's IOMMU group, attached to `container`. */
  readonly group: Group;
  /** The open VFIO device: registers, regions, interrupts. Closed at release. */
  readonly device: Device;
  /** The driver acquire moved the device from (null: none), undefined when it did not move it. */
  readonly boundFrom: string | null | undefined;
  readonly #restore: () => Promise<void>;
  readonly #buffers = new Set<TestDmaBuffer>();
  readonly #irqs = new Set<InterruptWaiter>();
  #nextIova = DEFAULT_IOVA_BASE;
  #released: Promise<void> | null = null;

  /** @internal use acquire */
  constructor(parts: TestDeviceParts) {
    this.role = parts.role;
    this.bdf = parts.bdf;
    this.container = parts.container;
    this.group = parts.group;
    this.device = parts.device;
    this.boundFrom = parts.boundFrom;
    this.#restore = parts.restore;
  }

  /** `edu (0000:00:03.0)`: how messages name the device. */
  get label(): string {
    return `${this.role} (${this.bdf})`;
  }

  get released(): boolean {
    return this.#released !== null;
  }

  /**
   * dmaBuffer: `size` bytes (whole pages) mapped for the device at `opts.iova` or the next free
   * IOVA from 1 MiB; unmapped at release.
   */
  dmaBuffer(size: number, opts: DmaBufferOptions = {}): TestDmaBuffer {
    this.#checkOpen('dmaBuffer');
    const bytes = pageRound(size);
    const iova = opts.iova ?? this.#nextIova;
    const buf = new TestDmaBuffer(this.container, iova, bytes, opts, (b) => this.#buffers.delete(b));
    this.#buffers.add(buf);
    this.#nextIova = Math.max(this.#nextIova, iova + bytes);
    return buf;
  }

  /**
   * interrupts: enable IRQ index `index` (VFIO_PCI_MSI_IRQ_INDEX, ...) and count its interrupts;
   * disabled at release if the test did not close it.
   */
  interrupts(index: number, opts: { vectors?: number } = {}): InterruptWaiter {
    this.#checkOpen('interrupts');
    const w = new InterruptWaiter(this.device, index, opts);
    this.#irqs.add(w);
    w.once('close', () => this.#irqs.delete(w));
    return w;
  }

  /** Config space at `offset` through the device's config region (region 7). */
  readConfig(offset: number, size: 1 | 2 | 4): number {
    return this.device.read(VFIO_PCI_CONFIG_REGION_INDEX, offset, size) as number;
  }

  /** What the test has left on: bus mastering, MSI, MSI-X, a low-power state. */
  leftBusy(): LeftBusyFinding[] {
    return leftBusyFindings((off, size) => this.readConfig(off, size));
  }

  /**
   * release: disable the helpers' interrupts, check that the device was left idle, unmap the DMA
   * buffers, close device, group and container, and put the device back on the driver acquire
   * took it from. Everything is released even when a step fails. Idempotent.
   * @throws LeftBusyError ELEFTBUSY naming the device and each register left on; otherwise the
   * first failure of a step
   */
  release(opts: ReleaseOptions = {}): Promise<void> {
    this.#released ??= this.#release(opts.checkIdle ?? true);
    return this.#released;
  }

  /** The same as {@link release}. */
  closeAsync(): Promise<void> {
    return this.release();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.release();
  }

  async #release(checkIdle: boolean): Promise<void> {
    let findings: LeftBusyFinding[] = [];
    const errors = stepErrors([
      ...[...this.#irqs].map((w) => () => w.close()),
      // Read before the device fd closes: closing it has vfio-pci disable and reset the device.
      () => {
        if (checkIdle && !this.device.closed) findings = this.leftBusy();
      },
      ...[...this.#buffers].map((b) => () => b.close()),
      () => this.device.close(),
      () => this.group.close(),
      () => this.container.close(),
    ]);
    try {
      await this.#restore();
    } catch (e) {
      errors.push(e);
    }
    if (findings.length > 0) {
      throw new LeftBusyError(this.bdf, this.label, findings, errors.length > 0 ? errors[0] : undefined);
    }
    if (errors.length > 0) throw errors[0];
  }

  #checkOpen(op: string): void {
    if (this.#released !== null) {
      throw new VfioBridgeError({
        message: `${op}: ${this.label} was released`,
        code: 'ECLOSED',
        hint: 'acquire the device again',
      });
    }
  }
}
