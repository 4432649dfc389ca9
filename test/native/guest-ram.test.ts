import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';

import { AddressSpace, GuestRam, MAX_GUEST_RAM_BUFFER, MemoryRegion, type VfioError } from '../../lib';
import { caught } from './helpers';

const LIB = JSON.stringify(path.join(__dirname, '..', '..', 'lib'));
const GiB = 2 ** 30;

/** Lines of /proc/self/maps that belong to the memfd called `name`. */
function mappingsOf(name: string): number {
  return fs
    .readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => l.includes(`/memfd:${name} `)).length;
}

describe('GuestRam', () => {
  it('shows the same pages through every window, without copies', () => {
    using ram = GuestRam.create(0x10000, { name: 'vfio-bridge-gr-views' });
    const whole = new DataView(ram.buffer());
    const tail = ram.view(0x8000, 0x1000);
    whole.setUint32(0x8010, 0xa1b2c3d4, true);
    expect(tail.getUint32(0x10, true)).toBe(0xa1b2c3d4);
    tail.setUint16(0x20, 0xbeef, true);
    expect(whole.getUint16(0x8020, true)).toBe(0xbeef);
    expect(ram.buffer(0x8000, 0x1000)).toBe(ram.buffer(0x8000, 0x1000)); // one buffer per window
    expect(tail.buffer).toBe(ram.buffer()); // a view is cut from the window holding it
    // The memfd holds the bytes: read them back through the fd.
    const b = Buffer.alloc(4);
    fs.readSync(ram.fd, b, 0, 4, 0x8010);
    expect(b.readUInt32LE(0)).toBe(0xa1b2c3d4);
    expect(typeof ram.hostAddress).toBe('bigint');
    expect(ram.hostAddress % 4096n).toBe(0n);
    expect(mappingsOf('vfio-bridge-gr-views')).toBe(1);
  });

  it('backs a memory-model ram region that guest accesses reach', () => {
    using ram = GuestRam.create(0x4000);
    const root = MemoryRegion.container('system', 2 ** 32);
    root.addSubregion(ram.region('pc.ram', 0x1000, 0x2000), 0x10000);
    using as = new AddressSpace('memory', root, { log: null });
    as.write(0x10004, 4, 0x11223344);
    expect(ram.view(0x1004, 4).getUint32(0, true)).toBe(0x11223344);
  });

  it('holds several GiB, shown through windows of at most one ArrayBuffer', () => {
    using ram = GuestRam.create(6 * GiB, { name: 'vfio-bridge-gr-big' });
    expect(ram.length).toBe(6 * GiB);
    const hi = ram.view(5 * GiB + 0x123000, 0x1000);
    hi.setUint32(8, 0xfeedface, true);
    const b = Buffer.alloc(4);
    fs.readSync(ram.fd, b, 0, 4, 5 * GiB + 0x123008);
    expect(b.readUInt32LE(0)).toBe(0xfeedface);
    if (MAX_GUEST_RAM_BUFFER < 6 * GiB) {
      expect(() => ram.buffer()).toThrow(new RegExp(`exceed the ${MAX_GUEST_RAM_BUFFER}-byte limit`));
    }
    expect(ram.buffer(0, MAX_GUEST_RAM_BUFFER).byteLength).toBe(MAX_GUEST_RAM_BUFFER);
  });

  it('is shared with a worker thread, which maps the same pages', async () => {
    using ram = GuestRam.create(0x20000, { name: 'vfio-bridge-gr-share' });
    ram.view(0, 8).setUint32(0, 0x600dcafe, true);
    const worker = new Worker(
      `
      require('@swc-node/register');
      const { parentPort, workerData } = require('node:worker_threads');
      const { GuestRam } = require(${LIB});
      const ram = GuestRam.attach(workerData);
      const v = ram.view(0, 0x20000);
      const seen = v.getUint32(0, true);
      v.setUint32(0x1f000, 0x0badf00d, true);
      ram.close();
      parentPort.postMessage(seen);
      `,
      { eval: true, workerData: ram.share() },
    );
    const seen = await new Promise<number>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    await worker.terminate();
    expect(seen).toBe(0x600dcafe);
    expect(ram.view(0x1f000, 4).getUint32(0, true)).toBe(0x0badf00d);
  });

  it('refuses to attach to a share whose RAM was closed', () => {
    const ram = GuestRam.create(0x1000);
    const shared = ram.share();
    ram.close();
    // The fd number may be reused by anything: the (dev, ino) check must not map it.
    const other = fs.openSync('/dev/null', 'r');
    try {
      const e = caught(() => GuestRam.attach(shared)) as VfioError;
      expect(['EBADF']).toContain(e.code);
    } finally {
      fs.closeSync(other);
    }
  });

  it('cuts views from the window that holds them instead of keeping a new window per view', () => {
    using ram = GuestRam.create(0x10000, { name: 'vfio-bridge-gr-cut' });
    const views = Array.from({ length: 512 }, (_, i) => ram.view(i * 0x80 + 4, 8));
    expect(new Set(views.map((v) => v.buffer)).size).toBe(1);
    expect(views[3].byteOffset).toBe(3 * 0x80 + 4);
    expect(views[3].byteLength).toBe(8);
    views[3].setUint32(0, 0x12345678, true);
    expect(new DataView(ram.buffer()).getUint32(3 * 0x80 + 4, true)).toBe(0x12345678);
    expect(() => ram.view(0xfffc, 8)).toThrow(/offset 65532 length 8 is outside the 65536-byte RAM/);
  });

  it('detaches every window on close, so views read empty instead of freed memory', () => {
    const ram = GuestRam.create(0x3000, { name: 'vfio-bridge-gr-close' });
    const a = new Uint8Array(ram.buffer());
    const b = ram.view(0x1000, 0x1000);
    a[0] = 1;
    ram.close();
    ram.close(); // idempotent
    expect(a.length).toBe(0);
    expect(() => b.getUint8(0)).toThrow(TypeError);
    expect(mappingsOf('vfio-bridge-gr-close')).toBe(0);
    expect((caught(() => ram.buffer()) as VfioError).code).toBe('ECLOSED');
    expect((caught(() => ram.hostAddress) as VfioError).code).toBe('ECLOSED');
  });

  it('refuses to close while an address space shows it, directly or through an alias', () => {
    const ram = GuestRam.create(0x4000, { name: 'vfio-bridge-gr-busy' });
    const root = MemoryRegion.container('system', 2 ** 32);
    const whole = ram.region('pc.ram');
    root.addSubregion(MemoryRegion.alias('ram-low', whole, 0x1000, 0x1000), 0);
    const direct = ram.region('direct', 0x2000, 0x1000);
    root.addSubregion(direct, 0x10000);
    const as = new AddressSpace('memory', root, { log: null });
    const e = caught(() => ram.close()) as VfioError;
    expect(e.code).toBe('EBUSY');
    expect(e.op).toBe('guestRam.close');
    expect(e.message).toContain("'pc.ram' in address space 'memory', 'direct' in address space 'memory'");
    expect(e.hint).toMatch(/removeSubregion.*or close those address spaces/);
    // Refused means untouched: the guest still reaches the RAM.
    expect(ram.closed).toBe(false);
    as.write(0x10000, 4, 0xcafe);
    expect(ram.view(0x2000, 4).getUint32(0, true)).toBe(0xcafe);
    root.removeSubregion(direct);
    expect((caught(() => ram.close()) as VfioError).message).not.toContain("'direct'");
    as.close();
    ram.close();
    expect(mappingsOf('vfio-bridge-gr-busy')).toBe(0);
    // A region of the closed RAM placed later is unassigned space, not a TypeError.
    const seen: string[] = [];
    using late = new AddressSpace('late', root, { log: null });
    late.on('unassigned', (u) => seen.push(`${u.reason}@${u.addr}`));
    expect(late.flatView.ranges).toEqual([]);
    expect(late.read(0, 4)).toBe(0xffffffff);
    root.addSubregion(direct, 0x10000);
    expect(late.read(0x10000, 2)).toBe(0xffff);
    expect(seen).toEqual(['unassigned@0', 'unassigned@65536']);
  });

  it('lives while its object or any of its buffers is reachable, and is released by GC after', () => {
    const script = `
      const fs = require('node:fs');
      const { GuestRam } = require(${LIB});
      const maps = () => fs.readFileSync('/proc/self/maps', 'utf8').split('\\n')
        .filter((l) => l.includes('/memfd:vfio-bridge-gr-gc ')).length;
      let kept = (() => {
        for (let i = 0; i < 3; i++) GuestRam.create(0x10000, { name: 'vfio-bridge-gr-gc' }).view(0, 4).setUint8(0, i);
        const ram = GuestRam.create(0x10000, { name: 'vfio-bridge-gr-gc' });
        const v = new Uint8Array(ram.buffer(0x1000, 0x1000));
        v[5] = 42;
        return v;
      })();
      const collect = async () => { for (let i = 0; i < 10; i++) { global.gc(); await new Promise((r) => setImmediate(r)); } };
      (async () => {
        const before = maps();
        await collect();
        const withBuffer = maps();
        const value = kept[5];
        kept = null;
        await collect();
        console.log(JSON.stringify({ before, withBuffer, value, after: maps() }));
      })();
    `;
    const r = spawnSync(process.execPath, ['--expose-gc', '-r', '@swc-node/register', '-e', script], {
      cwd: path.join(__dirname, '..', '..'),
      encoding: 'utf8',
    });
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({ before: 4, withBuffer: 1, value: 42, after: 0 });
  });

  it('is released at worker exit when never closed', async () => {
    const worker = new Worker(
      `
      require('@swc-node/register');
      const { parentPort } = require('node:worker_threads');
      const { GuestRam } = require(${LIB});
      globalThis.kept = GuestRam.create(0x10000, { name: 'vfio-bridge-gr-exit' });
      globalThis.view = new Uint8Array(globalThis.kept.buffer());
      setInterval(() => {}, 1000);
      parentPort.postMessage('ready');
      `,
      { eval: true },
    );
    await new Promise((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    expect(mappingsOf('vfio-bridge-gr-exit')).toBe(1);
    await worker.terminate();
    expect(mappingsOf('vfio-bridge-gr-exit')).toBe(0);
  });

  it('asks for huge pages with MFD_HUGETLB and says clearly when there are none', () => {
    const dir = '/sys/kernel/mm/hugepages/hugepages-2048kB';
    const free = fs.existsSync(dir) ? Number(fs.readFileSync(`${dir}/free_hugepages`, 'utf8')) : 0;
    if (free >= 2) {
      using ram = GuestRam.create(4 * 2 ** 20, { hugepages: 2 * 2 ** 20 });
      expect(ram.hugePageSize).toBe(2 * 2 ** 20);
      ram.view(0, 4).setUint32(0, 1, true);
    } else {
      const e = caught(() => GuestRam.create(4 * 2 ** 20, { hugepages: 2 * 2 ** 20 })) as VfioError;
      expect(e.code).toBe('ENOHUGEPAGES');
      expect(e.message).toContain('2 pages of 2097152 bytes');
      expect(e.hint).toContain(dir);
    }
    expect(() => GuestRam.create(3 * 2 ** 20, { hugepages: 2 * 2 ** 20 })).toThrow(
      /multiple of the huge page size/,
    );
    expect(() => GuestRam.create(4096, { hugepages: 3000 })).toThrow(RangeError);
  });

  it('refuses bad sizes and windows with typed errors', () => {
    expect(() => GuestRam.create(0)).toThrow(RangeError);
    expect(() => GuestRam.create(-1)).toThrow(RangeError);
    expect(() => GuestRam.create('1' as never)).toThrow(TypeError);
    using ram = GuestRam.create(0x2000);
    expect(() => ram.buffer(0x1000, 0x2000)).toThrow(/outside the 8192-byte RAM/);
    expect(() => GuestRam.attach(null as never)).toThrow(TypeError);
  });
});
