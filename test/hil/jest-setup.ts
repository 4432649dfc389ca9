import * as fs from 'node:fs';

// The lab runs under TCG on a shared machine: a worker thread loading the package, or a device
// reset, can take many seconds there. `testTimeout` in a jest project entry is not honoured (it is
// a global option), so the lab's timeout is set here, for the hil project only.
jest.setTimeout(120_000);

// The heartbeat scripts/lab/hil-run.sh watches from outside this process: a stale one means the
// event loop is blocked, and the watch prints where every thread is. One per process, not one per
// test file (this file runs for each).
const beat = process.env['VFIO_BRIDGE_HIL_BEAT'];
const started = Symbol.for('vfio-bridge.hil-beat');
if (beat !== undefined && !(started in process)) {
  Object.defineProperty(process, started, { value: true });
  const touch = (): void => {
    try {
      fs.writeFileSync(beat, '');
    } catch {
      // A heartbeat that cannot be written only leaves the watch blind.
    }
  };
  touch();
  setInterval(touch, 2000).unref();
}
