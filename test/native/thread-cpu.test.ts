// threadCpuMs: the calling thread's CPU time, which grows while it computes and not while it sleeps.
import { native } from '../../lib/native';

test('threadCpuMs counts what the thread ran, not the time it slept', () => {
  const a = native.threadCpuMs();
  const until = Date.now() + 60;
  let x = 0;
  while (Date.now() < until) x++;
  const b = native.threadCpuMs();
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60);
  const c = native.threadCpuMs();
  expect(x).toBeGreaterThan(0);
  expect(b - a).toBeGreaterThan(30);
  expect(c - b).toBeLessThan(20);
  expect(Number.isFinite(c)).toBe(true);
});
