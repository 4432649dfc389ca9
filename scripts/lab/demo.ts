// `npm run lab`: what vfio-bridge sees on the lab's devices. Runs inside the guest (or on any host
// with VFIO_BRIDGE_HIL_DEVICES set) as `node -r @swc-node/register scripts/lab/demo.ts`.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  Container,
  VFIO_PCI_ERR_IRQ_INDEX,
  type IrqInfo,
  Group,
  VfioError,
  VFIO_PCI_CONFIG_REGION_INDEX,
  type Device,
  type RegionInfo,
  SystemAddressSpaces,
  VfioPciDevice,
} from '../../lib';
import { kvmGuestSection } from './demo-kvm';

const CONFIG = VFIO_PCI_CONFIG_REGION_INDEX;
const REGION_NAMES = ['BAR0', 'BAR1', 'BAR2', 'BAR3', 'BAR4', 'BAR5', 'ROM', 'config', 'VGA'];
const IRQ_NAMES = ['INTx', 'MSI', 'MSI-X', 'ERR', 'REQ'];
const CAP_NAMES: Record<number, string> = {
  0x01: 'power-management',
  0x05: 'MSI',
  0x09: 'vendor-specific',
  0x10: 'PCI-Express',
  0x11: 'MSI-X',
};

const hex = (v: number | bigint, digits = 0) => `0x${v.toString(16).padStart(digits, '0')}`;

function parseDevices(spec: string): Array<[string, string]> {
  return spec
    .split(',')
    .filter((s) => s.trim() !== '')
    .map((s) => {
      const [role, bdf] = s.trim().split('=');
      if (!role || !bdf) throw new TypeError(`VFIO_BRIDGE_HIL_DEVICES: '${s}' is not role=BDF`);
      return [role, bdf];
    });
}

function describeRegion(r: RegionInfo): string {
  const flags = [r.readable ? 'r' : '-', r.writable ? 'w' : '-', r.mappable ? 'm' : '-'].join('');
  const caps = r.caps.map((c) => {
    switch (c.kind) {
      case 'sparse-mmap':
        return `sparse-mmap[${c.areas.map((a) => `${hex(a.offset)}+${hex(a.size)}`).join(' ')}]`;
      case 'type':
        return `type ${c.type}/${c.subtype}`;
      case 'msix-mappable':
        return 'msix-mappable';
      default:
        return `cap ${c.id} v${c.version}`;
    }
  });
  const mmap = r.mappable
    ? caps.some((c) => c.startsWith('sparse'))
      ? ''
      : ` mmap[0x0+${hex(r.size)}]`
    : '';
  return `${(REGION_NAMES[r.index] ?? `region${r.index}`).padEnd(6)} size ${hex(r.size).padEnd(9)} ${flags} flags ${hex(r.flags)} at fd offset ${hex(r.offset)}${mmap}${caps.length ? ' ' + caps.join(' ') : ''}`;
}

function pciCapabilities(d: Device): string[] {
  const out: string[] = [];
  if (((d.read(CONFIG, 6, 2) as number) & 0x10) === 0) return out;
  let ptr = (d.read(CONFIG, 0x34, 1) as number) & 0xfc;
  for (let i = 0; ptr !== 0 && i < 48; i++) {
    const id = d.read(CONFIG, ptr, 1) as number;
    let text = `${hex(ptr, 2)} ${CAP_NAMES[id] ?? `id ${hex(id, 2)}`}`;
    if (id === 0x11) {
      const ctl = d.read(CONFIG, ptr + 2, 2) as number;
      const table = d.read(CONFIG, ptr + 4, 4) as number;
      const pba = d.read(CONFIG, ptr + 8, 4) as number;
      text += ` (${(ctl & 0x7ff) + 1} vectors, table BAR${table & 7}+${hex(table & ~7)}, PBA BAR${pba & 7}+${hex(pba & ~7)})`;
    }
    out.push(text);
    ptr = (d.read(CONFIG, ptr + 1, 1) as number) & 0xfc;
  }
  return out;
}

