/**
 * Where the lab's devices sit on the guest's PCI bus, and the QEMU arguments that put them there.
 * Fixed slots make the addresses known before the guest boots, so the guest can check each one
 * and the tests get their roles' addresses. Devices without `addr=` take the next free slot of
 * the q35 root bus from 03; `group=` puts devices in one slot as functions (one IOMMU group);
 * `port` puts a device (or a group) behind a pcie-root-port of its own, on the next bus number.
 */
import * as path from 'node:path';

import { UsageError } from '../errors';
import { joinOptions, parseAddr, PRESETS, type DeviceSpec, type QemuOption } from './devices';

/** Root-bus slots the lab's machine uses itself, and what for. */
export const RESERVED_SLOTS: ReadonlyMap<number, string> = new Map([
  [0x00, "q35's host bridge"],
  [0x10, "the lab's 9p export of the host root"],
  [0x11, "the lab's 9p export of the run directory"],
  [0x1f, "q35's LPC, SATA and SMBus functions"],
]);
const FIRST_AUTO_SLOT = 0x03;

/** A device's backing file: the one the spec names, or one the lab makes in the run directory. */
export interface BackingFile {
  path: string;
  size: number;
  /** What the lab writes into a file it makes: random bytes (a disk), zeros (shared memory), or nothing (the user's). */
  make: 'random' | 'zero' | null;
}

/** A device where it sits. */
export interface PlacedDevice {
  spec: DeviceSpec;
  role: string;
  bdf: string;
  /** `vfio-pci`, the kernel driver it stays on, or null when the lab leaves it alone. */
  driver: string | null;
  /** The vendor:device the guest checks, or null for any. */
  ids: string | null;
  file?: BackingFile;
  /** A directory the lab makes in the run directory (a blocker's empty 9p export). */
  dir?: string;
}

/** The layout: the devices and the QEMU arguments for all of them. */
export interface Layout {
  devices: PlacedDevice[];
  qemuArgs: string[];
}

/** What {@link layOut} needs besides the specs. */
export interface LayoutOptions {
  /** The run directory (files the lab makes go there). */
  runDir: string;
  /** The size of a file a spec names (for a shared-memory backend without size=). */
  fileSize: (file: string) => number;
}

interface Unit {
  members: DeviceSpec[];
  port: QemuOption[] | null;
  portSlot?: number;
  slot?: number;
}

const hex2 = (n: number): string => n.toString(16).padStart(2, '0');

/** Collects specs into slots: a group shares one, every other device has its own. */
function units(specs: readonly DeviceSpec[]): Unit[] {
  const out: Unit[] = [];
  const groups = new Map<string, Unit>();
  for (const s of specs) {
    let u = s.group !== undefined ? groups.get(s.group) : undefined;
    if (!u) {
      u = { members: [], port: null };
      out.push(u);
      if (s.group !== undefined) groups.set(s.group, u);
    } else if (s.addr !== undefined) {
      throw new UsageError(
        `--device ${s.text}: in group ${s.group} only the first device gives addr=`,
        'the others follow it as functions 1, 2, ... of the same slot',
      );
    }
    u.members.push(s);
    if (s.port !== null) u.port = [...(u.port ?? []), ...s.port];
  }
  for (const u of out) {
    const first = u.members[0];
    if (u.members.length > 8)
      throw new UsageError(
        `group ${first.group} has ${u.members.length} devices`,
        'a slot holds 8 functions at most',
      );
    const addrAt = u.port ? u.port.findIndex(([k]) => k === 'addr') : -1;
    if (u.port && addrAt >= 0) {
      u.portSlot = parseAddr(u.port[addrAt][1] ?? '', `--device ${first.text}: port.addr`).slot;
      u.port = u.port.filter((_, i) => i !== addrAt);
    }
    if (first.addr !== undefined) {
      if (first.addr.fn !== undefined && first.addr.fn !== 0) {
        throw new UsageError(
          `--device ${first.text}: function ${first.addr.fn} without a function 0`,
          'the guest finds a slot by its function 0: give the slot alone, and group= for more functions',
        );
      }
      if (u.port && first.addr.slot !== 0) {
        throw new UsageError(
          `--device ${first.text}: behind a root port the device is at 00.0`,
          'give the root port its slot with port.addr=SLOT',
        );
      }
      if (!u.port) u.slot = first.addr.slot;
    }
  }
  return out;
}

