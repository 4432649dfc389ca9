/**
 * The hardware-in-the-loop suite's view of its hardware.
 *
 * `VFIO_BRIDGE_HIL_DEVICES` lists the devices as `role=BDF` pairs separated by commas, for example
 * `edu=0000:00:03.0,rtl8139=0000:00:04.0,e1000e=0000:00:05.0,ivshmem=0000:00:06.0,nonviable=0000:00:07.0`.
 * The lab sets it; on a real Linux host the operator sets it to devices already bound to vfio-pci
 * (`nonviable`: one whose IOMMU group also holds a device on another driver). A role that is
 * not listed skips the tests that need it, with the reason in the skipped test's title. With
 * `CI=true` nothing is skipped: a missing device is a failing test, because in CI the lab provides
 * every device. `VFIO_BRIDGE_HIL_IVSHMEM_FILE` names ivshmem's backing file on the machine running
 * the tests (the lab passes the host's path, visible in the guest through the read-only 9p root).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';

import { Container, Group, KvmError, VFIO_PCI_CONFIG_REGION_INDEX, VfioError } from '../../lib';
import type { Device } from '../../lib';
import { configValues, missingConfig } from '../../lib/cli/lab/kconfig';

export type Role = 'edu' | 'rtl8139' | 'e1000e' | 'ivshmem' | 'nonviable' | 'hotreset';
/** Roles of usable devices; `nonviable` names a vfio-pci device whose group holds another driver's. */
export const ROLES: readonly Role[] = ['edu', 'rtl8139', 'e1000e', 'ivshmem'];

/** PCI IDs each role must present; null accepts any device ID from that vendor. */
const IDS: Record<Role, { vendor: number; device: number | null }> = {
  edu: { vendor: 0x1234, device: 0x11e8 },
  rtl8139: { vendor: 0x10ec, device: 0x8139 },
  e1000e: { vendor: 0x8086, device: null },
  ivshmem: { vendor: 0x1af4, device: 0x1110 },
  nonviable: { vendor: 0, device: null },
  hotreset: { vendor: 0x1234, device: 0x11e8 },
};

export const inCi = process.env.CI === 'true' || process.env.CI === '1';

function parseDevices(spec: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (!spec) return out;
  for (const item of spec.split(',')) {
    const trimmed = item.trim();
    if (trimmed === '') continue;
    const m = /^([a-z0-9_-]+)=([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])$/i.exec(trimmed);
    if (!m) {
      throw new TypeError(
        `VFIO_BRIDGE_HIL_DEVICES: '${trimmed}' is not role=DDDD:BB:DD.F (roles: ${ROLES.join(', ')})`,
      );
    }
    out.set(m[1], m[2].toLowerCase());
  }
  return out;
}

export const devices = parseDevices(process.env.VFIO_BRIDGE_HIL_DEVICES);
export const ivshmemFile = process.env.VFIO_BRIDGE_HIL_IVSHMEM_FILE || undefined;

/** Why the tests for `role` cannot run here, or null when they can. */
export function missingReason(role: Role): string | null {
  if (!process.env.VFIO_BRIDGE_HIL_DEVICES) {
    return 'VFIO_BRIDGE_HIL_DEVICES is not set (run through scripts/lab/lab.sh, or list real vfio-pci devices)';
  }
  if (!devices.has(role)) return `VFIO_BRIDGE_HIL_DEVICES lists no ${role} device`;
  return null;
}

/** The BDF for `role`, checked against the IDs sysfs reports so a wrong list fails loudly. */
export function bdfOf(role: Role): string {
  const bdf = devices.get(role);
  if (!bdf) throw new Error(`no ${role} device configured`);
  const sys = `/sys/bus/pci/devices/${bdf}`;
  const vendor = parseInt(fs.readFileSync(`${sys}/vendor`, 'utf8'), 16);
  const device = parseInt(fs.readFileSync(`${sys}/device`, 'utf8'), 16);
  const want = IDS[role];
  if (role === 'nonviable') return bdf;
  if (vendor !== want.vendor || (want.device !== null && device !== want.device)) {
    throw new Error(
      `${role} at ${bdf} is ${vendor.toString(16)}:${device.toString(16)}, expected ` +
        `${want.vendor.toString(16)}:${want.device === null ? '*' : want.device.toString(16)}`,
    );
  }
  return bdf;
}

