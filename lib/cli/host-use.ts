/**
 * Whether the host is using a device: a network interface with an address, a route or its link
 * up; a block device that is mounted, used as swap or held by md/dm/LVM; the console or a
 * framebuffer. Taking such a device from its driver cuts the host off from its network, its disks
 * or its screen, so bind and unbind refuse it unless told to with --force.
 *
 * Interfaces and disks are looked for anywhere under the device's sysfs directory, because they
 * often sit deeper than the PCI function: virtio-net's interface under `virtioN/net/`, virtio-blk's
 * disk under `virtioN/block/`, NVMe namespaces under `nvme/nvmeN/`, AHCI and SCSI disks under
 * `hostN/targetN:.../N:N:N:N/block/`.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { VfioError } from '../base/native-errors';
import type { SysfsOptions } from '../vfio/sysfs';
import { deviceDir } from './pci-sysfs';

/** IFF_UP in a net device's `flags`. */
const IFF_UP = 0x1;
/** Deep enough for SCSI disks (hostN/targetN/N:N:N:N/block/sdX/sdXN) and a bridge's children. */
const MAX_DEPTH = 10;

/** Where the checks look, all injectable so tests run on fake trees. */
export interface HostUseOptions extends SysfsOptions {
  /** The proc root (default `/proc`): `self/mountinfo`, `swaps`, `net/route`, `net/ipv6_route`, `net/if_inet6`. */
  procRoot?: string;
  /**
   * The `ip` command (default `ip`) that names an interface's IPv4 addresses: /proc lists them
   * without their interface, so they are asked for with `ip -4 -o addr show dev NAME`.
   */
  ipCommand?: string;
}

/** One reason the host needs the device, and what would release it. */
export interface HostUse {
  what: string;
  release: string;
}

interface Found {
  nets: { name: string; dir: string }[];
  /** Block devices (disks and partitions): name and `major:minor`. */
  blocks: { name: string; dev: string; dir: string }[];
  fbs: string[];
}

function read(p: string): string | null {
  try {
    return fs.readFileSync(p, 'utf8');
  } catch {
    return null; // absent (or unreadable): nothing to say
  }
}

function subsystemOf(dir: string): string | null {
  try {
    return path.basename(fs.readlinkSync(path.join(dir, 'subsystem')));
  } catch {
    return null;
  }
}

/** Walk real directories only: sysfs's symlinks (driver, subsystem, device) lead back up. */
function walk(dir: string, depth: number, found: Found): void {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const e of entries) {
    if (!e.isDirectory()) continue;
    const child = path.join(dir, e.name);
    const parent = path.basename(dir);
    const subsystem = subsystemOf(child);
    if (subsystem === 'net' || (subsystem === null && parent === 'net'))
      found.nets.push({ name: e.name, dir: child });
    else if (subsystem === 'block' || (subsystem === null && parent === 'block')) {
      const dev = read(path.join(child, 'dev'));
      if (dev !== null) found.blocks.push({ name: e.name, dev: dev.trim(), dir: child });
    } else if (parent === 'graphics' && /^fb[0-9]+$/.test(e.name)) found.fbs.push(e.name);
    if (depth < MAX_DEPTH) walk(child, depth + 1, found);
  }
}

function ipv4Addresses(ip: string, iface: string): string[] {
  try {
    const out = execFileSync(ip, ['-4', '-o', 'addr', 'show', 'dev', iface], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    return [...out.matchAll(/\binet ([0-9.]+\/[0-9]+)/g)].map((m) => m[1]);
  } catch {
    return []; // no `ip`, or the interface went away
  }
}

/** An IPv6 address from if_inet6's 32 hex digits, in the usual short form (fd00::2). */
function ipv6Text(hex: string): string {
  const groups = (hex.match(/.{4}/g) ?? []).map((g) => parseInt(g, 16).toString(16));
  let best = [-1, 0];
  for (let i = 0; i < groups.length;) {
    let j = i;
    while (j < groups.length && groups[j] === '0') j++;
    if (j - i > best[1]) best = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  if (best[1] < 2) return groups.join(':');
  return `${groups.slice(0, best[0]).join(':')}::${groups.slice(best[0] + best[1]).join(':')}`;
}

/** IPv6 addresses per interface from `net/if_inet6` (all scopes but link-local). */
function ipv6Addresses(procRoot: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of (read(path.join(procRoot, 'net/if_inet6')) ?? '').split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 6) continue;
    const scope = parseInt(f[3], 16);
    if (scope === 0x20) continue; // link-local: every interface that is up has one
    const addr = ipv6Text(f[0]);
    out.set(f[5], [...(out.get(f[5]) ?? []), `${addr}/${parseInt(f[2], 16)}`]);
  }
  return out;
}