function eduWidths(d: Device): void {
  const m = d.map(0, 0, 4096);
  try {
    const r32 = m.read32(0);
    const r8 = m.read8(0);
    const r64 = m.read64(0);
    console.log('  edu width-sensitive ID register (BAR0 0x00, through the mapping):');
    console.log(
      `    4-byte read: ${hex(r32, 8)}  ${r32 === 0x010000ed ? '(the ID: one 4-byte access)' : '(WRONG)'}`,
    );
    console.log(
      `    1-byte read: ${hex(r8, 2)}        ${r8 !== 0xed ? '(not 0xed: the device refused the 1-byte access)' : '(WRONG: split or widened)'}`,
    );
    console.log(`    8-byte read: ${hex(r64, 16)}  (one 8-byte access the device answers with ones)`);
    console.log(`    4-byte read through the fd: ${hex(d.read(0, 0, 4) as number, 8)}`);
    m.write32(4, 0x12345678);
    console.log(`    0x04 after writing 0x12345678: ${hex(m.read32(4), 8)} (the inverse)`);
    if (r32 !== 0x010000ed || r8 === 0xed) process.exitCode = 1;
  } finally {
    m.close();
  }
}

/**
 * The vfio-pci layer on one PCI bus: every viable device's BARs placed as a guest would place them
 * (ivshmem presented as an RTL8168, so its BAR 2 carries the window quirk), then QEMU's
 * `info mtree -f` with how each range is served, and edu's ID register read as a guest MMIO exit.
 */
function pciLayer(devices: Array<[string, string]>): void {
  console.log('\nThe vfio-pci layer: one bus, the BARs placed, the flat view with mapinfo');
  const bus = new SystemAddressSpaces();
  try {
    let mmio = 0xfe00_0000;
    let pio = 0xc000;
    let eduBar0: number | null = null;
    for (const [role, bdf] of devices) {
      if (role === 'nonviable') continue;
      const opts = role === 'ivshmem' ? { vendorId: 0x10ec, deviceId: 0x8168 } : {};
      const dev = VfioPciDevice.openByBdf(bus, bdf, opts);
      for (const bar of dev.bars) {
        if (!bar) continue;
        const align = bar.type === 'io' ? bar.size : Math.max(bar.size, 0x1000);
        const cursor = bar.type === 'io' ? pio : mmio;
        const addr = Math.ceil(cursor / align) * align;
        const reg = 0x10 + 4 * bar.index;
        dev.configWrite(reg, 4, bar.type === 'io' ? addr | 1 : addr);
        if (bar.type === 'mem64') dev.configWrite(reg + 4, 4, 0);
        if (bar.type === 'io') pio = addr + bar.size;
        else mmio = addr + align;
        if (role === 'edu' && bar.index === 0) eduBar0 = addr;
      }
      dev.configWrite(0x04, 2, dev.configRead(0x04, 2) | 0x3); // memory and I/O decode
    }
    console.log(bus.mtree('memory', { flat: true }));
    console.log(bus.mtree('io', { flat: true }));
    if (eduBar0 !== null) {
      const id = bus.dispatch('memory', eduBar0, 4, false) as number;
      console.log(`guest MMIO read, 4 bytes at ${hex(eduBar0)} (edu ID): ${hex(id, 8)}`);
    }
  } finally {
    bus.close();
  }
}

