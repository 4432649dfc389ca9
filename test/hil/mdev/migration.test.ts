// Migration v2 on mtty, on each IOMMU backend (both instances through their groups, then both
// through their cdevs on iommufd): its flags and state, every arc it implements (timed), refusals
// before the ioctl, and the state of one mtty holding bytes in its FIFO and set registers carried
// into another through a stream, where it continues exactly where the first stopped; corrupted,
// truncated and foreign streams refused, each leaving the device usable.
import { PassThrough, Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import {
  arcTour,
  DeviceMigration,
  DmaLogging,
  loadState,
  migrationArcs,
  MigrationError,
  saveState,
  type MigrationState,
} from '../../../lib/vfio';
import { BACKENDS, describeBackend, type Backend } from '../backends';
import { describeMtty, drain, makeMtty, openMtty, removeAll, snapshot, UART, type OpenMtty } from './mtty';

const made = new Set<string>();
const open: OpenMtty[] = [];
/** Closes and removes what a backend's run made: mtty's 24 ports do not hold two runs at once. */
async function cleanUp(): Promise<void> {
  for (const m of open.splice(0)) m.close();
  await removeAll(made);
  made.clear();
}
afterAll(cleanUp);

let backend: Backend = 'type1';

function opened(type: 'mtty-1' | 'mtty-2'): OpenMtty {
  const m = openMtty(makeMtty(type, made), backend);
  open.push(m);
  expect(m.vfio.backend).toBe(backend);
  return m;
}

/** Collects what is written into one Buffer. */
function collector(): { sink: Writable; bytes: () => Buffer } {
  const parts: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _e, cb) {
      parts.push(chunk);
      cb();
    },
  });
  return { sink, bytes: () => Buffer.concat(parts) };
}

async function save(m: OpenMtty, precopy = false): Promise<Buffer> {
  const mig = new DeviceMigration(m.vfio);
  const c = collector();
  const r = await saveState(mig, c.sink, { precopy });
  expect(r.bytes).toBe(c.bytes().length);
  expect(mig.state).toBe('STOP');
  mig.setState('RUNNING');
  return c.bytes();
}

/** The UART programmed and holding bytes: the state a migration must carry. */
function program(m: OpenMtty): void {
  m.out(UART.FCR, 0x07); // FIFO on, both cleared
  m.out(UART.LCR, 0x03);
  m.out(UART.IER, 0x05); // receive data and line status interrupts
  m.out(UART.MCR, 0x0b);
  m.out(UART.SCR, 0x5a);
  // mtty tells a full FIFO from an empty one by its head and tail alone, so keep it below 16 bytes.
  for (const c of '0123456789abcd') m.out(UART.TX, c.charCodeAt(0));
  for (let i = 0; i < 3; i++) m.in(UART.RX);
  for (const c of 'WXYZ') m.out(UART.TX, c.charCodeAt(0)); // the FIFO wraps: head 2, tail 3
  m.out(UART.LCR, 0x83); // divisor latch on: resets the divisor, then set it
  m.out(UART.DLL, 0x0c);
  m.out(UART.DLM, 0x01);
}

/** After the snapshot: latch off, IER, then the FIFO drained. */
function rest(m: OpenMtty): { IER: number; fifo: string; LSR: number } {
  m.out(UART.LCR, 0x03);
  const IER = m.in(UART.IER);
  const fifo = drain(m);
  return { IER, fifo, LSR: m.in(UART.LSR) };
}

function usable(m: OpenMtty): void {
  const mig = new DeviceMigration(m.vfio);
  expect(mig.state).toBe('RUNNING');
  m.out(UART.LCR, 0x03);
  m.out(UART.SCR, 0x3c);
  expect(m.in(UART.SCR)).toBe(0x3c);
  m.out(UART.TX, 0x41);
  expect(drain(m)).toBe('A');
}

