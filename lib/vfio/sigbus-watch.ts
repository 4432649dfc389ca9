/**
 * Keeps the SIGBUS guard in place across `process.on('SIGBUS')` / `process.off('SIGBUS')`.
 *
 * Node starts and stops its libuv signal watcher from its own 'newListener' and 'removeListener'
 * listeners on `process`, registered at bootstrap and so run before these. Starting replaces the
 * process's handler with libuv's (under which a revoked mapping faults for ever); stopping the last
 * one puts SIG_DFL back (under which it kills the process). Re-asserting right after either makes
 * the guard chain to whatever libuv left, so listeners still hear every SIGBUS that is not a guarded
 * fault.
 */
import { NativeAddonError, native } from '../native';

let watching = false;

function reassert(event: string | symbol): void {
  if (event !== 'SIGBUS') return;
  try {
    native.assertFaultGuard();
  } catch (e) {
    // No addon can load here, so no guard exists to keep: a SIGBUS listener is just a listener.
    if (!(e instanceof NativeAddonError)) throw e;
  }
}

/** Starts watching (once per thread; signals reach only the main thread's `process` anyway). */
export function watchSigbusListeners(): void {
  if (watching) return;
  watching = true;
  process.on('newListener', reassert);
  process.on('removeListener', reassert);
}

// Every thread that loads lib/vfio watches, not only one that maps: when only a worker maps BARs,
// a listener added and removed on the main thread's `process` would otherwise leave SIG_DFL, and
// the worker's next revoked access would kill the process.
watchSigbusListeners();
