// info, read and dump through sysfs on the lab: a device on its kernel driver, and a vfio-pci
// device read both ways, which must agree.
import * as fs from 'node:fs';

import { cli, validJson } from '../../support/cli-harness';
import { describeDevice } from '../hil';
import { describeKernelDevice, driverNow } from './kernel-devices';

const env = { ...process.env };

describeKernelDevice('e1000', 'a device on its kernel driver, through sysfs', (bdf) => {
  test('info names the driver, the regions and capabilities sysfs shows, and what needs vfio-pci', async () => {
    expect(driverNow(bdf)).toBe('e1000');
    const r = await cli(['info', '--json', bdf], env);
    expect(r.stderr).toBe('');
    const j = validJson('info', r.stdout) as {
      source: string;
      driver: string;
      vendor: number;
      device: number;
      regions: { name: string; size: number }[];
      needsVfioPci: string[];
    };
    expect(j).toMatchObject({ source: 'sysfs', driver: 'e1000', vendor: 0x8086, device: 0x100e });
    expect(j.regions.find((x) => x.name === 'bar0')?.size).toBe(0x20000);
    expect(j.needsVfioPci).toContain('IRQ indexes and counts');
  });

  test('read and dump of config space match the config file, and BAR0 reads through resource0', async () => {
    const cfg = fs.readFileSync(`/sys/bus/pci/devices/${bdf}/config`);
    const r = await cli(['read', bdf, 'config', '0', '-w', '4'], env);
    expect(r.stdout).toBe(`0x${cfg.readUInt32LE(0).toString(16).padStart(8, '0')}\n`);
    const d = await cli(['dump', '--json', bdf, 'config', '0', '64', '-w', '4'], env);
    const values = (validJson('dump', d.stdout) as { values: string[] }).values.map((v) => Number(v));
    expect(values).toEqual(Array.from({ length: 16 }, (_, i) => cfg.readUInt32LE(i * 4)));
    // e1000 has claimed BAR0: a kernel with CONFIG_IO_STRICT_DEVMEM (Debian's, the lab's) will not
    // map it, and says so; another reads STATUS (0x8) through the mapping.
    const s = await cli(['read', bdf, 'bar0', '0x8', '-w', '4'], env);
    if (s.code === 0) expect(s.stdout).toMatch(/^0x[0-9a-f]{8}\n$/);
    else {
      expect(s.code).toBe(1);
      expect(s.stderr).toContain(`the kernel refuses to map bar0 of ${bdf} through`);
      expect(s.stderr).toContain('CONFIG_IO_STRICT_DEVMEM');
    }
    expect(driverNow(bdf)).toBe('e1000');
  });
});

describeDevice('edu', 'a vfio-pci device read through sysfs and through VFIO', (bdf) => {
  test('the two agree on config space; BAR0 reads through resource0 too', async () => {
    const viaVfio = await cli(['read', bdf(), 'config', '0', '-w', '4'], env);
    const viaSysfs = await cli(['read', '--json', bdf(), 'config', '0', '-w', '4', '--via', 'sysfs'], env);
    expect(validJson('read', viaSysfs.stdout)).toMatchObject({ via: 'sysfs', value: viaVfio.stdout.trim() });
    const bar = await cli(['read', bdf(), 'bar0', '0', '-w', '4', '--via', 'sysfs'], env);
    expect(bar.stderr).toBe('');
    expect(bar.stdout).toMatch(/^0x[0-9a-f]{8}\n$/);
  });
});
