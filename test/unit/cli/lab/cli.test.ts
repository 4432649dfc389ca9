// `vfio-bridge lab` as the CLI runs it, without booting anything: its help, --print (devices, the
// environment, QEMU's command line) in text and in JSON that follows the published schema, and a
// usage error with a hint (exit 2, EUSAGE, text or JSON) for every bad option.
import { cli, validJson } from '../../../support/cli-harness';

test('--help: the presets, the keys, the statuses and examples', async () => {
  const r = await cli(['lab', '--help'], {});
  expect(r.code).toBe(0);
  expect(r.stdout).toMatch(/^Usage: vfio-bridge lab \[options\] \[command\.\.\.\]/);
  for (const s of [
    'nvme      1b36:0010',
    'ivshmem   1af4:1110',
    'group=NAME',
    'port.KEY=VALUE',
    '124 --timeout ran out',
    '$ vfio-bridge lab --device nvme -- npx jest',
  ])
    expect(r.stdout).toContain(s);
});

test('--print: the devices, what the command sees, and the QEMU command line, from the cache asked for', async () => {
  const r = await cli(
    ['lab', '--device', 'nvme', '--device', 'edu,port', '--print', '--cache', '/c', '--', 'true'],
    {
      CI: 'true',
      VFIO_BRIDGE_LAB_QEMU: '/opt/qemu/bin/qemu-system-x86_64',
    },
  );
  expect(r.code).toBe(0);
  expect(r.stderr).toBe('');
  expect(r.stdout.split('\n').slice(0, 3)).toEqual([
    'role  BDF           driver    model  ids',
    'nvme  0000:00:03.0  vfio-pci  nvme   1b36:0010',
    'edu   0000:01:00.0  vfio-pci  edu    1234:11e8',
  ]);
  expect(r.stdout).toContain('VFIO_BRIDGE_HIL_DEVICES=nvme=0000:00:03.0,edu=0000:01:00.0\n');
  expect(r.stdout).toContain('VFIO_BRIDGE_HIL_NVME_FILE=/c/run.XXXXXX/nvme.img\n');
  expect(r.stdout).toContain('CI=true\n');
  expect(r.stdout).toContain('/opt/qemu/bin/qemu-system-x86_64 \\\n  -M q35 \\\n');
  expect(r.stdout).toContain('  -device pcie-root-port,id=rp4,bus=pcie.0,addr=04.0,chassis=4 \\\n');
});

test('--print --json follows the schema; --preset vfio-bridge is the project set', async () => {
  const r = await cli(
    ['lab', '--preset', 'vfio-bridge', '--print', '--json', '-e', 'X=1', '--', 'npm', 'test'],
    {},
  );
  expect(r.code).toBe(0);
  const doc = validJson('lab', r.stdout) as {
    devices: { role: string; bdf: string }[];
    environment: Record<string, string>;
  };
  expect(doc).toMatchObject({ command: 'lab', kernel: null, status: null, seconds: null });
  expect(doc.devices.map((d) => `${d.role}=${d.bdf}`)).toContain('hotreset=0000:01:00.0');
  expect(doc.environment).toMatchObject({ X: '1', VFIO_BRIDGE_LAB: '1' });
});

test.each([
  [['lab', '--', 'true'], /no devices/],
  [['lab', '--device', 'edu'], /no command to run in the lab/],
  [['lab', '--device', 'edu,bus=x', '--', 'true'], /bus= is set by the lab/],
  [['lab', '--preset', 'mine', '--', 'true'], /no device set "mine"/],
  [
    ['lab', '--device', 'edu', '--timeout', '10m', '--', 'true'],
    /--timeout "10m" is not a number of seconds/,
  ],
  [['lab', '--device', 'edu', '--memory', '64', '--', 'true'], /--memory "64" is not a size in MiB/],
  [['lab', '--device', 'edu', '--cpus', '0', '--', 'true'], /--cpus "0" is not a vCPU count from 1 to 8/],
  [['lab', '--device', 'edu', '--cpus', '2.5', '--', 'true'], /--cpus "2.5" is not a vCPU count/],
  [['lab', '--device', 'edu', '--module', 'a b', '--', 'true'], /--module "a b" is not a module name/],
  [['lab', '--device', 'edu', '--vmm-module', 'nvme', '--', 'true'], /--vmm-module without --vmm-init/],
  [['lab', '--device', 'edu', '--env', 'X', '--', 'true'], /--env "X" is not NAME=VALUE/],
  [
    ['lab', '--device', 'edu', '--keep-file', 'edu=/tmp/x', '--', 'true'],
    /--keep-file edu: no device of that role has a backing file/,
  ],
  [['lab', '--device', 'edu', '--kernel', 'newest', '--', 'true'], /--kernel "newest" is not a kernel/],
  [['lab', '--device', 'nvme,file=/nonexistent.img', '--', 'true'], /file=\/nonexistent.img: no such file/],
  [
    ['lab', '--device', 'edu', '--project', '/nonexistent', '--', 'true'],
    /--project \/nonexistent: no such directory/,
  ],
  [['lab', '--device', 'edu', 'npx', 'jest', '--ci'], /unknown option '--ci'/],
])('%j: exit 2, EUSAGE, with a hint', async (argv, message) => {
  const r = await cli(argv, {});
  expect(r.code).toBe(2);
  expect(r.stdout).toBe('');
  expect(r.stderr).toMatch(new RegExp(`^vfio-bridge: .*\\[EUSAGE\\]\\n  hint: .+\\n$`));
  expect(r.stderr).toMatch(message);
  const j = await cli([...argv.slice(0, 1), '--json', ...argv.slice(1)], {});
  expect(JSON.parse(j.stderr)).toMatchObject({ error: { code: 'EUSAGE', hint: expect.any(String) } });
});