async function main(): Promise<void> {
  const spec = process.env.VFIO_BRIDGE_HIL_DEVICES;
  if (!spec) {
    console.error(
      'demo: VFIO_BRIDGE_HIL_DEVICES is not set; run it through scripts/lab/lab.sh (npm run lab)',
    );
    process.exitCode = 2;
    return;
  }
  for (const [role, bdf] of parseDevices(spec)) {
    const container = Container.open();
    const group = Group.openByBdf(bdf);
    try {
      if (!group.status().viable) {
        // What a VMM would hit: vfio-pci cannot hand out a group that still holds other drivers.
        try {
          group.setContainer(container);
        } catch (e) {
          if (!(e instanceof VfioError) || e.code !== 'ENOTVIABLE') throw e;
          // The message carries the hint: the members, their drivers and the commands that fix it.
          console.log(`${role} ${bdf} IOMMU group ${group.number}: ${e.message}`);
          continue;
        }
      }
      group.setContainer(container);
      container.setIommu();
      const d = group.openDevice(bdf);
      try {
        const info = d.info();
        const id = d.read(CONFIG, 0, 4) as number;
        console.log(
          `${role} ${bdf} [${hex(id & 0xffff, 4)}:${hex(id >>> 16, 4)}] IOMMU group ${group.number}, ` +
            `${info.numRegions} regions, ${info.numIrqs} IRQ indexes${info.reset ? ', resettable' : ''}`,
        );
        for (let i = 0; i < info.numRegions; i++) {
          let r: RegionInfo;
          try {
            r = d.regionInfo(i);
          } catch (e) {
            // The VGA region exists only on VGA devices; the kernel answers EINVAL elsewhere.
            if (i === 8 && e instanceof VfioError && e.code === 'EINVAL') continue;
            throw e;
          }
          if (r.size > 0) console.log(`  ${describeRegion(r)}`);
        }
        const caps = pciCapabilities(d);
        console.log(`  capabilities: ${caps.length ? caps.join(', ') : 'none'}`);
        const irqs: string[] = [];
        for (let i = 0; i < info.numIrqs; i++) {
          let irq: IrqInfo;
          try {
            irq = d.irqInfo(i);
          } catch (e) {
            // vfio-pci offers the error IRQ only on PCI Express devices; the kernel answers EINVAL.
            if (i === VFIO_PCI_ERR_IRQ_INDEX && e instanceof VfioError && e.code === 'EINVAL') continue;
            throw e;
          }
          if (irq.count > 0) irqs.push(`${IRQ_NAMES[i] ?? i} x${irq.count}`);
        }
        console.log(`  interrupts: ${irqs.join(', ')}`);
        if (role === 'edu') eduWidths(d);
      } finally {
        d.close();
      }
    } finally {
      group.close();
      container.close();
    }
  }
  pciLayer(parseDevices(spec));
  const devices = new Map(parseDevices(spec));
  await kvmGuestSection(devices);
  await vmmGuestSection(spec);
}

/**
 * The Node VMM's section, in a process of its own running the compiled runner (build/vmm, which
 * `npm run lab` builds): the event loop it shows is a VMM's, not this script's, which carries a
 * TypeScript compiler.
 */
async function vmmGuestSection(spec: string): Promise<void> {
  const runner = path.join(__dirname, '../../build/vmm/demo-vmm.js');
  if (!fs.existsSync(runner)) {
    console.log('\nLinux under the Node VMM: skipped: the runner is not built; run: npm run build:vmm');
    process.exitCode = 1;
    return;
  }
  const status = await new Promise<number>((resolve) => {
    // As a VMM is started (docs/vmm.md, "The event loop and V8"): every function compiled at load,
    // not at its first call; V8's old generation at 64 MiB from the start, so that its first
    // filling is not a full mark-compact while the guest boots; and no memory reducer, whose full
    // GCs come when the guest runs without needing JavaScript.
    const flags = ['--no-lazy', '--initial-old-space-size=64', '--no-memory-reducer'];
    const child = spawn(process.execPath, [...flags, runner, spec], {
      stdio: 'inherit',
    });
    child.on('error', () => resolve(1));
    child.on('exit', (code, signal) => resolve(code ?? (signal === null ? 0 : 1)));
  });
  if (status !== 0) process.exitCode = status;
}
main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
