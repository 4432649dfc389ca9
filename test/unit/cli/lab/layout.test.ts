// Where the lab puts devices: the project's own set exactly where its suites expect them (and with
// the QEMU arguments the lab always had), free slots in order, root ports on buses 01, 02, ... in
// slot order, groups as functions of one slot, backing files, and usage errors for layouts it
// cannot make.
import { UsageError } from '../../../../lib/cli/errors';
import { DEVICE_SETS, parseDeviceSpec } from '../../../../lib/cli/lab/devices';
import { layOut, type Layout } from '../../../../lib/cli/lab/layout';
import { hilEnvironment } from '../../../../lib/cli/lab/machine';

const RUN = '/cache/run.1';
const lay = (...specs: string[]): Layout =>
  layOut(specs.map(parseDeviceSpec), {
    runDir: RUN,
    fileSize: (f) => (f.endsWith('disk.img') ? 1 << 20 : 4096),
  });
const devices = (l: Layout): string[] => l.devices.map((d) => `${d.role}=${d.bdf}`);
/** The -device values, in order. */
const deviceArgs = (l: Layout): string[] => l.qemuArgs.filter((_, i, a) => a[i - 1] === '-device');

describe("the project's set (--preset vfio-bridge)", () => {
  const l = lay(...DEVICE_SETS['vfio-bridge']);

  test('keeps every role at the address test/hil has always used, nvme added at 0a', () => {
    expect(hilEnvironment(l)).toEqual({
      VFIO_BRIDGE_HIL_DEVICES:
        'edu=0000:00:03.0,rtl8139=0000:00:04.0,e1000e=0000:00:05.0,ivshmem=0000:00:06.0,' +
        'nonviable=0000:00:07.0,hotreset=0000:01:00.0,nvme=0000:00:0a.0',
      VFIO_BRIDGE_HIL_KERNEL_DEVICES: 'e1000=0000:00:08.0',
      VFIO_BRIDGE_HIL_IVSHMEM_FILE: `${RUN}/ivshmem.bin`,
      VFIO_BRIDGE_HIL_NVME_FILE: `${RUN}/nvme.img`,
    });
  });

  test('is the QEMU machine the lab always booted, plus the nvme', () => {
    expect(deviceArgs(l)).toEqual([
      'edu,addr=03.0',
      'rtl8139,netdev=rtl8139-net,addr=04.0',
      'e1000e,netdev=e1000e-net,addr=05.0',
      'ivshmem-plain,memdev=ivshmem-mem,addr=06.0',
      'edu,addr=07.0,multifunction=on',
      'virtio-9p-pci,fsdev=blocker-fs,mount_tag=blocker,addr=07.1',
      'e1000,netdev=e1000-net,addr=08.0',
      'pcie-root-port,id=rp9,bus=pcie.0,addr=09.0,chassis=9,x-speed=5',
      'edu,bus=rp9,addr=00.0',
      'nvme,drive=nvme-drive,serial=nvme,addr=0a.0',
    ]);
    expect(l.qemuArgs).toEqual(
      expect.arrayContaining([
        `memory-backend-file,id=ivshmem-mem,mem-path=${RUN}/ivshmem.bin,size=1048576,share=on`,
        'user,id=rtl8139-net,restrict=on',
        `local,id=blocker-fs,path=${RUN}/blocker,security_model=none,readonly=on`,
        `file=${RUN}/nvme.img,if=none,id=nvme-drive,format=raw`,
      ]),
    );
    expect(l.devices.find((d) => d.role === 'blocker')).toMatchObject({
      driver: null,
      dir: `${RUN}/blocker`,
    });
    expect(l.devices.find((d) => d.role === 'nvme')?.file).toEqual({
      path: `${RUN}/nvme.img`,
      size: 1 << 20,
      make: 'random',
    });
  });
});

