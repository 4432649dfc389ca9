// threadCpuMs: the calling thread's CPU time, which grows while it computes and not while it sleeps.
import { native } from '../../lib/native';

test('threadCpuMs counts what the thread ran, not the time it slept', () => {
  // Computing: the thread's own clock reaches 30 ms however busy the machine is (within 10 s).
  const a = native.threadCpuMs();
  const deadline = Date.now() + 10_000;
  let spins = 0;
  while (native.threadCpuMs() - a < 30 && Date.now() < deadline) spins++;
  const b = native.threadCpuMs();
  expect([b - a >= 30, spins > 0]).toEqual([true, true]);
  // Sleeping 100 ms: next to nothing.
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
  expect(native.threadCpuMs() - b).toBeLessThan(20);
});
