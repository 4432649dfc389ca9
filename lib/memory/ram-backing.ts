/**
 * What stands behind a ram region: a buffer given up front, a buffer a factory makes on the first
 * access, or zeroed memory allocated on the first access. Making it late matters for big memory:
 * V8 counts an ArrayBuffer's length as external memory, and hundreds of MiB of it made at once
 * start a full garbage collection that holds the event loop.
 */
import { checkRamBacking } from './validate';

/** The memory a ram region reads and writes. */
export type RamBuffer = ArrayBuffer | SharedArrayBuffer;

/**
 * Makes a ram region's backing on the first access through the memory model. It is called at most
 * once while it succeeds; what it returns must be an ArrayBuffer or SharedArrayBuffer of at least
 * the region's size, or the access fails with a TypeError or RangeError naming the region. A
 * factory that throws (its memory was closed) fails the access with that error, and is asked again
 * next time.
 */
export type RamBufferFactory = () => RamBuffer;

/** @internal The backing of one ram region and how it comes to be. */
export class RamBacking {
  /** The buffer once there is one: given, made by the factory or allocated. */
  buffer: RamBuffer | null;
  /** The most the region may grow to: the given buffer's length, or the size at creation. */
  readonly capacity: number;
  private readonly _factory: RamBufferFactory | null;
  /** The owner said the memory is gone (see {@link RamBacking.release}). */
  private _released = false;

  constructor(source: RamBuffer | RamBufferFactory | undefined, size: number, name: string) {
    if (typeof source === 'function') {
      this.buffer = null;
      this.capacity = size;
      this._factory = source;
    } else if (source !== undefined) {
      checkRamBacking(name, source, size);
      this.buffer = source;
      this.capacity = source.byteLength;
      this._factory = null;
    } else {
      this.buffer = null;
      this.capacity = size;
      this._factory = null;
    }
  }

  /**
   * Whether the memory no longer holds a region of `size` bytes: the owner released it, the buffer
   * was detached (GuestRam closed it) or a resizable one shrank.
   */
  lost(size: number): boolean {
    return this._released || (this.buffer !== null && this.buffer.byteLength < size);
  }

  /** The buffer, made now if it was not yet: by the factory (checked), else zeroed. */
  make(name: string): RamBuffer {
    if (this.buffer !== null) return this.buffer;
    if (this._factory === null) return (this.buffer = new ArrayBuffer(this.capacity));
    const b: unknown = this._factory();
    checkRamBacking(name, b, this.capacity, 'the backing factory of ');
    return (this.buffer = b);
  }

  /** The owner's memory is gone: the region shows nothing from its next rendering on. */
  release(): void {
    this._released = true;
  }
}
