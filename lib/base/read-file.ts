/**
 * Reading a whole file without holding the event loop: in pieces on the libuv thread pool, through
 * node:fs's callback API. fs.promises would do the same reads, but its first use loads a part of
 * Node (fs/promises and the readline modules it pulls in) on the event loop, which held a VMM's
 * first turn for 10-20 ms on a slow host.
 */
import * as fs from 'node:fs';

import { ArgRangeError } from './error';

/** The most one read asks of the kernel: one job of the thread pool, one I/O callback on the loop. */
export const READ_PIECE = 1 << 20;

function opened(path: string): Promise<number> {
  return new Promise((resolve, reject) => fs.open(path, 'r', (e, fd) => (e ? reject(e) : resolve(fd))));
}

function sizeOf(fd: number): Promise<number> {
  return new Promise((resolve, reject) => fs.fstat(fd, (e, st) => (e ? reject(e) : resolve(st.size))));
}

function readInto(fd: number, buf: Buffer, at: number, length: number): Promise<number> {
  return new Promise((resolve, reject) =>
    fs.read(fd, buf, at, length, null, (e, n) => (e ? reject(e) : resolve(n))),
  );
}

function closed(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.close(fd, (e) => (e ? reject(e) : resolve())));
}

/**
 * readFileAsync: the whole of the file at `path`, read from start to end in reads of at most
 * `piece` bytes. A file that grows while it is read is read to its end; one whose size is not
 * known (0 in stat: /proc, a pipe) is read until a read returns nothing.
 * @throws what fs.open, fs.fstat, fs.read or fs.close threw (an Error with code and syscall); the
 *   fd is closed in every case (a failed read is what is thrown, not the close after it)
 */
export async function readFileAsync(path: string, piece = READ_PIECE): Promise<Buffer> {
  if (!Number.isSafeInteger(piece) || piece <= 0) {
    throw new ArgRangeError(`readFileAsync: piece ${String(piece)} is not a positive integer of bytes`);
  }
  const fd = await opened(path);
  let data: Buffer;
  try {
    data = await readAll(fd, await sizeOf(fd), piece);
  } catch (e) {
    await closed(fd).catch(() => undefined); // the read's error is the one that says what went wrong
    throw e;
  }
  await closed(fd);
  return data;
}

async function readAll(fd: number, size: number, piece: number): Promise<Buffer> {
  const full: Buffer[] = [];
  let buf = Buffer.allocUnsafeSlow(size > 0 ? size : piece);
  let filled = 0;
  for (;;) {
    if (filled === buf.length) {
      full.push(buf);
      buf = Buffer.allocUnsafeSlow(piece);
      filled = 0;
    }
    const n = await readInto(fd, buf, filled, Math.min(piece, buf.length - filled));
    if (n === 0) break;
    filled += n;
  }
  const last = buf.subarray(0, filled);
  return full.length === 0 ? last : Buffer.concat([...full, last]);
}
