/**
 * A fake sysfs for the CLI, and a fake kernel that answers driver_override, unbind and
 * drivers_probe writes the way the PCI core does, so binding can be followed end to end without
 * root. Real binding is tested in the lab (test/hil/cli).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface FakeDevice {
  bdf: string;
  vendor: number;
  device: number;
  classCode: number;
  driver: string | null;
  group: number | null;
  /** The driver the ID table picks when driver_override is empty. */
  native: string | null;
  /** driver_override, as the lab's init and driverctl leave vfio-pci devices. */
  override?: string;
  net?: { name: string; flags: number };
  /** `resource` lines: [start, end, flags] for indexes 0..6. */
  resources?: [number, number, number][];
  configSize?: number;
}

export const DEVICES: FakeDevice[] = [
  {
    bdf: '0000:00:02.0',
    vendor: 0x8086,
    device: 0x100e,
    classCode: 0x020000,
    driver: 'e1000',
    group: 3,
    native: 'e1000',
    net: { name: 'eth0', flags: 0x1003 },
  },
  {
    bdf: '0000:00:03.0',
    vendor: 0x8086,
    device: 0x10d3,
    classCode: 0x020000,
    driver: 'e1000e',
    group: 12,
    native: 'e1000e',
    net: { name: 'eth1', flags: 0x1002 },
  },
  {
    bdf: '0000:00:03.1',
    vendor: 0x8086,
    device: 0x293e,
    classCode: 0x040300,
    driver: 'snd_hda_intel',
    group: 12,
    native: 'snd_hda_intel',
  },
  {
    bdf: '0000:00:04.0',
    vendor: 0x10ec,
    device: 0x8139,
    classCode: 0x020000,
    driver: 'vfio-pci',
    group: 13,
    native: '8139too',
    override: 'vfio-pci',
    resources: [
      [0xc000, 0xc0ff, 0x40101],
      [0xfeb00000, 0xfeb000ff, 0x40200],
    ],
  },
  {
    bdf: '0000:00:05.0',
    vendor: 0x1b36,
    device: 0x0001,
    classCode: 0x060400,
    driver: null,
    group: null,
    native: null,
  },
];

export const PCI_IDS = `# fake pci.ids
8086  Intel Corporation
\t100e  82540EM Gigabit Ethernet Controller
\t\t8086 001e  PRO/1000 MT Desktop Adapter
\t10d3  82574L Gigabit Network Connection
10ec  Realtek Semiconductor Co., Ltd.
\t8139  RTL-8100/8101L/8139 PCI Fast Ethernet Adapter
C 02  Network controller
\t00  Ethernet controller
C 04  Multimedia controller
\t03  Audio device
`;

/** Build the fake tree under `root`. */
export function makeSysfs(root: string, devices: readonly FakeDevice[] = DEVICES): void {
  const mk = (p: string) => fs.mkdirSync(path.join(root, p), { recursive: true });
  const link = (target: string, p: string) => fs.symlinkSync(target, path.join(root, p));
  mk('bus/pci/devices');
  for (const d of ['e1000', 'e1000e', 'snd_hda_intel', 'vfio-pci', '8139too']) mk(`bus/pci/drivers/${d}`);
  for (const d of devices) {
    const dir = `devices/pci0000:00/${d.bdf}`;
    mk(dir);
    const put = (name: string, text: string) => fs.writeFileSync(path.join(root, dir, name), text);
    put('vendor', `0x${d.vendor.toString(16).padStart(4, '0')}\n`);
    put('device', `0x${d.device.toString(16).padStart(4, '0')}\n`);
    put('class', `0x${d.classCode.toString(16).padStart(6, '0')}\n`);
    put('driver_override', `${d.override ?? '(null)'}\n`);
    put('config', Buffer.alloc(d.configSize ?? 256).toString('latin1'));
    const res = Array.from({ length: 13 }, (_, i) => d.resources?.[i] ?? [0, 0, 0]);
    put(
      'resource',
      res.map((r) => r.map((v) => `0x${v.toString(16).padStart(16, '0')}`).join(' ')).join('\n') + '\n',
    );
    link(`../../../${dir}`, `bus/pci/devices/${d.bdf}`);
    if (d.driver) link(`../../../bus/pci/drivers/${d.driver}`, `${dir}/driver`);
    if (d.group !== null) {
      mk(`kernel/iommu_groups/${d.group}/devices`);
      link(`../../../kernel/iommu_groups/${d.group}`, `${dir}/iommu_group`);
      link(`../../../../${dir}`, `kernel/iommu_groups/${d.group}/devices/${d.bdf}`);
    }
    if (d.net) {
      mk(`${dir}/net/${d.net.name}`);
      fs.writeFileSync(path.join(root, dir, 'net', d.net.name, 'flags'), `0x${d.net.flags.toString(16)}\n`);
    }
  }
}

/**
 * Answers the writes the CLI makes as the PCI core would: `driver/unbind` detaches, and
 * `drivers_probe` binds the device to its driver_override, or else to the ID table's driver.
 */
export class FakeKernel {
  readonly #timer: NodeJS.Timeout;
  constructor(
    private readonly root: string,
    private readonly devices: readonly FakeDevice[] = DEVICES,
  ) {
    this.#timer = setInterval(() => this.tick(), 2);
  }

  tick(): void {
    const drivers = path.join(this.root, 'bus/pci/drivers');
    for (const drv of fs.readdirSync(drivers)) {
      const unbind = path.join(drivers, drv, 'unbind');
      if (!fs.existsSync(unbind)) continue;
      const bdf = fs.readFileSync(unbind, 'utf8').trim();
      // Created by a writer that has not written yet (a regular file, not sysfs): next tick.
      if (bdf === '') continue;
      fs.rmSync(unbind);
      fs.rmSync(path.join(this.root, 'bus/pci/devices', bdf, 'driver'), { force: true });
    }
    const probe = path.join(this.root, 'bus/pci/drivers_probe');
    if (!fs.existsSync(probe)) return;
    const bdf = fs.readFileSync(probe, 'utf8').trim();
    if (bdf === '') return;
    fs.rmSync(probe);
    const dir = path.join(this.root, 'bus/pci/devices', bdf);
    if (fs.existsSync(path.join(dir, 'driver'))) return;
    const override = fs.readFileSync(path.join(dir, 'driver_override'), 'utf8').trim();
    const target =
      override && override !== '(null)'
        ? override
        : (this.devices.find((d) => d.bdf === bdf)?.native ?? null);
    if (target) fs.symlinkSync(`../../../bus/pci/drivers/${target}`, path.join(dir, 'driver'));
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}

/** The driver `bdf` is on in the fake tree. */
export function driverOf(root: string, bdf: string): string | null {
  try {
    return path.basename(fs.readlinkSync(path.join(root, 'bus/pci/devices', bdf, 'driver')));
  } catch {
    return null;
  }
}