/** Gives every unit (or its root port) a root-bus slot: those asked for, then the free ones in order. */
function assignSlots(list: Unit[]): void {
  const used = new Map<number, string>();
  const take = (slot: number, who: string): void => {
    const reserved = RESERVED_SLOTS.get(slot);
    if (reserved !== undefined)
      throw new UsageError(
        `${who}: slot ${hex2(slot)} is ${reserved}`,
        'pick another addr=, or leave it out',
      );
    const other = used.get(slot);
    if (other !== undefined)
      throw new UsageError(
        `${who}: slot ${hex2(slot)} is taken by --device ${other}`,
        'pick another addr=, or leave it out',
      );
    used.set(slot, who.replace(/^--device /, ''));
  };
  for (const u of list) {
    const explicit = u.port ? u.portSlot : u.slot;
    if (explicit !== undefined) take(explicit, `--device ${u.members[0].text}`);
  }
  let next = FIRST_AUTO_SLOT;
  for (const u of list) {
    if ((u.port ? u.portSlot : u.slot) !== undefined) continue;
    while (next <= 0x1f && (used.has(next) || RESERVED_SLOTS.has(next))) next++;
    if (next > 0x1f)
      throw new UsageError(
        'the lab has no free slot left on the root bus',
        'put devices in groups (group=) to share slots',
      );
    take(next, `--device ${u.members[0].text}`);
    if (u.port) u.portSlot = next;
    else u.slot = next;
  }
}

/** Roles as given, else the preset or model name, numbered from 2 when it repeats. */
function roles(specs: readonly DeviceSpec[]): string[] {
  const taken = new Set<string>();
  for (const s of specs) {
    if (s.role === undefined) continue;
    if (taken.has(s.role))
      throw new UsageError(`role ${s.role} is given to two devices`, 'give each device its own role=');
    taken.add(s.role);
  }
  return specs.map((s) => {
    if (s.role !== undefined) return s.role;
    const base = (s.preset ?? s.model).replace(/^[^A-Za-z]+/, '') || 'device';
    let role = base;
    for (let n = 2; taken.has(role); n++) role = `${base}${n}`;
    taken.add(role);
    return role;
  });
}

/** The backend arguments of a preset and the options they add to its -device. */
function backend(
  s: DeviceSpec,
  role: string,
  opts: LayoutOptions,
): { args: string[]; options: QemuOption[]; file?: BackingFile; dir?: string } {
  const kind = s.preset !== null ? PRESETS[s.preset].backend : undefined;
  const has = (k: string): boolean => s.options.some(([key]) => key === k);
  const defaultSize = s.preset !== null ? (PRESETS[s.preset].defaultSize ?? 0) : 0;
  switch (kind) {
    case 'net':
      if (has('netdev')) return { args: [], options: [] };
      return {
        args: ['-netdev', `user,id=${role}-net,restrict=on`],
        options: [['netdev', `${role}-net`]],
      };
    case 'drive': {
      const file: BackingFile = s.file
        ? { path: path.resolve(s.file), size: opts.fileSize(path.resolve(s.file)), make: null }
        : { path: path.join(opts.runDir, `${role}.img`), size: s.size ?? defaultSize, make: 'random' };
      return {
        args: [
          '-drive',
          joinOptions(`file=${file.path}`, [
            ['if', 'none'],
            ['id', `${role}-drive`],
            ['format', 'raw'],
          ]),
        ],
        options: [['drive', `${role}-drive`], ...(has('serial') ? [] : [['serial', role] as QemuOption])],
        file,
      };
    }
    case 'memory': {
      const file: BackingFile = s.file
        ? { path: path.resolve(s.file), size: s.size ?? opts.fileSize(path.resolve(s.file)), make: null }
        : { path: path.join(opts.runDir, `${role}.bin`), size: s.size ?? defaultSize, make: 'zero' };
      return {
        args: [
          '-object',
          joinOptions('memory-backend-file', [
            ['id', `${role}-mem`],
            ['mem-path', file.path],
            ['size', String(file.size)],
            ['share', 'on'],
          ]),
        ],
        options: [['memdev', `${role}-mem`]],
        file,
      };
    }
    case 'blocker': {
      const dir = path.join(opts.runDir, role);
      return {
        args: [
          '-fsdev',
          joinOptions('local', [
            ['id', `${role}-fs`],
            ['path', dir],
            ['security_model', 'none'],
            ['readonly', 'on'],
          ]),
        ],
        options: [
          ['fsdev', `${role}-fs`],
          ['mount_tag', role],
        ],
        dir,
      };
    }
    default:
      return { args: [], options: [] };
  }
}

