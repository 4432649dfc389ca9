// The lab's --device spec: presets and any QEMU model, the lab's own keys taken out and the rest
// passed to QEMU in order, and a usage error with a hint for everything it cannot take.
import { UsageError } from '../../../../lib/cli/errors';
import {
  DEVICE_SETS,
  joinOptions,
  parseAddr,
  parseDeviceSpec,
  parseSize,
  PRESETS,
  splitOptions,
} from '../../../../lib/cli/lab/devices';

describe('QEMU option lists', () => {
  test('split at single commas; a doubled comma is part of a value', () => {
    expect(splitOptions('nvme,file=a,,b.img,serial=x')).toEqual(['nvme', 'file=a,b.img', 'serial=x']);
    expect(
      joinOptions('nvme', [
        ['file', 'a,b.img'],
        ['x', null],
      ]),
    ).toBe('nvme,file=a,,b.img,x');
  });

  test('sizes and slots', () => {
    expect([
      parseSize('4096', 's'),
      parseSize('64K', 's'),
      parseSize('1m', 's'),
      parseSize('2G', 's'),
    ]).toEqual([4096, 65536, 1 << 20, 2 * 2 ** 30]);
    for (const bad of ['0', '1T', '-1', 'x', '1.5M']) expect(() => parseSize(bad, 's')).toThrow(UsageError);
    expect(parseAddr('05', 'a')).toEqual({ slot: 5, fn: undefined });
    expect(parseAddr('0x1e.3', 'a')).toEqual({ slot: 0x1e, fn: 3 });
    for (const bad of ['20', '05.8', 'x', '']) expect(() => parseAddr(bad, 'a')).toThrow(UsageError);
  });
});

describe('parseDeviceSpec', () => {
  test('a preset brings its model and IDs; QEMU options pass through in order', () => {
    expect(parseDeviceSpec('ivshmem,size=2M,role=shm,x-foo=1,flag')).toMatchObject({
      preset: 'ivshmem',
      model: 'ivshmem-plain',
      ids: '1af4:1110',
      role: 'shm',
      size: 2 << 20,
      bind: true,
      port: null,
      options: [
        ['x-foo', '1'],
        ['flag', null],
      ],
    });
  });

  test("any other model is QEMU's, checked against ids= when given", () => {
    expect(parseDeviceSpec('virtio-net-pci,ids=1AF4:1041,mq=on')).toMatchObject({
      preset: null,
      model: 'virtio-net-pci',
      ids: '1af4:1041',
      options: [['mq', 'on']],
    });
    expect(parseDeviceSpec('pci-testdev').ids).toBeNull();
  });

  test('the layout keys: port with its options, group, driver, bind, addr', () => {
    const s = parseDeviceSpec('edu,port,port.x-speed=5,port.addr=09,group=g,addr=00.0');
    expect(s.port).toEqual([
      ['x-speed', '5'],
      ['addr', '09'],
    ]);
    expect(s).toMatchObject({ group: 'g', addr: { slot: 0, fn: 0 } });
    expect(parseDeviceSpec('e1000,driver=e1000')).toMatchObject({ driver: 'e1000', bind: true });
    expect(parseDeviceSpec('blocker').bind).toBe(false);
    expect(parseDeviceSpec('edu,port=off').port).toBeNull();
  });

  test.each([
    ['', /is not a device model/],
    ['size=1M', /is not a device model/],
    ['edu,role=1x', /is not a name/],
    ['edu,role', /role needs a value/],
    ['edu,bus=pcie.0', /bus= is set by the lab.*/],
    ['edu,multifunction=on', /multifunction= is set by the lab/],
    ['edu,port.bus=x', /port.bus is the lab's/],
    ['edu,port=maybe', /neither on nor off/],
    ['edu,size=1M', /file= and size= are for the presets with a backing file/],
    ['nvme,file=a.img,size=1M', /file= and size= together/],
    ['e1000,driver=e1000,bind=off', /driver= and bind=off together/],
    ['edu,ids=1234', /is not vendor:device/],
    ['edu,role=a,', /an empty option/],
  ])('%j is a usage error with a hint', (text, message) => {
    let err: unknown;
    try {
      parseDeviceSpec(text);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UsageError);
    expect((err as UsageError).message).toMatch(message);
    expect((err as UsageError).hint).toEqual(expect.any(String));
  });

  test('the catalogue has the presets known to work behind vfio-pci under TCG, and every set parses', () => {
    expect(Object.keys(PRESETS)).toEqual(
      expect.arrayContaining(['edu', 'e1000', 'e1000e', 'rtl8139', 'nvme', 'ivshmem']),
    );
    for (const set of Object.values(DEVICE_SETS))
      for (const spec of set) expect(() => parseDeviceSpec(spec)).not.toThrow();
  });
});
