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
import { native } from '../native';

let watching = false;

function reassert(event: string | symbol): void {
  if (event === 'SIGBUS') native.assertFaultGuard();
}

/** Starts watching (once per thread; signals reach only the main thread's `process` anyway). */
export function watchSigbusListeners(): void {
  if (watching) return;
  watching = true;
  process.on('newListener', reassert);
  process.on('removeListener', reassert);
}