describe('placing devices', () => {
  test('free slots from 03 in order, skipping those asked for and the lab 9p exports at 10 and 11', () => {
    const l = lay(...Array.from({ length: 14 }, () => 'edu'), 'edu,addr=04');
    expect(l.devices.map((d) => d.bdf.slice(8, 10))).toEqual([
      '03',
      '05',
      '06',
      '07',
      '08',
      '09',
      '0a',
      '0b',
      '0c',
      '0d',
      '0e',
      '0f',
      '12',
      '13',
      '04',
    ]);
    expect(devices(l).slice(0, 3)).toEqual(['edu=0000:00:03.0', 'edu2=0000:00:05.0', 'edu3=0000:00:06.0']);
  });

  test('root ports: buses numbered by the ports slot order, port options and chassis', () => {
    const l = lay('e1000e,port,port.addr=0c', 'edu,port', 'rtl8139,port,port.chassis=40');
    expect(devices(l)).toEqual(['e1000e=0000:03:00.0', 'edu=0000:01:00.0', 'rtl8139=0000:02:00.0']);
    expect(deviceArgs(l)).toEqual([
      'pcie-root-port,id=rpc,bus=pcie.0,addr=0c.0,chassis=12',
      'e1000e,netdev=e1000e-net,bus=rpc,addr=00.0',
      'pcie-root-port,id=rp3,bus=pcie.0,addr=03.0,chassis=3',
      'edu,bus=rp3,addr=00.0',
      'pcie-root-port,id=rp4,bus=pcie.0,addr=04.0,chassis=40',
      'rtl8139,netdev=rtl8139-net,bus=rp4,addr=00.0',
    ]);
  });

  test('a group is one slot, its functions in order, function 0 multifunction; behind a port too', () => {
    const l = lay('edu,group=a', 'nvme', 'rtl8139,group=a', 'edu,group=b,port', 'edu,group=b');
    expect(devices(l)).toEqual([
      'edu=0000:00:03.0',
      'nvme=0000:00:04.0',
      'rtl8139=0000:00:03.1',
      'edu2=0000:01:00.0',
      'edu3=0000:01:00.1',
    ]);
    expect(deviceArgs(l)).toEqual([
      'edu,addr=03.0,multifunction=on',
      'rtl8139,netdev=rtl8139-net,addr=03.1',
      'nvme,drive=nvme-drive,serial=nvme,addr=04.0',
      'pcie-root-port,id=rp5,bus=pcie.0,addr=05.0,chassis=5',
      'edu,bus=rp5,addr=00.0,multifunction=on',
      'edu,bus=rp5,addr=00.1',
    ]);
  });

  test("backing files: the user's, or one the lab makes of size=; files only for bound devices in the environment", () => {
    const l = lay(
      'nvme,file=/data/disk.img,serial=s1',
      'ivshmem,file=/dev/shm/x,size=2M',
      'ivshmem,size=64K,bind=off',
    );
    expect(l.devices.map((d) => d.file)).toEqual([
      { path: '/data/disk.img', size: 1 << 20, make: null },
      { path: '/dev/shm/x', size: 2 << 20, make: null },
      { path: `${RUN}/ivshmem2.bin`, size: 65536, make: 'zero' },
    ]);
    expect(deviceArgs(l)[0]).toBe('nvme,drive=nvme-drive,serial=s1,addr=03.0');
    expect(Object.keys(hilEnvironment(l))).toEqual([
      'VFIO_BRIDGE_HIL_DEVICES',
      'VFIO_BRIDGE_HIL_NVME_FILE',
      'VFIO_BRIDGE_HIL_IVSHMEM_FILE',
    ]);
  });

  test.each([
    [['edu,addr=05', 'rtl8139,addr=05'], /slot 05 is taken by --device edu,addr=05/],
    [['edu,addr=10'], /slot 10 is the lab's 9p export of the host root/],
    [['edu,addr=1f'], /slot 1f is q35's LPC/],
    [['edu,role=x', 'rtl8139,role=x'], /role x is given to two devices/],
    [['edu,group=g', 'edu,group=g,addr=05'], /only the first device gives addr=/],
    [['edu,addr=05.1'], /function 1 without a function 0/],
    [['edu,port,addr=03'], /behind a root port the device is at 00.0/],
    [Array.from({ length: 9 }, () => 'edu,group=g'), /group g has 9 devices/],
    [Array.from({ length: 27 }, () => 'edu'), /no free slot left/],
  ])('%j cannot be laid out', (specs, message) => {
    expect(() => lay(...specs)).toThrow(UsageError);
    expect(() => lay(...specs)).toThrow(message);
  });
});
