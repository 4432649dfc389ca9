// A watchdog for lab tests whose failure could be a main thread stuck in the kernel or in native
// code (then no jest timeout can fire, and the lab's --timeout ends the run with nothing said): a
// worker thread watches a heartbeat the event loop writes every second, and if it stops for
// `staleSeconds`, prints every thread of the process with its state, wait channel and kernel stack
// (the lab runs as root), once a minute while it lasts. It changes nothing it sees.
import { Worker } from 'node:worker_threads';

const WATCH = `
const { workerData } = require('node:worker_threads');
const fs = require('node:fs');
const beat = new Float64Array(workerData.beat);
const read = (f) => { try { return fs.readFileSync(f, 'utf8').trim(); } catch (e) { return '(' + e.code + ')'; } };
let told = 0;
setInterval(() => {
  const stale = (Date.now() - beat[0]) / 1000;
  if (stale < workerData.staleSeconds || Date.now() - told < 60000) return;
  told = Date.now();
  const lines = ['loop-watchdog: the event loop of pid ' + process.pid + ' has not run for ' + stale.toFixed(0) + ' s (' + workerData.name + '); its threads:'];
  for (const t of fs.readdirSync('/proc/self/task')) {
    const dir = '/proc/self/task/' + t;
    const stat = read(dir + '/stat');
    const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
    lines.push('  ' + t + ' ' + read(dir + '/comm') + ' state ' + state + ' wchan ' + read(dir + '/wchan'));
    for (const f of read(dir + '/stack').split('\\n').slice(0, 12)) lines.push('      ' + f);
  }
  fs.writeSync(2, lines.join('\\n') + '\\n');
}, 5000);
`;

/** Start watching this process's event loop; returns how to stop. */
export function watchLoop(name: string, staleSeconds = 60): () => Promise<void> {
  const beat = new Float64Array(new SharedArrayBuffer(8));
  beat[0] = Date.now();
  const timer = setInterval(() => (beat[0] = Date.now()), 1000);
  timer.unref();
  const worker = new Worker(WATCH, { eval: true, workerData: { beat: beat.buffer, staleSeconds, name } });
  worker.unref();
  return async () => {
    clearInterval(timer);
    await worker.terminate();
  };
}
