// The promise methods of Group and Device without VFIO: regular files stand in for the nodes, so
// every ioctl fails with ENOTTY, on the thread pool as on the calling thread. Each rejection must be
// what the synchronous method throws.
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Device, Group, type VfioError } from '../../lib';
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
});