/** The interfaces that have at least one route, from `net/route` and `net/ipv6_route`. */
function routedInterfaces(procRoot: string): Set<string> {
  const out = new Set<string>();
  (read(path.join(procRoot, 'net/route')) ?? '')
    .split('\n')
    .slice(1)
    .forEach((l) => {
      const iface = l.trim().split(/\s+/)[0];
      if (iface) out.add(iface);
    });
  for (const l of (read(path.join(procRoot, 'net/ipv6_route')) ?? '').split('\n')) {
    const f = l.trim().split(/\s+/);
    // Link-local (fe80::/10) and multicast (ff00::/8) routes come with every link that is up.
    if (f.length < 10 || f[9] === 'lo' || /^(fe[89ab]|ff)/i.test(f[0])) continue;
    out.add(f[9]);
  }
  return out;
}

/** Mount points by `major:minor`, from `self/mountinfo`. */
function mounts(procRoot: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of (read(path.join(procRoot, 'self/mountinfo')) ?? '').split('\n')) {
    const f = line.split(' ');
    if (f.length < 5) continue;
    out.set(f[2], [...(out.get(f[2]) ?? []), f[4]]);
  }
  return out;
}

/** Swap devices' names (`/dev/nvme0n1p2` -> `nvme0n1p2`), from `swaps`. */
function swapNames(procRoot: string): Set<string> {
  const lines = (read(path.join(procRoot, 'swaps')) ?? '').split('\n').slice(1);
  return new Set(lines.map((l) => path.basename(l.trim().split(/\s+/)[0] ?? '')).filter((n) => n !== ''));
}

/** Every way the host uses `bdf`; empty when nothing holds it. */
export function hostUses(bdf: string, opts: HostUseOptions = {}): HostUse[] {
  const dir = deviceDir(bdf, opts);
  const procRoot = opts.procRoot ?? '/proc';
  const found: Found = { nets: [], blocks: [], fbs: [] };
  walk(dir, 0, found);
  const uses: HostUse[] = [];

  if (found.nets.length > 0) {
    const v6 = ipv6Addresses(procRoot);
    const routed = routedInterfaces(procRoot);
    for (const { name, dir: netDir } of found.nets) {
      const flags = parseInt(read(path.join(netDir, 'flags')) ?? '0', 16);
      const addrs = [...ipv4Addresses(opts.ipCommand ?? 'ip', name), ...(v6.get(name) ?? [])];
      const why = [
        ...(addrs.length > 0 ? [`has address ${addrs.join(', ')}`] : []),
        ...(routed.has(name) ? ['has routes'] : []),
        ...((flags & IFF_UP) !== 0 ? ['is up'] : []),
      ];
      if (why.length === 0) continue;
      uses.push({
        what: `network interface ${name} ${why.join(', ')}`,
        release: `ip addr flush dev ${name}; ip link set ${name} down`,
      });
    }
  }

  if (found.blocks.length > 0) {
    const mounted = mounts(procRoot);
    const swaps = swapNames(procRoot);
    for (const b of found.blocks) {
      const at = mounted.get(b.dev);
      if (at)
        uses.push({
          what: `block device ${b.name} is mounted on ${at.join(', ')}`,
          release: `umount ${at[0]}`,
        });
      if (swaps.has(b.name))
        uses.push({ what: `block device ${b.name} is in use as swap`, release: `swapoff /dev/${b.name}` });
      let holders: string[] = [];
      try {
        holders = fs.readdirSync(path.join(b.dir, 'holders'));
      } catch {
        // no holders directory: nothing stacked on it
      }
      if (holders.length > 0) {
        uses.push({
          what: `block device ${b.name} is held by ${holders.join(', ')} (md, dm or LVM)`,
          release: `stop what holds it (mdadm --stop, vgchange -an, dmsetup remove)`,
        });
      }
    }
  }

  if ((read(path.join(dir, 'boot_vga')) ?? '').trim() === '1') {
    uses.push({
      what: 'it is the boot VGA device (the firmware console)',
      release: 'use another GPU for the console, or boot with video=efifb:off',
    });
  }
  for (const fb of found.fbs) {
    uses.push({
      what: `it drives framebuffer ${fb} (the console, fbcon, may be on it)`,
      release: 'unbind the console first (echo 0 > /sys/class/vtconsole/vtcon1/bind)',
    });
  }
  return uses;
}

/**
 * checkNotInHostUse: refuse to take `bdf` from its driver while the host uses it.
 * @throws VfioError EBUSY listing every use, what releases it, and --force
 */
export function checkNotInHostUse(bdf: string, verb: string, opts: HostUseOptions = {}): void {
  const uses = hostUses(bdf, opts);
  if (uses.length === 0) return;
  throw new VfioError({
    message: `${bdf} is in use by the host: ${uses.map((u) => u.what).join('; ')}`,
    code: 'EBUSY',
    errno: 16,
    op: verb,
    path: deviceDir(bdf, opts),
    bdf,
    hint: `release it first (${[...new Set(uses.map((u) => u.release))].join('; ')}), or pass --force to ${verb} it anyway`,
  });
}
