import * as fs from 'node:fs';
import * as path from 'node:path';

import { Container, Device, Group } from '../../lib';
import { native } from '../../lib/native';
import { caught, tempDir } from './helpers';

// Without VFIO on this host, a regular file stands in for the device nodes: open works and every
// VFIO ioctl fails with ENOTTY, which exercises the error and lifecycle paths of the real code.
describe('Container, Group and Device without VFIO', () => {
  let tmp: ReturnType<typeof tempDir>;
  beforeEach(() => {
    tmp = tempDir();
    fs.writeFileSync(path.join(tmp.dir, 'vfio'), '');
    fs.writeFileSync(path.join(tmp.dir, '7'), '');
  });
  afterEach(() => tmp.remove());

  test('Container.open on a missing node is ENOENT with the path', () => {
    const e = caught(() => Container.open(path.join(tmp.dir, 'missing')));
    expect(e.code).toBe('ENOENT');
    expect(e.errno).toBe(-2);
    expect(e.op).toBe('open');
    expect(e.path).toBe(path.join(tmp.dir, 'missing'));
  });

  test('Container.open on something that is not VFIO fails in VFIO_GET_API_VERSION and leaks no fd', () => {
    const before = fs.readdirSync('/proc/self/fd').length;
    const e = caught(() => Container.open(path.join(tmp.dir, 'vfio')));
    expect(e.code).toBe('ENOTTY');
    expect(e.op).toBe('VFIO_GET_API_VERSION');
    expect(e.path).toBe(path.join(tmp.dir, 'vfio'));
    expect(fs.readdirSync('/proc/self/fd').length).toBe(before);
  });

  test('Group ioctls report op, errno and path; close is idempotent; use after close is ECLOSED', () => {
    const g = Group.open(7, { devDir: tmp.dir });
    expect(g.number).toBe(7);
    expect(g.path).toBe(path.join(tmp.dir, '7'));
    const e = caught(() => g.status());
    expect(e).toMatchObject({ code: 'ENOTTY', errno: -25, op: 'VFIO_GROUP_GET_STATUS', path: g.path });
    expect(caught(() => g.openDevice('00:03.0')).op).toBe('VFIO_GROUP_GET_DEVICE_FD');
    g.close();
    g.close();
    expect(g.closed).toBe(true);
    expect(caught(() => g.status()).code).toBe('ECLOSED');
    expect(caught(() => g.openDevice('0000:00:03.0')).code).toBe('ECLOSED');
    expect(caught(() => g.unsetContainer()).code).toBe('ECLOSED');
  });

  test('Group.open validates its argument', () => {
    expect(() => Group.open(-1)).toThrow(RangeError);
    expect(() => Group.open(1.5)).toThrow(RangeError);
    expect(() => Group.open('7' as unknown as number)).toThrow(TypeError);
    const e = caught(() => Group.open(424242, { devDir: tmp.dir }));
    expect(e.code).toBe('ENOENT');
    expect(e.path).toBe(path.join(tmp.dir, '424242'));
  });

  test('a group node gets the /dev/vfio hints', () => {
    const e = caught(() => Group.open(987654));
    expect(e.code).toBe('ENOENT');
    expect(e.path).toBe('/dev/vfio/987654');
    expect(e.hint).toMatch(/vfio-pci/);
  });

  test('Device lifecycle over a device handle', () => {
    const d = Device._fromHandle(native.openFd(path.join(tmp.dir, '7')), '0000:00:03.0', '/dev/vfio/7');
    expect(d.fd).toBeGreaterThan(2);
    const e = caught(() => d.regionInfo(0));
    expect(e).toMatchObject({
      code: 'ENOTTY',
      op: 'VFIO_DEVICE_GET_REGION_INFO',
      path: path.join(tmp.dir, '7'),
    });
    expect(caught(() => d.info()).op).toBe('VFIO_DEVICE_GET_INFO');
    expect(caught(() => d.irqInfo(0)).op).toBe('VFIO_DEVICE_GET_IRQ_INFO');
    expect(caught(() => d.reset()).op).toBe('VFIO_DEVICE_RESET');
    expect(() => d.regionInfo(-1)).toThrow(RangeError);
    d.close();
    d.close();
    expect(d.fd).toBe(-1);
    for (const use of [() => d.info(), () => d.read(7, 0, 4), () => d.map(0, 0, 4096), () => d.reset()]) {
      expect(caught(use).code).toBe('ECLOSED');
    }
  });

  test('native handles: wrong types are TypeErrors, closed handles ECLOSED', () => {
    expect(() => native.vfioGroupStatus({} as never)).toThrow(TypeError);
    expect(() => native.closeFd(42 as never)).toThrow(TypeError);
    const h = native.openFd(path.join(tmp.dir, '7'));
    native.closeFd(h);
    native.closeFd(h);
    expect(native.fdOf(h)).toBe(-1);
    expect(caught(() => native.vfioDeviceReset(h)).code).toBe('ECLOSED');
  });
});

describe('region I/O through an fd (pread/pwrite)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let file: string;
  beforeEach(() => {
    tmp = tempDir();
    file = path.join(tmp.dir, 'region');
    fs.writeFileSync(file, Buffer.from([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09]));
  });
  afterEach(() => tmp.remove());

  test('each size is one little-endian pread; 8 bytes is a bigint', () => {
    const h = native.openFd(file);
    expect(native.pread(h, 0, 1)).toBe(0x01);
    expect(native.pread(h, 1, 2)).toBe(0x0302);
    expect(native.pread(h, 1, 4)).toBe(0x05040302);
    expect(native.pread(h, 1, 8)).toBe(0x0908070605040302n);
    expect(() => native.pread(h, 0, 3)).toThrow(RangeError);
    native.closeFd(h);
  });

  test('a short read or write is an error', () => {
    const h = native.openFd(file);
    const e = caught(() => native.pread(h, 6, 4));
    expect(e.code).toBe('ESHORT');
    expect(e.message).toMatch(/transferred 3 of 4 bytes/);
    expect(caught(() => native.preadBlock(h, 0, 20)).code).toBe('ESHORT');
    native.closeFd(h);
  });

  test('pwrite writes exactly its size', () => {
    const h = native.openFd(file);
    native.pwrite(h, 0, 2, 0xbeef);
    native.pwrite(h, 2, 8, 0x1122334455667788n);
    expect([...fs.readFileSync(file)]).toEqual([0xef, 0xbe, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
    expect(() => native.pwrite(h, 0, 1, 256)).toThrow(RangeError);
    expect(() => native.pwrite(h, 0, 8, 1)).toThrow(TypeError);
    native.pwriteBlock(h, 1, Buffer.from([0xaa, 0xbb]));
    expect(native.preadBlock(h, 0, 4)).toEqual(Buffer.from([0xef, 0xaa, 0xbb, 0x77]));
    expect(() => native.pwriteBlock(h, 0, new Uint16Array(2) as unknown as Uint8Array)).toThrow(TypeError);
    native.closeFd(h);
  });
});
