// DeviceIrq's use of VFIO_DEVICE_SET_IRQS, on a recording fake of the ioctl with real eventfds:
// the payloads, subsets, growth, resample, ownership of fds, and delivery through the watcher.
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import {
  DeviceIrq,
  EventFd,
  type IrqDevice,
  type IrqInfo,
  parseHotResetInfo,
  VFIO_IRQ_SET_ACTION_MASK,
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_IRQ_SET_ACTION_UNMASK,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_IRQ_SET_DATA_NONE,
  VfioError,
} from '../../lib';
import { groupsNotOwnedError } from '../../lib/vfio/hot-reset';
import { caught } from './helpers';

interface Call {
  index: number;
  flags: number;
  start: number;
  count: number;
  fds: number[] | null;
}

class RecordingDevice implements IrqDevice {
  readonly bdf = '0000:00:05.0';
  readonly calls: Call[] = [];
  fail: string | null = null;
  constructor(readonly infos: Record<number, Partial<IrqInfo>>) {}
  irqInfo(index: number): IrqInfo {
    const i = this.infos[index] ?? {};
    return {
      index,
      flags: 1,
      count: 1,
      eventfd: true,
      maskable: false,
      automasked: false,
      noresize: false,
      ...i,
    };
  }
  setIrqs(index: number, flags: number, start: number, count: number, data?: Uint8Array): void {
    if (this.fail) {
      throw new VfioError({ message: 'refused', code: this.fail, op: 'VFIO_DEVICE_SET_IRQS' });
    }
    const fds = data ? [...new Int32Array(data.buffer, data.byteOffset, data.byteLength / 4)] : null;
    this.calls.push({ index, flags, start, count, fds });
  }
}

const TRIGGER = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
const DISABLE = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
const isOpen = (fd: number): boolean => fs.existsSync(`/proc/self/fd/${fd}`);

test('enable, grow in place, shrink, and close: payloads and fd ownership', () => {
  const d = new RecordingDevice({ 2: { count: 5 } });
  const mine = EventFd.open();
  const irq = new DeviceIrq(d, 2, { vectors: 2, eventfds: [mine, null] });
  expect(irq.fds).toEqual([mine.fd, -1]);
  expect(d.calls).toEqual([{ index: 2, flags: TRIGGER, start: 0, count: 2, fds: [mine.fd, -1] }]);
  irq.resize(4);
  const created = irq.fds.slice(2);
  expect(d.calls[1]).toEqual({ index: 2, flags: TRIGGER, start: 2, count: 2, fds: created });
  irq.setVector(1, undefined);
  expect(d.calls[2]).toMatchObject({ start: 1, count: 1 });
  irq.resize(2);
  expect(d.calls.slice(3).map((c) => [c.flags, c.count])).toEqual([
    [DISABLE, 0],
    [TRIGGER, 2],
  ]);
  expect(created.some(isOpen)).toBe(false);
  const second = irq.fds[1];
  irq.close();
  irq.close();
  expect(d.calls.at(-1)).toEqual({ index: 2, flags: DISABLE, start: 0, count: 0, fds: null });
  expect(isOpen(second)).toBe(false);
  expect(isOpen(mine.fd)).toBe(true);
  expect(caught(() => irq.resize(3)).code).toBe('ECLOSED');
  mine.close();
});

test('a NORESIZE index is re-enabled whole to grow', () => {
  const d = new RecordingDevice({ 1: { count: 4, noresize: true } });
  const irq = new DeviceIrq(d, 1, {});
  irq.resize(4);
  expect(d.calls.map((c) => [c.flags, c.start, c.count])).toEqual([
    [TRIGGER, 0, 1],
    [DISABLE, 0, 0],
    [TRIGGER, 0, 4],
  ]);
  irq.close();
});

test('INTx: resample eventfd, unmask, mask; disable and enable keep the same fds', () => {
  const d = new RecordingDevice({ 0: { maskable: true, automasked: true } });
  const irq = new DeviceIrq(d, 0, { resample: true });
  const fds = irq.fds;
  expect(irq.resampleFd).toBeGreaterThan(2);
  expect(d.calls[1]).toEqual({
    index: 0,
    flags: VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_UNMASK,
    start: 0,
    count: 1,
    fds: [irq.resampleFd],
  });
  irq.unmask();
  irq.mask();
  expect(d.calls.slice(2).map((c) => c.flags)).toEqual([
    VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK,
    VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK,
  ]);
  irq.disable();
  irq.enable();
  expect(irq.fds).toEqual(fds);
  expect(d.calls.slice(-2).map((c) => c.fds)).toEqual([fds, [irq.resampleFd]]);
  const r = irq.resampleFd;
  irq.close();
  expect(isOpen(r)).toBe(false);
});

test('bad requests are typed errors; ENOTTY on mask explains the emulation', () => {
  const d = new RecordingDevice({ 1: { count: 1 }, 3: { count: 0 } });
  expect(caught(() => new DeviceIrq(d, 3, {})).code).toBe('ENOIRQ');
  expect(() => new DeviceIrq(d, 1, { vectors: 2 })).toThrow(RangeError);
  expect(() => new DeviceIrq(d, 1, { resample: true })).toThrow(RangeError);
  expect(() => new DeviceIrq(d, 1, { eventfds: [-4] })).toThrow(RangeError);
  const irq = new DeviceIrq(d, 1, {});
  d.fail = 'ENOTTY';
  const e = caught(() => irq.mask(0));
  expect(e.code).toBe('ENOTTY');
  expect(e.hint).toMatch(/emulate the mask/);
  d.fail = null;
  irq.close();
});

