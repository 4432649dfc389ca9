// The promise methods of Group and Device without VFIO: regular files stand in for the nodes, so
// every ioctl fails with ENOTTY, on the thread pool as on the calling thread. Each rejection must be
// what the synchronous method throws.
import * as fs from 'node:fs';
import * as path from 'node:path';

import {
  Device,
  DeviceIrq,
  EventFd,
  Group,
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_IRQ_SET_DATA_EVENTFD,
  type VfioError,
} from '../../lib';
import { IrqChangeQueue } from '../../lib/vfio/irq-queue';
import { native } from '../../lib/native';
import { tempDir } from './helpers';

async function failure(fn: () => unknown): Promise<Error> {
  try {
    await fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a failure');
}

function fields(e: unknown): Record<string, unknown> {
  const x = e as Error & Record<string, unknown>;
  return { ...x, name: x.name, message: x.message, kind: x.constructor.name };
}

describe('promise methods without VFIO', () => {
  let tmp: ReturnType<typeof tempDir>;
  let node: string;
  beforeEach(() => {
    tmp = tempDir();
    node = path.join(tmp.dir, '7');
    fs.writeFileSync(node, '');
  });
  afterEach(() => tmp.remove());

  test('Group.openDeviceAsync rejects as openDevice throws, and counts the device as open meanwhile', async () => {
    const g = Group.open(7, { devDir: tmp.dir });
    try {
      const sync = await failure(() => g.openDevice('00:03.0'));
      expect(sync).toMatchObject({ code: 'ENOTTY', op: 'VFIO_GROUP_GET_DEVICE_FD', bdf: '0000:00:03.0' });
      const p = g.openDeviceAsync('00:03.0');
      const busy = await failure(() => g.openDevice('0000:00:03.0'));
      expect(busy).toMatchObject({ code: 'EBUSY', bdf: '0000:00:03.0' });
      expect(busy.message).toContain('openDeviceAsync');
      expect((await failure(() => g.openDeviceAsync('0000:00:03.0'))).message).toContain('openDeviceAsync');
      expect(fields(await failure(() => p))).toEqual(fields(sync));
      // Settled: the device is no longer counted as open.
      expect(fields(await failure(() => g.openDevice('00:03.0')))).toEqual(fields(sync));
      expect(await failure(() => g.openDeviceAsync('zz:03.0'))).toBeInstanceOf(RangeError);
      const ac = new AbortController();
      ac.abort(new Error('enough'));
      expect((await failure(() => g.openDeviceAsync('00:03.0', { signal: ac.signal }))).message).toBe(
        'enough',
      );
    } finally {
      g.close();
    }
    expect(fields(await failure(() => g.openDeviceAsync('00:03.0')))).toEqual(
      fields(await failure(() => g.openDevice('00:03.0'))),
    );
  });

  test('Device.resetAsync and hotResetAsync reject as reset and hotReset throw', async () => {
    const before = fs.readdirSync('/proc/self/fd').length;
    const d = Device._fromHandle(native.openFd(node), '0000:00:03.0', '/dev/vfio/7');
    for (const [sync, async] of [
      [() => d.reset(), () => d.resetAsync()],
      [() => d.hotReset(), () => d.hotResetAsync()],
      [() => d.hotReset([]), () => d.hotResetAsync([])],
    ] as const) {
      const a = await failure(sync);
      expect((a as VfioError).code).toBe('ENOTTY');
      expect(fields(await failure(async))).toEqual(fields(a));
    }
    const ac = new AbortController();
    ac.abort(new Error('stop'));
    await expect(d.resetAsync({ signal: ac.signal })).rejects.toThrow('stop');
    await expect(d.hotResetAsync(undefined, { signal: ac.signal })).rejects.toThrow('stop');
    // A reset queued before close still settles; the duplicate fd it ran on is closed after.
    const p = failure(() => d.resetAsync());
    await d.closeAsync();
    expect(((await p) as VfioError).code).toBe('ENOTTY');
    expect(fields(await failure(() => d.resetAsync()))).toEqual(fields(await failure(() => d.reset())));
    expect((await failure(() => d.resetAsync())) as VfioError).toMatchObject({ code: 'ECLOSED' });
    expect(fs.readdirSync('/proc/self/fd').length).toBe(before);
  });

  test('interrupt changes and routing tables on the thread pool: rejected as the synchronous ioctls throw, in order', async () => {
    const before = fs.readdirSync('/proc/self/fd').length;
    const d = Device._fromHandle(native.openFd(node), '0000:00:03.0', '/dev/vfio/7');
    const trigger = EventFd.open();
    const payload = new Uint8Array(new Int32Array([trigger.fd, -1]).buffer);
    const set = [1, VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, 0, 2, payload] as const;
    const sync = await failure(() => d.setIrqs(...set));
    expect(sync).toMatchObject({ code: 'ENOTTY', op: 'VFIO_DEVICE_SET_IRQS' });
    expect(sync.message).toContain('index 1 start 0 count 2 flags 0x24');
    // Queued in order behind each other on the device: settled in the order made, the reset too.
    const settled: string[] = [];
    const made = [0, 1, 2, 3].map((k) =>
      failure(() => native.vfioSetIrqsAsync(d._handle, ...set)).then((e) => {
        settled.push(`set ${k}`);
        return e;
      }),
    );
    made.push(failure(() => d.resetAsync()).then((e) => (settled.push('reset'), e)));
    // The eventfd may be closed once a change is queued: the call holds its own duplicate.
    trigger.close();
    const errors = await Promise.all(made);
    expect(settled).toEqual(['set 0', 'set 1', 'set 2', 'set 3', 'reset']);
    for (const e of errors.slice(0, 4)) expect(fields(e)).toEqual(fields(sync));
    // An eventfd that is not open is refused when the change is made, before any ioctl.
    const notOpen = new Uint8Array(new Int32Array([1_000_000]).buffer);
    const closed = await failure(() => native.vfioSetIrqsAsync(d._handle, 1, set[1], 0, 1, notOpen));
    expect(closed).toMatchObject({ code: 'EBADF', op: 'VFIO_DEVICE_SET_IRQS' });
    expect(closed.message).toContain('duplicating eventfd');
    expect(await failure(() => native.vfioSetIrqsAsync(d._handle, 1, 0, 0, 1, 7 as never))).toBeInstanceOf(
      TypeError,
    );

    // KVM_SET_GSI_ROUTING the same way (a regular file for the VM): one header, no entries.
    const table = Buffer.alloc(8);
    const syncRouting = await failure(() => native.kvmSetGsiRouting(d._handle, table));
    expect(syncRouting.message).toContain('0 routes');
    const tables = [0, 1, 2].map(() => failure(() => native.kvmSetGsiRoutingAsync(d._handle, table)));
    for (const e of await Promise.all(tables)) expect(fields(e)).toEqual(fields(syncRouting));
    expect(await failure(() => native.kvmSetGsiRoutingAsync(d._handle, Buffer.alloc(9)))).toBeInstanceOf(
      RangeError,
    );

    // A DeviceIrq over the queue: each change reaches onError instead of throwing, pending settles.
    const refused: unknown[] = [];
    const info = {
      index: 1,
      flags: 1,
      count: 2,
      eventfd: true,
      maskable: false,
      automasked: false,
      noresize: false,
    };
    const queue = new IrqChangeQueue({ bdf: d.bdf, irqInfo: () => info, handle: () => d._handle }, (e) =>
      refused.push(e),
    );
    expect(queue.pending).toBeNull();
    const irq = new DeviceIrq(queue, 1, { vectors: 2 });
    expect(irq.enabled).toBe(true);
    const wait = queue.pending;
    expect(wait).not.toBeNull();
    irq.close();
    await wait;
    await queue.pending;
    expect(queue.pending).toBeNull();
    expect(refused.map((e) => (e as VfioError).code)).toEqual(['ENOTTY', 'ENOTTY']);
    expect((refused[1] as Error).message).toContain('flags 0x21'); // the disable
    // An onError that throws is a process warning, and the changes still settle.
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    const throwing = new IrqChangeQueue({ bdf: d.bdf, irqInfo: () => info, handle: () => d._handle }, () => {
      throw new Error('sink gone');
    });
    throwing.setIrqs(1, 0x21, 0, 0);
    await throwing.pending;
    await new Promise((r) => setImmediate(r));
    expect(warn.mock.calls.map((c) => c[0])).toEqual(['queueIrqChanges: onError threw: Error: sink gone']);
    warn.mockRestore();
    d.close();
    expect(fs.readdirSync('/proc/self/fd').length).toBe(before);
  });

  test('closeAsync comes after the calls queued before it: once it resolves, no duplicate of the file is left', async () => {
    // What a VFIO device needs to be released for its next open: every descriptor of its file
    // closed, the duplicates the queued calls hold included.
    const opened = (): number =>
      fs.readdirSync('/proc/self/fd').filter((fd) => {
        try {
          return fs.readlinkSync(`/proc/self/fd/${fd}`) === node;
        } catch {
          return false;
        }
      }).length;
    const d = Device._fromHandle(native.openFd(node), '0000:00:03.0', '/dev/vfio/7');
    const payload = new Uint8Array(new Int32Array([-1]).buffer);
    const settled: string[] = [];
    const made = [0, 1, 2, 3].map((k) =>
      failure(() => native.vfioSetIrqsAsync(d._handle, 1, VFIO_IRQ_SET_DATA_EVENTFD, 0, 1, payload)).then(
        () => settled.push(`set ${k}`),
      ),
    );
    // The device's own fd, and a duplicate held by each call still waiting for its turn.
    expect(opened()).toBeGreaterThanOrEqual(4);
    await d.closeAsync().then(() => settled.push('close'));
    expect(opened()).toBe(0);
    await Promise.all(made);
    expect(settled).toEqual(['set 0', 'set 1', 'set 2', 'set 3', 'close']);
    // Closed already: resolves, and nothing is left open.
    await d.closeAsync();
    expect(opened()).toBe(0);
  });
});