/**
 * layOut: the devices' slots, addresses and QEMU arguments.
 * @throws UsageError for a slot asked twice or reserved, a role given twice, a full bus, a group
 * of more than 8, or an addr= the layout cannot honour
 */
export function layOut(specs: readonly DeviceSpec[], opts: LayoutOptions): Layout {
  const list = units(specs);
  assignSlots(list);
  const names = roles(specs);
  const roleOf = new Map(specs.map((s, i) => [s, names[i]]));
  // A root port's secondary bus is numbered in slot order: the first port's devices are on bus 01.
  const ported = list.filter((u) => u.port).sort((a, b) => a.portSlot! - b.portSlot!);
  const busOf = new Map(ported.map((u, i) => [u, i + 1]));

  const devices: PlacedDevice[] = [];
  const qemuArgs: string[] = [];
  for (const u of list) {
    const bus = busOf.get(u) ?? 0;
    const slot = u.port ? 0 : u.slot!;
    if (u.port) {
      const id = `rp${u.portSlot!.toString(16)}`;
      const chassis = u.port.some(([k]) => k === 'chassis')
        ? []
        : [['chassis', String(u.portSlot)] as QemuOption];
      qemuArgs.push(
        '-device',
        joinOptions('pcie-root-port', [
          ['id', id],
          ['bus', 'pcie.0'],
          ['addr', `${hex2(u.portSlot!)}.0`],
          ...chassis,
          ...u.port,
        ]),
      );
    }
    u.members.forEach((s, fn) => {
      const role = roleOf.get(s)!;
      const b = backend(s, role, opts);
      const place: QemuOption[] = [
        ...(u.port ? [['bus', `rp${u.portSlot!.toString(16)}`] as QemuOption] : []),
        ['addr', `${hex2(slot)}.${fn}`],
        ...(fn === 0 && u.members.length > 1 ? [['multifunction', 'on'] as QemuOption] : []),
      ];
      qemuArgs.push(...b.args, '-device', joinOptions(s.model, [...b.options, ...s.options, ...place]));
      devices.push({
        spec: s,
        role,
        bdf: `0000:${hex2(bus)}:${hex2(slot)}.${fn}`,
        driver: !s.bind ? null : (s.driver ?? 'vfio-pci'),
        ids: s.ids,
        ...(b.file ? { file: b.file } : {}),
        ...(b.dir ? { dir: b.dir } : {}),
      });
    });
  }
  // The devices in the order given (the arguments keep each slot's functions together).
  const order = new Map(specs.map((s, i) => [s, i]));
  devices.sort((a, b) => order.get(a.spec)! - order.get(b.spec)!);
  return { devices, qemuArgs };
}