test('delivery: the interrupt event gets the vector and the coalesced count', async () => {
  const d = new RecordingDevice({ 2: { count: 3 } });
  const got: [number, number][] = [];
  const irq = new DeviceIrq(d, 2, { vectors: 3 });
  expect(irq.hasRef()).toBe(false); // nothing watched without a listener
  irq.on('interrupt', (v, n) => got.push([v, n]));
  const fd = irq.fds[2];
  const { eventfdSignal } = await import('../../lib');
  eventfdSignal(fd, 1);
  eventfdSignal(fd, 1);
  await new Promise((r) => setTimeout(r, 20));
  expect(got).toEqual([[2, 2]]);
  expect(irq.hasRef()).toBe(true);
  irq.unref();
  expect(irq.hasRef()).toBe(false);
  irq.close();
  expect(isOpen(fd)).toBe(false);
});

test('hot reset info decoding and the error naming groups not owned', () => {
  const buf = Buffer.alloc(12 + 16);
  buf.writeUInt32LE(28, 0);
  buf.writeUInt32LE(2, 8);
  buf.writeUInt32LE(7, 12);
  buf.writeUInt16LE(0, 16);
  buf.writeUInt8(1, 18);
  buf.writeUInt8(0, 19);
  buf.writeUInt32LE(9, 20);
  buf.writeUInt16LE(0, 24);
  buf.writeUInt8(1, 26);
  buf.writeUInt8(1, 27);
  const info = parseHotResetInfo(buf);
  expect(info.devices.map((x) => [x.group, x.bdf])).toEqual([
    [7, '0000:01:00.0'],
    [9, '0000:01:00.1'],
  ]);
  expect(info.groups).toEqual([7, 9]);
  const e = groupsNotOwnedError('0000:01:00.0', info, [9]);
  expect(e.code).toBe('EGROUPS');
  expect(e.message).toContain('group 9 (0000:01:00.1)');
  expect(caught(() => parseHotResetInfo(buf.subarray(0, 20))).code).toBe('EPROTO');
});

test('the deprecated onInterrupt option is an interrupt listener; events.once works', async () => {
  const d = new RecordingDevice({ 1: { count: 1 } });
  const got: number[] = [];
  const irq = new DeviceIrq(d, 1, { onInterrupt: (_v, n) => got.push(n), ref: false });
  expect(irq.listenerCount('interrupt')).toBe(1);
  expect(irq.hasRef()).toBe(false);
  const { eventfdSignal } = await import('../../lib');
  const next = once(irq, 'interrupt', { signal: AbortSignal.timeout(2000) });
  eventfdSignal(irq.fds[0], 3);
  expect(await next).toEqual([0, 3]);
  expect(got).toEqual([3]);
  irq.close();
});

test('watching stops with the last interrupt listener and starts again with the next', async () => {
  const d = new RecordingDevice({ 1: { count: 1 } });
  const irq = new DeviceIrq(d, 1, {});
  const { eventfdSignal } = await import('../../lib');
  const fn = (): void => undefined;
  irq.on('interrupt', fn);
  expect(irq.hasRef()).toBe(true);
  irq.off('interrupt', fn);
  expect(irq.hasRef()).toBe(false);
  // Unwatched, the eventfd keeps counting, as it does for a KVM irqfd consumer.
  eventfdSignal(irq.fds[0], 2);
  await new Promise((r) => setTimeout(r, 20));
  const got = once(irq, 'interrupt', { signal: AbortSignal.timeout(2000) });
  expect(await got).toEqual([0, 2]);
  irq.close();
});

describe('a watch that fails on the host', () => {
  /**
   * A DeviceIrq whose vector 0 "eventfd" is the write end of a FIFO: once the read end closes,
   * the poll wakes with an error and reading the write-only fd fails (EBADF).
   */
  function failing(): { irq: DeviceIrq; fail: () => void; done: () => void } {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfio-bridge-irq-'));
    const fifo = path.join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const reader = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    const writer = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
    const irq = new DeviceIrq(new RecordingDevice({ 1: { count: 2 } }), 1, { eventfds: [writer] });
    irq.on('interrupt', () => undefined);
    return {
      irq,
      fail: () => fs.closeSync(reader),
      done: () => {
        irq.close();
        fs.closeSync(writer);
        fs.rmSync(dir, { recursive: true });
      },
    };
  }

  test("is the 'error' event, with the vector, when there is a listener", async () => {
    const { irq, fail, done } = failing();
    const error = once(irq, 'error', { signal: AbortSignal.timeout(2000) });
    fail();
    const [e, v] = (await error) as [VfioError, number];
    expect(v).toBe(0);
    expect(e).toBeInstanceOf(VfioError);
    expect(e).toMatchObject({ op: 'uv_poll' });
    done();
  });

  test('without a listener it is a process warning, never a throw', async () => {
    const { fail, done } = failing();
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      fail();
      for (let i = 0; i < 100 && warn.mock.calls.length === 0; i++)
        await new Promise((r) => setTimeout(r, 10));
      expect(warn).toHaveBeenCalledWith(
        expect.stringMatching(/^0000:00:05\.0 IRQ index 1 vector 0: .*no 'error' listener/),
        {
          type: 'VfioIrqWarning',
          code: 'VFIO_BRIDGE_IRQ_FAILED',
        },
      );
    } finally {
      warn.mockRestore();
      done();
    }
  });
});