/**
 * Says once per process why tests are skipped: jest does not list the titles of skipped tests
 * when a whole file is skipped, so the reason would otherwise go unseen.
 */
function noteSkip(reason: string): void {
  const key = '__VFIO_BRIDGE_HIL_SKIPS';
  const seen = new Set((process.env[key] ?? '').split('\n'));
  if (seen.has(reason)) return;
  seen.add(reason);
  process.env[key] = [...seen].join('\n');
  process.stderr.write(`hil: skipping ${reason}\n`);
}

/**
 * describe() for tests that need `role`: runs them when the device is listed, otherwise registers
 * one skipped test naming the reason, or in CI one failing test.
 */
export function describeDevice(role: Role, name: string, body: (bdf: () => string) => void): void {
  const reason = missingReason(role);
  if (reason === null) {
    describe(`${role}: ${name}`, () => body(() => bdfOf(role)));
  } else if (inCi) {
    describe(`${role}: ${name}`, () => {
      test('has its device (mandatory in CI)', () => {
        throw new Error(`${reason}; in CI the lab must provide it`);
      });
    });
  } else {
    noteSkip(devices.size === 0 ? `every device: ${reason}` : `${role}: ${reason}`);
    describe(`${role}: ${name}`, () => {
      test.skip(`skipped: ${reason}`, () => undefined);
    });
  }
}

/**
 * `test` when `missing` is null. Otherwise a test that cannot run here: in CI one that fails naming
 * what is missing (the lab must provide it), elsewhere a skipped one whose title says why.
 */
export function testNeeding(
  missing: string | null,
): (name: string, fn: jest.ProvidesCallback, timeout?: number) => void {
  if (missing === null) return test;
  if (inCi) {
    return (name) =>
      test(`${name} (mandatory in CI)`, () => {
        throw new Error(`${missing}; in CI the lab must provide it`);
      });
  }
  noteSkip(missing);
  return (name) => test.skip(`${name} (skipped: ${missing})`, () => undefined);
}

/**
 * Why tests that need the running kernel to have `symbols` cannot run here (which ones it lacks,
 * and which kernel it is), or null when it has them all. Symbols as {@link missingConfig} takes
 * them: `IOMMUFD` (y or m), `VFIO_MDEV=m`, `IOMMUFD_VFIO_CONTAINER=n`.
 */
export function kernelConfigReason(symbols: readonly string[], file = '/proc/config.gz'): string | null {
  const running = `the running kernel ${os.release()}`;
  let text: string;
  try {
    text = zlib.gunzipSync(fs.readFileSync(file)).toString('utf8');
  } catch (e) {
    return `${running} has no readable ${file} to show ${symbols.join(', ')} (${(e as Error).message})`;
  }
  const missing = missingConfig(configValues(text), symbols);
  if (missing.length === 0) return null;
  return `${running} lacks ${missing.join(', ')}; the lab's own kernel has them (scripts/lab/lab.sh --kernel built)`;
}

/**
 * describe() for tests that need kernel features: runs them when the running kernel's config
 * (/proc/config.gz) has every one of `symbols`; otherwise registers one skipped test naming what
 * is missing and which kernel runs, said once on stderr too, or in CI one failing test.
 */
export function describeKernel(symbols: readonly string[], name: string, body: () => void): void {
  const reason = kernelConfigReason(symbols);
  const title = `kernel ${symbols.join(' ')}: ${name}`;
  if (reason === null) describe(title, body);
  else if (inCi) {
    describe(title, () => {
      test('has the kernel features (mandatory in CI)', () => {
        throw new Error(`${reason}; in CI the lab must boot a kernel with them`);
      });
    });
  } else {
    noteSkip(reason);
    describe(title, () => {
      test.skip(`skipped: ${reason}`, () => undefined);
    });
  }
}

