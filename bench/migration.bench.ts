/**
 * Migration benchmark on the kernel's mtty sample (`npm run bench:migration`, in a lab guest whose
 * kernel has CONFIG_SAMPLE_VFIO_MDEV_MTTY, with mtty loaded): the latency of each arc mtty
 * implements (one VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE each, p50 and p99), the STOP_COPY data size
 * against the device's estimate, and the time to save a state (STOP_COPY and its stream) and to load
 * it into a second instance, for the one- and two-port types. It creates and removes its own mdevs.
 */
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import {
  arcTour,
  Container,
  createMdev,
  type Device,
  DeviceMigration,
  Group,
  loadState,
  type MigrationState,
  removeMdev,
  saveState,
} from '../lib/vfio';

const ROUNDS = Number(process.env.ROUNDS ?? 50);
const TRANSFERS = Number(process.env.TRANSFERS ?? 50);

interface Opened {
  device: Device;
  close(): void;
}

function open(uuid: string): Opened {
  const container = Container.open();
  const group = Group.openByMdev(uuid);
  group.setContainer(container);
  container.setIommu();
  const device = group.openDevice(uuid);
  return {
    device,
    close() {
      device.close();
      group.close();
      container.close();
    },
  };
}

function pct(v: number[], p: number): number {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

const us = (ms: number): string => `${(ms * 1000).toFixed(0)} us`;

async function saved(m: DeviceMigration): Promise<Buffer> {
  const parts: Buffer[] = [];
  await saveState(
    m,
    new Writable({
      write(c: Buffer, _e, cb) {
        parts.push(c);
        cb();
      },
    }),
  );
  return Buffer.concat(parts);
}

async function arcs(type: string): Promise<void> {
  const uuid = createMdev('mtty', type).uuid;
  const o = open(uuid);
  try {
    const m = new DeviceMigration(o.device);
    const own = await saved(m);
    m.setState('RUNNING');
    const times = new Map<string, number[]>();
    let at: MigrationState = m.state;
    for (let r = 0; r < ROUNDS; r++) {
      for (const to of arcTour(m.flags(), at)) {
        if (at === 'RESUMING') await pipeline(Readable.from([own]), m.session!.writer());
        const step = m.setState(to, { stepwise: true });
        const key = `${at} -> ${to}`;
        times.set(key, [...(times.get(key) ?? []), step.requests[0]!.ms]);
        at = to;
      }
    }
    m.setState('RUNNING');
    console.log(`\n${type}: arc latency over ${ROUNDS} rounds (p50 / p99)`);
    for (const [k, v] of [...times].sort())
      console.log(`  ${k.padEnd(30)} ${us(pct(v, 50)).padStart(8)} ${us(pct(v, 99)).padStart(8)}`);
  } finally {
    o.close();
    await removeMdev(uuid);
  }
}

async function transfers(type: string): Promise<void> {
  const a = createMdev('mtty', type).uuid;
  const b = createMdev('mtty', type).uuid;
  const oa = open(a);
  const ob = open(b);
  try {
    const ma = new DeviceMigration(oa.device);
    const mb = new DeviceMigration(ob.device);
    const estimate = ma.dataSize();
    const save: number[] = [];
    const stopCopy: number[] = [];
    const load: number[] = [];
    const commit: number[] = [];
    let bytes = 0;
    for (let i = 0; i < TRANSFERS; i++) {
      const parts: Buffer[] = [];
      const r = await saveState(
        ma,
        new Writable({
          write(c: Buffer, _e, cb) {
            parts.push(c);
            cb();
          },
        }),
      );
      save.push(r.ms);
      stopCopy.push(r.stopCopyMs);
      bytes = r.bytes;
      ma.setState('RUNNING');
      const l = await loadState(mb, Readable.from([Buffer.concat(parts)]));
      load.push(l.ms);
      commit.push(l.commitMs);
    }
    console.log(
      `\n${type}: STOP_COPY data ${bytes} bytes (estimate ${estimate}); over ${TRANSFERS} transfers (p50 / p99):\n` +
        `  save (RUNNING -> STOP_COPY, stream, -> STOP)   ${us(pct(save, 50)).padStart(8)} ${us(pct(save, 99)).padStart(8)}\n` +
        `  of which stopped (STOP_COPY to STOP)          ${us(pct(stopCopy, 50)).padStart(8)} ${us(pct(stopCopy, 99)).padStart(8)}\n` +
        `  load (-> RESUMING, stream, -> STOP, RUNNING)  ${us(pct(load, 50)).padStart(8)} ${us(pct(load, 99)).padStart(8)}\n` +
        `  of which RESUMING -> STOP                     ${us(pct(commit, 50)).padStart(8)} ${us(pct(commit, 99)).padStart(8)}`,
    );
  } finally {
    oa.close();
    ob.close();
    await Promise.all([removeMdev(a), removeMdev(b)]);
  }
}

async function main(): Promise<void> {
  for (const type of ['mtty-1', 'mtty-2']) {
    await arcs(type);
    await transfers(type);
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