describeMtty('migration v2', () => {
  for (const b of BACKENDS) {
    describeBackend(b, 'migration v2', () => {
      beforeAll(() => {
        backend = b;
      });
      afterAll(cleanUp);

      test('offers STOP_COPY, P2P and PRE_COPY, runs, and knows its data size', () => {
        const one = opened('mtty-1');
        const two = opened('mtty-2');
        const mig = new DeviceMigration(one.vfio);
        expect(mig.flags()).toMatchObject({ stopCopy: true, p2p: true, preCopy: true });
        expect(mig.state).toBe('RUNNING');
        // mtty's state: a 24-byte header, then 36 bytes per port.
        expect(mig.dataSize()).toBe(60n);
        expect(new DeviceMigration(two.vfio).dataSize()).toBe(96n);
      });

      test('crosses every arc it implements, one request each, timed', async () => {
        const m = opened('mtty-1');
        const mig = new DeviceMigration(m.vfio);
        const flags = mig.flags();
        // RESUMING -> STOP loads what was written: mtty refuses an incomplete state, so write one.
        const own = await save(m);
        expect(migrationArcs(flags)).toHaveLength(15);
        const times = new Map<string, number[]>();
        let at: MigrationState = mig.state;
        for (let round = 0; round < 5; round++) {
          for (const to of arcTour(flags, at)) {
            if (at === 'RESUMING') await pipeline(Readable.from([own]), mig.session!.writer());
            const step = mig.setState(to, { stepwise: true });
            expect(step.path.arcs).toHaveLength(1);
            const arc = step.path.arcs[0]!;
            // Sessions open and end where the uAPI says, and the kernel agrees on the state.
            if (arc.effect === 'save' || arc.effect === 'resume') expect(step.session?.kind).toBe(arc.effect);
            if (arc.effect === 'end') expect(mig.session).toBeNull();
            expect(mig.state).toBe(to);
            const key = `${arc.from} -> ${arc.to}`;
            times.set(key, [...(times.get(key) ?? []), step.requests[0]!.ms]);
            at = to;
          }
        }
        expect(times.size).toBe(15);
        const rows = [...times].map(([k, v]) => {
          const s = [...v].sort((a, b) => a - b);
          return `${k.padEnd(32)} median ${(s[s.length >> 1]! * 1000).toFixed(0).padStart(6)} us  max ${(s.at(-1)! * 1000).toFixed(0).padStart(6)} us`;
        });
        console.log(`arc latency (mtty, 5 rounds, one ioctl each):\n${rows.join('\n')}`);
        mig.setState('RUNNING');
      });

      test('refuses what the kernel would refuse before any ioctl, with the requests that work', () => {
        const m = opened('mtty-1');
        const mig = new DeviceMigration(m.vfio);
        mig.setState('STOP_COPY');
        let e: MigrationError | undefined;
        try {
          mig.setState('PRE_COPY');
        } catch (x) {
          e = x as MigrationError;
        }
        expect(e).toBeInstanceOf(MigrationError);
        expect(e!.code).toBe('EMIGARC');
        expect(e!.requests).toEqual(['RUNNING', 'PRE_COPY']);
        expect(mig.state).toBe('STOP_COPY'); // nothing was asked of the kernel
        for (const r of e!.requests!) mig.setState(r);
        expect(mig.state).toBe('PRE_COPY');
        mig.setState('RUNNING');
      });

      test('PRE_COPY streams the header while running, STOP_COPY the rest on the same fd', async () => {
        const m = opened('mtty-1');
        const mig = new DeviceMigration(m.vfio);
        const s = mig.setState('PRE_COPY').session!;
        expect(s.precopyInfo()).toEqual({ initialBytes: 24n, dirtyBytes: 0n });
        const round = s.reader();
        const head: Buffer[] = [];
        for await (const c of round) head.push(c as Buffer);
        expect(Buffer.concat(head)).toHaveLength(24);
        expect(round.caughtUp).toBe(true);
        expect(s.precopyInfo().initialBytes).toBe(0n);
        const step = mig.setState('STOP_COPY');
        expect(step.session).toBe(s); // PRE_COPY_P2P -> STOP_COPY continues the session
        const last = s.reader();
        const tail: Buffer[] = [];
        for await (const c of last) tail.push(c as Buffer);
        expect(Buffer.concat(tail)).toHaveLength(36);
        expect(last.caughtUp).toBe(false);
        mig.setState('RUNNING');
        expect(s.closed).toBe(true);
      });

      test("one mtty's state, FIFO and registers, continues in another exactly where it stopped", async () => {
        const a = opened('mtty-1');
        const b = opened('mtty-1');
        program(a);
        const before = snapshot(a);
        expect(before.LSR & 0x61).toBe(0x01); // data ready, transmitter not empty
        const t0 = performance.now();
        const state = await save(a, true);
        const saveMs = performance.now() - t0;
        expect(state).toHaveLength(60);

        b.out(UART.SCR, 0x11); // b has a state of its own until the load
        const t1 = performance.now();
        const r = await loadState(new DeviceMigration(b.vfio), Readable.from([state]));
        const loadMs = performance.now() - t1;
        expect(r).toMatchObject({ bytes: 60, state: 'RUNNING' });
        console.log(
          `mtty state: ${state.length} bytes; save ${saveMs.toFixed(1)} ms (PRE_COPY + STOP_COPY), ` +
            `load ${loadMs.toFixed(1)} ms (RESUMING -> STOP took ${r.commitMs.toFixed(2)} ms)`,
        );

        expect(snapshot(b)).toEqual(before);
        expect(before).toMatchObject({ DLL: 0x0c, DLM: 0x01, LCR: 0x83, MCR: 0x0b, SCR: 0x5a });
        const fromB = rest(b);
        expect(fromB).toEqual({ IER: 0x05, fifo: '3456789abcdWXYZ', LSR: 0x60 }); // drained: empty
        expect(rest(a)).toEqual(fromB); // the source, running again, holds the same
      });

      test('the state streams through a pipe with backpressure, a byte at a time', async () => {
        const a = opened('mtty-1');
        const b = opened('mtty-1');
        program(a);
        const before = snapshot(a);
        const pipe = new PassThrough({ highWaterMark: 1 });
        const migA = new DeviceMigration(a.vfio);
        const migB = new DeviceMigration(b.vfio);
        const dribble = async function* (src: AsyncIterable<Buffer>) {
          for await (const chunk of src) for (const byte of chunk) yield Buffer.from([byte]);
        };
        const [saved, loaded] = await Promise.all([
          saveState(migA, pipe, { chunkSize: 7 }),
          loadState(migB, Readable.from(dribble(pipe))),
        ]);
        expect(saved.bytes).toBe(60);
        expect(loaded.bytes).toBe(60);
        migA.setState('RUNNING');
        expect(snapshot(b)).toEqual(before);
      });

      test('DMA logging starts, reports no page (mtty writes no memory) and stops', () => {
        const m = opened('mtty-1');
        const log = new DmaLogging(m.vfio);
        expect(log.probe()).toBe(true);
        expect(log.start([{ iova: 0x100000n, length: 0x10000n }])).toBe(4096n);
        expect(log.report(0x100000n, 0x10000n)).toEqual([]);
        log.stop();
        expect(log.pageSize).toBeNull();
      });

      describe('refused streams leave the device usable', () => {
        let good: Buffer;
        beforeAll(async () => {
          const src = opened('mtty-1');
          program(src);
          good = await save(src);
        });

        async function refused(m: OpenMtty, stream: Buffer): Promise<MigrationError> {
          try {
            await loadState(new DeviceMigration(m.vfio), Readable.from([stream]));
          } catch (e) {
            expect(e).toBeInstanceOf(MigrationError);
            return e as MigrationError;
          }
          throw new Error('the stream was taken');
        }

        test('a corrupted header', async () => {
          const m = opened('mtty-1');
          const bad = Buffer.from(good);
          bad[0] ^= 0xff; // the magic
          const e = await refused(m, bad);
          expect(e.code).toBe('EMIGDATA');
          expect(e.message).toMatch(/refused the migration data at byte 0: write answered EFAULT/);
          expect(e.message).toMatch(/the device was reset \(VFIO_DEVICE_RESET\).*; it is in RUNNING$/);
          usable(m);
        });

        test('a truncated stream', async () => {
          const m = opened('mtty-1');
          const e = await refused(m, good.subarray(0, 40));
          expect(e.code).toBe('EMIGDATA');
          expect(e.message).toMatch(/RESUMING -> STOP failed with EINVAL; the device is now in RESUMING/);
          expect(e.state).toBe('RUNNING');
          usable(m);
        });

        test('a stream from a dual-port mtty into a single-port one, and the other way', async () => {
          const two = opened('mtty-2');
          const twoState = await save(two);
          expect(twoState).toHaveLength(96);
          const one = opened('mtty-1');
          const e = await refused(one, twoState);
          expect(e.code).toBe('EMIGDATA');
          expect(e.message).toMatch(/write answered ENOMEM/); // more than a one-port state holds
          usable(one);
          const back = await refused(two, good);
          expect(back.code).toBe('EMIGDATA');
          expect(back.message).toMatch(/write answered EFAULT/); // its header names one port
          usable(two);
        });
      });
    });
  }
});
