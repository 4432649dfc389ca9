/**
 * The host side of a fake tree: a /proc with mountinfo, swaps and the routing tables, and an `ip`
 * that answers `ip -4 -o addr show dev NAME` from a table, so the host-use checks run without
 * touching the machine's own network or disks.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface FakeHost {
  /** `major:minor mountpoint` pairs. */
  mounts?: [string, string][];
  /** Swap devices, e.g. `/dev/nvme0n1p2`. */
  swaps?: string[];
  /** Interfaces with an IPv4 route in the main table. */
  routes?: string[];
  /** IPv4 addresses by interface (`10.0.0.2/24`). */
  ipv4?: Record<string, string[]>;
  /** IPv6 addresses by interface, as if_inet6's 32 hex digits and a prefix length. */
  ipv6?: Record<string, [string, number][]>;
}

/** Write the fake /proc under `dir/proc` and the fake `ip` as `dir/ip`; returns the env for the CLI. */
export function makeHost(dir: string, host: FakeHost = {}): NodeJS.ProcessEnv {
  const proc = path.join(dir, 'proc');
  fs.mkdirSync(path.join(proc, 'self'), { recursive: true });
  fs.mkdirSync(path.join(proc, 'net'), { recursive: true });
  const mountinfo = [
    '22 1 0:21 / /proc rw,nosuid - proc proc rw',
    '23 1 0:22 / /sys rw,nosuid - sysfs sysfs rw',
    ...(host.mounts ?? []).map(([dev, at], i) => `${30 + i} 1 ${dev} / ${at} rw,relatime - ext4 /dev/x rw`),
  ];
  fs.writeFileSync(path.join(proc, 'self/mountinfo'), mountinfo.join('\n') + '\n');
  fs.writeFileSync(
    path.join(proc, 'swaps'),
    'Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n' +
      (host.swaps ?? []).map((s) => `${s}\tpartition\t8388604\t0\t-2\n`).join(''),
  );
  fs.writeFileSync(
    path.join(proc, 'net/route'),
    'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n' +
      (host.routes ?? []).map((i) => `${i}\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n`).join(''),
  );
  fs.writeFileSync(
    path.join(proc, 'net/ipv6_route'),
    '00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000001 00000000 00000001       lo\n' +
      // What every interface that is up has: its link-local and multicast routes.
      'fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth1\n' +
      'ff000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth1\n',
  );
  fs.writeFileSync(
    path.join(proc, 'net/if_inet6'),
    Object.entries(host.ipv6 ?? {})
      .flatMap(([iface, addrs]) =>
        addrs.map(
          ([a, len], i) =>
            `${a} ${(i + 2).toString(16).padStart(2, '0')} ${len.toString(16)} 00 80 ${iface}\n`,
        ),
      )
      .join(''),
  );
  const lines = Object.entries(host.ipv4 ?? {}).flatMap(([iface, addrs]) =>
    addrs.map(
      (a) =>
        `${iface}) echo "2: ${iface}    inet ${a} brd 255.255.255.255 scope global ${iface}\\       valid_lft forever preferred_lft forever" ;;`,
    ),
  );
  const ip = path.join(dir, 'ip');
  fs.writeFileSync(
    ip,
    `#!/bin/sh\n# ip -4 -o addr show dev NAME\neval "dev=\\$$#"\ncase "$dev" in\n${lines.join('\n')}\nesac\n`,
    {
      mode: 0o755,
    },
  );
  return { VFIO_BRIDGE_PROC_ROOT: proc, VFIO_BRIDGE_IP: ip };
}
