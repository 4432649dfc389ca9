// The migration data fd as Node streams (lib/vfio/migration-stream.ts), on files standing in for
// the kernel's data fd: reads until the end in STOP_COPY and until "nothing for now" in PRE_COPY
// without closing the session, backpressure with at most a chunk or two held, writes finished whole,
// errors named as the device's refusal, and the fd left to the session.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { MigrationError, MigrationSession } from '../../lib/vfio';
import { native } from '../../lib/native';
import { tempDir } from './helpers';

let tmp: { dir: string; remove(): void };
beforeEach(() => (tmp = tempDir('mig-stream-')));
afterEach(() => tmp.remove());

/** A session over `file` opened with `flags`, as a state change would hand one back. */
function session(
  kind: 'save' | 'resume',
  to: 'STOP_COPY' | 'PRE_COPY' | 'RESUMING',
  file: string,
  flags: string,
): MigrationSession {
  const fd = fs.openSync(file, flags);
  const handle = native.dupFd(fd);
  fs.closeSync(fd);
  return new MigrationSession(kind, to, handle, 'fake-device', () => to);
}

/** A Writable that takes a chunk every `delayMs`, recording the reader's buffered bytes. */
function slowSink(delayMs: number, seen: Buffer[], watch?: () => number, peaks?: number[]): Writable {
  return new Writable({
    highWaterMark: 1,
    write(chunk: Buffer, _e, cb) {
      seen.push(chunk);
      if (watch && peaks) peaks.push(watch());
      setTimeout(cb, delayMs);
    },
  });
}

describe('reading a save session', () => {
  it('streams a STOP_COPY state to its end in chunks, holding at most two', async () => {
    const data = crypto.randomBytes(3 * 1024 * 1024 + 123);
    const file = path.join(tmp.dir, 'state');
    fs.writeFileSync(file, data);
    using s = session('save', 'STOP_COPY', file, 'r');
    const reader = s.reader({ chunkSize: 256 * 1024 });
    const seen: Buffer[] = [];
    const peaks: number[] = [];
    await pipeline(
      reader,
      slowSink(2, seen, () => reader.readableLength, peaks),
    );
    expect(Buffer.concat(seen).equals(data)).toBe(true);
    expect(reader.bytesRead).toBe(data.length);
    expect(reader.caughtUp).toBe(false);
    expect(Math.max(...peaks)).toBeLessThanOrEqual(2 * 256 * 1024);
    expect(seen.every((c) => c.length <= 256 * 1024)).toBe(true);
    expect(s.closed).toBe(false); // the stream never closes the session's fd
  });

  it('ends a PRE_COPY round where the device has nothing more, and reads on from there', async () => {
    const file = path.join(tmp.dir, 'state');
    fs.writeFileSync(file, 'header-');
    using s = session('save', 'PRE_COPY', file, 'r');
    const first: Buffer[] = [];
    const round = s.reader();
    for await (const c of round) first.push(c as Buffer);
    expect(Buffer.concat(first).toString()).toBe('header-');
    expect(round.caughtUp).toBe(true);
    // The device produced more (here: the file grew); STOP_COPY goes on on the same fd.
    fs.appendFileSync(file, 'ports');
    s._stopCopy();
    const rest: Buffer[] = [];
    const last = s.reader();
    for await (const c of last) rest.push(c as Buffer);
    expect(Buffer.concat(rest).toString()).toBe('ports');
    expect(last.caughtUp).toBe(false);
  });

  it('fails with the session over once it is closed', async () => {
    const file = path.join(tmp.dir, 'state');
    fs.writeFileSync(file, 'x');
    const s = session('save', 'STOP_COPY', file, 'r');
    const reader = s.reader();
    s.close();
    await expect(pipeline(reader, slowSink(0, []))).rejects.toMatchObject({ code: 'ECLOSED' });
    expect(() => s.reader()).toThrow(/session of fake-device is over/);
  });

  it('is read, never written, and says so', () => {
    const file = path.join(tmp.dir, 'state');
    fs.writeFileSync(file, 'x');
    using s = session('save', 'STOP_COPY', file, 'r');
    expect(() => s.writer()).toThrow(/is read, not written/);
    expect(() => s.reader({ chunkSize: 0 })).toThrow(/chunkSize 0/);
  });
});

describe('writing a resume session', () => {
  it('writes a stream whole, chunk by chunk, and leaves the fd open', async () => {
    const data = crypto.randomBytes(2 * 1024 * 1024 + 7);
    const file = path.join(tmp.dir, 'in');
    fs.writeFileSync(file, '');
    using s = session('resume', 'RESUMING', file, 'w');
    const writer = s.writer({ chunkSize: 100_000 });
    await pipeline(async function* () {
      for (let at = 0; at < data.length; at += 300_000) yield data.subarray(at, at + 300_000);
    }, writer);
    expect(writer.bytesWritten).toBe(data.length);
    expect(fs.readFileSync(file).equals(data)).toBe(true);
    expect(s.closed).toBe(false);
  });

  it("names the device's refusal, with the byte it came at", async () => {
    const file = path.join(tmp.dir, 'in');
    fs.writeFileSync(file, '');
    using s = session('resume', 'RESUMING', file, 'r'); // a write to it fails: EBADF
    const writer = s.writer();
    let err: unknown;
    try {
      await pipeline(async function* () {
        yield Buffer.from('abc');
      }, writer);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(MigrationError);
    expect((err as MigrationError).code).toBe('EBADF');
    expect((err as MigrationError).message).toBe(
      'fake-device refused the migration data at byte 0: write answered EBADF',
    );
  });
});
