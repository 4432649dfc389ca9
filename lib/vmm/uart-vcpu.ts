/**
 * UartOnVcpuThreads: a {@link Uart16550} whose console traffic the vCPU threads serve themselves,
 * as QEMU and Firecracker serve their serial port on the vCPU thread. A guest's console output is
 * THR writes, one byte each, with LSR read between them (the polled console) or an IIR read per
 * burst (the interrupt-driven tty); handed to JavaScript one at a time they were most of a booting
 * guest's exits. While the UART's state allows ({@link Uart16550.quiet}), THR writes go into a
 * {@link ByteSink} and LSR and MSR reads answer a constant, on the vCPU thread; every other access still
 * comes to the model here, which first takes the bytes in the sink, so the model sees every write in
 * the order the guest made it. The sink's bytes also come when it wakes the loop: output, lines and
 * the THRE interrupt follow within a turn of the loop instead of at each byte.
 */
import { ByteSink } from '../kvm';
import { MemoryRegion } from '../memory';
import type { Uart16550 } from './uart';
import { LSR, MSR, RBR_THR_DLL } from './uart-registers';
import { serveOnVcpuThreads, type VcpuServedEntry, type VcpuServedRegisters } from './vcpu-served';

export class UartOnVcpuThreads implements VcpuServedRegisters {
  readonly uart: Uart16550;
  readonly #sink: ByteSink;

  constructor(uart: Uart16550) {
    this.uart = uart;
    this.#sink = new ByteSink(() => this.drain());
  }

  /** The UART's region (8 one-byte registers), its registers served on the vCPU threads. */
  region(name = 'serial'): MemoryRegion {
    const region = MemoryRegion.io(name, 8, {
      read: (offset) => {
        this.drain();
        return this.uart.read(offset);
      },
      write: (offset, _size, value) => {
        this.drain();
        this.uart.write(offset, Number(value));
      },
      valid: { minAccessSize: 1, maxAccessSize: 1 },
      impl: { minAccessSize: 1, maxAccessSize: 1 },
    });
    serveOnVcpuThreads(region, this);
    return region;
  }

  /** Hand the model the bytes the vCPU threads have put in the sink since the last time. */
  drain(): void {
    const bytes = this.#sink.take();
    if (bytes !== null) this.uart.transmitBytes(bytes);
  }

  entries(): readonly VcpuServedEntry[] {
    if (this.#sink.closed) return [];
    const q = this.uart.quiet;
    const out: VcpuServedEntry[] = [];
    if (q.thr) out.push({ offset: RBR_THR_DLL, size: 1, kind: 'sink', sink: this.#sink });
    if (q.lsr !== null) out.push({ offset: LSR, size: 1, kind: 'const', value: q.lsr });
    if (q.msr !== null) out.push({ offset: MSR, size: 1, kind: 'const', value: q.msr });
    return out;
  }

  watch(fn: () => void): () => void {
    return this.uart.watchQuiet(fn);
  }

  /** Take the last bytes, then stop the sink: later writes come to the model. Idempotent. */
  close(): void {
    this.drain();
    this.#sink.close();
  }
}