/** A device opened the way a VMM opens it: container, group, IOMMU, then the device fd. */
export interface Opened {
  container: Container;
  group: Group;
  device: Device;
  close(): void;
}

export function openDevice(bdf: string): Opened {
  const container = Container.open();
  let group: Group | undefined;
  try {
    group = Group.openByBdf(bdf);
    group.setContainer(container);
    container.setIommu();
    const device = group.openDevice(bdf);
    const g = group;
    return {
      container,
      group: g,
      device,
      close() {
        device.close();
        g.close();
        container.close();
      },
    };
  } catch (e) {
    group?.close();
    container.close();
    throw e;
  }
}

export const CONFIG = VFIO_PCI_CONFIG_REGION_INDEX;
/** PCI command register bits (PCI Local Bus 3.0, 6.2.2). */
export const CMD_IO = 1 << 0;
export const CMD_MEMORY = 1 << 1;
export const CMD_BUS_MASTER = 1 << 2;

/** Walks the standard capability list in config space; returns cap id -> offset. */
export function capabilities(device: Device): Map<number, number> {
  const caps = new Map<number, number>();
  const status = device.read(CONFIG, 0x06, 2) as number;
  if ((status & 0x10) === 0) return caps;
  let ptr = (device.read(CONFIG, 0x34, 1) as number) & 0xfc;
  for (let guard = 0; ptr !== 0 && guard < 48; guard++) {
    const id = device.read(CONFIG, ptr, 1) as number;
    if (!caps.has(id)) caps.set(id, ptr);
    ptr = (device.read(CONFIG, ptr + 1, 1) as number) & 0xfc;
  }
  return caps;
}

/** Where the MSI-X table sits, if the device has one: vfio-pci hides it from the fd path. */
export function msixTable(device: Device): { bar: number; offset: number; size: number } | null {
  const cap = capabilities(device).get(0x11);
  if (cap === undefined) return null;
  const control = device.read(CONFIG, cap + 2, 2) as number;
  const table = device.read(CONFIG, cap + 4, 4) as number;
  return { bar: table & 7, offset: table & ~7, size: ((control & 0x7ff) + 1) * 16 };
}

/** The VfioError (or KvmError, its sibling) `fn` throws; anything else fails the test. */
export function caught(fn: () => unknown): VfioError {
  try {
    fn();
  } catch (e) {
    if (e instanceof VfioError) return e;
    if (e instanceof KvmError) return e as unknown as VfioError;
    throw e;
  }
  throw new Error('expected a VfioError, nothing was thrown');
}

/** A new directory under the guest's tmpfs, and how to remove it. */
export function tempDir(prefix = 'vfio-bridge-'): { dir: string; remove(): void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/**
 * describe() for tests that need what `missing` names (null: nothing is missing): in CI one failing
 * test naming it, elsewhere one skipped test saying why.
 */
export function describeNeeding(missing: string | null, name: string, body: () => void): void {
  if (missing === null) describe(name, body);
  else describe(name, () => testNeeding(missing)('runs', () => undefined));
}

/** Why /dev/kvm cannot be used here, or null when it can. */
export const noKvm = ((): string | null => {
  try {
    fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
    return null;
  } catch (e) {
    return `/dev/kvm is not usable here (${(e as Error).message})`;
  }
})();

/** describe() for tests that need /dev/kvm (see describeNeeding). */
export function describeKvm(name: string, body: () => void): void {
  describeNeeding(noKvm, name, body);
}

/** The fds of this process that are KVM objects (VM, vCPU, KVM-VFIO device). */
export function kvmFds(): string[] {
  return fs.readdirSync('/proc/self/fd').flatMap((fd) => {
    try {
      const target = fs.readlinkSync(`/proc/self/fd/${fd}`);
      return target.startsWith('anon_inode:kvm') ? [target] : [];
    } catch {
      return []; // raced with a close
    }
  });
}
