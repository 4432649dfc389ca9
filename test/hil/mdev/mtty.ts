/**
 * The kernel's mtty sample as a lab device: a mediated device (an emulated 16550 UART behind a PCI
 * function, 4348:3253, class 0x070002) that the tests create, open on either IOMMU backend (through
 * its group, or through its cdev on iommufd) with the same VfioPciDevice stack as vfio-pci devices,
 * drive through its I/O BAR, migrate, and remove.
 *
 * The tests need the `mtty` parent, which only a kernel built with CONFIG_SAMPLE_VFIO_MDEV_MTTY has
 * (the lab's own kernel, with `--module mtty`). Without it they are skipped with the reason, and in
 * CI they fail, as every hil test does without its device.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { SystemAddressSpaces, VfioPciDevice } from '../../../lib/pci';
import { createMdev, type Device, findMdev, listMdevs, removeMdev } from '../../../lib/vfio';
import { activeBackend, type Backend } from '../backends';
import { inCi } from '../hil';

export const PARENT = 'mtty';

/** The modules mtty needs, in load order, in the lab kernel's modules directory. */
const MODULES = [
  ['mdev', 'kernel/drivers/vfio/mdev/mdev.ko'],
  ['mtty', 'kernel/samples/vfio-mdev/mtty.ko'],
] as const;

/**
 * Loads mdev and mtty from the lab kernel's modules directory (VFIO_BRIDGE_LAB_MODULES), as the lab
 * asks a command to load what it needs: the guest's root has no /lib/modules for its kernel.
 * Returns why it could not, or null.
 */
function loadMtty(): string | null {
  const dir = process.env.VFIO_BRIDGE_LAB_MODULES;
  if (!dir) return 'VFIO_BRIDGE_LAB_MODULES is not set (not in the lab), so mtty cannot be loaded here';
  for (const [name, file] of MODULES) {
    if (fs.existsSync(`/sys/module/${name}`)) continue;
    const ko = path.join(dir, file);
    if (!fs.existsSync(ko)) return `the lab's kernel has no ${file} (it needs CONFIG_SAMPLE_VFIO_MDEV_MTTY)`;
    try {
      execFileSync('busybox', ['insmod', ko], { stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (e) {
      return `busybox insmod ${ko} failed: ${String((e as { stderr?: Buffer }).stderr ?? e).trim()}`;
    }
  }
  return null;
}

/** Why the mtty tests cannot run here, or null (mtty loaded, by the lab or here). */
export function mttyMissing(): string | null {
  if (fs.existsSync(`/sys/class/mdev_bus/${PARENT}`)) return null;
  const why = loadMtty();
  if (why === null && fs.existsSync(`/sys/class/mdev_bus/${PARENT}`)) return null;
  return (
    `no mtty mdev parent (/sys/class/mdev_bus/mtty): ${why ?? 'mtty loaded, but registered no parent'}; ` +
    'run in the lab on its own kernel (scripts/lab/hil.sh), or with vfio-bridge lab --kernel DIR --module mtty'
  );
}

/** describe() for tests that need mtty: skipped with the reason without it, failing in CI. */
export function describeMtty(name: string, body: () => void): void {
  const reason = mttyMissing();
  if (reason === null) describe(`mtty: ${name}`, body);
  else if (inCi) {
    describe(`mtty: ${name}`, () => {
      test('has the mtty parent (mandatory in CI)', () => {
        throw new Error(`${reason}; in CI the lab must provide it`);
      });
    });
  } else {
    process.stderr.write(`hil: skipping mtty: ${reason}\n`);
    describe(`mtty: ${name}`, () => test.skip(`skipped: ${reason}`, () => undefined));
  }
}

/** Removes every mdev the tests made (nothing holds them once the tests closed their devices). */
export async function removeAll(uuids: Iterable<string>): Promise<void> {
  await Promise.all(
    [...uuids]
      .filter((u) => findMdev(u) !== null)
      .map((u) => removeMdev(u, { whenOpen: 'wait', timeoutMs: 60_000 })),
  );
}

/** Instances the suite did not make: the tests count on a parent they have to themselves. */
export function strayMdevs(): string[] {
  return listMdevs()
    .filter((m) => m.parent === PARENT)
    .map((m) => m.uuid);
}

/** Where the tests place mtty's I/O BAR 0 on their own bus. */
export const IO_BASE = 0xc000;

/** 16550 registers (offsets in the I/O BAR). */
export const UART = {
  RX: 0,
  TX: 0,
  DLL: 0,
  IER: 1,
  DLM: 1,
  IIR: 2,
  FCR: 2,
  LCR: 3,
  MCR: 4,
  LSR: 5,
  MSR: 6,
  SCR: 7,
};

/**
 * An mtty opened as a VMM opens a device: an IOMMU context of its own (a container and its group,
 * or an iommufd, an IOAS and its cdev), a VfioPciDevice on a bus.
 */
export interface OpenMtty {
  readonly uuid: string;
  readonly bus: SystemAddressSpaces;
  readonly pci: VfioPciDevice;
  readonly vfio: Device;
  in(reg: number): number;
  out(reg: number, value: number): void;
  close(): void;
}

/**
 * Opens mdev `uuid` on `backend` (default: the describeBackends run's) and builds it on a fresh bus
 * with BAR 0 at IO_BASE, decoding.
 */
export function openMtty(uuid: string, backend: Backend = activeBackend()): OpenMtty {
  const bus = new SystemAddressSpaces();
  const pci = VfioPciDevice.openByMdev(bus, uuid, { backend });
  pci.configWrite(0x10, 4, IO_BASE);
  pci.configWrite(0x04, 2, pci.configRead(0x04, 2) | 0x1);
  return {
    uuid,
    bus,
    pci,
    vfio: pci.device as Device,
    in: (reg) => bus.pioRead(IO_BASE + reg, 1) as number,
    out: (reg, value) => bus.pioWrite(IO_BASE + reg, 1, value),
    close() {
      pci.close();
      bus.close();
    },
  };
}

/** Creates an mtty of `type` and records it in `made` for cleanup. */
export function makeMtty(type: 'mtty-1' | 'mtty-2', made: Set<string>): string {
  const d = createMdev(PARENT, type);
  made.add(d.uuid);
  return d.uuid;
}

/**
 * The registers a read does not change, with the divisor latch on: DLL, DLM, IIR, LCR, MCR, LSR,
 * MSR, SCR. Taken the same way from the saved device and from the one that loaded its state.
 */
export function snapshot(m: OpenMtty): Record<string, number> {
  return {
    DLL: m.in(UART.DLL),
    DLM: m.in(UART.DLM),
    IIR: m.in(UART.IIR),
    LCR: m.in(UART.LCR),
    MCR: m.in(UART.MCR),
    LSR: m.in(UART.LSR),
    MSR: m.in(UART.MSR),
    SCR: m.in(UART.SCR),
  };
}

/** Reads the receive FIFO until LSR says it is empty (at most `max` bytes). */
export function drain(m: OpenMtty, max = 32): string {
  let s = '';
  while ((m.in(UART.LSR) & 0x01) !== 0 && s.length < max) s += String.fromCharCode(m.in(UART.RX));
  return s;
}
