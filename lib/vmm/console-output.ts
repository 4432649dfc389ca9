/**
 * ConsoleOutput: what becomes of the bytes a guest's serial port transmits: handed to `onOutput`,
 * cut into lines for `onLine`, kept in a bounded capture, and counted. The UART model
 * (uart.ts) owns one; it is the same whether the bytes came one THR write at a time or in one
 * piece from the vCPU threads' sink (uart-vcpu.ts).
 */
import { ArgRangeError } from '../base/error';

/** The capture grows by pieces of this many bytes. */
const CAPTURE_PIECE = 4096;
/** A line longer than this is cut: the rest of it is not kept. */
const LINE_LIMIT = 65536;

/** Where a console's bytes go (the output options of a {@link Uart16550}). */
export interface ConsoleOutputOptions {
  onOutput?: (bytes: Uint8Array) => void;
  wantsOutput?: () => boolean;
  onLine?: (line: string) => void;
  captureLimit?: number;
}

export class ConsoleOutput {
  #line: number[] = [];
  /** Full pieces of the capture, oldest first, and the piece being filled (#tail[0..#tailLength)). */
  #captured: Uint8Array[] = [];
  #capturedBytes = 0;
  #tail: Uint8Array | null = null;
  #tailLength = 0;
  #count = 0;
  readonly #limit: number;
  readonly #onOutput?: (bytes: Uint8Array) => void;
  readonly #wantsOutput?: () => boolean;
  readonly #onLine?: (line: string) => void;

  /** The callbacks are checked by the UART's constructor. */
  constructor(opts: ConsoleOutputOptions) {
    const limit = opts.captureLimit ?? 1 << 20;
    if (!Number.isSafeInteger(limit) || limit < 0) {
      throw new ArgRangeError(`Uart16550 captureLimit ${String(limit)} must be an integer >= 0`);
    }
    this.#limit = limit;
    this.#onOutput = opts.onOutput;
    this.#wantsOutput = opts.wantsOutput;
    this.#onLine = opts.onLine;
  }

  /** Bytes transmitted so far. */
  get count(): number {
    return this.#count;
  }

  /** The last `captureLimit` bytes, decoded as UTF-8 (invalid sequences replaced). */
  get captured(): string {
    const tail = this.#tail === null ? [] : [this.#tail.subarray(0, this.#tailLength)];
    const all = Buffer.concat([...this.#captured, ...tail]);
    return all.subarray(Math.max(0, all.length - this.#limit)).toString('utf8');
  }

  /** One transmitted byte; `onOutput` is asked first whether a byte string is wanted at all. */
  byte(b: number): void {
    this.#count++;
    this.#capture(b);
    if (this.#onOutput !== undefined && (this.#wantsOutput?.() ?? true)) this.#onOutput(Uint8Array.of(b));
    this.#lineByte(b);
  }

  /** Transmitted bytes in one piece: one `onOutput` call (with a copy) for all of them. */
  bytes(data: Uint8Array): void {
    this.#count += data.length;
    for (const b of data) this.#capture(b);
    if (this.#onOutput !== undefined && (this.#wantsOutput?.() ?? true))
      this.#onOutput(Uint8Array.from(data));
    for (const b of data) this.#lineByte(b);
  }

  /** Keeps `b` in the capture: a store into the piece being filled, no allocation per byte. */
  #capture(b: number): void {
    if (this.#limit === 0) return;
    if (this.#tail === null) {
      this.#tail = new Uint8Array(Math.min(CAPTURE_PIECE, this.#limit));
      this.#tailLength = 0;
    }
    this.#tail[this.#tailLength++] = b;
    if (this.#tailLength < this.#tail.length) return;
    this.#captured.push(this.#tail);
    this.#capturedBytes += this.#tail.length;
    this.#tail = null;
    if (this.#capturedBytes > this.#limit * 2) {
      // Compact now and then rather than on every piece.
      const all = Buffer.concat(this.#captured);
      const keep = all.subarray(all.length - this.#limit);
      this.#captured = [keep];
      this.#capturedBytes = keep.length;
    }
  }

  #lineByte(b: number): void {
    if (b === 0x0a) {
      let bytes = this.#line;
      if (bytes.length > 0 && bytes[bytes.length - 1] === 0x0d) bytes = bytes.slice(0, -1);
      this.#line = [];
      this.#onLine?.(Buffer.from(bytes).toString('utf8'));
    } else if (this.#line.length < LINE_LIMIT) {
      this.#line.push(b);
    }
  }
}
